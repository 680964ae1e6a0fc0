"""Flip-flops Yosys keeps of one registered requantizer (opq_hw.rtl.gen.requant_expr) against
`gen.requant_live_bits`, over accumulator width, zero low bits, bus width, shift, signedness and
output bits: one module per case, all in one Yosys 0.23 `synth_ecp5` session.

    python benchmarks/requant_ff_sweep.py        -> benchmarks/results/requant_ff_sweep.json
"""
from __future__ import annotations

import itertools
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from opq_hw.artifact import write_json  # noqa: E402
from opq_hw.rtl import eda  # noqa: E402
from opq_hw.rtl.gen import requant_expr, requant_live_bits  # noqa: E402


def cases(widths=(2, 3, 4, 5, 7, 9, 12), shifts=range(-11, 3), out_bits=(4, 8)):
    """(width, zero low bits, bus width, shift, signed, out_bits): the bus is the accumulator with
    two sign (or zero) copies on top, or, without zero low bits, exactly the accumulator."""
    for w, sh, ob, signed in itertools.product(widths, shifts, out_bits, (True, False)):
        for lo, extra in ((0, 0), (0, 2), (1, 2), (2, 2)):
            yield w, lo, w + lo + extra, sh, signed, ob


def module(n: int, w: int, lo: int, aw: int, sh: int, signed: bool, ob: int) -> str:
    pad = aw - w - lo
    ext = f"x[{w - 1}]" if signed else "1'b0"
    acc = "{" + (f"{{{pad}{{{ext}}}}}, " if pad else "") + "x" + (f", {lo}'d0" if lo else "") + "}"
    body = "\n    ".join(requant_expr("a", aw, sh, ob, "r"))
    return (f"module m{n} (input clk, input [{w - 1}:0] x, output reg [{ob - 1}:0] q);\n"
            f"    wire [{aw - 1}:0] a = {acc};\n    {body}\n    always @(posedge clk) q <= r;\nendmodule\n")


def sweep(cs: list[tuple]) -> list[int]:
    """Yosys' flip-flop count of each case."""
    with tempfile.TemporaryDirectory(prefix="opq-rqsweep-") as td:
        work = Path(td)
        (work / "all.v").write_text("".join(module(n, *c) for n, c in enumerate(cs)))
        lines = ["read_verilog all.v", "design -save base"]
        for n in range(len(cs)):
            lines += ["design -load base", eda.SYNTH_CMD["ecp5"].format(top=f"m{n}", json="x.json").replace(" -json x.json", ""),
                      f"tee -q -o s{n}.txt stat"]
        (work / "run.ys").write_text("\n".join(lines) + "\n")
        subprocess.run(["yosys", "-q", "-s", "run.ys"], cwd=work, check=True)
        return [eda.parse_stat((work / f"s{n}.txt").read_text(), "ecp5", f"m{n}")["ff"] for n in range(len(cs))]


def main() -> None:
    cs = list(cases())
    ffs = sweep(cs)
    rows = [{"width": w, "zero_low_bits": lo, "bus": aw, "shift": sh, "signed": s, "out_bits": ob, "ff": ff,
             "estimate": requant_live_bits(w, -lo, sh, ob, aw)} for (w, lo, aw, sh, s, ob), ff in zip(cs, ffs)]
    summary = {}
    for s in (True, False):
        rs = [r for r in rows if r["signed"] == s]
        errs = [r["estimate"] - r["ff"] for r in rs]
        summary["signed" if s else "unsigned"] = {"n": len(rs), "exact": sum(e == 0 for e in errs),
                                                  "max_abs_error": max(map(abs, errs))}
        print(f"{'signed' if s else 'unsigned'} accumulators: exact {summary['signed' if s else 'unsigned']['exact']}"
              f"/{len(rs)}, max error {max(map(abs, errs))} FF", flush=True)
    write_json(ROOT / "benchmarks" / "results" / "requant_ff_sweep.json",
               {"yosys": eda.yosys_version(), "summary": summary, "rows": rows})


if __name__ == "__main__":
    main()
