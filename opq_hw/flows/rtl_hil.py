"""Hardware in the loop for the open RTL flow: `opq-hw hil RUN --port PORT|sim`.

The host streams test inputs through the board top that `opq-hw build RUN --flow rtl --board B`
made (`opq_hw.rtl.board`), over a serial port with the protocol of `opq_hw.hil`, request by
request, and compares the logits that come back with the Brevitas model bit for bit. `--port sim`
puts the Verilator twin of the same board top (`opq_hw.rtl.twin`, UART pins included) behind a
pseudo-terminal (`hil.PtyTwin`), so that the identical host code (pyserial, `hil.Link`) and protocol
run here without a board.
"""
from __future__ import annotations

import sys
import time

from ..errors import OpqError
from ..hil import (ERROR, INFER, PING, PONG, SIM, UART_BITS, Link, PtyTwin, frame_bytes, link_cycles, link_seconds,
                   open_serial)


def board_info(run_path) -> dict:
    """build/rtl/board.json of a run (what the host needs: protocol geometry, clock, baud), checked
    against the manifest; a clear error naming the build command when there is none."""
    from pathlib import Path

    from ..artifact import read_json
    from ..rundir import read_manifest, verify

    run_path = Path(run_path)
    rtl = run_path / "build" / "rtl"
    bj = rtl / "board.json"
    how = f"`opq-hw build {run_path} --flow rtl --board {'|'.join(dev_boards())}`"
    if not bj.is_file():
        built = read_json(rtl / "rtl_build.json").get("board") if (rtl / "rtl_build.json").is_file() else None
        what = (f"was built for {built!r}, a bare part (no pins, no serial link)" if built else "holds no RTL build")
        raise OpqError(f"{run_path} {what}: `hil` talks to a board top; build one first: {how}")
    man = read_manifest(run_path)
    if "build/rtl/board.json" not in man["artifacts"]:
        raise OpqError(f"{bj} was not written by opq-hw (not in the manifest); build again: {how}")
    verify(run_path, ["build/rtl/board.json", "build/rtl/design.json"], manifest=man)
    return read_json(bj)


def dev_boards() -> list[str]:
    """The boards with pins (a board top can be built for them)."""
    from ..boards import list_boards, load_board

    return [b for b in list_boards() if load_board(b).is_dev_board]


def clock_mhz(info: dict) -> float:
    """The clock the board top runs at: the one its UART divides (board.json: actual baud x clocks
    per bit), whatever feeds it."""
    return float(info["uart"]["actual_baud"]) * int(info["uart"]["clks_per_bit"]) / 1e6


def _exchange(path: str, baud: int, timeout: float, name: str, payloads: list[bytes], geo) -> dict:
    """PING, then each payload as an INFER request; the answers (outputs or the error), cycles, time."""
    outs: list[bytes | None] = []
    cycles: list[int] = []
    errors: list[dict] = []
    port = open_serial(path, baud, timeout)
    import serial  # open_serial names a missing pyserial

    with port as ser:
        link = Link(ser, timeout=timeout, name=name, baud=baud)
        try:
            pong = link.request(PING)
            want = geo.in_len.to_bytes(2, "little") + geo.out_len.to_bytes(2, "little")
            if pong.ftype != PONG or pong.payload != want:
                got = (f"IN_LEN {int.from_bytes(pong.payload[:2], 'little')}, OUT_LEN "
                       f"{int.from_bytes(pong.payload[2:], 'little')}" if pong.ftype == PONG and len(pong.payload) == 4
                       else pong.describe())
                raise OpqError(f"the device on {name} answered PING with {got}; this run's board top has IN_LEN "
                               f"{geo.in_len}, OUT_LEN {geo.out_len}: the board holds another bitstream (flash this "
                               "run's build/rtl bitstream)")
            t0 = time.perf_counter()
            show = sys.stderr.isatty() and len(payloads) > 20  # progress on a terminal, on one line
            for i, p in enumerate(payloads):
                if show and i % 10 == 0:
                    print(f"\rhil: {i}/{len(payloads)} samples", end="", file=sys.stderr, flush=True)
                f = link.request(INFER, p)
                if f.ftype == ERROR:
                    errors.append({"sample": i, "answer": f.describe()})
                    outs.append(None)
                    continue
                out, c = f.result(geo.out_len)
                outs.append(out)
                cycles.append(c)
            seconds = time.perf_counter() - t0
            if show:
                print("\r" + " " * 40 + "\r", end="", file=sys.stderr, flush=True)
        except serial.SerialException as e:
            raise OpqError(f"the serial port {name} failed ({e}); is the board still connected?") from None
        return {"outs": outs, "cycles": cycles, "errors": errors, "seconds": seconds,
                "stray_bytes": link.decoder.dropped, "bad_frames": link.decoder.bad}


