"""The open RTL flow's two architectures (`opq_hw.flows.rtl_flow`):
- `rtl_da`: the constant-weight RTL (`opq_hw.rtl.gen`, `--rtl-arch da4ml`), one da4ml distributed
  arithmetic kernel per layer; its features (CSD digits, adder width, registers, shift-register
  runs) and the fitted LUT model;
- `rtl_seq`: the sequential RTL (`opq_hw.rtl.seq`, `--rtl-arch seq`), one multiply-accumulate unit per
  layer walking a ROM of the nonzero weights; its features and the fitted LUT/FF model.
The RTL's geometry (window taps, shift-register runs, counters, pipeline overhead) comes from
`opq_hw.rtl.geometry`, which the generators use too."""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, Mapping

import numpy as np

from ..boards import Board
from ..rtl.geometry import (COLLECT_COUNTER_BITS, LAYER_OVERHEAD_CYCLES, WINDOW_COUNTER_BITS, shift_chains,
                            window_offsets)
from .calibration import Calibration
from .common import bram_aspects, ceil_tol
from .records import LayerParams, clog2

DA_CALIBRATION = Calibration(
    "rtl-da",
    {"da_coef": 1.0, "da_digit_exp": 1.0, "da_width_exp": 1.0, "lut_per_da": 1.0, "lut_per_requant_bit": 0.0,
     "lut_per_window_bit": 0.0, "lut_per_conv_layer": 0.0, "lut_per_layer": 0.0},
    "defaults (no fitted calibration for this family): one adder bit per CSD digit beyond the first "
    "of each output (da4ml's cost is ~ the number of adder bits: Sun et al., da4ml, arXiv "
    "2507.04535), one LUT per adder bit, no wrapper logic")
SEQ_CALIBRATION = Calibration(
    "rtl-seq",
    {"lut_per_layer": 150.0, "lut_per_acc_bit": 8.0, "lut_per_table_bit": 0.5, "ff_per_layer": 40.0,
     "ff_per_acc_bit": 4.0, "ff_per_addr_bit": 4.0},
    "defaults (no fitted calibration for this family): rough register and LUT counts read off "
    "opq_hw/rtl/seq.py (acc, max, pipeline registers; tables of MH entries)")
SRL_MIN_RUN, SRL_DEPTH = 4, 32  # Yosys synth_xilinx puts runs of >= 4 flip-flops into SRLC32Es (measured, Yosys 0.23)


@lru_cache(maxsize=None)
def csd_digits_mean(bits: int) -> float:
    """Mean number of nonzero digits of the canonical signed digit (CSD / NAF) form of the
    magnitudes 1 .. 2^(bits-1)-1 of a narrow-range signed `bits`-bit weight (exact average, uniform
    magnitudes). One nonzero digit = one shifted operand into an adder (Avizienis 1961; Hewlett,
    Reitwiesner 1960 for CSD)."""
    top = 2 ** (bits - 1) - 1
    if top < 1:
        return 1.0
    return sum(_csd(m) for m in range(1, top + 1)) / top


def csd_digits_expected(p: LayerParams) -> Any:
    """Mean CSD digits per nonzero weight of a layer. With OPQ's Laplace model of the normalised
    weights (scale b, ../shared/OPQ.md) the survivors are |x| > t, t = -b ln(nnz / n), and a
    survivor in [(m - 1/2)/K, (m + 1/2)/K) (K = 2^(W-1) - 1; the top bin ends at 1) is stored as
    magnitude m: the mean of csd(m) under that mass, small magnitudes (few digits) being the most
    common. Without b (0): `csd_digits_mean`, magnitudes uniform."""
    uniform = csd_digits_mean(p.w_bits)
    nnz = np.asarray(p.nnz, dtype=np.float64)
    top = 2 ** (p.w_bits - 1) - 1
    if p.laplace_b <= 0 or top < 2:
        return uniform + 0 * nnz
    b = p.laplace_b
    t = -b * np.log(np.clip(nnz / p.n_weights, 1e-12, 1.0))
    m = np.arange(1, top + 1, dtype=np.float64)
    lo = np.maximum((m - 0.5) / top, t[..., None])
    hi = np.minimum((m + 0.5) / top, 1.0)
    mass = np.where(hi > lo, np.exp(-lo / b) - np.exp(-hi / b), 0.0)
    digits = np.array([_csd(int(v)) for v in m])
    tot = mass.sum(-1)
    return np.where(tot > 0, (mass * digits).sum(-1) / np.where(tot > 0, tot, 1.0), uniform)


def _csd(m: int) -> int:
    """Nonzero digits of the canonical signed digit (NAF) form of m >= 0."""
    c = 0
    while m:
        if m & 1:
            c += 1
            m -= 2 - (m & 3)
        m >>= 1
    return c


