"""benchmarks/rtl_whole_design.py's design drawing: per-layer padding (mnist28-lenet) and the large
ROMs handed to Yosys as $readmemh."""
from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location(
        "rtl_whole_design", Path(__file__).resolve().parents[1] / "benchmarks" / "rtl_whole_design.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_lenet_shapes_and_padding(bench):
    """conv5x5(6, padding 2) on 28x28 keeps 28x28; conv5x5(16, no padding) on 14x14 gives 10x10; the
    'same'-padded models keep their padding."""
    net = bench.make_net("mnist28-lenet", 0)
    got = [(L.kind, L.padding, L.out_shape) for L in net.layers]
    assert got == [("conv", (2, 2), (6, 28, 28)), ("conv", (0, 0), (16, 10, 10)), ("linear", (0, 0), (120, 1, 1)),
                   ("linear", (0, 0), (84, 1, 1)), ("linear", (0, 0), (10, 1, 1))]
    assert net.layers[2].w.shape == (120, 400)
    assert [L.padding for L in bench.make_net("digits-cnn", 0).layers[:2]] == [(1, 1), (1, 1)]
    assert bench.make_net("mnist1d-cnn", 0).layers[0].padding == (0, 2)


def _rom_words(text: str) -> list[str]:
    return re.findall(r"rom\[\d+\] = \d+'h([0-9a-f]+);", text)


def test_readmemh_roms(bench, tmp_path, monkeypatch):
    """Below the threshold the written design is left as generated; at or above it each ROM becomes a
    $readmemh of a .hex holding the same words in address order."""
    from opq_hw.rtl.gen import write_design
    from opq_hw.rtl.seq import generate_seq

    d = generate_seq(bench.make_net("corpus-mlp-64-32", 0))
    files = write_design(d, tmp_path / "a")
    before = {f: f.read_text() for f in files}
    assert bench.readmemh_roms(files) == 0
    assert all(f.read_text() == t for f, t in before.items())
    monkeypatch.setattr(bench, "READMEMH_MIN_ENTRIES", 1)
    assert bench.readmemh_roms(files) == len(d.layer_modules) == 2
    for f, t in before.items():
        if not _rom_words(t):
            assert f.read_text() == t
            continue
        new = f.read_text()
        assert not _rom_words(new) and f'$readmemh("{f.with_suffix(".rom.hex")}", rom);' in new
        assert f.with_suffix(".rom.hex").read_text().split() == _rom_words(t)


@pytest.mark.tools
@pytest.mark.skipif(shutil.which("yosys") is None, reason="yosys not installed")
def test_readmemh_roms_same_memory_in_yosys(bench, tmp_path, monkeypatch):
    """Yosys reads both forms into the same memory contents (the INIT of the collected memory)."""
    from opq_hw.rtl.gen import write_design
    from opq_hw.rtl.seq import generate_seq

    d = generate_seq(bench.make_net("corpus-mlp-64-32", 1))
    a = write_design(d, tmp_path / "a")
    b = write_design(d, tmp_path / "b")
    monkeypatch.setattr(bench, "READMEMH_MIN_ENTRIES", 1)
    assert bench.readmemh_roms(b) == 2
    inits = []
    for files in (a, b):
        src = next(f for f in files if f.name == "opq_S0.v")
        out = tmp_path / f"{src.parent.name}.il"
        subprocess.run(["yosys", "-q", "-p", f"read_verilog {src}; hierarchy -top opq_S0; proc; memory_collect; "
                        f"write_rtlil {out}"], check=True, timeout=120)
        inits.append([ln for ln in out.read_text().splitlines() if "parameter \\INIT " in ln])
    assert inits[0] and inits[0] == inits[1]
