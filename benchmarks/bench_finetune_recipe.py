"""Finetune recipe: does a learning-rate schedule or distillation from the float model close OPQ's
finetuned gaps, for every method alike? (issue 16 part 1, the finetuned half)

Methods as `bench_accuracy.py` defines them (its `METHODS` and `run_one`): opq (the default
allocation), global-magnitude, per-channel, and uniform-best (the best finetuned accuracy of the 2
bit widths with the best one-shot accuracy at that rate). Recipes, the same for every method
(`opq_hw.training.finetune`; Adam, lr 1e-3, batch 64, 5 epochs unless named):
  current          constant learning rate, cross-entropy (the benchmarks' recipe until now);
  cosine           cosine decay of the learning rate to 0 over the finetune's steps;
  cosine+distill   cosine, and the loss (1-a)*CE + a*T^2*KL to the float model's softened
                   logits, a = 0.5, T = 2 (the teacher: the pre-trained float model the
                   compression starts from, evaluated once under no_grad).
`--long`: also cosine+distill with 10x the epochs (BasicMotions has 40 training samples: one
step per epoch). Each (data set, rate, method, recipe) is finetuned with seeds 0, 1, 2 (the
allocation, calibration and one-shot model stay fixed; the finetune's shuffling seed varies).
Reported: mean, min, max per cell; the goals (OPQ's mean >= every baseline's mean, a tie within
one test sample counts) per recipe.

Run:  python benchmarks/bench_finetune_recipe.py [--jobs 2] [--resume] [--datasets mnist1d mnist28 basicmotions]
Writes benchmarks/results/finetune_recipe.json and .png. One torch thread per process.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench_accuracy import MODELS, METHODS, UNIFORM_BITS, run_one  # noqa: E402
from opq_hw.artifact import read_json, write_json, write_png  # noqa: E402

RESULTS = HERE / "results"
SEEDS = [0, 1, 2]
EPOCHS, LR, BATCH = 5, 1e-3, 64
# the rates where OPQ trailed after finetuning (README sections 2, 2e) and, to show no regression, where it led;
# computed in this order (most telling first), so that `--budget-s` drops the least telling
CRS = {"mnist1d": [5, 20, 40, 10], "mnist28": [5, 10, 40, 20], "basicmotions": [40, 20]}
PRIORITY = [("mnist1d", 20), ("mnist28", 40), ("mnist1d", 5), ("basicmotions", 40), ("basicmotions", 20),
            ("mnist28", 5), ("mnist28", 10), ("mnist1d", 40), ("mnist28", 20), ("mnist1d", 10)]
# more epochs, measured for OPQ and its closest baseline only where OPQ trails most (3x the epochs costs 3x)
EPOCHS_CHECK = {"current-e15": (("mnist1d", 20), ("opq", "global-magnitude"))}
DISTILL = dict(distill_weight=0.5, distill_temperature=2.0)
RECIPES = {"current": (EPOCHS, dict(lr_schedule="constant")),
           "current-e15": (3 * EPOCHS, dict(lr_schedule="constant")),
           "cosine": (EPOCHS, dict(lr_schedule="cosine")),
           "cosine+distill": (EPOCHS, dict(lr_schedule="cosine", **DISTILL))}
LONG = {"cosine+distill-e50": (10 * EPOCHS, dict(lr_schedule="cosine", **DISTILL))}
METHOD_KW = {label: kw for label, kw in METHODS if label in ("opq", "global-magnitude", "per-channel")}
BASELINES = ("global-magnitude", "per-channel", "uniform-best")
UNIFORM_TOP = 2

_CTX: dict = {}


def _context(ds):
    """(model, specs, weights, data) of a data set, once per process."""
    if ds not in _CTX:
        from opq_hw.layers import inspect_model, layer_weights
        from opq_hw.pipeline import dataset_for, pretrained

        name = MODELS[ds]
        model = pretrained(name, seed=0)
        model.eval()
        data = dataset_for(ds, name)
        specs = inspect_model(model, torch.as_tensor(data[2][:1]))
        _CTX[ds] = (model, specs, layer_weights(model, specs), data)
    return _CTX[ds]


def _kw(label):
    if label.startswith("uniform-"):
        return dict(method="uniform", uniform_bits=int(label[8:]), weighting="mean")
    return METHOD_KW[label]


def task(ds, cr, label, recipe, seed, recipes):
    torch.set_num_threads(1)
    model, specs, weights, data = _context(ds)
    epochs, kw = recipes[recipe]
    r = run_one(model, specs, weights, data, cr, _kw(label), epochs, LR, BATCH, seed=seed, recipe=kw)
    return {k: r.get(k) for k in ("reachable", "cr_w", "acc_oneshot", "acc_finetuned", "seconds", "bits")}


def _init():
    torch.set_num_threads(1)


def stats(accs):
    a = np.asarray(accs, dtype=float) * 100
    return {"acc": [round(float(v), 2) for v in a], "mean": round(float(a.mean()), 3), "min": round(float(a.min()), 2),
            "max": round(float(a.max()), 2)}


def summarise(ds, cr, raw, recipes, n_test):
    """Per method and recipe: the seeds' accuracies; uniform-best per seed = the best of its finetuned bit widths."""
    out = {}
    for recipe in recipes:
        cell = {}
        for label in METHOD_KW:
            rs = [raw.get((ds, cr, label, recipe, s)) for s in SEEDS]
            if all(r is not None and r["reachable"] for r in rs):
                cell[label] = {**stats([r["acc_finetuned"] for r in rs]), "bits": rs[0]["bits"],
                               "acc_oneshot": round(rs[0]["acc_oneshot"] * 100, 2)}
        ubits = sorted({k[2] for k in raw if k[:2] == (ds, cr) and k[2].startswith("uniform-") and k[3] == recipe})
        if ubits and all((ds, cr, b, recipe, s) in raw for b in ubits for s in SEEDS):
            best = [max(raw[(ds, cr, b, recipe, s)]["acc_finetuned"] for b in ubits) for s in SEEDS]
            cell["uniform-best"] = {**stats(best), "bits_finetuned": [int(b[8:]) for b in ubits]}
        if set(cell) == set(METHOD_KW) | {"uniform-best"}:  # complete cells only (`--budget-s` may stop early)
            out[recipe] = cell
        elif recipe in EPOCHS_CHECK and set(cell) == set(EPOCHS_CHECK[recipe][1]):
            out[recipe] = {**cell, "only": list(EPOCHS_CHECK[recipe][1])}
    return out


