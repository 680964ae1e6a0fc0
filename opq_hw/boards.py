"""Boards: what the hardware offers. One YAML file per board in `board_configs/<name>.yaml`
(the only place board facts live); unknown keys are rejected, every field is type-checked.

To add a board: copy the closest `board_configs/*.yaml` to `<new-name>.yaml`, change the part,
clock, capacity (cite the data sheet table in `provenance.capacity`) and the flows that apply,
then run `pytest tests/test_boards.py` (it loads and checks every file).

A dev board (`icebreaker`, `ulx3s-85f`) is a part plus its pins: its YAML names the part-level
file it builds on (`based_on: ice40-up5k`), whose fields it inherits (it may override any of them,
e.g. the clock), and adds `pins:` (oscillator, UART, reset button, LEDs; each pin with its source).
`pin_file(board)` writes the nextpnr constraint file (`.pcf` for iCE40, `.lpf` for ECP5) from it.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
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

# A board's pins: the role of each top-level port (exactly one clock, uart_rx, uart_tx; at most one
# reset; any number of LEDs) and the keys a pin may have.
PIN_ROLES = {"clock": "in", "uart_rx": "in", "uart_tx": "out", "reset": "in", "led": "out"}
PIN_ONE = ("clock", "uart_rx", "uart_tx")
PIN_KEYS = {
    "role": "one of " + ", ".join(PIN_ROLES),
    "site": "the package pin: a ball such as G2 (ECP5) or a pin number such as 35 (iCE40)",
    "source": "where the pin comes from: the board maker's constraint file or schematic",
    "active": "low or high (buttons and LEDs; default high)",
    "mhz": "the oscillator frequency (clock only, required there)",
    "io_type": "the I/O standard, e.g. LVCMOS33 (required on ECP5, written to the .lpf)",
    "pull": "up, down or none (ECP5 PULLMODE; default: the tool's)",
}
PIN_SITE = {"ice40": re.compile(r"[0-9]{1,3}|[A-Z]{1,2}[0-9]{1,2}"), "ecp5": re.compile(r"[A-Z]{1,2}[0-9]{1,2}")}
IO_TYPES = ("LVCMOS33", "LVCMOS25", "LVCMOS18", "LVCMOS15", "LVCMOS12")
PORT_NAME = re.compile(r"[a-z_][a-z0-9_]{0,31}")
BOARD_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


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
    based_on: str | None = None  # the part-level board file a dev board builds on (e.g. ice40-up5k)
    pins: dict[str, dict[str, Any]] = field(default_factory=dict)  # port name -> {role, site, source, ...}
    openfpgaloader_board: str | None = None  # dev boards: openFPGALoader's `-b` name (`opq-hw flash`)

    @property
    def is_dev_board(self) -> bool:
        """A board with pins (a flash-ready target), not a bare part."""
        return bool(self.pins)

    def pins_with_role(self, role: str) -> list[tuple[str, dict[str, Any]]]:
        """(port name, pin) of every pin with `role`, in file order."""
        return [(n, p) for n, p in self.pins.items() if p["role"] == role]

    def pin(self, role: str) -> tuple[str, dict[str, Any]]:
        """(port name, pin) of the board's one `role` pin (clock, uart_rx, uart_tx; reset if present)."""
        found = self.pins_with_role(role)
        if not found:
            what = "it is a bare part; pick a dev board such as icebreaker or ulx3s-85f" if not self.pins else \
                f"add one under `pins:` in {self.name}.yaml"
            raise OpqError(f"board {self.name!r} has no {role} pin: {what}")
        return found[0]

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
        d["pins"] = {n: dict(p) for n, p in self.pins.items()}
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
    for key in ("finn_board", "finn_shell_flow", "openfpgaloader_board"):
        if d.get(key) is not None and (not isinstance(d[key], str) or not d[key]):
            raise _err(source, f"`{key}` must be a non-empty string when given, got {d[key]!r}")
    if d.get("finn_shell_flow") not in (None, "vivado_zynq", "vitis_alveo"):
        raise _err(source, f"finn_shell_flow must be vivado_zynq or vitis_alveo, got {d['finn_shell_flow']!r}")
    notes = d.get("notes", ())
    if not isinstance(notes, (list, tuple)) or not all(isinstance(n, str) for n in notes):
        raise _err(source, "`notes` must be a list of strings")
    based_on = d.get("based_on")
    if based_on is not None and (not isinstance(based_on, str) or not BOARD_NAME.fullmatch(based_on)):
        raise _err(source, f"`based_on` must name a part-level board file such as ice40-up5k, got {based_on!r}")
    pins = _validate_pins(d.get("pins") or {}, d["family"], source)
    return Board(name=d["name"], display_name=d["display_name"], vendor=d["vendor"], family=d["family"], part=d["part"],
                 clock_mhz=float(d["clock_mhz"]), capacity={r: int(d["capacity"][r]) for r in RESOURCES},
                 utilisation_limits={r: float(d["utilisation_limits"][r]) for r in RESOURCES},
                 dsp_mult_width=(int(dm[0]), int(dm[1])), lut_inputs=int(d["lut_inputs"]),
                 bram_block_bits=int(d["bram_block_bits"]), flows=tuple(flows),
                 shell={r: int(d["shell"][r]) for r in RESOURCES},
                 coefficients={k: float(v) for k, v in co.items()}, provenance=dict(prov),
                 finn_board=d.get("finn_board"), finn_shell_flow=d.get("finn_shell_flow"), notes=tuple(notes),
                 based_on=based_on, pins=pins, openfpgaloader_board=d.get("openfpgaloader_board"))


