"""The host side of the opq-hw serial protocol (the device side is hls/rtl/opq_frame_rx.v and
opq_frame_tx.v; README, "Serial protocol").

A frame is ``SYNC 0xA5 | VERSION | TYPE | LEN (u16 LE) | PAYLOAD | CRC16 (u16 LE)``, the CRC being
CRC-16/CCITT-FALSE (polynomial 0x1021, initial 0xFFFF, MSB first, no reflection, no final XOR)
over VERSION..PAYLOAD. The host sends INFER (the input tensor's bytes) or PING; the device answers
each with RESULT (the output bytes, then the compute-cycle count as u32 LE), PONG (IN_LEN, OUT_LEN
as u16 LE) or ERROR (an error code and a detail byte, `ERRORS`).

`Link` wraps any byte port (pyserial's `Serial`, a pseudo-terminal, a socket) with timeouts:
no answer in time is an `OpqError` naming the port, baud rate and what to check. `PtyTwin` puts
the Verilator twin of a board top behind a pseudo-terminal, a serial port that pyserial opens like
a board's; `link_seconds` is what a link at a given baud rate allows. The `hil` verb that streams a
run's samples through all this is `opq_hw.flows.rtl_hil`.
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
            waiting = getattr(self.port, "in_waiting", None)  # pyserial: read what is there, else wait for one byte
            chunk = self.port.read(256 if waiting is None else max(1, min(int(waiting), 4096)))
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


class PtyTwin:
    """The Verilator twin of a board top behind a pseudo-terminal: `path` (/dev/pts/N) is a serial
    port that pyserial opens exactly like a board's; the twin (sim/tb_uart.cpp, interactive mode)
    holds the other side as its stdin and stdout, drives the rx pin with the bytes written to the
    port at `clks_per_bit` and decodes the tx pin back into bytes. `events`: a file for the harness's
    cycle stamps (`S` request starts, `R` answer bytes; `link_cycles` reads it). After `close`,
    `cycles` is the number of clock cycles simulated. Use as a context manager."""

    def __init__(self, binary, clks_per_bit: int, events=None):
        import os
        import subprocess
        import tty

        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, line editing or newline translation, even before the host configures it
        self.slave, self.path, self.cycles = slave, os.ttyname(slave), None
        args = [str(binary), "-", "-", str(int(clks_per_bit))] + ([str(events)] if events else [])
        try:
            self.proc = subprocess.Popen(args, stdin=master, stdout=master, stderr=subprocess.PIPE)
        except OSError as e:
            os.close(slave)
            raise OpqError(f"cannot start the Verilator twin {binary}: {e}") from None
        finally:
            os.close(master)

    def check(self) -> None:
        """An OpqError if the twin has exited (it runs until the port is closed)."""
        rc = self.proc.poll()
        if rc is not None:
            err = self.proc.stderr.read().decode(errors="replace").strip()[-500:]
            raise OpqError(f"the Verilator twin exited early (rc {rc}){': ' + err if err else ''}")

    def close(self) -> None:
        import os
        import subprocess

        if self.slave is not None:
            os.close(self.slave)  # the twin reads EIO and ends
            self.slave = None
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        for line in err.decode(errors="replace").splitlines():
            if line.startswith("cycles "):
                self.cycles = int(line.split()[1])

    def __enter__(self) -> "PtyTwin":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def link_cycles(events) -> list[int]:
    """Simulated cycles of each request on the twin's link (a `PtyTwin` events file): from the
    request's first bit on rx to the last answer byte decoded on tx."""
    out, start, last = [], None, None
    for line in open(events).read().splitlines():
        kind, cyc = line.split()[:2]
        if kind == "S" and (start is None or last is not None):  # a new request (not a continuation)
            if start is not None:
                out.append(last - start)
            start, last = int(cyc), None
        elif kind == "R":
            last = int(cyc)
    if start is not None and last is not None:
        out.append(last - start)
    return out


# ------------------------------------------------------------------------------------------------
# what the `hil` verb (opq_hw.flows.rtl_hil) needs of the link
# ------------------------------------------------------------------------------------------------
SIM = "sim"  # --port sim: the Verilator twin of the board top behind a pseudo-terminal
UART_BITS = 10  # 8N1: a start bit, 8 data bits, a stop bit per byte (opq_uart_rx.v / opq_uart_tx.v)


def frame_bytes(in_len: int, out_len: int) -> tuple[int, int]:
    """Bytes on the wire of an INFER frame and of its RESULT frame (the layout above: SYNC, VERSION,
    TYPE, LEN, payload, CRC; RESULT's payload is the outputs and the 4-byte cycle count)."""
    return HEADER + in_len + 2, HEADER + out_len + 4 + 2


def link_seconds(in_len: int, out_len: int, cycles: float, baud: float, clock_mhz: float) -> float:
    """Seconds per inference over the serial link, request by request: the INFER frame in at `baud`
    (`UART_BITS` bit times a byte, back to back), the device's `cycles` at `clock_mhz` (counted from
    the core taking the first input byte to its last output byte: opq_frame_tx.v), the RESULT frame
    out. Not included: the host's turnaround and a USB-serial bridge's latency (an FTDI chip holds a
    short answer up to its latency timer, 16 ms by default on Linux, unless it is set lower)."""
    fin, fout = frame_bytes(in_len, out_len)
    return (fin + fout) * UART_BITS / float(baud) + cycles / (clock_mhz * 1e6)


def open_serial(path: str, baud: int, timeout: float):
    """pyserial's port (8N1, no flow control); a clear error when it cannot be opened."""
    try:
        import serial
    except ImportError:
        raise OpqError("`opq-hw hil` needs pyserial, which is not installed: pip install pyserial==3.5") from None
    try:
        return serial.Serial(path, baudrate=baud, timeout=0.05, write_timeout=timeout)
    except (serial.SerialException, ValueError, OSError) as e:
        raise OpqError(f"cannot open the serial port {path!r} at {baud} baud ({e}); check the port (a board's FTDI "
                       "bridge is /dev/ttyUSB0 or /dev/ttyUSB1 on Linux, COMn on Windows) and that no other program "
                       "holds it") from None
