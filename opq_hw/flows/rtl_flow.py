"""Open RTL flow (issue 5): whole-network RTL, Verilator bit-exact simulation, Yosys resource
counts per layer and in total, nextpnr place-and-route and a bitstream for Lattice parts. No
vendor tool is needed.

    opq-hw build RUN --flow rtl --board ecp5-85f|ice40-up5k|<xc7 board> [--rtl-arch seq|da4ml] [--pipeline N]
        [--serial-bits D]
    opq-hw simulate RUN --level rtl

Two architectures (`opq_hw.flows.RTL_ARCHS`): `seq` (default; `opq_hw.rtl.seq`): per layer one sparse
multiply-accumulate unit walking a ROM of the nonzero weights, activations in block RAM; small
(the digits demo is ~1.3k iCE40 logic cells) and places and routes in seconds, one sample per
(nonzero weights x output positions) cycles. `da4ml` (`opq_hw.rtl.gen`): per layer a
constant-weight adder graph from da4ml, convolutions streamed through a line buffer; one input
pixel per cycle, but its logic grows with every nonzero weight (the demo is ~34k LUT-equivalents,
which the single-threaded WebAssembly nextpnr-ecp5 does not route in minutes). `--serial-bits D`
feeds the da4ml kernels D-bit digits of the activations, one per cycle (a kernel over D-bit
inputs and a shift-accumulator per output), one pixel every (activation bits / D) cycles.

Steps (`build_steps`, run by `opq_hw.steps`; each timed into rtl_build.json and the manifest): `intnet` (integer network read off the Brevitas model,
checked bit-exact against it on the golden input) -> `rtl` (Verilog) -> `verilator` (build) ->
`simulate` (whole test set through the RTL, bit-exact check, cycle counts) -> `synth` (Yosys, one
run: every layer module is kept as hierarchy for its own counts, then flattened for PnR) -> `pnr` (nextpnr + bitstream, Lattice only). Everything lands in
`RUN/build/rtl/` (written atomically); the summary is `RUN/build/rtl/rtl_build.json`.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..artifact import read_json, write_json
from ..rundir import build_dir
from ..steps import Step, build_key, run_build, timings
from ..errors import OpqError

COST_ARCH = {"seq": "rtl-seq", "da4ml": "rtl-da"}  # --rtl-arch -> the cost model's architecture that prices it
VERILATOR_FAILED_LOG = "rtl_verilator_failed.log"  # in RUN/build/: a failed Verilator build's log (the build folder is discarded)


# -- boards -----------------------------------------------------------------------------------
def nextpnr_device(family: str, part: str) -> tuple[str, str]:
    """(nextpnr device flag, package) from a Lattice part number in a board yaml.

    ECP5: LFE5U-85F-6BG381C -> ('85k', 'CABGA381'); LFE5UM-... -> 'um-85k'; LFE5UM5G -> 'um5g-85k'.
    iCE40: iCE40UP5K-SG48I -> ('up5k', 'sg48'); iCE40HX8K-CT256 -> ('hx8k', 'ct256').
    """
    p = part.upper()
    if family == "ecp5":
        m = re.match(r"LFE5(U|UM|UM5G)-(\d+)F-\d([A-Z]+)(\d+)", p)
        if not m:
            raise OpqError(f"cannot read the ECP5 part number {part!r} (expected e.g. LFE5U-85F-6BG381C); fix the board yaml")
        kind, size, pk, pins = m.groups()
        dev = {"U": "", "UM": "um-", "UM5G": "um5g-"}[kind] + f"{size}k"
        pkg = {"BG": "CABGA", "MG": "CSFBGA"}.get(pk)
        if pkg is None:
            raise OpqError(f"unknown ECP5 package code {pk!r} in {part!r}")
        return dev, f"{pkg}{pins}"
    if family == "ice40":
        m = re.match(r"ICE40([A-Z]+\d+K)-([A-Z]+\d+)", p)
        if not m:
            raise OpqError(f"cannot read the iCE40 part number {part!r} (expected e.g. iCE40UP5K-SG48I); fix the board yaml")
        return m.group(1).lower(), m.group(2).lower()
    raise OpqError(f"no place-and-route for family {family!r}")


def _board(board):
    from ..boards import load_board

    return load_board(board)


# -- the integer network of a run ----------------------------------------------------------------
def run_intnet(run):
    """IntNet of a run, checked bit-exact against the Brevitas model on the run's golden input."""
    from ..rtl.intnet import extract

    from ..validate import read_npy

    x = read_npy(run.path / "golden_input.npy", like=run.specs[0].in_shape)
    if run.allocation.scale_mode != "pow2":
        raise OpqError(f"run {run.path.name} uses scale_mode={run.allocation.scale_mode!r}; the RTL flow is bit-exact only "
                       f"with power-of-two scales: compress with --scale-mode pow2")

    def iw(name):
        return run.int_weights(name)

    net = extract(run.qmodel, x[:1], int_weights=iw)
    got = net.predict(x)
    gout = run.path / "golden_output.npy"
    ref = read_npy(gout) if gout.exists() else None
    if ref is not None and got.size != ref.size:
        raise OpqError(f"{gout} holds {ref.shape}, the model gives {got.shape} for golden_input.npy; re-create the run")
    if ref is not None and not np.array_equal(got.reshape(ref.shape), ref.astype(np.float32)):
        raise OpqError("the integer network read off the Brevitas model does not reproduce golden_output.npy bit for "
                       "bit; this model uses a construct the RTL flow does not model exactly (report it)")
    return net


