"""Closed forms of the Laplace weight model used by the OPQ allocation.

Weights of one layer, normalised per output channel, are modelled as a zero-mean Laplace
density f(u) = exp(-|u|/b) / (2b) (OPQ, Hu et al., AAAI 2021; derivation in shared OPQ.md).
"""
from __future__ import annotations

import numpy as np


def fit_scale(u: np.ndarray, centre: float | None = None) -> tuple[float, float]:
    """Laplace MLE: centre = median, b = mean |u - centre|.

    Returns (b, centre). Pruning stays around 0; the centre is reported so that a
    clearly off-centre layer is visible in the allocation's notes. `centre`: the median of u if
    already known (`median` of a float32 copy of the same values).
    """
    u = np.asarray(u, dtype=np.float64).ravel()
    centre = float(np.median(u)) if centre is None else centre
    dev = u - centre
    return float(np.mean(np.abs(dev, out=dev))), centre  # in place: one float64 temporary, not two


def median(x: np.ndarray) -> float:
    """`np.median` of x's float64 values, with the selection made in x's own dtype (half the
    memory traffic for float32): the conversion to float64 keeps every value and so the order
    statistics, and the two middle values are averaged in float64 as `np.median` does."""
    x = np.asarray(x).ravel()
    n = x.size
    part = np.partition(x, n // 2)  # one kth (a second one costs ~5x more): the lower middle is the max below it
    mid = part[n // 2:n // 2 + 1] if n % 2 else np.array([part[:n // 2].max(), part[n // 2]])
    return float(np.mean(mid.astype(np.float64)))


def prune_ratio(t, b):
    """Fraction of weights with |u| < t: p(t) = 1 - exp(-t/b)."""
    return 1.0 - np.exp(-np.asarray(t, dtype=np.float64) / b)


def threshold(p, b):
    """Inverse of `prune_ratio`: t(p) = -b ln(1 - p)."""
    return -b * np.log1p(-np.asarray(p, dtype=np.float64))


def prune_error(t, b):
    """E[u^2; |u| < t] = 2b^2 - exp(-t/b) (t^2 + 2bt + 2b^2): squared error of zeroing |u| < t."""
    t = np.asarray(t, dtype=np.float64)
    return 2 * b * b - np.exp(-t / b) * (t * t + 2 * b * t + 2 * b * b)


def step(bits):
    """Step of the shared integer codebook {-K..K}, K = 2^(B-1) - 1, on weights normalised to [-1, 1]."""
    return 1.0 / (2.0 ** (np.asarray(bits, dtype=np.float64) - 1) - 1)


def quant_error(delta):
    """Uniform rounding error per surviving weight: delta^2 / 12."""
    return np.asarray(delta, dtype=np.float64) ** 2 / 12.0