def _validate_pins(pins: Any, family: str, source: str) -> dict[str, dict[str, Any]]:
    """`pins:` of a dev board: port name -> {role, site, source, ...}; every key checked, every pin
    with its source, exactly one clock / uart_rx / uart_tx, no site used twice."""
    if not isinstance(pins, dict):
        raise _err(source, "`pins` must map port names to {role, site, source, ...}")
    if not pins:
        return {}
    if family not in PIN_SITE:
        raise _err(source, f"`pins` are supported for the {' and '.join(PIN_SITE)} families (pin files for "
                           f"nextpnr), not {family!r}")
    out: dict[str, dict[str, Any]] = {}
    sites: dict[str, str] = {}
    for name, p in pins.items():
        where = f"pins.{name}"
        if not isinstance(name, str) or not PORT_NAME.fullmatch(name):
            raise _err(source, f"pin name {name!r} must be a lower-case Verilog port name (letters, digits, _)")
        if not isinstance(p, dict):
            raise _err(source, f"`{where}` must be a mapping with keys {sorted(PIN_KEYS)}")
        unknown = set(p) - set(PIN_KEYS)
        if unknown:
            raise _err(source, f"`{where}`: unknown keys {sorted(unknown)}; allowed: "
                               + "; ".join(f"{k} ({v})" for k, v in PIN_KEYS.items()))
        missing = [k for k in ("role", "site", "source") if k not in p]
        if missing:
            raise _err(source, f"`{where}` is missing {missing} (every pin needs its role, its site and its source)")
        if p["role"] not in PIN_ROLES:
            raise _err(source, f"`{where}.role` is {p['role']!r}; choose one of {list(PIN_ROLES)}")
        site = p["site"]
        if isinstance(site, int) and not isinstance(site, bool):
            site = str(site)
        if not isinstance(site, str) or not PIN_SITE[family].fullmatch(site):
            raise _err(source, f"`{where}.site` {p['site']!r} is not a {family} package pin "
                               f"({'a ball such as G2' if family == 'ecp5' else 'a pin number such as 35'})")
        if site in sites:
            raise _err(source, f"`{where}` and `pins.{sites[site]}` both use site {site}")
        sites[site] = name
        if not isinstance(p["source"], str) or len(p["source"].strip()) < 8:
            raise _err(source, f"`{where}.source` must say where the pin comes from (the board maker's "
                               "constraint file or schematic)")
        pin: dict[str, Any] = {"role": p["role"], "site": site, "source": p["source"]}
        active = p.get("active", "high")
        if active not in ("high", "low"):
            raise _err(source, f"`{where}.active` must be high or low, got {active!r}")
        pin["active"] = active
        if p["role"] == "clock":
            mhz = p.get("mhz")
            if not (isinstance(mhz, (int, float)) and not isinstance(mhz, bool) and math.isfinite(mhz)
                    and 0 < mhz <= MAX_CLOCK_MHZ):
                raise _err(source, f"`{where}.mhz` (the oscillator frequency) must be a number in (0, {MAX_CLOCK_MHZ}], "
                                   f"got {mhz!r}")
            pin["mhz"] = float(mhz)
        elif "mhz" in p:
            raise _err(source, f"`{where}.mhz` is only for the clock pin")
        io_type = p.get("io_type")
        if family == "ecp5" and io_type is None:
            raise _err(source, f"`{where}.io_type` is required on ECP5 (the .lpf's IO_TYPE, e.g. LVCMOS33)")
        if io_type is not None:
            if io_type not in IO_TYPES:
                raise _err(source, f"`{where}.io_type` {io_type!r} unknown; choose one of {list(IO_TYPES)}")
            pin["io_type"] = io_type
        if "pull" in p:
            if p["pull"] not in ("up", "down", "none"):
                raise _err(source, f"`{where}.pull` must be up, down or none, got {p['pull']!r}")
            pin["pull"] = p["pull"]
        out[name] = pin
    for role in PIN_ONE:
        n = sum(p["role"] == role for p in out.values())
        if n != 1:
            raise _err(source, f"`pins` must have exactly one {role} pin, found {n}")
    if sum(p["role"] == "reset" for p in out.values()) > 1:
        raise _err(source, "`pins` may have at most one reset pin")
    return out