def goals(res, recipes):
    """Per recipe: OPQ's seed-mean finetuned accuracy >= every baseline's seed mean at every rate
    (a tie within one test sample counts)."""
    out = {}
    for recipe in recipes:
        for ds, d in res.items():
            tol = 100.0 / d["n_test"] + 1e-9
            behind, margins = [], []
            for cr, cell in d["runs"].items():
                c = cell.get(recipe, {})
                if "opq" not in c:
                    continue
                for b in BASELINES:
                    if isinstance(c.get(b), dict):
                        m = round(c["opq"]["mean"] - c[b]["mean"], 3)
                        margins.append((m, int(cr), b))
                        if m < -tol:
                            behind.append({"cr": int(cr), "baseline": b, "points": m})
            if margins:
                out[f"{ds}_finetuned_ge_every_baseline/{recipe}"] = {
                    "met": not behind, "tie_tolerance_points": round(tol, 2), "behind": behind,
                    "worst_margins": [list(m) for m in sorted(margins)[:3]]}
    return out


def helps(res, recipes):
    """Per recipe other than `current`: the change of each method's seed-mean accuracy against `current`."""
    out = {}
    for recipe in recipes:
        if recipe == "current":
            continue
        for ds, d in res.items():
            for cr, cell in d["runs"].items():
                if recipe not in cell or "current" not in cell:
                    continue
                out.setdefault(recipe, {})[f"{ds}|{cr}"] = {
                    m: round(cell[recipe][m]["mean"] - cell["current"][m]["mean"], 3)
                    for m in cell[recipe] if m in cell["current"] and m != "only"}
    return out