def _divides(mhz: float, baud: int) -> bool:
    """Whether a UART at `baud` can run from `mhz` (opq_hw.rtl.board.clks_per_bit: within 2%, >= 4 clocks a bit)."""
    from ..rtl.board import clks_per_bit

    try:
        clks_per_bit(mhz, baud)
    except OpqError:
        return False
    return True


def run_hil(run_dir, port: str, baud: int | None = None, n: int | None = None, data: str | None = None,
            timeout: float | None = None, write: bool = True, log=print) -> dict:
    """`opq-hw hil`: stream test inputs (the run's own test data, or `data`, as `simulate` takes it)
    through the board top of `opq-hw build RUN --flow rtl --board B` over a serial port, request by
    request, and compare the logits that come back with the Brevitas model bit for bit.

    `port`: a serial port (the board), or "sim": the Verilator twin of the same board top behind a
    pseudo-terminal, driven by the same code. `baud`: a board's must be the one the bitstream was
    built for (default); the twin's may differ (its bit period is `clock / baud`: a fast link for
    long runs). Writes reports/hil_<sim|board>.json; returns the record (`bit_exact` decides the
    exit code). A device that does not answer within `timeout` seconds is an OpqError."""
    import tempfile
    from pathlib import Path

    import numpy as np

    from ..boards import load_board
    from ..data import require_run_data, run_inputs
    from ..equivalence import compare, reference
    from .rtl_flow import _pixels, run_intnet
    from ..pipeline import quantize_input
    from ..rtl.board import LinkGeometry, clks_per_bit
    from ..run import load_run

    run_path = Path(run_dir)
    info = board_info(run_path)
    require_run_data(run_path, "hil")
    proto, uart = info["protocol"], info["uart"]
    geo = LinkGeometry(proto["in_w"], proto["beats"], proto["out_w"], proto["n_out"])
    mhz, built_baud = clock_mhz(info), int(uart["baud"])
    sim = port == SIM
    if baud is not None and not sim and int(baud) != built_baud:
        raise OpqError(f"the board top in {run_path}/build/rtl was built for {built_baud} baud ({uart['clks_per_bit']} "
                       f"clocks per bit at {mhz:g} MHz); at {baud} baud the board would not understand the host: omit "
                       f"--baud, or rebuild with `opq-hw build {run_path} --flow rtl --board {info['board']} --baud {baud}`")
    baud = int(baud or built_baud)
    cpb = clks_per_bit(mhz, baud) if sim else int(uart["clks_per_bit"])

    run = load_run(run_path)
    net = run_intnet(run)
    x, y, desc, note = run_inputs(run, data, n, command="hil")
    x_q = quantize_input(run, x)
    words = _pixels(net, x_q, proto["arch"])
    if words.shape[1] != geo.beats:
        raise OpqError(f"{run_path}/build/rtl/board.json expects {geo.beats} input words per sample, the run's model "
                       f"gives {words.shape[1]}: rebuild the board top")
    payloads = geo.encode(words)
    ref = reference(run, x_q)
    fin, fout = frame_bytes(geo.in_len, geo.out_len)
    if timeout is None:  # a board: 2 s plus 3x the frames' time on the wire; the twin (~0.5 M cycles/s here): generous
        per = link_seconds(geo.in_len, geo.out_len, 0, baud, mhz)
        timeout = max(60.0, (fin + fout) * UART_BITS * cpb * 1e-4) if sim else 2.0 + 3 * per
    if note and log:
        log(f"note: {note}")

    twin_info: dict = {}
    if sim:
        from ..rtl.twin import twin_binary

        binary = twin_binary(run_path, load_board(info["board"]), cpb, log)
        with tempfile.TemporaryDirectory(prefix="opq-hil-") as tmp:
            events = Path(tmp) / "events.txt"
            t0 = time.perf_counter()
            with PtyTwin(binary, cpb, events=events) as twin:
                name = f"sim (the Verilator twin of the {info['board']} board top on {twin.path})"
                try:
                    got = _exchange(twin.path, baud, timeout, name, payloads, geo)
                except OpqError:
                    twin.check()  # a crashed twin says so; else the host's own error
                    raise
            wall = time.perf_counter() - t0
            per_req = link_cycles(events)[1:]  # the PING first
        twin_info = {"clks_per_bit": cpb, "simulated_cycles": twin.cycles, "seconds": round(wall, 3),
                     "cycles_per_s": twin.cycles / wall if twin.cycles and wall > 0 else None,
                     "link_cycles_per_sample": float(np.mean(per_req)) if per_req else None}
    else:
        got = _exchange(port, baud, timeout, port, payloads, geo)

    rows = [geo.decode(o) if o is not None else None for o in got["outs"]]
    logits = np.full(ref.shape, np.nan, dtype=np.float32)
    ok = [i for i, r in enumerate(rows) if r is not None]
    if ok:
        logits[ok] = net.logits(np.stack([rows[i] for i in ok]))
    same = compare(ref, logits, None)
    cyc = got["cycles"]
    res: dict = {
        "run": run_path.name, "port": SIM if sim else port, "board": info["board"], "data": desc, "baud": baud,
        "n": same["n"], "exact_samples": same["exact_samples"], "bit_exact": same["bit_exact"],
        "error_answers": got["errors"], "stray_bytes": got["stray_bytes"], "bad_frames": got["bad_frames"],
        "accuracy": float(np.mean(np.nan_to_num(logits, nan=-np.inf).argmax(1) == y)) if y is not None else None,
        "link": {"seconds": round(got["seconds"], 4), "samples_per_s": len(payloads) / got["seconds"],
                 "infer_frame_bytes": fin, "result_frame_bytes": fout},
        "device": {"clock_mhz": mhz, "cycles_min": min(cyc) if cyc else None, "cycles_max": max(cyc) if cyc else None,
                   "cycles_mean": float(np.mean(cyc)) if cyc else None,
                   "latency_us": max(cyc) / mhz if cyc else None},
    }
    if cyc:
        res["board_link"] = {str(b): {"samples_per_s": 1.0 / link_seconds(geo.in_len, geo.out_len, max(cyc), b, mhz),
                                      "reachable": _divides(mhz, b)} for b in (built_baud, 115200, 3_000_000)}
        if twin_info.get("link_cycles_per_sample"):
            model = link_seconds(geo.in_len, geo.out_len, float(np.mean(cyc)), mhz * 1e6 / cpb, mhz) * mhz * 1e6
            twin_info["model_cycles_per_sample"] = model
    if sim:
        res["twin"] = twin_info
    if note:
        res["data_note"] = note
    if write:
        from ..artifact import dumps
        from ..rundir import write_outputs

        write_outputs(run_path, {f"reports/hil_{'sim' if sim else 'board'}.json": dumps(res).encode()})
    if log:
        log(summary(res))
    return res


