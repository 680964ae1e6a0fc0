"""How much of a finetuned gap is the finetune's own seed? OPQ (default) against global-magnitude.

MNIST-1D (mnist1d-cnn, pre-trained seed 0), the rates where OPQ trailed after finetuning in
`bench_accuracy.py` (5x, 20x): the same allocation and one-shot model, finetuned with the
benchmark recipe (Adam, lr 1e-3, batch 64, 5 epochs) under finetune seeds 0, 1, 2.
Writes benchmarks/results/finetune_seeds.json.  Run: python benchmarks/bench_finetune_seeds.py
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

SEEDS = [0, 1, 2]
CRS = [5, 20]
METHODS = {"opq": dict(method="opq"), "global-magnitude": dict(method="global-magnitude", weighting="mean")}


def main() -> None:
    torch.set_num_threads(1)
    from opq_hw.allocation import allocate
    from opq_hw.carrier import ActConfig, apply
    from opq_hw.layers import inspect_model, layer_weights
    from opq_hw.pipeline import dataset_for, pretrained
    from opq_hw.training import accuracy, finetune

    t0 = time.perf_counter()
    model = pretrained("mnist1d-cnn", seed=0)
    model.eval()
    xtr, ytr, xte, yte = dataset_for("mnist1d", "mnist1d-cnn")
    specs = inspect_model(model, torch.as_tensor(xte[:1]))
    weights = layer_weights(model, specs)
    res = {}
    for cr in CRS:
        for label, kw in METHODS.items():
            alloc = allocate(specs, weights, target_cr=cr, scale_mode="pow2", **kw)
            accs = []
            for seed in SEEDS:
                torch.manual_seed(0)
                q = apply(model, specs, alloc, ActConfig(bits=8, scale_mode="pow2"), calib=torch.as_tensor(xtr[:512]))
                finetune(q, (xtr, ytr), epochs=5, lr=1e-3, batch_size=64, seed=seed, progress=False)
                accs.append(accuracy(q, xte, yte))
            res[f"{cr}|{label}"] = {"cr_w": alloc.cr_w, "finetuned": accs, "mean": float(np.mean(accs)),
                                    "spread_points": round((max(accs) - min(accs)) * 100, 2)}
            print(cr, label, [round(a * 100, 2) for a in accs], flush=True)
    write_json(HERE / "results" / "finetune_seeds.json",
               {"benchmark": "finetune_seeds", "dataset": "mnist1d", "seeds": SEEDS, "results": res,
                "recipe": "Adam lr 1e-3, batch 64, 5 epochs; allocation and calibration fixed, finetune seed varied",
                "runtime_s": round(time.perf_counter() - t0, 1)})


if __name__ == "__main__":
    main()