def _arch(arch: str | None) -> str:
    from . import RtlOptions

    return RtlOptions(rtl_arch=arch or "seq").rtl_arch


def _generate(net, arch: str, pipeline: float, serial_bits: int = 0):
    if arch == "seq":
        from ..rtl.seq import generate_seq

        return generate_seq(net)
    from ..rtl.gen import generate

    return generate(net, pipeline=pipeline, serial_bits=serial_bits)


def _net_hash(net, pipeline: float, arch: str, serial_bits: int = 0) -> str:
    key = {"net": net.to_dict(), "pipeline": pipeline, "arch": arch, **({"serial_bits": serial_bits} if serial_bits else {})}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _pixels(net, x_q: np.ndarray, arch: str = "da4ml") -> np.ndarray:
    """(N, beats) unsigned input words in stream order: raster order, a pixel's channels packed LSB
    first in one word (da4ml), or one value per word in H, W, C order (seq)."""
    xi = net.to_int_input(x_q)  # N C H W
    n, c, h, w = xi.shape
    bw = net.in_bits
    v = xi.transpose(0, 2, 3, 1).reshape(n, h * w, c) & ((1 << bw) - 1)
    if arch == "seq":
        return v.reshape(n, h * w * c)
    words = np.zeros((n, h * w), dtype=np.int64)
    for ch in range(c):
        words |= v[:, :, ch] << (ch * bw)
    return words


def _sim_binary(run, net, pipeline: float, arch: str, log: Callable[[str], Any] | None,
                serial_bits: int = 0) -> tuple[Path, dict[str, Any]]:
    """A Verilator simulator for this run's design: the build's if it matches, else a cached one."""
    from ..rtl.gen import write_design
    from ..rtl.verilator import build_sim

    from ..rundir import read_manifest, sha256_file

    h = _net_hash(net, pipeline, arch, serial_bits)
    arts = read_manifest(run.path)["artifacts"]
    for d in (run.path / "build" / "rtl", run.path / "build" / "rtl_sim"):
        meta = d / "design.json"
        binary = d / "sim" / "obj_dir" / "Vopq_top"
        # only a simulator this tool built and recorded, unchanged since (never a binary someone put in the run)
        if all(f.is_file() and arts.get(f.relative_to(run.path).as_posix()) == sha256_file(f) for f in (meta, binary)):
            m = read_json(meta)
            if m.get("hash") == h:
                return binary, m
    dest = run.path / "build" / "rtl_sim"
    with build_dir(run.path, "rtl_sim") as bd:
        tmp = bd.path
        if log:
            log("rtl: generating Verilog and building the Verilator simulator")
        design = _generate(net, arch, pipeline, serial_bits)
        files = write_design(design, tmp / "src")
        build_sim(files, tmp / "sim", keep_log=run.path / "build" / VERILATOR_FAILED_LOG)
        meta = {**design.meta(), "hash": h, "pipeline": pipeline, "arch": arch, "serial_bits": serial_bits}
        write_json(tmp / "design.json", meta)
    return dest / "sim" / "obj_dir" / "Vopq_top", meta