def summary(res: dict) -> str:
    """What `opq-hw hil` prints; ends with `bit-exact: yes|no`."""
    acc = res.get("accuracy")
    lines = [f"hil: {res['exact_samples']}/{res['n']} exact ({res['data']}), accuracy "
             f"{'n/a' if acc is None else f'{acc * 100:.2f}%'}"]
    for e in res["error_answers"][:5]:
        lines.append(f"  sample {e['sample']}: the device answered {e['answer']}")
    if len(res["error_answers"]) > 5:
        lines.append(f"  ... {len(res['error_answers']) - 5} more error answers")
    lk, dv = res["link"], res["device"]
    where = (f"the twin at {res['twin']['clks_per_bit']} clocks per bit" if "twin" in res else f"{res['baud']} baud")
    lines.append(f"link: {res['n']} samples in {lk['seconds']:.2f} s over {res['port']} ({where}): "
                 f"{lk['samples_per_s']:.1f} samples/s")
    if dv["cycles_max"] is not None:
        spread = "" if dv["cycles_min"] == dv["cycles_max"] else f" ({dv['cycles_min']}..{dv['cycles_max']})"
        lines.append(f"device compute: {dv['cycles_max']} cycles per inference{spread}, {dv['latency_us']:.1f} us at "
                     f"{dv['clock_mhz']:g} MHz")
        rates = res["board_link"]
        lines.append("a board's link allows " + ", ".join(
            f"{r['samples_per_s']:.1f} samples/s at {b} baud" + ("" if r["reachable"] else f" (not from {dv['clock_mhz']:g} MHz)")
            for b, r in rates.items()) + f" (INFER {lk['infer_frame_bytes']} + RESULT {lk['result_frame_bytes']} bytes "
            "a sample, 8N1)")
    tw = res.get("twin")
    if tw and tw.get("cycles_per_s"):
        lines.append(f"twin: {tw['simulated_cycles']} cycles simulated in {tw['seconds']:.2f} s "
                     f"({tw['cycles_per_s'] / 1e6:.2f} M cycles/s)"
                     + (f"; {tw['link_cycles_per_sample']:.0f} cycles per sample on the simulated link, the protocol "
                        f"model says {tw['model_cycles_per_sample']:.0f}" if tw.get("model_cycles_per_sample") else ""))
    lines.append(f"bit-exact: {'yes' if res['bit_exact'] else 'no'}")
    return "\n".join(lines)
