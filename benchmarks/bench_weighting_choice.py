"""How OPQ's default (layer weighting x error model) was chosen: one-shot accuracy on training data.

The allocation is data-free; choosing its default on the test sets would tune on them. So the
candidates (magnitude masks; weighting relative / mean / total x error model exact / exact-gain)
and the baselines are compared by one-shot top-1 accuracy on the first 2,000 *training* samples
of digits and MNIST-1D (pre-trained models, seed 0, pow2 scales, 8-bit activations). The models
were trained on these samples, so the accuracies are higher than on the test sets; only the
ranking is used. Writes benchmarks/results/weighting_choice.json (about a minute).

Run:  python benchmarks/bench_weighting_choice.py
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import torch  # noqa: E402

from opq_hw.artifact import write_json  # noqa: E402

SETS = {"digits": ("digits-cnn", [5, 10, 20, 30, 40]), "mnist1d": ("mnist1d-cnn", [5, 10, 20, 40])}
N_TRAIN_EVAL = 2000


def main() -> None:
    torch.set_num_threads(1)
    from opq_hw.allocation import allocate
    from opq_hw.carrier import ActConfig, apply
    from opq_hw.errors import OpqError
    from opq_hw.layers import inspect_model, layer_weights
    from opq_hw.pipeline import dataset_for, pretrained
    from opq_hw.training import accuracy

    t0 = time.perf_counter()
    cfgs = {f"opq-{wt}-{em}": dict(method="opq", weighting=wt, error_model=em)
            for wt in ("relative", "mean", "total") for em in ("exact", "exact-gain")}
    cfgs["global-magnitude"] = dict(method="global-magnitude", weighting="mean")
    cfgs["per-channel"] = dict(method="per-channel", weighting="mean")
    for b in range(2, 9):
        cfgs[f"uniform-{b}"] = dict(method="uniform", uniform_bits=b, weighting="mean")
    res = {}
    for ds, (name, crs) in SETS.items():
        model = pretrained(name, seed=0)
        model.eval()
        xtr, ytr, xte, _ = dataset_for(ds, name)
        specs = inspect_model(model, torch.as_tensor(xte[:1]))
        weights = layer_weights(model, specs)
        for cr in crs:
            row = {}
            for label, kw in cfgs.items():
                try:
                    alloc = allocate(specs, weights, target_cr=cr, scale_mode="pow2", **kw)
                except OpqError:
                    continue
                torch.manual_seed(0)
                q = apply(model, specs, alloc, ActConfig(bits=8, scale_mode="pow2"), calib=torch.as_tensor(xtr[:512]))
                row[label] = round(accuracy(q, xtr[:N_TRAIN_EVAL], ytr[:N_TRAIN_EVAL]) * 100, 2)
            uni = {k: v for k, v in row.items() if k.startswith("uniform-")}
            row = {k: v for k, v in row.items() if not k.startswith("uniform-")}
            row["uniform-best"] = max(uni.values())
            best_base = max(row[k] for k in ("global-magnitude", "per-channel", "uniform-best"))
            res[f"{ds}|{cr}"] = {"train_acc_oneshot": row, "best_baseline": best_base}
            print(ds, cr, row, flush=True)
    opq = sorted(k for k in next(iter(res.values()))["train_acc_oneshot"] if k.startswith("opq-"))
    worst = {k: round(min(r["train_acc_oneshot"][k] - r["best_baseline"] for r in res.values()), 2) for k in opq}
    write_json(HERE / "results" / "weighting_choice.json",
               {"benchmark": "weighting_choice", "eval": f"first {N_TRAIN_EVAL} training samples, one-shot",
                "results": res, "worst_margin_vs_best_baseline_points": worst,
                "runtime_s": round(time.perf_counter() - t0, 1)})
    print("worst margin vs the best baseline (points):", worst)


if __name__ == "__main__":
    main()