def simulate_rtl(run, x_q: np.ndarray, pipeline: float | None = None, gap_permille: int = 0,
                 rtl_arch: str | None = None, info: dict | None = None) -> np.ndarray:
    """Simulation level "rtl": the whole network's RTL in Verilator, float32 logits (N, n_out).

    Uses the simulator of `opq-hw build --flow rtl` when it matches the run (and, by default, that
    build's architecture and pipeline), else builds one (cached in RUN/build/rtl_sim).
    `gap_permille` drops input valid at random (stream test)."""
    from ..rtl.verilator import run_sim, to_signed

    net = run_intnet(run)
    b = run.path / "build" / "rtl" / "design.json"
    built = read_json(b) if b.exists() else {}
    if pipeline is None:
        pipeline = float(built.get("pipeline", 0.0))
    arch = _arch(rtl_arch or built.get("arch"))
    binary, meta = _sim_binary(run, net, float(pipeline), arch, None, int(built.get("serial_bits", 0)))
    px = _pixels(net, x_q, arch)
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="opq-rtl-sim-"))
    try:
        res = run_sim(binary, px, meta["n_out"], work, gap_permille=gap_permille)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    acc = to_signed(res.words, meta["out_w"])
    if info is not None:
        info.update({"cycles": res.cycles, "latency_cycles": int(max(res.latency)) if res.latency else None,
                     "interval_cycles": res.interval, "predict_s": res.seconds})
    return net.logits(acc)


# -- build -----------------------------------------------------------------------------------------
class _Ctx:
    """What the build's steps share: the run, the options, the board; `state` (JSON: the summary and
    what a resumed build needs) and the in-memory objects the first two steps make (net, design, files)."""

    def __init__(self, run, o, b, family, log):
        self.run, self.o, self.b, self.family, self.log = run, o, b, family, log
        self.state: dict[str, Any] = {"summary": {"flow": "rtl", "arch": o.rtl_arch, "board": b.name, "family": family,
                                                  "part": b.part, "pipeline": float(o.pipeline),
                                                  "serial_bits": int(o.serial_bits)}}
        self.net = self.design = self.files = None

    @property
    def summary(self) -> dict[str, Any]:
        return self.state["summary"]


def _step_intnet(c: _Ctx) -> None:
    c.net = run_intnet(c.run)
    write_json(c.out / "intnet.json", c.net.to_dict())


def _step_rtl(c: _Ctx) -> None:
    from ..rtl.gen import write_design

    arch, pipeline, sb = c.o.rtl_arch, float(c.o.pipeline), int(c.o.serial_bits)
    c.design = _generate(c.net, arch, pipeline, sb)
    c.files = write_design(c.design, c.out / "src")
    meta = {**c.design.meta(), "hash": _net_hash(c.net, pipeline, arch, sb), "pipeline": pipeline, "arch": arch,
            "serial_bits": sb}
    write_json(c.out / "design.json", meta)
    c.summary["design"] = {k: v for k, v in meta.items() if k != "layers"}
    c.summary["layers"] = [dict(m) for m in c.design.layer_modules]
    _layer_estimates(c.run, c.summary["layers"], arch, c.b)


def _top(c: _Ctx) -> str:
    """The top module synthesized: the board top on a dev board, else the bare accelerator."""
    return "opq_board" if c.b.pins else c.design.top


