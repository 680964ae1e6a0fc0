"""The host side of the opq-hw serial protocol (the device side is hls/rtl/opq_frame_rx.v and
opq_frame_tx.v; README, "Serial protocol").

A frame is ``SYNC 0xA5 | VERSION | TYPE | LEN (u16 LE) | PAYLOAD | CRC16 (u16 LE)``, the CRC being
CRC-16/CCITT-FALSE (polynomial 0x1021, initial 0xFFFF, MSB first, no reflection, no final XOR)
over VERSION..PAYLOAD. The host sends INFER (the input tensor's bytes) or PING; the device answers
each with RESULT (the output bytes, then the compute-cycle count as u32 LE), PONG (IN_LEN, OUT_LEN
as u16 LE) or ERROR (an error code and a detail byte, `ERRORS`).

`Link` wraps any byte port (pyserial's `Serial`, a pseudo-terminal, a socket) with timeouts:
no answer in time is an `OpqError` naming the port, baud rate and what to check.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from .errors import OpqError

SYNC = 0xA5
VERSION = 0x01
INFER, PING = 0x01, 0x02  # host -> device
RESULT, PONG, ERROR = 0x81, 0x82, 0xE0  # device -> host
TYPES = {INFER: "INFER", PING: "PING", RESULT: "RESULT", PONG: "PONG", ERROR: "ERROR"}
ERRORS = {  # the device's error codes (opq_frame_rx.v)
    0x01: "CRC mismatch (a corrupted byte on the line)",
    0x02: "wrong protocol version",
    0x03: "wrong payload length",
    0x04: "unknown frame type",
    0x05: "frame cut short (the device saw no byte for its timeout inside a frame)",
    0x06: "overrun (a byte arrived while the device was still busy with the previous frame)",
    0x07: "UART framing error (a stop bit was low: check the baud rate)",
}
HEADER = 5  # SYNC, VERSION, TYPE, LEN
MAX_LEN = 4096  # the device refuses longer frames (opq_frame_rx MAX_LEN)


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE of `data` (0x29B1 for b"123456789")."""
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def encode(ftype: int, payload: bytes = b"", version: int = VERSION) -> bytes:
    """One frame's bytes."""
    if not 0 <= ftype <= 0xFF or not 0 <= version <= 0xFF:
        raise OpqError(f"frame type and version are bytes, got {ftype!r}, {version!r}")
    if len(payload) > MAX_LEN:
        raise OpqError(f"a frame carries at most {MAX_LEN} payload bytes, got {len(payload)}")
    body = bytes([version, ftype]) + len(payload).to_bytes(2, "little") + bytes(payload)
    return bytes([SYNC]) + body + crc16(body).to_bytes(2, "little")


@dataclass(frozen=True)
class Frame:
    ftype: int
    payload: bytes
    version: int = VERSION

    @property
    def name(self) -> str:
        return TYPES.get(self.ftype, f"0x{self.ftype:02X}")

    def result(self, out_len: int) -> tuple[bytes, int]:
        """(output bytes, compute cycles) of a RESULT frame."""
        if self.ftype != RESULT:
            raise OpqError(f"expected a RESULT frame, got {self.describe()}")
        if len(self.payload) != out_len + 4:
            raise OpqError(f"RESULT carries {len(self.payload)} bytes, expected {out_len} outputs + 4 cycle-count "
                           "bytes: the bitstream was built for another model")
        return self.payload[:out_len], int.from_bytes(self.payload[out_len:], "little")

    def error(self) -> tuple[int, int]:
        """(code, detail) of an ERROR frame."""
        if self.ftype != ERROR or len(self.payload) != 2:
            raise OpqError(f"expected an ERROR frame with 2 payload bytes, got {self.describe()}")
        return self.payload[0], self.payload[1]

    def describe(self) -> str:
        if self.ftype == ERROR and len(self.payload) == 2:
            code, detail = self.payload
            return f"ERROR 0x{code:02X}: {ERRORS.get(code, 'unknown error code')} (detail 0x{detail:02X})"
        return f"{self.name} frame with {len(self.payload)} payload bytes"


