"""OPQ's hardware payoff (issue 16 part 4): the OPQ design against the dense 8-bit design of the same
network on the same part, for both open-RTL architectures, by Yosys synthesis and nextpnr.

    python benchmarks/hw_payoff.py --work DIR [--jobs ID,...] [--n-sim 40]   # run jobs (results in DIR/jobs/)
    python benchmarks/hw_payoff.py --work DIR --pnr-only --no-pnr --layer-synth --jobs ID  # per-layer Yosys
    python benchmarks/hw_payoff.py --work DIR --pnr-only --pnr-args "--router router2" --jobs ID-r2
    python benchmarks/hw_payoff.py --work DIR [--work DIR2] --report    # JSON + PNG + markdown from DIR/jobs/
    python benchmarks/hw_payoff.py --replot                              # PNG + markdown from the committed JSON

Job ids: <digits|mnist1d>-<opq|dense8|opqa4|opq40>-<seq|da4ml>-<ecp5|ice40>[-p<pipeline>][-s<serial bits>][-<tag>]
(-sD: da4ml with D-bit digit-serial inputs, `--serial-bits D`; opqa4: OPQ 20x with 4-bit
activations, and opq40: OPQ 40x, both shown beside the comparison, which stays OPQ 20x against dense at
8-bit activations).

Networks: digits-cnn (the demo) and mnist1d-cnn, each from the same pre-trained float weights,
compressed twice (`opq_hw.pipeline.compress_run`, pow2 scales, 8-bit activations, 2 finetune epochs):
OPQ at 20x CR_w (the demo's setting) and the dense baseline `--method uniform --uniform-bits 8` at
4x CR_w (8-bit weights everywhere, no pruning: only the zeros 8-bit rounding itself makes). Each run
goes through `opq_hw.flows.rtl_flow.build` (integer network, Verilog, Verilator bit-exact check on
the test set, Yosys) for `seq` and `da4ml` on ECP5-85F (`seq` also on iCE40 UP5K), then nextpnr on
the synthesized netlist with its own time limit (its log kept for the router's congestion figures).
Every Yosys and nextpnr run has a wall-clock limit; a run that does not finish is recorded as such
(with da4ml's and the cost model's LUT estimates beside it, marked as estimates), never as a count.

Metrics: LUT-equivalents (ECP5: LUT4 + 2 x CCU2C; iCE40: SB_LUT4), FF, DSP, block RAM (18 Kb EBR /
4 Kb iCE40 BRAM), cycles per sample (the simulated interval), Fmax, samples/s at Fmax. Goal (issue
16): >= 5x fewer LUT-equivalents for the unrolled (da4ml) architecture.
"""
from __future__ import annotations

import argparse
import json
import re
import resource
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from opq_hw.artifact import read_json, write_bytes, write_json, write_png  # noqa: E402
from opq_hw.errors import OpqError  # noqa: E402

OUT = ROOT / "benchmarks" / "results"
GOAL_DA = 5.0  # issue 16: dense / OPQ LUT-equivalents, unrolled architecture
MODELS = {"digits": ("digits-cnn", "digits"), "mnist1d": ("mnist1d-cnn", "mnist1d")}
VARIANTS = {"opq": dict(target_cr=20), "dense8": dict(method="uniform", uniform_bits=8, target_cr=4),
            # OPQ 20x with 4-bit activations: reported beside the comparison, not in it (dense = 8/8 bits)
            "opqa4": dict(target_cr=20, act_bits=4),
            # OPQ 40x (the demo's recipe at twice its rate): also beside the comparison
            "opq40": dict(target_cr=40)}
LABELS = {"opq": "OPQ 20x", "dense8": "dense 8-bit", "opqa4": "OPQ 20x, 4-bit act.", "opq40": "OPQ 40x"}
BOARDS = {"ecp5": "ecp5-85f", "ice40": "ice40-up5k"}
# (arch, family, serial bits) compared OPQ against dense; serial 1: da4ml with bit-serial inputs
ARCH_KEYS = (("seq", "ecp5", 0), ("seq", "ice40", 0), ("da4ml", "ecp5", 0), ("da4ml", "ecp5", 1))
# job tags of designs kept for comparison (a tagged job is not paired in the ratios)
TAG_NOTES = {"mux": "the earlier bit-serial design (a digit multiplexer on every kernel input, a bias adder per "
                    "output), generated before opq_digit_chain; its numbers are from that build",
             "chain": "the bit-serial design before its weight-independent logic was trimmed (16-bit counters, "
                      "the requantizer's rounding incrementer, the pools' zeroing, the serializer's copy); its "
                      "numbers are from that build",
             "e5": "finetuned 5 epochs (benchmarks/bench_accuracy.py's recipe) instead of the comparison's 2; "
                   "run with --epochs 5 in its own --work folder"}


