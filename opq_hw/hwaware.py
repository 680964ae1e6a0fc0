"""Hardware-aware OPQ: allocate per-layer sparsity and bit width so that the design fits a board.

The same Lagrangian as `opq_hw.allocate` (OPQ.md), with a hardware resource as the rate instead of
storage bits: for a resource r, the allocator gets the additive per-layer cost
`cost_r(spec, bits, n_nonzero)` of the chosen architecture (`opq_hw.cost`, with a fixed folding)
and the usable amount of r on the board (utilisation limit * capacity - shell) as the budget.

`fit_allocation` starts with the resource under the most pressure (the dense max-bit design's
usage / usable amount), allocates for it, estimates the whole design, and, if another resource
overflows, allocates for that one instead (or tightens the same one by 5% when integer rounding
spilled over). The report says which resource binds; if nothing fits it says what is missing.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from .boards import RESOURCES, Board, load_board
from .cost import architecture, default_folding, estimate, fits, layer_cost, layer_params
from .cost.accuracy import STATISTIC, accuracy
from .cost.fit import band_phrase, margin_budget
from .errors import OpqError
from .spec import DEFAULTS, LayerAlloc, LayerSpec

_MAX_ITER = 12


def resource_cost_fn(specs: list[LayerSpec], board: Board, arch: str, resource: str,
                     folding: "Mapping[str, Mapping[str, Any]] | str | None" = None,
                     act_bits: int | None = DEFAULTS.act_bits):
    """cost_fn(spec, bits, n_nonzero) -> usage of `resource` by that layer (vectorised over
    n_nonzero), for `opq_hw.allocation.allocate(cost_fn=..., budget=...)`."""
    index = {s.name: i for i, s in enumerate(specs)}
    folding = dict(folding or {})

    def cost_fn(spec: LayerSpec, bits: int, k):
        la = LayerAlloc(name=spec.name, bits=int(bits), n_weights=spec.n_weights, n_nonzero=0, sparsity=0.0, scales=())
        p = layer_params(spec, la, index[spec.name], act_bits, n_nonzero=np.asarray(k, dtype=np.float64),
                         last=index[spec.name] == len(specs) - 1)
        fold = dict(default_folding(p, arch))
        fold.update(folding.get(spec.name, {}))
        res = layer_cost(p, board, arch, fold)
        return np.broadcast_to(np.asarray(res[resource], dtype=np.float64), np.shape(k)).copy()

    return cost_fn


def margin_note(margin: Mapping[str, float | None], target: Mapping[str, float], usable: Mapping[str, float],
                dropped: Mapping[str, float] | None = None, used: Mapping[str, float] | None = None) -> str:
    """What margin the allocation kept, e.g. `margin (held-out max relative error): LUT ± 18.2 % (targeted
    3,900 of 4,752 usable), ...; uncalibrated (no margin): BRAM18, DSP`; `dropped`: resource -> the
    smallest allocation's usage, where the margin could not be kept; `used`: the design's usage (an
    uncalibrated resource it does not use is not named)."""
    dropped = dropped or {}
    with_band = [f"{r} ± {100 * m:.1f} % (targeted {target[r]:,.0f} of {usable[r]:,.0f} usable)"
                 for r, m in margin.items() if m and usable[r] > 0 and r not in dropped]
    with_band += [f"{r} ± {100 * margin[r]:.1f} % NOT kept (even the smallest allocation needs {u:,.0f}, "
                  f"{u * (1 + margin[r]):,.0f} at the pessimistic end, of {usable[r]:,.0f} usable: targeted all of it, "
                  "so the design fits only at the optimistic end)" for r, u in dropped.items()]
    none = [r for r, m in margin.items() if m is None and usable[r] > 0 and (used is None or used.get(r, 0) > 0)]
    parts = [f"margin ({STATISTIC}): " + ", ".join(with_band)] if with_band else ["no error margin"]
    if none:
        parts.append("uncalibrated (no margin): " + ", ".join(none))
    return "; ".join(parts)


def _kept_totals(rep, dropped) -> dict[str, float | None]:
    """The totals' bands of an estimate (with a board top: its band and opq_top's added,
    `opq_hw.cost.network`), 0 where the margin could not be kept (`dropped`)."""
    return {r: (0.0 if r in dropped else rep.band(r).rel) for r in RESOURCES}


def _beyond(rep, kept: Mapping[str, float | None]) -> dict[str, float]:
    """What the totals hold beyond the layers (an RTL top level, a board top, kept BatchNorms), in units of
    the layers' budget: the budget is usable / (1 + b) with b the design's band, and a board top with its
    own band bg must leave glue x (1 + bg) of the usable amount, so it counts glue x (1 + bg) / (1 + b)."""
    from .cost.network import BOARD_TOP

    out = {}
    for r in RESOURCES:
        n = max(0.0, rep.totals[r] - sum(getattr(lc, r) for lc in rep.layers))
        glue, b = float(rep.parts.get(BOARD_TOP, {}).get(r, 0)), kept.get(r)
        bg = rep.part_band(BOARD_TOP, r)
        if glue and b is not None and bg is not None and bg.rel is not None and b > 0:
            n += glue * (bg.rel - b) / (1 + b)
        out[r] = max(0.0, n)
    return out


def _board_top_note(rep, margin: Mapping[str, float | None]) -> str:
    """`; board top LUT ± 27 %, totals checked at LUT ± 21 %` when the design has a board top."""
    from .cost.network import BOARD_TOP

    if BOARD_TOP not in rep.part_bands:
        return ""
    rs = [r for r in RESOURCES if rep.parts[BOARD_TOP].get(r) and margin.get(r)]
    return ("; board top (its own band): " + ", ".join(f"{r} {rep.part_band(BOARD_TOP, r).label()}" for r in rs)
            + ", totals checked at " + ", ".join(f"{r} ± {100 * margin[r]:.1f} %" for r in rs)) if rs else ""


def _usage(cost_fn, specs, bits_of, k_of) -> float:
    return float(sum(cost_fn(s, bits_of(s), np.array([float(k_of(s))]))[0] for s in specs))


def _auto_folding(specs, board, arch, min_bits, act_bits):
    """The fastest folding at which the smallest allocation (min_bits, one survivor per output
    channel) fits, so that compression can reach it; the most folded one if none does."""
    from .cost import choose_folding
    from .spec import Allocation

    layers = tuple(LayerAlloc(name=s.name, bits=min_bits, n_weights=s.n_weights, n_nonzero=s.out_channels,
                              sparsity=1 - s.out_channels / s.n_weights, scales=()) for s in specs)
    floor = Allocation(layers=layers, method="floor", scale_mode="pow2", weighting="mean", target=None,
                       target_kind="cost", cr_w=0.0, cr_idx=0.0, total_bits_w=0, total_bits_idx=0)
    return choose_folding(specs, floor, board, arch, act_bits=act_bits, strict=False)


def fit_allocation(specs: list[LayerSpec], weights, board: "Board | str", arch: str = DEFAULTS.arch, *,
                   folding: "Mapping[str, Mapping[str, Any]] | str | None" = None,
                   act_bits: int | None = DEFAULTS.act_bits, method: str = DEFAULTS.method,
                   scale_mode: str = DEFAULTS.scale_mode, weighting: str | None = None,
                   min_bits: int = DEFAULTS.min_bits, max_bits: int = DEFAULTS.max_bits,
                   overrides: Mapping[str, Mapping] | None = None, **kw):
    """Allocate so that the design fits `board` under `arch` with `folding`: a per-layer dict, None
    (fully parallel; the default for hls4ml-latency and rtl-da) or "auto" (the default for finn-mvau
    and hls4ml-resource: the fastest folding at which the smallest allocation fits).

    Returns (Allocation, info) where info = {board, arch, binding, budget (usable amounts), margin
    (per resource the error band used, None: uncalibrated), target (usable / (1 + margin): what the
    allocation aims at), margin_totals (the band the totals are checked at: with a board top, its band
    and the design's added, `opq_hw.cost.network`), usage, utilisation, fits, verdict, iterations:
    [{resource, budget, usage...}], folding}. Raises OpqError naming the missing
    resources when even min_bits with one survivor per output channel does not fit.
    """
    from .allocation import allocate, resolve_overrides

    board = load_board(board)
    architecture(arch, board)
    if folding is None and arch in ("finn-mvau", "hls4ml-resource"):
        folding = "auto"  # fully parallel FINN / resource-strategy designs are rarely what anyone builds
    if folding == "auto":
        folding = _auto_folding(specs, board, arch, min_bits, act_bits)
    if method not in ("opq", "per-channel", "uniform", "global-magnitude"):
        raise OpqError(f"unknown method {method!r}")
    opts = resolve_overrides([s.name for s in specs], overrides)
    usable = {r: board.limit(r) for r in RESOURCES}
    acc = accuracy(arch, board.family)
    margin = acc.margins()
    target = {r: margin_budget(board, r, margin[r]) for r in RESOURCES}
    fns = {r: resource_cost_fn(specs, board, arch, r, folding, act_bits) for r in RESOURCES}
    active = [s for s in specs if not opts[s.name].skip]
    skipped = [s for s in specs if opts[s.name].skip]

    def bmax(s):
        o = opts[s.name]
        return o.max_bits if o.max_bits is not None else max_bits

    def bmin(s):
        o = opts[s.name]
        return o.min_bits if o.min_bits is not None else min_bits

    # what no allocation can avoid: skipped layers at 32 bits dense, the rest at their floor
    floor = {r: _usage(fns[r], skipped, lambda s: 32, lambda s: s.n_weights)
             + _usage(fns[r], active, bmin, lambda s: s.out_channels) for r in RESOURCES}
    short = fits(board, floor).over  # even the smallest allocation is over, at the estimate itself
    if short:
        what = ", ".join(f"{r}: at least {floor[r]:.0f} needed, {usable[r]:.0f} usable (missing {floor[r] - usable[r]:.0f})"
                         for r in short)
        raise OpqError(f"nothing fits {board.name} with {arch}: even at {min_bits} bits with one weight per output "
                       f"channel the design needs {what}. Use a larger board, fold more (reuse factor / PE, SIMD), "
                       f"or another --arch")
    # where even the smallest allocation is over at the pessimistic end of the band, the margin cannot
    # be kept: that resource is targeted at its usable amount (the result fits only at the optimistic end)
    dropped = {r: floor[r] for r in fits(board, floor, margin).over_high}
    kept = {r: (0.0 if r in dropped else m) for r, m in margin.items()}
    target.update({r: usable[r] for r in dropped})
    dense = {r: _usage(fns[r], skipped, lambda s: 32, lambda s: s.n_weights)
             + _usage(fns[r], active, bmax, lambda s: s.n_weights) for r in RESOURCES}
    if fits(board, dense, kept):
        pressure = {r: (dense[r] / target[r] if target[r] > 0 else 0.0) for r in RESOURCES}
    else:
        pressure = {r: (dense[r] / target[r] if target[r] > 0 else (np.inf if dense[r] > 0 else 0.0)) for r in RESOURCES}
    resource = max(RESOURCES, key=lambda r: pressure[r])
    scale = {r: 1.0 for r in RESOURCES}
    iterations: list[dict[str, Any]] = []
    alloc = rep = None
    from .cost.network import BOARD_TOP
    # what the totals hold beyond the layers (an RTL top level, a board top, kept BatchNorms): not in the
    # per-layer cost function, known after the first estimate and left out of the next budgets
    beyond = {r: 0.0 for r in RESOURCES}
    for _ in range(_MAX_ITER):
        fixed_r = _usage(fns[resource], skipped, lambda s: 32, lambda s: s.n_weights) + beyond[resource]
        budget = scale[resource] * target[resource] - fixed_r
        try:
            alloc = allocate(specs, weights, cost_fn=fns[resource], budget=budget, method=method,
                             scale_mode=scale_mode, weighting=weighting, min_bits=min_bits, max_bits=max_bits,
                             overrides=overrides, **kw)
        except OpqError as e:
            raise OpqError(f"cannot fit {board.name} with {arch} on {resource} ({usable[resource]:.0f} usable): {e}") from e
        rep = estimate(specs, alloc, board, arch, folding=folding, act_bits=act_bits)
        beyond = _beyond(rep, kept)
        # the smallest allocation with what lies beyond the layers: where that is over at the pessimistic end,
        # the margin cannot be kept either (as for `dropped` above, known only now)
        least = {r: floor[r] + beyond[r] for r in RESOURCES}
        short = fits(board, least).over  # over even at the estimate: no allocation fits
        if short:
            what = ", ".join(f"{r}: at least {least[r]:.0f} needed ({beyond[r]:.0f} of them beyond the layers: the "
                             f"architecture's top level{', the board top' if rep.parts.get(BOARD_TOP) else ''}), "
                             f"{usable[r]:.0f} usable" for r in short)
            raise OpqError(f"nothing fits {board.name} with {arch}: even at {min_bits} bits with one weight per output "
                           f"channel the design needs {what}. Use a larger board, fold more, or another --arch")
        late = {r: least[r] for r in fits(board, least, kept).over_high if r not in dropped}
        if late:
            dropped.update(late)
            kept.update(dict.fromkeys(late, 0.0))
            target.update({r: usable[r] for r in late})
        iterations.append({"resource": resource, "budget": budget, "usage": dict(rep.totals)})
        over = fits(board, rep.totals, _kept_totals(rep, dropped)).over_high  # at the pessimistic end of the totals' band
        iterations[-1]["fits"] = not over
        if not over:
            break
        worst = max(over, key=lambda r: over[r] / max(usable[r], 1e-9))
        if worst == resource and len(iterations) > 1:  # the first budget did not know what lies beyond the layers
            scale[resource] *= 0.95
        else:
            resource = worst
    final = fits(board, rep.totals, _kept_totals(rep, dropped)) if rep is not None else None
    if final is None or not final.ok:
        over = ", ".join(f"{r} over by {v:.0f}{band_phrase(final.margin[r])}" for r, v in (final.over_high if final else {}).items())
        raise OpqError(f"no allocation found that fits {board.name} with {arch} after {_MAX_ITER} tries ({over}); "
                       "lower --max-bits, fold more, or pick a larger board")
    binding = rep.binding
    info = {"board": board.name, "arch": arch, "binding": binding, "allocated_for": resource,
            "budget": {r: usable[r] for r in RESOURCES}, "margin": margin, "margin_statistic": STATISTIC,
            "margin_source": acc.source, "target": target, "usage": dict(rep.totals),
            "margin_totals": dict(final.margin),
            "utilisation": dict(rep.utilisation), "fits": rep.fits, "verdict": rep.fit_label,
            "margin_dropped": sorted(dropped), "iterations": iterations,
            "folding": rep.folding, "dense_max_bits_usage": dense, "min_usage": floor}
    notes = tuple(alloc.notes) + (f"hardware-aware: fitted to {board.name} with {arch}; binding resource {binding} "
                                  f"({rep.totals[binding]} of {usable[binding]:.0f} usable); {margin_note(margin, target, usable, dropped, rep.totals)}"
                                  f"{_board_top_note(rep, final.margin)}",)
    from dataclasses import replace

    return replace(alloc, notes=notes), info
