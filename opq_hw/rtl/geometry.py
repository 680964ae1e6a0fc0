"""Geometry of the open flow's RTL that both the generators (`gen.py`, `seq.py`) and the cost model
(`opq_hw.cost.rtl_da`, `opq_hw.cost.rtl_seq`) read: where the line buffer's taps sit, how its shift
register splits into runs, the counters the fixed HDL modules hold, the sequential layer's
pipeline overhead, and the digits a digit-serial da4ml layer steps through. Pure integer arithmetic: this module imports nothing."""
from __future__ import annotations

WINDOW_COUNTER_BITS = 6 * 16  # opq_window.v: n, tail, orow, ocol, prow, pcol (16 bits each)
COLLECT_COUNTER_BITS = 16  # opq_collect.v: cnt
# cycles per layer beyond its ROM walk: start, ROM read, activation read, MAC, requant, write
# (seq.py's latency and the cost model's rtl-seq latency)
LAYER_OVERHEAD_CYCLES = 6


def window_offsets(kh: int, kw: int, w: int, ph: int, pw: int) -> list[int]:
    """Shift-register offset (0 = newest pixel) that opq_window reads for window position
    t = r*kw + q, in t order (opq_window.v: OFF = D + PH*W + PW - kh*W - kw)."""
    d = (kh - 1 - ph) * w + (kw - 1 - pw)
    return [d + ph * w + pw - r * w - q for r in range(kh) for q in range(kw)]


def shift_chains(observed: list[int], first: int) -> list[int]:
    """Lengths of the flip-flop runs of one bit lane of a shift register whose positions
    `first`.. move towards higher positions, each run ending at an observed position."""
    out, prev = [], first - 1
    for t in sorted(observed):
        out.append(t - prev)
        prev = t
    return out


def digit_steps(bits: int, signed: bool, digit_bits: int) -> int:
    """Cycles a digit-serial layer takes per input vector: its `bits`-bit inputs fed `digit_bits`
    at a time, MSB first; a signed input's sign bit alone first (weight -2^(bits-1)), then the
    rest in digits (sign-extended to whole digits). 1: the whole input at once."""
    if digit_bits <= 0 or digit_bits >= bits:
        return 1
    return 1 + -(-(bits - 1) // digit_bits) if signed else -(-bits // digit_bits)