def arch_label(arch: str, serial: int = 0, pipeline: float = 0.0) -> str:
    return arch + (f" p{pipeline:g}" if pipeline else "") + (" bit-serial" if serial == 1 else f" {serial}-bit serial"
                                                             if serial else "")


def job_id(model: str, variant: str, arch: str, fam: str, pipeline: float = 0.0, serial: int = 0) -> str:
    return f"{model}-{variant}-{arch}-{fam}" + (f"-p{pipeline:g}" if pipeline else "") + (f"-s{serial}" if serial else "")


def all_jobs() -> list[str]:
    out = []
    for m in MODELS:
        for v in VARIANTS:
            out += [job_id(m, v, "seq", "ecp5"), job_id(m, v, "seq", "ice40"), job_id(m, v, "da4ml", "ecp5")]
    return out


def parse_job(jid: str) -> dict:
    m = re.fullmatch(r"(\w+?)-(opq|opqa4|opq40|dense8)-(seq|da4ml)-(ecp5|ice40)(?:-p([\d.]+))?(?:-s(\d+))?(?:-([a-z]\w*))?", jid)
    if not m or m.group(1) not in MODELS:
        raise OpqError(f"unknown job {jid!r}; jobs look like {all_jobs()[0]} (model-variant-arch-family[-pN][-tag])")
    return {"model": m.group(1), "variant": m.group(2), "arch": m.group(3), "fam": m.group(4),
            "pipeline": float(m.group(5) or 0), "serial": int(m.group(6) or 0), "tag": m.group(7)}


def _cpu() -> float:
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def get_run(work: Path, model: str, variant: str, epochs: int) -> Path:
    """The compressed run (made once, then reused from `work/runs/`)."""
    from opq_hw.pipeline import CompressConfig, compress_run

    path = work / "runs" / f"{model}-{variant}"
    if (path / "manifest.json").is_file():
        return path
    name, data = MODELS[model]
    cfg = CompressConfig(model=name, data=data, epochs=epochs, **VARIANTS[variant])
    return compress_run(cfg, path, progress=False, log=lambda *a: None)


def _summary(run: Path, board: str, arch: str, pipeline: float, serial: int = 0) -> dict:
    """The newest build summary of this design (build/rtl, or build/rtl.failed when it failed)."""
    found = []
    for d in ("rtl", "rtl.failed"):
        p = run / "build" / d / "rtl_build.json"
        if p.exists():
            s = json.loads(p.read_text())
            if (s.get("board"), s.get("arch"), float(s.get("pipeline", 0)), s.get("serial_bits", 0)) == \
                    (board, arch, pipeline, serial):
                found.append((p.stat().st_mtime, s))
    return max(found, key=lambda t: t[0])[1] if found else {}


def router_trace(log: Path) -> dict:
    """What the nextpnr log says about placement and routing: utilisation lines and the router's
    last overuse figures (evidence of congestion when it did not finish)."""
    if not log.exists():
        return {}
    text = log.read_text(errors="replace")
    util = [ln.split("Info:", 1)[-1].strip() for ln in text.splitlines() if re.search(r"\d+/\s*\d+\s+\d+%", ln)]
    iters = re.findall(r"iter=(\d+) wires=(\d+) overused=(\d+) overuse=(\d+) archfail=(\S+)", text)
    r1 = re.findall(r"(\d+) \|\s+(\d+)\s+(\d+) \|\s+(\d+)\s+(\d+) \|\s+(\d+)", text)  # router1 progress table
    out = {"utilisation": util[:12], "log_lines": text.count("\n")}
    if iters:
        out["router2_iterations"] = [{"iter": int(i), "wires": int(w), "overused": int(o), "overuse": int(u)}
                                     for i, w, o, u, _ in iters]
    if r1:
        out["router1_last"] = r1[-1]
    phases = [ln.split("Info:", 1)[-1].strip() for ln in text.splitlines()
              if re.search(r"HeAP Placer Time|SA placement|Routing complete|Running router2|Router2 time|"
                           r"Placement|final", ln)]
    out["phases"] = phases[-8:]
    out["last_lines"] = [ln.rstrip() for ln in text.splitlines()[-6:]]
    return out


