"""Per-layer hardware cost model: pure functions of (LayerSpec, LayerAlloc, Board), no tools needed.

One function per architecture; each docstring cites where its formula comes from:
- `hls4ml_latency`  hls4ml io_parallel, Latency strategy (constant weights, fully unrolled / reuse R)
- `hls4ml_resource` hls4ml io_parallel, Resource strategy (weights in BRAM, reuse factor R)
- `finn_mvau`       FINN MatrixVectorActivation (PE/SIMD folding), FINN-R formulas as in FINN's code
- `rtl_da`          the open flow's constant-weight RTL (da4ml distributed arithmetic), no DSP
- `rtl_seq`         the open flow's sequential RTL: one multiply-accumulate unit per layer, ROM of nonzeros

`estimate(specs, allocation, board, arch, folding)` adds the layers up into a `CostReport`
(memory bits, LUT, FF, DSP, BRAM18, URAM, cycles, II, latency, throughput, fits-or-not, the binding
resource); `choose_folding(...)` picks the fastest folding that fits the board. Coefficients are
data (board YAML, `board_configs/rtl_*_calibration.yaml`), recorded with their provenance in
every report. Arithmetic works elementwise on numpy arrays of `n_nonzero`, so the same functions
serve as the additive rate of the hardware-aware allocator (`opq_hw.hwaware`).
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Mapping

import numpy as np

from .boards import RESOURCES, Board, config_dir, load_board
from .errors import OpqError
from .spec import Allocation, LayerAlloc, LayerSpec, _from_dict

ARCHS = ("hls4ml-latency", "hls4ml-resource", "finn-mvau", "rtl-da", "rtl-seq")
ARCH_FLOW = {"hls4ml-latency": "hls4ml", "hls4ml-resource": "hls4ml", "finn-mvau": "finn", "rtl-da": "rtl", "rtl-seq": "rtl"}
INPUT_BITS = 8  # the input quantizer of every hardware-mode model: 8-bit signed (see the core contract)


# --------------------------------------------------------------------------------------------
# the layer as the formulas see it
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerParams:
    """Integer shape of one layer's matrix-vector product: MH = out_channels rows, MW = fan_in
    columns (K*K*C_in/groups for a conv), evaluated at `out_pixels` positions per sample.
    `nnz` may be a float or a numpy array (the allocator evaluates many survivor counts at once)."""

    name: str
    kind: str
    fan_in: int
    out_channels: int
    out_pixels: int
    in_pixels: int  # input positions per sample (conv: spatial size of the input; linear: 1)
    in_channels: int
    kernel: tuple[int, ...]
    in_width: int  # last spatial dimension of the input (the line length of a line buffer)
    n_weights: int
    nnz: Any
    w_bits: int
    a_bits: int
    a_signed: bool
    has_bias: bool
    in_words: int = 0  # input activation words with the zero padding (C_in x padded spatial size; linear: fan_in)
    laplace_b: float = 0.0  # OPQ's Laplace scale of the normalised weights (0: unknown, magnitudes taken as uniform)
    last: bool = False  # the network's output layer (no requantization: its accumulators are the logits)

    @property
    def acc_bits(self) -> int:
        """Signed accumulator that cannot overflow: a W-bit signed times an A-bit (un)signed
        product has W+A (-1 if signed) bits; summing fan_in of them adds ceil(log2 fan_in)."""
        return self.w_bits + self.a_bits - int(self.a_signed) + clog2(self.fan_in)


def clog2(x: int) -> int:
    return int(math.ceil(math.log2(x))) if x > 1 else 0


def layer_params(spec: LayerSpec, la: LayerAlloc, index: int, act_bits: int | None = 8,
                 n_nonzero: Any = None, bits: int | None = None, last: bool = False) -> LayerParams:
    """Params of layer `index` (0 = first: fed by the 8-bit signed input quantizer; later layers are
    fed by unsigned `act_bits` QuantReLU outputs; `last`: the network's output layer, whose
    accumulators are the logits). `n_nonzero`/`bits` override the allocation's."""
    a_bits = INPUT_BITS if index == 0 else (act_bits or 16)
    if spec.kind == "linear":
        in_pixels, in_width, kernel = 1, 1, ()
        in_words = spec.n_weights // spec.out_channels
    else:
        in_pixels = int(np.prod(spec.in_shape[1:]))
        in_width = int(spec.in_shape[-1])
        kernel = tuple(spec.kernel_size)
        in_words = spec.in_channels * int(np.prod([d + 2 * q for d, q in zip(spec.in_shape[1:], spec.padding)]))
    return LayerParams(
        name=spec.name, kind=spec.kind, fan_in=spec.n_weights // spec.out_channels, out_channels=spec.out_channels,
        out_pixels=spec.out_pixels, in_pixels=in_pixels, in_channels=spec.in_channels, kernel=kernel, in_width=in_width,
        n_weights=spec.n_weights, nnz=la.n_nonzero if n_nonzero is None else n_nonzero,
        w_bits=int(la.bits if bits is None else bits), a_bits=int(a_bits), a_signed=index == 0, has_bias=spec.has_bias,
        in_words=int(in_words), laplace_b=float(la.laplace_b), last=last)


def _ceil(x):
    return np.ceil(np.asarray(x, dtype=np.float64) - 1e-9)


