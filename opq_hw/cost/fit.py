"""Does a design fit a board? The one check every estimate, folding search, hardware-aware
allocation and synthesized RTL design goes through.

A design fits when, for every resource r it uses, `usage[r] + shell[r] <= utilisation_limits[r] *
capacity[r]` (the `Board` contract, board_configs/<board>.yaml), with 1e-9 of slack for float sums.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

from ..boards import RESOURCES, Board
from ..errors import OpqError

SLACK = 1e-9  # float sums of resource counts may land a rounding error above an exact limit


@dataclass(frozen=True)
class Fit:
    """The verdict of `fits` per resource, in the order the usage named them.

    used: usage + the board's shell; allowed: utilisation limit x capacity; over: used - allowed
    for the resources over their limit (empty: it fits); pressure: used / allowed, utilisation:
    used / capacity (both 0 for an unused resource the board lacks, inf for a used one)."""

    used: dict[str, float]
    allowed: dict[str, float]
    over: dict[str, float]
    pressure: dict[str, float]
    utilisation: dict[str, float]

    @property
    def ok(self) -> bool:
        return not self.over

    def __bool__(self) -> bool:
        return self.ok

    @property
    def binding(self) -> str:
        """The resource closest to (or furthest over) its limit; the first one on a tie."""
        return max(self.pressure, key=lambda r: self.pressure[r])


def _ratio(used: float, of: float) -> float:
    return used / of if of else (0.0 if used == 0 else math.inf)


def fits(board: Board, usage: Mapping[str, float]) -> Fit:
    """Check `usage` (resource -> amount the design uses, without the shell) against `board`;
    resources not named are not checked."""
    unknown = [r for r in usage if r not in RESOURCES]
    if unknown:
        raise OpqError(f"unknown resources {unknown}; the board resources are {list(RESOURCES)}")
    used, allowed, over, pressure, util = {}, {}, {}, {}, {}
    for r, u in usage.items():
        used[r] = u + board.shell[r]
        allowed[r] = board.utilisation_limits[r] * board.capacity[r]
        util[r] = _ratio(used[r], board.capacity[r])
        pressure[r] = _ratio(used[r], allowed[r])
        if used[r] > allowed[r] + SLACK:
            over[r] = float(used[r] - allowed[r])
    return Fit(used=used, allowed=allowed, over=over, pressure=pressure, utilisation=util)
