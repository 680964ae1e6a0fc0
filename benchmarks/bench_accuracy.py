"""Benchmark 2: accuracy vs CR_w for OPQ and the baselines, one-shot and after finetuning.

Data sets / models: digits (digits-cnn) and MNIST-1D (mnist1d-cnn) by default; `--datasets mnist28
basicmotions --out accuracy_scale` gives the same table for MNIST 28x28 (mnist28-lenet) and the
BasicMotions time series (basicmotions-cnn, 40 test samples: one sample is 2.5 points); the cached pre-trained float
model of each (`opq_hw.pipeline.pretrained`, seed 0), pow2 (hardware) scales, 8-bit activations.
Methods at every target CR_w: OPQ as it is now by default ("opq": masks by raw |w| within a layer,
exact per-layer error table up to a layer gain, bounded to [1/2, 2] at the first and last layer
(`exact-gain-inner`), weighting relative a_i = 1/sum w_i^2), the previous default ("opq-gain": the
gain unbounded in every layer, `exact-gain`), the plain exact table ("opq-exact"), OPQ as it was before
("opq-old": channel-normalised masks, Laplace closed forms, weighting mean a_i = 1/N_i; `--with-total`
adds the old closed forms with weighting total), global-magnitude, per-channel, and uniform at each
bit width 2..8 that can reach the rate
(reported: the best one-shot accuracy over the bit widths, and the best finetuned accuracy over the
bit widths that were finetuned: by default the 2 with the best one-shot accuracy at that CR, to fit
the runtime; `--uniform-finetune-top 7` finetunes all; each reported with its bits).
Finetune recipe, the same for every method: `opq_hw.training.finetune`, Adam, lr 1e-3, batch 64,
5 epochs, seed 0, masks and quantizers frozen (STE). Test sets are only evaluated, never tuned on.

Run:  python benchmarks/bench_accuracy.py [--epochs 5] [--datasets digits mnist1d] [--resume] [--out accuracy]
Writes benchmarks/results/<out>.json and <out>.png (atomically); `--epochs 0` gives the one-shot table alone.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from opq_hw.artifact import read_json, write_json, write_png  # noqa: E402

RESULTS = HERE / "results"
MODELS = {"digits": "digits-cnn", "mnist1d": "mnist1d-cnn", "mnist28": "mnist28-lenet", "basicmotions": "basicmotions-cnn"}
CRS = {"digits": [5, 10, 20, 30, 40], "mnist1d": [5, 10, 20, 40], "mnist28": [5, 10, 20, 40], "basicmotions": [5, 10, 20, 40]}
OPQ_OLD = dict(method="opq", mask_order="channel-normalised", error_model="laplace")
METHODS = [("opq", dict(method="opq", weighting="relative", mask_order="magnitude", error_model="exact-gain-inner")),
           ("opq-gain", dict(method="opq", weighting="relative", mask_order="magnitude", error_model="exact-gain")),
           ("opq-exact", dict(method="opq", weighting="relative", mask_order="magnitude", error_model="exact")),
           ("opq-old", dict(OPQ_OLD, weighting="mean")),
           ("global-magnitude", dict(method="global-magnitude", weighting="mean")),
           ("per-channel", dict(method="per-channel", weighting="mean"))]
OPQ_TOTAL = ("opq-old-total", dict(OPQ_OLD, weighting="total"))
BASELINES = ("global-magnitude", "per-channel", "uniform-best")
UNIFORM_BITS = list(range(2, 9))
SEED = 0


def run_one(model, specs, weights, data, cr, kw, epochs, lr, batch_size, seed=SEED, recipe=None):
    """Allocate, apply (Brevitas), one-shot accuracy, finetune, finetuned accuracy. `seed`: the
    finetune's; `recipe`: more `training.finetune` options (lr_schedule, distill_weight, ...; the
    float `model` is the distillation teacher)."""
    from opq_hw.allocation import allocate
    from opq_hw.carrier import ActConfig, apply
    from opq_hw.errors import OpqError
    from opq_hw.training import accuracy, finetune

    xtr, ytr, xte, yte = data
    t0 = time.perf_counter()
    try:
        alloc = allocate(specs, weights, target_cr=cr, scale_mode="pow2", **kw)
    except OpqError as e:
        return {"reachable": False, "error": str(e).splitlines()[0][:300]}
    torch.manual_seed(SEED)
    q = apply(model, specs, alloc, ActConfig(bits=8, scale_mode="pow2"), calib=torch.as_tensor(xtr[:512]))
    one = accuracy(q, xte, yte)
    hist, fin = None, None
    if epochs > 0:
        hist = finetune(q, (xtr, ytr), epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, progress=False,
                        teacher=model, **(recipe or {}))
        fin = accuracy(q, xte, yte)
    return {"reachable": True, "cr_w": alloc.cr_w, "cr_idx": alloc.cr_idx, "acc_oneshot": one, "acc_finetuned": fin,
            "bits": [la.bits for la in alloc.layers], "sparsity": [round(la.sparsity, 4) for la in alloc.layers],
            "finetune_loss": hist, "seconds": round(time.perf_counter() - t0, 2)}


def bench_dataset(ds, epochs, lr, batch_size, cache, save_cache, uniform_top, methods=METHODS, log=print):
    from opq_hw.training import accuracy
    from opq_hw.layers import inspect_model, layer_weights
    from opq_hw.pipeline import dataset_for, pretrained

    name = MODELS[ds]
    model = pretrained(name, seed=SEED)
    model.eval()
    data = dataset_for(ds, name)
    specs = inspect_model(model, torch.as_tensor(data[2][:1]))
    weights = layer_weights(model, specs)
    acc_float = accuracy(model, data[2], data[3])
    log(f"[{ds}] {name}: {sum(s.n_weights for s in specs):,} weights, float test accuracy {acc_float * 100:.2f}% "
        f"({len(data[3])} test samples)")
    runs = {}

    def one(cr, label, kw, ep):
        key = f"{ds}|{cr}|{label}|e{ep}|lr{lr}|bs{batch_size}"
        if key in cache:
            r = cache[key]
        else:
            r = run_one(model, specs, weights, data, cr, kw, ep, lr, batch_size)
            cache[key] = r
            save_cache()
        if r["reachable"]:
            fin = f"{r['acc_finetuned'] * 100:6.2f}" if r["acc_finetuned"] is not None else "     -"
            log(f"[{ds}] {cr:>3}x {label:<17} CR_w {r['cr_w']:6.2f}  one-shot {r['acc_oneshot'] * 100:6.2f}  "
                f"finetuned {fin}  bits {r['bits']}  ({r['seconds']} s)")
        else:
            log(f"[{ds}] {cr:>3}x {label:<17} unreachable")
        return r

    for cr in CRS[ds]:
        rs = runs.setdefault(str(cr), {})
        for label, kw in methods:
            rs[label] = one(cr, label, kw, epochs)
        # uniform: every bit width one-shot; the `uniform_top` best of them (one-shot accuracy) also finetuned
        for b in UNIFORM_BITS:
            rs[f"uniform-{b}"] = one(cr, f"uniform-{b}", dict(method="uniform", uniform_bits=b, weighting="mean"), 0)
        ok = [b for b in UNIFORM_BITS if rs[f"uniform-{b}"]["reachable"]]
        top = sorted(ok, key=lambda b: (-rs[f"uniform-{b}"]["acc_oneshot"], b))[:uniform_top]
        for b in sorted(top):
            rs[f"uniform-{b}"] = one(cr, f"uniform-{b}", dict(method="uniform", uniform_bits=b, weighting="mean"), epochs)
    # best uniform per CR: best one-shot and best finetuned, each with its bits
    for cr, rs in runs.items():
        ok = {k: v for k, v in rs.items() if k.startswith("uniform-") and v["reachable"]}
        oft = {k: v for k, v in ok.items() if v["acc_finetuned"] is not None}
        if ok:
            b1 = max(ok, key=lambda k: (ok[k]["acc_oneshot"], -int(k.split("-")[1])))
            b2 = max(oft, key=lambda k: (oft[k]["acc_finetuned"], -int(k.split("-")[1]))) if oft else None
            rs["uniform-best"] = {"reachable": True, "acc_oneshot": ok[b1]["acc_oneshot"], "bits_oneshot": int(b1[8:]),
                                  "cr_w_oneshot": ok[b1]["cr_w"],
                                  "acc_finetuned": ok[b2]["acc_finetuned"] if b2 else None,
                                  "bits_finetuned": int(b2[8:]) if b2 else None,
                                  "cr_w_finetuned": ok[b2]["cr_w"] if b2 else None,
                                  "bits_tried_oneshot": sorted(int(k[8:]) for k in ok),
                                  "bits_tried_finetuned": sorted(int(k[8:]) for k in oft)}
    return {"model": name, "acc_float": acc_float, "n_test": int(len(data[3])),
            "n_weights": sum(s.n_weights for s in specs), "layers": [s.name for s in specs], "runs": runs}


def goals(res) -> dict:
    """Issue 16 part 1: OPQ one-shot >= every baseline at every rate, and finetuned >= every baseline;
    a tie within one test sample counts (margin >= -1/n_test). Reported for "opq" and "opq-old"."""
    out = {}
    for ds, d in res.items():
        tol = 1.0 / d["n_test"] + 1e-12
        for label in ("opq", "opq-gain", "opq-exact", "opq-old"):
            for key, tag in (("acc_oneshot", "oneshot"), ("acc_finetuned", "finetuned")):
                margins = []
                for cr, rs in sorted(d["runs"].items(), key=lambda kv: int(kv[0])):
                    r = rs.get(label)
                    if not (r and r["reachable"] and r.get(key) is not None):
                        continue
                    for b in BASELINES:
                        rb = rs.get(b, {})
                        if rb.get("reachable") and rb.get(key) is not None:
                            margins.append((r[key] - rb[key], int(cr), b))
                if margins:
                    behind = [(round(m[0] * 100, 2),) + m[1:] for m in margins if m[0] < -tol]
                    margins = [(round(m[0] * 100, 2),) + m[1:] for m in margins]
                    out[f"{ds}_{tag}_ge_every_baseline/{label}"] = {
                        "met": not behind, "tie_tolerance_points": round(tol * 100, 2), "worst_margins": sorted(margins)[:4],
                        "behind": [{"cr": c, "baseline": b, "points": p} for p, c, b in behind]}
        f = d["acc_float"]
        if ds == "digits":
            for label in ("opq", "opq-old"):
                r = d["runs"].get("30", {}).get(label)
                if r and r["reachable"] and r.get("acc_finetuned") is not None:
                    loss = (f - r["acc_finetuned"]) * 100
                    out[f"digits_30x_le_0.5pt_stretch/{label}"] = {"loss_points": round(loss, 2), "met": loss <= 0.5 + 1e-9}
    return out


def plot(res, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"opq": "#1f77b4", "opq-gain": "#e377c2", "opq-exact": "#8c564b", "opq-old": "#17becf", "opq-old-total": "#9467bd", "global-magnitude": "#ff7f0e", "per-channel": "#2ca02c",
              "uniform-best": "#d62728"}
    fig, axes = plt.subplots(1, len(res), figsize=(5.2 * len(res), 4.2), squeeze=False)
    for ax, (ds, d) in zip(axes[0], res.items()):
        crs = sorted(int(c) for c in d["runs"])
        for label, c in colors.items():
            for key, ls, tag in (("acc_oneshot", "--", "one-shot"), ("acc_finetuned", "-", "finetuned")):
                xs, ys = [], []
                for cr in crs:
                    r = d["runs"][str(cr)].get(label)
                    if r and r["reachable"] and r.get(key) is not None:
                        xs.append(cr)
                        ys.append(r[key] * 100)
                if xs:
                    ax.plot(xs, ys, ls=ls, marker="o" if ls == "-" else "x", ms=4, c=c,
                            label=f"{label} {tag}" if ls == "-" else None)
        cr_axes(ax, crs, d["acc_float"], "test top-1 accuracy (%)",
                f"{ds} ({d['model']}): solid = finetuned, dashed = one-shot")
    fig.tight_layout()
    write_png(path, fig)


def cr_axes(ax, crs, acc_float, ylabel, title) -> None:
    """An accuracy-vs-CR_w panel: log CR axis ticked at the rates, the float accuracy, grid and legend."""
    import matplotlib.ticker

    ax.axhline(acc_float * 100, c="k", lw=0.8, ls=":", label="float")
    ax.set_xscale("log")
    ax.set_xticks(crs)
    ax.set_xticklabels([f"{c}x" for c in crs])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("target CR_w (pow2 scales)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (1: robust on a shared, busy machine)")
    ap.add_argument("--datasets", nargs="+", default=["digits", "mnist1d"], choices=sorted(MODELS))
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--uniform-finetune-top", type=int, default=2,
                    help="finetune the uniform baseline at this many bit widths: those with the best one-shot accuracy")
    ap.add_argument("--with-total", action="store_true", help="also run the old OPQ with weighting total")
    ap.add_argument("--out", default="accuracy", help="results/<out>.json and .png")
    ap.add_argument("--resume", action="store_true",
                    help="reuse finished configurations from an interrupted run (kept in the opq-hw cache folder)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from opq_hw.pipeline import cache_dir

    t0 = time.perf_counter()
    res = {}
    for ds in args.datasets:  # finished configurations are kept per data set, for --resume
        cache_path = cache_dir() / "bench" / f"accuracy_partial_{ds}.json"
        cache = read_json(cache_path) if args.resume and cache_path.is_file() else {}
        res[ds] = bench_dataset(ds, args.epochs, args.lr, args.batch_size, cache,
                                lambda cache=cache, cache_path=cache_path: write_json(cache_path, cache),
                                args.uniform_finetune_top, METHODS + ([OPQ_TOTAL] if args.with_total else []))
    out = {
        "benchmark": "accuracy",
        "scale_mode": "pow2", "act_bits": 8, "seed": SEED,
        "finetune_recipe": {"optimizer": "Adam", "lr": args.lr, "batch_size": args.batch_size, "epochs": args.epochs,
                            "seed": SEED, "frozen": "masks and quantizers (STE)", "same for every method": True},
        "uniform_bits_swept": UNIFORM_BITS,
        "uniform_finetuned": f"the {args.uniform_finetune_top} bit widths with the best one-shot accuracy at each CR",
        "results": res,
        "goals": goals(res),
        "runtime_s": round(time.perf_counter() - t0, 1),
        "config_seconds_sum": round(sum(r.get("seconds", 0) for d in res.values() for rs in d["runs"].values()
                                        for r in rs.values()), 1),
        "torch_threads": torch.get_num_threads(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__},
    }
    write_json(RESULTS / f"{args.out}.json", out)
    plot(res, RESULTS / f"{args.out}.png")
    print(json.dumps(out["goals"], indent=1))
    print(f"runtime {out['runtime_s']} s; wrote {RESULTS.name}/{args.out}.json and {args.out}.png")


if __name__ == "__main__":
    main()