def do_pnr(run: Path, work: Path, board_name: str, timeout: float, args: list[str], freq: float | None,
           name: str) -> dict:
    """nextpnr + bitstream on the build's flattened netlist, in a scratch folder of `work`."""
    from opq_hw.boards import load_board
    from opq_hw.flows.rtl_flow import nextpnr_device
    from opq_hw.rtl import eda

    b = load_board(board_name)
    fam = eda.family_of(b.family)
    src = run / "build" / "rtl" / "synth" / "top" / "opq_top.json"
    pdir = work / "pnr" / name
    shutil.rmtree(pdir, ignore_errors=True)
    pdir.mkdir(parents=True)
    shutil.copyfile(src, pdir / "opq_top.json")
    dev, pkg = nextpnr_device(fam, b.part)
    t, c = time.time(), _cpu()
    try:
        p = eda.pnr(pdir, "opq_top", fam, dev, pkg, freq or b.clock_mhz, timeout=timeout, extra_args=args)
        p["ok"] = True
    except OpqError as e:
        p = {"ok": False, "error": str(e).splitlines()[0]}
    p["wall_s"], p["cpu_s"] = round(time.time() - t, 1), round(_cpu() - c, 1)
    p["nextpnr_args"], p["timeout_s"] = args, timeout
    p["trace"] = router_trace(pdir / "opq_top.pnr.log")
    for f in pdir.glob("*"):  # keep the log only
        if f.suffix in (".config", ".asc", ".bit", ".bin") or f.name == "opq_top.json":
            f.unlink()
    return p


def _src_dir(run: Path) -> Path | None:
    """The Verilog of the run's newest RTL build (build/rtl or build/rtl.failed)."""
    ds = [run / "build" / d / "src" for d in ("rtl", "rtl.failed") if (run / "build" / d / "src").is_dir()]
    return max(ds, key=lambda d: d.stat().st_mtime) if ds else None


def layer_synth(work: Path, run: Path, module: str, timeout: float) -> dict:
    """Yosys on one layer module alone (`opq_hw.rtl.eda.synth`, top = the module), for designs whose
    whole-design synthesis did not finish; cached in work/layer_synth/<run>-<module>/result.json,
    keyed by the sources' hash."""
    import hashlib

    from opq_hw.rtl import eda

    src = _src_dir(run)
    files = sorted(src.glob("*.v"))
    sha = hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()
    out = work / "layer_synth" / f"{run.name}-{module}"
    cached = out / "result.json"
    if cached.exists() and read_json(cached).get("src_sha256") == sha:
        return read_json(cached)
    shutil.rmtree(out, ignore_errors=True)
    t, c = time.time(), _cpu()
    try:
        r = eda.synth(files, module, "ecp5", out, json_out=False, timeout=timeout)
        r.pop("cells", None)
        r.pop("modules", None)
    except OpqError as e:
        r = {"error": str(e).splitlines()[0]}
    r.update(src_sha256=sha, wall_s=round(time.time() - t, 1), cpu_s=round(_cpu() - c, 1), timeout_s=timeout)
    write_json(cached, r)
    return r


def run_job(jid: str, work: Path, a) -> dict:
    """Build (unless `a.pnr_only`: the run's existing build of the same design) and place and route."""
    from opq_hw.flows.rtl_flow import build

    j = parse_job(jid)
    run = get_run(work, j["model"], j["variant"], a.epochs)
    board = BOARDS[j["fam"]]
    rec: dict = {"job": jid, **j, "board": board, "run": run.name}
    if a.pnr_only:
        # the job's own record (a tagged design of its own, e.g. e5), else the untagged job's (a re-run tag, e.g. r2)
        own, untagged = (work / "jobs" / f"{n}.json" for n in (jid, jid.rsplit('-' + j['tag'], 1)[0] if j['tag'] else jid))
        prev = own if own.exists() else untagged
        base = read_json(prev) if prev.exists() else {}
        rec.update({k: v for k, v in base.items() if k.startswith("build_") or k in ("error",)})
        s = _summary(run, board, j["arch"], j["pipeline"], j["serial"])
        if not s:
            raise OpqError(f"{run}: no RTL build of {jid}'s design; run the job without --pnr-only")
    else:
        t, c = time.time(), _cpu()
        try:
            build(run, board=board, rtl_arch=j["arch"], pipeline=j["pipeline"], serial_bits=j["serial"], pnr=False,
                  tool_timeout=a.synth_timeout, n_sim=a.n_sim, synth=not a.no_synth, sim=not a.no_sim, log=None)
            rec["build_ok"] = True
        except OpqError as e:
            rec["build_ok"] = False
            rec["error"] = str(e).splitlines()[0]
        rec["build_wall_s"], rec["build_cpu_s"] = round(time.time() - t, 1), round(_cpu() - c, 1)
        s = _summary(run, board, j["arch"], j["pipeline"], j["serial"])
    rec["summary"] = s
    if a.layer_synth and j["arch"] == "da4ml" and "synth" not in s and _src_dir(run) is not None:
        rec["layer_synth"] = {lm["module"]: layer_synth(work, run, lm["module"], a.synth_timeout)
                              for lm in s.get("layers", [])}
    if not a.no_pnr and rec.get("build_ok") and "synth" in s:
        rec["pnr"] = do_pnr(run, work, board, a.pnr_timeout, a.pnr_args.split(), a.freq, jid)
    return rec


