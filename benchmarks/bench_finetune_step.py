"""Benchmark 3: finetune step time with the frozen Brevitas quantizers vs a float step.

Same pre-trained model, same batch, Adam (lr 1e-3), one step = zero_grad + forward + cross-entropy
+ backward + step, CPU. The quantized model is `opq_hw.carrier.apply` of an OPQ allocation at
20x CR_w (pow2 scales, 8-bit activations), in train mode with quantizers frozen; stepped two ways:
through Brevitas's own forward ("quant", what `finetune` did before) and through its fast twin
(`opq_hw.fakequant.fast_twin`, "fast", what `opq_hw.training.finetune` runs now). Measured in one
run, interleaved: per repeat, `steps` steps of each variant; the per-step median over repeats is
compared. Goal: fast / float <= 1.5x.

A third variant attributes the overhead: the float model with only the `FrozenMask` weight
parametrization (no Brevitas), so quant = float + mask part + Brevitas part.

Run:  python benchmarks/bench_finetune_step.py [--repeats 7 --steps 20] [--profile]
Writes benchmarks/results/finetune_step.json and finetune_step.png (atomically).
"""
from __future__ import annotations

import argparse
import copy
import platform
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from opq_hw.artifact import write_json, write_png  # noqa: E402

RESULTS = HERE / "results"
GOAL = 1.5
CASES = [("digits-cnn", "digits"), ("mnist1d-cnn", "mnist1d")]
BATCHES = [64, 256]


def build(name: str, ds: str):
    """(float model, quantized model, float+mask model, train data) for a built-in model."""
    import torch.nn.utils.parametrize as parametrize

    from opq_hw.allocation import allocate
    from opq_hw.carrier import ActConfig, FrozenMask, apply, freeze
    from opq_hw.fakequant import fast_twin, matches
    from opq_hw.layers import inspect_model, layer_weights
    from opq_hw.pipeline import dataset_for, pretrained
    from opq_hw.quant import compress_layer, qmax

    model = pretrained(name)
    model.eval()
    xtr, ytr, _, _ = dataset_for(ds, name)
    specs = inspect_model(model, torch.as_tensor(xtr[:1]))
    weights = layer_weights(model, specs)
    alloc = allocate(specs, weights, target_cr=20, method="opq", scale_mode="pow2", weighting="mean")
    torch.manual_seed(0)
    q = apply(model, specs, alloc, ActConfig(bits=8, scale_mode="pow2"), calib=torch.as_tensor(xtr[:512]))
    freeze(q)
    # float model + the same FrozenMask parametrization, no Brevitas: isolates the mask's cost
    fm = copy.deepcopy(model)
    mods = dict(fm.named_modules())
    for s in specs:
        la = alloc.layer(s.name)
        qi, sc, mask = compress_layer(weights[s.name], la)
        m = mods[s.name]
        with torch.no_grad():
            m.weight.copy_(qi * sc.reshape((-1,) + (1,) * (qi.dim() - 1)))
        bits = la.channel_bits or (la.bits,) * s.out_channels
        parametrize.register_parametrization(m, "weight", FrozenMask(
            mask, sc, torch.tensor([qmax(b) for b in bits], dtype=torch.float32)))
    fast = copy.deepcopy(q)
    twin = fast_twin(fast, torch.as_tensor(xtr[:64]))
    if not matches(fast, twin, torch.as_tensor(xtr[:64])):
        raise SystemExit(f"{name}: the fast twin does not equal the carrier bit for bit")
    return copy.deepcopy(model), q, fm, twin, (xtr, ytr), alloc


class Stepper:
    def __init__(self, model: nn.Module, x, y):
        self.model, self.x, self.y = model, torch.as_tensor(x), torch.as_tensor(y)
        self.opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        self.loss_fn = nn.CrossEntropyLoss()
        model.train()

    def step(self):
        self.opt.zero_grad()
        loss = self.loss_fn(self.model(self.x), self.y)
        loss.backward()
        self.opt.step()

    def time(self, steps: int) -> float:
        t0 = time.perf_counter()
        for _ in range(steps):
            self.step()
        return (time.perf_counter() - t0) / steps


