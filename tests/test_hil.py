"""`opq-hw hil`: the pyserial host (opq_hw.hil.run_hil) against the Verilator twin of a run's board
top behind a pseudo-terminal (`--port sim`), at the bitstream's own bit period (115200 baud on the
iCEBreaker's 12 MHz: 104 clocks per bit); faults injected through the same host code; and the
host's errors (no board top, no answer, no such port) without a device."""
from __future__ import annotations

import os

import pytest

from opq_hw import hil
from opq_hw.cli import main
from opq_hw.errors import OpqError
from opq_hw.flows.rtl_hil import clock_mhz


def test_link_model_on_a_hand_case():
    # INFER: 5 header + 64 payload + 2 CRC; RESULT: 5 + 20 logit bytes + 4 cycle bytes + 2 CRC
    assert hil.frame_bytes(64, 20) == (71, 31)
    s = hil.link_seconds(64, 20, 12_000, 115200, 12.0)
    assert s == pytest.approx(102 * 10 / 115200 + 12_000 / 12e6, rel=1e-12)
    assert clock_mhz({"uart": {"baud": 115200, "clks_per_bit": 104, "actual_baud": 12e6 / 104}}) == pytest.approx(12.0)


def test_link_cycles_reads_the_twins_events(tmp_path):
    ev = tmp_path / "ev.txt"
    ev.write_text("S 100\nR 150 1\nR 160 2\nS 300\nS 400\nR 500 3\n")  # a request read in two pieces is one request
    assert hil.link_cycles(ev) == [60, 200]


def test_hil_needs_a_board_top(demo_run, capsys):
    assert main(["hil", str(demo_run), "--port", "sim"]) == 2
    err = capsys.readouterr().err
    assert "holds no RTL build" in err and "opq-hw build" in err and "--flow rtl --board icebreaker|ulx3s-85f" in err
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def board_run(demo_run, tmp_path_factory):
    """The digits demo with its iCEBreaker board top (sources, pin file, board.json; no tools run)."""
    import shutil

    from opq_hw.flows.rtl_flow import build

    run = tmp_path_factory.mktemp("hil") / "run"
    shutil.copytree(demo_run, run)
    build(run, board="icebreaker", sim=False, synth=False, log=None)
    return run


def test_a_device_that_does_not_answer_is_a_clear_error(board_run, capsys):
    """A port with nothing behind it (a pseudo-terminal nobody serves): the host's timeout, exit 2;
    a port that does not exist; a --baud the bitstream was not built for."""
    master, slave = os.openpty()
    path = os.ttyname(slave)
    try:
        assert main(["hil", str(board_run), "--port", path, "--n", "1", "--timeout", "0.3"]) == 2
    finally:
        os.close(slave)
        os.close(master)
    err = capsys.readouterr().err
    assert f"no answer from the device on {path} at 115200 baud within 0.3 s" in err, err
    assert "check that the board is programmed" in err and "Traceback" not in err
    assert main(["hil", str(board_run), "--port", "/dev/opq-no-such-port", "--n", "1"]) == 2
    assert "cannot open the serial port '/dev/opq-no-such-port'" in capsys.readouterr().err
    assert main(["hil", str(board_run), "--port", "/dev/opq-no-such-port", "--baud", "9600"]) == 2
    assert "built for 115200 baud (104 clocks per bit at 12 MHz)" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.tools
def test_hil_sim_end_to_end_and_faults(board_run, capsys):
    """`opq-hw hil RUN --port sim` at the real baud's bit period: exact, with cycles and rates; then
    the same twin behind its pseudo-terminal through pyserial and hil.Link: a flipped bit, a dropped
    byte, garbage between frames, a wrong version; each gets its error answer (or, for garbage
    alone, the host's timeout) and the following frame is exact."""
    import numpy as np

    from opq_hw.artifact import read_json
    from opq_hw.boards import load_board
    from opq_hw.flows.rtl_flow import _pixels, run_intnet
    from opq_hw.pipeline import quantize_input
    from opq_hw.rtl.board import LinkGeometry
    from opq_hw.rtl.twin import twin_binary
    from opq_hw.run import load_run

    assert main(["hil", str(board_run), "--port", "sim", "--n", "3"]) == 0
    out = capsys.readouterr().out
    assert "hil: 3/3 exact (digits test split)" in out and out.rstrip().endswith("bit-exact: yes"), out
    rec = read_json(board_run / "reports" / "hil_sim.json")
    assert rec["twin"]["clks_per_bit"] == 104 and rec["stray_bytes"] == rec["bad_frames"] == 0
    cyc = rec["device"]["cycles_max"]
    assert rec["device"]["cycles_min"] == cyc > 1000  # the sequential core: the same count for every sample
    assert f"device compute: {cyc} cycles per inference, {cyc / 12:.1f} us at 12 MHz" in out
    # the protocol's model of the link (frames at 104 clocks per bit + the compute) against the simulated link
    assert rec["twin"]["link_cycles_per_sample"] == pytest.approx(rec["twin"]["model_cycles_per_sample"], rel=0.01)

    info = read_json(board_run / "build" / "rtl" / "board.json")
    p = info["protocol"]
    geo = LinkGeometry(p["in_w"], p["beats"], p["out_w"], p["n_out"])
    run = load_run(board_run)
    net = run_intnet(run)
    x = np.load(board_run / "golden_input.npy")[:4]
    x_q = quantize_input(run, x)
    payloads = geo.encode(_pixels(net, x_q, p["arch"]))
    ref = net.forward_int(net.to_int_input(x_q))
    good = [hil.encode(hil.INFER, q) for q in payloads]
    flipped = bytearray(good[1])
    flipped[9] ^= 0x10
    binary = twin_binary(board_run, load_board("icebreaker"), 104)  # the one the CLI built: reused
    with hil.PtyTwin(binary, 104) as twin, hil.open_serial(twin.path, 115200, 30) as ser:
        link = hil.Link(ser, timeout=30, name="sim", baud=115200)

        def exact(i):
            out, _ = link.infer(payloads[i], geo.out_len)
            assert geo.decode(out).tolist() == ref[i].tolist()

        wrong_version = hil.encode(hil.INFER, payloads[3], version=0x02)
        assert hil.SYNC not in wrong_version[1:]  # the rest of it is line noise to the device
        for bad, code, then in ((bytes(flipped), 0x01, 1), (good[2][:20] + good[2][21:], 0x05, 2),
                                (wrong_version, 0x02, 3)):
            link.send(bad)
            f = link.receive()
            assert f.ftype == hil.ERROR and f.error()[0] == code, f.describe()
            exact(then)
        link.send(bytes(range(0x10, 0x40)))  # garbage alone: no SYNC, no answer
        with pytest.raises(OpqError, match="no answer from the device on sim at 115200 baud within 0.5 s"):
            link.receive(timeout=0.5)
        link.send(bytes(range(0x40, 0x60)) + good[0])  # garbage, then a frame
        out, _ = link.receive().result(geo.out_len)
        assert geo.decode(out).tolist() == ref[0].tolist()
        assert link.decoder.dropped == link.decoder.bad == 0  # the device sent only whole frames
    assert twin.cycles > 0