# -- the report --------------------------------------------------------------------------------------
def metrics(rec: dict) -> dict:
    """One design's numbers (None where not measured); `estimated` marks LUT figures not from Yosys."""
    s = rec.get("summary", {})
    syn, sim, p = s.get("synth"), s.get("simulation", {}), rec.get("pnr", {})
    layers = s.get("layers", [])
    m = {"lut_equiv": None, "lut": None, "carry": None, "ff": None, "dsp": None, "bram": None,
         "cycles_per_sample": sim.get("interval_cycles"), "latency_cycles": sim.get("latency_cycles"),
         "bit_exact": f"{sim['exact_samples']}/{sim['n']}" if sim else None, "accuracy": sim.get("accuracy"),
         "fmax_mhz": p.get("fmax_mhz") if p.get("ok") else None, "bitstream": bool(p.get("ok")),
         "w_bits": [lm.get("w_bits") for lm in layers], "nonzero": sum(lm.get("n_nonzero", 0) for lm in layers),
         "synth_s": (syn or {}).get("seconds"), "fits": s.get("fit", {}).get("fits")}
    if syn:
        m.update(lut_equiv=syn["lut_equiv"], lut=syn["lut"], carry=syn["carry"], ff=syn["ff"], dsp=syn["dsp"],
                 bram=syn["bram18"] + 2 * syn.get("bram36", 0))
    if m["fmax_mhz"] and m["cycles_per_sample"]:
        m["samples_per_s"] = m["fmax_mhz"] * 1e6 / m["cycles_per_sample"]
    if rec["arch"] == "da4ml" and layers:
        m["da4ml_lut_estimate"] = sum(lm.get("da4ml_cost", 0) for lm in layers)
        est = [lm.get("estimate_with_kernel", {}).get("LUT") for lm in layers]
        m["cost_model_lut_estimate"] = sum(est) if None not in est else None
    ls = rec.get("layer_synth") or {}
    if not syn and ls and all("lut_equiv" in v for v in ls.values()):
        m.update(lut_equiv=sum(v["lut_equiv"] for v in ls.values()), lut=sum(v["lut"] for v in ls.values()),
                 carry=sum(v["carry"] for v in ls.values()), ff=sum(v["ff"] for v in ls.values()),
                 dsp=sum(v["dsp"] for v in ls.values()), bram=sum(v["bram18"] + 2 * v["bram36"] for v in ls.values()),
                 synth_s=round(sum(v["seconds"] for v in ls.values()), 1))
        m["lut_basis"] = "sum of the layer modules, each synthesized alone (pools and output serializer not counted)"
    elif ls:
        m["layer_synth_errors"] = {k: v["error"] for k, v in ls.items() if "error" in v}
        est = {lm["module"]: lm.get("estimate_with_kernel", {}).get("LUT") for lm in layers}
        if all(est[k] is not None for k in m["layer_synth_errors"]):
            m["lut_equiv_mixed"] = sum(v["lut_equiv"] if "lut_equiv" in v else est[k] for k, v in ls.items())
            m["lut_mixed_basis"] = ("layer modules synthesized alone: " + ", ".join(
                f"{k} {v['lut_equiv']:,}" for k, v in ls.items() if "lut_equiv" in v) + "; not finished, the rtl-da "
                "cost model fed with da4ml's solution: " + ", ".join(f"{k} {est[k]:,}" for k in m["layer_synth_errors"]))
    if not syn:
        m["not_measured"] = (s.get("synth_error") or rec.get("error") or "synthesis not run").splitlines()[0]
    if not sim and layers and rec["arch"] == "da4ml":  # not simulated: the stream takes one input pixel per cycle
        m["cycles_per_sample"] = s.get("design", {}).get("in_pixels")
        m["cycles_not_simulated"] = True
    if p and not p.get("ok"):
        m["pnr_error"] = p.get("error")
    return m


