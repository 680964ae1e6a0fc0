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
