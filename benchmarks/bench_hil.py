"""Hardware in the loop through the Verilator twin of a board top (`opq-hw hil RUN --port sim`):
the host's throughput over the twin's link, the twin's simulated cycles per second, and the
throughput a real board's serial link allows at 115200 and 3 Mbaud, computed from the protocol's
frame sizes and the compute cycles the device reported (`opq_hw.hil.link_seconds`).

    python benchmarks/bench_hil.py RUN [RUN ...] [--n 360] [--n-real 360] [--fast-cpb 8]

Each RUN has a board top (`opq-hw build RUN --flow rtl --board icebreaker|ulx3s-85f`). Per run:
`run_hil` at a fast bit period (`--fast-cpb` clocks per bit: the baud the board clock divides
that way) on `--n` samples, and at the bitstream's own bit period (its --baud, 115200 by default)
on `--n-real` samples; the twin in batch mode (sim/tb_uart.cpp's script mode: the same frames one
after another, no host; at the bit period built last) for its raw cycles per second. Writes benchmarks/results/hil.json and hil.png.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from opq_hw.artifact import write_json, write_png  # noqa: E402

BAUDS = (115200, 3_000_000)


def batch_speed(binary: Path, frames: list[bytes], cpb: int, gap: int) -> dict:
    """The twin alone (script mode): every frame then `gap` idle cycles; cycles per second of wall time."""
    with tempfile.TemporaryDirectory(prefix="opq-bench-hil-") as tmp:
        script, out = Path(tmp) / "script.txt", Path(tmp) / "out.txt"
        script.write_text("".join("".join(f"b {b}\n" for b in f) + f"i {gap}\n" for f in frames))
        t, c = time.perf_counter(), _child_cpu()
        subprocess.run([str(binary), str(script), str(out), str(cpb)], check=True, capture_output=True, timeout=3600)
        wall, cpu = time.perf_counter() - t, _child_cpu() - c
        rows = out.read_text().split()
        cycles = int(rows[rows.index("E") + 1])
    # per CPU second: what a machine the twin has to itself would see (the wall rate here depends on the load)
    return {"cycles": cycles, "seconds": round(wall, 3), "cpu_seconds": round(cpu, 3), "cycles_per_s": cycles / wall,
            "cycles_per_cpu_s": cycles / cpu if cpu > 0 else None}


def _child_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def one(run: Path, n: int, n_real: int, fast_cpb: int) -> dict:
    from opq_hw import hil
    from opq_hw.flows import rtl_hil
    from opq_hw.rtl.board import clks_per_bit

    info = rtl_hil.board_info(run)
    mhz = rtl_hil.clock_mhz(info)
    fast_baud = round(mhz * 1e6 / fast_cpb)
    rec: dict = {"run": run.name, "board": info["board"], "clock_mhz": mhz, "arch": info["protocol"]["arch"],
                 "protocol": info["protocol"]}
    for key, baud, count in (("fast", fast_baud, n), ("real", int(info["uart"]["baud"]), n_real)):
        if count:
            r = rtl_hil.run_hil(run, hil.SIM, baud=baud, n=count, write=False, log=None)
            rec[key] = {k: r[k] for k in ("baud", "n", "exact_samples", "bit_exact", "accuracy", "link", "device", "twin")}
            print(f"{run.name} {info['board']} twin at {r['twin']['clks_per_bit']} clocks/bit: "
                  f"{r['exact_samples']}/{r['n']} exact, {r['link']['samples_per_s']:.1f} samples/s, "
                  f"{r['twin']['cycles_per_s'] / 1e6:.2f} M cycles/s", flush=True)
    done = rec.get("fast") or rec["real"]
    cycles = done["device"]["cycles_max"]
    p = info["protocol"]
    rec["board_link"] = {}
    for baud in BAUDS:
        try:
            cpb = clks_per_bit(mhz, baud)
            note = f"{cpb} clocks per bit at {mhz:g} MHz"
        except Exception as e:  # noqa: BLE001 - the board clock does not divide to this baud
            cpb, note = None, str(e).split(";")[0] + " (needs another clock, e.g. a PLL)"
        rec["board_link"][str(baud)] = {
            "samples_per_s": 1.0 / hil.link_seconds(p["in_len"], p["out_len"], cycles, baud, mhz),
            "link_only_samples_per_s": 1.0 / hil.link_seconds(p["in_len"], p["out_len"], 0, baud, mhz),
            "clks_per_bit": cpb, "note": note}
    rec["compute_only_samples_per_s"] = mhz * 1e6 / cycles
    rec["batch"] = batch(run, rec, n)
    return rec


def batch(run: Path, rec: dict, n: int) -> dict:
    """The twin's raw speed in batch mode on the run's first test samples (at most 20)."""
    from opq_hw import hil
    from opq_hw.boards import load_board
    from opq_hw.flows.rtl_flow import _pixels, run_intnet
    from opq_hw.pipeline import quantize_input
    from opq_hw.rtl.board import LinkGeometry
    from opq_hw.rtl.twin import twin_binary
    from opq_hw.run import load_run

    p, cycles = rec["protocol"], (rec.get("fast") or rec["real"])["device"]["cycles_max"]
    rn = load_run(run)
    net = run_intnet(rn)
    x, _ = rn.test_data()
    geo = LinkGeometry(p["in_w"], p["beats"], p["out_w"], p["n_out"])
    frames = [hil.encode(hil.INFER, q) for q in geo.encode(_pixels(net, quantize_input(rn, x[:min(n or 20, 20)]), p["arch"]))]
    cpb = (rec.get("real") or rec["fast"])["twin"]["clks_per_bit"]  # the twin built last (cached)
    binary = twin_binary(run, load_board(rec["board"]), cpb)
    gap = int(cycles * 1.1) + (hil.HEADER + p["out_len"] + 6 + 4) * 10 * cpb
    return {**batch_speed(binary, frames, cpb, gap), "clks_per_bit": cpb, "samples": len(frames)}


def plot(recs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = [f"{r['run']}\n{r['board']}" for r in recs]
    series = [("twin, fast link (wall)", lambda r: r.get("fast", {}).get("link", {}).get("samples_per_s")),
              ("twin, real baud (wall)", lambda r: r.get("real", {}).get("link", {}).get("samples_per_s")),
              ("board at 115200 baud (model)", lambda r: r["board_link"]["115200"]["samples_per_s"]),
              ("board at 3 Mbaud (model)", lambda r: r["board_link"]["3000000"]["samples_per_s"]),
              ("compute alone (model)", lambda r: r["compute_only_samples_per_s"])]
    w = 0.8 / len(series)
    for k, (label, f) in enumerate(series):
        vals = [f(r) or 0 for r in recs]
        bars = a.bar([i + k * w for i in range(len(recs))], vals, w, label=label)
        if "Mbaud" in label:  # hatched: the board clock does not divide to 3 Mbaud (a PLL would be needed)
            for bar, r in zip(bars, recs):
                if r["board_link"]["3000000"]["clks_per_bit"] is None:
                    bar.set_hatch("//")
                    bar.set_alpha(0.5)
    a.set_xticks([i + 0.4 - w / 2 for i in range(len(recs))], names, fontsize=8)
    a.set_yscale("log")
    a.set_ylabel("samples/s")
    a.set_title("HIL throughput: through the twin, and what a board's link allows\n(hatched: not from this "
                "board's clock)", fontsize=10)
    a.legend(fontsize=7)
    sp = [("interactive, fast link", lambda r: r.get("fast", {}).get("twin", {}).get("cycles_per_s")),
          ("interactive, real baud", lambda r: r.get("real", {}).get("twin", {}).get("cycles_per_s")),
          ("batch (no host)", lambda r: r["batch"]["cycles_per_s"]),
          ("batch, per CPU second", lambda r: r["batch"].get("cycles_per_cpu_s"))]
    w = 0.8 / len(sp)
    for k, (label, f) in enumerate(sp):
        b.bar([i + k * w for i in range(len(recs))], [(f(r) or 0) / 1e6 for r in recs], w, label=label)
    b.set_xticks([i + 0.4 - w / 2 for i in range(len(recs))], names, fontsize=8)
    b.set_ylabel("simulated M cycles / s")
    b.set_title("Verilator twin of the board top (wall rates: a loaded 2-core machine)", fontsize=10)
    b.legend(fontsize=7)
    fig.tight_layout()
    write_png(path, fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="*", type=Path)
    ap.add_argument("--n", type=int, default=360, help="samples through the twin at the fast bit period (0: none)")
    ap.add_argument("--n-real", type=int, default=40, help="samples at the bitstream's own bit period (0: none)")
    ap.add_argument("--fast-cpb", type=int, default=8, help="clocks per UART bit of the fast twin")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "hil")
    ap.add_argument("--batch-only", action="store_true", help="measure only the twin's batch-mode speed again")
    ap.add_argument("--plot-only", action="store_true", help="redraw the plot from the JSON (RUN arguments ignored)")
    a = ap.parse_args()
    if a.batch_only:  # only the batch-mode speed of the runs given, into the existing JSON
        d = json.loads(a.out.with_suffix(".json").read_text())
        for r in a.runs:
            rec = next(x for x in d["runs"] if x["run"] == r.name)
            rec["batch"] = batch(r, rec, a.n)
            print(r.name, rec["batch"], flush=True)
        write_json(a.out.with_suffix(".json"), d)
    if a.plot_only or a.batch_only:
        plot(json.loads(a.out.with_suffix(".json").read_text())["runs"], a.out.with_suffix(".png"))
        return
    recs = [one(r, a.n, a.n_real, a.fast_cpb) for r in a.runs]
    write_json(a.out.with_suffix(".json"), {"fast_cpb": a.fast_cpb, "runs": recs})
    plot(recs, a.out.with_suffix(".png"))
    print(f"wrote {a.out.with_suffix('.json')} and .png")


if __name__ == "__main__":
    main()
