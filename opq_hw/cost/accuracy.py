"""How far an estimate can be trusted: per architecture x FPGA family, the measured held-out error of
each figure the cost model reports (LUT, FF, BRAM18, URAM, DSP, cycles), or "uncalibrated".

Where the numbers come from: `board_configs/<arch>_calibration.yaml` (rtl_da_calibration.yaml,
rtl_seq_calibration.yaml), per family, the key

    heldout_error: {scope: whole-design | per-layer, n: N, source: "...",
                    lut: {mape: f, max: f}, ff: {...}, bram: {...}, uram: {...}, dsp: {...}, cycles: {...}}

(fractions; written by scripts/rtl_calibration.py from designs the fit never saw). A figure the
table does not name, a family without `heldout_error`, and every architecture without a calibration
file are uncalibrated: hls4ml-latency/-resource (no Vivado/Vitis here to measure hls4ml designs;
benchmarks/hls4ml_published.py compares them with published results) and finn-mvau (it equals
FINN's own estimates, but how far those are from synthesis is not measured here).

**The band is the held-out maximum relative error**, |estimate - measured| / measured over the held-out
designs, not the mean (MAPE): the band decides whether a design "fits", so it must bound the error of
a design, not describe the average one. If the held-out designs and a new one are exchangeable, the
new design's error exceeds the largest of n held-out errors with probability at most 1/(n+1) (8
held-out designs: an 89 % bound); the MAPE would be exceeded by about half of the designs. The MAPE
is kept beside it (reports, cost.json). The band is symmetric: `fits` checks usage x (1 + band)
(the pessimistic end) and usage x (1 - band) (the optimistic end) against the board.

On a dev board an RTL estimate holds the board top (UART link, frame buffers) beside opq_top. Its row
has its own band (`board_top_accuracy`: `heldout_error` of rtl_board_top_calibration.yaml, scope
leave-one-out), and the totals' band adds the two parts' absolute errors (`combine`: both at the worst
end of their bands, in the same direction; conservative).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..boards import RESOURCES, config_dir, read_yaml
from ..errors import OpqError
from .band import STATISTIC, Band, fmt, fraction as _fraction

__all__ = ["Accuracy", "Band", "FIGURES", "SCOPES", "STATISTIC", "UNCALIBRATED_WHY", "accuracy", "board_top_accuracy",
           "combine", "fmt", "parse_heldout"]

FIGURES = (*RESOURCES, "cycles")  # what carries a band: the resources and the cycles per sample
_KEYS = {"lut": "LUT", "ff": "FF", "bram": "BRAM18", "uram": "URAM", "dsp": "DSP", "cycles": "cycles"}
SCOPES = ("whole-design", "per-layer", "leave-one-out")
_UNITS = {"whole-design": "whole designs", "per-layer": "layers", "leave-one-out": "measured board tops, leave-one-out"}
# why an architecture without a calibration file has no band, by flow
UNCALIBRATED_WHY = {
    "hls4ml": "uncalibrated: no Vivado/Vitis here to measure hls4ml designs (published results compared in "
              "benchmarks/hls4ml_published.py)",
    "finn": "uncalibrated: equals FINN's own estimates (BRAM18, DSP, cycles exactly; LUT within 2.3 %), but FINN's "
            "estimates against synthesis are not measured here",
}


@dataclass(frozen=True)
class Accuracy:
    """The bands of every figure for one architecture on one family; `source` says where they come
    from (the file and family) or why there are none."""

    arch: str
    family: str
    bands: dict[str, Band] = field(default_factory=dict)
    source: str = ""

    def band(self, figure: str) -> Band:
        if figure not in FIGURES:
            raise OpqError(f"no error band for {figure!r}; the figures are {list(FIGURES)}")
        return self.bands.get(figure) or Band(why=self.source)

    @property
    def calibrated(self) -> bool:
        return any(b.calibrated for b in self.bands.values())

    def margins(self) -> dict[str, float | None]:
        """resource -> relative margin for `fits` (None: uncalibrated)."""
        return {r: self.band(r).rel for r in RESOURCES}

    def to_dict(self) -> dict[str, Any]:
        return {f: self.band(f).to_dict() for f in FIGURES}


def parse_heldout(d: Any, where: str) -> tuple[dict[str, Band], str]:
    """The bands of one `heldout_error` mapping (`where`: file and family, for the errors)."""
    fix = "; write it again with scripts/rtl_calibration.py"
    if not isinstance(d, dict):
        raise OpqError(f"{where}: heldout_error must be a mapping, got {d!r:.80}{fix}")
    unknown = set(d) - set(_KEYS) - {"scope", "n", "source"}
    if unknown:
        raise OpqError(f"{where}: heldout_error has unknown keys {sorted(unknown)}; expected scope, n, source and "
                       f"figures {sorted(_KEYS)}{fix}")
    scope, n = d.get("scope"), d.get("n")
    if scope not in SCOPES:
        raise OpqError(f"{where}: heldout_error.scope must be one of {list(SCOPES)}, got {scope!r:.80}{fix}")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise OpqError(f"{where}: heldout_error.n must be the number of held-out designs (>= 1), got {n!r:.80}{fix}")
    source = str(d.get("source", where))
    bands = {}
    for key, fig in _KEYS.items():
        if key not in d:
            continue
        e = d[key]
        if not isinstance(e, dict) or set(e) != {"mape", "max"} or not all(_fraction(e[k]) for k in e):
            raise OpqError(f"{where}: heldout_error.{key} must be {{mape: f, max: f}} with non-negative fractions, "
                           f"got {e!r:.80}{fix}")
        if e["mape"] > e["max"] + 1e-12:
            raise OpqError(f"{where}: heldout_error.{key}: the mean error {e['mape']} exceeds the max {e['max']}{fix}")
        bands[fig] = Band(rel=float(e["max"]), mape=float(e["mape"]), n=n, scope=scope,
                          why=f"{STATISTIC} over {n} held-out {_UNITS[scope]} ({source})")
    return bands, source


def accuracy(arch: str, family: str) -> Accuracy:
    """The error bands of `arch` on `family` (see the module docstring); a figure without a
    measurement is uncalibrated, with the reason."""
    from .registry import architecture

    a = architecture(arch)
    if a.calibration is None:
        return Accuracy(arch, family, {}, UNCALIBRATED_WHY.get(a.flow, f"uncalibrated: no held-out measurement of {arch}"))
    name = f"{arch.replace('-', '_')}_calibration.yaml"
    path = config_dir() / name
    data = read_yaml(path) if path.is_file() else None
    fam = data.get(family) if isinstance(data, dict) else None
    if not isinstance(fam, dict) or "heldout_error" not in fam:
        return Accuracy(arch, family, {}, f"uncalibrated: {name} has no heldout_error for {family}")
    bands, source = parse_heldout(fam["heldout_error"], f"{name} ({family})")
    missing = [f for f in FIGURES if f not in bands]
    why = f"uncalibrated: {name} ({family}) has no held-out error for it"
    return Accuracy(arch, family, {**bands, **{f: Band(why=why) for f in missing}}, source)


BOARD_TOP_FILE = "rtl_board_top_calibration.yaml"


def board_top_accuracy(family: str) -> Accuracy:
    """The error bands of the board top's glue on a dev board (the `board top` row of an RTL estimate):
    `heldout_error` of board_configs/rtl_board_top_calibration.yaml, written by benchmarks/rtl_board_top.py
    (LUT/FF: leave-one-out over the measured board tops; BRAM18/DSP: the structural count against each);
    uncalibrated where the family has none. It adds no cycles per sample (the link is outside opq_top's
    interval), so its cycles band is exact."""
    path = config_dir() / BOARD_TOP_FILE
    data = read_yaml(path) if path.is_file() else None
    fam = data.get(family) if isinstance(data, dict) else None
    if not isinstance(fam, dict) or "heldout_error" not in fam:
        return Accuracy("board top", family, {}, f"uncalibrated: {BOARD_TOP_FILE} has no heldout_error for {family}")
    bands, source = parse_heldout(fam["heldout_error"], f"{BOARD_TOP_FILE} ({family})")
    why = f"uncalibrated: {BOARD_TOP_FILE} ({family}) has no held-out error for it"
    bands = {**bands, "cycles": Band(rel=0.0, mape=0.0, n=bands["LUT"].n if "LUT" in bands else 1, scope="leave-one-out",
                                     why="the board top adds no cycles per sample")}
    return Accuracy("board top", family, {**bands, **{f: Band(why=why) for f in FIGURES if f not in bands}}, source)


def combine(parts: "list[tuple[Band, float]]") -> Band:
    """The band of a sum of parts, each (band, usage): the absolute errors added, as if every part were
    at the worst of its band in the same direction (conservative: no cancellation is assumed), so
    rel = sum(rel_i x usage_i) / sum(usage_i), and the same for the mean. A used part without a band
    makes the sum uncalibrated; an unused one adds nothing. Nothing used: the widest of the bands. n and
    scope are the first part's (the design; the others' are stated with their own rows)."""
    used = [(b, u) for b, u in parts if u > 0]
    unc = [b for b, _ in used if not b.calibrated]
    if unc:
        return unc[0]
    if not used:
        cal = [b for b, _ in parts if b.calibrated]
        return max(cal, key=lambda b: b.rel) if cal else parts[0][0]
    if len(used) == 1:
        return used[0][0]
    total = sum(u for _, u in used)
    rel = sum(b.rel * u for b, u in used) / total
    mape = sum((b.mape if b.mape is not None else b.rel) * u for b, u in used) / total
    return Band(rel=rel, mape=mape, n=used[0][0].n, scope=used[0][0].scope,
                why=f"{STATISTIC}: the absolute errors of the parts added (" + "; ".join(b.why for b, _ in used) + ")")
