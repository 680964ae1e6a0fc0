"""hls4ml C-simulation benchmark on the OPQ-compressed digits CNN (pow2 mode).

For each (backend, io type): conversion and g++ compile time, size of the generated project,
C-sim throughput over the test split (samples/s), bit-exactness against the Brevitas model; next
to the PyTorch (Brevitas) reference throughput on the same machine, batch 1 and batched, and
the QONNX executor. Writes `benchmarks/results/csim_benchmark.json` and `.png`.

    python benchmarks/csim_benchmark.py [--run RUN_DIR] [--configs Vitis:parallel,Vitis:stream]

Without --run a run is compressed first (digits-cnn, OPQ 20x CR_w, pow2, 2 finetune epochs),
in a temporary folder.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from opq_hw.artifact import write_json, write_png  # noqa: E402


def _rate(fn, n_samples: int, min_s: float = 2.0) -> tuple[float, float, int]:
    """(wall-clock samples/s, CPU-time samples/s, repetitions) of `fn` (which processes `n_samples`),
    repeated until `min_s` wall seconds have passed. CPU time (this process) is what the figure
    would be on an idle core; wall time is what this shared machine gave."""
    reps, t0, c0 = 0, time.perf_counter(), time.process_time()
    while True:
        fn()
        reps += 1
        dt = time.perf_counter() - t0
        if dt >= min_s:
            return reps * n_samples / dt, reps * n_samples / max(time.process_time() - c0, 1e-9), reps


def _dir_size(p: Path) -> tuple[int, int]:
    files = [f for f in p.rglob("*") if f.is_file()]
    return sum(f.stat().st_size for f in files), len(files)


def plot(record: dict, path: Path) -> None:
    """C-sim samples/s (CPU time) per configuration against the 1,000/s goal and the Brevitas reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = record["csim"]
    names = [f"{r['backend']}\n{r['io_type']}" for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.bar(names, [r["csim_cpu_sps"] for r in rows], color="tab:blue", label="hls4ml C-sim (CPU time)")
    ax.axhline(1000, color="tab:red", ls="--", label="goal 1,000/s")
    ax.axhline(record["reference"]["brevitas_batch1_cpu_sps"], color="tab:gray", ls=":", label="Brevitas, batch 1")
    ax.set_ylabel("samples/s")
    ax.set_title(f"digits-cnn C simulation, {record['n_test_samples']} test samples, all bit-exact: "
                 f"{all(r['bit_exact'] for r in rows)}", fontsize=9)
    ax.legend(fontsize=8)
    write_png(path, fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", help="an existing pow2 run directory (default: compress digits-cnn first)")
    ap.add_argument("--configs", default="Vitis:parallel,Vitis:stream,Vivado:parallel,Vivado:stream",
                    help="comma-separated backend:io pairs")
    ap.add_argument("--min-seconds", type=float, default=2.0, help="minimum timing window per throughput figure")
    ap.add_argument("--out", default=str(HERE / "results" / "csim_benchmark.json"))
    args = ap.parse_args(argv)

    import torch

    from opq_hw.flows.hls4ml_flow import compile_csim, predict_csim
    from opq_hw.pipeline import CompressConfig, compress_run, quantize_input
    from opq_hw.run import load_run
    from opq_hw.simulate import _run_qonnx, compare, output_lsb, reference

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="opq-csim-bench-"))
    try:
        if args.run:
            run_dir = Path(args.run)
            run_desc = "given run"
        else:
            cfg = CompressConfig(model="digits-cnn", data="digits", target_cr=20, epochs=2, seed=0)
            t0 = time.perf_counter()
            run_dir = compress_run(cfg, tmp / "run", progress=False, log=lambda *_: None)
            run_desc = f"digits-cnn, OPQ {cfg.target_cr}x CR_w, {cfg.scale_mode}, {cfg.epochs} finetune epochs " \
                       f"(compressed in {time.perf_counter() - t0:.1f} s)"
        run = load_run(run_dir)
        x, y = run.test_data()
        x_q = quantize_input(run, x)
        n = len(x_q)
        ref = reference(run, x_q)
        lsb = output_lsb(run, x_q)

        def torch_batch1():
            with torch.no_grad():
                for i in range(n):
                    run.qmodel(torch.as_tensor(x_q[i:i + 1]))

        rb, rb_cpu, _ = _rate(lambda: reference(run, x_q), n, args.min_seconds)
        r1, r1_cpu, _ = _rate(torch_batch1, n, args.min_seconds)
        ref_rates = {"brevitas_batched_sps": round(rb, 1), "brevitas_batched_cpu_sps": round(rb_cpu, 1),
                     "brevitas_batch1_sps": round(r1, 1), "brevitas_batch1_cpu_sps": round(r1_cpu, 1),
                     "torch_threads": 1}
        t0 = time.perf_counter()
        yq = _run_qonnx(run, x_q)
        ref_rates["qonnx_batched_sps"] = round(n / (time.perf_counter() - t0), 1)
        ref_rates["qonnx_bit_exact"] = compare(ref, yq, lsb)["bit_exact"]

        results = []
        for pair in args.configs.split(","):
            backend, io = pair.split(":")
            out_dir = tmp / f"{backend}_{io}"
            hm, info = compile_csim(run, out_dir, backend=backend, io=io)
            size, files = _dir_size(out_dir)
            t0 = time.perf_counter()
            yh = predict_csim(hm, x_q)
            first_pass = time.perf_counter() - t0
            rate, rate_cpu, reps = _rate(lambda: predict_csim(hm, x_q), n, args.min_seconds)
            cmp = compare(ref, yh, lsb)
            results.append({
                "backend": backend, "io_type": info["io_type"], "convert_s": info["convert_s"],
                "compile_s": info["compile_s"], "project_bytes": size, "project_files": files,
                "csim_sps": round(rate, 1), "csim_cpu_sps": round(rate_cpu, 1),
                "csim_first_pass_sps": round(n / first_pass, 1), "timing_reps": reps,
                "bit_exact": cmp["bit_exact"], "exact_samples": cmp["exact_samples"], "n": cmp["n"],
                "max_diff_lsb": cmp["max_diff_lsb"], "accuracy": float(np.mean(yh.argmax(1) == y)),
                "weight_precisions": {r["layer"]: r["weight_precision"] for r in info["layers"]},
                "alloc_bits": {r["layer"]: r["alloc_bits"] for r in info["layers"]},
                "goal_1000_sps_met": max(rate, rate_cpu) >= 1000,
            })
            print(f"{backend:7s} {info['io_type']:12s} compile {info['compile_s']:6.1f} s  project {size / 1e6:5.2f} MB  "
                  f"csim {rate:8.1f} samples/s (CPU time: {rate_cpu:7.1f}/s)  bit-exact {cmp['bit_exact']} ({cmp['exact_samples']}/{n})")
        print(f"reference: {ref_rates}")
        load = os.getloadavg()
        record = {
            "benchmark": "hls4ml C simulation vs PyTorch/Brevitas reference",
            "run": run_desc, "n_test_samples": n, "ref_accuracy": float(np.mean(ref.argmax(1) == y)),
            "reference": ref_rates, "csim": results,
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                        "loadavg_at_end": [round(v, 2) for v in load],
                        "note": "shared machine: other jobs ran at the same time, so times are upper bounds"},
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        write_json(args.out, record)
        plot(record, Path(args.out).with_suffix(".png"))
        print(f"written {Path(args.out).relative_to(HERE.parent) if Path(args.out).is_relative_to(HERE.parent) else args.out}")
        return 0 if all(r["bit_exact"] for r in results) and ref_rates["qonnx_bit_exact"] else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
