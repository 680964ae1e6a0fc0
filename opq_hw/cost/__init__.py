"""Per-layer hardware cost model: pure functions of (LayerSpec, LayerAlloc, Board), no tools needed.

One function per architecture; each docstring cites where its formula comes from:
- `hls4ml_latency`  hls4ml io_parallel, Latency strategy (constant weights, fully unrolled / reuse R)
- `hls4ml_resource` hls4ml io_parallel, Resource strategy (weights in BRAM, reuse factor R)
- `finn_mvau`       FINN MatrixVectorActivation (PE/SIMD folding), FINN-R formulas as in FINN's code
- `rtl_da`          the open flow's constant-weight RTL (da4ml distributed arithmetic), no DSP
- `rtl_seq`         the open flow's sequential RTL: one multiply-accumulate unit per layer, ROM of nonzeros
- `rtl_seq_top`, `rtl_da_top`: what those two designs hold beyond their layers (stream, sequencer or
  pools, logits out), added to the totals; `yosys_memory`: where Yosys puts a memory (block RAM, LUT
  RAM or logic) by its own cost rule

`estimate(specs, allocation, board, arch, folding)` adds the layers up into a `CostReport`
(memory bits, LUT, FF, DSP, BRAM18, URAM, cycles, II, latency, throughput, fits-or-not, the binding
resource); `choose_folding(...)` picks the fastest folding that fits the board. Coefficients are
data (board YAML, `board_configs/rtl_*_calibration.yaml`), recorded with their provenance in
every report. Arithmetic works elementwise on numpy arrays of `n_nonzero`, so the same functions
serve as the additive rate of the hardware-aware allocator (`opq_hw.hwaware`).

Modules: `records` (LayerParams, LayerCost, CostReport), `common` (formula pieces several
architectures share), one per architecture family (`hls4ml`, `finn`, `rtl`), `calibration`
(fitted coefficients per FPGA family), `registry` (name -> `Architecture`: formula, flow, folding
knobs, calibration), `fit` (`fits(board, usage)`, the one "does it fit" check), `network`
(`estimate`) and `folding` (`choose_folding`). Everything public is importable from `opq_hw.cost`.
"""
from __future__ import annotations

from .calibration import Calibration
from .common import bram_blocks, mem_bits
from .finn import divisors, finn_acc_bits, finn_bram18, finn_mvau, finn_uram
from .fit import Fit, fits
from .folding import choose_folding, layer_options
from .hls4ml import hls4ml_latency, hls4ml_resource, valid_reuse_factors
from .network import estimate
from .records import (INPUT_BITS, CostReport, LayerCost, LayerParams, clog2, layer_pairs, layer_params,
                      network_params)
from .registry import (ARCH_FLOW, ARCHITECTURES, ARCHS, Architecture, architecture, default_folding, layer_cost,
                       rtl_calibration)
from .rtl import (SRL_DEPTH, SRL_MIN_RUN, csd_digits_expected, csd_digits_mean, da4ml_cost_estimate, da_features,
                  rtl_da, rtl_da_top, rtl_seq, rtl_seq_top, seq_features, yosys_memory)

__all__ = [
    "ARCHITECTURES", "ARCHS", "ARCH_FLOW", "Architecture", "Calibration", "CostReport", "Fit", "INPUT_BITS",
    "LayerCost", "LayerParams", "SRL_DEPTH", "SRL_MIN_RUN", "architecture", "bram_blocks", "choose_folding", "clog2",
    "csd_digits_expected", "csd_digits_mean", "da4ml_cost_estimate", "da_features", "default_folding", "divisors",
    "estimate", "finn_acc_bits", "finn_bram18", "finn_mvau", "finn_uram", "fits", "hls4ml_latency", "hls4ml_resource",
    "layer_cost", "layer_options", "layer_pairs", "layer_params", "mem_bits", "network_params", "rtl_calibration",
    "rtl_da", "rtl_da_top", "rtl_seq", "rtl_seq_top", "seq_features", "valid_reuse_factors", "yosys_memory",
]