def _step_board(c: _Ctx) -> None:
    """Dev boards: the board top (opq_hw.rtl.board: serial link + accelerator at the board's pins),
    its clock (the oscillator, or a PLL to --freq: opq_hw.rtl.clock), the pin file generated from
    the board YAML, and board.json (what the host needs to talk to it; `_finish` adds timing and
    the placed sites)."""
    from ..boards import pin_file
    from ..rtl import clock
    from ..rtl.board import LINK_HDL, board_top, clks_per_bit, geometry
    from ..rtl.gen import HDL_DIR

    b, baud = c.b, int(c.o.baud)
    clk, cp = b.pin("clock")
    plan = clock.plan(b, c.o.freq)
    cpb = clks_per_bit(plan.achieved_mhz, baud)
    geo = geometry(c.design)
    src = c.out / "src"
    (src / "opq_board.v").write_text(board_top(b, geo, cpb, plan))
    for f in LINK_HDL:
        shutil.copyfile(HDL_DIR / f, src / f)
    board_files = [src / f for f in LINK_HDL] + [src / "opq_board.v"]
    if plan.source == "pll":
        (src / "opq_clock.v").write_text(plan.verilog())
        board_files.insert(0, src / "opq_clock.v")
    c.files = list(c.files) + board_files
    name, text = pin_file(b)
    (c.out / name).write_text(text)
    info = {"board": b.name, "display_name": b.display_name, "part": b.part, "top": "opq_board",
            "pin_file": f"build/rtl/{name}",
            "clock": {"pin": clk, "site": cp["site"], "mhz": plan.achieved_mhz, **plan.to_dict()},
            "uart": {"baud": baud, "clks_per_bit": cpb, "actual_baud": plan.achieved_mhz * 1e6 / cpb,
                     "rx": b.pin("uart_rx")[1]["site"], "tx": b.pin("uart_tx")[1]["site"]},
            "protocol": {"version": 1, **geo.to_dict(), "arch": c.o.rtl_arch},
            "pins": {n: {"role": p["role"], "site": p["site"]} for n, p in b.pins.items()},
            "sources": [f"build/rtl/src/{f.name}" for f in c.files]}  # what the board top compiles from
    write_json(c.out / "board.json", info)
    c.summary["board_top"] = {"top": "opq_board", "pin_file": name, "clks_per_bit": cpb, "baud": baud,
                              "clock": plan.to_dict(), "info": info}


def _step_verilator(c: _Ctx) -> None:
    from ..rtl.verilator import build_sim

    shutil.rmtree(c.out / "sim", ignore_errors=True)  # what a killed earlier try left half-built (resume)
    binary = build_sim(c.files, c.out / "sim", keep_log=c.run.path / "build" / VERILATOR_FAILED_LOG)
    c.state["binary"] = Path(binary).relative_to(c.out).as_posix()


def _step_simulate(c: _Ctx) -> None:
    from ..data import run_inputs
    from ..equivalence import compare, reference
    from ..pipeline import quantize_input
    from ..rtl.verilator import run_sim, to_signed, verilator_version

    run, arch = c.run, c.o.rtl_arch
    x, y, desc, data_note = run_inputs(run, c.o.data, c.o.n_sim, command="build --flow rtl")
    if data_note and c.log:
        c.log(f"note: {data_note}")
    x_q = quantize_input(run, x)
    shutil.rmtree(c.out / "sim" / "run", ignore_errors=True)
    res = run_sim(c.out / c.state["binary"], _pixels(c.net, x_q, arch), c.design.n_out, c.out / "sim" / "run")
    logits = c.net.logits(to_signed(res.words, c.design.out_w))
    same = compare(reference(run, x_q), logits, None)
    c.summary["simulation"] = {
        "n": same["n"], "exact_samples": same["exact_samples"], "bit_exact": same["bit_exact"],
        "data": desc, **({"data_note": data_note} if data_note else {}),
        "accuracy": float(np.mean(logits.argmax(1) == np.asarray(y))) if y is not None else None,
        "cycles": int(res.cycles), "latency_cycles": int(max(res.latency)),
        "latency_cycles_min": int(min(res.latency)), "interval_cycles": float(res.interval),
        "verilator": verilator_version(), "sim_seconds": round(res.seconds, 2)}
    shutil.rmtree(c.out / "sim" / "run", ignore_errors=True)


def _step_synth(c: _Ctx) -> None:
    from ..rtl import eda

    s, family = c.summary, c.family
    s["tools"] = eda.tool_versions(family)
    mods = [lm["module"] for lm in s["layers"]] if c.o.per_layer else []
    shutil.rmtree(c.out / "synth", ignore_errors=True)  # what a killed earlier try left (resume)
    try:
        top = eda.synth(c.files, _top(c), family, c.out / "synth" / "top", json_out=family != "xc7",
                        modules=mods, timeout=c.o.tool_timeout)
    except OpqError as e:  # keep what was measured so far; raised after the summary is written
        s["synth_error"] = str(e)
        return
    for lm in s["layers"]:
        if lm["module"] in top["modules"]:
            lm["synth"] = top["modules"][lm["module"]]
    s["synth"] = {k: v for k, v in top.items() if k not in ("json", "modules")}
    s["fit"] = _fit(c.b, top, s["layers"])


def _pnr_applies(c: _Ctx) -> bool:
    return "synth" in c.summary and c.summary["fit"].get("fits", True)


