"""Formula pieces several architectures share: tolerant ceilings, DSP tiling of a multiply, the
weight memory of a layer and block-RAM packing at the board's aspect ratios."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..boards import Board
from .records import LayerParams


def ceil_tol(x):
    """ceil(x) of float arrays, tolerant of rounding noise (x within 1e-9 above an integer stays it)."""
    return np.ceil(np.asarray(x, dtype=np.float64) - 1e-9)


def dsp_per_mult(w: int, a: int, board: Board) -> int:
    """DSP blocks per W x A multiply: tiles of the board's multiplier (e.g. 25x18 on DSP48E1)."""
    big, small = sorted(board.dsp_mult_width, reverse=True)
    hi, lo = max(w, a), min(w, a)
    return int(math.ceil(hi / big) * math.ceil(lo / small))


def uses_dsp(w: int, a: int, board: Board) -> bool:
    """A multiply goes to DSPs only when both operands have >= `dsp_min_operand_bits` bits
    (board coefficient; narrower products are built in LUTs by Vivado/Vitis HLS)."""
    return board.capacity["DSP"] > 0 and min(w, a) >= board.coeff("dsp_min_operand_bits")


def mem_bits(p: LayerParams) -> tuple[Any, Any]:
    """(dense, sparse) weight memory bits: dense = N*W; sparse = nnz*W + N (a 1-bit position
    bitmap, the CR_idx convention of OPQ.md)."""
    return p.n_weights * p.w_bits, np.asarray(p.nnz, dtype=np.float64) * p.w_bits + p.n_weights


# RAMB18 / ECP5 EBR aspect ratios (depth, width) in simple dual port (AMD UG473 Table 1-7/UG573
# Table 1-10; Lattice TN1264 sysMEM); iCE40 4 Kb EBR (Lattice TN1250 memory usage guide).
ASPECTS_18K = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))
ASPECTS_4K = ((2048, 2), (1024, 4), (512, 8), (256, 16))


def bram_aspects(board: Board) -> tuple[tuple[int, int], ...]:
    """The (depth, width) aspect ratios of the board's block RAM."""
    return ASPECTS_4K if board.bram_block_bits == 4096 else ASPECTS_18K


def bram_blocks(width: int, depth: int, board: Board) -> int:
    """Block RAMs for a width x depth memory: the best aspect ratio of the board's block RAM,
    ceil(depth / d) * ceil(width / w) minimised over the (d, w) aspect ratios."""
    return int(min(math.ceil(depth / d) * math.ceil(width / w) for d, w in bram_aspects(board)))
