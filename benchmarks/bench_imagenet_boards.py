"""ImageNet-class models on the Xilinx boards: OPQ at the paper's rates, then the finn-mvau cost
model with FINN folding chosen for a target frame rate.

Models (opq_hw.zoo, Laplace-drawn weights, BatchNorm folded): ResNet-50 at 38x and MobileNet-V1
at 23x (the OPQ paper's rates), and, as FINN's own design point, MobileNet-V1 with uniform 4-bit
weights (FINN's MobileNet-V1 W4A4: "about 2 MB of weight storage and 1.1 GMACs per inference,
yielding 70.4 % top-1", https://github.com/Xilinx/finn-examples/blob/main/build/mobilenet-v1/README.md;
built for the Alveo U250 only). Activations 4 bits (W4A4's), the first layer fed by the 8-bit input.

Per model x board (every board_configs/*.yaml that lists the finn flow): `cost.choose_folding`
with `target_fps` (the slowest, i.e. cheapest, PE/SIMD folding that still meets the rate; if none
fits, the most folded one, strict=False), then `cost.estimate` with that folding: fits or not,
the binding resource, utilisation, achieved frames/s, the allocation's and the estimate's time.
finn-mvau counts the MVAUs only (no sliding-window generators, FIFOs, DMA); a depthwise conv is
costed as an MVAU with MW = k*k (FINN builds it as a VVAU), see the notes in the JSON.

With OPQ_HW_FINN_PYTHON set (the FINN environment's python), finn-mvau is also compared with
FINN's own MVAU_hls estimates per layer (MobileNet-V1 on the U250, the chosen folding).

Run:  python benchmarks/bench_imagenet_boards.py [--target-fps 1600]
Writes benchmarks/results/imagenet_boards.json and imagenet_boards.png (atomically).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import torch  # noqa: E402

from opq_hw.artifact import write_json, write_png  # noqa: E402
from opq_hw.boards import list_boards, load_board  # noqa: E402

RESULTS = HERE / "results"
ACT_BITS = 4
FINN_MOBILENET = {"weights_MB": 2.0, "top1": 70.4, "board": "alveo-u250",
                  "source": "https://github.com/Xilinx/finn-examples/blob/main/build/mobilenet-v1/README.md"}
# (label, zoo name, allocation keyword arguments)
CASES = [
    ("resnet50 opq 38x", "resnet50", dict(target_cr=38, method="opq")),
    ("mobilenet-v1 opq 23x", "mobilenet-v1", dict(target_cr=23, method="opq")),
    ("mobilenet-v1 uniform w4 (FINN's point)", "mobilenet-v1", dict(method="uniform", uniform_bits=4, target_cr=8)),
]


def model_specs(name: str):
    """(specs, weights) of a zoo model with its BatchNorms folded (what `compress` sees)."""
    from opq_hw.bnfold import fold_batchnorm
    from opq_hw.layers import inspect_model, layer_weights
    from opq_hw.zoo import ZOO

    factory, shape, _ = ZOO[name]
    model = factory()
    fold_batchnorm(model)
    model.eval()
    specs = inspect_model(model, torch.zeros((1,) + shape))
    return specs, layer_weights(model, specs)


def finn_boards() -> list[str]:
    return [b for b in list_boards() if "finn" in load_board(b).flows]


def run(target_fps: float) -> dict:
    from opq_hw.allocation import allocate
    from opq_hw.cost import choose_folding, estimate

    rows, cache = [], {}
    for label, name, kw in CASES:
        if name not in cache:
            cache[name] = model_specs(name)
        specs, weights = cache[name]
        t = time.perf_counter()
        alloc = allocate(specs, weights, **kw)
        t_alloc = time.perf_counter() - t
        bits = sum(la.bits * s.n_weights for s, la in zip(specs, alloc.layers)) / sum(s.n_weights for s in specs)
        for board in finn_boards():
            t = time.perf_counter()
            fold = choose_folding(specs, alloc, board, "finn-mvau", target_fps=target_fps, act_bits=ACT_BITS,
                                  strict=False)
            rep = estimate(specs, alloc, board, "finn-mvau", folding=fold, act_bits=ACT_BITS)
            t_est = time.perf_counter() - t
            # does the board hold the model at all (the most folded design, 1 frame/s), and how fast at best?
            most = estimate(specs, alloc, board, "finn-mvau", act_bits=ACT_BITS, folding=choose_folding(
                specs, alloc, board, "finn-mvau", target_fps=1.0, act_bits=ACT_BITS, strict=False))
            best = estimate(specs, alloc, board, "finn-mvau", act_bits=ACT_BITS, folding=choose_folding(
                specs, alloc, board, "finn-mvau", act_bits=ACT_BITS)) if most.fits else None
            rows.append({
                "case": label, "model": name, "board": board, "target_cr": kw.get("target_cr"), "method": kw["method"],
                "cr_w": round(alloc.cr_w, 2), "n_weights": sum(s.n_weights for s in specs),
                "mean_bits_dense": round(bits, 3), "weights_MB_dense": round(rep.mem_bits_dense / 8e6, 3),
                "weights_MB_sparse": round(rep.mem_bits_sparse / 8e6, 3), "fits": rep.fits, "binding": rep.binding,
                "over": rep.over, "utilisation": rep.utilisation, "totals": rep.totals,
                "fps": round(rep.throughput_fps, 1), "meets_target": rep.throughput_fps >= target_fps * (1 - 1e-9),
                "bottleneck": rep.bottleneck, "holds": most.fits,
                "binding_most_folded": most.binding, "max_fps": round(best.throughput_fps, 1) if best else None, "allocate_s": round(t_alloc, 2), "fold_estimate_s": round(t_est, 2)})
            r = rows[-1]
            print(f"{label:40s} {board:14s} fits={r['fits']!s:5s} binds={r['binding']:6s} "
                  f"fps={r['fps']:>10.1f} holds={r['holds']!s:5s} max_fps={r['max_fps']} LUT={r['utilisation'].get('LUT')} BRAM18={r['utilisation'].get('BRAM18')} "
                  f"DSP={r['utilisation'].get('DSP')} ({t_est:.1f} s)", flush=True)
    return {"target_fps": target_fps, "act_bits": ACT_BITS, "arch": "finn-mvau", "finn_published": FINN_MOBILENET,
            "notes": ["weights are Laplace draws (no trained ImageNet weights ship); the cost depends on shapes and "
                      "bit widths only", "finn-mvau stores weights dense: sparsity saves nothing in FINN",
                      "depthwise convolutions are costed as MVAUs with MW = 9 (FINN uses a VVAU)",
                      "MVAUs only: sliding-window generators, FIFOs, pools and the shell are not counted"],
            "load_avg": os.getloadavg(), "rows": rows}


def finn_crosscheck(target_fps: float) -> dict | None:
    """finn-mvau against FINN's own MVAU_hls estimates (benchmarks/finn_reference.py, run in the FINN
    environment named by OPQ_HW_FINN_PYTHON) for MobileNet-V1 (OPQ 23x) on the Alveo U250 at the
    folding chosen for `target_fps`: every non-depthwise layer (FINN builds depthwise ones as VVAUs).
    None when no FINN environment is given."""
    import json
    import subprocess

    from opq_hw.allocation import allocate
    from opq_hw.cost import choose_folding, finn_mvau, network_params

    py = os.environ.get("OPQ_HW_FINN_PYTHON")
    if not py or not Path(py).is_file():
        return None
    specs, weights = model_specs("mobilenet-v1")
    alloc = allocate(specs, weights, target_cr=23)
    fold = choose_folding(specs, alloc, "alveo-u250", "finn-mvau", target_fps=target_fps, act_bits=ACT_BITS)
    board = load_board("alveo-u250")
    params = [p for s, p in zip(specs, network_params(specs, alloc, ACT_BITS)) if s.groups == 1]
    cfgs = [{"MW": p.fan_in, "MH": p.out_channels, "PE": fold[p.name]["pe"], "SIMD": fold[p.name]["simd"],
             "idt": ("INT" if p.a_signed else "UINT") + str(p.a_bits), "wdt": f"INT{p.w_bits}",
             "vecs": [1, p.out_pixels], "res_type": "lut"} for p in params]
    proc = subprocess.run([py, str(HERE / "finn_reference.py")], input=json.dumps(cfgs), capture_output=True, text=True,
                          timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    layers, equal = [], 0
    for p, ref in zip(params, json.loads(proc.stdout)):
        ours = finn_mvau(p, board, **fold[p.name])
        ours = {k: int(round(float(ours[k]))) for k in ref}
        layers.append({"layer": p.name, "folding": fold[p.name], "ours": ours, "finn": ref})
        equal += ours == ref
    print(f"finn-mvau vs FINN's MVAU_hls estimates, MobileNet-V1 on U250: {equal}/{len(layers)} layers identical")
    return {"layers": layers, "identical": equal, "of": len(layers)}


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = list(dict.fromkeys(r["case"] for r in res["rows"]))
    boards = list(dict.fromkeys(r["board"] for r in res["rows"]))
    fig, axes = plt.subplots(1, len(cases), figsize=(5 * len(cases), 4), sharey=True)
    for ax, case in zip(axes, cases):
        rs = [r for r in res["rows"] if r["case"] == case]
        x = range(len(boards))
        for k, res_name in enumerate(("LUT", "BRAM18", "DSP")):
            vals = [min(next(r for r in rs if r["board"] == b)["utilisation"].get(res_name) or 0, 5) for b in boards]
            ax.bar([i + (k - 1) * 0.27 for i in x], vals, 0.27, label=res_name)
        for i, b in enumerate(boards):
            r = next(r for r in rs if r["board"] == b)
            ax.text(i, 0.05, "fits" if r["fits"] else "no", ha="center", fontsize=8, rotation=90)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xticks(list(x))
        ax.set_xticklabels(boards, rotation=45, ha="right", fontsize=8)
        ax.set_title(case, fontsize=9)
        ax.set_yscale("log")
    axes[0].set_ylabel(f"utilisation at {res['target_fps']:g} frames/s (capped at 5)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    write_png(path, fig)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target-fps", type=float, default=1600.0)
    args = ap.parse_args()
    res = run(args.target_fps)
    res["finn_crosscheck"] = finn_crosscheck(args.target_fps)
    write_json(RESULTS / "imagenet_boards.json", res)
    plot(res, RESULTS / "imagenet_boards.png")
    print(f"wrote {RESULTS / 'imagenet_boards.json'}")


if __name__ == "__main__":
    main()
