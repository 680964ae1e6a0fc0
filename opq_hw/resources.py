"""Where the files shipped beside the Python lie: the design card's top-level folders.

- `board_configs/`: data (one YAML per board, the RTL cost-model calibrations);
- `hls/`: the hardware sources the flows compile (today only the HDL of the open RTL flow, `hls/rtl/`);
- `sim/`: what a simulator runs (the Verilator testbench `sim/tb_stream.cpp`).

They stay top-level folders of the repository; the wheel carries them inside the package as
`opq_hw/_data/<folder>` (the mapping is `[tool.setuptools.package-dir]` in pyproject.toml), read
here with `importlib.resources`. An editable install or a source checkout on PYTHONPATH has no
`_data`: then the folders are found beside the package, in the source tree. Every module asks this
one for those paths; none works them out from its own `__file__`.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from .errors import OpqError

FOLDERS = ("board_configs", "hls", "sim")
PACKAGE_DATA = "_data"  # opq_hw/_data/<folder> in the wheel


def source_root() -> Path | None:
    """The source checkout the package is imported from (the folder holding `pyproject.toml` beside
    `opq_hw/`), or None when it is installed from a wheel."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").is_file() and (root / "opq_hw").is_dir() else None


def data_dir(folder: str) -> Path:
    """The shipped folder `folder` (one of FOLDERS): inside the installed package, else in the
    source tree."""
    if folder not in FOLDERS:
        raise ValueError(f"unknown data folder {folder!r}; one of {FOLDERS}")
    installed = resources.files(__package__).joinpath(PACKAGE_DATA, folder)
    if installed.is_dir():
        return Path(str(installed))  # a plain directory: the wheel is installed unzipped
    root = source_root()
    if root is not None and (root / folder).is_dir():
        return root / folder
    raise OpqError(f"opq-hw's {folder}/ folder is missing from this installation (looked in {installed} "
                   f"and beside the package); reinstall opq-hw (`pip install .` from the repository)")


def board_configs() -> Path:
    """`board_configs/`: the board YAMLs and the RTL calibrations."""
    return data_dir("board_configs")


def hdl_dir() -> Path:
    """`hls/rtl/`: the hand-written Verilog modules of the open RTL flow."""
    return data_dir("hls") / "rtl"


def sim_dir() -> Path:
    """`sim/`: the Verilator testbench."""
    return data_dir("sim")
