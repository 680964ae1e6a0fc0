"""Cost of the work as the model grows: OPQ allocation and the cost model's `estimate` time against
the weight count, 10 k to 100 M weights.

Networks: ResNet-50's layer shapes (benchmarks/bench_allocation.py, torchvision v1.5 layout) with
every channel count scaled by one factor chosen so that the total lands near each weight count
(10^4 ... 10^8), Laplace weights (std sqrt(2 / fan_in)), fixed seed. Per size: allocate(target_cr=16,
opq, the default allocation) and estimate(board alveo-u250, finn-mvau, fully parallel), wall time
(one run each; other processes share the CPU: the load average is recorded).

Run:  python benchmarks/bench_scaling.py [--max 1e8]
Writes benchmarks/results/scaling.json and scaling.png (atomically).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import resource
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_allocation import resnet50_specs, resnet50_weights  # noqa: E402

from opq_hw.artifact import write_json, write_png  # noqa: E402

RESULTS = HERE / "results"


def scaled_specs(factor: float):
    """ResNet-50's specs with channels x factor (>= 1 each; the 3 input channels and 1000 classes kept)."""
    out = []
    for s in resnet50_specs():
        cin = s.in_channels if s.name == "conv1" else max(1, round(s.in_channels * factor))
        cout = s.out_channels if s.name == "fc" else max(1, round(s.out_channels * factor))
        shape = (cout, cin) + tuple(s.weight_shape[2:])
        out.append(dataclasses.replace(s, in_channels=cin, out_channels=cout, weight_shape=shape,
                                       n_weights=math.prod(shape), in_shape=(cin,) + tuple(s.in_shape[1:]),
                                       out_shape=(cout,) + tuple(s.out_shape[1:])))
    return out


def factor_for(n: float) -> float:
    """Bisection on the channel factor so that the total weight count is about n."""
    lo, hi = 1e-3, 10.0
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if sum(s.n_weights for s in scaled_specs(mid)) < n else (lo, mid)
    return hi


def main() -> None:
    from opq_hw.allocation import allocate
    from opq_hw.cost import estimate

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max", type=float, default=1e8)
    args = ap.parse_args()
    rows = []
    for k in range(4, 9):
        if 10 ** k > args.max:
            break
        specs = scaled_specs(factor_for(10 ** k))
        weights = resnet50_weights(specs)
        t = time.perf_counter()
        alloc = allocate(specs, weights, target_cr=16)
        t_alloc = time.perf_counter() - t
        t = time.perf_counter()
        rep = estimate(specs, alloc, "alveo-u250", "finn-mvau")
        t_est = time.perf_counter() - t
        rows.append({"n_weights": sum(s.n_weights for s in specs), "layers": len(specs), "allocate_s": round(t_alloc, 3),
                     "estimate_s": round(t_est, 4), "cr_w": round(alloc.cr_w, 2), "fits_u250": rep.fits,
                     "peak_rss_MB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                     "load_avg": os.getloadavg()[0]})
        print(rows[-1], flush=True)
        del weights
    res = {"what": "allocate(target_cr=16) and estimate(alveo-u250, finn-mvau) vs weight count, ResNet-50 shapes "
                   "scaled", "rows": rows}
    write_json(RESULTS / "scaling.json", res)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    n = [r["n_weights"] for r in rows]
    ax.loglog(n, [r["allocate_s"] for r in rows], "o-", label="allocate (OPQ, 16x)")
    ax.loglog(n, [r["estimate_s"] for r in rows], "s-", label="estimate (finn-mvau, U250)")
    ax.set_xlabel("weights")
    ax.set_ylabel("wall time [s]")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    write_png(RESULTS / "scaling.png", fig)
    print(f"wrote {RESULTS / 'scaling.json'}")


if __name__ == "__main__":
    main()
