"""`opq-hw flash`: the programmer's command for a run's board build, the dry run, and the clear
errors: no board build, another board's build, no programmer installed, no device attached
(none is attached to this machine: the real iceprog is run and must say so)."""
from __future__ import annotations

import json
import shutil

import pytest

from opq_hw.errors import OpqError


def _board_build(tmp_path, board="icebreaker", bit="opq_board.bin"):
    """A run directory holding only what flash reads: build/rtl/board.json and the bitstream."""
    run = tmp_path / "run"
    (run / "build" / "rtl").mkdir(parents=True)
    (run / "build" / "rtl" / bit).write_bytes(b"\x00" * 16)
    (run / "build" / "rtl" / "board.json").write_text(json.dumps({"board": board, "bitstream": f"build/rtl/{bit}"}))
    return run


def test_dry_run_prints_the_programmer_command(tmp_path, capsys, monkeypatch):
    from opq_hw.cli import main

    run = _board_build(tmp_path)
    tools = {"openFPGALoader": "/usr/bin/openFPGALoader", "iceprog": "/usr/bin/iceprog"}
    monkeypatch.setattr(shutil, "which", lambda t, **kw: tools.get(t))
    assert main(["flash", str(run), "--board", "icebreaker", "--dry-run"]) == 0
    assert capsys.readouterr().out.strip() == f"/usr/bin/openFPGALoader -b ice40_generic {run}/build/rtl/opq_board.bin"
    del tools["openFPGALoader"]  # iCE40 without openFPGALoader: iceprog
    assert main(["flash", str(run), "--board", "icebreaker", "--dry-run"]) == 0
    assert capsys.readouterr().out.strip() == f"/usr/bin/iceprog {run}/build/rtl/opq_board.bin"
    del tools["iceprog"]
    assert main(["flash", str(run), "--board", "icebreaker", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "no programmer for icebreaker: install openFPGALoader (Debian package openfpgaloader) or iceprog " \
           "(Debian package fpga-icestorm)" in err and "Traceback" not in err
    ecp = _board_build(tmp_path / "e", "ulx3s-85f", "opq_board.bit")
    assert main(["flash", str(ecp), "--board", "ulx3s-85f", "--dry-run"]) == 2  # ECP5: openFPGALoader only
    assert "install openFPGALoader (Debian package openfpgaloader)\n" in capsys.readouterr().err


def test_flash_refuses_what_it_cannot_flash(tmp_path):
    from opq_hw.flash import flash_command

    with pytest.raises(OpqError, match="no board build.*opq-hw build .* --flow rtl --board icebreaker"):
        flash_command(tmp_path, "icebreaker")
    run = _board_build(tmp_path)
    with pytest.raises(OpqError, match="built for 'icebreaker', not 'ulx3s-85f'"):
        flash_command(run, "ulx3s-85f")
    with pytest.raises(OpqError, match="bare part"):
        flash_command(run, "ice40-up5k")
    (run / "build" / "rtl" / "board.json").write_text(json.dumps({"board": "icebreaker"}))
    with pytest.raises(OpqError, match="names no bitstream.*--no-pnr"):
        flash_command(run, "icebreaker")
    (run / "build" / "rtl" / "board.json").write_text(json.dumps({"board": "icebreaker",
                                                                   "bitstream": "../../../etc/passwd"}))
    with pytest.raises(OpqError, match="names no bitstream"):
        flash_command(run, "icebreaker")


@pytest.mark.tools
def test_no_device_found_is_a_clear_error(tmp_path, capsys):
    """No board is attached here: the real programmer runs and fails; the CLI says "no device
    found" (exit 2, no traceback)."""
    from opq_hw.cli import main

    if not (shutil.which("openFPGALoader") or shutil.which("iceprog")):
        pytest.fail("iceprog (Debian fpga-icestorm) is required for this test: make rtl-tools")
    run = _board_build(tmp_path)
    assert main(["flash", str(run), "--board", "icebreaker"]) == 2
    cap = capsys.readouterr()
    assert "error: no device found:" in cap.err and "connect the board" in cap.err and "Traceback" not in cap.err
    assert cap.out.startswith("flash: ")
