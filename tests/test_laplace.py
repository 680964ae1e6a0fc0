"""Laplace closed forms against Monte-Carlo samples."""
import numpy as np
import pytest

from opq_hw import laplace


@pytest.mark.parametrize("b", [0.05, 0.2, 1.0])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_prune_ratio_and_error_match_monte_carlo(b, p):
    rng = np.random.default_rng(0)
    u = rng.laplace(0.0, b, size=2_000_000)
    t = laplace.threshold(p, b)
    assert laplace.prune_ratio(t, b) == pytest.approx(p, rel=1e-12)
    small = np.abs(u) < t
    assert small.mean() == pytest.approx(p, abs=2e-3)
    mc = np.mean(np.where(small, u * u, 0.0))
    assert laplace.prune_error(t, b) == pytest.approx(mc, rel=1e-2)


def test_fit_scale_recovers_b():
    rng = np.random.default_rng(1)
    b, centre = laplace.fit_scale(rng.laplace(0.0, 0.3, size=500_000))
    assert b == pytest.approx(0.3, rel=1e-2)
    assert abs(centre) < 5e-3


def test_quant_error_matches_uniform_rounding():
    rng = np.random.default_rng(2)
    for bits in (2, 3, 4, 6):
        d = laplace.step(bits)
        u = rng.uniform(-1, 1, 1_000_000)
        err = np.mean((u - np.round(u / d) * d) ** 2)
        assert laplace.quant_error(d) == pytest.approx(err, rel=2e-2)
    assert laplace.step(2) == 1.0 and laplace.step(3) == pytest.approx(1 / 3)


@pytest.mark.parametrize("qf", [1.0, 0.05, 0.4])
@pytest.mark.parametrize("bits", [3, 5])
def test_stationary_threshold_minimises_the_lagrangian(qf, bits):
    """The raw-magnitude derivation: J(T) = a[e_p(T; b) + exp(-T/b) qf D^2/12] + lam B exp(-T/b)
    (per weight) is minimised at T* = sqrt(qf D^2/12 + lam B / a); qf = 1 is the original form."""
    b, a, lam = 0.15, 2.0, 1e-4
    d2 = qf * laplace.step(bits) ** 2
    t = np.linspace(1e-4, 2.0, 400_001)
    J = a * (laplace.prune_error(t, b) + np.exp(-t / b) * d2 / 12) + lam * bits * np.exp(-t / b)
    assert t[np.argmin(J)] == pytest.approx(np.sqrt(d2 / 12 + lam * bits / a), abs=1e-4)
