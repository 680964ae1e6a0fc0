"""Cost of `compress --epochs 0` + `estimate` on ResNet-50: CPU seconds, wall seconds and peak RSS per step.

The goal (issue 15): `opq-hw compress --model opq_hw.zoo:resnet50 --input-shape 3,224,224 --target-cr 38
--epochs 0` and `opq-hw estimate` within 60 s and 4 GB on the 2-core machine. The machine is shared
(load 6-10), so the goal is judged on CPU seconds (process time: user + system, all threads), which
other processes do not inflate; wall seconds are recorded beside them.

Each measurement runs in a fresh Python process (a cold start, nothing cached in memory). Per step of
`opq_hw.pipeline.compress_run` (and for `estimate`): CPU seconds (`time.process_time`), wall seconds and
the peak RSS reached during the step (the kernel's VmHWM, reset before each step by writing 5 to
/proc/self/clear_refs; where that is refused, the process's peak so far). `--profile STEP[,STEP]` also writes a
cProfile of those steps (the top functions by cumulative time) into the result.

Run:  python benchmarks/bench_compress_cost.py [--profile apply] [--out NAME]
Writes benchmarks/results/compress_cost.json (atomically).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
RESULTS = HERE / "results"
GOAL_CPU_S, GOAL_RSS_GB = 60.0, 4.0
ARGS = dict(model="opq_hw.zoo:resnet50", input_shape=(3, 224, 224), target_cr=38.0, epochs=0)
BOARD, ARCH = "alveo-u250", "finn-mvau"


def _hwm_mb() -> float:
    from bench_allocation import _status_kib  # imported late: the worker's import row counts torch's import

    return _status_kib("VmHWM") / 1024


def _measured(name: str, fn, rows: list, profile: str | None, profiles: dict):
    def run(*a, **k):
        from bench_allocation import _reset_peak

        reset = _reset_peak()
        prof = None
        if profile in (name, "all") or name in (profile or "").split(","):
            import cProfile

            prof = cProfile.Profile()
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            return prof.runcall(fn, *a, **k) if prof else fn(*a, **k)
        finally:
            rows.append({"step": name, "cpu_s": round(time.process_time() - c0, 2),
                         "wall_s": round(time.perf_counter() - t0, 2), "peak_rss_MB": round(_hwm_mb(), 1),
                         "peak_is_per_step": reset})
            print(rows[-1], file=sys.stderr, flush=True)
            if prof is not None:
                import io
                import pstats

                s = io.StringIO()
                pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(40)
                profiles[name] = s.getvalue()
    return run


def worker(out_json: str, profile: str | None, model: str, input_shape: tuple[int, ...]) -> None:
    """In this (fresh) process: compress + estimate, every step measured; the record to `out_json`."""
    t_start, c_start = time.perf_counter(), time.process_time()
    sys.path.insert(0, str(ROOT))
    import dataclasses

    import torch

    from opq_hw import pipeline
    from opq_hw.report import estimate_run

    rows: list[dict] = []
    profiles: dict[str, str] = {}
    import_row = {"step": "import", "cpu_s": round(time.process_time() - c_start, 2),
                  "wall_s": round(time.perf_counter() - t_start, 2), "peak_rss_MB": round(_hwm_mb(), 1)}
    pipeline.COMPRESS_STEPS = [dataclasses.replace(s, fn=_measured(s.name, s.fn, rows, profile, profiles))
                               for s in pipeline.COMPRESS_STEPS]
    cfg = pipeline.CompressConfig(**{**ARGS, "model": model, "input_shape": input_shape})
    with tempfile.TemporaryDirectory() as d:
        run = Path(d) / "run"
        pipeline.compress_run(cfg, run, progress=False, log=lambda *_: None)
        _measured("estimate", estimate_run, rows, profile, profiles)(run, board=BOARD, arch=ARCH)
        digests = {n: json.loads((run / "manifest.json").read_text())["artifacts"].get(n)
                   for n in ("allocation.json", "golden_output.npy", "golden_input.npy", "weights.pt", "model.qonnx.onnx")}
        qonnx_MB = (run / "model.qonnx.onnx").stat().st_size / 2 ** 20
    rec = {"steps": [import_row] + rows, "process_cpu_s": round(time.process_time() - c_start, 2),
           "process_wall_s": round(time.perf_counter() - t_start, 2), "process_peak_rss_MB": None,
           "torch_threads": torch.get_num_threads(), "digests": digests, "qonnx_MB": round(qonnx_MB, 1),
           "profiles": profiles}
    Path(out_json).write_text(json.dumps(rec))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default=None, help="cProfile these steps (comma-separated: load, inspect, allocate, apply, "
                                                     "export, golden, write, estimate; or all)")
    ap.add_argument("--out", default="compress_cost.json", help="file name under benchmarks/results/")
    ap.add_argument("--model", default=ARGS["model"], help="another model, for a quick look (the goal is ResNet-50's)")
    ap.add_argument("--input-shape", default="3,224,224")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    shape = tuple(int(v) for v in args.input_shape.split(","))
    if args.worker:
        worker(args.worker, args.profile, args.model, shape)
        return
    with tempfile.TemporaryDirectory() as d:
        rec_path = Path(d) / "rec.json"
        load0 = os.getloadavg()[0]
        subprocess.run([sys.executable, __file__, "--worker", str(rec_path), "--model", args.model, "--input-shape",
                        args.input_shape] + (["--profile", args.profile] if args.profile else []), check=True, cwd=ROOT)
        rec = json.loads(rec_path.read_text())
    # the child's whole-life peak: the largest of its steps' (the kernel's own count, ru_maxrss, is the
    # high-water mark that each step's reset cleared, so it holds only the last steps' peak)
    rec["process_peak_rss_MB"] = max(r["peak_rss_MB"] for r in rec["steps"])
    work = [r for r in rec["steps"] if r["step"] != "import"]
    cpu = sum(r["cpu_s"] for r in work)
    rec.update(what=f"opq-hw compress --model {args.model} --input-shape {args.input_shape} --target-cr 38 --epochs 0, then "
                    f"estimate --board {BOARD} --arch {ARCH}; one fresh process; CPU s = process time (all threads)",
               compress_estimate_cpu_s=round(cpu, 1), compress_estimate_wall_s=round(sum(r["wall_s"] for r in work), 1),
               goal={"cpu_s": GOAL_CPU_S, "peak_rss_GB": GOAL_RSS_GB},
               met={"cpu_s": cpu <= GOAL_CPU_S, "peak_rss_GB": rec["process_peak_rss_MB"] / 1024 <= GOAL_RSS_GB},
               load_avg_start=load0, load_avg_end=os.getloadavg()[0], cpus=os.cpu_count())
    sys.path.insert(0, str(ROOT))
    from opq_hw.artifact import write_json

    write_json(RESULTS / args.out, rec)
    for r in rec["steps"]:
        print(f"{r['step']:<10}{r['cpu_s']:>9.1f} CPU-s{r['wall_s']:>9.1f} s wall{r['peak_rss_MB']:>10.0f} MB")
    print(f"compress + estimate: {cpu:.1f} CPU-s (goal {GOAL_CPU_S:.0f}), peak RSS "
          f"{rec['process_peak_rss_MB'] / 1024:.2f} GB (goal {GOAL_RSS_GB:.0f}); load {load0:.1f} -> {rec['load_avg_end']:.1f}")
    for name, text in rec["profiles"].items():
        print(f"--- cProfile {name}\n{text}")
    print(f"wrote {RESULTS / args.out}")


if __name__ == "__main__":
    main()
