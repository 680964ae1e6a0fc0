"""Per-layer sensitivity from data (`--sensitivity calib`): how much the model's output moves per
unit of relative weight error in each layer, measured on the calibration samples.

The default allocation is data-free: its layer weighting `relative` (a_i = 1/sum w_i^2) counts each
layer's relative error ||w - w_hat||^2 / ||w||^2 equally. That misses layers the network is more
sensitive to than their weights show (benchmarks/README section 2f: MNIST-1D 40x). With this option
a_i is multiplied by s_i, the layer's measured sensitivity, so that the objective sum_i s_i rho_i
approximates the output change of the whole compressed model (to first order, for independent
errors per layer).

Measurement (float model, no quantizer): for each layer i on its own, Gaussian noise scaled to a
relative energy rho = ||dw||^2 / ||w||^2 = NOISE is added to w_i, and the mean KL divergence of the
perturbed model's softmax from the float model's is taken over the calibration samples, averaged
over DRAWS draws: s_i = mean KL / rho. For small noise this is tr(F_i) ||w_i||^2 / (2 N_i) with F_i
the layer's block of the model's Fisher information (the second-order expansion of the KL), the
"Fisher trace" sensitivity of HAWQ-V2 (Dong et al., NeurIPS 2020) taken per unit relative error
instead of per unit squared error. One forward pass per layer and draw; a fixed seed and one torch
thread, so the same data gives the same numbers bit for bit.

`--sensitivity output-diag` measures no output change: it records, per layer, the mean square E[x_j^2]
of each input column j of the layer (im2col for convolutions: input channel times kernel position,
the columns of weight.reshape(C, -1)) over the calibration samples, in the float model. The exact
error table of the allocation then weights each weight's squared error by its column's E[x_j^2]
(`quant.error_curves` col_weight), rescaled per layer to the weights' energy, so that the default
`relative` weighting reads the diagonal of the relative output error ||(W - W_hat) X||^2 / ||W X||^2
(the diagonal of the input Gram matrix X X^T, as OBS/GPTQ weigh a weight's error by it, without the
correlations; benchmarks/README.md section 2h measures the full matrix as well).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .errors import OpqError

SENSITIVITIES = ("none", "calib", "output-diag")  # --sensitivity: none (data-free, the default) | calib | output-diag (both measured on the calibration samples)
NOISE = 0.05  # relative noise energy injected per layer (||dw||^2 / ||w||^2; a 4-bit layer's relative error is ~0.01-0.05)
DRAWS = 4  # noise draws per layer
BATCH = 256  # samples per forward pass
_FLOOR = 1e-6  # the smallest multiplier, relative to the largest (a layer with no measurable effect keeps a_i > 0)


def _log_probs(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = [model(x[i:i + BATCH]).reshape(len(x[i:i + BATCH]), -1).double() for i in range(0, len(x), BATCH)]
    return torch.log_softmax(torch.cat(out), dim=1)


def measure(model: torch.nn.Module, names: list[str], x, *, noise: float = NOISE, draws: int = DRAWS,
            seed: int = 0) -> dict[str, Any]:
    """The sensitivity record of the layers `names` of the float `model` on the samples `x`:
    {"source": "calib", "samples", "noise", "draws", "seed", "kl_per_noise": {layer: s_i},
    "layers": {layer: s_i / mean s}} ("layers": the multipliers of a_i, mean 1)."""
    from .training import one_thread

    x = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    if x.ndim < 2 or len(x) == 0:
        raise OpqError("--sensitivity calib needs calibration samples (at least one training sample of --data)")
    mods = dict(model.named_modules())
    missing = [n for n in names if n not in mods or not isinstance(getattr(mods[n], "weight", None), torch.Tensor)]
    if missing:
        raise OpqError(f"sensitivity: no weight for layers {missing}")
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    kl: dict[str, float] = {}
    try:
        with one_thread(), torch.no_grad():
            ref = _log_probs(model, x)
            if not torch.isfinite(ref).all():
                raise OpqError("sensitivity: the float model computes NaN or Inf on the calibration samples; "
                               "check the weights and the data")
            p = ref.exp()
            for n in names:
                w = mods[n].weight
                orig = w.detach().clone()
                norm2 = float(orig.double().pow(2).sum())
                total = 0.0
                for _ in range(draws):
                    e = torch.randn(orig.shape, generator=gen, dtype=torch.float64)
                    e *= math.sqrt(noise * norm2 / max(float(e.pow(2).sum()), 1e-300))
                    w.copy_((orig.double() + e).to(orig.dtype))
                    try:
                        lp = _log_probs(model, x)
                    finally:
                        w.copy_(orig)
                    total += float((p * (ref - lp)).sum(dim=1).mean())
                kl[n] = total / draws / noise
    finally:
        model.train(was_training)
    bad = {n: v for n, v in kl.items() if not math.isfinite(v)}
    if bad:
        raise OpqError(f"sensitivity: the output is not finite with noise in layers {sorted(bad)}; check the weights")
    vals = np.array([max(v, 0.0) for v in kl.values()])
    if not vals.max() > 0:
        raise OpqError("sensitivity: no layer changes the model's output on the calibration samples (all predictions "
                       "saturated?); use --sensitivity none")
    vals = np.maximum(vals, _FLOOR * vals.max())
    mult = vals / vals.mean()
    return {"source": "calib", "samples": int(len(x)), "noise": noise, "draws": draws, "seed": seed,
            "kl_per_noise": {n: float(v) for n, v in kl.items()},
            "layers": {n: float(m) for n, m in zip(kl, mult)}}


def input_moments(model: torch.nn.Module, names: list[str], x, *, full: bool = False) -> dict[str, torch.Tensor]:
    """Per layer of `names`, the second moments of its inputs in the float `model` over the samples `x`:
    the columns of im2col for Conv1d/Conv2d (stride, padding and dilation of the layer; groups 1), the
    last dimension for Linear, in the order of weight.reshape(C, -1). full=False: E[x_j^2] per column
    (float64, (D,)); full=True: the Gram matrix X X^T / samples ((D, D))."""
    import torch.nn.functional as F

    from .training import one_thread

    x = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    if x.ndim < 2 or len(x) == 0:
        raise OpqError("--sensitivity output-diag needs calibration samples (at least one training sample of --data)")
    mods = dict(model.named_modules())
    bad = [n for n in names if not isinstance(mods.get(n), (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d))
           or getattr(mods[n], "groups", 1) != 1 or isinstance(getattr(mods[n], "padding", 0), str)]
    if bad:
        raise OpqError(f"sensitivity output-diag: layers {bad} are not Linear or Conv1d/Conv2d with groups=1 and numeric "
                       "padding; use --sensitivity none or calib")
    acc: dict[str, torch.Tensor] = {}

    def hook(name):
        def f(mod, inp, _out):
            a = inp[0].detach().double()
            if isinstance(mod, torch.nn.Conv1d):
                a = F.unfold(a.unsqueeze(2), (1, mod.kernel_size[0]), dilation=(1, mod.dilation[0]),
                             padding=(0, mod.padding[0]), stride=(1, mod.stride[0]))
            elif isinstance(mod, torch.nn.Conv2d):
                a = F.unfold(a, mod.kernel_size, dilation=mod.dilation, padding=mod.padding, stride=mod.stride)
            if a.ndim == 3 and not isinstance(mod, torch.nn.Linear):
                a = a.transpose(1, 2)
            a = a.reshape(-1, a.shape[-1])  # (samples x positions, columns)
            m = a.T @ a if full else (a * a).sum(0)
            acc[name] = acc[name] + m if name in acc else m
        return f

    hooks = [mods[n].register_forward_hook(hook(n)) for n in names]
    was_training = model.training
    model.eval()
    try:
        with one_thread(), torch.no_grad():
            for i in range(0, len(x), BATCH):
                model(x[i:i + BATCH])
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    out = {n: acc[n] / len(x) for n in names}
    bad = [n for n, v in out.items() if not bool(torch.isfinite(v).all())]
    if bad:
        raise OpqError(f"sensitivity: the inputs of layers {bad} are not finite on the calibration samples; check the "
                       "weights and the data")
    return out


def measure_inputs(model: torch.nn.Module, names: list[str], x) -> dict[str, Any]:
    """The `output-diag` record: {"source": "output-diag", "samples", "columns": {layer: [E[x_j^2]]}}."""
    m = input_moments(model, names, x)
    return {"source": "output-diag", "samples": int(len(x)), "columns": {n: [float(v) for v in m[n]] for n in names}}
