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
from ..rtl.geometry import (COLLECT_COUNTER_BITS, LAYER_OVERHEAD_CYCLES, WINDOW_COUNTER_BITS, digit_steps, shift_chains,
                            window_offsets)
from .calibration import Calibration
from .common import bram_aspects, ceil_tol
from .records import LayerParams, clog2

DA_CALIBRATION = Calibration(
    "rtl-da",
    {"da_coef": 1.0, "da_digit_exp": 1.0, "da_width_exp": 1.0, "da_act_exp": 0.0, "lut_per_da": 1.0, "lut_per_requant_bit": 0.0,
     "lut_per_da_act_bit": 0.0, "lut_per_last_da": 0.0,
     "lut_per_window_bit": 0.0, "lut_per_conv_layer": 0.0, "lut_per_layer": 0.0, "top_lut": 0.0,
     "top_lut_per_pool": 0.0, "top_lut_per_pool_bit": 0.0, "top_lut_per_out_bit": 0.0,
     "top_logit_width_ratio": 1.0},
    "defaults (no fitted calibration for this family): one adder bit per CSD digit beyond the first "
    "of each output (da4ml's cost is ~ the number of adder bits: Sun et al., da4ml, arXiv "
    "2507.04535), one LUT per adder bit, no wrapper logic")
SEQ_CALIBRATION = Calibration(
    "rtl-seq",
    {"lut_per_layer": 150.0, "lut_per_acc_bit": 8.0, "lut_per_table_bit": 0.5, "lut_per_addr_bit": 0.0,
     "lut_per_rom_lut": 1.0, "lut_per_conv2d": 0.0, "lut_per_requant_bit": 0.0, "lut_per_soft_mult_bit": 1.0, "lut_per_lutram_mux_bit": 0.5, "lut_per_buf_logic_bit": 0.5, "ff_scale": 1.0,
     "ff_per_layer": 0.0, "top_lut": 50.0, "top_lut_per_layer": 10.0,
     "top_lut_per_logit_bit": 0.5, "top_ff": 20.0, "top_ff_per_layer": 0.0},
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
    requant_bits: MH x accumulator bits (one rounding adder and one clamp per output channel; none
    in the last layer, whose accumulators are the logits); last: 1 in the last layer, else 0;
    window_bits: KH*KW*C*A padding multiplexers (conv). Registers, counted off opq_window.v /
    opq_collect.v / gen.py: the window's shift register C*A*((KH-1)*W + KW) and counters, or the
    collector's MW*A and counter; the valid delay line; MH*O requantized outputs (O: the layer's output activation bits,
    `out_bits`; the last layer: MH accumulators); `chains`: the shift register's runs between read positions ([length, bit
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
    # valid delay, requantized outputs at the output activation width (last: accumulators)
    regs += 1 + p.out_channels * (p.acc_bits if p.last else (p.out_bits or a))
    if "registers" in k:
        regs, chains = int(k["registers"]), [list(c) for c in k.get("chains", [])]
    return {"digits": nnz * csd_digits_expected(p), "width": p.w_bits + a + 2, "requant_bits": 0 if p.last else p.out_channels * p.acc_bits,
            "last": float(p.last),
            "window_bits": window_bits, "conv": conv, "registers": regs + 0 * nnz, "chains": chains,
            "da4ml_cost": k.get("da4ml_cost"), "latency": int(k.get("latency", 0))}


def da4ml_cost_estimate(p: LayerParams, calibration: Mapping[str, Any]) -> Any:
    """da4ml's cost (its LUT estimate of the adder graph) of a layer, from its CSD digits and adder
    width and input activation bits A: da_coef * digits^da_digit_exp * width^da_width_exp * A^da_act_exp
    (0 without nonzero weights)."""
    f = da_features(p)
    return _da_cost(f["digits"], f["width"], calibration, p.a_bits)


def _da_cost(digits: Any, width: int, cal: Mapping[str, Any], a_bits: int) -> Any:
    da = (cal["da_coef"] * np.power(np.maximum(digits, 1e-9), cal["da_digit_exp"]) * width ** cal["da_width_exp"]
          * a_bits ** cal.get("da_act_exp", 0.0))
    return np.where(digits > 0, da, 0.0)