def _dsp_per_mult(w: int, a: int, board: Board) -> int:
    """DSP blocks per W x A multiply: tiles of the board's multiplier (e.g. 25x18 on DSP48E1)."""
    big, small = sorted(board.dsp_mult_width, reverse=True)
    hi, lo = max(w, a), min(w, a)
    return int(math.ceil(hi / big) * math.ceil(lo / small))


def _to_dsp(w: int, a: int, board: Board) -> bool:
    """A multiply goes to DSPs only when both operands have >= `dsp_min_operand_bits` bits
    (board coefficient; narrower products are built in LUTs by Vivado/Vitis HLS)."""
    return board.capacity["DSP"] > 0 and min(w, a) >= board.coeff("dsp_min_operand_bits")


def mem_bits(p: LayerParams) -> tuple[Any, Any]:
    """(dense, sparse) weight memory bits: dense = N*W; sparse = nnz*W + N (a 1-bit position
    bitmap, the CR_idx convention of OPQ.md)."""
    return p.n_weights * p.w_bits, np.asarray(p.nnz, dtype=np.float64) * p.w_bits + p.n_weights


# --------------------------------------------------------------------------------------------
# hls4ml
# --------------------------------------------------------------------------------------------
def valid_reuse_factors(n_in: int, n_out: int) -> list[int]:
    """Reuse factors hls4ml accepts for an n_in x n_out dense product (the rule of hls4ml's
    `_validate_reuse_factor`: multfactor = min(n_in, R), multiplier_limit = ceil(n_in*n_out /
    multfactor); valid iff (multiplier_limit % n_out == 0 or R >= n_in) and (R % n_in == 0 or
    R < n_in) and (n_in*n_out % R == 0 or R >= n_in*n_out)). Re-derived, not copied."""
    out = []
    n = n_in * n_out
    for r in range(1, n + 1):
        mult_limit = math.ceil(n / min(n_in, r))
        if (mult_limit % n_out == 0 or r >= n_in) and (r % n_in == 0 or r < n_in) and (n % r == 0 or r >= n):
            out.append(r)
    return out


def hls4ml_latency(p: LayerParams, board: Board, reuse_factor: int = 1) -> dict[str, Any]:
    """hls4ml io_parallel, Latency strategy, reuse factor R (ParallelizationFactor 1 for convs).

    Source: hls4ml `nnet_dense_latency.h` / `nnet_conv2d_latency.h` structure (Duarte et al.,
    JINST 13 P07027 (2018), Sec. 3-4): the weights are compile-time constants, the product loop is
    unrolled into ceil(nnz/R) multipliers (a multiply by a constant 0 is removed by the HLS
    compiler, so pruned weights cost nothing), each output sums its products in an adder tree,
    a conv reuses one kernel instance for its out_pixels positions (II = R per position).
      mults   = ceil(nnz / R)
      DSP     = mults * tiles(W x A) if min(W, A) >= dsp_min_operand_bits else 0
      LUT     = mults * ceil(c_cm * W * A)   [fabric multiply, c_cm = const_mult_lut_per_bit2]
              + (adders + bias adders) * ceil(c_add * acc)     adders = ceil(max(nnz - MH, 0) / R)
      FF      = mults * ceil(c_ff * (W + A)) + (adders + bias adders) * ceil(c_ff * acc)
      cycles  = II = out_pixels * R ; latency = cycles + ceil(log2(nnz / MH)) + pipeline_extra_cycles
      BRAM18 = URAM = 0 (constants live in the fabric)
    """
    R = int(reuse_factor)
    nnz = np.asarray(p.nnz, dtype=np.float64)
    w, a, acc = p.w_bits, p.a_bits, p.acc_bits
    mults = _ceil(nnz / R)
    adders = _ceil(np.maximum(nnz - p.out_channels, 0) / R) + (p.out_channels if p.has_bias else 0)
    dsp = _to_dsp(w, a, board)
    lut_mult = 0 if dsp else mults * math.ceil(board.coeff("const_mult_lut_per_bit2") * w * a - 1e-9)
    lut = lut_mult + adders * math.ceil(board.coeff("lut_per_adder_bit") * acc - 1e-9)
    ff = mults * math.ceil(board.coeff("ff_per_reg_bit") * (w + a) - 1e-9) + adders * math.ceil(board.coeff("ff_per_reg_bit") * acc - 1e-9)
    cycles = p.out_pixels * R
    depth = _ceil(np.log2(np.maximum(nnz / p.out_channels, 1.0))) + board.coeff("pipeline_extra_cycles")
    return {"LUT": lut, "FF": ff, "DSP": mults * _dsp_per_mult(w, a, board) if dsp else 0 * mults, "BRAM18": 0 * mults,
            "URAM": 0 * mults, "mults": mults, "cycles": cycles, "ii": cycles, "latency": cycles + depth}


# RAMB18 / ECP5 EBR aspect ratios (depth, width) in simple dual port (AMD UG473 Table 1-7/UG573
# Table 1-10; Lattice TN1264 sysMEM); iCE40 4 Kb EBR (Lattice TN1250 memory usage guide).
_ASPECTS_18K = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))
_ASPECTS_4K = ((2048, 2), (1024, 4), (512, 8), (256, 16))


def bram_blocks(width: int, depth: int, board: Board) -> int:
    """Block RAMs for a width x depth memory: the best aspect ratio of the board's block RAM,
    ceil(depth / d) * ceil(width / w) minimised over the (d, w) aspect ratios."""
    aspects = _ASPECTS_4K if board.bram_block_bits == 4096 else _ASPECTS_18K
    return int(min(math.ceil(depth / d) * math.ceil(width / w) for d, w in aspects))


