"""Distributed finetuning throughput: samples/s of `opq-hw finetune RUN --nproc N` for N = 1 and 2.

One compressed run per case (OPQ 20x CR_w, pow2, 8-bit activations, no finetune at compress), then
per repeat, interleaved, a finetune of a fresh copy with 1 process and one with 2 (gloo, CPU, the
same global batch and seed). Three rates per finetune: `train` = epochs x training samples / the
training loop's seconds (rank 0's clock, recorded in the manifest's `finetunes`); `wall` = the same
samples / the whole command (process start, torch import, loading and writing the run included);
`cpu` = the same samples / rank 0's CPU seconds in the training loop (what the loop would take
with a core to itself per process: less sensitive to the other sessions' load; communication shows
here only as the CPU it costs). The ratio 2-process / 1-process is the median over repeats,
measured in one run (the machine is shared: absolute numbers move with its load, the ratio less).

Run:  python benchmarks/bench_ddp.py [--epochs 3 --repeats 2 --batch 64,256]
Writes benchmarks/results/ddp.json (atomically).
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from opq_hw.artifact import write_json  # noqa: E402

RESULTS = HERE / "results"
CASES = [("digits-cnn", "digits"), ("mnist1d-cnn", "mnist1d")]
RATES = ("train_samples_per_s", "cpu_samples_per_s", "wall_samples_per_s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch", default="64,256", help="global batch sizes, comma-separated")
    ap.add_argument("--cases", default=",".join(m for m, _ in CASES))
    args = ap.parse_args()

    import torch

    from opq_hw.ddp import FinetuneOptions
    from opq_hw.ddp_launch import finetune_run
    from opq_hw.pipeline import CompressConfig, compress_run

    torch.set_num_threads(1)
    cases = [c for c in CASES if c[0] in args.cases.split(",")]
    batches = [int(b) for b in args.batch.split(",")]
    out = {"what": __doc__.splitlines()[0], "epochs": args.epochs, "repeats": args.repeats,
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                       "load_avg_start": list(os.getloadavg())},
           "note": "2 CPU cores shared with other sessions; each process trains on one torch thread", "cases": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for model, data in cases:
            base = compress_run(CompressConfig(model=model, data=data, target_cr=20, epochs=0), tmp / f"{model}-base",
                                progress=False, log=lambda *_: None)
            for batch in batches:
                rows = {1: [], 2: []}
                for rep in range(args.repeats):
                    for n in (1, 2):
                        run = shutil.copytree(base, tmp / f"{model}-b{batch}-n{n}-r{rep}")
                        t0 = time.perf_counter()
                        rec = finetune_run(run, FinetuneOptions(epochs=args.epochs, batch_size=batch), nproc=n,
                                           log=lambda *_: None)
                        wall = time.perf_counter() - t0
                        samples = args.epochs * rec["train_samples"]
                        rows[n].append({"train_samples_per_s": rec["samples_per_s"],
                                        "cpu_samples_per_s": round(samples / rec["train_cpu_seconds_rank0"], 1),
                                        "wall_samples_per_s": round(samples / wall, 1), "wall_s": round(wall, 2),
                                        "train_s": rec["train_seconds"], "loss": rec["history"][-1]})
                        print(f"{model} batch {batch} nproc {n} repeat {rep}: {rows[n][-1]}", flush=True)
                med = {n: {k: statistics.median(r[k] for r in rows[n]) for k in RATES} for n in rows}
                out["cases"].append({"model": model, "data": data, "batch": batch, "runs": rows, "median": med,
                                     "ratio_2_over_1": {k: round(med[2][k] / med[1][k], 3) for k in med[1]}})
                print(f"{model} batch {batch}: 2/1 processes = {out['cases'][-1]['ratio_2_over_1']}", flush=True)
    out["machine"]["load_avg_end"] = list(os.getloadavg())
    write_json(RESULTS / "ddp.json", out)
    print(f"wrote {RESULTS / 'ddp.json'}")


if __name__ == "__main__":
    main()