class Decoder:
    """Incremental frame decoder for the bytes a device sends: `feed(data)` returns the complete,
    CRC-checked frames. Bytes outside frames (line noise) and frames with a bad CRC or version
    are counted in `dropped` / `bad` and skipped (it then hunts for the next SYNC from the byte
    after the false one)."""

    def __init__(self):
        self.buf = bytearray()
        self.dropped = 0  # bytes skipped while hunting for SYNC
        self.bad = 0  # frames whose CRC or version did not check

    def feed(self, data: bytes) -> list[Frame]:
        self.buf += data
        out = []
        while True:
            i = self.buf.find(SYNC)
            if i < 0:
                self.dropped += len(self.buf)
                self.buf.clear()
                return out
            if i:
                self.dropped += i
                del self.buf[:i]
            if len(self.buf) < HEADER:
                return out
            n = int.from_bytes(self.buf[3:5], "little")
            if self.buf[1] != VERSION or n > MAX_LEN:
                self.bad += 1
                del self.buf[:1]
                continue
            if len(self.buf) < HEADER + n + 2:
                return out
            body = bytes(self.buf[1:HEADER + n])
            crc = int.from_bytes(self.buf[HEADER + n:HEADER + n + 2], "little")
            if crc != crc16(body):
                self.bad += 1
                del self.buf[:1]
                continue
            out.append(Frame(body[1], body[4:], body[0]))
            del self.buf[:HEADER + n + 2]


class Port(Protocol):
    """What `Link` needs of a port: pyserial's Serial has it."""

    def write(self, data: bytes) -> int | None: ...

    def read(self, size: int = 1) -> bytes: ...


class Link:
    """Request/response over a byte port. `request(frame)` writes a frame and returns the next
    frame the device sends, or raises a clear `OpqError` after `timeout` seconds of no answer."""

    def __init__(self, port: Port, timeout: float = 2.0, name: str = "the port", baud: int | None = None):
        self.port, self.timeout, self.name, self.baud = port, float(timeout), name, baud
        self.decoder = Decoder()
        self.pending: list[Frame] = []

    def send(self, data: bytes) -> None:
        self.port.write(data)

    def receive(self, timeout: float | None = None) -> Frame:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self.pending:
            if time.monotonic() > deadline:
                at = f" at {self.baud} baud" if self.baud else ""
                raise OpqError(f"no answer from the device on {self.name}{at} within "
                               f"{self.timeout if timeout is None else timeout:g} s "
                               f"({self.decoder.dropped} stray bytes, {self.decoder.bad} bad frames seen): check "
                               "that the board is programmed with this run's bitstream, the port and the baud rate")
            chunk = self.port.read(256)
            if chunk:
                self.pending += self.decoder.feed(chunk)
        return self.pending.pop(0)

    def request(self, ftype: int, payload: bytes = b"", timeout: float | None = None) -> Frame:
        self.send(encode(ftype, payload))
        return self.receive(timeout)

    def infer(self, payload: bytes, out_len: int, timeout: float | None = None) -> tuple[bytes, int]:
        """(output bytes, compute cycles) of one inference; an ERROR answer is an OpqError."""
        f = self.request(INFER, payload, timeout)
        if f.ftype == ERROR:
            raise OpqError(f"the device answered {f.describe()}")
        return f.result(out_len)


class TwinPort:
    """A serial port backed by the Verilator twin of a board top: sim/tb_uart.cpp in its
    interactive mode (bytes written here go onto the twin's rx pin as UART frames at
    `clks_per_bit`; bytes its tx pin sends come back from `read`). Use as a context manager."""

    def __init__(self, binary, clks_per_bit: int):
        import subprocess

        self.proc = subprocess.Popen([str(binary), "-", "-", str(int(clks_per_bit))], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def _check(self) -> None:
        rc = self.proc.poll()
        if rc is not None:
            err = self.proc.stderr.read().decode(errors="replace").strip()[-500:] if self.proc.stderr else ""
            raise OpqError(f"the Verilator twin exited (rc {rc}){': ' + err if err else ''}")

    def write(self, data: bytes) -> int:
        self._check()
        self.proc.stdin.write(data)
        self.proc.stdin.flush()
        return len(data)

    def read(self, size: int = 1) -> bytes:
        import os
        import select

        ready, _, _ = select.select([self.proc.stdout], [], [], 0.05)
        if not ready:
            self._check()
            return b""
        return os.read(self.proc.stdout.fileno(), size)

    def close(self) -> None:
        import subprocess

        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> "TwinPort":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