def markdown(res, recipes) -> str:
    """One table per data set: rate x method, a column per recipe, mean (min-max) of the seeds."""
    out = []
    for ds, d in res.items():
        out.append(f"\n**{ds}** ({d['model']}, {d['n_test']} test samples, float {d['acc_float'] * 100:.2f} %); "
                   "finetuned top-1 %, mean (min-max) of seeds 0, 1, 2:\n")
        cols = [r for r in recipes if any(r in c for c in d["runs"].values())]
        out.append("| CR_w | method | " + " | ".join(cols) + " |")
        out.append("|---|---|" + "---|" * len(cols))
        for cr in sorted(d["runs"], key=int):
            for m in ("opq",) + BASELINES:
                cells = []
                for r in cols:
                    c = d["runs"][cr].get(r, {}).get(m) if m in d["runs"][cr].get(r, {}) else None
                    cells.append(f"{c['mean']:.2f} ({c['min']:.1f}-{c['max']:.1f})" if c else "-")
                name = f"**{m}**" if m == "opq" else m
                out.append(f"| {cr}x | {name} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def plot(res, recipes, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"opq": "#1f77b4", "global-magnitude": "#ff7f0e", "per-channel": "#2ca02c", "uniform-best": "#d62728"}
    styles = dict(zip(recipes, ["-", (0, (1, 1)), "--", ":", "-.", (0, (5, 1))]))
    fig, axes = plt.subplots(1, len(res), figsize=(5.4 * len(res), 4.4), squeeze=False)
    for ax, (ds, d) in zip(axes[0], res.items()):
        crs = sorted(int(c) for c in d["runs"])
        for recipe in recipes:
            for m, c in colors.items():
                pts = [(cr, d["runs"][str(cr)][recipe][m]) for cr in crs
                       if m in d["runs"][str(cr)].get(recipe, {})]
                if not pts:
                    continue
                xs = [p[0] * (1 + 0.03 * list(colors).index(m)) for p in pts]
                ys = [p[1]["mean"] for p in pts]
                err = [[p[1]["mean"] - p[1]["min"] for p in pts], [p[1]["max"] - p[1]["mean"] for p in pts]]
                ax.errorbar(xs, ys, yerr=err, ls=styles[recipe], c=c, marker="o", ms=3, capsize=2, lw=1,
                            label=f"{m}, {recipe}")
        ax.axhline(d["acc_float"] * 100, c="k", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_xticks(crs)
        ax.set_xticklabels([f"{c}x" for c in crs])
        ax.minorticks_off()
        ax.set_xlabel("target CR_w (pow2 scales)")
        ax.set_ylabel("finetuned test top-1 % (mean, min-max of 3 seeds)")
        ax.set_title(f"{ds} ({d['model']}); float dotted", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=5.5, loc="lower left", ncol=2)
    fig.tight_layout()
    write_png(path, fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=list(CRS), choices=sorted(CRS))
    ap.add_argument("--jobs", type=int, default=2, help="worker processes (one torch thread each)")
    ap.add_argument("--long", action="store_true", help="also cosine+distill with 10x the epochs")
    ap.add_argument("--long-datasets", nargs="+", default=["basicmotions"], choices=sorted(CRS),
                    help="the data sets --long runs on (default basicmotions: one step per epoch)")
    ap.add_argument("--resume", action="store_true", help="reuse finished finetunes of an interrupted run")
    ap.add_argument("--cells", type=int, default=len(PRIORITY),
                    help="the first N (data set, rate) cells of PRIORITY (default all)")
    ap.add_argument("--cached-only", action="store_true",
                    help="report what an earlier (interrupted) run finished, start no finetune (implies --resume)")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="stop starting finetunes after this many seconds and report the complete cells")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from opq_hw.pipeline import cache_dir
    from opq_hw.training import accuracy

    t0 = time.perf_counter()
    recipes = dict(RECIPES)
    if args.long:
        recipes.update(LONG)
    cache_path = cache_dir() / "bench" / "finetune_recipe_partial.json"
    cache = read_json(cache_path) if (args.resume or args.cached_only) and cache_path.is_file() else {}
    raw: dict = {}
    todo = []
    meta = {}
    for ds in args.datasets:
        model, specs, weights, data = _context(ds)
        meta[ds] = {"model": MODELS[ds], "acc_float": accuracy(model, data[2], data[3]), "n_test": int(len(data[3])),
                    "n_train": int(len(data[1]))}
    for ds, cr in [p for p in PRIORITY[:args.cells] if p[0] in args.datasets]:
        if args.cached_only and f"oneshot|{ds}|{cr}|uniform-2" not in cache:
            continue
        model, specs, weights, data = _context(ds)
        # uniform: the UNIFORM_TOP bit widths with the best one-shot accuracy (as bench_accuracy), found once
        one = {}
        for b in UNIFORM_BITS:
            key = f"oneshot|{ds}|{cr}|uniform-{b}"
            if key not in cache:
                r = run_one(model, specs, weights, data, cr, _kw(f"uniform-{b}"), 0, LR, BATCH)
                cache[key] = {"reachable": r["reachable"], "acc_oneshot": r.get("acc_oneshot")}
            if cache[key]["reachable"]:
                one[b] = cache[key]["acc_oneshot"]
        top = sorted(one, key=lambda b: (-one[b], b))[:UNIFORM_TOP]
        labels = list(METHOD_KW) + [f"uniform-{b}" for b in sorted(top)]
        for recipe in recipes:
            if recipe in LONG and ds not in args.long_datasets:
                continue
            if recipe in EPOCHS_CHECK and EPOCHS_CHECK[recipe][0] != (ds, cr):
                continue
            for label in (EPOCHS_CHECK[recipe][1] if recipe in EPOCHS_CHECK else labels):
                for s in SEEDS:
                    todo.append((ds, cr, label, recipe, s))
    print(f"{len(todo)} finetunes, {sum('|'.join(map(str, k)) in cache for k in todo)} cached", flush=True)
    with cf.ProcessPoolExecutor(args.jobs, initializer=_init) as pool:
        futs = {}
        for k in todo:
            key = "|".join(map(str, k))
            if key in cache:
                raw[k] = cache[key]
            elif not args.cached_only:
                futs[pool.submit(task, *k, recipes)] = k
        for i, f in enumerate(cf.as_completed(futs)):
            if args.budget_s is not None and time.perf_counter() - t0 > args.budget_s:
                for g in futs:
                    g.cancel()  # those not started; the running ones finish
            if f.cancelled():
                continue
            k = futs[f]
            raw[k] = r = f.result()
            cache["|".join(map(str, k))] = r
            write_json(cache_path, cache)
            print(f"[{i + 1}/{len(futs)}] {k}: {r['acc_finetuned'] * 100 if r['reachable'] else float('nan'):.2f} "
                  f"({r.get('seconds')} s)", flush=True)
    run_recipes = {r for k in raw for r in [k[3]]}
    recipes_done = [r for r in recipes if r in run_recipes]
    res = {}
    for ds in args.datasets:
        runs = {str(cr): summarise(ds, cr, raw, recipes_done, meta[ds]["n_test"]) for cr in sorted(CRS[ds])}
        runs = {cr: v for cr, v in runs.items() if v}
        if runs:
            res[ds] = {**meta[ds], "runs": runs}
    out = {
        "benchmark": "finetune_recipe",
        "recipes": {k: {"epochs": e, "lr": LR, "batch_size": BATCH, "optimizer": "Adam", **kw}
                    for k, (e, kw) in recipes.items() if k in recipes_done},
        "seeds": SEEDS, "scale_mode": "pow2", "act_bits": 8,
        "methods": {**{k: v for k, v in METHOD_KW.items()},
                    "uniform-best": f"best finetuned of the {UNIFORM_TOP} bit widths with the best one-shot accuracy"},
        "results": res,
        "goals": goals(res, recipes_done),
        "change_vs_current_points": helps(res, recipes_done),
        "runtime_s": round(time.perf_counter() - t0, 1),
        "finetune_seconds_sum": round(sum(r.get("seconds") or 0 for r in raw.values()), 1),
        "jobs": args.jobs, "torch_threads_per_process": 1,
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__},
    }
    write_json(RESULTS / "finetune_recipe.json", out)
    plot(res, recipes_done, RESULTS / "finetune_recipe.png")
    print(json.dumps(out["goals"], indent=1))
    print(markdown(res, recipes_done))
    print(f"runtime {out['runtime_s']} s; wrote results/finetune_recipe.json and .png")


if __name__ == "__main__":
    main()