def lut_estimate(m: dict) -> tuple[int | None, str]:
    """The best LUT estimate of a design not synthesized: the cost model fed with da4ml's solution of
    its weights (from the flow's rtl step), else the weight-agnostic cost model."""
    if m.get("lut_equiv_mixed"):
        return m["lut_equiv_mixed"], m["lut_mixed_basis"]
    if m.get("cost_model_lut_estimate"):
        return m["cost_model_lut_estimate"], "rtl-da cost model fed with da4ml's solution"
    w = m.get("cost_model_weight_agnostic")
    return (w["LUT"], f"{w['arch']} cost model, weight-agnostic") if w else (None, "")


def ratios(res: dict) -> list[dict]:
    """dense / OPQ per model, architecture and part; the da4ml LUT goal marked met or missed."""
    out = []
    d = res["designs"]
    for model in MODELS:
        for arch, fam, ser in ARCH_KEYS:
            o, n = d.get(job_id(model, "opq", arch, fam, 0, ser)), d.get(job_id(model, "dense8", arch, fam, 0, ser))
            if not o or not n:
                continue
            r = {"model": model, "arch": arch, "board": BOARDS[fam], "serial": ser}
            for k in ("lut_equiv", "ff", "dsp", "bram", "cycles_per_sample"):
                a, b = o["metrics"].get(k), n["metrics"].get(k)
                r[k] = round(b / a, 2) if a and b is not None else None
            sa, sb = o["metrics"].get("samples_per_s"), n["metrics"].get("samples_per_s")
            r["throughput"] = round(sa / sb, 2) if sa and sb else None
            if arch == "da4ml":
                lo = o["metrics"].get("lut_equiv")
                hi = n["metrics"].get("lut_equiv")
                if r["lut_equiv"] is None:  # estimated where Yosys did not give a count
                    a, b = lo or lut_estimate(o["metrics"])[0], hi or lut_estimate(n["metrics"])[0]
                    r["lut_equiv"] = round(b / a, 2) if a and b else None
                    r["lut_equiv_estimated"] = True
                if lo and hi:
                    r["goal"] = {"target": f">= {GOAL_DA:g}x fewer LUT-equivalents", "value": r["lut_equiv"],
                                 "met": r["lut_equiv"] >= GOAL_DA, "basis": "Yosys, both designs"}
                elif lo:
                    est, basis = lut_estimate(n["metrics"])
                    da = n["metrics"].get("da4ml_lut_estimate"), o["metrics"].get("da4ml_lut_estimate")
                    dtxt = f"; da4ml's own estimates {da[0]:.0f} vs {da[1]:.0f} ({da[0] / da[1]:.2f}x)" if all(da) else ""
                    r["goal"] = {"target": f">= {GOAL_DA:g}x fewer LUT-equivalents",
                                 "value": round(est / lo, 2) if est else None,
                                 "met": None if not est else est / lo >= GOAL_DA,
                                 "basis": f"dense design not synthesized ({n['metrics'].get('not_measured')}); its "
                                          f"estimate {est} ({basis}) against OPQ's Yosys count {lo}{dtxt}"}
                else:
                    (a, _), (b, bb) = lut_estimate(o["metrics"]), lut_estimate(n["metrics"])
                    da = n["metrics"].get("da4ml_lut_estimate"), o["metrics"].get("da4ml_lut_estimate")
                    r["goal"] = {"target": f">= {GOAL_DA:g}x fewer LUT-equivalents",
                                 "value": round(b / a, 2) if a and b else None,
                                 "met": None if not (a and b) else b / a >= GOAL_DA,
                                 "basis": f"neither synthesized; estimates {b} vs {a} ({bb})"
                                          + (f"; da4ml's own estimates {da[0]:.0f} vs {da[1]:.0f} "
                                             f"({da[0] / da[1]:.2f}x)" if all(da) else "")}
            out.append(r)
    return out


