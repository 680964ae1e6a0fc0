"""Benchmark: predicted against exact weight error per layer and bit width (OPQ's error models).

For the pre-trained digits-cnn and mnist1d-cnn (`opq_hw.pipeline.pretrained`, seed 0), every
compressed layer, bit widths 2..8 and survivor fractions d in {0.1, 0.2, 0.4, 0.7}:
- exact error: the real quantizer (`opq_hw.quant.error_curves`: per-channel scale max|w_c|/K, in
  float or pow2 mode, clipping, survivors never rounded to zero) after keeping the round(d N)
  weights of the mask order; relative to the layer's sum w^2.
- "laplace, magnitude order" (the closed form of the new derivation): pruning term from the
  layer's own Laplace fit of raw w, quantization term d N qf Delta^2/12 with qf the survivors'
  mean squared channel scale (`allocation._lagrangian`).
- "laplace, channel-normalised" (the original derivation): both terms on u = w / max|w_c|, compared
  with the exact error of that order in the same units.
- "exact-gain": the exact error up to one gain per layer (min_a |w - a w_hat|^2), the error model
  of the inner layers (the default `exact-gain-inner` bounds the gain to [1/2, 2] at the first and
  last layer); reported beside the exact one (it is not a prediction of it).
Writes benchmarks/results/error_model.json and error_model.png. Runtime: a few seconds.

Run:  python benchmarks/bench_error_model.py
"""
from __future__ import annotations

import platform
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from opq_hw import laplace  # noqa: E402
from opq_hw.artifact import write_json, write_png  # noqa: E402

RESULTS = HERE / "results"
MODELS = {"digits-cnn": (1, 1, 8, 8), "mnist1d-cnn": (1, 1, 40)}
BITS = list(range(2, 9))
DENSITIES = [0.1, 0.2, 0.4, 0.7]


def layer_points(name: str, w: torch.Tensor) -> list[dict]:
    from opq_hw.quant import error_curves

    w64 = w.detach().double().reshape(w.shape[0], -1)
    n = w64.numel()
    mc = w64.abs().amax(dim=1)
    u = w64 / mc[:, None]
    s_w, s_u = float((w64 ** 2).sum()), float((u ** 2).sum())
    b_w, _ = laplace.fit_scale(w64.numpy())
    b_u, _ = laplace.fit_scale(u.numpy())
    aw = w64.abs().numpy()
    qf = float(np.sum((mc.numpy() ** 2)[:, None] * aw) / np.sum(aw))
    curves = {}
    for mode in ("float", "pow2"):
        curves[("magnitude", mode)] = error_curves(w, BITS, mask_order="magnitude", scale_mode=mode)
        curves[("gain", mode)] = error_curves(w, BITS, mask_order="magnitude", scale_mode=mode, gain=True)
    # the old order in units of u: a tensor whose channel max is 1 (float scales 1/K, as the model assumes)
    curves[("channel-normalised", "float")] = error_curves(u.reshape(w.shape), BITS, mask_order="magnitude",
                                                          scale_mode="float")
    pts = []
    for d in DENSITIES:
        k = int(round(d * n))
        for i, B in enumerate(BITS):
            delta = float(laplace.step(B))
            t_w, t_u = -b_w * np.log(d), -b_u * np.log(d)
            pred_mag = n * (float(laplace.prune_error(t_w, b_w)) + d * qf * delta ** 2 / 12) / s_w
            pred_old = n * (float(laplace.prune_error(t_u, b_u)) + d * delta ** 2 / 12) / s_u

            def ex(key, s):
                _, prune, quant = curves[key]
                return float(prune[k] + quant[i, k]) / s

            pts.append({"layer": name, "n": n, "bits": B, "density": d,
                        "exact_magnitude_float": ex(("magnitude", "float"), s_w),
                        "exact_magnitude_pow2": ex(("magnitude", "pow2"), s_w),
                        "exact_gain_pow2": ex(("gain", "pow2"), s_w),
                        "laplace_magnitude": pred_mag,
                        "exact_channel_normalised_float": ex(("channel-normalised", "float"), s_u),
                        "laplace_channel_normalised": pred_old})
    return pts


def summary(pts: list[dict]) -> dict:
    out = {}
    for pred, exact in (("laplace_magnitude", "exact_magnitude_float"), ("laplace_magnitude", "exact_magnitude_pow2"),
                        ("laplace_channel_normalised", "exact_channel_normalised_float")):
        rows = {}
        for B in BITS:
            r = np.array([p[pred] / p[exact] for p in pts if p["bits"] == B and p["n"] >= 1000])
            rows[str(B)] = {"median_ratio": round(float(np.median(r)), 3), "min_ratio": round(float(r.min()), 3),
                            "max_ratio": round(float(r.max()), 3)}
        out[f"{pred}/{exact}"] = rows
    return out


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("viridis")
    panels = [("laplace_channel_normalised", "exact_channel_normalised_float", "old: channel-normalised order, u units"),
              ("laplace_magnitude", "exact_magnitude_float", "new closed form: magnitude order, float scales"),
              ("laplace_magnitude", "exact_magnitude_pow2", "new closed form: magnitude order, pow2 scales")]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    for ax, (pk, ek, title) in zip(axes, panels):
        for model, mk in zip(res, ("o", "^")):
            for p in res[model]["points"]:
                ax.scatter(p[ek], p[pk], s=14 if p["n"] >= 1000 else 6, marker=mk,
                           c=[cmap((p["bits"] - 2) / (len(BITS) - 1))], alpha=0.8)
        lim = [1e-4, 10]
        ax.plot(lim, lim, "k:", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lim)
        ax.set_ylim(lim)
        ax.set_xlabel("exact relative error  |w - w_hat|^2 / |w|^2")
        ax.set_ylabel("predicted (Laplace closed form)")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(BITS[0], BITS[-1]))
    fig.colorbar(sm, ax=axes, label="bit width B", fraction=0.02)
    fig.suptitle("per layer x bit width x survivor fraction (0.1/0.2/0.4/0.7); o digits-cnn, ^ mnist1d-cnn; "
                 "small markers: layers < 1000 weights", fontsize=9)
    write_png(path, fig)


def main() -> None:
    torch.set_num_threads(1)
    from opq_hw.layers import inspect_model, layer_weights
    from opq_hw.pipeline import pretrained

    res = {}
    for model, shape in MODELS.items():
        m = pretrained(model, seed=0)
        specs = inspect_model(m, torch.zeros(shape))
        W = layer_weights(m, specs)
        pts = [p for s in specs for p in layer_points(s.name, W[s.name])]
        res[model] = {"layers": [s.name for s in specs], "points": pts}
    allpts = [p for r in res.values() for p in r["points"]]
    out = {"benchmark": "error_model", "bits": BITS, "densities": DENSITIES, "results": res,
           "summary_ratio_predicted_over_exact_layers_ge_1000_weights": summary(allpts),
           "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}}
    write_json(RESULTS / "error_model.json", out)
    plot(res, RESULTS / "error_model.png")
    for k, rows in out["summary_ratio_predicted_over_exact_layers_ge_1000_weights"].items():
        print(k, {b: r["median_ratio"] for b, r in rows.items()})


if __name__ == "__main__":
    main()