def _step_pnr(c: _Ctx) -> None:
    from ..rtl import eda

    s, family, b = c.summary, c.family, c.b
    dev, pkg = nextpnr_device(family, b.part)
    bt = s.get("board_top")
    f = float(bt["clock"]["achieved_mhz"] if bt else c.o.freq or b.clock_mhz)
    work = c.out / "synth" / "top"
    try:
        pins = c.out / bt["pin_file"] if bt else None
        p = eda.pnr(work, _top(c), family, dev, pkg, f, seed=c.o.seed, timeout=c.o.tool_timeout, constraints=pins)
        if bt:
            p["placement"] = _check_placement(b, eda.placed_sites(work / f"{_top(c)}.routed.json", family, dev, pkg,
                                                                  b.part))
            (work / f"{_top(c)}.routed.json").unlink()
    except OpqError as e:
        s["pnr"] = {"error": str(e)}
        return
    if bt:
        p["timing"] = _timing(p, b, c.o)
    bit = c.out / "synth" / "top" / p["bitstream"]
    shutil.copyfile(bit, c.out / p["bitstream"])
    p["bitstream"] = f"build/rtl/{p['bitstream']}"
    s["pnr"] = p
    if "simulation" in s and p.get("fmax_mhz"):
        v = s["simulation"]
        v["throughput_sps_at_fmax"] = p["fmax_mhz"] * 1e6 / v["interval_cycles"]
        v["latency_us_at_fmax"] = v["latency_cycles"] / p["fmax_mhz"]


def _check_placement(b, placed: dict[str, dict[str, str]]) -> dict[str, Any]:
    """Each board pin's site in the YAML beside where nextpnr placed its port; `ok` when all agree
    and no other port was placed."""
    rows = {n: {"site": str(p["site"]), "placed": placed.get(n, {}).get("site"), "bel": placed.get(n, {}).get("bel")}
            for n, p in b.pins.items()}
    bad = [f"{n} at {r['placed'] or 'nowhere'} (board file: {r['site']})" for n, r in rows.items()
           if r["placed"] != r["site"]] + [f"{n} (not a board pin) at {placed[n]['site']}" for n in placed
                                           if n not in rows]
    return {"ok": not bad, "pins": rows, **({"error": "nextpnr placed " + "; ".join(bad)} if bad else {})}


def _timing(p: dict[str, Any], b, o) -> dict[str, Any]:
    """Fmax of the board clock against its target; the message `build` fails with when it is missed."""
    fmax, target = p.get("fmax_mhz"), p["target_mhz"]
    met = fmax is not None and fmax >= target
    t = {"fmax_mhz": fmax, "target_mhz": target, "met": met, "allow_fail": bool(o.timing_allow_fail)}
    if not met:
        got = "no Fmax reported" if fmax is None else f"Fmax {fmax:.1f} MHz"
        hint = (f"lower the clock (--freq {int(fmax)} or less; the oscillator is {b.pin('clock')[1]['mhz']:g} MHz)"
                if fmax else "check the nextpnr log")
        smaller = "use --rtl-arch seq or compress harder" if o.rtl_arch == "da4ml" else "compress harder"
        t["message"] = (f"timing not met on {b.name}: {got} < target {target:.4g} MHz; {hint}, {smaller}, "
                        f"or pass --timing-allow-fail to keep the bitstream anyway")
    return t


def build_steps(o, family: str, dev_board: bool = False) -> list[Step]:
    """The RTL build's steps for options `o` (see the module docstring); a dev board (one with pins)
    adds `board` (the board top, its pin file, board.json). intnet, rtl and board are re-run on
    resume (cheap, deterministic: they rebuild the network and design objects); the tool steps resume."""
    steps = [Step("intnet", _step_intnet, rerun=True), Step("rtl", _step_rtl, rerun=True)]
    if dev_board:
        steps.append(Step("board", _step_board, rerun=True))
    if o.sim:
        steps += [Step("verilator", _step_verilator, resumable=True), Step("simulate", _step_simulate, resumable=True)]
    if o.synth:
        steps.append(Step("synth", _step_synth, resumable=True))
        if o.pnr and family in ("ecp5", "ice40"):
            steps.append(Step("pnr", _step_pnr, resumable=True, when=_pnr_applies))
    return steps


