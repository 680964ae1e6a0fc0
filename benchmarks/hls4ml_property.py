"""Property sweep: random small MLPs and CNNs through OPQ allocation -> Brevitas carrier -> QONNX -> hls4ml C-sim.

Each case (a seed) draws an architecture (MLP, 2-D CNN with max pooling, 1-D CNN), per-output-channel weight
magnitudes 2^e with e from -12 to 4 (so the pow2 channel scales span that range), biases up to +-8, an optional
BatchNorm after every hidden layer with random statistics, folded into the layer in torch (arbitrary folded
weights and biases), a weight bit width 2..8 and pruning 0..90 % ("uniform" allocation) or a mixed OPQ allocation,
and 4- or 8-bit activations. The run is built in memory (no finetuning), its C simulation compiled for io_parallel
and io_stream, and every one of >= 100 random inputs compared with the Brevitas model: a case passes when all
outputs are equal (0 LSB) and the flow's type check found nothing.

    python benchmarks/hls4ml_property.py [--n 50] [--start 0] [--io parallel,stream] [--opt O1]
                                         [--out benchmarks/results/hls4ml_property.json]
    python benchmarks/hls4ml_property.py --old-types   # -> results/hls4ml_property_old_types.json

Compile time, measured here (2 cores, load average ~5 from other jobs): the C-sim library compiles in a median
7.7 s (io_parallel) / 9.1 s (io_stream) at -O1; the 50-case sweep took 17 min. g++ level: one paired run on a 2-D
CNN gave 21.8 s (-O3), 17.7 s (-O1), 16.5 s (-O0), while repeated single-file timings varied 2x under the load, so
no level is clearly faster. The ap_types headers alone take 2-5 s per translation unit; a precompiled header cut
the bridge's compile from ~3.5 s to ~1.4 s but not the model's (template instantiation dominates), so it is not
used. Several models in one compile: hls4ml writes one project, and one library with fixed symbol names, per
ModelGraph; combining them would need distinct project names, its `Namespace` writer option and a bridge of our
own: not attempted.

`--old-types` converts the same cases with hls4ml's own types (what the flow shipped before the analysis;
no compile) and counts the types the check flags in each.

`--opt` sets g++'s optimisation level for the C-sim library (hls4ml's build_lib.sh uses -O3; -O1 compiles faster
on these small projects, results are identical). tests/test_hls4ml_exact.py runs a seeded subset.
"""
from __future__ import annotations

import argparse
import contextlib
import io as io_mod
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

N_SAMPLES = 128


def random_case(seed: int) -> dict:
    """The random choices of one case (JSON-friendly)."""
    rng = np.random.default_rng(seed)
    kind = ["mlp", "cnn2d", "cnn1d"][seed % 3]
    exp_lo = int(rng.integers(-12, 3))
    return {
        "seed": seed, "kind": kind,
        "widths": [int(rng.integers(4, 13)) for _ in range(2)],
        "bn": bool(rng.integers(0, 2)),
        "exp_range": [exp_lo, int(rng.integers(exp_lo, 5))],  # per-channel weight magnitudes 2^e, e in this range
        "bias_max": float(rng.choice([0.5, 2.0, 8.0])),
        "method": "opq" if rng.random() < 0.3 else "uniform",
        "bits": int(rng.integers(2, 9)),
        "sparsity": float(np.round(rng.uniform(0.0, 0.9), 2)),
        "act_bits": int(rng.choice([4, 8])),
        "input_amp": float(2.0 ** rng.integers(-2, 4)),
    }