def da_features(p: LayerParams, kernel: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What one layer module of the da4ml architecture (opq_hw/rtl/gen.py) is made of.

    digits: CSD digits of the nonzero weights (`csd_digits_expected`); width: the
    mean adder width W + A + 2 (a balanced tree: half the adders at the first level, W+A+1 bits);
    requant_bits: MH x accumulator bits (one rounding adder and one clamp per output channel);
    window_bits: KH*KW*C*A padding multiplexers (conv). Registers, counted off opq_window.v /
    opq_collect.v / gen.py: the window's shift register C*A*((KH-1)*W + KW) and counters, or the
    collector's MW*A and counter; the valid delay line; MH*A requantized outputs (the last layer:
    MH accumulators); `chains`: the shift register's runs between read positions ([length, bit
    lanes]). `kernel` (what
    `opq_hw.rtl.gen` records per layer from da4ml's solution of the weights: `da4ml_cost`,
    `registers` and `chains` that synthesis keeps, `latency`) replaces the weight-agnostic parts;
    without it every input is read and the kernel is combinational."""
    nnz = np.asarray(p.nnz, dtype=np.float64)
    a = p.a_bits
    if p.kind == "linear":
        regs = p.fan_in * a + COLLECT_COUNTER_BITS + 1
        window_bits, conv, chains = 0, 0.0, []
    else:
        kh, kw = (p.kernel if len(p.kernel) == 2 else (1, p.kernel[0]))
        regs = p.in_channels * a * ((kh - 1) * p.in_width + kw) + WINDOW_COUNTER_BITS + 1
        window_bits, conv = kh * kw * p.in_channels * a, 1.0
        pads = (kh // 2, kw // 2)  # 'same' padding, as the demo models use
        chains = [[n, p.in_channels * a] for n in shift_chains([o for o in window_offsets(kh, kw, p.in_width, *pads) if o >= 1], 1)]
    k = dict(kernel or {})
    regs += 1 + p.out_channels * (p.acc_bits if p.last else a)  # valid delay, requantized outputs (last: accumulators)
    if "registers" in k:
        regs, chains = int(k["registers"]), [list(c) for c in k.get("chains", [])]
    return {"digits": nnz * csd_digits_expected(p), "width": p.w_bits + a + 2, "requant_bits": p.out_channels * p.acc_bits,
            "window_bits": window_bits, "conv": conv, "registers": regs + 0 * nnz, "chains": chains,
            "da4ml_cost": k.get("da4ml_cost"), "latency": int(k.get("latency", 0))}


def da4ml_cost_estimate(p: LayerParams, calibration: Mapping[str, Any]) -> Any:
    """da4ml's cost (its LUT estimate of the adder graph) of a layer, from its CSD digits and adder
    width: da_coef * digits^da_digit_exp * width^da_width_exp (0 without nonzero weights)."""
    f = da_features(p)
    return _da_cost(f["digits"], f["width"], calibration)


def _da_cost(digits: Any, width: int, cal: Mapping[str, Any]) -> Any:
    da = cal["da_coef"] * np.power(np.maximum(digits, 1e-9), cal["da_digit_exp"]) * width ** cal["da_width_exp"]
    return np.where(digits > 0, da, 0.0)


def rtl_da(p: LayerParams, board: Board, calibration: Mapping[str, Any] | None = None,
           kernel: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The open flow's RTL (opq_hw.rtl.gen): one da4ml constant-matrix kernel per layer, fed one
    input pixel per cycle (convs through a shift-register window), no DSP, no memory blocks.

    Source: distributed arithmetic CMVM of da4ml (Sun et al., arXiv 2507.04535): each nonzero weight
    becomes its CSD digits as shifted operands into an adder graph, which da4ml shrinks by common
    subexpressions; its cost is ~ the adder bits. Pruned weights cost nothing. With `da_features`
    and the coefficients of `rtl_da_calibration.yaml` (see `rtl_calibration`; fitted by
    scripts/rtl_calibration.py):
      da     = da_coef * digits^da_digit_exp * width^da_width_exp   (da4ml's cost, fitted to da4ml's
               own solutions; da4ml's exact cost when `kernel` is given)
      LUT    = lut_per_da * da + lut_per_requant_bit * requant_bits + lut_per_window_bit * window_bits
               + lut_per_conv_layer (conv) + lut_per_layer
      FF     = the register count of `da_features` (no fitted term); on xc7 less the runs of >= 4
               shift-register flip-flops that Yosys maps into SRLC32Es, which count as LUTs
      cycles = II = input pixels per sample (conv), 1 for a linear layer's kernel;
      latency = cycles + the kernel's pipeline latency + 1 (+ pipeline_extra_cycles of the board)
    """
    cal = dict(calibration or DA_CALIBRATION.load(board.family))
    f = da_features(p, kernel)
    digits = f["digits"]
    da = np.asarray(float(f["da4ml_cost"])) + 0 * digits if f["da4ml_cost"] is not None else _da_cost(digits, f["width"], cal)
    lut = ceil_tol(cal["lut_per_da"] * da + cal["lut_per_requant_bit"] * f["requant_bits"]
                + cal["lut_per_window_bit"] * f["window_bits"] + cal["lut_per_conv_layer"] * f["conv"] + cal["lut_per_layer"])
    ff = f["registers"]
    if board.family == "xc7":
        runs = [(n, lanes) for n, lanes in f["chains"] if n >= SRL_MIN_RUN]
        ff = ff - sum(n * lanes for n, lanes in runs)
        lut = lut + sum(math.ceil(n / SRL_DEPTH) * lanes for n, lanes in runs)
    cycles = p.in_pixels if p.kind != "linear" else 1
    depth = f["latency"] + 1 + board.coeff("pipeline_extra_cycles")
    zero = 0 * digits
    return {"LUT": lut, "FF": ff, "DSP": zero, "BRAM18": zero, "URAM": zero, "mults": zero, "cycles": cycles,
            "ii": cycles, "latency": cycles + depth + zero}


