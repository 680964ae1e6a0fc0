"""The Verilator twin of a run's board top, for `opq-hw hil RUN --port sim`.

The sources are those `opq-hw build RUN --flow rtl --board B` wrote and recorded (RUN/build/rtl/src:
the accelerator, the serial link, `opq_board`), so the twin is the bitstream's design; `opq_twin`
(`opq_hw.rtl.board.twin_top`) gives it the ports sim/tb_uart.cpp drives (clk, rst, rx, tx) and
sets its UART bit period. Compiled into RUN/build/hil_twin/ (written atomically and recorded in the
manifest like every build) and reused while the sources, the harness and the bit period are the same.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Callable

from ..errors import OpqError

TWIN_DIR = "hil_twin"
BINARY = "Vopq_twin"
SOURCES = (".v", ".sv")
OPT = "-O1"  # the twin runs long (a UART bit is many cycles): ~5x the speed of -O0 for ~40% more build time


def _sources(run_path: Path, arts: dict[str, str]) -> dict[str, str]:
    """{relative path: sha256} of the board top's recorded HDL sources."""
    src = {k: v for k, v in arts.items() if k.startswith("build/rtl/src/") and k.endswith(SOURCES)}
    if "build/rtl/src/opq_board.v" not in src:
        raise OpqError(f"{run_path}/build/rtl/src holds no recorded opq_board.v; run `opq-hw build {run_path} --flow rtl "
                       "--board <dev board>` again")
    return src


def twin_binary(run_path: Path, board, clks_per_bit: int, log: Callable[[str], Any] | None = None) -> Path:
    """The twin of the board top in `run_path`/build/rtl at `clks_per_bit`: the cached build if it
    matches, else a new one. `board` is the dev board (`opq_hw.boards.Board`) the top was built for."""
    from ..artifact import read_json, write_json
    from ..resources import sim_dir
    from ..rundir import build_dir, read_manifest, sha256_file, verify
    from .board import twin_top
    from .verilator import build_sim

    run_path = Path(run_path).resolve()
    arts = read_manifest(run_path)["artifacts"]
    src = _sources(run_path, arts)
    verify(run_path, sorted(src))  # unchanged since the build wrote them
    top = twin_top(board)
    key = hashlib.sha256(json.dumps({"src": src, "twin": top, "harness": sha256_file(sim_dir() / "tb_uart.cpp"),
                                     "clks_per_bit": int(clks_per_bit), "opt": OPT}, sort_keys=True).encode()).hexdigest()[:16]
    dest = run_path / "build" / TWIN_DIR
    meta, binary = dest / "twin.json", dest / BINARY
    recorded = all(f.is_file() and arts.get(f.relative_to(run_path).as_posix()) == sha256_file(f) for f in (meta, binary))
    if recorded and read_json(meta).get("key") == key:
        return binary
    if log:
        log(f"hil: building the Verilator twin of the board top ({clks_per_bit} clocks per UART bit)")
    with build_dir(run_path, TWIN_DIR) as bd:
        (bd.path / "opq_twin.v").write_text(top)
        files = [run_path / k for k in sorted(src)] + [bd.path / "opq_twin.v"]
        built = build_sim(files, bd.path / "sim", top="opq_twin", harness="tb_uart.cpp", prefix="Vtwin",
                          params={"CLKS_PER_BIT": clks_per_bit}, opt=OPT,
                          keep_log=run_path / "build" / "hil_twin_verilator_failed.log")
        shutil.move(str(built), bd.path / BINARY)
        seconds = (bd.path / "sim" / "build_seconds.txt").read_text().strip()
        shutil.rmtree(bd.path / "sim")  # the object files: only the executable is kept (and recorded)
        write_json(bd.path / "twin.json", {"key": key, "board": board.name, "clks_per_bit": int(clks_per_bit),
                                           "build_seconds": float(seconds)})
    return binary