def rtl_da(p: LayerParams, board: Board, calibration: Mapping[str, Any] | None = None,
           kernel: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The open flow's RTL (opq_hw.rtl.gen): one da4ml constant-matrix kernel per layer, fed one
    input pixel per cycle (convs through a shift-register window), no memory blocks, no DSP
    but the window's end-of-frame multiply on xc7 when W is not a power of two (`window_dsp`).

    Source: distributed arithmetic CMVM of da4ml (Sun et al., arXiv 2507.04535): each nonzero weight
    becomes its CSD digits as shifted operands into an adder graph, which da4ml shrinks by common
    subexpressions; its cost is ~ the adder bits. Pruned weights cost nothing. With `da_features`
    and the coefficients of `rtl_da_calibration.yaml` (see `rtl_calibration`; fitted by
    scripts/rtl_calibration.py):
      da     = da_coef * digits^da_digit_exp * width^da_width_exp * A^da_act_exp   (da4ml's cost,
               fitted to da4ml's own solutions; da4ml's exact cost when `kernel` is given)
      LUT    = (lut_per_da + lut_per_da_act_bit * (A - 8)) * da + lut_per_requant_bit * requant_bits
               + lut_per_last_da * da (the last layer)
               + lut_per_window_bit * window_bits + lut_per_conv_layer (conv) + lut_per_layer
               (the LUTs per unit of da4ml's cost depend on the input width A: fitted on random layer
               modules with 8-bit and 4-bit inputs; 0 where only 8-bit ones were synthesized. The last layer,
               no requantizer, its accumulators registered as the logits, spends more LUTs per unit of
               da4ml cost: lut_per_last_da, fitted on random last-layer modules, scripts/rtl_calibration.py
               --last; 0 where none were synthesized)
      FF     = the register count of `da_features` (no fitted term); on xc7 less the runs of >= 4
               shift-register flip-flops that Yosys maps into SRLC32Es, which count as LUTs
      cycles = II = input pixels per sample (conv), 1 for a linear layer's kernel;
      latency = cycles + the kernel's pipeline latency + 1 (+ pipeline_extra_cycles of the board)
    """
    cal = dict(calibration or DA_CALIBRATION.load(board.family))
    f = da_features(p, kernel)
    digits = f["digits"]
    da = np.asarray(float(f["da4ml_cost"])) + 0 * digits if f["da4ml_cost"] is not None else _da_cost(digits, f["width"], cal, p.a_bits)
    lut = ceil_tol(max(cal["lut_per_da"] + cal.get("lut_per_da_act_bit", 0.0) * (p.a_bits - 8), 0.0) * da + cal["lut_per_requant_bit"] * f["requant_bits"]
                + cal.get("lut_per_last_da", 0.0) * f["last"] * da
                + cal["lut_per_window_bit"] * f["window_bits"] + cal["lut_per_conv_layer"] * f["conv"] + cal["lut_per_layer"])
    ff = f["registers"]
    if board.family == "xc7":
        runs = [(n, lanes) for n, lanes in f["chains"] if n >= SRL_MIN_RUN]
        ff = ff - sum(n * lanes for n, lanes in runs)
        lut = lut + sum(math.ceil(n / SRL_DEPTH) * lanes for n, lanes in runs)
    cycles = p.in_pixels if p.kind != "linear" else 1
    depth = f["latency"] + 1 + board.coeff("pipeline_extra_cycles")
    zero = 0 * digits
    return {"LUT": lut, "FF": ff, "DSP": zero + window_dsp(p, board), "BRAM18": zero, "URAM": zero, "mults": zero, "cycles": cycles,
            "ii": cycles, "latency": cycles + depth + zero}


# Families where Yosys 0.23 puts opq_window.v's end-of-frame test `orow * W + ocol == LASTM` on a DSP
# when the line length W is not a power of two (a shift otherwise): measured on xc7 (synth_xilinx,
# mnist1d-cnn's conv layers, W = 40, 40, 20, 10: one DSP48E1 each, benchmarks/rtl_whole_design.py), on
# iCE40 (synth_ice40 -dsp, the same layers: one SB_MAC16 each) and on ECP5 (synth_ecp5, the same layers: one
# DSP each in their layer modules)
WINDOW_MUL_DSP = ("xc7", "ice40", "ecp5")


def window_dsp(p: LayerParams, board: Board) -> int:
    """DSPs of an rtl-da conv layer's window (`WINDOW_MUL_DSP`): 1 where W is not a power of two."""
    w = p.in_width
    return int(p.kind != "linear" and board.family in WINDOW_MUL_DSP and w & (w - 1) != 0)


# Yosys 0.23's memory_libmap (passes/memory/memory_libmap.cc) maps each memory to the cheapest of:
# soft logic, at logic_cost = bits * (1/16 for a ROM, 1 for a RAM; `-logic-cost-rom 0.015625` for xc7,
# techlibs/xilinx/synth_xilinx.cc), truncated to an int (`int best = map.logic_cost`) - ties and anything
# not strictly cheaper stay logic - or a library RAM at cost * cells + 0.5 per read-mux bit + 0.5 per
# write-enable demux (FACTOR_MUX, FACTOR_DEMUX) + 2 per emulation point (FACTOR_EMU). Our memories score
# one emulation point each (score_emu_ports: "1 point for every non-shared read port used, as a
# tiebreaker to prefer single-port configs": the ROM's read port and a buffer's read port at its own
# address use a port group of their own; no enable, reset or init to emulate): + 2 on every library
# mapping (`READ_PORT_EMU_COST`). Measured with `debug memory_libmap` on Yosys 0.23: the 929 x 9 ROM of
# a corpus MLP on xc7 costs 130.64 in logic and 131 (129 + 2) as a RAMB18, and stays in logic.
# Libraries: techlibs/ecp5/brams.txt (DP16KD/PDPW16KD, cost 128, sync read), ecp5/lutrams.txt
# (TRELLIS_DPR16X4 16x4, cost 4, async read, prune_rom: never a ROM), ice40/brams.txt (SB_RAM40_4K, cost
# 64, sync read; no LUT RAM), xilinx/brams_xc4v.txt (RAMB18E1, cost 129), xilinx/lutrams_xc5v.txt
# (RAM32M/RAM64M simple dual port 32x6 / 64x3, cost 8 with widthscale 7, prune_rom).
# family: (ROM logic cost per bit, block cost, LUT RAM (depth, width, cost, widthscale) or None)
YOSYS_MEMLIB = {"ecp5": (1 / 16, 128, ((16, 4, 4, 0),)), "ice40": (1 / 16, 64, None),
                "xc7": (1 / 64, 129, ((32, 6, 8, 7), (64, 3, 8, 7)))}
READ_PORT_EMU_COST = 2.0  # FACTOR_EMU x 1 point (memory_libmap.cc, see above)
# families whose per-channel tables Yosys places like any ROM (`_seq_memories`). iCE40: measured on
# corpus-mlp-64-128's first layer (synth_ice40 log: four proc_rom tables mapped via $__ICE40_RAM4K_), and
# with it the iCE40 held-out designs' block RAM is within one RAM4K (was 15 vs 18). ECP5 and xc7: every
# table of the whole designs stays in logic (block RAM exact on all of them); the rule, fed the
# weight-agnostic accumulator width (an upper bound: 17 bits where the RTL has 14), would put
# corpus-mlp-64-128's 128-entry bias table into a DP16KD, which Yosys does not
TABLE_ROM_FAMILIES = ("ice40",)


def yosys_memory(width: int, depth: int, family: str, rom: bool, sync_read: bool = True,
                 aspects: tuple[tuple[int, int], ...] = ()) -> tuple[str, int]:
    """How Yosys 0.23 maps a width x depth memory (one read port, one write port unless `rom`):
    ("block", block RAMs), ("lutram", LUT RAM cells) or ("logic", 0), by memory_libmap's costs
    (`YOSYS_MEMLIB`, cited there). Block RAMs read synchronously only, so an asynchronously read
    memory never goes there; `aspects`: the block's (depth, width) shapes (`bram_aspects`)."""
    rom_cost, block_cost, lutram = YOSYS_MEMLIB[family]
    bits = width * depth
    best, choice = int(bits * (rom_cost if rom else 1.0)), ("logic", 0)  # memory_libmap truncates it to int
    if sync_read and aspects:
        n, (d, _) = min(((math.ceil(depth / d) * math.ceil(width / w)), (d, w)) for d, w in aspects)
        rows = math.ceil(depth / d)
        if rom:  # no write port, no byte lanes to respect: address chunks pack side by side
            n = min(n, _rom_blocks_packed(width, depth, aspects))
        cost = (block_cost * n + 0.5 * (rows - 1) * width + (0.5 * rows if rows > 1 and not rom else 0)
                + READ_PORT_EMU_COST)
        if cost < best:
            best, choice = cost, ("block", n)
    if lutram and not rom:
        cost, cells, _ = _lutram_best(width, depth, lutram)
        if cost < best:
            best, choice = cost, ("lutram", cells)
    return choice


def _lutram_best(width: int, depth: int, lutram: tuple[tuple[int, int, int, int], ...]) -> tuple[float, int, int]:
    """The cheapest LUT RAM shape of a RAM by memory_libmap's cost (see `YOSYS_MEMLIB`): (cost, cells, rows
    of d words side by side in depth)."""
    out = []
    for d, w, c, ws in lutram:
        rows = math.ceil(depth / d)
        cells = rows * math.ceil(width / w)
        out.append(((c - ws) * cells + ws * rows * width / w + 0.5 * (rows - 1) * width + (0.5 * rows if rows > 1 else 0)
                    + READ_PORT_EMU_COST, cells, rows))
    return min(out)


def lutram_mux_bits(width: int, depth: int, family: str) -> int:
    """The read multiplexer of a RAM in LUT RAM: (rows - 1) x width 2:1 mux bits, rows = the LUT RAM cells
    stacked in depth (memory_libmap's own `score_mux` of the mapping, memory_libmap.cc); 0 without LUT RAM."""
    lutram = YOSYS_MEMLIB[family][2]
    return (_lutram_best(width, depth, lutram)[2] - 1) * width if lutram else 0


def _rom_blocks_packed(width: int, depth: int, aspects: tuple[tuple[int, int], ...]) -> int:
    """Blocks of a ROM whose address chunks sit side by side in the block's widest rows: memory_libmap
    counts bits = chunks x word width and cells = ceil(bits / unit width) (memory_libmap.cc, `mult_a`,
    `repl`), so a 1398 x 12 ROM takes one 512 x 36 block (three 512-word chunks of 12 bits), a 1238 x 13
    ROM two. The fewest over the block's (depth, width) shapes."""
    return int(min(math.ceil(math.ceil(depth / d) * width / w) for d, w in aspects))


# Yosys 0.23 maps a product onto a DSP only when it is at least DSP_Y_MINWIDTH bits wide (mul2dsp.v):
# techlibs/ice40/synth_ice40.cc passes -D DSP_Y_MINWIDTH=11, techlibs/xilinx/synth_xilinx.cc 9 (xc7 via
# its {options}), techlibs/ecp5/synth_ecp5.cc none; smaller products stay in LUTs
DSP_Y_MINWIDTH = {"ice40": 11, "xc7": 9, "ecp5": 0}


def seq_product_bits(p: LayerParams) -> tuple[int, int]:
    """The rtl-seq multiplier's operand widths: the signed weight and the activation (unsigned ones
    zero-extended by one bit, seq.py `{1'b0, rd_data}`)."""
    return p.w_bits, p.a_bits + (0 if p.a_signed else 1)


def seq_layer_registers(p: LayerParams) -> Any:
    """Flip-flops of one layer module of opq_hw/rtl/seq.py, counted off its Verilog: the walk's
    counters (ROM pointer, channel, output row/column, pool offsets) and run flag; stage 1 (ROM
    entry, flags, channel, input base, output address); stage 2 (weight, flags, channel, output
    address); stage 3 (accumulator, pool max, result, valid, channel, output address); stage 4
    (write enable, address, data). The pool window is not in LayerParams: counted as none."""
    f = seq_features(p)
    cb = clog2(max(p.out_channels, 2))
    spatial = max(p.out_pixels, 1)
    ob = max(clog2(max(p.out_channels * spatial, 2)), 1) if not p.last else cb  # output address bits
    wb = p.w_bits
    ew = f["addr"] + wb
    obits = f["acc"] if p.last else p.a_bits
    counters = f["ptr"] + cb + clog2(max(spatial, 2)) + 1
    return (counters + 1 + ew + 4 + cb + f["addr"] + ob + wb + 4 + cb + ob + 3 * f["acc"] + 1 + cb + ob
            + 1 + ob + obits)


def pools_between(params: list[LayerParams]) -> list[tuple[int, int, int]]:
    """The max pools between consecutive layers, inferred from the shapes (a layer that produces more
    values than the next one takes): per pool (channels x bits of a pixel, output row length OW, bits of
    one channel's value BW)."""
    out = []
    for p, q in zip(params, params[1:]):
        produced = p.out_channels * max(p.out_pixels, 1)
        taken = q.in_channels * max(q.in_pixels, 1) if q.kind != "linear" else q.fan_in
        if p.kind == "linear" or produced <= taken:
            continue
        k = produced // taken
        kc = round(math.sqrt(k)) if len(p.kernel) == 2 else k  # square windows in 2-D, 1 x k in 1-D
        out.append((p.out_channels * q.a_bits, max(p.in_width // max(kc, 1), 1), q.a_bits))
    return out


# Extra LUTs per pixel bit of a max pool whose comparators Yosys puts on carry chains (`cmp_on_carry`):
# opq_maxpool alone (C = 8, W = 8) under `synth_xilinx -family xc7` (Yosys 0.23) takes 177 / 201 / 213 LUTs at
# BW = 4 / 5 / 6 (the compares in LUTs, 2.25 LUTs per added pixel bit) and 451 / 490 / 544 / 600 / 688 at BW =
# 7 / 8 / 9 / 10 / 12, i.e. 3.8-3.9 LUTs per pixel bit over the LUT-only line (C = 16 at BW = 8: 3.6), with
# 2 LUT1s per pixel bit and MUXF7/MUXF8 beside the CARRY4s; not fitted (measured on the pool alone)
CMP_CARRY_LUT_PER_BIT = {"xc7": 3.8}


def cmp_on_carry(bw: int, family: str) -> bool:
    """Whether Yosys maps a `bw`-bit a >= b of two variables (opq_maxpool's vmax) onto the carry chain:
    `synth_xilinx` runs techlibs/common/cmp2lcu.v with LUT_WIDTH = 6, which cuts the compare into chunks of
    3 bit pairs (2 inputs each) joined by one $lcu of ceil(bw / 3) bits, and techlibs/xilinx/arith_map.v
    maps a $lcu to CARRY4 only when it is wider than 2 (`_TECHMAP_FAIL_ = WIDTH <= 2`): bw >= 7. Other
    families: no such step. `synth_ecp5` (Yosys 0.23, its `coarse` script) runs cmp2lut.v (LUT_WIDTH 4:
    compares with a constant only) and `alumacc`, whose $alu techlibs/ecp5/arith_map.v puts on CCU2C: the
    pool alone (C = 8, W = 8) has 56 CCU2C at BW = 4 (the counters, as at C = 16) and 88 at BW = 8 (4 per
    channel, +0.5 LUT-equivalent per added pixel bit), 397 vs 446 LUT-equivalents in all; ABC's PFUMX /
    L6MUX21 trees make other widths 2-3x larger (848 / 728 / 1,372 / 1,489 at BW = 6 / 7 / 10 / 12), not a
    function of BW that a term could follow, so ECP5 keeps its fitted per-pool-bit LUTs."""
    return family in CMP_CARRY_LUT_PER_BIT and -(-bw // 3) > 2


# Flip-flops of hls/rtl/opq_maxpool.v beside its pixel registers: the counters r, c, kr, kc, oc (CW = 16 bits
# each; Yosys keeps all 16 bits, it does not bound a counter by its compares) and out_valid; and of
# hls/rtl/opq_serialize.v beside its N x AW shift register: the counter `left` (16 bits)
POOL_COUNTER_FF = 5 * 16 + 1
SERIALIZER_COUNTER_FF = 16


def pool_registers(bits: int, ow: int, family: str) -> int:
    """Flip-flops Yosys 0.23 keeps of one opq_maxpool.v (`bits` = C x BW, a row of OW partial maxima):
    POOL_COUNTER_FF, the output pixel `out_data` (bits), and by where the row `part` goes (`yosys_memory`;
    its read at the registered column counter oc is a synchronous read port): in logic OW x bits row flip-flops
    and a clog2(OW)-bit read address register; in LUT RAM (asynchronous read) the clog2(OW)-bit read address
    register; in block RAM bits + 1 (the same-address write/read bypass the block lacks, which Yosys builds beside
    it: kernel/mem.cc `emulate_transparency`, the written pixel and a match flag; the address register is
    inside the block: memory_dff "merged address FF to cell"). Counted off the Verilog, the memory terms measured:
    opq_maxpool alone, every (family, kind) below exact - xc7 / ECP5 LUT RAM at OW = 2, 4, 5, 10, 20 (C x BW = 32,
    64, 128); iCE40 logic at OW = 2, 4, ECP5 / xc7 logic at OW = 1; block RAM on iCE40 (OW = 5, 10, 20, 128
    bits), ECP5 (OW = 64, 256 bits) and xc7 (OW = 128, 64 bits); and the top levels of all 41 rtl-da whole
    designs of benchmarks/rtl_whole_design.py, with the serializer (`da_top_features`)."""
    kind, _ = yosys_memory(bits, ow, family, rom=False, sync_read=True, aspects=_aspects_of(family))
    mem = {"logic": ow * bits + clog2(ow), "lutram": clog2(ow), "block": bits + 1}[kind]
    return POOL_COUNTER_FF + bits + mem


def da_top_features(params: list[LayerParams], family: str) -> dict[str, float]:
    """What the da4ml architecture's top level holds beyond its layer modules (opq_hw/rtl/gen.py
    `opq_top`): the max pools and the output serializer (opq_serialize.v: n_out accumulators). A pool
    (opq_maxpool.v) keeps a row of OW partial maxima of one pixel (C x BW bits) in `part`, a memory read at
    the registered column counter `oc` (memory_dff merges that register into a synchronous read port)
    that `yosys_memory` places. Measured on every pool of the rtl-da whole designs, all as predicted:
    ECP5 8 + 16 TRELLIS_DPR16X4, xc7 6 + 11 and 3 x 22 LUT RAM cells, iCE40 the small rows (32 x 4,
    64 x 2 bits) in flip-flops and mnist1d-cnn's (128 x 20, 10, 5) in 3 x 8 RAM4Ks (`pool_bram`). Beside it:
    the output register and the comparators of one pixel (`pool_bits`, C x BW per pool), the counters
    (`pools`). A row in logic is OW x pixel flip-flops (`pool_row_ff`) and an OW:1 read mux, a row in LUT
    RAM its read mux (`pool_mux_bits`, costed at MUX_LUT_PER_BIT). On xc7 the comparators of a pool whose
    values are 7 bits or wider go onto carry chains (`pool_carry_bits`, see `cmp_on_carry`), which costs
    CMP_CARRY_LUT_PER_BIT more per pixel bit. Flip-flops: every pool's (`pool_ff`, `pool_registers`) and the
    weight-agnostic bound of the serializer's logits (`logit_bound_bits`, N x `acc_bits`)."""
    pools = pools_between(params)
    last = params[-1]
    row_ff = mux = cells = blocks = 0.0
    for b, ow, _ in pools:
        kind, n = yosys_memory(b, ow, family, rom=False, sync_read=True, aspects=_aspects_of(family))
        row_ff += b * ow if kind == "logic" else 0
        mux += b * (ow - 1) if kind == "logic" else lutram_mux_bits(b, ow, family) if kind == "lutram" else 0
        cells += n if kind == "lutram" else 0
        blocks += n if kind == "block" else 0
    return {"pools": float(len(pools)), "pool_bits": float(sum(b for b, _, _ in pools)), "pool_row_ff": float(row_ff),
            "pool_carry_bits": float(sum(b for b, _, bw in pools if cmp_on_carry(bw, family))),
            "pool_mux_bits": float(mux), "pool_lutram": float(cells), "pool_bram": float(blocks),
            "out_bits": float(last.out_channels * (last.w_bits + last.a_bits + clog2(last.fan_in) + 1)),
            "pool_ff": float(sum(pool_registers(b, ow, family) for b, ow, _ in pools)),
            "logit_bound_bits": float(last.out_channels * last.acc_bits)}


def rtl_da_top(params: list[LayerParams], board: Board, calibration: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The da4ml architecture's top level beyond its layer modules (`da_top_features`): pools and the
    output serializer; coefficients fitted on whole designs (benchmarks/rtl_whole_design.py --arch da),
    the pools' row memories placed by Yosys's rule (not fitted):

      LUT    = top_lut + top_lut_per_pool * pools + top_lut_per_pool_bit * pool_bits + top_lut_per_out_bit * out_bits
               + MUX_LUT_PER_BIT * pool_mux_bits + CMP_CARRY_LUT_PER_BIT * pool_carry_bits
      FF     = the pools' registers (`pool_registers`: counters, output pixel, row and read port; counted, not fitted)
               + SERIALIZER_COUNTER_FF + N x AW (opq_serialize.v's shift register of the N logits): AW = the
               run's logit width where known (`LayerParams.logit_bits`, opq_hw.report.run_logit_bits: da4ml's own
               after a da4ml build, else the symmetric bound of the run's integer weights, at most one bit above
               da4ml's on the 21 allocations of rtl_whole_design.py),
               else top_logit_width_ratio x `acc_bits` (da4ml's width under the weight-agnostic bound: its
               interval of the actual sums is 0-4 bits narrower; fitted)
      BRAM18 = the pools' rows in block RAM (`pool_bram`, the family's blocks)
      cycles = input pixels per sample (one pixel per cycle: the interval of the stream)
    LUT RAM cells (`pool_lutram`) are counted apart, not as LUT-equivalents (as for the rtl-seq buffers).
    """
    cal = {**DA_CALIBRATION.defaults, **(calibration or DA_CALIBRATION.load(board.family))}
    f = da_top_features(params, board.family)
    lut = math.ceil(cal["top_lut"] + cal["top_lut_per_pool"] * f["pools"] + cal["top_lut_per_pool_bit"] * f["pool_bits"]
                    + cal["top_lut_per_out_bit"] * f["out_bits"] + MUX_LUT_PER_BIT[board.family] * f["pool_mux_bits"]
                    + CMP_CARRY_LUT_PER_BIT.get(board.family, 0.0) * f["pool_carry_bits"] - 1e-9)
    last = params[-1]
    # the serializer's N x AW shift register: AW from the run's weights where known, else the bound scaled
    aw_bits = last.out_channels * last.logit_bits if last.logit_bits else cal["top_logit_width_ratio"] * f["logit_bound_bits"]
    ff = math.ceil(f["pool_ff"] + SERIALIZER_COUNTER_FF + aw_bits - 1e-9)
    first = params[0]
    pixels = first.in_pixels if first.kind != "linear" else first.fan_in  # a feature vector streams as W pixels
    return {"LUT": lut, "FF": ff, "DSP": 0, "BRAM18": int(f["pool_bram"]), "URAM": 0, "mults": 0, "cycles": pixels,
            "ii": pixels, "latency": 0}


def da_serial_cycles(params: list[LayerParams], serial_bits: int) -> int:
    """Cycles per sample of the da4ml design with `serial_bits`-bit digit-serial inputs
    (`--serial-bits`, opq_hw/rtl/gen.py): the stream takes one pixel every P cycles, P = the most
    digits a layer's input needs (`geometry.digit_steps`), so the interval is P x `rtl_da_top`'s
    pixels. Counted from the design (exact against Verilator, tests/test_rtl_serial.py), not fitted;
    the LUT/FF of digit-serial layers are not modelled (rtl-da is calibrated on whole-activation
    kernels only: uncalibrated for this variant)."""
    first = params[0]
    pixels = first.in_pixels if first.kind != "linear" else first.fan_in
    return pixels * max(digit_steps(p.a_bits, p.a_signed, serial_bits) for p in params)


def seq_features(p: LayerParams) -> dict[str, Any]:
    """What the sequential RTL of one layer is made of, counted from opq_hw/rtl/seq.py."""
    entries = np.maximum(np.asarray(p.nnz, dtype=np.float64), p.out_channels)  # >= one entry per channel
    in_words = p.in_words or p.in_channels * max(p.in_pixels, 1)
    addr = clog2(max(in_words, 2))
    acc = p.w_bits + p.a_bits + clog2(p.fan_in) + 1  # the accumulator plus the bias (seq.py sizes it exactly)
    ptr = np.ceil(np.log2(entries + 1))  # the ROM pointer's bits
    return {"entries": entries, "rom_bits": entries * (p.w_bits + addr), "buf_bits": in_words * p.a_bits, "addr": addr,
            "acc": acc, "ptr": ptr, "in_words": in_words,
            # tables of MH entries: bias (acc bits), channel start/end (ptr bits), requant shift ids
            "table_bits": p.out_channels * (acc + 2 * ptr + 2)}


def _seq_memories(p: LayerParams, board: Board, f: Mapping[str, Any]) -> dict[str, Any]:
    """The layer's weight ROM and its input buffer as Yosys maps them (`yosys_memory`), per element
    of `entries`: block RAMs, the ROM's bits left in logic and their LUTs (`rom_logic_luts`), the
    buffer's LUT RAM cells and its bits left in logic (flip-flops)."""
    aspects = bram_aspects(board)
    # 2-bit narrow-range weights are +-1: their two's-complement LSB is constant 1, and Yosys drops a
    # constant column of a ROM (measured: a 375 x 9 ROM of such weights takes one 512 x 8 RAM4K)
    width = int(p.w_bits + f["addr"]) - (1 if p.w_bits == 2 else 0)
    ent = np.atleast_1d(np.asarray(f["entries"], dtype=np.float64))
    rom_kind = [yosys_memory(width, int(e), board.family, rom=True, aspects=aspects) for e in ent]
    buf_kind = yosys_memory(p.a_bits, int(f["in_words"]), board.family, rom=False, aspects=aspects)
    shape = np.shape(f["entries"])
    bram = np.array([n for k, n in rom_kind]) * np.array([k == "block" for k, _ in rom_kind])
    # the per-channel tables (seq.py `_case` functions: bias, channel start and end) are ROMs to Yosys too
    # (proc_rom), read at a registered channel index (memory_dff makes the read synchronous), placed by the
    # same rule where that was measured (TABLE_ROM_FAMILIES)
    ptr = np.atleast_1d(np.asarray(f["ptr"], dtype=np.float64) + 0 * ent).astype(int)
    placed = {}  # ROM pointer width -> (blocks, bits in blocks) of the three tables
    for t in set(ptr.tolist()):
        kinds = [(w, yosys_memory(w, p.out_channels, board.family, rom=True, aspects=aspects)
                  if board.family in TABLE_ROM_FAMILIES else ("logic", 0)) for w in (int(f["acc"]), t, t)]
        placed[t] = (sum(n for _, (k, n) in kinds if k == "block"),
                     sum(w * p.out_channels for w, (k, _) in kinds if k == "block"))
    table_bram = np.array([placed[t][0] for t in ptr], dtype=np.float64)
    table_block_bits = np.array([placed[t][1] for t in ptr], dtype=np.float64)
    in_logic = np.array([k == "logic" for k, _ in rom_kind])
    rom_logic = ent * width * in_logic
    rom_luts = np.array([rom_logic_luts(int(e), width, board.family) for e in ent]) * in_logic
    return {"bram": (bram + table_bram + (buf_kind[1] if buf_kind[0] == "block" else 0)).reshape(shape),
            "table_logic_bits": (f["table_bits"] - table_block_bits).reshape(shape),
            "rom_logic_bits": rom_logic.reshape(shape), "rom_luts": rom_luts.reshape(shape),
            "rom_in_block": np.array([k == "block" for k, _ in rom_kind], dtype=float).reshape(shape),
            "buf_lutram": buf_kind[1] if buf_kind[0] == "lutram" else 0,
            "buf_lutram_mux": lutram_mux_bits(p.a_bits, int(f["in_words"]), board.family) if buf_kind[0] == "lutram" else 0,
            "buf_logic_bits": f["in_words"] * p.a_bits if buf_kind[0] == "logic" else 0}


def rtl_seq(p: LayerParams, board: Board, calibration: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The open flow's sequential RTL (opq_hw.rtl.seq, `--rtl-arch seq`): per layer one W x A
    multiply-accumulate unit walks a ROM that holds only the nonzero weights, one entry per cycle;
    activations sit in memories with the zero padding built in; layers run one after another. The
    top level (loader, sequencer, logits) is `rtl_seq_top`.

    Source: the structure of the generated Verilog, counted (seq.py's docstring):
      entries  = nnz (+1 for each output channel without a nonzero weight; costed as max(nnz, MH))
      ROM      = entries x (W + ceil(log2 in_words)) bits, in_words = C_in * padded spatial size (conv), MW (linear)
      buffer   = in_words x A bits (the layer's input, in the top level)
      memories = Yosys 0.23's memory_libmap choice (`yosys_memory`): block RAM, LUT RAM (ECP5
                 TRELLIS_DPR16X4, xc7 RAM32M/RAM64M; not ROMs) or logic, by its cost rule
      BRAM18   = block RAMs of the ROM and of the buffer at the best aspect ratio
      DSP      = 1: Yosys maps the one W x A product onto one MULT18X18D / SB_MAC16 / DSP48E1, when the
                 product is at least DSP_Y_MINWIDTH bits (iCE40 11, xc7 9); else 0 and the product in LUTs
      cycles   = out_pixels * entries (every output position, pool offsets included, walks its
                 channels' entries); latency = cycles + LAYER_OVERHEAD_CYCLES (seq.py)
      tables   = per channel: bias (acc bits), channel start and end (ROM pointer bits each): ROMs, placed
                 by the same rule (`_seq_memories`); their blocks count in BRAM18
      LUT      = lut_per_layer + lut_per_acc_bit * acc + lut_per_table_bit * the table bits in logic
                 + lut_per_addr_bit * address bits + lut_per_rom_lut * the LUTs of a ROM left in logic
                 (`rom_logic_luts`: a LUT tree per output bit)
                 + lut_per_conv2d (a 2-D conv: its row/column address tables and the pool's two offsets)
                 + lut_per_requant_bit * acc (all but the last layer: per-channel shift, rounding, clamp)
                 + lut_per_soft_mult_bit * W * A' (a product too narrow for a DSP, A' = A + 1 unsigned)
                 + lut_per_lutram_mux_bit * the read mux bits of a buffer in LUT RAM (`lutram_mux_bits`)
                 + lut_per_buf_logic_bit * buffer bits in logic
      FF       = ff_scale * (`seq_layer_registers`, less the ROM entry register when the ROM is a block RAM:
                 the block's own output register) + ff_per_layer + buffer bits in logic (flip-flops)
    The LUT/FF coefficients per family come from `rtl_seq_calibration.yaml` (Yosys synthesis of
    whole designs of real model shapes, benchmarks/rtl_whole_design.py); memories, BRAM, DSP and
    cycles are counts of the design, not fitted.
    """
    cal = {**SEQ_CALIBRATION.defaults, **(calibration or SEQ_CALIBRATION.load(board.family))}
    f = seq_features(p)
    m = _seq_memories(p, board, f)
    wb, ab = seq_product_bits(p)
    hard = board.capacity["DSP"] > 0 and wb + ab >= DSP_Y_MINWIDTH.get(board.family, 0)
    lut = ceil_tol(cal["lut_per_layer"] + cal["lut_per_acc_bit"] * f["acc"] + cal["lut_per_table_bit"] * m["table_logic_bits"]
                   + cal["lut_per_soft_mult_bit"] * wb * ab * (not hard)
                   + cal["lut_per_addr_bit"] * f["addr"] + cal["lut_per_rom_lut"] * m["rom_luts"]
                   + cal["lut_per_conv2d"] * (len(p.kernel) == 2) + cal["lut_per_requant_bit"] * f["acc"] * (not p.last)
                   + cal["lut_per_lutram_mux_bit"] * m["buf_lutram_mux"] + cal["lut_per_buf_logic_bit"] * m["buf_logic_bits"])
    ff = ceil_tol(cal["ff_scale"] * (seq_layer_registers(p) - (p.w_bits + f["addr"]) * m["rom_in_block"])
                  + cal["ff_per_layer"] + m["buf_logic_bits"])
    dsp = (1 if hard else 0) + 0 * f["entries"]
    cycles = p.out_pixels * f["entries"]
    return {"LUT": lut, "FF": ff, "DSP": dsp, "BRAM18": m["bram"], "URAM": 0 * f["entries"], "mults": 1 + 0 * f["entries"],
            "cycles": cycles, "ii": cycles, "latency": cycles + LAYER_OVERHEAD_CYCLES}


def rtl_seq_top(params: list[LayerParams], board: Board, calibration: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The sequential RTL's top level (opq_hw/rtl/seq.py `opq_top`), beyond its layer modules: the
    loader (input counters, address tables), the sequencer (state, go), the buffers' read registers,
    the logits memory (`seq_logits_memory`) and the output counter.

      LUT    = top_lut + top_lut_per_layer * layers + lut_per_lutram_mux_bit * the logits' LUT RAM read mux bits
               + top_lut_per_logit_bit * logits bits in logic
      FF     = top_ff + top_ff_per_layer * layers + the logits bits in logic + the read registers of the
               buffers not in block RAM
      cycles = input beats (C x H x W values) + n_out + LAYER_OVERHEAD_CYCLES per layer: one sample per
               these cycles + the layers' cycles (`rtl_seq`), exact against Verilator (seq.py's latency_stages)
    """
    cal = {**SEQ_CALIBRATION.defaults, **(calibration or SEQ_CALIBRATION.load(board.family))}
    last = params[-1]
    acc = seq_logit_bits(last)
    kind, cells = seq_logits_memory(last, board)
    logit_logic = acc * last.out_channels if kind == "logic" else 0
    lutram = lutram_mux_bits(acc, last.out_channels, board.family) if kind == "lutram" else 0
    n = len(params)
    aspects = bram_aspects(board)
    read_regs = sum(q.a_bits for q in params  # a buffer in block RAM reads through the block's own register
                    if yosys_memory(q.a_bits, int(seq_features(q)["in_words"]), board.family, False, True, aspects)[0] != "block")
    lut = math.ceil(cal["top_lut"] + cal["top_lut_per_layer"] * n + cal["lut_per_lutram_mux_bit"] * lutram
                    + cal["top_lut_per_logit_bit"] * logit_logic - 1e-9)
    ff = math.ceil(cal["top_ff"] + cal["top_ff_per_layer"] * n + logit_logic + read_regs - 1e-9)
    first = params[0]
    beats = first.in_channels * max(first.in_pixels, 1) if first.kind != "linear" else first.fan_in
    cycles = beats + last.out_channels + LAYER_OVERHEAD_CYCLES * n
    # latency (first value accepted -> last logit out): the layers' latencies + the beats + n_out, less
    # the cycle of the first beat and the sequencer's return to LOAD (Verilator)
    return {"LUT": lut, "FF": ff, "DSP": 0, "BRAM18": cells if kind == "block" else 0, "URAM": 0, "mults": 0,
            "cycles": cycles, "ii": cycles, "latency": beats + last.out_channels - 2}


def seq_logits_memory(last: LayerParams, board: Board) -> tuple[str, int]:
    """Where Yosys puts the rtl-seq top level's logits (n_out x accumulator bits, written by the last
    layer; read at the registered output counter, which memory_dff merges into a synchronous read
    port): `yosys_memory` - LUT RAM on ECP5/xc7, a RAM4K on iCE40 (measured: the 4th block of the
    digits designs). Its width: `seq_logit_bits`."""
    acc = seq_logit_bits(last)
    return yosys_memory(acc, last.out_channels, board.family, rom=False, sync_read=True, aspects=bram_aspects(board))


def seq_logit_bits(last: LayerParams) -> int:
    """The width of the rtl-seq logits: seq.py sizes the last accumulator from the actual weights
    (max over channels of sum |w| x the largest input + |bias|); with them (`LayerParams.logit_bits`,
    from a run's IntNet) that width, else the weight-agnostic W + A + log2(fan_in) + 1 (`seq_features`), which
    can cross a block boundary the real width does not (iCE40 mnist1d-cnn v0: 10 x 19 bits take two RAM4Ks,
    the RTL's 10 x 15 one)."""
    return int(last.logit_bits) if last.logit_bits else int(seq_features(last)["acc"])



# A ROM left in soft logic is, per output bit, a function of the address: Yosys's `abc -lut` maps it
# as a tree of LUTs. The widest function one LUT takes: ECP5 LUT7 (`abc -lut 4:7` in
# techlibs/ecp5/synth_ecp5.cc: LUT5-LUT7 from LUT4s and the PFU's PFUMX/L6MUX21), xc7 LUT8
# (lut_size 6, widelut_size 8 in techlibs/xilinx/synth_xilinx.cc: MUXF7/MUXF8), iCE40 LUT4
# (`abc -lut 4`). family: (native LUT inputs k, widest LUT, ways one more LUT muxes)
ROM_LUT_TREE = {"ecp5": (4, 7, 2), "ice40": (4, 4, 2), "xc7": (6, 8, 4)}


def rom_logic_luts(depth: int, width: int, family: str) -> float:
    """LUTs of a depth x width ROM that Yosys keeps in soft logic (`yosys_memory` "logic"): per output
    bit, ceil(depth / 2^widest) blocks of 2^widest words, each a full widest-LUT of 2^(widest - k)
    native LUTs (the last block: of its words rounded up to a power of two, at least 2^k), and the
    LUTs that mux the blocks (a LUT4 is a 2:1 mux, a LUT6 4:1). Cells of `ROM_LUT_TREE`. Measured on
    the real ROMs of the whole-design models alone (benchmarks/rtl_rom_logic.py,
    results/rtl_rom_logic.json): ECP5 81 x 8 -> 64 LUT4 (8 per bit), xc7 929 x 9 -> 169 LUTs."""
    k, wide, ways = ROM_LUT_TREE[family]
    full, rem = divmod(int(depth), 2 ** wide)
    leaves = full * 2 ** (wide - k) + (2 ** (max(clog2(rem), k) - k) if rem else 0)
    blocks = full + (1 if rem else 0)
    return float(width * (leaves + math.ceil((blocks - 1) / (ways - 1))))



# LUTs per 2:1 mux bit of a wide read multiplexer: iCE40 one LUT4 each (3 of its 4 inputs); ECP5 an 8:1 mux
# (7 of them) in 4 LUT4s with two PFUMX and an L6MUX21 (`abc -lut 4:7`, techlibs/ecp5/synth_ecp5.cc); xc7 a
# 16:1 mux (15) in 4 LUT6s with MUXF7/MUXF8 (widelut_size 8, techlibs/xilinx/synth_xilinx.cc)
MUX_LUT_PER_BIT = {"ice40": 1.0, "ecp5": 4 / 7, "xc7": 4 / 15}
BOARD_TOP_CALIBRATION = Calibration(
    "rtl-board-top", {"lut": 0.0, "lut_per_mux_bit": 0.5, "ff": 0.0},
    "defaults (no measured board top for this family): the buffers' read multiplexers only")


def board_top_features(in_len: int, out_len: int, in_beat: int, family: str) -> dict[str, float]:
    """What the board top (opq_hw/rtl/board.py `opq_board` and hls/rtl/opq_uart_link.v) adds around
    `opq_top` beyond its fixed UART / framing / CRC-16 / cycle-counter logic:
    - the frame receiver's INFER buffer (in_len bytes, opq_frame_rx.v), one write and one read port:
      `yosys_memory` with a synchronous read (the read is registered downstream; measured: 64 bytes take 8
      TRELLIS_DPR16X4 on ECP5 and a RAM4K on iCE40, 600 bytes a DP16KD): `bram`, `lutram`, its read-mux bits;
    - the transmitter's RESULT buffer (out_len bytes, opq_frame_tx.v), written a whole beat of out_beat bytes
      at once (one write port per byte), which no RAM library takes: flip-flops (`logic_bits`) and an
      out_len:1 byte mux (measured: 8 FFs per byte on both families);
    - the byte packer's word register (in_beat > 1 bytes per input word)."""
    kind, n = yosys_memory(8, in_len, family, rom=False, sync_read=True, aspects=_aspects_of(family))
    mux = float(lutram_mux_bits(8, in_len, family)) if kind == "lutram" else (8.0 * (in_len - 1) if kind == "logic" else 0.0)
    return {"mux_bits": mux + 8.0 * (out_len - 1), "logic_bits": 8.0 * out_len + (8.0 * in_len if kind == "logic" else 0.0),
            "lutram": float(n if kind == "lutram" else 0), "bram": float(n if kind == "block" else 0),
            "packer_bits": 8.0 * in_beat if in_beat > 1 else 0.0}


def _aspects_of(family: str) -> tuple[tuple[int, int], ...]:
    """The block RAM shapes of a family (iCE40 4 Kib, the others 18 Kib)."""
    from .common import ASPECTS_4K, ASPECTS_18K

    return ASPECTS_4K if family == "ice40" else ASPECTS_18K


def link_geometry(params: list[LayerParams], arch: str) -> tuple[int, int, int]:
    """The serial link's (INFER payload bytes, RESULT payload bytes, bytes per input word) of a design
    (opq_hw/rtl/board.py `LinkGeometry`): the 8-bit input values, one per beat (rtl-seq) or a pixel of all
    channels per beat (rtl-da convs); the n_out logits as bytes of the signed accumulator (rtl-seq: `seq_logit_bits`,
    the RTL's width when the actual weights are known)."""
    first, last = params[0], params[-1]
    values = first.fan_in if first.kind == "linear" else first.in_channels * max(first.in_pixels, 1)
    in_beat = first.in_channels if arch == "rtl-da" and first.kind != "linear" else 1
    out_w = seq_logit_bits(last) if arch == "rtl-seq" else last.w_bits + last.a_bits + clog2(last.fan_in) + 1
    return values, last.out_channels * ((out_w + 7) // 8), in_beat


def board_top_cost(in_len: int, out_len: int, in_beat: int, board: Board,
                   calibration: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The board top's glue on a dev board (`build --flow rtl --board B` on a board with pins): fixed
    logic per family plus the link buffers (`board_top_features`), measured as the synthesized board
    top minus `opq_top` synthesized alone (benchmarks/rtl_board_top.py,
    board_configs/rtl_board_top_calibration.yaml):

      LUT    = lut + lut_per_mux_bit * the buffers' read-mux bits
      FF     = ff + the buffer bits in flip-flops + the packer's word register
      BRAM18 = the INFER buffer's blocks when Yosys puts it in block RAM; LUT RAM cells are counted apart
               (not LUT-equivalents, as for the layers); no DSP
    """
    cal = {**BOARD_TOP_CALIBRATION.defaults, **(calibration or BOARD_TOP_CALIBRATION.load(board.family))}
    f = board_top_features(in_len, out_len, in_beat, board.family)
    return {"LUT": math.ceil(cal["lut"] + cal["lut_per_mux_bit"] * f["mux_bits"] - 1e-9),
            "FF": math.ceil(cal["ff"] + f["logic_bits"] + f["packer_bits"] - 1e-9), "DSP": 0, "BRAM18": int(f["bram"]), "URAM": 0,
            "cycles": 0, "latency": 0}
