"""Estimated vs measured resources, per metric, wherever a measurement exists in this workplace.

1. finn-mvau vs FINN's own MVAU estimates (FINN's code, run in the FINN environment `.venv-finn`
   through benchmarks/finn_reference.py): the demo model's layers over a grid of PE/SIMD foldings,
   resType auto/dsp and ram_style auto/distributed. Goal: exact LUT, BRAM18, URAM, DSP, cycles.
2. rtl-da's kernel term on real weights: per layer of a run, the cost model's estimate of da4ml's
   cost vs da4ml's own solution and, with --synth, Yosys `synth_ecp5` / `synth_ice40` cell counts of
   the da4ml kernel (LUT4 + 2 per CCU2C on ECP5; SB_LUT4 on iCE40). The whole layer modules are
   calibrated and held out in scripts/rtl_calibration.py.
3. hls4ml-latency / hls4ml-resource: no Vivado/Vitis HLS here, so no measurement: listed as such.

Usage:
  .venv/bin/python benchmarks/estimate_vs_synth.py [--run RUN_DIR] [--synth ecp5|ice40] [--timeout S]
Without --run the rtl-da part uses integer matrices drawn to the golden demo allocation's shapes,
bit widths and survivor counts (Laplace magnitudes, seed 0); with --run it uses the run's weights.
Writes benchmarks/results/estimate_vs_synth.json and .png.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from opq_hw.artifact import write_json, write_png  # noqa: E402
from opq_hw.boards import load_board  # noqa: E402
from opq_hw.cost import (choose_folding, da4ml_cost_estimate, divisors, finn_mvau, layer_params,  # noqa: E402
                         rtl_calibration)
from opq_hw.spec import Allocation, LayerSpec  # noqa: E402

GOLDEN = ROOT / "tests" / "golden"
METRICS_FINN = ("LUT", "BRAM18", "URAM", "DSP", "cycles")


def golden():
    specs = [LayerSpec.from_dict(d) for d in json.loads((GOLDEN / "demo_specs.json").read_text())]
    return specs, Allocation.from_dict(json.loads((GOLDEN / "demo_allocation.json").read_text()))


def finn_dtype(bits: int, signed: bool) -> str:
    return f"{'INT' if signed else 'UINT'}{bits}"


def finn_part(finn_python: Path) -> dict:
    specs, alloc = golden()
    cases = []
    folds = [choose_folding(specs, alloc, b, "finn-mvau") for b in ("pynq-z2", "zcu104")]
    for i, s in enumerate(specs):
        la = alloc.layer(s.name)
        p = layer_params(s, la, i, 8)
        grid = {(1, 1), (p.out_channels, p.fan_in)} | {(f[s.name]["pe"], f[s.name]["simd"]) for f in folds}
        pes, simds = divisors(p.out_channels), divisors(p.fan_in)
        grid |= {(pes[len(pes) // 2], simds[len(simds) // 2]), (pes[-2] if len(pes) > 1 else 1, simds[1] if len(simds) > 1 else 1)}
        for pe, simd in sorted(grid):
            for res_type in ("auto", "dsp"):
                for ram_style in ("auto", "distributed"):
                    cases.append((s.name, p, pe, simd, res_type, ram_style))
    cfgs = [{"MW": p.fan_in, "MH": p.out_channels, "PE": pe, "SIMD": simd, "idt": finn_dtype(p.a_bits, p.a_signed),
             "wdt": finn_dtype(p.w_bits, True), "vecs": [1] if p.out_pixels == 1 else [1, p.out_pixels],
             "res_type": rt, "ram_style": rs} for _, p, pe, simd, rt, rs in cases]
    t = time.time()
    proc = subprocess.run([str(finn_python), str(ROOT / "benchmarks" / "finn_reference.py")], input=json.dumps(cfgs),
                          capture_output=True, text=True, timeout=900)
    if proc.returncode:
        raise SystemExit(f"FINN reference failed:\n{proc.stderr[-2000:]}")
    ref = json.loads(proc.stdout)
    board = load_board("pynq-z2")
    rows = []
    for (name, p, pe, simd, rt, rs), r in zip(cases, ref):
        ours = finn_mvau(p, board, pe=pe, simd=simd, res_type=rt, ram_style=rs)
        row = {"layer": name, "pe": pe, "simd": simd, "res_type": rt, "ram_style": rs}
        for m in METRICS_FINN:
            row[m] = {"estimated": int(round(float(ours[m]))), "finn": int(r[m])}
        rows.append(row)
    summary = {}
    for m in METRICS_FINN:
        est = np.array([r[m]["estimated"] for r in rows], float)
        ref_ = np.array([r[m]["finn"] for r in rows], float)
        rel = np.abs(est - ref_) / np.maximum(ref_, 1)
        summary[m] = {"n": len(rows), "exact": int((est == ref_).sum()), "max_rel_error": float(rel.max()),
                      "smape": float(np.mean(2 * np.abs(est - ref_) / np.maximum(est + ref_, 1)))}
    return {"reference": "FINN MVAU_hls estimates (" + _finn_version(finn_python) + ")", "seconds": round(time.time() - t, 1),
            "summary": summary, "cases": rows}


def _finn_version(py: Path) -> str:
    out = subprocess.run([str(py), "-c", "import importlib.metadata as m\nfor n in ('finn-plus','finn'):\n"
                          "    try:\n        print(n, m.version(n)); break\n    except Exception: pass"],
                         capture_output=True, text=True)
    return out.stdout.strip() or "unknown version"


# ------------------------------------------------------------------------------------------ rtl-da
def run_matrices(run_dir: Path | None):
    """(name, matrix (fan_in, out) int, in_bits, in_signed, spec, la, index) per layer."""
    specs, alloc = golden()
    if run_dir is not None:
        from opq_hw.run import load_run

        run = load_run(run_dir)
        specs, alloc = run.specs, run.allocation
        get = lambda s: run.int_weights(s.name).reshape(s.out_channels, -1).T  # noqa: E731
        source = "run weights"
    else:
        rng = np.random.default_rng(0)

        def get(s):
            la = alloc.layer(s.name)
            top = 2 ** (la.bits - 1) - 1
            n = s.n_weights
            mags = np.clip(np.ceil(rng.exponential(top / 3, la.n_nonzero)), 1, top)
            vals = mags * rng.choice([-1, 1], la.n_nonzero)
            flat = np.zeros(n)
            flat[rng.choice(n, la.n_nonzero, replace=False)] = vals
            return flat.reshape(s.out_channels, -1).T

        source = "synthetic Laplace-like integers at the golden allocation's shapes, bits and survivors (seed 0)"
    out = []
    for i, s in enumerate(specs):
        out.append((s.name, np.asarray(get(s), dtype=np.int64), 8, i == 0, s, alloc.layer(s.name), i))
    return out, source


def da4ml_kernel(M: np.ndarray, in_bits: int, signed: bool):
    from da4ml.codegen.rtl.verilog import comb_logic_gen
    from da4ml.trace import FixedVariableArrayInput, HWConfig, comb_trace
    from da4ml.trace.ops import quantize

    inp = FixedVariableArrayInput((M.shape[0],), hwconf=HWConfig(1, -1, -1))
    k = 1 if signed else 0
    x = quantize(inp, k, in_bits - k, 0)
    comb = comb_trace(inp, x @ M.astype(np.float64))
    return float(comb.cost), comb_logic_gen(comb, "kernel", print_latency=False, timescale=None)


def yosys_luts(verilog: str, family: str, timeout: float) -> dict | None:
    import da4ml.codegen.rtl as rtl

    srcs = [p for p in sorted((Path(rtl.__file__).parent / "verilog" / "source").glob("*.v")) if "lookup" not in p.name]
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "kernel.v").write_text(verilog)
        synth = "synth_ecp5" if family == "ecp5" else "synth_ice40"
        script = f"read_verilog {' '.join(str(s) for s in srcs)} kernel.v; {synth} -top kernel; stat"
        try:
            proc = subprocess.run(["yosys", "-p", script], capture_output=True, text=True, cwd=d, timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
    cells = {m.group(1): int(m.group(2)) for m in re.finditer(r"^\s+(\w+)\s+(\d+)\s*$", proc.stdout.split("Printing statistics")[-1], re.M)}
    if family == "ecp5":
        lut = cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0)
        ff = sum(v for k, v in cells.items() if k.startswith("TRELLIS_FF"))
    else:
        lut = cells.get("SB_LUT4", 0)
        ff = sum(v for k, v in cells.items() if k.startswith("SB_DFF"))
    return {"LUT": lut, "FF": ff, "cells": cells}


def rtl_part(run_dir, synth: str | None, timeout: float) -> dict:
    """The rtl-da kernel term on a real model's weights (the calibration layers of
    scripts/rtl_calibration.py are uniform random integers): da4ml's cost estimated from the CSD
    digits vs da4ml's own solution, and with --synth the kernel's Yosys LUTs vs lut_per_da x each."""
    layers, source = run_matrices(run_dir)
    fam = synth or "ecp5"
    board = load_board("ecp5-85f" if fam == "ecp5" else "ice40-up5k")
    cal = rtl_calibration(board.family)
    rows = []
    for name, M, in_bits, signed, s, la, i in layers:
        p = layer_params(s, la, i, 8, n_nonzero=int((M != 0).sum()))
        est = float(da4ml_cost_estimate(p, cal))
        t = time.time()
        cost, verilog = da4ml_kernel(M, in_bits, signed)
        row = {"layer": name, "nnz": int((M != 0).sum()), "bits": la.bits, "fan_in": M.shape[0], "out": M.shape[1],
               "da4ml_cost_estimated": round(est, 1), "da4ml_cost": cost, "da4ml_seconds": round(time.time() - t, 2),
               "kernel_LUT_estimated": int(round(cal["lut_per_da"] * est)),
               "kernel_LUT_from_da4ml_cost": int(round(cal["lut_per_da"] * cost))}
        if synth:
            t = time.time()
            y = yosys_luts(verilog, fam, timeout)
            row["yosys"] = y if y is None else {"LUT": y["LUT"], "FF": y["FF"]}
            row["yosys_seconds"] = round(time.time() - t, 1)
        rows.append(row)
        print(f"rtl-da {name}: da4ml cost est {est:.0f} actual {cost:.0f}" + (f" yosys {row['yosys']}" if synth else ""),
              flush=True)

    def err(pairs):
        e, m = np.array(pairs, float).T
        return {"n": len(pairs), "rel_errors": [float(v) for v in (e - m) / m], "mape": float(np.mean(np.abs(e - m) / m))}

    summ = {"da4ml_cost": err([(r["da4ml_cost_estimated"], r["da4ml_cost"]) for r in rows])}
    meas = [r for r in rows if r.get("yosys")]
    if meas:
        summ["kernel_LUT"] = err([(r["kernel_LUT_estimated"], r["yosys"]["LUT"]) for r in meas])
        summ["kernel_LUT_from_da4ml_cost"] = err([(r["kernel_LUT_from_da4ml_cost"], r["yosys"]["LUT"]) for r in meas])
    return {"weights": source, "board": board.name, "calibration": cal.get("provenance"),
            "note": "kernel only (the da4ml adder graph); the whole layer module (window/collector, requantization, "
                    "registers) against Yosys is in benchmarks/results/rtl_calibration.json",
            "summary": summ, "layers": rows}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    if "finn" in result:
        rows = result["finn"]["cases"]
        ax = axes[0]
        e = [r["LUT"]["estimated"] for r in rows]
        f = [r["LUT"]["finn"] for r in rows]
        ax.loglog(f, e, "o", ms=4)
        lo, hi = min(e + f), max(e + f)
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_xlabel("FINN's LUT estimate")
        ax.set_ylabel("opq_hw finn-mvau LUT")
        ax.set_title(f"finn-mvau vs FINN ({len(rows)} foldings)")
    rows = result["rtl"]["layers"]
    ax = axes[1]
    x = np.arange(len(rows))
    ax.bar(x - 0.25, [r["kernel_LUT_estimated"] for r in rows], 0.25, label="rtl-da kernel estimate")
    ax.bar(x, [r["kernel_LUT_from_da4ml_cost"] for r in rows], 0.25, label="from da4ml's cost")
    if any(r.get("yosys") for r in rows):
        ax.bar(x + 0.25, [r["yosys"]["LUT"] if r.get("yosys") else 0 for r in rows], 0.25, label="yosys LUT")
    ax.set_xticks(x, [r["layer"] for r in rows], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("LUT (kernel)")
    ax.set_title("rtl-da per layer")
    ax.legend(fontsize=8)
    write_png(path, fig, dpi=100)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, help="run directory whose integer weights feed the rtl-da comparison")
    ap.add_argument("--synth", choices=["ecp5", "ice40"], help="also synthesize each da4ml kernel with Yosys")
    ap.add_argument("--timeout", type=float, default=900, help="Yosys timeout per layer (s)")
    ap.add_argument("--finn-python", type=Path, default=ROOT / ".venv-finn" / "bin" / "python")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "estimate_vs_synth.json")
    args = ap.parse_args(argv)
    result: dict = {"hls4ml": "not measured: no Vivado/Vitis HLS in this workplace (hls4ml-latency and "
                              "hls4ml-resource coefficients are uncalibrated defaults)"}
    if args.finn_python.is_file():
        result["finn"] = finn_part(args.finn_python)
        print(json.dumps(result["finn"]["summary"], indent=1))
    else:
        result["finn"] = f"not measured: no FINN environment at {args.finn_python.name}"
    result["rtl"] = rtl_part(args.run, args.synth, args.timeout)
    print(json.dumps(result["rtl"]["summary"], indent=1))
    write_json(args.out, result)
    plot(result, args.out.with_suffix(".png"))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
