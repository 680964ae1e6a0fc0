"""How much Yosys's own LUT count of one rtl-seq design moves when nothing in the design changes
(issue 17): the whole design of benchmarks/rtl_whole_design.py synthesized again with the flow's
command, each time after reading `shift` small unrelated modules first. `hierarchy -top opq_top`
drops them, so the netlist that reaches synthesis is the same RTL; only the order in which Yosys
numbers its internal cells and wires (`$auto$...` names) moves, and with it the order in which
its passes and ABC walk the logic. The spread of the counts over the shifts is the noise floor
of a single synthesis run, which no weight-agnostic estimate can follow.

Found on ECP5 (`synth_ecp5`, Yosys 0.23): `abc -lut 4:7` maps a function of 5-7 inputs onto 2-8
LUT4s with PFUMX / L6MUX21, so the same logic, mapped as wider or narrower LUTs, swings by tens
of LUT4s per module; the carry chains (CCU2C), DSPs, block RAMs and flip-flops do not move. The
rows record the cells per run (per layer module and in all), the run of
`results/rtl_whole_design.json` and the committed estimate.

    python benchmarks/rtl_yosys_spread.py [--family ecp5] [--models corpus-conv1d-16-16] [--variants 2] [--shifts 8]

Writes benchmarks/results/rtl_yosys_spread.json and .md.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from opq_hw.artifact import write_bytes, write_json  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "rtl_yosys_spread.json"
KEYS = ("lut_equiv", "lut", "carry", "muxf", "ff", "dsp", "bram18", "lutram")


def unrelated_modules(shift: int) -> str:
    """`shift` small modules (a registered 16-entry case table each) that no design instantiates."""
    return "".join(f"module opq_unused{j} (input clk, input [3:0] a, output reg [7:0] q);\n"
                   f"    always @(posedge clk) case (a) " + " ".join(f"4'd{i}: q <= 8'd{(37 * i + 11 * j) % 256};"
                                                                 for i in range(16)) + " endcase\nendmodule\n"
                   for j in range(shift))


def synth_runs(model: str, variant: int, family: str, shifts: int) -> dict:
    """The design's counts per shift (0 = nothing read before it)."""
    from rtl_whole_design import make_net

    from opq_hw.rtl import eda
    from opq_hw.rtl.gen import write_design
    from opq_hw.rtl.seq import generate_seq

    d = generate_seq(make_net(model, variant))
    mods = [m["module"] for m in d.layer_modules]
    runs = []
    with tempfile.TemporaryDirectory(prefix="opq-spread-") as td:
        files = write_design(d, Path(td) / "src")
        for k in range(shifts):
            extra = Path(td) / f"unused{k}.v"
            extra.write_text(unrelated_modules(k))
            st = eda.synth([extra] + list(files), d.top, family, Path(td) / f"syn{k}", json_out=False, timeout=1800,
                           modules=mods)
            runs.append({"shift": k, "seconds": st["seconds"], "total": {k2: st[k2] for k2 in KEYS},
                         "modules": [{k2: st["modules"][m][k2] for k2 in KEYS} for m in mods]})
            print(f"  {family} {model} v{variant} shift {k}: LUT {st['lut_equiv']} "
                  f"({', '.join(str(st['modules'][m]['lut_equiv']) for m in mods)}) {st['seconds']:.0f} s", flush=True)
    return {"model": model, "variant": variant, "family": family, "runs": runs}


def summarize(row: dict, whole: dict) -> dict:
    """min / median / max of the LUT-equivalents over the runs, the cells that moved, the committed run and the
    committed estimate (results/rtl_whole_design.json) with its error against each."""
    lut = [r["total"]["lut_equiv"] for r in row["runs"]]
    moved = [k for k in KEYS if len({r["total"][k] for r in row["runs"]}) > 1]
    rec = next((r for r in whole.get("rows", []) if r["model"] == row["model"] and r["variant"] == row["variant"]
                and r["family"] == row["family"] and r.get("arch", "seq") == "seq" and r.get("act_bits", 4) == 4), None)
    out = {"lut_min": min(lut), "lut_median": float(np.median(lut)), "lut_max": max(lut),
           "spread": round((max(lut) - min(lut)) / float(np.median(lut)), 4), "moved": moved,
           "modules": [{"min": min(v), "max": max(v)} for v in
                       zip(*[[m["lut_equiv"] for m in r["modules"]] for r in row["runs"]])]}
    if rec and "estimate" in rec:
        e = rec["estimate"]["LUT"]
        out |= {"committed_run": rec["total"]["lut_equiv"], "estimate": e, "heldout": rec.get("heldout", False),
                **{f"err_{k}": round(e / v - 1, 4) for k, v in (("min", min(lut)), ("median", float(np.median(lut))),
                                                                ("max", max(lut)), ("committed", rec["total"]["lut_equiv"]))}}
    return out