def hls4ml_resource(p: LayerParams, board: Board, reuse_factor: int = 1) -> dict[str, Any]:
    """hls4ml io_parallel, Resource strategy, reuse factor R.

    Source: hls4ml `nnet_dense_resource.h` (block_factor = ceil(n_in*n_out / R) multipliers, each
    reused R times; the weight array is reshaped to block_factor words of depth R) and Duarte et al.
    JINST 13 P07027 (2018). The weights are read from a memory, not constants: pruned weights are
    stored and multiplied like any other (sparsity does not pay here), and the multipliers are
    generic W x A ones.
      BF      = ceil(MW * MH / R)             (dense, zeros included)
      memory  = BF*W bits wide, R deep: BRAM18 = bram_blocks(BF*W, R) if BF*W*R >= rom_bram_min_bits
                and R > 1; else R == 1: registers (FF += BF*W), else LUTRAM (LUT += ceil(bits/lutram_bits_per_lut))
      DSP     = BF * tiles(W x A) if min(W, A) >= dsp_min_operand_bits else 0
      LUT     = BF * ceil(c_m * W * A) [fabric multiply] + BF * ceil(c_add * acc) [accumulators]
      FF      = BF * ceil(c_ff * (W + A)) + MH * ceil(c_ff * acc)
      cycles  = II = out_pixels * R ; latency = cycles + 1 (memory read) + pipeline_extra_cycles
    """
    R = int(reuse_factor)
    w, a, acc = p.w_bits, p.a_bits, p.acc_bits
    like = np.zeros_like(np.asarray(p.nnz, dtype=np.float64))
    n = p.fan_in * p.out_channels
    bf = math.ceil(n / R)
    width, depth = bf * w, R
    bits = width * depth
    bram = lut_mem = ff_mem = 0
    if R == 1:
        ff_mem = width
    elif bits >= board.coeff("rom_bram_min_bits"):
        bram = bram_blocks(width, depth, board)
    else:
        lut_mem = math.ceil(bits / board.coeff("lutram_bits_per_lut") - 1e-9)
    dsp = _to_dsp(w, a, board)
    c_ff = board.coeff("ff_per_reg_bit")
    lut = (0 if dsp else bf * math.ceil(board.coeff("mult_lut_per_bit2") * w * a - 1e-9)) \
        + bf * math.ceil(board.coeff("lut_per_adder_bit") * acc - 1e-9) + lut_mem
    ff = bf * math.ceil(c_ff * (w + a) - 1e-9) + p.out_channels * math.ceil(c_ff * acc - 1e-9) + ff_mem
    cycles = p.out_pixels * R
    return {"LUT": like + lut, "FF": like + ff, "DSP": like + (bf * _dsp_per_mult(w, a, board) if dsp else 0),
            "BRAM18": like + bram, "URAM": like, "mults": like + bf, "cycles": cycles, "ii": cycles,
            "latency": cycles + 1 + board.coeff("pipeline_extra_cycles")}


# --------------------------------------------------------------------------------------------
# FINN
# --------------------------------------------------------------------------------------------
def finn_acc_bits(p: LayerParams, acc_bits: int | None = None) -> int:
    """FINN's accumulator width in its LUT estimate: min(accDataType bits, ceil(alpha +
    log2(1 + 2^-alpha) + 1)) with alpha = log2(MW) + W + A - 1 - signed(A) (the data-type bound of
    Colbert et al., arXiv 2301.13376, as used in FINN's MVAU_hls.lut_estimation). accDataType is
    INT32 until FINN minimises it from the actual weights; pass `acc_bits` to use that value."""
    alpha = math.log2(p.fan_in) + p.w_bits + p.a_bits - 1 - int(p.a_signed)
    bound = math.ceil(alpha + math.log2(1 + 2 ** (-alpha)) + 1)
    return int(min(acc_bits if acc_bits is not None else 32, bound))


def finn_bram18(P: int, Q: int, W: int, MW: int, MH: int, mem_mode: str = "internal_decoupled",
                ram_style: str = "auto") -> int:
    """FINN MVAU.bram_estimation (FINN-R, Blott et al., ACM TRETS 2018; FINN source
    `custom_op/fpgadataflow/matrixvectoractivation.py`): omega = MW*MH/(P*Q) words of P*Q*W bits
    in SDP RAMB18s: width 1 -> ceil(omega/16384); 2 -> ceil(omega/8192); <=4 -> ceil(omega/4096)*
    ceil(w/4); <=9 -> ceil(omega/2048)*ceil(w/9); <=18 or omega > 512 -> ceil(omega/1024)*ceil(w/18);
    else ceil(omega/512)*ceil(w/36). Zero for distributed/ultra RAM, external weights, or embedded
    weights with WMEM <= 128."""
    omega = (MW * MH) / (Q * P)
    mw = Q * W * P
    wmem = MW * MH // (P * Q)
    if (mem_mode == "internal_decoupled" and ram_style in ("distributed", "ultra")) or \
            (mem_mode == "internal_embedded" and wmem <= 128) or mem_mode in ("external", "external_mem"):
        return 0
    if mw == 1:
        return math.ceil(omega / 16384)
    if mw == 2:
        return math.ceil(omega / 8192)
    if mw <= 4:
        return math.ceil(omega / 4096) * math.ceil(mw / 4)
    if mw <= 9:
        return math.ceil(omega / 2048) * math.ceil(mw / 9)
    if mw <= 18 or omega > 512:
        return math.ceil(omega / 1024) * math.ceil(mw / 18)
    return math.ceil(omega / 512) * math.ceil(mw / 36)


