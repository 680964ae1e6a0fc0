"""The serial protocol: the host codec (opq_hw.hil) alone, then the Verilog UART + framing
(hls/rtl/opq_uart_*.v, opq_frame_*.v) in Verilator around an echo core, driven by that codec:
good frames, a flipped bit, a dropped byte, garbage between frames, a wrong version, a wrong
length, an unknown type, a UART framing error, back-to-back frames; every fault gets its error frame and the next
good frame is answered exactly."""
from __future__ import annotations

import random
import shutil

import pytest

from opq_hw import hil
from opq_hw.errors import OpqError

CPB = 8  # clock cycles per UART bit in the twin (fast; the real baud is a parameter)
IN_LEN = 16
TIMEOUT = 40 * CPB  # opq_uart_link's default: four byte times
UART_FILES = ("opq_uart_rx.v", "opq_uart_tx.v", "opq_crc16.v", "opq_frame_rx.v", "opq_frame_tx.v",
              "opq_uart_link.v", "opq_uart_echo.v")


# ------------------------------------------------------------------------------------------------
# host codec
# ------------------------------------------------------------------------------------------------
def test_crc16_is_ccitt_false():
    assert hil.crc16(b"123456789") == 0x29B1  # the catalogued check value of CRC-16/CCITT-FALSE
    assert hil.crc16(b"") == 0xFFFF


def test_encode_layout_and_decode_round_trip():
    f = hil.encode(hil.INFER, bytes([1, 2, 3]))
    assert f[:6] == bytes([0xA5, 0x01, 0x01, 3, 0, 1]) and len(f) == 5 + 3 + 2
    assert int.from_bytes(f[-2:], "little") == hil.crc16(f[1:-2])
    d = hil.Decoder()
    frames = d.feed(b"\x00\x13" + f[:4]) + d.feed(f[4:] + b"\xff" + hil.encode(hil.PONG, b"\x10\x00\x0a\x00"))
    assert [(x.ftype, x.payload) for x in frames] == [(hil.INFER, b"\x01\x02\x03"), (hil.PONG, b"\x10\x00\x0a\x00")]
    assert d.dropped == 3 and d.bad == 0
    bad = bytearray(hil.encode(hil.RESULT, bytes(6)))
    bad[6] ^= 0x10
    assert d.feed(bytes(bad)) == [] and d.bad == 1
    assert d.feed(hil.encode(hil.ERROR, b"\x01\x00"))[0].describe().startswith("ERROR 0x01: CRC mismatch")
    with pytest.raises(OpqError, match="at most 4096"):
        hil.encode(hil.INFER, bytes(5000))


class _Port:
    """A fake port: answers each written frame with the given bytes (or nothing)."""

    def __init__(self, answer: bytes = b""):
        self.answer, self.out = answer, b""

    def write(self, data):
        self.out += self.answer
        return len(data)

    def read(self, size=1):
        chunk, self.out = self.out[:size], self.out[size:]
        return chunk


def test_link_results_errors_and_timeouts():
    res = hil.encode(hil.RESULT, bytes([7, 8]) + (1234).to_bytes(4, "little"))
    assert hil.Link(_Port(res), timeout=0.5).infer(b"\x00", out_len=2) == (b"\x07\x08", 1234)
    with pytest.raises(OpqError, match="expected 3 outputs.*another model"):
        hil.Link(_Port(res), timeout=0.5).infer(b"\x00", out_len=3)
    with pytest.raises(OpqError, match="answered ERROR 0x02: wrong protocol version"):
        hil.Link(_Port(hil.encode(hil.ERROR, b"\x02\x07")), timeout=0.5).infer(b"\x00", out_len=2)
    with pytest.raises(OpqError, match=r"no answer from the device on sim at 115200 baud within 0.05 s.*baud rate"):
        hil.Link(_Port(b"\x00junk"), timeout=0.05, name="sim", baud=115200).infer(b"\x00", out_len=2)


# ------------------------------------------------------------------------------------------------
# the Verilog link in Verilator, driven by the codec
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def echo_twin(tmp_path_factory):
    """One Verilator build of the echo top, shared by the protocol tests."""
    from opq_hw.rtl.gen import HDL_DIR
    from opq_hw.rtl.verilator import build_sim, verilator_env

    try:
        verilator_env()
    except OpqError as e:
        pytest.fail(f"Verilator is required for the UART tests: {e}")
    d = tmp_path_factory.mktemp("uart")
    files = []
    for f in UART_FILES:
        shutil.copyfile(HDL_DIR / f, d / f)
        files.append(d / f)
    return build_sim(files, d / "sim", top="opq_uart_echo", harness="tb_uart.cpp", prefix="Vtwin",
                     params={"CLKS_PER_BIT": CPB, "IN_LEN": IN_LEN})