def _finish(c: _Ctx, t_all: float, cpu0: float) -> None:
    """Last, inside the build directory: tidy the tool folders, write rtl_build.json (and resources.json)."""
    s, out = c.summary, c.out
    if c.o.synth:
        for d in (out / "synth").glob("*/"):
            for junk in d.glob("*.asc"):
                junk.unlink()
            for junk in d.glob("*.config"):
                junk.unlink()
    times = timings(c.records)
    times["total"] = time.time() - t_all
    s["seconds"] = {k: round(v, 2) for k, v in times.items()}
    s["cpu_seconds"] = round(_cpu() - cpu0, 1)  # this process + its tools: the machine-load-free cost
    s["peak_rss_mb"] = _peak_rss_mb()
    write_json(out / "rtl_build.json", s)
    if "board_top" in s:  # board.json with what place and route found
        pnr = s.get("pnr") or {}
        write_json(out / "board.json", {**s["board_top"]["info"], **{k: pnr[k] for k in ("timing", "placement")
                                                                     if k in pnr},
                                        **({"bitstream": pnr["bitstream"]} if "bitstream" in pnr else {})})
    c.build.failed = _failure(s, c.o.sim, c.o.synth)
    if isinstance(s.get("synth"), dict) and "lut" in s["synth"]:  # the measurement `opq-hw report` puts beside the estimate
        write_json(out / "resources.json", resources_record(s, c.o, c.family))


def resources_record(s: dict[str, Any], o, family: str) -> dict[str, Any]:
    """`build/rtl/resources.json` from the build summary `s`: Yosys's totals and what they measure (the
    cost model's architecture, the family, and a variant it does not price), so that `opq-hw report`
    sets them only against an estimate of the same design."""
    syn = s["synth"]
    variant = [v for v in (o.serial_bits and f"{o.serial_bits}-bit digit-serial inputs",
                           o.pipeline and f"pipelined kernels (--pipeline {o.pipeline:g})") if v]
    return {"LUT": syn.get("lut_equiv", syn["lut"]), "FF": syn["ff"], "DSP": syn["dsp"],
            "BRAM18": syn["bram18"] + 2 * syn["bram36"], "URAM": 0,
            "source": f"Yosys synthesis for {family}" + (", placed and routed" if isinstance(s.get("pnr"), dict)
                                                         and "fmax_mhz" in s["pnr"] else ""),
            "arch": COST_ARCH[o.rtl_arch], "family": family, "variant": ", ".join(variant) or None}


def build(run_dir, board: str = "ecp5-85f", log: Callable[[str], Any] | None = print, **options) -> dict[str, Any]:
    """Build the open-RTL accelerator of a run for `board` (see the module docstring).

    options: `opq_hw.flows.RtlOptions` (rtl_arch "seq" or "da4ml"; pipeline, da4ml only: latency
    cutoff per pipeline stage inside each layer kernel, 0: combinational kernels, every layer still
    registers its window/vector and its output; freq: PnR target in MHz, default the board's clock;
    tool_timeout: wall-clock limit per Yosys/nextpnr run; data: the simulation's inputs, a --data
    value, see `opq_hw.data.run_inputs`, default the run's own test data). A build killed during a
    tool step resumes after its last completed step when run again unchanged (`opq_hw.steps`).
    Returns the summary also written to rtl_build.json; raises OpqError when the design does not fit
    the part (after writing the summary)."""
    from ..data import require_run_data
    from ..rtl import eda
    from ..run import load_run
    from ..rundir import sha256_file
    from ..tail import refuse_tail_hw
    from . import FLOWS

    o = FLOWS["rtl"].parse_options(options)
    refuse_tail_hw("rtl", o.tail, "its layers are integer MAC arrays and ReLU; it has no exp/sigmoid tables")
    b = _board(board)
    family = eda.family_of(b.family)
    if o.sim:
        require_run_data(run_dir, "build --flow rtl")
    run = load_run(run_dir)
    c = _Ctx(run, o, b, family, log)
    cpu0, t_all = _cpu(), time.time()
    data_file = o.data is not None and Path(o.data).is_file()
    key = build_key(run.manifest, "rtl", b.name, {**o.given(), "data_sha256": sha256_file(o.data) if data_file else None})

    def announce(step: Step) -> None:
        if log:
            log(f"rtl: {step.name}" + (f" ({family})" if step.name in ("synth", "pnr") else ""))

    dest = run.path / "build" / "rtl"
    bd, _ = run_build(run.path, "rtl", build_steps(o, family, bool(b.pins)), c, key=key, log=log, announce=announce,
                      after=lambda c: _finish(c, t_all, cpu0))  # a failed build goes to build/rtl.failed
    summary = c.summary
    if log:
        log(summary_text(summary))
    if bd.failed:
        kept = f"the previous {dest.name}/ was kept" if dest.exists() else f"no build/{dest.name}/ was written"
        raise OpqError(f"{bd.failed} (this build is in {bd.path}; {kept})")
    if o.sim and not summary["simulation"]["bit_exact"]:
        summary["returncode"] = 1
    return summary


