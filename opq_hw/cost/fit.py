"""Does a design fit a board? The one check every estimate, folding search, hardware-aware
allocation and synthesized RTL design goes through.

A design fits when, for every resource r it uses, `usage[r] + shell[r] <= utilisation_limits[r] *
capacity[r]` (the `Board` contract, board_configs/<board>.yaml), with 1e-9 of slack for float sums.

An estimate carries an error band per resource (`margin[r]`: a relative half-width, the held-out
max error of `opq_hw.cost.accuracy`), and the verdict is one of three:
- `fits`: it fits at the pessimistic end of the band, usage x (1 + margin);
- `fits only at the optimistic end`: it does not fit at the pessimistic end but does at
  usage x (1 - margin) (whether it fits at the estimate itself is in `over`);
- `does not fit`: not even at the optimistic end.
A resource without a band (margin None: uncalibrated) is checked at the estimate and named in
`uncalibrated`; without `margin` at all (a measured design) the usage is taken as exact.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

from ..boards import RESOURCES, Board
from ..errors import OpqError

SLACK = 1e-9  # float sums of resource counts may land a rounding error above an exact limit
FITS, OPTIMISTIC, NO_FIT = "fits", "fits only at the optimistic end", "does not fit"
VERDICTS = (FITS, OPTIMISTIC, NO_FIT)


@dataclass(frozen=True)
class Fit:
    """The verdict of `fits` per resource, in the order the usage named them.

    used: usage + the board's shell; allowed: utilisation limit x capacity; over: used - allowed
    for the resources over their limit at the estimate (empty: it fits there); pressure: used /
    allowed, utilisation: used / capacity (both 0 for an unused resource the board lacks, inf for a
    used one). margin: the relative band per resource (None: uncalibrated); low / high: usage x
    (1 -/+ margin) + shell; over_high / over_low: what is missing at the pessimistic / optimistic
    end; verdict: one of VERDICTS; ok: the verdict is `fits`."""

    used: dict[str, float]
    allowed: dict[str, float]
    over: dict[str, float]
    pressure: dict[str, float]
    utilisation: dict[str, float]
    margin: dict[str, float | None]
    low: dict[str, float]
    high: dict[str, float]
    over_low: dict[str, float]
    over_high: dict[str, float]
    uncalibrated: tuple[str, ...] = ()

    @property
    def verdict(self) -> str:
        return FITS if not self.over_high else (OPTIMISTIC if not self.over_low else NO_FIT)

    @property
    def label(self) -> str:
        """The verdict, qualified when a used resource has no error band."""
        return verdict_label(self.verdict, self.uncalibrated)

    @property
    def ok(self) -> bool:
        return not self.over_high

    def __bool__(self) -> bool:
        return self.ok

    @property
    def binding(self) -> str:
        """The resource closest to (or furthest over) its limit; the first one on a tie."""
        return max(self.pressure, key=lambda r: self.pressure[r])


def verdict_label(verdict: str, uncalibrated: "tuple[str, ...] | list[str]" = ()) -> str:
    """`fits`, or `fits (uncalibrated LUT, FF: no error band)` when used resources have no band."""
    return f"{verdict} (uncalibrated {', '.join(uncalibrated)}: no error band)" if uncalibrated else verdict


def _ratio(used: float, of: float) -> float:
    return used / of if of else (0.0 if used == 0 else math.inf)


def fits(board: Board, usage: Mapping[str, float], margin: Mapping[str, float | None] | None = None) -> Fit:
    """Check `usage` (resource -> amount the design uses, without the shell) against `board`;
    resources not named are not checked. `margin`: resource -> relative error band of the usage
    (None or absent: uncalibrated); no `margin`: the usage is exact (a measurement)."""
    unknown = [r for r in [*usage, *(margin or {})] if r not in RESOURCES]
    if unknown:
        raise OpqError(f"unknown resources {unknown}; the board resources are {list(RESOURCES)}")
    bad = {r: m for r, m in (margin or {}).items() if m is not None and not (0 <= m < math.inf)}
    if bad:
        raise OpqError(f"error bands must be non-negative fractions, got {bad}")
    used, allowed, over, pressure, util = {}, {}, {}, {}, {}
    marg, low, high, over_low, over_high, uncal = {}, {}, {}, {}, {}, []
    for r, u in usage.items():
        used[r] = u + board.shell[r]
        allowed[r] = board.utilisation_limits[r] * board.capacity[r]
        util[r] = _ratio(used[r], board.capacity[r])
        pressure[r] = _ratio(used[r], allowed[r])
        if used[r] > allowed[r] + SLACK:
            over[r] = float(used[r] - allowed[r])
        m = None if margin is None else margin.get(r)
        marg[r] = m if margin is not None else 0.0
        if margin is not None and m is None and u > 0:
            uncal.append(r)
        low[r] = u * (1 - (m or 0.0)) + board.shell[r]
        high[r] = u * (1 + (m or 0.0)) + board.shell[r]
        if low[r] > allowed[r] + SLACK:
            over_low[r] = float(low[r] - allowed[r])
        if high[r] > allowed[r] + SLACK:
            over_high[r] = float(high[r] - allowed[r])
    return Fit(used=used, allowed=allowed, over=over, pressure=pressure, utilisation=util, margin=marg, low=low,
               high=high, over_low=over_low, over_high=over_high, uncalibrated=tuple(uncal))


def band_phrase(margin: float | None) -> str:
    """` at the pessimistic end of its ± 9 % error band` (empty without a band), for messages."""
    return f" at the pessimistic end of its ± {100 * margin:.1f} % error band" if margin else ""


def margin_budget(board: Board, resource: str, margin: float | None) -> float:
    """The most of `resource` an estimate may use and still fit at the pessimistic end of its band:
    usable / (1 + margin) (usable = utilisation limit x capacity - shell; no band: usable)."""
    return board.limit(resource) / (1 + (margin or 0.0))