def pin_file(board: "str | Board") -> tuple[str, str]:
    """(file name, text) of the nextpnr pin constraints of a dev board: `<name>.pcf` (iCE40,
    `set_io` + nextpnr's `set_frequency`) or `<name>.lpf` (ECP5, LOCATE/IOBUF/FREQUENCY); one line
    per pin of the board YAML, each with the pin's role and source as a comment."""
    b = load_board(board)
    if not b.pins:
        raise OpqError(f"board {b.name!r} is a bare part with no pins; a pin file needs a dev board "
                       f"({', '.join(n for n in list_boards() if load_board(n).pins) or 'none shipped'})")
    head = f"generated by opq-hw from board_configs/{b.name}.yaml ({b.display_name}, {b.part})"
    lines: list[str] = []
    if b.family == "ice40":
        lines.append(f"# {head}")
        for name, p in b.pins.items():
            lines.append(f"set_io -nowarn {name} {p['site']}  # {p['role']}, active {p['active']}: {p['source']}")
        clk, cp = b.pin("clock")
        lines.append(f"set_frequency {clk} {cp['mhz']:g}")
        return f"{b.name}.pcf", "\n".join(lines) + "\n"
    lines.append(f"# {head}")
    for name, p in b.pins.items():
        lines.append(f'LOCATE COMP "{name}" SITE "{p["site"]}" ;  # {p["role"]}, active {p["active"]}: {p["source"]}')
        pull = f" PULLMODE={p['pull'].upper()}" if "pull" in p else ""
        lines.append(f'IOBUF PORT "{name}"{pull} IO_TYPE={p["io_type"]} ;')
    clk, cp = b.pin("clock")
    lines.append(f'FREQUENCY PORT "{clk}" {cp["mhz"]:g} MHZ ;')
    return f"{b.name}.lpf", "\n".join(lines) + "\n"


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
    if isinstance(data, dict) and data.get("based_on") is not None:
        data = _merge_base(data, path)
    board = _validate(data, path.name)
    if path.parent == config_dir() and board.name != path.stem:
        raise OpqError(f"{path.name}: `name` is {board.name!r} but must equal the file stem {path.stem!r}")
    return board


def _merge_base(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """A dev board's fields over those of the part-level file it names in `based_on` (shipped in
    board_configs/, itself not based on another): provenance merged key by key, notes appended."""
    base = data["based_on"]
    if not isinstance(base, str) or base not in list_boards():
        raise OpqError(f"{path.name}: `based_on` {base!r} is not a shipped part-level board; choose one of "
                       f"{', '.join(list_boards())}")
    raw = read_yaml(config_dir() / f"{base}.yaml")
    if not isinstance(raw, dict) or raw.get("based_on") is not None or raw.get("pins"):
        raise OpqError(f"{path.name}: `based_on` must name a part-level board (no based_on, no pins of its own); "
                       f"{base!r} is not one")
    merged = {k: v for k, v in raw.items() if k != "notes"}
    merged.update({k: v for k, v in data.items() if k not in ("provenance", "notes")})
    prov = dict(raw.get("provenance") or {})
    if isinstance(data.get("provenance"), dict):
        prov.update(data["provenance"])
    merged["provenance"] = prov
    notes = list(raw.get("notes") or [])
    extra = data.get("notes") or []
    merged["notes"] = notes + list(extra) if isinstance(extra, list) else extra
    return merged


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

