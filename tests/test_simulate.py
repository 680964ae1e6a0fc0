"""The simulation harness: levels, comparison, records, errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from opq_hw.errors import OpqError


def test_levels_are_lazy_module_function_strings():
    import sys

    import opq_hw.simulate as sim

    assert sim.LEVELS["qonnx"] == "opq_hw.simulate:_run_qonnx"
    assert sim.LEVELS["csim"] == "opq_hw.flows.hls4ml_flow:simulate_csim"
    assert all(v.count(":") == 1 for v in sim.LEVELS.values())
    import subprocess  # importing the harness and the flow module loads none of the heavy packages

    code = ("import sys, opq_hw.simulate, opq_hw.flows.hls4ml_flow; "
            "bad=[m for m in ('hls4ml','qonnx','brevitas','torch') if m in sys.modules]; print(bad); sys.exit(bool(bad))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_unknown_level_is_named():
    from opq_hw.simulate import level_function

    with pytest.raises(OpqError, match="'vcs'.*csim"):
        level_function("vcs")


def test_compare_counts_exact_rows_and_lsbs():
    from opq_hw.simulate import compare

    ref = np.array([[0.5, -1.0], [0.25, 0.0], [1.0, 2.0]], dtype=np.float32)
    out = ref.copy()
    out[1, 1] += 0.25  # 2 LSBs of 0.125 in channel 1
    res = compare(ref, out, np.array([0.0625, 0.125]))
    assert res["exact_samples"] == 2 and res["n"] == 3 and not res["bit_exact"]
    assert res["max_diff_lsb"] == 2.0 and res["max_abs_diff"] == 0.25
    assert compare(ref, ref.copy(), None)["bit_exact"]
    nan = ref.copy()
    nan[0, 0] = np.nan
    assert not compare(ref, nan, None)["bit_exact"]
    with pytest.raises(OpqError, match="shape"):
        compare(ref, ref[:, :1], None)


@pytest.mark.slow
def test_qonnx_level_bit_exact_and_record(demo_run, tmp_path, capsys):
    import shutil

    from opq_hw.simulate import simulate

    demo_run = shutil.copytree(demo_run, tmp_path / "run")  # this test writes into the run: use a private copy
    res = simulate(demo_run, "qonnx")
    out = capsys.readouterr().out
    assert "bit-exact: yes" in out.splitlines()
    assert res["bit_exact"] and res["exact_samples"] == res["n"] > 300 and res["max_diff_lsb"] == 0.0
    rec = json.loads((demo_run / "reports" / "simulate_qonnx.json").read_text())
    assert rec["bit_exact"] is True and rec["n"] == res["n"] and rec["accuracy"] == res["accuracy"]
    assert 0.5 < res["accuracy"] <= 1.0 and res["throughput_sps"] > 0


@pytest.mark.slow
def test_pluggable_level_and_mismatch_is_reported(demo_run, monkeypatch, capsys):
    import opq_hw.simulate as sim

    def off_by_one_lsb(run, x_q):
        y = sim.reference(run, x_q)
        y[::7, 3] += sim.output_lsb(run, x_q)[3]
        return y

    monkeypatch.setitem(sim.LEVELS, "fake", "tests_fake_level:off_by_one_lsb")
    import sys
    import types

    mod = types.ModuleType("tests_fake_level")
    mod.off_by_one_lsb = off_by_one_lsb
    monkeypatch.setitem(sys.modules, "tests_fake_level", mod)
    res = sim.simulate(demo_run, "fake", n=70, write=False)
    assert "bit-exact: no" in capsys.readouterr().out
    assert not res["bit_exact"] and res["exact_samples"] == 60 and res["max_diff_lsb"] == 1.0


@pytest.mark.slow
def test_golden_data_and_bad_data(demo_run):
    from opq_hw.simulate import simulate

    res = simulate(demo_run, "qonnx", data="golden", n=5, write=False, log=None)
    assert res["bit_exact"] and res["n"] == 5 and res["accuracy"] is not None  # golden_labels.npy beside it
    with pytest.raises(OpqError, match="mnist1d"):
        simulate(demo_run, "qonnx", data="mnist1d", write=False, log=None)
    with pytest.raises(OpqError, match="positive"):
        simulate(demo_run, "qonnx", n=0, write=False, log=None)
    with pytest.raises(OpqError, match="backend.*'qonnx'"):
        simulate(demo_run, "qonnx", n=3, write=False, log=None, backend="Vitis")
