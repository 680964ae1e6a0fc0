"""`opq-hw flash RUN --board B [--dry-run]`: write the bitstream of `opq-hw build RUN --flow rtl
--board B` onto the board.

The programmer: `openFPGALoader -b <board's openfpgaloader_board> BITSTREAM` (Debian package
openfpgaloader; the board names are openFPGALoader's, recorded in board_configs/<board>.yaml), or,
for iCE40 boards when openFPGALoader is missing, `iceprog BITSTREAM` (Debian fpga-icestorm). Both
write the board's configuration flash on the iCEBreaker (openFPGALoader's list has no SRAM mode for
it); on ECP5 openFPGALoader loads the FPGA's SRAM (lost at power-off; add `-f` by hand to write the flash).
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from .errors import OpqError

# What the programmers print when no board is on the USB bus (matched case-insensitively).
NO_DEVICE = re.compile(r"can't find ice ftdi usb device|unable to open ftdi device|no device found|"
                       r"fail to open|device not found|no cable|jtag init failed|unable to find", re.I)
PACKAGES = {"openFPGALoader": "openfpgaloader", "iceprog": "fpga-icestorm"}


def _bitstream(run_dir: Path, board) -> Path:
    from .artifact import read_json

    info_path = run_dir / "build" / "rtl" / "board.json"
    if not info_path.is_file():
        raise OpqError(f"{run_dir} has no board build (build/rtl/board.json); run `opq-hw build {run_dir} --flow rtl "
                       f"--board {board.name}` first")
    info = read_json(info_path)
    if info.get("board") != board.name:
        raise OpqError(f"build/rtl/ of {run_dir} was built for {info.get('board')!r}, not {board.name!r}; rebuild "
                       f"with `opq-hw build {run_dir} --flow rtl --board {board.name}` or flash --board {info.get('board')}")
    rel = info.get("bitstream")
    if not isinstance(rel, str) or not re.fullmatch(r"build/rtl/[A-Za-z0-9_.-]+\.(bin|bit)", rel):
        raise OpqError(f"build/rtl/board.json of {run_dir} names no bitstream (the build stopped before place and "
                       f"route?); rebuild without --no-pnr")
    bit = run_dir / rel
    if not bit.is_file():
        raise OpqError(f"{bit} is missing; rebuild with `opq-hw build {run_dir} --flow rtl --board {board.name}`")
    return bit


def flash_command(run_dir, board_name: str) -> list[str]:
    """The programmer's command line for the run's board build (the tool found on PATH)."""
    from .boards import load_board

    b = load_board(board_name)
    if not b.pins:
        raise OpqError(f"board {b.name!r} is a bare part; flash needs a dev board (e.g. icebreaker, ulx3s-85f)")
    bit = _bitstream(Path(run_dir), b)
    ofl = shutil.which("openFPGALoader")
    if ofl and b.openfpgaloader_board:
        return [ofl, "-b", b.openfpgaloader_board, str(bit)]
    if b.family == "ice40" and shutil.which("iceprog"):
        return [shutil.which("iceprog"), str(bit)]
    need = "openFPGALoader (Debian package openfpgaloader)" + (" or iceprog (Debian package fpga-icestorm)"
                                                               if b.family == "ice40" else "")
    raise OpqError(f"no programmer for {b.name}: install {need}" +
                   ("" if b.openfpgaloader_board or b.family == "ice40" else
                    f"; {b.name}.yaml names no openfpgaloader_board either"))


def flash(run_dir, board_name: str, dry_run: bool = False, timeout: float = 300, log=print) -> list[str]:
    """Run (or with dry_run only print) the programmer; OpqError with the tool's words when it fails,
    "no device found" when no board is attached."""
    cmd = flash_command(run_dir, board_name)
    shown = " ".join(cmd)
    if dry_run:
        log(shown)
        return cmd
    log(f"flash: {shown}")
    tool = Path(cmd[0]).name
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise OpqError(f"{tool} did not finish in {timeout:.0f} s; unplug and replug the board and retry") from None
    out = (r.stdout + r.stderr).strip()
    if r.returncode != 0:
        last = " | ".join(out.splitlines()[-3:])
        if NO_DEVICE.search(out):
            raise OpqError(f"no device found: {tool} sees no {board_name} on USB ({last}); connect the board, check "
                           f"the cable and that your user may open the USB device (udev rules), then retry")
        raise OpqError(f"{tool} failed (exit {r.returncode}): {last}")
    if log and out:
        log(out.splitlines()[-1])
    return cmd
