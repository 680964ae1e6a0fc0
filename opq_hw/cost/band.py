"""One figure's error band (`Band`: the held-out max relative error and mean, or uncalibrated) and
how a number is shown with it (`fmt`). Kept apart from the loader (`opq_hw.cost.accuracy`) so that
the cost records can read bands back without importing the architecture registry."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import OpqError

STATISTIC = "held-out max relative error"


def fraction(v: Any) -> bool:
    """A finite, non-negative number (not a bool)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


@dataclass(frozen=True)
class Band:
    """The error band of one figure: `rel` = the held-out max relative error (the ± shown and the
    margin `fits` applies), `mape` the held-out mean; both None when uncalibrated (`why` says why)."""

    rel: float | None = None
    mape: float | None = None
    n: int = 0
    scope: str = ""
    why: str = ""

    @property
    def calibrated(self) -> bool:
        return self.rel is not None

    def label(self) -> str:
        """`± 9 %`, `exact` or `uncalibrated` (a percentage rounded up, never understated)."""
        if self.rel is None:
            return "uncalibrated"
        if self.rel == 0:
            return "exact"
        pct = 100 * self.rel
        return f"± {math.ceil(pct * 10 - 1e-9) / 10:g} %" if pct < 1 else f"± {math.ceil(pct - 1e-9)} %"

    def to_dict(self) -> dict[str, Any]:
        return {"rel": self.rel, "mape": self.mape, "n": self.n, "scope": self.scope, "statistic": STATISTIC,
                "why": self.why}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Band":
        if not isinstance(d, Mapping):
            raise OpqError(f"an error band must be a JSON object, got {d!r:.80}")
        rel, mape = d.get("rel"), d.get("mape")
        for k, v in (("rel", rel), ("mape", mape)):
            if v is not None and not fraction(v):
                raise OpqError(f"error band: {k} must be a non-negative number or null, got {v!r:.80}")
        return cls(rel=None if rel is None else float(rel), mape=None if mape is None else float(mape),
                   n=int(d.get("n", 0) or 0), scope=str(d.get("scope", "")), why=str(d.get("why", "")))


def fmt(value: float, band: Band | None, unit: str = "") -> str:
    """`1,404 ± 9 %`, `4 (exact)`, `32,036 (uncalibrated)`; no band given: the number alone."""
    num = f"{value:,.0f}{unit}" if abs(value) >= 1 or value == 0 else f"{value:.3g}{unit}"
    if band is None:
        return num
    lab = band.label()
    return f"{num} {lab}" if band.calibrated and band.rel else f"{num} ({lab})"


