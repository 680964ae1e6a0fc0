"""The wheel installs and runs away from the source tree.

Builds the wheel offline from a copy of the shipped files, installs it with `--no-deps` into a fresh
virtual environment, and runs the CLI from an unrelated directory. The fresh environment reaches
the dependencies (torch, brevitas, hls4ml, ...) through a `.pth` file naming this interpreter's
site-packages, appended after its own: its `opq_hw` is the wheel's, not the editable source tree
(asserted), and nothing is downloaded or reinstalled.
"""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ("pyproject.toml", "setup.py", "README.md", "opq_hw", "board_configs", "hls", "sim")
DATA_FOLDERS = ("board_configs", "hls", "sim")
JUNK = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(ROOT).as_posix() for p in folder.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built offline (no index, no build isolation) from a clean copy of the shipped files,
    so no stale `build/` of the checkout can leak into it."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in SHIPPED:
        p = ROOT / name
        shutil.copytree(p, src / name, ignore=JUNK) if p.is_dir() else shutil.copy2(p, src / name)
    out = tmp / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(out), str(src)], check=True, capture_output=True, text=True)
    (whl,) = out.glob("opq_hw-*.whl")
    return whl


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed (`--no-deps`), then the dependencies made visible."""
    env_dir = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    py = env_dir / "bin" / "python"
    # pip of this interpreter installs into the fresh one; it sees an empty environment (no .pth yet)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q",
                    str(wheel)], check=True, capture_output=True, text=True)
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    deps = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (Path(site) / "opq_hw_test_deps.pth").write_text("".join(f"{d}\n" for d in deps))
    return env_dir


def _run(venv: Path, cwd: Path, *args: str, timeout: float = 300) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "OPQ_HW_BOARDS")}
    r = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{args} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return r.stdout


def test_wheel_ships_the_data_folders(wheel):
    from opq_hw import resources

    setup_folders = next(ast.literal_eval(n.value) for n in ast.parse((ROOT / "setup.py").read_text()).body
                         if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "FOLDERS")
    assert setup_folders == resources.FOLDERS == DATA_FOLDERS
    names = set(zipfile.ZipFile(wheel).namelist())
    data = [f for d in DATA_FOLDERS for f in _files(ROOT / d)]
    assert any(f.startswith("board_configs/pynq-z2.yaml") for f in data)
    assert any(f.startswith("hls/rtl/") and f.endswith(".v") for f in data)
    assert "sim/tb_stream.cpp" in data
    missing = [f for f in data if f"opq_hw/_data/{f}" not in names]
    assert not missing, f"the wheel lacks {missing}"
    missing_py = [f for f in _files(ROOT / "opq_hw") if f not in names]
    assert not missing_py, f"the wheel lacks {missing_py}"
    assert not [n for n in names if n.startswith(("board_configs/", "hls/", "sim/", "tests/"))]


@pytest.mark.tools  # hls4ml and g++ for the csim level
def test_installed_wheel_runs_from_elsewhere(venv, tmp_path):
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    py, cli = str(venv / "bin" / "python"), str(venv / "bin" / "opq-hw")
    where = _run(venv, cwd, py, "-c", "import opq_hw, opq_hw.resources as r; "
                 "print(opq_hw.__file__); print(r.board_configs()); print(r.hdl_dir()); print(r.sim_dir()); "
                 "print(r.source_root())").split("\n")
    for p in where[:4]:
        assert Path(p).resolve().is_relative_to(venv.resolve()), f"{p} is not the installed wheel's"
    assert where[4] == "None"

    boards = _run(venv, cwd, cli, "boards")
    for name in ("pynq-z2", "ecp5-85f", "ice40-up5k"):
        assert name in boards

    _run(venv, cwd, cli, "compress", "--model", "digits-mlp", "--data", "digits", "--target-cr", "20",
         "--epochs", "0", "--out", "run")
    est = _run(venv, cwd, cli, "estimate", "run", "--board", "pynq-z2")
    assert "hls4ml-latency on pynq-z2: fits" in est
    sim = _run(venv, cwd, cli, "simulate", "run", "--level", "csim")
    assert "bit-exact: yes" in sim
    assert sorted(p.name for p in cwd.iterdir()) == ["run"]  # nothing written beside it