def measure(variants: dict[str, Stepper], repeats: int, steps: int) -> dict[str, dict]:
    for s in variants.values():  # warm-up
        s.time(max(3, steps // 4))
    times = {k: [] for k in variants}
    for _ in range(repeats):  # interleaved: background load hits every variant alike
        for k, s in variants.items():
            times[k].append(s.time(steps))
    return {k: {"median_ms": statistics.median(v) * 1e3, "all_ms": [round(t * 1e3, 4) for t in v]} for k, v in times.items()}


def profile_quant(stepper: Stepper, steps: int = 30, top: int = 15) -> list[dict]:
    """Self CPU time per operator of quantized steps (torch.profiler), the `top` largest."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            stepper.step()
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in prof.key_averages())
    return [{"op": e.key, "calls_per_step": e.count / steps, "self_us_per_step": round(e.self_cpu_time_total / steps, 1),
             "share": round(e.self_cpu_time_total / total, 3)} for e in rows[:top]]


def python_profile(stepper: Stepper, steps: int = 30, top: int = 12) -> list[dict]:
    """cProfile of quantized steps: cumulative time per Python function (Brevitas/opq_hw frames)."""
    import cProfile
    import pstats

    pr = cProfile.Profile()
    pr.enable()
    for _ in range(steps):
        stepper.step()
    pr.disable()
    st = pstats.Stats(pr)
    rows = []
    for (file, line, fn), (cc, nc, tt, ct, _) in st.stats.items():
        if "brevitas" in file or "opq_hw" in file or "parametrize" in file:
            short = file.split("site-packages/")[-1] if "site-packages/" in file else "opq_hw/" + file.split("opq_hw/")[-1]
            rows.append({"function": f"{short}:{line}({fn})", "calls_per_step": nc / steps,
                         "cum_ms_per_step": round(ct / steps * 1e3, 3)})
    return sorted(rows, key=lambda r: r["cum_ms_per_step"], reverse=True)[:top]


def plot(result, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = result["cases"]
    labels = [f"{c['model']}\nbatch {c['batch']}" for c in cases]
    x = np.arange(len(cases))
    fig, ax = plt.subplots(figsize=(8, 4))
    w = 0.2
    for i, (k, c, lab) in enumerate((("float", "#888", "float"), ("float+mask", "#bbb", "float + FrozenMask"),
                                     ("quant", "#1f77b4", "Brevitas (frozen quantizers)"),
                                     ("fast", "#2ca02c", "fast twin (finetune)"))):
        ax.bar(x + (i - 1.5) * w, [cs["times"][k]["median_ms"] for cs in cases], w, color=c, label=lab)
    for xi, cs in zip(x, cases):
        ax.text(xi + 0.5 * w, cs["times"]["quant"]["median_ms"], f"{cs['brevitas_ratio']:.1f}x", ha="center",
                va="bottom", fontsize=8)
        ax.text(xi + 1.5 * w, cs["times"]["fast"]["median_ms"], f"{cs['ratio']:.2f}x", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel("ms per Adam step (median)")
    ax.set_title(f"finetune step time, ratio to float above bars (goal: fast <= {GOAL:g}x)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    write_png(path, fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (1: robust on a shared, busy machine)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--profile", action="store_true", help="add a torch.profiler / cProfile breakdown per model (batch 64)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cases = []
    for name, ds in CASES:
        fmodel, q, fm, twin, (xtr, ytr), alloc = build(name, ds)
        for batch in BATCHES:
            x, y = xtr[:batch], ytr[:batch]
            variants = {"float": Stepper(copy.deepcopy(fmodel), x, y), "float+mask": Stepper(copy.deepcopy(fm), x, y),
                        "quant": Stepper(copy.deepcopy(q), x, y), "fast": Stepper(twin, x, y)}
            times = measure(variants, args.repeats, args.steps)
            ratio = times["fast"]["median_ms"] / times["float"]["median_ms"]
            brevitas_ratio = times["quant"]["median_ms"] / times["float"]["median_ms"]
            mask_part = (times["float+mask"]["median_ms"] - times["float"]["median_ms"]) / times["float"]["median_ms"]
            case = {"model": name, "batch": batch, "cr_w": alloc.cr_w, "times": times, "ratio": ratio,
                    "brevitas_ratio": brevitas_ratio, "mask_overhead_over_float": mask_part,
                    "brevitas_overhead_over_float": brevitas_ratio - 1 - mask_part, "goal": GOAL, "met": ratio <= GOAL}
            if args.profile and batch == BATCHES[0]:
                case["torch_profile_quant"] = profile_quant(variants["quant"])
                case["python_profile_quant"] = python_profile(variants["quant"])
            cases.append(case)
            print(f"{name:<12} batch {batch:>3}: float {times['float']['median_ms']:.2f} ms, float+mask "
                  f"{times['float+mask']['median_ms']:.2f} ms, Brevitas {times['quant']['median_ms']:.2f} ms "
                  f"({brevitas_ratio:.2f}x), fast {times['fast']['median_ms']:.2f} ms -> {ratio:.2f}x (goal <= {GOAL:g}x)")
    result = {"benchmark": "finetune_step",
              "step": "zero_grad + forward + CrossEntropy + backward + Adam(lr=1e-3).step, CPU, train mode",
              "quant_model": "carrier.apply of OPQ 20x CR_w (pow2, weighting mean), 8-bit activations, quantizers frozen",
              "ratio": "fast twin (fakequant.fast_twin, what finetune runs) / float; brevitas_ratio: Brevitas forward / float",
              "repeats": args.repeats, "steps_per_repeat": args.steps, "cases": cases,
              "all_met": all(c["met"] for c in cases), "torch_threads": torch.get_num_threads(),
              "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}}
    try:
        from importlib.metadata import version

        result["versions"]["brevitas"] = version("brevitas")
    except Exception:  # noqa: BLE001 - informative only
        pass
    write_json(RESULTS / "finetune_step.json", result)
    plot(result, RESULTS / "finetune_step.png")
    print(f"wrote {RESULTS.name}/finetune_step.json and finetune_step.png")


if __name__ == "__main__":
    main()
