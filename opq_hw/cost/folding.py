"""Folding: how far each layer is time-multiplexed (hls4ml reuse factor, FINN PE/SIMD), chosen so
that the design is as fast as possible and still fits the board."""
from __future__ import annotations

import bisect
from typing import Any

from ..boards import RESOURCES, Board, load_board
from ..errors import OpqError
from ..spec import DEFAULTS, Allocation, LayerSpec
from .accuracy import accuracy
from .fit import band_phrase, fits
from .records import LayerParams, network_params
from .registry import architecture, layer_cost


def layer_options(p: LayerParams, board: Board, arch: str) -> list[tuple[int, dict[str, Any], dict[str, float]]]:
    """(cycles, folding, resources) of every legal folding of one layer."""
    opts = []
    for fold in architecture(arch).foldings(p):
        res = layer_cost(p, board, arch, fold)
        opts.append((int(res["cycles"]), fold, {k: float(res[k]) for k in RESOURCES}))
    return opts


def choose_folding(specs: list[LayerSpec], allocation: Allocation, board: "Board | str", arch: str,
                   target_fps: float | None = None, act_bits: int | None = DEFAULTS.act_bits,
                   strict: bool = True) -> dict[str, dict[str, Any]]:
    """The fastest folding that fits: per layer {"reuse_factor": R} (hls4ml, R from hls4ml's valid
    reuse factors) or {"pe": P, "simd": Q} (FINN: P | MH, Q | MW); {} per layer for rtl-da.

    The network's initiation interval is its slowest layer's. For each candidate interval T
    (ascending) every layer takes its cheapest folding with cycles <= T (cheapest = smallest sum of
    resource / usable board amount); the first T whose total fits is returned. With `target_fps`
    the slowest T that still meets clock / target_fps is used instead (fewest resources at that
    rate). "Fits" is with the estimate's error band (`opq_hw.cost.accuracy`): at its pessimistic end.
    If nothing fits: OpqError naming what is missing, or (strict=False) the most folded one.
    """
    board = load_board(board)
    architecture(arch, board)
    params = network_params(specs, allocation, act_bits)
    margin = accuracy(arch, board.family).margins()
    usable = {r: max(board.limit(r), 1e-9) for r in RESOURCES}
    per_layer = []
    for p in params:
        opts = layer_options(p, board, arch)
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

    # per layer, options sorted by cycles: those within an interval T are a prefix, and the cheapest of a
    # prefix (the first of equal cost, as min() takes it) is a running minimum, computed once
    cycles = [[o[0] for o in opts] for opts in per_layer]
    prefix_best = []
    for opts in per_layer:
        best, best_cost, bests = None, None, []
        for o in opts:
            cost = sum(o[2][r] / usable[r] for r in RESOURCES)
            if best is None or cost < best_cost:
                best, best_cost = o, cost
            bests.append(best)
        prefix_best.append(bests)

    def pick(T):
        fold, tot = {}, {r: 0.0 for r in RESOURCES}
        for p, cyc, bests in zip(params, cycles, prefix_best):
            n_ok = bisect.bisect_right(cyc, T)  # options with cycles <= T
            if not n_ok:
                return None, None
            best = bests[n_ok - 1]
            fold[p.name] = best[1]
            for r in RESOURCES:
                tot[r] += best[2][r]
        return fold, tot

    for T in cands:
        fold, tot = pick(T)
        if fold is not None and fits(board, tot, margin):
            return fold
    # nothing fits: the slowest candidate is the most folded (the cheapest that meets target_fps)
    fold, tot = pick(cands[-1] if target_fps is None else cands[0])
    if not strict:
        return fold
    fit = fits(board, tot, margin)
    what = ", ".join(f"{r}: needs {fit.high[r]:.0f}{band_phrase(fit.margin[r])}, usable {fit.allowed[r]:.0f} (missing {m:.0f})"
                     for r, m in fit.over_high.items())
    raise OpqError(f"no {arch} folding fits {board.name}{' at the target rate' if target_fps else ''}, even the most "
                   f"folded one: {what}. Compress harder (--board {board.name} --fit), pick a larger board, "
                   f"or another --arch")