def _failure(summary: dict[str, Any], sim: bool, synth: bool) -> str | None:
    """Why a finished build must not replace the previous one (None: it may)."""
    if "synth_error" in summary:
        return summary["synth_error"]
    if synth and not summary.get("fit", {}).get("fits", True):
        return summary["fit"]["message"]
    if "pnr" in summary and "error" in summary["pnr"]:
        return summary["pnr"]["error"]
    pnr = summary.get("pnr") or {}
    if not pnr.get("placement", {}).get("ok", True):
        return pnr["placement"]["error"] + "; the pin file was not applied as written (report it)"
    t = pnr.get("timing") or {}
    if not t.get("met", True) and not t.get("allow_fail"):
        return t["message"]
    return None


def _cpu() -> float:
    import resource

    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def _peak_rss_mb() -> float:
    """Largest resident set of this process or any tool it ran (ru_maxrss, KiB on Linux)."""
    import resource

    return round(max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                     resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024, 1)


def _layer_estimates(run, layers: list[dict[str, Any]], arch: str, board) -> None:
    """Each layer module's LUT/FF from the cost model beside what Yosys will count: `estimate`
    (weight-agnostic, what `opq-hw estimate` says) and, for da4ml, `estimate_with_kernel` (fed with
    what the generator records of da4ml's solution of this layer's weights: its cost, latency,
    the registers synthesis keeps and the shift-register runs)."""
    from .. import cost

    params = {p.name: p for p in cost.network_params(run.specs, run.allocation, run.config.get("act_bits", 8))}
    cal = cost.rtl_calibration(board.family, COST_ARCH[arch])
    for lm in layers:
        p = params.get(lm["name"])
        if p is None:
            continue
        if arch == "seq":
            r = cost.rtl_seq(p, board, cal)
            lm["estimate"] = {"LUT": int(round(float(r["LUT"]))), "FF": int(round(float(r["FF"])))}
            continue
        if "serial_steps" in lm:
            continue  # a digit-serial layer: rtl-da is calibrated on whole-activation kernels only
        kernel = {"da4ml_cost": lm["da4ml_cost"], "registers": lm["registers"], "chains": lm["chains"],
                  "latency": lm["kernel_latency"]}
        for key, k in (("estimate", None), ("estimate_with_kernel", kernel)):
            r = cost.rtl_da(p, board, cal, k)
            lm[key] = {"LUT": int(round(float(r["LUT"]))), "FF": int(round(float(r["FF"])))}


def _fit(board, top: dict[str, Any], layers: list[dict[str, Any]]) -> dict[str, Any]:
    """Does the synthesized design fit the part? Names the overflow and the largest layer."""
    from ..cost import fits

    use = {"LUT": top.get("lut_equiv", top["lut"]), "FF": top["ff"], "DSP": top["dsp"], "BRAM18": top["bram18"] + 2 * top.get("bram36", 0)}
    over = []
    for r in fits(board, use).over:
        u, lim, cap = use[r], board.limit(r), board.capacity[r]  # lim: utilisation limit x capacity - shell
        over.append(f"{r} {u} > {lim:.0f} usable ({f'{u / lim:.2f}x; ' if lim > 0 else ''}capacity {cap})")
    largest = max(layers, key=lambda m: m.get("synth", {}).get("lut_equiv", m.get("da4ml_cost", 0)), default=None)
    msg = ""
    if over:
        msg = (f"the network does not fit {board.name} ({board.part}): " + "; ".join(over) +
               (f"; the largest layer is {largest['name']!r} ({largest.get('synth', {}).get('lut_equiv', '?')} LUTs)"
                if largest else "") + "; use a larger board or compress harder (lower bits / higher sparsity)")
    return {"fits": not over, "usage": use, "capacity": dict(board.capacity), "message": msg,
            "largest_layer": largest["name"] if largest else None}