def make_model(case: dict):
    """(float torch model with any BatchNorm folded in, per-sample input shape)."""
    import torch
    from torch import nn

    torch.manual_seed(case["seed"])
    rng = np.random.default_rng(case["seed"] + 1000)
    w1, w2 = case["widths"]
    bn = (lambda c, d: (nn.BatchNorm1d(c) if d == 1 else nn.BatchNorm2d(c))) if case["bn"] else (lambda c, d: nn.Identity())
    if case["kind"] == "mlp":
        shape = (12,)
        layers = [nn.Linear(12, w1), bn(w1, 1), nn.ReLU(), nn.Linear(w1, w2), bn(w2, 1), nn.ReLU(), nn.Linear(w2, 5)]
    elif case["kind"] == "cnn2d":
        shape = (2, 6, 6)
        layers = [nn.Conv2d(2, w1, 3, padding=1), bn(w1, 2), nn.ReLU(), nn.MaxPool2d(2),
                  nn.Conv2d(w1, w2, 3), bn(w2, 2), nn.ReLU(), nn.Flatten(), nn.Linear(w2, 4)]
    else:
        shape = (2, 12)
        layers = [nn.Conv1d(2, w1, 3, padding=1), bn(w1, 1), nn.ReLU(), nn.MaxPool1d(2),
                  nn.Conv1d(w1, w2, 3), bn(w2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(w2 * 4, 4)]
    model = nn.Sequential(*layers)
    lo, hi = case["exp_range"]
    qmax = 2 ** (case["bits"] - 1) - 1
    with torch.no_grad():
        for m in model:
            if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
                w = m.weight.reshape(m.weight.shape[0], -1)
                e = torch.tensor(rng.integers(lo, hi + 1, size=w.shape[0]), dtype=torch.float32)
                w.mul_((2.0 ** e * qmax / w.abs().max(dim=1).values).unsqueeze(1))
                m.bias.copy_(torch.tensor(rng.uniform(-1, 1, size=m.bias.shape) * case["bias_max"], dtype=torch.float32))
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                c = m.num_features
                m.weight.copy_(torch.tensor(rng.uniform(0.5, 2.0, c) * rng.choice([-1, 1], c), dtype=torch.float32))
                m.bias.copy_(torch.tensor(rng.uniform(-2, 2, c), dtype=torch.float32))
                m.running_mean.copy_(torch.tensor(rng.uniform(-1, 1, c), dtype=torch.float32))
                m.running_var.copy_(torch.tensor(rng.uniform(0.25, 4, c), dtype=torch.float32))
    return fold_batchnorm(model.eval()), shape


def fold_batchnorm(model):
    """Fold each BatchNorm into the conv/linear layer before it (eval statistics); the BN becomes Identity."""
    import torch
    from torch import nn

    mods = list(model)
    with torch.no_grad():
        for i, m in enumerate(mods):
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                layer = mods[i - 1]
                k = m.weight / torch.sqrt(m.running_var + m.eps)
                layer.weight.mul_(k.reshape(-1, *([1] * (layer.weight.dim() - 1))))
                layer.bias.copy_((layer.bias - m.running_mean) * k + m.bias)
                model[i] = nn.Identity()
    return model


def make_run(case: dict, folder: Path):
    """An in-memory run (allocation, Brevitas carrier, QONNX export in `folder`) and its quantized inputs."""
    import torch

    from opq_hw.allocation import allocate
    from opq_hw.carrier import ActConfig, apply
    from opq_hw.errors import OpqError
    from opq_hw.export import export_qonnx
    from opq_hw.layers import inspect_model, layer_weights
    from opq_hw.pipeline import quantize_input
    from opq_hw.run import Run

    model, shape = make_model(case)
    torch.manual_seed(case["seed"])
    x = (torch.randn(N_SAMPLES, *shape) * case["input_amp"])
    specs = inspect_model(model, x[:1])
    weights = layer_weights(model, specs)
    b, s = case["bits"], case["sparsity"]
    alloc = None
    # the wanted pruning, else the nearest reachable compression (the allocation cannot keep weights below half
    # an LSB, nor prune beyond its bit limits)
    for cr in 32.0 / (b * (1 - s) + 0.5) * 1.15 ** np.array([0] + [k * d for k in range(1, 25) for d in (-1, 1)]):
        try:
            if case["method"] == "uniform":
                alloc = allocate(specs, weights, target_cr=float(cr), method="uniform", uniform_bits=b, scale_mode="pow2")
            else:
                alloc = allocate(specs, weights, target_cr=float(cr) * 1.5, method="opq", min_bits=2, max_bits=8, scale_mode="pow2")
            break
        except OpqError:
            continue
    if alloc is None:
        raise RuntimeError(f"no allocation for case {case}")
    q = apply(model, specs, alloc, ActConfig(bits=case["act_bits"], scale_mode="pow2"), calib=x)
    folder.mkdir(parents=True, exist_ok=True)
    export_qonnx(q, x[:1], folder / "model.qonnx.onnx")
    run = Run(path=folder, qmodel=q, allocation=alloc, specs=specs, config={"act_bits": case["act_bits"]}, manifest={})
    return run, quantize_input(run, x.numpy())


def set_opt_level(level: str | None):
    """A context in which hls4ml's generated build_lib.sh compiles with `-{level}` instead of -O3."""
    if not level:
        return contextlib.nullcontext()
    from hls4ml.model.graph import ModelGraph

    orig = ModelGraph.write

    def write(self, *a, **k):
        out = orig(self, *a, **k)
        p = Path(self.config.get_output_dir()) / "build_lib.sh"
        if p.is_file():
            p.write_text(p.read_text().replace('CFLAGS="-O3 -fPIC"', f'CFLAGS="-{level} -fPIC"'))
        return out

    @contextlib.contextmanager
    def ctx():
        ModelGraph.write = write
        try:
            yield
        finally:
            ModelGraph.write = orig

    return ctx()


def run_case(case: dict, ios=("parallel", "stream"), opt: str | None = "O1", keep: Path | None = None) -> dict:
    """Build the case and compare C-sim with the Brevitas model for each io type."""
    from opq_hw.flows.hls4ml_flow import compile_csim, predict_csim
    from opq_hw.simulate import reference

    tmp = Path(tempfile.mkdtemp(prefix="opq-prop-")) if keep is None else keep
    try:
        run, xq = make_run(case, tmp / "run")
        ref = reference(run, xq)
        exps = [int(np.log2(v)) for la in run.allocation.layers for v in la.scales]
        out = {**case, "layer_bits": [la.bits for la in run.allocation.layers],
               "layer_sparsity": [round(la.sparsity, 3) for la in run.allocation.layers],
               "scale_exponents": [min(exps), max(exps)], "n": len(xq), "io": {}}
        for io in ios:
            t0 = time.perf_counter()
            with set_opt_level(opt):
                hm, info = compile_csim(run, tmp / f"prj_{io}", io=io)
            y = predict_csim(hm, xq)
            same = np.all(y == ref, axis=1)
            out["io"][io] = {"exact_samples": int(same.sum()), "type_check_exact": bool(info["exact"]),
                             "problems": info["type_check"]["problems"], "max_abs_diff": float(np.max(np.abs(y - ref))),
                             "compile_s": info.get("compile_s"), "total_s": round(time.perf_counter() - t0, 2)}
        out["pass"] = all(r["exact_samples"] == out["n"] and r["type_check_exact"] for r in out["io"].values())
        return out
    finally:
        if keep is None:
            shutil.rmtree(tmp, ignore_errors=True)


def old_types_case(case: dict, ios=("parallel", "stream")) -> dict:
    """The check on hls4ml's own types (conversion only): how many types would round or saturate."""
    from opq_hw.flows.hls4ml_flow import convert

    tmp = Path(tempfile.mkdtemp(prefix="opq-prop-old-"))
    try:
        run, _ = make_run(case, tmp / "run")
        out = {"seed": case["seed"], "kind": case["kind"], "io": {}}
        for io in ios:
            _, info = convert(run, tmp / f"prj_{io}", io=io, set_types=False, allow_inexact=True)
            probs = info["type_check"]["problems"]
            out["io"][io] = {"flagged": len(probs), "examples": [f"{p['layer']}: {p['type']}: {p['problem']}" for p in probs[:3]]}
        out["flagged"] = any(r["flagged"] for r in out["io"].values())
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None) -> int:
    from opq_hw.artifact import write_json

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--io", default="parallel,stream")
    ap.add_argument("--opt", default="O1", help="g++ level for the C-sim library ('' keeps hls4ml's -O3)")
    ap.add_argument("--out", default=None, help="default: results/hls4ml_property[_old_types].json")
    ap.add_argument("--old-types", action="store_true", help="check hls4ml's own types instead (no compile)")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    ios = tuple(args.io.split(","))
    if args.old_types:
        res = []
        for seed in range(args.start, args.start + args.n):
            with contextlib.redirect_stderr(io_mod.StringIO()):
                res.append(old_types_case(random_case(seed), ios))
            print(f"seed {seed:3d} {res[-1]['kind']:<6} flagged: {[r['flagged'] for r in res[-1]['io'].values()]}", flush=True)
        summary = {"cases": len(res), "cases_flagged": sum(r["flagged"] for r in res), "io": list(ios),
                   "types_flagged": sum(r2["flagged"] for r in res for r2 in r["io"].values())}
        write_json(Path(args.out or HERE / "results" / "hls4ml_property_old_types.json"), {"summary": summary, "cases": res})
        print(summary)
        return 0
    results, t0 = [], time.perf_counter()
    for seed in range(args.start, args.start + args.n):
        case = random_case(seed)
        try:
            with contextlib.redirect_stderr(io_mod.StringIO()):
                r = run_case(case, ios, args.opt)
        except Exception as e:  # a failing case is a result, not the end of the sweep
            r = {**case, "pass": False, "error": f"{type(e).__name__}: {str(e)[:400]}"}
        results.append(r)
        print(f"seed {seed:3d} {case['kind']:<6} bits {case['bits']} sparsity {case['sparsity']:.2f} bn {case['bn']!s:<5} "
              f"exp {case['exp_range']} -> {'pass' if r['pass'] else 'FAIL ' + str(r.get('error', r.get('io')))[:200]}",
              flush=True)
    summary = {"cases": len(results), "passed": sum(r["pass"] for r in results),
               "by_kind": {k: [sum(r["pass"] for r in results if r["kind"] == k), sum(r["kind"] == k for r in results)]
                           for k in ("mlp", "cnn2d", "cnn1d")},
               "with_bn": sum(r["bn"] for r in results), "io": list(ios), "samples_per_case": N_SAMPLES,
               "scale_exponent_range": [min(r["scale_exponents"][0] for r in results if "scale_exponents" in r),
                                        max(r["scale_exponents"][1] for r in results if "scale_exponents" in r)],
               "wall_s": round(time.perf_counter() - t0, 1), "gcc_opt": args.opt or "O3", "machine": platform.machine(),
               "gcc": subprocess.run(["g++", "--version"], capture_output=True, text=True).stdout.split("\n")[0]}
    write_json(Path(args.out or HERE / "results" / "hls4ml_property.json"), {"summary": summary, "cases": results})
    print(summary)
    return 0 if summary["passed"] == summary["cases"] else 1


if __name__ == "__main__":
    sys.exit(main())
