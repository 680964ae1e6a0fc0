"""The flip-flops the generator says synthesis keeps of a pipelined layer module (opq_hw.rtl.kept_bits
through gen.module_registers) against what Yosys keeps, on small layers with what triggers each rule:
odd biases (constant low accumulator bits, a constant sticky bit), a zero column (a constant
output), weights sharing factors of two (pass-through low bits), deep and shallow pipelines."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from opq_hw.rtl.intnet import Flatten, IntLayer, IntNet

pytestmark = [pytest.mark.slow, pytest.mark.tools]


def _net(kind: str, seed: int) -> IntNet:
    rng = np.random.default_rng(seed)
    if kind == "conv":
        cin, cout, h = 2, 8, 5
        w = rng.integers(-7, 8, size=(cout, cin, 3, 3))
        in_shape, out_shape, pad = (cin, h, h), (cout, h, h), (1, 1)
    else:
        cin, cout = 24, 12
        w = rng.integers(-7, 8, size=(cout, cin))
        in_shape, out_shape, pad = (1, 1, cin), (cout, 1, 1), (0, 0)
    w[rng.random(w.shape) < 0.5] = 0
    w[1] = 0  # a constant output: the bias alone
    w[2] *= 4  # weights sharing a factor 4: the accumulator's two low bits are the bias's
    b = rng.integers(-150, 150, size=cout) | 1  # odd: a constant 1 among the sticky bits
    L = IntLayer("l0", "conv" if kind == "conv" else "linear", w.astype(np.int64), b.astype(np.int64), 8, True,
                 in_shape, out_shape, padding=pad, w_exp=tuple([-10] * cout),
                 out_shift=tuple(int(s) for s in rng.integers(-9, -2, size=cout)), out_bits=6, out_exp=-4)
    head = IntLayer("head", "linear", rng.integers(-1, 2, size=(2, int(np.prod(out_shape)))).astype(np.int64),
                    np.zeros(2, dtype=np.int64), 6, False, out_shape, (2, 1, 1), w_exp=(-12, -12))
    return IntNet(in_shape, 8, True, -4, [L, Flatten(), head])


@pytest.mark.parametrize("kind,seed,cutoff", [("linear", 1, 2.0), ("linear", 2, 5.0), ("conv", 3, 2.0)])
def test_pipelined_registers_match_yosys(tmp_path, kind, seed, cutoff):
    from opq_hw.errors import OpqError
    from opq_hw.rtl import eda
    from opq_hw.rtl.gen import generate, write_design

    try:
        eda._need("yosys")
    except OpqError as e:
        pytest.fail(str(e))
    d = generate(_net(kind, seed), pipeline=cutoff)
    m = d.layer_modules[0]
    assert m["kernel_stages"] >= (2 if cutoff < 3 else 1)
    files = write_design(d, tmp_path / "src")
    st = eda.synth(files, "opq_L0", "ecp5", tmp_path / "syn", json_out=False, timeout=600)
    assert m["registers"] == st["ff"]


# (width, zero low bits, bus width, shift, out_bits): each branch of requant_live_bits
_REQUANT_CASES = [(9, 0, 11, -8, 8), (9, 0, 11, -10, 8), (12, 0, 12, -12, 8), (5, 0, 7, -9, 6), (11, 0, 13, -3, 8),
                  (7, 1, 10, -4, 4), (4, 2, 8, -2, 8), (5, 1, 8, 0, 8), (5, 0, 5, 2, 8), (8, 1, 11, 0, 8),
                  (9, 0, 11, 0, 8), (12, 2, 16, 1, 6), (3, 0, 3, 0, 4)]


def test_requant_registers_match_yosys():
    """One registered requantizer per case, signed accumulators (benchmarks/requant_ff_sweep.py's
    modules and Yosys session on a small grid)."""
    import importlib.util

    from opq_hw.rtl.gen import requant_live_bits

    spec = importlib.util.spec_from_file_location("requant_ff_sweep", Path(__file__).resolve().parents[1] / "benchmarks" /
                                                  "requant_ff_sweep.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    got = bench.sweep([(w, lo, aw, sh, True, ob) for w, lo, aw, sh, ob in _REQUANT_CASES])
    want = [requant_live_bits(w, -lo, sh, ob, aw) for w, lo, aw, sh, ob in _REQUANT_CASES]
    assert got == want
    assert len(set(want)) >= 6  # the cases cover different counts, not one value
