"""hls4ml io_parallel dense/conv layers: the Latency strategy (constant weights, fully unrolled or
reuse factor R) and the Resource strategy (weights in block RAM, reuse factor R), and the reuse
factors hls4ml accepts."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..boards import Board
from ..spec import LayerAlloc
from .common import bram_blocks, ceil_tol, dsp_per_mult, uses_dsp
from .records import LayerParams


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


def reuse_foldings(p: LayerParams) -> list[dict[str, int]]:
    """Every folding hls4ml accepts for the layer: {"reuse_factor": R} for its valid reuse factors."""
    return [{"reuse_factor": r} for r in valid_reuse_factors(p.fan_in, p.out_channels)]


def alloc_reuse(la: LayerAlloc) -> dict[str, int]:
    """The reuse factor an allocation sets for its layer (none: {})."""
    return {"reuse_factor": int(la.reuse_factor)} if la.reuse_factor else {}


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
    mults = ceil_tol(nnz / R)
    adders = ceil_tol(np.maximum(nnz - p.out_channels, 0) / R) + (p.out_channels if p.has_bias else 0)
    dsp = uses_dsp(w, a, board)
    lut_mult = 0 if dsp else mults * math.ceil(board.coeff("const_mult_lut_per_bit2") * w * a - 1e-9)
    lut = lut_mult + adders * math.ceil(board.coeff("lut_per_adder_bit") * acc - 1e-9)
    ff = mults * math.ceil(board.coeff("ff_per_reg_bit") * (w + a) - 1e-9) + adders * math.ceil(board.coeff("ff_per_reg_bit") * acc - 1e-9)
    cycles = p.out_pixels * R
    depth = ceil_tol(np.log2(np.maximum(nnz / p.out_channels, 1.0))) + board.coeff("pipeline_extra_cycles")
    return {"LUT": lut, "FF": ff, "DSP": mults * dsp_per_mult(w, a, board) if dsp else 0 * mults, "BRAM18": 0 * mults,
            "URAM": 0 * mults, "mults": mults, "cycles": cycles, "ii": cycles, "latency": cycles + depth}




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
    dsp = uses_dsp(w, a, board)
    c_ff = board.coeff("ff_per_reg_bit")
    lut = (0 if dsp else bf * math.ceil(board.coeff("mult_lut_per_bit2") * w * a - 1e-9)) \
        + bf * math.ceil(board.coeff("lut_per_adder_bit") * acc - 1e-9) + lut_mem
    ff = bf * math.ceil(c_ff * (w + a) - 1e-9) + p.out_channels * math.ceil(c_ff * acc - 1e-9) + ff_mem
    cycles = p.out_pixels * R
    return {"LUT": like + lut, "FF": like + ff, "DSP": like + (bf * dsp_per_mult(w, a, board) if dsp else 0),
            "BRAM18": like + bram, "URAM": like, "mults": like + bf, "cycles": cycles, "ii": cycles,
            "latency": cycles + 1 + board.coeff("pipeline_extra_cycles")}


def hls4ml_affine(n_in: int, a_bits: int, x_bits: int, b_bits: int, board: Board) -> dict[str, Any]:
    """A BatchNorm kept as a per-channel affine y = a_c * x + b_c (`carrier_graph.ChannelAffine`), built by hls4ml
    as its BatchNormalization / ApplyAlpha layer, io_parallel, reuse factor 1.

    Source: hls4ml `nnet_utils/nnet_batchnorm.h`, `normalize()`: every one of the layer's n_in = C x pixels
    elements is multiplied by its channel's scale and its channel's bias added, the loop fully unrolled
    (multiplier_limit = ceil(n_in / reuse_factor)); the scales are constants, so each product is a constant
    multiplier (A = the 8 significant bits of a_c: its power-of-two scale is a shift), costed like a dense
    layer's in `hls4ml_latency` (Duarte et al., JINST 13 P07027 (2018)):
      mults  = n_in ; DSP = mults * tiles(A x X) if min(A, X) >= dsp_min_operand_bits else 0
      LUT    = mults * ceil(c_cm * A * X) (fabric) + n_in * ceil(c_add * W)   W = max(A + X, B) + 1 (the sum)
      FF     = mults * ceil(c_ff * (A + X)) + n_in * ceil(c_ff * W)
      cycles = II = 1 ; latency = 1 + pipeline_extra_cycles ; BRAM18 = URAM = 0
    """
    mults = int(n_in)
    width = max(a_bits + x_bits, b_bits) + 1
    dsp = uses_dsp(a_bits, x_bits, board)
    lut = (0 if dsp else mults * math.ceil(board.coeff("const_mult_lut_per_bit2") * a_bits * x_bits - 1e-9)) \
        + n_in * math.ceil(board.coeff("lut_per_adder_bit") * width - 1e-9)
    ff = mults * math.ceil(board.coeff("ff_per_reg_bit") * (a_bits + x_bits) - 1e-9) \
        + n_in * math.ceil(board.coeff("ff_per_reg_bit") * width - 1e-9)
    return {"LUT": lut, "FF": ff, "DSP": mults * dsp_per_mult(a_bits, x_bits, board) if dsp else 0, "BRAM18": 0,
            "URAM": 0, "mults": mults, "cycles": 1, "latency": 1 + board.coeff("pipeline_extra_cycles")}
