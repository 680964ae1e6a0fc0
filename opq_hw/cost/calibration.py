"""Fitted coefficients of a calibrated architecture, per FPGA family: read from
`board_configs/<arch>_calibration.yaml` (`{family: {coefficient: value, ..., provenance: ...}}`,
written by scripts/rtl_calibration.py), or the architecture's documented defaults when the file
or the family is absent."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from ..boards import config_dir, read_yaml
from ..errors import OpqError


@dataclass(frozen=True)
class Calibration:
    """An architecture's calibrated coefficients: their names and default values (`defaults`, in
    file order) and where the defaults come from (`why`)."""

    arch: str
    defaults: Mapping[str, float]
    why: str

    def load(self, family: str) -> dict[str, Any]:
        """The coefficients for `family` with their provenance (key "provenance")."""
        defaults = {**self.defaults, "provenance": self.why}
        path = config_dir() / f"{self.arch.replace('-', '_')}_calibration.yaml"
        if not path.is_file():
            return defaults
        data = read_yaml(path)  # size-limited, UTF-8, no aliases
        fam = data.get(family) if isinstance(data, dict) else None
        if not isinstance(fam, dict):
            return defaults
        out = dict(defaults)
        for k in self.defaults:
            if k in fam:
                v = fam[k]
                if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                    raise OpqError(f"{path.name}: {family}.{k} must be a finite number, got {v!r}")
                out[k] = float(v)
        out["provenance"] = str(fam.get("provenance", f"{path.name} ({family}), no provenance given"))
        return out
