"""`--tail hw` pieces that need no tool: the host head, the stated tolerance, the comparison and the refusals."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from opq_hw.errors import OpqError
from opq_hw.tail import TailNotInHardware, TailTables, compare_tail, host, hw_head, refuse_tail_hw


def test_host_heads():
    z = np.array([[0.0, 1.0, -2.0], [3.0, 3.0, 3.0]])
    p = host("softmax", z)
    assert np.allclose(p.sum(1), 1) and np.allclose(p[1], 1 / 3)
    assert p[0, 1] == pytest.approx(math.e / (1 + math.e + math.exp(-2)))
    assert host("sigmoid", np.array([[0.0, 2.0]]))[0, 1] == pytest.approx(1 / (1 + math.exp(-2)))


def test_tolerance_shrinks_with_the_tables_and_grows_with_the_outputs():
    for op in ("softmax", "sigmoid"):
        t = [TailTables(op, 10, bits).tolerance() for bits in (8, 10, 12, 14)]
        assert all(a > b > 0 for a, b in zip(t, t[1:])), t
    assert TailTables("softmax", 100).tolerance() > TailTables("softmax", 10).tolerance()
    # the stated types: the softmax sum holds n values in [0, 1] exactly; the index types are the table's bits
    ty = TailTables("softmax", 10).types()
    assert ty["accum_t"] == "ufixed<22,5,TRN,SAT>" and ty["inv_inp_t"] == "ufixed<12,4,TRN,SAT>"
    assert ty["inp_norm_t"] == "ufixed<12,3,TRN,SAT>"


def test_compare_within_and_beyond_the_tolerance():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(50, 10))
    tail = TailTables("softmax", 10).record()
    p = host("softmax", z)
    ok = compare_tail(z, (p + tail["tolerance"] * 0.9).astype(np.float32), tail)
    assert ok["within_tolerance"] and ok["within_samples"] == 50 and not ok["bit_exact"]
    bad = p.copy()
    bad[7, 3] += 1.5 * tail["tolerance"]
    res = compare_tail(z, bad, tail)
    assert not res["within_tolerance"] and res["within_samples"] == 49
    nan = p.copy()
    nan[0, 0] = np.nan
    assert not compare_tail(z, nan, tail)["within_tolerance"]


def test_refusals_name_the_problem(tmp_path):
    refuse_tail_hw("rtl", None, "x")
    refuse_tail_hw("rtl", "host", "x")
    with pytest.raises(TailNotInHardware, match="--tail hw: the rtl flow cannot compute"):
        refuse_tail_hw("rtl", "hw", "no tables")
    with pytest.raises(OpqError, match="unknown --tail"):
        refuse_tail_hw("rtl", "fpga", "x")
    run = SimpleNamespace(path=tmp_path / "r", manifest={"frontend": {"tail": None}})
    with pytest.raises(TailNotInHardware, match="has no Softmax/Sigmoid head"):
        hw_head(run)
    run.manifest["frontend"]["tail"] = "log-softmax"
    with pytest.raises(TailNotInHardware, match="log-softmax, which hls4ml 1.3.0 has no layer for"):
        hw_head(run)
    run.manifest["frontend"]["tail"] = "sigmoid"
    assert hw_head(run) == "sigmoid"


def test_rtl_and_finn_builds_refuse_tail_hw_first(tmp_path):
    from opq_hw.flows import finn_flow, rtl_flow

    for flow, name in ((rtl_flow, "rtl"), (finn_flow, "FINN")):
        with pytest.raises(TailNotInHardware, match=f"the {name} flow cannot compute a Softmax/Sigmoid head"):
            flow.build(tmp_path / "no-run", board="pynq-z2", tail="hw", log=None)
