"""The sequential RTL architecture (opq_hw.rtl.seq) alone: hand-made integer networks in Verilator
against IntNet's integer reference, with input gaps; the layer plan's errors."""
from __future__ import annotations

import numpy as np
import pytest

from opq_hw.errors import OpqError
from opq_hw.rtl.intnet import Flatten, IntLayer, IntNet, Pool


def _conv(name, rng, cin, cout, k, in_shape, pad, in_bits, in_signed, shifts, out_bits=4, sparsity=0.6, wmax=7, one_d=False):
    kh = 1 if one_d else k
    w = rng.integers(-wmax, wmax + 1, size=(cout, cin, kh, k))
    w[rng.random(w.shape) < sparsity] = 0
    w[1] = 0  # a channel with no nonzero weight still produces its (requantized) bias
    c, h, wd = in_shape
    ph, pw = (0, pad) if one_d else (pad, pad)
    out_shape = (cout, h + 2 * ph - kh + 1, wd + 2 * pw - k + 1)
    return IntLayer(name, "conv", w, rng.integers(-200, 200, size=cout), in_bits, in_signed, tuple(in_shape), out_shape,
                    (ph, pw), tuple([-8] * cout), tuple(int(s) for s in rng.choice(shifts, size=cout)), out_bits, -4)


def _linear(name, rng, n_in, n_out, in_shape, in_bits, last, out_bits=4):
    w = rng.integers(-5, 6, size=(n_out, n_in))
    w[rng.random(w.shape) < 0.5] = 0
    return IntLayer(name, "linear", w, rng.integers(-100, 100, size=n_out), in_bits, False, tuple(in_shape),
                    (n_out, 1, 1), (0, 0), tuple([-7] * n_out), None if last else tuple([-3] * n_out),
                    None if last else out_bits, None if last else -3)


def _net_2d(rng) -> IntNet:
    c0 = _conv("c0", rng, 2, 5, 3, (2, 6, 6), 1, 6, True, [-5, -3, 0, 1])
    c1 = _conv("c1", rng, 5, 4, 3, (5, 3, 3), 1, 4, False, [-4, -2])
    fc = _linear("fc", rng, 4 * 3 * 3, 3, (4, 3, 3), 4, last=True)
    return IntNet((2, 6, 6), 6, True, -5, [c0, Pool(2), c1, Flatten(), fc], (2, 6, 6))


def _net_1d(rng) -> IntNet:
    c0 = _conv("c0", rng, 3, 4, 5, (3, 1, 12), 2, 5, False, [-6, -1], one_d=True)
    fc0 = _linear("fc0", rng, 4 * 1 * 4, 6, (4, 1, 4), 4, last=False)
    fc1 = _linear("fc1", rng, 6, 2, (6, 1, 1), 4, last=True)
    return IntNet((3, 1, 12), 5, False, -5, [c0, Pool(3), Flatten(), fc0, fc1], (3, 12))


def case(which: str) -> tuple[IntNet, np.ndarray, np.ndarray]:
    """A hand-made network ("2d" or "1d"), 12 integer inputs and their integer reference outputs."""
    rng = np.random.default_rng(3 if which == "2d" else 4)
    net = _net_2d(rng) if which == "2d" else _net_1d(rng)
    lo, hi = (-(2 ** (net.in_bits - 1)), 2 ** (net.in_bits - 1) - 1) if net.in_signed else (0, 2 ** net.in_bits - 1)
    xi = rng.integers(lo, hi + 1, size=(12,) + net.in_shape)
    xi[0] = hi  # saturating inputs: the accumulator width must hold the extremes
    xi[1] = lo
    return net, xi, net.forward_int(xi)


@pytest.mark.slow
@pytest.mark.tools
@pytest.mark.parametrize("which", ["2d", "1d"])
def test_seq_design_matches_integer_reference(tmp_path, which):
    from opq_hw.flows.rtl_flow import _pixels
    from opq_hw.rtl.gen import write_design
    from opq_hw.rtl.seq import generate_seq
    from opq_hw.rtl.verilator import build_sim, run_sim, to_signed

    net, xi, ref = case(which)
    d = generate_seq(net)
    binary = build_sim(write_design(d, tmp_path / "src"), tmp_path / "sim")
    px = _pixels(net, xi * 2.0 ** net.in_exp, "seq")
    assert px.shape == (12, int(np.prod(net.in_shape)))
    runs = {}
    for gap in (0, 400):  # back to back, and with random holes in the input stream
        runs[gap] = run_sim(binary, px, d.n_out, tmp_path / f"run{gap}", gap_permille=gap)
        np.testing.assert_array_equal(to_signed(runs[gap].words, d.out_w), ref)
    # cycles per sample: the beats, every layer's (positions x pool window x ROM entries), the drains, the outputs
    assert abs(max(runs[0].latency) - d.latency_stages) <= 4
    assert sum(m["cycles"] for m in d.layer_modules) < d.latency_stages
    for m, L in zip(d.layer_modules, net.layers):
        empty = sum(1 for co in range(L.w.shape[0]) if not np.any(L.w[co]))
        assert m["rom_entries"] == np.count_nonzero(L.w) + empty  # only the nonzero weights are stored


def test_seq_rejects_a_pool_it_cannot_fuse():
    from opq_hw.rtl.seq import generate_seq

    rng = np.random.default_rng(0)
    net = _net_2d(rng)
    net.stages.insert(0, Pool(2))
    with pytest.raises(OpqError, match="pool.*da4ml"):
        generate_seq(net)
