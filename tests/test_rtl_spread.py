"""benchmarks/rtl_yosys_spread.py: the unused modules it reads first never reach synthesis, and its summary
of the runs (min / median / max, the cells that moved, the estimate's error against each)."""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("rtl_yosys_spread", ROOT / "benchmarks" / "rtl_yosys_spread.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(lut: int, lut4: int, per: list[int]) -> dict:
    keys = dict.fromkeys(_bench().KEYS, 0)
    return {"total": {**keys, "lut_equiv": lut, "lut": lut4, "carry": 74, "ff": 460},
            "modules": [{**keys, "lut_equiv": p} for p in per]}


def test_summary_of_runs():
    b = _bench()
    row = {"model": "m", "variant": 0, "family": "ecp5",
           "runs": [_run(1546, 1250, [663, 357]), _run(1418, 1122, [571, 319]), _run(1413, 1117, [571, 319])]}
    whole = {"rows": [{"model": "m", "variant": 0, "family": "ecp5", "total": {"lut_equiv": 1544},
                       "estimate": {"LUT": 1296}, "heldout": True},
                      {"model": "m", "variant": 0, "family": "ecp5", "arch": "da", "total": {"lut_equiv": 1},
                       "estimate": {"LUT": 1}}]}
    s = b.summarize(row, whole)
    assert (s["lut_min"], s["lut_median"], s["lut_max"]) == (1413, 1418.0, 1546)
    assert s["moved"] == ["lut_equiv", "lut"]  # the carry chains and flip-flops stayed
    assert s["modules"] == [{"min": 571, "max": 663}, {"min": 319, "max": 357}]
    assert s["committed_run"] == 1544 and s["heldout"]
    assert s["err_median"] == round(1296 / 1418 - 1, 4) and s["err_committed"] == round(1296 / 1544 - 1, 4)
    assert "| **H** | 1413 / 1418 / 1546 |" in b.markdown({"shifts": 3, "rows": [{**row, "summary": s}]})
    line = b.heldout_lines([{**row, "summary": s}])["ecp5"]
    assert "against the median run: mean 8.6%" in line and "against the committed run: mean 16.1%" in line


@pytest.mark.tools
@pytest.mark.skipif(shutil.which("yosys") is None, reason="yosys not installed")
def test_unused_modules_are_dropped(tmp_path):
    """`hierarchy -top` removes the modules read first: the design that reaches synthesis is the same."""
    b = _bench()
    (tmp_path / "unused.v").write_text(b.unrelated_modules(3))
    (tmp_path / "top.v").write_text("module opq_top (input clk, input a, output reg q); always @(posedge clk) q <= a; "
                                    "endmodule\n")
    subprocess.run(["yosys", "-q", "-p", "read_verilog unused.v top.v; tee -q -o before.txt ls; hierarchy -top opq_top; "
                    "tee -q -o after.txt ls"], cwd=tmp_path, check=True)
    before, after = (tmp_path / "before.txt").read_text(), (tmp_path / "after.txt").read_text()
    assert all(f"opq_unused{j}" in before for j in range(3)) and "opq_top" in before
    assert "opq_unused" not in after and "opq_top" in after