def model_estimate(run_dir: Path, arch: str, board_name: str) -> dict:
    """The cost model's weight-agnostic LUT/FF (what `opq-hw estimate --arch rtl-da|rtl-seq` says),
    summed over the layer modules: available even where the flow did not get to synthesis."""
    from opq_hw import cost
    from opq_hw.boards import load_board
    from opq_hw.run import load_run

    run, b = load_run(run_dir), load_board(board_name)
    kind = "rtl-seq" if arch == "seq" else "rtl-da"
    cal = cost.rtl_calibration(b.family, kind)
    tot = {"LUT": 0.0, "FF": 0.0}
    for p in cost.network_params(run.specs, run.allocation, run.config.get("act_bits", 8)):
        r = cost.rtl_seq(p, b, cal) if arch == "seq" else cost.rtl_da(p, b, cal, None)
        tot["LUT"] += float(r["LUT"])
        tot["FF"] += float(r["FF"])
    return {k: int(round(v)) for k, v in tot.items()} | {"arch": kind, "layer_modules_only": True}


def serial_cycles(run_dir: Path, serial: int) -> int:
    """Cycles per sample of the digit-serial da4ml design by the cost model's count (`da_serial_cycles`)."""
    from opq_hw import cost
    from opq_hw.cost.rtl import da_serial_cycles
    from opq_hw.run import load_run

    run = load_run(run_dir)
    return da_serial_cycles(cost.network_params(run.specs, run.allocation, run.config.get("act_bits", 8)), serial)


def report(works: list[Path], base: dict | None = None) -> dict:
    """The results of the jobs in `works` (each WORK/jobs/*.json), over `base`'s designs (the
    committed JSON, with --merge) where a job is not rerun."""
    designs = dict((base or {}).get("designs", {}))
    for work in works:
        for f in sorted((work / "jobs").glob("*.json")):
            rec = read_json(f)
            if rec.get("error"):  # no machine paths in the committed results
                rec["error"] = re.sub(r" \(this build is in [^)]*\)", "", rec["error"])
            rec["metrics"] = metrics(rec)
            if rec.get("serial"):  # the LUT/FF of digit-serial layers are not modelled, their cycles are
                rec["metrics"]["cost_model_cycles"] = serial_cycles(work / "runs" / rec["run"], rec["serial"])
            else:
                rec["metrics"]["cost_model_weight_agnostic"] = model_estimate(work / "runs" / rec["run"], rec["arch"],
                                                                              rec["board"])
            designs[rec["job"]] = rec
    designs = dict(sorted(designs.items(), key=lambda kv: (list(MODELS).index(kv[1]["model"]), kv[1]["arch"] != "seq",
                                                           kv[1]["fam"], kv[1].get("serial", 0),
                                                           kv[1]["variant"] != "opq", kv[0])))
    res = {"designs": designs, "goal_da4ml_lut_ratio": GOAL_DA}
    res["ratios"] = ratios(res)
    return res