def markdown(res: dict) -> str:
    lines = ["# Yosys's own spread on rtl-seq whole designs (same RTL, internal numbering shifted)", "",
             "Written by benchmarks/rtl_yosys_spread.py. Each design synthesized once per shift (0 to "
             f"{res['shifts'] - 1} unused modules read first). LUT = Yosys LUT-equivalents. Estimate = the committed "
             "weight-agnostic estimate of results/rtl_whole_design.json; its error against the smallest, median and "
             "largest run, and against the run committed there. **H** = held-out model.", "",
             "| family | model | alloc | held out | LUT min / median / max | spread | per layer module min-max | "
             "cells that moved | committed run | estimate | error vs min / median / max | vs committed |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        s = r["summary"]
        err = (f"{s['err_min'] * 100:+.1f}% / {s['err_median'] * 100:+.1f}% / {s['err_max'] * 100:+.1f}%"
               if "estimate" in s else "")
        lines.append(f"| {r['family']} | {r['model']} | v{r['variant']} | {'**H**' if s.get('heldout') else ''} | "
                     f"{s['lut_min']} / {s['lut_median']:.0f} / {s['lut_max']} | {s['spread'] * 100:.1f}% | "
                     + ", ".join(f"{m['min']}-{m['max']}" for m in s["modules"]) + f" | {', '.join(s['moved'])} | "
                     f"{s.get('committed_run', '')} | {s.get('estimate', '')} | {err} | "
                     + (f"{s['err_committed'] * 100:+.1f}%" if "estimate" in s else "") + " |")
    for fam, line in heldout_lines(res["rows"]).items():
        lines += ["", f"- {fam}: {line}"]
    return "\n".join(lines) + "\n"


def heldout_lines(rows: list[dict]) -> dict[str, str]:
    """Per family: the held-out designs' estimate against the median run and against the committed run (mean and
    max absolute error), and the largest spread."""
    out = {}
    for fam in sorted({r["family"] for r in rows}):
        s = [r["summary"] for r in rows if r["family"] == fam and r["summary"].get("heldout")]
        if not s:
            continue
        med, com = [abs(x["err_median"]) for x in s], [abs(x["err_committed"]) for x in s]
        out[fam] = (f"{len(s)} held-out designs, LUT error of the estimate against the median run: mean "
                    f"{np.mean(med) * 100:.1f}%, max {max(med) * 100:.1f}%; against the committed run: mean "
                    f"{np.mean(com) * 100:.1f}%, max {max(com) * 100:.1f}%; Yosys's spread up to "
                    f"{max(x['spread'] for x in s) * 100:.1f}%")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", default="ecp5", choices=["ecp5", "ice40", "xc7"])
    ap.add_argument("--models", default="corpus-conv1d-16-16", help="comma-separated models of rtl_whole_design.MODELS")
    ap.add_argument("--variants", type=int, default=2)
    ap.add_argument("--shifts", type=int, default=8, help="runs per design (0 .. shifts-1 unused modules first)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    from rtl_whole_design import MODELS

    models = [m for m in args.models.split(",") if m]
    unknown = set(models) - set(MODELS)
    if unknown:
        raise SystemExit(f"unknown models {sorted(unknown)}; known: {', '.join(MODELS)}")
    from opq_hw.rtl import eda

    old = json.loads(args.out.read_text()) if args.out.exists() else {"rows": []}
    if old.get("shifts", args.shifts) != args.shifts:
        old = {"rows": []}  # another number of runs per design: start over
    whole_path = ROOT / "benchmarks" / "results" / "rtl_whole_design.json"
    whole = json.loads(whole_path.read_text()) if whole_path.exists() else {"rows": []}
    done = {(r["model"], r["variant"], r["family"]) for r in old["rows"]}
    rows = list(old["rows"])
    for m in models:
        for v in range(args.variants):
            if (m, v, args.family) not in done:
                rows.append(synth_runs(m, v, args.family, args.shifts))
    for r in rows:
        r["summary"] = summarize(r, whole)
    res = {"yosys": eda.yosys_version(), "shifts": args.shifts, "rows": rows}
    write_json(args.out, res)
    write_bytes(args.out.with_suffix(".md"), markdown(res).encode())
    for r in rows:
        s = r["summary"]
        print(f"{r['family']} {r['model']} v{r['variant']}: LUT {s['lut_min']}-{s['lut_max']} (median {s['lut_median']:.0f}, "
              f"spread {s['spread'] * 100:.1f}%), moved: {', '.join(s['moved'])}"
              + (f"; estimate {s['estimate']}: {s['err_min'] * 100:+.1f}% / {s['err_median'] * 100:+.1f}% / "
                 f"{s['err_max'] * 100:+.1f}%" if "estimate" in s else ""))
    for fam, line in heldout_lines(rows).items():
        print(f"{fam}: {line}")


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"done in {time.time() - t0:.0f} s")
