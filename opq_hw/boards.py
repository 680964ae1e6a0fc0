"""Boards: what the hardware offers. One YAML file per board in `board_configs/<name>.yaml`
(the only place board facts live); unknown keys are rejected, every field is type-checked.

To add a board: copy the closest `board_configs/*.yaml` to `<new-name>.yaml`, change the part,
clock, capacity (cite the data sheet table in `provenance.capacity`) and the flows that apply,
then run `pytest tests/test_boards.py` (it loads and checks every file).
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import resources
from .errors import OpqError

RESOURCES = ("LUT", "FF", "BRAM18", "URAM", "DSP")
FAMILIES = ("xc7", "zynq-us+", "virtex-us+", "ecp5", "ice40")
FLOWS = ("hls4ml", "finn", "rtl")
# cost-model coefficients a board may (and the shipped boards do) set; see opq_hw.cost
COEFFICIENTS = {
    "const_mult_lut_per_bit2": "LUT per W*A bit product of a constant-weight fabric multiply (hls4ml-latency)",
    "mult_lut_per_bit2": "LUT per W*A bit product of a generic fabric multiply (hls4ml-resource)",
    "lut_per_adder_bit": "LUT per adder bit (carry chain)",
    "ff_per_reg_bit": "FF per pipeline register bit",
    "dsp_min_operand_bits": "a multiply maps to DSPs only when both operands have at least this many bits",
    "rom_bram_min_bits": "weight arrays smaller than this many bits go to LUTRAM/registers, not BRAM",
    "lutram_bits_per_lut": "bits of distributed RAM per LUT (64 for LUT6, 16 for LUT4)",
    "pipeline_extra_cycles": "fixed pipeline cycles per layer beyond the adder tree (multiply + output register)",
}


# Stated ranges of the numeric fields (a board outside them is a typo, not a board).
MAX_COUNT = 100_000_000  # LUT/FF/BRAM18/URAM/DSP: the largest FPGAs have ~10^7 LUTs
MAX_CLOCK_MHZ = 5000.0
MAX_COEFFICIENT = 1e6
POSITIVE_COEFFICIENTS = ("lutram_bits_per_lut", "dsp_min_operand_bits")
YAML_MAX_BYTES = 1 << 20  # a board file is a few KiB


def config_dir() -> Path:
    """The shipped `board_configs/` (see `opq_hw.resources`; override with OPQ_HW_BOARDS for
    out-of-tree boards)."""
    env = os.environ.get("OPQ_HW_BOARDS")
    return Path(env) if env else resources.board_configs()


@dataclass(frozen=True)
class Board:
    """One FPGA board. `capacity[r]` counts LUT, FF, BRAM18 (block RAMs of `bram_block_bits`: 18 Kib
    on Xilinx and ECP5, 4 Kib EBR on iCE40), URAM (288 Kib) and DSP blocks; a design fits when
    `usage[r] + shell[r] <= utilisation_limits[r] * capacity[r]` for every resource."""

    name: str
    display_name: str
    vendor: str
    family: str
    part: str
    clock_mhz: float
    capacity: dict[str, int]
    utilisation_limits: dict[str, float]
    dsp_mult_width: tuple[int, int]
    lut_inputs: int
    bram_block_bits: int
    flows: tuple[str, ...]
    shell: dict[str, int]
    coefficients: dict[str, float]
    provenance: dict[str, str]
    finn_board: str | None = None  # FINN's own board name (its `board` build option), where FINN supports the board
    finn_shell_flow: str | None = None  # FINN's shell flow for it: vivado_zynq | vitis_alveo
    notes: tuple[str, ...] = field(default_factory=tuple)

    def limit(self, resource: str) -> float:
        """Usable amount of `resource` for the design: limit * capacity - shell."""
        return self.utilisation_limits[resource] * self.capacity[resource] - self.shell[resource]

    def coeff(self, key: str) -> float:
        if key not in self.coefficients:
            raise OpqError(f"board {self.name!r} has no cost coefficient {key!r}; add it under `coefficients:` "
                           f"in {self.name}.yaml ({COEFFICIENTS.get(key, 'see opq_hw.boards.COEFFICIENTS')})")
        return float(self.coefficients[key])

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["dsp_mult_width"] = list(self.dsp_mult_width)
        d["flows"] = list(self.flows)
        d["notes"] = list(self.notes)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "board") -> "Board":
        return _validate(d, source)


def _err(source: str, msg: str) -> OpqError:
    return OpqError(f"{source}: {msg}")


def _validate(d: Any, source: str) -> Board:
    if not isinstance(d, dict):
        raise _err(source, "must be a mapping of board fields")
    fields = {f.name: f for f in dataclasses.fields(Board)}
    unknown = set(d) - set(fields)
    if unknown:
        raise _err(source, f"unknown keys {sorted(unknown)}; allowed keys: {sorted(fields)}")
    required = [n for n, f in fields.items() if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [n for n in required if n not in d]
    if missing:
        raise _err(source, f"missing keys {missing}")

    def is_num(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    def is_count(v):  # a resource count: a non-negative integer no FPGA exceeds
        return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_COUNT

    for key in ("name", "display_name", "vendor", "family", "part"):
        if not isinstance(d[key], str) or not d[key]:
            raise _err(source, f"`{key}` must be a non-empty string, got {d[key]!r}")
    if d["family"] not in FAMILIES:
        raise _err(source, f"family {d['family']!r} unknown; choose one of {FAMILIES}")
    if not is_num(d["clock_mhz"]) or not 0 < d["clock_mhz"] <= MAX_CLOCK_MHZ:
        raise _err(source, f"clock_mhz must be a finite number in (0, {MAX_CLOCK_MHZ}], got {d['clock_mhz']!r}")
    for key, num_ok in (("capacity", is_count), ("utilisation_limits", lambda v: is_num(v) and 0 < v <= 1),
                        ("shell", is_count)):
        m = d[key]
        if not isinstance(m, dict) or set(m) != set(RESOURCES):
            raise _err(source, f"`{key}` must map exactly {list(RESOURCES)}, got {sorted(m) if isinstance(m, dict) else m!r}")
        bad = {k: v for k, v in m.items() if not num_ok(v)}
        if bad:
            what = "in (0, 1]" if key == "utilisation_limits" else f"non-negative integers (at most {MAX_COUNT:,})"
            raise _err(source, f"`{key}` values must be {what}; bad: {bad}")
    if any(d["shell"][r] > d["capacity"][r] for r in RESOURCES):
        raise _err(source, "shell overhead exceeds the capacity")
    empty = [r for r in ("LUT", "FF") if d["utilisation_limits"][r] * d["capacity"][r] - d["shell"][r] < 1]
    if empty:
        raise _err(source, f"no usable {' or '.join(empty)} (capacity x utilisation limit - shell < 1); every FPGA has "
                           "logic: check `capacity`, `utilisation_limits` and `shell`")
    dm = d["dsp_mult_width"]
    if not (isinstance(dm, (list, tuple)) and len(dm) == 2 and all(is_count(v) and 0 < v <= 64 for v in dm)):
        raise _err(source, f"dsp_mult_width must be [a_bits, b_bits], got {dm!r}")
    if isinstance(d["lut_inputs"], bool) or d["lut_inputs"] not in (4, 6):
        raise _err(source, f"lut_inputs must be 4 or 6, got {d['lut_inputs']!r}")
    if not is_count(d["bram_block_bits"]) or not 0 < d["bram_block_bits"] <= 1 << 20:
        raise _err(source, f"bram_block_bits must be an integer in 1..{1 << 20}, got {d['bram_block_bits']!r}")
    flows = d["flows"]
    if not isinstance(flows, (list, tuple)) or not flows or any(f not in FLOWS for f in flows):
        raise _err(source, f"flows must be a non-empty list drawn from {FLOWS}, got {flows!r}")
    co = d["coefficients"]
    if not isinstance(co, dict):
        raise _err(source, "`coefficients` must be a mapping")
    unknown_c = set(co) - set(COEFFICIENTS)
    if unknown_c:
        raise _err(source, f"unknown coefficients {sorted(unknown_c)}; known: {sorted(COEFFICIENTS)}")
    missing_c = set(COEFFICIENTS) - set(co)
    if missing_c:
        raise _err(source, f"missing coefficients {sorted(missing_c)}")
    bad_c = {k: v for k, v in co.items() if not is_num(v) or v < 0 or v > MAX_COEFFICIENT
             or (k in POSITIVE_COEFFICIENTS and v == 0)}
    if bad_c:
        raise _err(source, f"coefficients must be finite numbers in 0..{MAX_COEFFICIENT:g} (> 0 for "
                           f"{', '.join(POSITIVE_COEFFICIENTS)}); bad: {bad_c}")
    prov = d["provenance"]
    if not isinstance(prov, dict) or not all(isinstance(v, str) and v for v in prov.values()):
        raise _err(source, "`provenance` must map field names to non-empty source strings")
    for need in ("capacity", "coefficients"):
        if need not in prov:
            raise _err(source, f"`provenance.{need}` is missing: say where the figures come from")
    for key in ("finn_board", "finn_shell_flow"):
        if d.get(key) is not None and (not isinstance(d[key], str) or not d[key]):
            raise _err(source, f"`{key}` must be a non-empty string when given, got {d[key]!r}")
    if d.get("finn_shell_flow") not in (None, "vivado_zynq", "vitis_alveo"):
        raise _err(source, f"finn_shell_flow must be vivado_zynq or vitis_alveo, got {d['finn_shell_flow']!r}")
    notes = d.get("notes", ())
    if not isinstance(notes, (list, tuple)) or not all(isinstance(n, str) for n in notes):
        raise _err(source, "`notes` must be a list of strings")
    return Board(name=d["name"], display_name=d["display_name"], vendor=d["vendor"], family=d["family"], part=d["part"],
                 clock_mhz=float(d["clock_mhz"]), capacity={r: int(d["capacity"][r]) for r in RESOURCES},
                 utilisation_limits={r: float(d["utilisation_limits"][r]) for r in RESOURCES},
                 dsp_mult_width=(int(dm[0]), int(dm[1])), lut_inputs=int(d["lut_inputs"]),
                 bram_block_bits=int(d["bram_block_bits"]), flows=tuple(flows),
                 shell={r: int(d["shell"][r]) for r in RESOURCES},
                 coefficients={k: float(v) for k, v in co.items()}, provenance=dict(prov),
                 finn_board=d.get("finn_board"), finn_shell_flow=d.get("finn_shell_flow"), notes=tuple(notes))


def list_boards() -> list[str]:
    """Names of the boards shipped in `board_configs/` (the YAML file stems), sorted."""
    d = config_dir()
    return sorted(p.stem for p in d.glob("*.yaml") if not p.stem.endswith("_calibration"))


def load_board(name: "str | Board") -> Board:
    """Load `board_configs/<name>.yaml` (or a path to a YAML file); a Board passes through."""
    import yaml

    if isinstance(name, Board):
        return name
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        path = p
    else:
        path = config_dir() / f"{name}.yaml"
        if not path.is_file() or name.endswith("_calibration"):
            raise OpqError(f"unknown board {name!r}; available: {', '.join(list_boards())} "
                           f"(or add board_configs/{name}.yaml, see opq_hw/boards.py)")
    data = read_yaml(path)
    board = _validate(data, path.name)
    if path.parent == config_dir() and board.name != path.stem:
        raise OpqError(f"{path.name}: `name` is {board.name!r} but must equal the file stem {path.stem!r}")
    return board


def _no_alias_loader():
    import yaml

    class NoAliasLoader(yaml.SafeLoader):
        """SafeLoader that refuses aliases: a board file never needs them, and expanding them is how
        a small file becomes a "billion laughs" memory bomb."""

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                ev = self.peek_event()
                raise OpqError(f"YAML aliases (*{ev.anchor}) are not allowed in board files (line "
                               f"{ev.start_mark.line + 1}); write the values out")
            return super().compose_node(parent, index)

    return NoAliasLoader


def read_yaml(path: str | os.PathLike) -> Any:
    """A board YAML file: at most 1 MiB, UTF-8 text, not empty, no aliases; errors name the file."""
    import yaml

    path = Path(path)
    try:
        size = path.stat().st_size
        if size > YAML_MAX_BYTES:
            raise OpqError(f"{path.name}: {size:,} bytes is too large for a board file (limit {YAML_MAX_BYTES:,})")
        raw = path.read_bytes()
    except OSError as e:
        raise OpqError(f"{path}: cannot be read ({e.strerror or e})") from None
    if b"\0" in raw:
        raise OpqError(f"{path.name}: binary data (NUL bytes), not a YAML board file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise OpqError(f"{path.name}: not UTF-8 text (byte {e.start}); save the board file as UTF-8") from None
    if not text.strip():
        raise OpqError(f"{path.name}: the file is empty; copy the closest board_configs/*.yaml and edit it")
    try:
        return yaml.load(text, Loader=_no_alias_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise OpqError(f"{path.name}: not valid YAML ({' '.join(str(e).split())[:300]})") from None
    except RecursionError:
        raise OpqError(f"{path.name}: nested too deeply to be a board file") from None

