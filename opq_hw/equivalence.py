"""The Brevitas reference and the sample-by-sample comparison that every simulation level and
every flow's own check (the RTL flow's Verilator run) use: below `opq_hw.simulate` and the flows,
so neither imports the other for it."""
from __future__ import annotations

from typing import Any

import numpy as np

from .errors import OpqError


def reference(run, x_q: np.ndarray, batch: int = 512) -> np.ndarray:
    """The Brevitas model's float32 logits for inputs on the input grid."""
    import torch

    outs = []
    with torch.no_grad():
        for i in range(0, len(x_q), batch):
            y = run.qmodel(torch.as_tensor(x_q[i:i + batch]))
            outs.append(y.numpy())  # QuantModel.forward returns a plain tensor
    return np.concatenate(outs).astype(np.float32).reshape(len(x_q), -1)


def compare(ref: np.ndarray, out: np.ndarray, lsb: np.ndarray | None) -> dict[str, Any]:
    """Sample-by-sample comparison of two logit arrays."""
    if out.shape != ref.shape:
        raise OpqError(f"level output shape {out.shape} differs from the reference {ref.shape}")
    diff = np.abs(out.astype(np.float64) - ref.astype(np.float64))
    exact_rows = np.all(out == ref, axis=1)
    res: dict[str, Any] = {
        "n": int(len(ref)),
        "exact_samples": int(exact_rows.sum()),
        "bit_exact": bool(exact_rows.all()) and bool(np.all(np.isfinite(out))),
        "max_abs_diff": float(diff.max()) if diff.size else 0.0,
        "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
        "argmax_agreement": float(np.mean(out.argmax(1) == ref.argmax(1))) if len(ref) else 1.0,
    }
    if lsb is not None and lsb.size == ref.shape[1]:
        res["max_diff_lsb"] = float((diff / lsb[None, :]).max()) if diff.size else 0.0
        res["output_lsb"] = [float(v) for v in lsb]
    else:
        res["max_diff_lsb"] = None
    return res