class Bad(bytes):
    """Bytes sent with a low stop bit (a UART framing error)."""


def _play(binary, work, script: list[bytes | int]) -> tuple[list[hil.Frame], hil.Decoder, list[str]]:
    """Send `script` (bytes objects are sent, ints are idle cycles) and decode what comes back."""
    import subprocess

    work.mkdir(parents=True, exist_ok=True)
    lines = []
    for item in script:
        op = "x" if isinstance(item, Bad) else "b"
        lines += [f"i {item}"] if isinstance(item, int) else [f"{op} {b}" for b in item]
    (work / "script.txt").write_text("\n".join(lines) + "\n")
    subprocess.run([str(binary), str(work / "script.txt"), str(work / "out.txt"), str(CPB)], check=True,
                   capture_output=True, timeout=300)
    rows = (work / "out.txt").read_text().split("\n")
    got = bytes(int(r.split()[2]) for r in rows if r.startswith("R "))
    dec = hil.Decoder()
    return dec.feed(got), dec, [r for r in rows if r.startswith("F ")]


GAP = (7 + IN_LEN + 4 + 4) * 10 * CPB + TIMEOUT + 200  # room for the longest answer and a timeout


def _payload(rng):
    return bytes(rng.choice([b for b in range(256) if b != hil.SYNC]) for _ in range(IN_LEN))


@pytest.mark.slow
@pytest.mark.tools
def test_echo_twin_answers_good_frames_and_every_fault(echo_twin, tmp_path):
    rng = random.Random(5)
    p = [_payload(rng) for _ in range(8)]
    flipped = bytearray(hil.encode(hil.INFER, p[1]))
    flipped[9] ^= 0x04  # one bit of the payload
    dropped = hil.encode(hil.INFER, p[2])
    dropped = dropped[:7] + dropped[8:]  # a payload byte lost on the line
    garbage = bytes(rng.choice([b for b in range(256) if b != hil.SYNC]) for _ in range(23))
    wrong_version = hil.encode(hil.INFER, p[3], version=0x07)
    assert hil.SYNC not in wrong_version[1:]  # the rest of it is line noise to the device
    script = [
        hil.encode(hil.PING), GAP,
        hil.encode(hil.INFER, p[0]), GAP,
        bytes(flipped), GAP,
        hil.encode(hil.INFER, p[1]), GAP,
        dropped, GAP,
        hil.encode(hil.INFER, p[2]), GAP,
        garbage, hil.encode(hil.INFER, p[3]), GAP,
        wrong_version, GAP,
        hil.encode(hil.INFER, p[4]), GAP,
        hil.encode(hil.INFER, p[5][:8]), GAP,  # wrong length
        hil.encode(0x33, b"\x01"), GAP,  # unknown type
        bytes([hil.SYNC, hil.SYNC, hil.VERSION, hil.INFER, 0xFF, 0xFF]), GAP,  # a length over MAX_LEN
        hil.encode(hil.INFER, p[5]) + hil.encode(hil.INFER, p[6]), 2 * GAP,  # back to back: backpressure
        hil.encode(hil.INFER, p[7])[:9], Bad(b"\x11"), GAP,  # a low stop bit inside a frame
        hil.encode(hil.INFER, p[7]), GAP,
    ]
    frames, dec, framing = _play(echo_twin, tmp_path, script)
    assert framing == [] and dec.dropped == 0 and dec.bad == 0  # every byte sent is part of a good frame

    def result(data):
        return ("RESULT", data, IN_LEN - 1)  # the echo core: one byte per cycle, 15 cycles first to last

    def error(code, detail=None):
        return ("ERROR", code, detail)

    seen = []
    for f in frames:
        if f.ftype == hil.RESULT:
            out, cycles = f.result(IN_LEN)
            seen.append(("RESULT", out, cycles))
        elif f.ftype == hil.ERROR:
            code, detail = f.error()
            seen.append(("ERROR", code, detail))
        else:
            seen.append((f.name, f.payload, None))
    expected = [
        ("PONG", IN_LEN.to_bytes(2, "little") * 2, None),
        result(p[0]),
        error(0x01, 0),
        result(p[1]),
        error(0x05),
        result(p[2]),
        result(p[3]),
        error(0x02, 0x07),
        result(p[4]),
        error(0x03, 8),
        error(0x04, 0x33),
        error(0x03, 0xFF),
        result(p[5]),
        result(p[6]),
        error(0x07, 0),
        result(p[7]),
    ]
    assert len(seen) == len(expected), seen
    for s, e in zip(seen, expected):
        if e[0] == "ERROR" and e[2] is None:
            assert s[:2] == e[:2], (s, e)  # the timeout's detail is the decoder state
        else:
            assert s == e, (s, e)
