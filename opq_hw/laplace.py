"""Closed forms of the Laplace weight model used by the OPQ allocation.

Weights of one layer, normalised per output channel, are modelled as a zero-mean Laplace
density f(u) = exp(-|u|/b) / (2b) (OPQ, Hu et al., AAAI 2021; derivation in shared OPQ.md).
"""
from __future__ import annotations

import numpy as np


def fit_scale(u: np.ndarray) -> tuple[float, float]:
    """Laplace MLE: centre = median, b = mean |u - centre|.

    Returns (b, centre). Pruning stays around 0; the centre is reported so that a
    clearly off-centre layer is visible in the allocation's notes.
    """
    u = np.asarray(u, dtype=np.float64).ravel()
    centre = float(np.median(u))
    return float(np.mean(np.abs(u - centre))), centre


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
