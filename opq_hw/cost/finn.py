"""FINN MatrixVectorActivation (MVAU) with PE x SIMD folding: the FINN-R formulas as FINN's own
estimators compute them (LUT, DSP, BRAM18, URAM, cycles)."""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from ..boards import Board
from ..errors import OpqError
from .records import LayerParams


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
    # the layer as it is when W is its own width (a copy per call was most of the cost of a folding search)
    acc = finn_acc_bits(p if type(p.w_bits) is int and p.w_bits == W else dataclasses.replace(p, w_bits=W), acc_bits)
    lut = int(300 + 1.1 * (P * (mult + addertree + acc)) + c2)
    dsp = int(P * Q * math.ceil((W + A) / 48)) if res_type == "dsp" else 0
    cycles = int((MH // P) * (MW // Q) * p.out_pixels)
    return {"LUT": like + lut, "FF": like + P * (Q * (W + A) + acc), "DSP": like + dsp,
            "BRAM18": like + finn_bram18(P, Q, W, MW, MH, mem_mode, ram_style),
            "URAM": like + finn_uram(P, Q, W, MW, MH, mem_mode, ram_style), "mults": like + P * Q,
            "cycles": cycles, "ii": cycles, "latency": cycles + board.coeff("pipeline_extra_cycles")}


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def pe_simd_foldings(p: LayerParams) -> list[dict[str, int]]:
    """Every folding FINN accepts for the layer: PE | MH, SIMD | MW."""
    return [{"pe": pe, "simd": simd} for pe in divisors(p.out_channels) for simd in divisors(p.fan_in)]
