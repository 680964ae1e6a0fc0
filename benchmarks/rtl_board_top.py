"""The board top's cost (issue 17): what `build --flow rtl --board B` adds around `opq_top` on a dev
board (opq_hw.rtl.board: the serial link's UART receiver and transmitter, the frame receiver's
INFER buffer of in_len bytes, the frame transmitter's RESULT buffer of out_len bytes, CRC-16, the
cycle counter, the byte packer, the power-on reset). Measured as the synthesized board top
(`opq_board`, the flow's Yosys command) minus the same design's `opq_top` synthesized alone
(benchmarks/results/rtl_whole_design.json, rtl-seq, same Yosys), on whole designs of
benchmarks/rtl_whole_design.py, at the board's oscillator (no PLL: a PLL is one hard cell).

    python benchmarks/rtl_board_top.py [--boards ulx3s-85f,icebreaker] [--jobs 2]

Writes benchmarks/results/rtl_board_top.json and the fitted coefficients of `opq_hw.cost.rtl.board_top_cost`
(board_configs/rtl_board_top_calibration.yaml), with the leave-one-out error.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from opq_hw.artifact import write_json  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "rtl_board_top.json"
WHOLE = ROOT / "benchmarks" / "results" / "rtl_whole_design.json"
MODELS = ("digits-mlp", "digits-cnn", "mnist1d-cnn", "corpus-conv1d-16-16", "basicmotions-cnn")
KEYS = ("lut_equiv", "ff", "bram18", "bram36", "lutram", "dsp")


def synth_board(args) -> dict:
    from rtl_whole_design import make_net

    from opq_hw.boards import load_board
    from opq_hw.rtl import clock, eda
    from opq_hw.rtl.board import LINK_HDL, DEFAULT_BAUD, board_top, clks_per_bit, geometry
    from opq_hw.rtl.gen import HDL_DIR, write_design
    from opq_hw.rtl.seq import generate_seq

    board_name, model = args
    b = load_board(board_name)
    d = generate_seq(make_net(model, 0))
    plan = clock.plan(b, None)
    cpb = clks_per_bit(plan.achieved_mhz, DEFAULT_BAUD)
    geo = geometry(d)
    with tempfile.TemporaryDirectory(prefix="opq-board-") as td:
        src = Path(td) / "src"
        files = list(write_design(d, src))
        (src / "opq_board.v").write_text(board_top(b, geo, cpb, plan))
        for f in LINK_HDL:
            shutil.copyfile(HDL_DIR / f, src / f)
        files += [src / f for f in LINK_HDL] + [src / "opq_board.v"]
        st = eda.synth(files, "opq_board", b.family, Path(td) / "syn", json_out=False, timeout=1800,
                       modules=[m["module"] for m in d.layer_modules])
    return {"board": board_name, "family": b.family, "model": model, "variant": 0, "clks_per_bit": cpb,
            "geometry": geo.to_dict(), "board_total": {k: st[k] for k in KEYS}, "seconds": st["seconds"]}


def main() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from opq_hw.boards import load_board
    from opq_hw.cost.rtl import board_top_cost, board_top_features

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--boards", default="ulx3s-85f,icebreaker")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--no-write", action="store_true", help="leave board_configs/rtl_board_top_calibration.yaml alone")
    args = ap.parse_args()
    old = json.loads(OUT.read_text()) if OUT.exists() else {"rows": []}
    done = {(r["board"], r["model"]): r for r in old["rows"]}
    todo = [(b, m) for b in args.boards.split(",") if b for m in args.models.split(",") if m and (b, m) not in done]
    print(f"{len(todo)} board tops to synthesize ({len(done)} reused)", flush=True)
    rows = list(done.values())
    with ThreadPoolExecutor(max_workers=args.jobs) as ex:
        for r in ex.map(synth_board, todo):
            rows.append(r)
            print(f"  {r['board']:11} {r['model']:22}: {r['board_total']} ({r['seconds']:.0f} s)", flush=True)
            write_json(OUT, {"rows": rows})
    whole = {(r["model"], r["variant"], r["family"]): r for r in json.loads(WHOLE.read_text())["rows"]
             if r.get("arch", "seq") == "seq" and "unsupported" not in r}
    for r in rows:  # a design whose opq_top was not synthesized alone on this family gives no glue
        t = whole.get((r["model"], r["variant"], r["family"]), {}).get("total")
        r["glue"] = {k: r["board_total"][k] - t[k] for k in KEYS} if t else None
        g = r["geometry"]
        r["features"] = board_top_features(g["in_len"], g["out_len"], g["in_len"] // g["beats"], r["family"])
    rows_all, rows = rows, [r for r in rows if r["glue"] is not None]
    from opq_hw.rtl import eda

    fits = {}
    for fam in sorted({r["family"] for r in rows}):
        fr = [r for r in rows if r["family"] == fam]
        cal = fit(fr)
        loo = [_errors(r, fit([q for q in fr if q is not r]) if len(fr) > 2 else cal) for r in fr]
        for r in fr:
            g = r["geometry"]
            r["estimate"] = {k: int(v) for k, v in board_top_cost(g["in_len"], g["out_len"], g["in_len"] // g["beats"],
                                                                    load_board(r["board"]), cal).items() if k in ("LUT", "FF", "BRAM18")}
            print(f"  {r['board']:11} {r['model']:22} in {g['in_len']:5} B out {g['out_len']:3} B: glue LUT "
                  f"{r['glue']['lut_equiv']:5} FF {r['glue']['ff']:5} BRAM18 {r['glue']['bram18'] + 2 * r['glue']['bram36']} "
                  f"LUT RAM {r['glue']['lutram']} (estimate {r['features']['lutram']:.0f}) | estimate {r['estimate']}")
        fits[fam] = {**cal, "n": len(fr), "loo_lut_max": round(max(e[0] for e in loo), 4),
                     "loo_ff_max": round(max(e[1] for e in loo), 4), "heldout_error": heldout_error(loo, fr)}
        print(f"{fam}: {fits[fam]}")
    write_json(OUT, {"yosys": eda.yosys_version(), "fits": fits, "rows": rows_all})
    if not args.no_write:
        write_yaml(fits, eda.yosys_version())


def fit(rows: list[dict]) -> dict:
    """The fixed LUTs and FFs of the family (the mean of what the structural terms leave): the read-mux bits
    at `MUX_LUT_PER_BIT` (not fitted: the measured designs share one or two link geometries), the
    flip-flops of the buffers in logic and of the packer counted."""
    import numpy as np

    from opq_hw.cost.rtl import MUX_LUT_PER_BIT

    k = MUX_LUT_PER_BIT[rows[0]["family"]]
    lut = float(np.mean([r["glue"]["lut_equiv"] - k * r["features"]["mux_bits"] for r in rows]))
    ff = float(np.mean([r["glue"]["ff"] - r["features"]["logic_bits"] - r["features"]["packer_bits"] for r in rows]))
    return {"lut": round(max(lut, 0.0), 3), "lut_per_mux_bit": round(k, 5), "ff": round(max(ff, 0.0), 3)}


def _errors(r: dict, cal: dict) -> tuple[float, float]:
    f = r["features"]
    lut = cal["lut"] + cal["lut_per_mux_bit"] * f["mux_bits"]
    ff = cal["ff"] + f["logic_bits"] + f["packer_bits"]
    return (abs(lut - r["glue"]["lut_equiv"]) / max(r["glue"]["lut_equiv"], 1), abs(ff - r["glue"]["ff"]) / max(r["glue"]["ff"], 1))


def heldout_error(loo: list[tuple[float, float]], rows: list[dict]) -> dict:
    """The board top's error band (`heldout_error`, the shape `opq_hw.cost.accuracy` reads): LUT and FF
    from the leave-one-out errors (each design's glue against the fit of the others), BRAM18 and DSP
    from the structural count (`board_top_features`, not fitted) against every measured glue."""
    import numpy as np

    def stat(e):
        return {"mape": round(float(np.mean(e)), 4), "max": round(float(np.max(e)), 4)}

    def count_err(est: float, got: float) -> float:
        return abs(est - got) / got if got else float(est != 0)

    bram = [count_err(r["features"]["bram"], r["glue"]["bram18"] + 2 * r["glue"]["bram36"]) for r in rows]
    dsp = [count_err(0, r["glue"]["dsp"]) for r in rows]
    return {"scope": "leave-one-out", "n": len(rows), "lut": stat([e[0] for e in loo]), "ff": stat([e[1] for e in loo]),
            "bram": stat(bram), "dsp": stat(dsp),
            "source": "benchmarks/rtl_board_top.py, results/rtl_board_top.json"}


def write_yaml(fits: dict, yosys: str) -> None:
    """board_configs/rtl_board_top_calibration.yaml: per family the coefficients and their provenance."""
    import yaml

    from opq_hw.artifact import write_bytes

    data = {}
    for fam, c in fits.items():
        data[fam] = {"lut": c["lut"], "lut_per_mux_bit": c["lut_per_mux_bit"], "ff": c["ff"],
                     "provenance": (f"measured by benchmarks/rtl_board_top.py: the board top synthesized ({yosys.split('(')[0].strip()}) "
                                    f"minus opq_top alone, {c['n']} rtl-seq whole designs; leave-one-out max error LUT "
                                    f"{c['loo_lut_max'] * 100:.1f}%, FF {c['loo_ff_max'] * 100:.1f}%"),
                     "heldout_error": c["heldout_error"]}
    head = ("# The board top's glue (serial link, frame buffers, packer) around opq_top on dev boards, per family:\n"
            "# LUT = lut + lut_per_mux_bit * read-mux bits (lut_per_mux_bit: MUX_LUT_PER_BIT, not fitted), FF = ff + buffer bits\n"
            "# in flip-flops (opq_hw.cost.rtl.board_top_cost). lut and ff: the mean over the measured designs.\n"
            "# heldout_error: the board top row's error band (LUT/FF leave-one-out over the measured designs; BRAM18/DSP\n"
            "# the structural count against every measurement), added to opq_top's in the totals (opq_hw.cost.accuracy).\n"
            "# Written by benchmarks/rtl_board_top.py.\n")
    write_bytes(ROOT / "board_configs" / "rtl_board_top_calibration.yaml", (head + yaml.safe_dump(data, sort_keys=False, width=200)).encode())


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"done in {time.time() - t0:.0f} s")