def seq_features(p: LayerParams) -> dict[str, Any]:
    """What the sequential RTL of one layer is made of, counted from opq_hw/rtl/seq.py."""
    entries = np.maximum(np.asarray(p.nnz, dtype=np.float64), p.out_channels)  # >= one entry per channel
    in_words = p.in_words or p.in_channels * max(p.in_pixels, 1)
    addr = clog2(max(in_words, 2))
    acc = p.w_bits + p.a_bits + clog2(p.fan_in) + 1  # the accumulator plus the bias (seq.py sizes it exactly)
    ptr = np.ceil(np.log2(entries + 1))  # the ROM pointer's bits
    return {"entries": entries, "rom_bits": entries * (p.w_bits + addr), "buf_bits": in_words * p.a_bits, "addr": addr,
            "acc": acc, "ptr": ptr,
            # tables of MH entries: bias (acc bits), channel start/end (ptr bits), requant shift ids
            "table_bits": p.out_channels * (acc + 2 * ptr + 2)}


def rtl_seq(p: LayerParams, board: Board, calibration: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The open flow's sequential RTL (opq_hw.rtl.seq, `--rtl-arch seq`): per layer one W x A
    multiply-accumulate unit walks a ROM that holds only the nonzero weights, one entry per cycle;
    activations sit in block RAM with the zero padding built in; layers run one after another.

    Source: the structure of the generated Verilog, counted (seq.py's docstring):
      entries  = nnz (+1 for each output channel without a nonzero weight; costed as max(nnz, MH))
      rom_bits = entries * (W + ceil(log2 in_words)), in_words = C_in * padded spatial size (conv), MW (linear)
      buf_bits = in_words * A (the layer's input buffer)
      BRAM18   = block RAMs of the ROM (entries x (W + address bits)) and of the buffer (in_words x A),
                 each packed at the board's best block aspect ratio (as `bram_blocks`), when it holds
                 >= rom_bram_min_bits (smaller ones become LUT RAM: lutram_bits_per_lut bits per LUT)
      DSP      = 1: Yosys maps the one W x A product onto one MULT18X18D / SB_MAC16 / DSP48E1
      cycles   = out_pixels * entries (every output position, pool offsets included, walks its
                 channels' entries); latency = cycles + LAYER_OVERHEAD_CYCLES (seq.py); the network's interval is the SUM
                 over layers (one datapath per layer, one layer active at a time)
      LUT      = lut_per_layer + lut_per_acc_bit * acc + lut_per_table_bit * table_bits
      FF       = ff_per_layer + ff_per_acc_bit * acc + ff_per_addr_bit * (address + pointer bits)
    The LUT/FF coefficients per family come from `rtl_seq_calibration.yaml` (Yosys synthesis of
    random layers, scripts/rtl_calibration.py --arch seq); ROM bits, BRAM, DSP and cycles are exact
    counts of the design, not fitted.
    """
    cal = dict(calibration or SEQ_CALIBRATION.load(board.family))
    f = seq_features(p)
    bram = 0 * f["entries"]
    lut_ram = 0 * f["entries"]
    aspects = bram_aspects(board)
    for width, depth in ((p.w_bits + f["addr"], f["entries"]), (p.a_bits, np.asarray(f["buf_bits"]) / p.a_bits)):
        depth = np.asarray(depth, dtype=np.float64)
        blocks = np.min([np.ceil(depth / d - 1e-9) * math.ceil(width / w) for d, w in aspects], axis=0)
        big = depth * width >= board.coeff("rom_bram_min_bits")
        bram = bram + np.where(big, blocks, 0)
        lut_ram = lut_ram + np.where(big, 0, depth * width / board.coeff("lutram_bits_per_lut"))
    lut = ceil_tol(cal["lut_per_layer"] + cal["lut_per_acc_bit"] * f["acc"] + cal["lut_per_table_bit"] * f["table_bits"]
                + lut_ram)
    ff = ceil_tol(cal["ff_per_layer"] + cal["ff_per_acc_bit"] * f["acc"] + cal["ff_per_addr_bit"] * (f["addr"] + f["ptr"])
               + 0 * f["entries"])
    dsp = (1 if board.capacity["DSP"] > 0 else 0) + 0 * f["entries"]
    cycles = p.out_pixels * f["entries"]
    return {"LUT": lut, "FF": ff, "DSP": dsp, "BRAM18": bram, "URAM": 0 * f["entries"], "mults": 1 + 0 * f["entries"],
            "cycles": cycles, "ii": cycles, "latency": cycles + LAYER_OVERHEAD_CYCLES}