def _clock_text(ck: dict[str, Any]) -> str:
    if ck["source"] == "oscillator":
        return f"the {ck['osc_mhz']:g} MHz oscillator directly (no PLL)"
    pll = ck["pll"]
    return (f"{ck['achieved_mhz']:.6g} MHz from the {ck['osc_mhz']:g} MHz oscillator through a PLL ({pll['tool']}, "
            f"requested {ck['requested_mhz']:g} MHz, VCO {pll['vco_mhz']:.6g} MHz)")


def summary_text(s: dict[str, Any]) -> str:
    arch = s.get("arch", "da4ml")
    lines = [f"RTL build ({arch} architecture) for {s['board']} ({s['family']}, {s['part']})"
             + (f", pipeline cutoff {s['pipeline']}" if arch == "da4ml" else "")
             + (f", {s['serial_bits']}-bit digit-serial inputs" if s.get("serial_bits") else "")]
    for m in s.get("layers", []):
        st = m.get("synth", {})
        what = (f"da4ml {m['da4ml_cost']:8.0f} LUT-est" if "da4ml_cost" in m else
                f"{m['rom_entries']:5d} ROM entries, {m['cycles']:6d} cycles")
        est = m.get("estimate_with_kernel", m.get("estimate"))
        lines.append(f"  {m['name']:>10} {m['kind']:6} {what} | yosys LUT-equiv {st.get('lut_equiv', '-')}"
                     f" FF {st.get('ff', '-')} DSP {st.get('dsp', '-')} BRAM {st.get('bram18', '-')}"
                     + (f" | estimated LUT-equiv {est['LUT']} FF {est['FF']}" if est else ""))
    if "board_top" in s:
        bt = s["board_top"]
        lines.append(f"  board top: {bt['top']} at the board's pins (build/rtl/{bt['pin_file']}, build/rtl/board.json), "
                     f"UART {bt['baud']} baud ({bt['clks_per_bit']} clocks per bit), " + _clock_text(bt["clock"]))
    if "synth" in s:
        t = s["synth"]
        lines.append(f"  total: LUT {t['lut']} FF {t['ff']} carry {t['carry']} DSP {t['dsp']} BRAM18 {t['bram18']}")
    if "simulation" in s:
        v = s["simulation"]
        acc = "n/a" if v.get("accuracy") is None else f"{v['accuracy'] * 100:.2f}%"
        lines.append(f"  verilator: {v['exact_samples']}/{v['n']} samples bit-exact, accuracy {acc}, "
                     f"latency {v['latency_cycles']} cycles, one sample per {v['interval_cycles']:.0f} cycles")
    if "pnr" in s:
        p = s["pnr"]
        if "error" in p:
            lines.append(f"  place and route failed: {p['error'].splitlines()[0]}")
        else:
            lines.append(f"  nextpnr: Fmax {p['fmax_mhz']:.1f} MHz (target {p['target_mhz']:.4g}), bitstream {p['bitstream']} "
                         f"({p['bitstream_bytes']} bytes)")
            if "timing" in p:
                t = p["timing"]
                lines.append("  timing: " + ("met" if t["met"] else "NOT met" + (" (--timing-allow-fail)" if t["allow_fail"]
                                                                                 else "")))
            if "placement" in p:
                pl = p["placement"]
                lines.append(f"  placed pins: {sum(r['placed'] == r['site'] for r in pl['pins'].values())}/"
                             f"{len(pl['pins'])} at the board file's sites" + ("" if pl["ok"] else f" ({pl['error']})"))
            if "simulation" in s and "throughput_sps_at_fmax" in s["simulation"]:
                lines.append(f"  throughput {s['simulation']['throughput_sps_at_fmax']:.0f} samples/s at Fmax, "
                             f"latency {s['simulation']['latency_us_at_fmax']:.2f} us")
    if "seconds" in s:
        lines.append("  seconds: " + ", ".join(f"{k} {v}" for k, v in s["seconds"].items()) +
                     f" (CPU {s.get('cpu_seconds')} s, peak RSS {s.get('peak_rss_mb')} MB)")
    return "\n".join(lines)