def finn_uram(P: int, Q: int, W: int, MW: int, MH: int, mem_mode: str = "internal_decoupled",
              ram_style: str = "auto") -> int:
    """FINN MVAU.uram_estimation: ceil(P*Q*W / 72) * ceil(omega / 4096) when the weights are in
    URAM (internal_decoupled with ram_style "ultra"), else 0."""
    wmem = MW * MH // (P * Q)
    if (mem_mode == "internal_decoupled" and ram_style != "ultra") or \
            (mem_mode == "internal_embedded" and wmem <= 128) or mem_mode in ("external", "external_mem"):
        return 0
    return math.ceil(Q * W * P / 72) * math.ceil((MW * MH) / (Q * P) / 4096)


def finn_mvau(p: LayerParams, board: Board, pe: int = 1, simd: int = 1, mem_mode: str = "internal_decoupled",
              ram_style: str = "auto", res_type: str = "lut", acc_bits: int | None = None,
              w_bits: int | None = None) -> dict[str, Any]:
    """FINN MatrixVectorActivation (HLS variant) with PE rows and SIMD columns in parallel.

    Source: FINN-R (Blott et al., "FINN-R: An End-to-End Deep-Learning Framework for Fast
    Exploration of Quantized Neural Networks", ACM TRETS 11(3), 2018) as implemented in FINN
    `custom_op/fpgadataflow/hls/matrixvectoractivation_hls.py` (lut_estimation, dsp_estimation)
    and `matrixvectoractivation.py` (bram_estimation, uram_estimation, get_exp_cycles):
      LUT    = int(300 + 1.1 * P * (mult + addertree + acc) + c2)
               mult = 0 if resType dsp else Q * (2*ceil((W+A)/6) - 1) * (W+A)
               addertree = (W+A) * (2Q - 1); acc = finn_acc_bits(...)
               c2 = P*Q*W*ceil(WMEM/64) for distributed weights (or embedded with WMEM <= 128), else 0
      DSP    = P * Q * ceil((W+A)/48) if resType dsp else 0
      BRAM18 = finn_bram18(...); URAM = finn_uram(...)
      cycles = (MH/P) * (MW/Q) * out_pixels        (II of the layer in FINN's dataflow)
      FF     = P * (Q*(W+A) + acc)  -- ours: FINN publishes no FF estimate (uncalibrated)
    Threshold memories with ram_style_thresholds "distributed" are not counted (FINN's default is
    "auto", which FINN counts as 0 too). Weights are stored dense: sparsity does not pay in FINN.
    Constraints: SIMD divides MW, PE divides MH.
    """
    P, Q = int(pe), int(simd)
    MW, MH = p.fan_in, p.out_channels
    if res_type not in ("auto", "lut", "dsp"):
        raise OpqError(f"layer {p.name!r}: res_type must be auto, lut or dsp (FINN resType), got {res_type!r}")
    if MW % Q or MH % P:
        raise OpqError(f"layer {p.name!r}: FINN needs SIMD | MW and PE | MH; got SIMD={Q}, MW={MW}, PE={P}, MH={MH}. "
                       f"Pick SIMD from the divisors of {MW} and PE from the divisors of {MH}")
    W = int(w_bits or p.w_bits)
    A = p.a_bits
    like = np.zeros_like(np.asarray(p.nnz, dtype=np.float64))
    wmem = MW * MH // (P * Q)
    c2 = 0
    if (mem_mode == "internal_decoupled" and ram_style == "distributed") or (mem_mode == "internal_embedded" and wmem <= 128):
        c2 = (P * Q * W) * math.ceil(wmem / 64)
    mult = 0 if res_type == "dsp" else Q * (2 * math.ceil((W + A) / 6) - 1) * (W + A)
    addertree = (W + A) * (2 * Q - 1)
    acc = finn_acc_bits(dataclasses.replace(p, w_bits=W), acc_bits)
    lut = int(300 + 1.1 * (P * (mult + addertree + acc)) + c2)
    dsp = int(P * Q * math.ceil((W + A) / 48)) if res_type == "dsp" else 0
    cycles = int((MH // P) * (MW // Q) * p.out_pixels)
    return {"LUT": like + lut, "FF": like + P * (Q * (W + A) + acc), "DSP": like + dsp,
            "BRAM18": like + finn_bram18(P, Q, W, MW, MH, mem_mode, ram_style),
            "URAM": like + finn_uram(P, Q, W, MW, MH, mem_mode, ram_style), "mults": like + P * Q,
            "cycles": cycles, "ii": cycles, "latency": cycles + board.coeff("pipeline_extra_cycles")}


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


# --------------------------------------------------------------------------------------------
# open RTL flow (da4ml)
# --------------------------------------------------------------------------------------------
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


_CAL_KEYS = {"rtl-da": ("da_coef", "da_digit_exp", "da_width_exp", "lut_per_da", "lut_per_requant_bit",
                        "lut_per_window_bit", "lut_per_conv_layer", "lut_per_layer"),
             "rtl-seq": ("lut_per_layer", "lut_per_acc_bit", "lut_per_table_bit", "ff_per_layer", "ff_per_acc_bit",
                         "ff_per_addr_bit")}
_CAL_DEFAULTS = {
    "rtl-da": ({"da_coef": 1.0, "da_digit_exp": 1.0, "da_width_exp": 1.0, "lut_per_da": 1.0, "lut_per_requant_bit": 0.0,
                "lut_per_window_bit": 0.0, "lut_per_conv_layer": 0.0, "lut_per_layer": 0.0},
               "defaults (no fitted calibration for this family): one adder bit per CSD digit beyond the first "
               "of each output (da4ml's cost is ~ the number of adder bits: Sun et al., da4ml, arXiv "
               "2507.04535), one LUT per adder bit, no wrapper logic"),
    "rtl-seq": ({"lut_per_layer": 150.0, "lut_per_acc_bit": 8.0, "lut_per_table_bit": 0.5, "ff_per_layer": 40.0,
                 "ff_per_acc_bit": 4.0, "ff_per_addr_bit": 4.0},
                "defaults (no fitted calibration for this family): rough register and LUT counts read off "
                "opq_hw/rtl/seq.py (acc, max, pipeline registers; tables of MH entries)"),
}


def rtl_calibration(family: str, arch: str = "rtl-da") -> dict[str, Any]:
    """Fitted coefficients of an open-RTL architecture for a family from
    `board_configs/<arch>_calibration.yaml` (rtl_da_calibration.yaml, rtl_seq_calibration.yaml:
    `{family: {coefficients..., provenance: ...}}`, written by benchmarks/rtl_calibration.py), or the
    documented defaults when the file or the family is absent."""
    if arch not in _CAL_KEYS:
        raise OpqError(f"no calibration for architecture {arch!r}; calibrated: {sorted(_CAL_KEYS)}")
    values, why = _CAL_DEFAULTS[arch]
    defaults = {**values, "provenance": why}
    path = config_dir() / f"{arch.replace('-', '_')}_calibration.yaml"
    if not path.is_file():
        return defaults
    from .boards import read_yaml

    data = read_yaml(path)  # size-limited, UTF-8, no aliases
    fam = data.get(family) if isinstance(data, dict) else None
    if not isinstance(fam, dict):
        return defaults
    out = dict(defaults)
    for k in _CAL_KEYS[arch]:
        if k in fam:
            v = fam[k]
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                raise OpqError(f"{path.name}: {family}.{k} must be a finite number, got {v!r}")
            out[k] = float(v)
    out["provenance"] = str(fam.get("provenance", f"{path.name} ({family}), no provenance given"))
    return out


SRL_MIN_RUN, SRL_DEPTH = 4, 32  # Yosys synth_xilinx puts runs of >= 4 flip-flops into SRLC32Es (measured, Yosys 0.23)


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
    from .rtl.gen import COLLECT_COUNTER_BITS, WINDOW_COUNTER_BITS, shift_chains, window_offsets

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
    benchmarks/rtl_calibration.py):
      da     = da_coef * digits^da_digit_exp * width^da_width_exp   (da4ml's cost, fitted to da4ml's
               own solutions; da4ml's exact cost when `kernel` is given)
      LUT    = lut_per_da * da + lut_per_requant_bit * requant_bits + lut_per_window_bit * window_bits
               + lut_per_conv_layer (conv) + lut_per_layer
      FF     = the register count of `da_features` (no fitted term); on xc7 less the runs of >= 4
               shift-register flip-flops that Yosys maps into SRLC32Es, which count as LUTs
      cycles = II = input pixels per sample (conv), 1 for a linear layer's kernel;
      latency = cycles + the kernel's pipeline latency + 1 (+ pipeline_extra_cycles of the board)
    """
    cal = dict(calibration or rtl_calibration(board.family))
    f = da_features(p, kernel)
    digits = f["digits"]
    da = np.asarray(float(f["da4ml_cost"])) + 0 * digits if f["da4ml_cost"] is not None else _da_cost(digits, f["width"], cal)
    lut = _ceil(cal["lut_per_da"] * da + cal["lut_per_requant_bit"] * f["requant_bits"]
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
    random layers, benchmarks/rtl_calibration.py --arch seq); ROM bits, BRAM, DSP and cycles are exact
    counts of the design, not fitted.
    """
    from .rtl.seq import LAYER_OVERHEAD_CYCLES

    cal = dict(calibration or rtl_calibration(board.family, "rtl-seq"))
    f = seq_features(p)
    bram = 0 * f["entries"]
    lut_ram = 0 * f["entries"]
    aspects = _ASPECTS_4K if board.bram_block_bits == 4096 else _ASPECTS_18K
    for width, depth in ((p.w_bits + f["addr"], f["entries"]), (p.a_bits, np.asarray(f["buf_bits"]) / p.a_bits)):
        depth = np.asarray(depth, dtype=np.float64)
        blocks = np.min([np.ceil(depth / d - 1e-9) * math.ceil(width / w) for d, w in aspects], axis=0)
        big = depth * width >= board.coeff("rom_bram_min_bits")
        bram = bram + np.where(big, blocks, 0)
        lut_ram = lut_ram + np.where(big, 0, depth * width / board.coeff("lutram_bits_per_lut"))
    lut = _ceil(cal["lut_per_layer"] + cal["lut_per_acc_bit"] * f["acc"] + cal["lut_per_table_bit"] * f["table_bits"]
                + lut_ram)
    ff = _ceil(cal["ff_per_layer"] + cal["ff_per_acc_bit"] * f["acc"] + cal["ff_per_addr_bit"] * (f["addr"] + f["ptr"])
               + 0 * f["entries"])
    dsp = (1 if board.capacity["DSP"] > 0 else 0) + 0 * f["entries"]
    cycles = p.out_pixels * f["entries"]
    return {"LUT": lut, "FF": ff, "DSP": dsp, "BRAM18": bram, "URAM": 0 * f["entries"], "mults": 1 + 0 * f["entries"],
            "cycles": cycles, "ii": cycles, "latency": cycles + LAYER_OVERHEAD_CYCLES}


# --------------------------------------------------------------------------------------------
# records
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerCost:
    """What one layer costs under one architecture and folding."""

    name: str
    kind: str
    bits: int
    act_bits: int
    n_weights: int
    n_nonzero: int
    mem_bits_dense: int
    mem_bits_sparse: int
    LUT: int
    FF: int
    DSP: int
    BRAM18: int
    URAM: int
    mults: int
    cycles: int  # cycles per sample spent in this layer (= its initiation interval)
    latency_cycles: int
    folding: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LayerCost":
        return _from_dict(cls, d)


@dataclass(frozen=True)
class CostReport:
    """A design's cost on a board: per layer and in total, with the fit verdict.

    `utilisation[r]` = (total + shell) / capacity; the design fits when it is <= the board's
    utilisation limit for every resource; `binding` is the resource closest to (or furthest over)
    its limit; `over[r]` says how much of r is missing. `ii_cycles` is the network's initiation
    interval (its slowest layer, `bottleneck`), `latency_cycles` the sum over layers.
    """

    arch: str
    board: str
    part: str
    family: str
    clock_mhz: float
    act_bits: int
    layers: tuple[LayerCost, ...]
    totals: dict[str, int]
    capacity: dict[str, int]
    limits: dict[str, float]
    shell: dict[str, int]
    utilisation: dict[str, float]
    fits: bool
    binding: str
    over: dict[str, float]
    ii_cycles: int
    latency_cycles: int
    latency_us: float
    throughput_fps: float
    bottleneck: str
    mem_bits_dense: int
    mem_bits_sparse: int
    coefficients: dict[str, Any]
    provenance: dict[str, str]
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def folding(self) -> dict[str, dict[str, Any]]:
        return {lc.name: dict(lc.folding) for lc in self.layers}

    def layer(self, name: str) -> LayerCost:
        for lc in self.layers:
            if lc.name == name:
                return lc
        raise KeyError(f"no layer {name!r}; layers: {[lc.name for lc in self.layers]}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["layers"] = [lc.to_dict() for lc in self.layers]
        d["notes"] = list(self.notes)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CostReport":
        d = dict(d)
        d["layers"] = tuple(LayerCost.from_dict(x) for x in d["layers"])
        d["notes"] = tuple(d.get("notes", ()))
        return _from_dict(cls, d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, s: str) -> "CostReport":
        return cls.from_dict(json.loads(s))


# --------------------------------------------------------------------------------------------
# estimate / folding
# --------------------------------------------------------------------------------------------
def _check_arch(arch: str, board: Board) -> None:
    if arch not in ARCHS:
        raise OpqError(f"unknown architecture {arch!r}; choose one of {ARCHS}")
    if ARCH_FLOW[arch] not in board.flows:
        raise OpqError(f"board {board.name!r} does not support the {ARCH_FLOW[arch]} flow ({arch}); "
                       f"its flows are {list(board.flows)}: choose another --arch or board")


def _pairs(specs: list[LayerSpec], allocation: Allocation) -> list[tuple[LayerSpec, LayerAlloc]]:
    names = [la.name for la in allocation.layers]
    if [s.name for s in specs] != names:
        raise OpqError(f"specs {[s.name for s in specs]} and allocation layers {names} differ; "
                       "use the specs.json and allocation.json of the same run")
    return [(s, allocation.layer(s.name)) for s in specs]


def network_params(specs: list[LayerSpec], allocation: Allocation, act_bits: int | None = 8) -> list[LayerParams]:
    """`layer_params` of every layer in network order (the first fed by the input quantizer, the
    last one's accumulators the logits)."""
    pairs = _pairs(specs, allocation)
    return [layer_params(s, la, i, act_bits, last=i == len(pairs) - 1) for i, (s, la) in enumerate(pairs)]


def default_folding(p: LayerParams, arch: str) -> dict[str, Any]:
    """Fully parallel: R = 1 (hls4ml), PE = MH and SIMD = MW (FINN), nothing to fold for rtl-da/rtl-seq."""
    if arch.startswith("hls4ml"):
        return {"reuse_factor": 1}
    if arch == "finn-mvau":
        return {"pe": p.out_channels, "simd": p.fan_in}
    return {}


_FOLD_KEYS = {"hls4ml-latency": {"reuse_factor"}, "hls4ml-resource": {"reuse_factor"},
              "finn-mvau": {"pe", "simd", "mem_mode", "ram_style", "res_type", "acc_bits", "w_bits"}, "rtl-da": set(),
              "rtl-seq": set()}


def layer_cost(p: LayerParams, board: Board, arch: str, fold: Mapping[str, Any] | None = None,
               calibration: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Resource dict of one layer (arrays when p.nnz is an array)."""
    fold = dict(fold or {})
    bad = set(fold) - _FOLD_KEYS[arch]
    if bad:
        raise OpqError(f"layer {p.name!r}: folding keys {sorted(bad)} do not apply to {arch}; "
                       f"allowed: {sorted(_FOLD_KEYS[arch]) or 'none'}")
    if arch == "hls4ml-latency":
        return hls4ml_latency(p, board, **fold)
    if arch == "hls4ml-resource":
        return hls4ml_resource(p, board, **fold)
    if arch == "finn-mvau":
        return finn_mvau(p, board, **fold)
    if arch == "rtl-seq":
        return rtl_seq(p, board, calibration)
    return rtl_da(p, board, calibration)


def estimate(specs: list[LayerSpec], allocation: Allocation, board: "Board | str", arch: str,
             folding: Mapping[str, Mapping[str, Any]] | None = None, act_bits: int | None = 8) -> CostReport:
    """Cost of `allocation` on `board` with architecture `arch`.

    folding: per layer name, {"reuse_factor": R} (hls4ml) or {"pe": P, "simd": Q, ...} (FINN);
    layers not named are fully parallel (or use LayerAlloc.reuse_factor when set, for hls4ml).
    act_bits: activation bits between layers (the run's `act_bits`); the first layer's input is
    the 8-bit signed input quantizer.
    """
    board = load_board(board)
    _check_arch(arch, board)
    folding = dict(folding or {})
    unknown = set(folding) - {s.name for s in specs}
    if unknown:
        raise OpqError(f"folding names unknown layers {sorted(unknown)}; layers: {[s.name for s in specs]}")
    cal = rtl_calibration(board.family, arch) if arch.startswith("rtl-") else None
    layers = []
    notes = []
    for (s, la), p in zip(_pairs(specs, allocation), network_params(specs, allocation, act_bits)):
        fold = dict(default_folding(p, arch))
        if arch.startswith("hls4ml") and la.reuse_factor:
            fold["reuse_factor"] = int(la.reuse_factor)
        fold.update(folding.get(s.name, {}))
        r = layer_cost(p, board, arch, fold, cal)
        dense, sparse = mem_bits(p)
        layers.append(LayerCost(
            name=s.name, kind=s.kind, bits=p.w_bits, act_bits=p.a_bits, n_weights=s.n_weights, n_nonzero=int(la.n_nonzero),
            mem_bits_dense=int(dense), mem_bits_sparse=int(round(float(sparse))),
            **{k: int(round(float(r[k]))) for k in RESOURCES}, mults=int(round(float(r["mults"]))),
            cycles=int(r["cycles"]), latency_cycles=int(round(float(r["latency"]))), folding=fold))
        if la.skipped:
            notes.append(f"{s.name}: skipped by OPQ (32-bit dense weights) - costed at 32 bits")
    if arch == "hls4ml-resource":
        notes.append("hls4ml-resource stores and multiplies pruned weights like any other: sparsity saves nothing")
    if arch == "finn-mvau":
        notes.append("finn-mvau counts the MVAUs only (no sliding-window generators, pools, FIFOs or DMA); "
                     "weights are stored dense, so sparsity saves nothing")
    if arch.startswith("rtl-"):
        notes.append(f"{arch} coefficients: {cal['provenance']}")
    if arch == "rtl-seq":
        notes.append("rtl-seq: the layers run one after another, so the interval is the sum of their cycles")
    if act_bits is None:
        notes.append("the run has float activations; costed as 16-bit activations")
    return _report(layers, board, arch, act_bits or 16, cal, notes)


def _report(layers: list[LayerCost], board: Board, arch: str, act_bits: int, cal, notes) -> CostReport:
    totals = {r: int(sum(getattr(lc, r) for lc in layers)) for r in RESOURCES}
    util, over, press = {}, {}, {}
    for r in RESOURCES:
        used = totals[r] + board.shell[r]
        cap = board.capacity[r]
        util[r] = used / cap if cap else (0.0 if used == 0 else math.inf)
        allowed = board.utilisation_limits[r] * cap
        press[r] = used / allowed if allowed else (0.0 if used == 0 else math.inf)
        if used > allowed + 1e-9:
            over[r] = float(used - allowed)
    fits = not over
    binding = max(RESOURCES, key=lambda r: press[r])
    bott = max(layers, key=lambda lc: lc.cycles)
    ii = sum(lc.cycles for lc in layers) if arch == "rtl-seq" else bott.cycles  # rtl-seq: one layer at a time
    lat = int(sum(lc.latency_cycles for lc in layers))
    coeffs: dict[str, Any] = dict(board.coefficients)
    prov = {"board": f"board_configs/{board.name}.yaml", **{f"board.{k}": v for k, v in board.provenance.items()}}
    if cal is not None:
        key = arch.replace("-", "_")
        coeffs.update({f"{key}.{k}": v for k, v in cal.items() if k != "provenance"})
        prov[key] = cal["provenance"]
    prov["formulas"] = f"opq_hw.cost.{arch.replace('-', '_')} (docstring cites the sources)"
    return CostReport(
        arch=arch, board=board.name, part=board.part, family=board.family, clock_mhz=board.clock_mhz, act_bits=int(act_bits),
        layers=tuple(layers), totals=totals, capacity=dict(board.capacity),
        limits={r: board.utilisation_limits[r] * board.capacity[r] for r in RESOURCES}, shell=dict(board.shell),
        utilisation={r: (round(v, 6) if math.isfinite(v) else None) for r, v in util.items()}, fits=fits, binding=binding,
        over=over, ii_cycles=int(ii), latency_cycles=lat, latency_us=lat / board.clock_mhz,
        throughput_fps=board.clock_mhz * 1e6 / ii, bottleneck=bott.name,
        mem_bits_dense=int(sum(lc.mem_bits_dense for lc in layers)),
        mem_bits_sparse=int(sum(lc.mem_bits_sparse for lc in layers)), coefficients=coeffs, provenance=prov,
        notes=tuple(notes))


def _options(p: LayerParams, board: Board, arch: str) -> list[tuple[int, dict[str, Any], dict[str, float]]]:
    """(cycles, folding, resources) of every legal folding of one layer."""
    opts = []
    if arch.startswith("hls4ml"):
        for r in valid_reuse_factors(p.fan_in, p.out_channels):
            res = layer_cost(p, board, arch, {"reuse_factor": r})
            opts.append((int(res["cycles"]), {"reuse_factor": r}, {k: float(res[k]) for k in RESOURCES}))
    elif arch == "finn-mvau":
        for pe in divisors(p.out_channels):
            for simd in divisors(p.fan_in):
                res = layer_cost(p, board, arch, {"pe": pe, "simd": simd})
                opts.append((int(res["cycles"]), {"pe": pe, "simd": simd}, {k: float(res[k]) for k in RESOURCES}))
    else:
        res = layer_cost(p, board, arch, {})
        opts.append((int(res["cycles"]), {}, {k: float(res[k]) for k in RESOURCES}))
    return opts


def choose_folding(specs: list[LayerSpec], allocation: Allocation, board: "Board | str", arch: str,
                   target_fps: float | None = None, act_bits: int | None = 8, strict: bool = True) -> dict[str, dict[str, Any]]:
    """The fastest folding that fits: per layer {"reuse_factor": R} (hls4ml, R from hls4ml's valid
    reuse factors) or {"pe": P, "simd": Q} (FINN: P | MH, Q | MW); {} per layer for rtl-da.

    The network's initiation interval is its slowest layer's. For each candidate interval T
    (ascending) every layer takes its cheapest folding with cycles <= T (cheapest = smallest sum of
    resource / usable board amount); the first T whose total fits is returned. With `target_fps`
    the slowest T that still meets clock / target_fps is used instead (fewest resources at that
    rate). If nothing fits: OpqError naming what is missing, or (strict=False) the most folded one.
    """
    board = load_board(board)
    _check_arch(arch, board)
    params = network_params(specs, allocation, act_bits)
    usable = {r: max(board.limit(r), 1e-9) for r in RESOURCES}
    per_layer = []
    for p in params:
        opts = _options(p, board, arch)
        opts.sort(key=lambda o: (o[0], sum(o[2][r] / usable[r] for r in RESOURCES)))
        per_layer.append(opts)
    cands = sorted({o[0] for opts in per_layer for o in opts})
    if target_fps is not None:
        if target_fps <= 0:
            raise OpqError(f"target_fps must be > 0, got {target_fps}")
        t_max = board.clock_mhz * 1e6 / target_fps
        fast_enough = [t for t in cands if t <= t_max and all(opts[0][0] <= t for opts in per_layer)]
        if not fast_enough:
            slowest_min = max(opts[0][0] for opts in per_layer)
            raise OpqError(f"{target_fps:g} frames/s needs an interval of {t_max:.0f} cycles at {board.clock_mhz:g} MHz, "
                           f"but the fully parallel design takes {slowest_min} cycles; lower --target-fps")
        cands = list(reversed(fast_enough))

    def pick(T):
        fold, tot = {}, {r: 0.0 for r in RESOURCES}
        for p, opts in zip(params, per_layer):
            ok = [o for o in opts if o[0] <= T]
            if not ok:
                return None, None
            best = min(ok, key=lambda o: sum(o[2][r] / usable[r] for r in RESOURCES))
            fold[p.name] = best[1]
            for r in RESOURCES:
                tot[r] += best[2][r]
        return fold, tot

    def fits(tot):
        return all(tot[r] + board.shell[r] <= board.utilisation_limits[r] * board.capacity[r] + 1e-9 for r in RESOURCES)

    for T in cands:
        fold, tot = pick(T)
        if fold is None:
            continue
        if fits(tot):
            return fold
    # nothing fits: the slowest candidate is the most folded (the cheapest that meets target_fps)
    fold, tot = pick(cands[-1] if target_fps is None else cands[0])
    if not strict:
        return fold
    missing = {r: tot[r] + board.shell[r] - board.utilisation_limits[r] * board.capacity[r] for r in RESOURCES
               if tot[r] + board.shell[r] > board.utilisation_limits[r] * board.capacity[r] + 1e-9}
    what = ", ".join(f"{r}: needs {tot[r] + board.shell[r]:.0f}, usable {board.utilisation_limits[r] * board.capacity[r]:.0f} "
                     f"(missing {m:.0f})" for r, m in missing.items())
    raise OpqError(f"no {arch} folding fits {board.name}{' at the target rate' if target_fps else ''}, even the most "
                   f"folded one: {what}. Compress harder (--board {board.name} --fit), pick a larger board, "
                   f"or another --arch")