def _fmt(v, nd=0) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def markdown(res: dict) -> str:
    hdr = ("| model | design | arch | part | weight bits | nonzero | LUT-equiv | FF | DSP | BRAM | cycles/sample | Fmax MHz | "
           "samples/s | bit-exact | accuracy | synth s |\n|" + "---|" * 16)
    lines = ["# Hardware payoff: OPQ 20x vs dense 8-bit, same network, same part", "",
             "Written by benchmarks/hw_payoff.py. LUT-equivalents: ECP5 LUT4 + 2 x CCU2C, iCE40 SB_LUT4. "
             "Shared 2-core machine; Yosys and nextpnr under wall-clock limits.", "", hdr]
    for jid, r in res["designs"].items():
        m = r["metrics"]
        lut = _fmt(m["lut_equiv"])
        if m["lut_equiv"] is None and lut_estimate(m)[0]:
            lut = f"(est. {lut_estimate(m)[0]:,})"
        elif m.get("lut_basis"):
            lut += " †"
        lines.append(f"| {r['model']} | {LABELS[r['variant']]} | "
                     f"{arch_label(r['arch'], r.get('serial', 0), r['pipeline'])}"
                     f"{f' [{tg}]' if (tg := r.get('tag')) in TAG_NOTES else ''} | {r['board']} | "
                     f"{'/'.join(map(str, m['w_bits']))} | {_fmt(m['nonzero'])} | {lut} | {_fmt(m['ff'])} | "
                     f"{_fmt(m['dsp'])} | {_fmt(m['bram'])} | {_fmt(m['cycles_per_sample'])} | {_fmt(m['fmax_mhz'], 1)} | "
                     f"{_fmt(m.get('samples_per_s'))} | {m['bit_exact'] or '-'} | "
                     f"{'-' if m['accuracy'] is None else format(m['accuracy'] * 100, '.2f') + '%'} | {_fmt(m['synth_s'])} |")
    if any(r["metrics"].get("lut_basis") for r in res["designs"].values()):
        lines += ["", "† whole-design Yosys run did not finish in its limit: the sum of the layer modules, each "
                      "synthesized alone (window/collector, da4ml kernel, requantizer; the pools and the output "
                      "serializer, a few hundred LUTs, not counted). (est.): not synthesized, the cost model's figure."]
    tags = sorted({r.get("tag") for r in res["designs"].values()} & set(TAG_NOTES))
    if tags:
        lines += [""] + [f"[{t}]: {TAG_NOTES[t]}." for t in tags]
    lines += ["", "Ratios dense / OPQ (> 1: OPQ smaller or faster):", "",
              "| model | arch | part | LUT-equiv | FF | DSP | BRAM | cycles/sample | samples/s (OPQ/dense) | goal |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["ratios"]:
        g = r.get("goal")
        gs = "-" if not g else (f"{'met' if g['met'] else 'missed' if g['met'] is False else 'unknown'} "
                                f"({_fmt(g['value'], 2)}x; {g['basis']})")
        lut = _fmt(r["lut_equiv"], 2) + (" (est.)" if r.get("lut_equiv_estimated") and r["lut_equiv"] else "")
        lines.append(f"| {r['model']} | {arch_label(r['arch'], r.get('serial', 0))} | {r['board']} | {lut} | {_fmt(r['ff'], 2)} | "
                     f"{_fmt(r['dsp'], 2)} | {_fmt(r['bram'], 2)} | {_fmt(r['cycles_per_sample'], 2)} | "
                     f"{_fmt(r['throughput'], 2)} | {gs} |")
    notes = []
    for jid, r in res["designs"].items():
        m = r["metrics"]
        if m.get("not_measured"):
            notes.append(f"- {jid}: whole design not synthesized: {m['not_measured']}"
                         + (" (a wall-clock limit at nice 10 on the loaded shared machine, see benchmarks/README)"
                            if "did not finish" in m["not_measured"] else ""))
        if m.get("pnr_error"):
            tr = r.get("pnr", {}).get("trace", {})
            it = tr.get("router2_iterations", [])
            last = f"; router2 last iteration {it[-1]}" if it else ""
            notes.append(f"- {jid}: place and route: {m['pnr_error']}{last}")
    if notes:
        lines += ["", "Not measured / not routed:", ""] + notes
    routed = [f"- {jid}: {r['pnr']['wall_s']:,.0f} s wall, {r['pnr']['cpu_s']:,.0f} CPU-s (nextpnr "
              f"{' '.join(r['pnr'].get('nextpnr_args') or []) or 'default options'}; "
              + ", ".join(tr for tr in r["pnr"].get("trace", {}).get("phases", []) if "time" in tr.lower())
              + f"), Fmax {r['metrics']['fmax_mhz']:.1f} MHz"
              for jid, r in res["designs"].items() if r.get("pnr", {}).get("ok") and r["pnr"].get("wall_s")]
    if routed:
        lines += ["", "Place and route times (nice 10 on the shared machine: wall includes waiting for a core; "
                      "nextpnr is single-threaded, so CPU-s is about its time on an idle core):", ""] + routed
    return "\n".join(lines) + "\n"


def plot(res: dict, path: Path) -> None:
    """Bars per design (model x arch x part) and metric, OPQ beside dense 8-bit (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    keys = [(m, a, f, s) for m in MODELS for a, f, s in ARCH_KEYS]
    keys = [k for k in keys if job_id(k[0], "opq", k[1], k[2], 0, k[3]) in res["designs"]]
    mets = [("LUT-equivalents", "lut_equiv"), ("FF", "ff"), ("DSP", "dsp"), ("block RAM", "bram"),
            ("cycles per sample", "cycles_per_sample")]
    fig, axes = plt.subplots(1, len(mets), figsize=(4 * len(mets), 4.2))
    x = np.arange(len(keys))
    for ax, (title, k) in zip(axes, mets):
        for off, (v, col, lab) in zip((-0.2, 0.2), (("opq", "tab:green", "OPQ 20x"), ("dense8", "tab:gray", "dense 8-bit"))):
            vals, hatch = [], []
            for key in keys:
                r = res["designs"].get(job_id(key[0], v, key[1], key[2], 0, key[3]))
                mm = r["metrics"] if r else {}
                val = mm.get(k)
                est = False
                if val is None and k == "lut_equiv" and lut_estimate(mm)[0]:
                    val, est = lut_estimate(mm)[0], True
                vals.append(val or 0)
                hatch.append(est)
            bars = ax.bar(x + off, vals, 0.4, color=col, label=lab)
            for b, h, val in zip(bars, hatch, vals):
                if h:
                    b.set_hatch("//")
                    b.set_alpha(0.5)
                if val:
                    ax.text(b.get_x() + b.get_width() / 2, val, f"{val:,.0f}" + ("*" if h else ""), ha="center",
                            va="bottom", fontsize=6, rotation=90)
        ax.set_yscale("symlog" if k == "dsp" else "log")
        ax.set_title(title)
        ax.set_xticks(x, ["\n".join([m, *arch_label(a, s).split(), BOARDS[f]]) for m, a, f, s in keys], fontsize=7)
    axes[0].legend(fontsize=8)
    goal = [r for r in res["ratios"] if r.get("goal")]
    gtxt = "; ".join(f"{r['model']} {arch_label(r['arch'], r.get('serial', 0))} {_fmt(r['goal']['value'], 2)}x "
                     f"({'met' if r['goal']['met'] else 'missed'})" for r in goal)
    fig.suptitle(f"OPQ 20x vs dense 8-bit, open RTL flow (* hatched: cost-model estimate, not synthesized). "
                 f"Goal >= {GOAL_DA:g}x fewer LUTs unrolled: {gtxt}", fontsize=9)
    fig.tight_layout()
    write_png(path, fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, action="append", help="folder for the runs, the per-job results and nextpnr "
                                                                "logs (--report: repeat it to merge several)")
    ap.add_argument("--jobs", default="", help=f"comma-separated job ids (default all): {','.join(all_jobs())}; "
                                               f"append -pN to a da4ml job for --pipeline N")
    ap.add_argument("--epochs", type=int, default=2, help="finetune epochs of both compressions")
    ap.add_argument("--synth-timeout", type=float, default=900, help="Yosys wall-clock limit, s")
    ap.add_argument("--pnr-timeout", type=float, default=600, help="nextpnr wall-clock limit, s")
    ap.add_argument("--n-sim", type=int, help="test samples through Verilator (default all; seq designs of "
                                               "mnist1d take ~1e5 cycles per sample)")
    ap.add_argument("--no-pnr", action="store_true")
    ap.add_argument("--no-synth", action="store_true", help="stop after the Verilog (+ simulation): da4ml's and the "
                                                            "cost model's estimates only")
    ap.add_argument("--no-sim", action="store_true", help="skip the Verilator check")
    ap.add_argument("--layer-synth", action="store_true",
                    help="da4ml designs whose whole-design Yosys run did not finish: synthesize each layer module "
                         "alone (with --pnr-only: on the run's existing build)")
    ap.add_argument("--pnr-only", action="store_true", help="place and route the run's existing build again (a tagged "
                                                            "job id, e.g. ...-da4ml-ecp5-r2, keeps both results)")
    ap.add_argument("--pnr-args", default="", help="more nextpnr options, e.g. '--router router2'")
    ap.add_argument("--freq", type=float, help="nextpnr target MHz (default: the board's clock)")
    ap.add_argument("--report", action="store_true", help="assemble the results from --work/jobs")
    ap.add_argument("--replot", action="store_true", help="only redraw PNG + markdown from the committed JSON")
    ap.add_argument("--merge", action="store_true", help="--report: keep the committed JSON's designs that "
                                                         "--work has no job for")
    args = ap.parse_args()
    if args.replot:
        res = read_json(OUT / "hw_payoff.json")
    else:
        if args.work is None:
            ap.error("--work is required (unless --replot)")
        if not args.report:
            work = args.work[0]
            for jid in [j for j in args.jobs.split(",") if j] or all_jobs():
                print(f"== {jid}", flush=True)
                rec = run_job(jid, work, args)
                write_json(work / "jobs" / f"{jid}.json", rec)
                print(json.dumps(metrics(rec)), flush=True)
            return
        res = report(args.work, read_json(OUT / "hw_payoff.json") if args.merge else None)
        write_json(OUT / "hw_payoff.json", res)
    plot(res, OUT / "hw_payoff.png")
    md = markdown(res)
    write_bytes(OUT / "hw_payoff.md", md.encode())
    print(md)


if __name__ == "__main__":
    main()
