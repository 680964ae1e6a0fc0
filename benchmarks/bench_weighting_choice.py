"""How OPQ's default (layer weighting x error model) was chosen: one-shot accuracy on training data.

The allocation is data-free; choosing its default on the test sets would tune on them. So the
candidates (magnitude masks; weighting relative / mean / total x error model exact / exact-gain /
exact-gain-inner, and for exact-gain-inner the bound at the first and last layer: 2, the default,
or 1, no gain there) and the baselines are compared by one-shot top-1 accuracy on the first 2,000
*training* samples of digits, MNIST-1D, MNIST 28x28 and BasicMotions (all 40 of its training
samples) (pre-trained models, seed 0, pow2 scales, 8-bit activations), and, finer where the
accuracies tie, by the mean KL divergence of the compressed model's softmax from the float
model's on the same samples. The models were trained on these samples, so the accuracies are
higher than on the test sets; only the ranking is used. Writes
benchmarks/results/weighting_choice.json (a few minutes).

Run:  python benchmarks/bench_weighting_choice.py
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from opq_hw.artifact import write_json  # noqa: E402

SETS = {"digits": ("digits-cnn", [5, 10, 20, 30, 40]), "mnist1d": ("mnist1d-cnn", [5, 10, 20, 40]),
        "mnist28": ("mnist28-lenet", [5, 10, 20, 40]), "basicmotions": ("basicmotions-cnn", [5, 10, 20, 40])}
EDGE1 = "exact-gain-inner-edge1"  # exact-gain-inner with no gain at the first and last layer (a candidate only)
N_TRAIN_EVAL = 2000


def main() -> None:
    torch.set_num_threads(1)
    import math

    import opq_hw.allocation as allocation
    from opq_hw.allocation import allocate
    from opq_hw.carrier import ActConfig, apply
    from opq_hw.errors import OpqError
    from opq_hw.layers import inspect_model, layer_weights
    from opq_hw.pipeline import dataset_for, pretrained
    from opq_hw.training import accuracy

    t0 = time.perf_counter()
    allocation._MAX_GAIN[EDGE1] = (math.inf, 1.0)
    allocation.ERROR_MODELS += (EDGE1,)
    cfgs = {f"opq-{wt}-{em}": dict(method="opq", weighting=wt, error_model=em)
            for wt in ("relative", "mean", "total") for em in ("exact", "exact-gain", "exact-gain-inner")}
    cfgs[f"opq-relative-{EDGE1}"] = dict(method="opq", weighting="relative", error_model=EDGE1)
    cfgs["global-magnitude"] = dict(method="global-magnitude", weighting="mean")
    cfgs["per-channel"] = dict(method="per-channel", weighting="mean")
    for b in range(2, 9):
        cfgs[f"uniform-{b}"] = dict(method="uniform", uniform_bits=b, weighting="mean")
    res = {}
    for ds, (name, crs) in SETS.items():
        model = pretrained(name, seed=0)
        model.eval()
        xtr, ytr, xte, _ = dataset_for(ds, name)
        xs = torch.as_tensor(xtr[:N_TRAIN_EVAL])
        with torch.no_grad():
            ref = torch.log_softmax(model(xs).float(), 1)
        specs = inspect_model(model, torch.as_tensor(xte[:1]))
        weights = layer_weights(model, specs)
        for cr in crs:
            row, kl = {}, {}
            for label, kw in cfgs.items():
                try:
                    alloc = allocate(specs, weights, target_cr=cr, scale_mode="pow2", **kw)
                except OpqError:
                    continue
                torch.manual_seed(0)
                q = apply(model, specs, alloc, ActConfig(bits=8, scale_mode="pow2"), calib=torch.as_tensor(xtr[:512]))
                row[label] = round(accuracy(q, xtr[:N_TRAIN_EVAL], ytr[:N_TRAIN_EVAL]) * 100, 2)
                if label.startswith("opq-"):
                    q.eval()
                    with torch.no_grad():
                        lq = torch.log_softmax(q(xs).float(), 1)
                    kl[label] = float((ref.exp() * (ref - lq)).sum(1).mean())
            uni = {k: v for k, v in row.items() if k.startswith("uniform-")}
            row = {k: v for k, v in row.items() if not k.startswith("uniform-")}
            row["uniform-best"] = max(uni.values())
            best_base = max(row[k] for k in ("global-magnitude", "per-channel", "uniform-best"))
            res[f"{ds}|{cr}"] = {"train_acc_oneshot": row, "best_baseline": best_base,
                                 "train_kl_from_float": {k: float(f"{v:.4g}") for k, v in kl.items()}}
            print(ds, cr, row, {k: f"{v:.3g}" for k, v in kl.items()}, flush=True)
    opq = sorted(k for k in next(iter(res.values()))["train_acc_oneshot"] if k.startswith("opq-"))
    worst = {k: round(min(r["train_acc_oneshot"][k] - r["best_baseline"] for r in res.values()), 2) for k in opq}
    behind = {k: [c for c, r in res.items() if r["train_acc_oneshot"][k] < r["best_baseline"]] for k in opq}
    mean_kl = {k: float(f"{np.mean([r['train_kl_from_float'][k] for r in res.values()]):.4g}") for k in opq}
    write_json(HERE / "results" / "weighting_choice.json",
               {"benchmark": "weighting_choice", "eval": f"first {N_TRAIN_EVAL} training samples, one-shot",
                "results": res, "worst_margin_vs_best_baseline_points": worst, "behind_best_baseline_at": behind,
                "mean_train_kl_from_float": mean_kl,
                "runtime_s": round(time.perf_counter() - t0, 1)})
    print("worst margin vs the best baseline (points):", worst)
    print("behind the best baseline at:", behind)
    print("mean KL from float:", mean_kl)


if __name__ == "__main__":
    main()
