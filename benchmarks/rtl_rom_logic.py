"""LUTs of a weight ROM that Yosys keeps in soft logic, measured alone (issue 17): the rtl-seq layer's
ROM (`opq_hw.rtl.seq`, its real contents: input offset above a narrow-range weight, entries sorted by
output channel) cut out of the layer module into a module of its own (address in, registered word
out), synthesized with the flow's Yosys command for each family. It gives the law of
`opq_hw.cost.rtl.rom_logic_luts` (a mux tree per output bit over ceil(D / 16) 16-word leaves) and the
whole-design fit (benchmarks/rtl_whole_design.py) its `rom_luts` feature.

    python benchmarks/rtl_rom_logic.py [--families ecp5,ice40,xc7] [--jobs 2]

Writes benchmarks/results/rtl_rom_logic.json and prints the law's error per family.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from opq_hw.artifact import write_json  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "rtl_rom_logic.json"


def roms_in_logic(family: str) -> list[tuple[str, int, int]]:
    """(model, variant, layer) of the whole-design models whose weight ROM Yosys keeps in logic on `family`
    (by `yosys_memory`, which matches every committed whole-design row)."""
    from rtl_whole_design import FAMILY_BOARD, MODELS, VARIANTS, layer_params_of, make_net

    from opq_hw.boards import load_board
    from opq_hw.cost.rtl import _seq_memories, seq_features

    board = load_board(FAMILY_BOARD[family])
    out = []
    for m in MODELS:
        for v in range(VARIANTS):
            for i, q in enumerate(layer_params_of(make_net(m, v))):
                if float(_seq_memories(q, board, seq_features(q))["rom_logic_bits"]) > 0:
                    out.append((m, v, i))
    return out


def rom_module(model: str, variant: int, layer: int) -> tuple[str, int, int, int]:
    """Verilog of the layer's ROM alone (its `rom[k] = ...` initial block as generated), depth, width
    and the width less the constant columns (which Yosys drops)."""
    from rtl_whole_design import make_net

    from opq_hw.rtl.seq import generate_seq

    d = generate_seq(make_net(model, variant))
    name = d.layer_modules[layer]["module"]
    text = next(t for fn, t in d.files.items() if fn == f"{name}.v")
    decl = re.search(r"reg \[(\d+):0\] rom \[0:(\d+)\];", text)
    width, depth = int(decl.group(1)) + 1, int(decl.group(2)) + 1
    init = re.findall(r"^\s*rom\[\d+\] = [^;]+;$", text, re.M)
    words = [int(ln.split("'h")[1].rstrip(";"), 16) for ln in init]
    varying = sum(len({(w >> b) & 1 for w in words}) > 1 for b in range(width))
    ab = max(1, (depth - 1).bit_length())
    v = ["module rom_only (input clk, input [%d:0] a, output reg [%d:0] q);" % (ab - 1, width - 1),
         f"    reg [{width - 1}:0] rom [0:{depth - 1}];", "    initial begin"] + init + \
        ["    end", "    always @(posedge clk) q <= rom[a];", "endmodule", ""]
    return "\n".join(v), depth, width, varying


def synth_rom(args) -> dict:
    from opq_hw.rtl import eda

    model, variant, layer, family = args
    text, depth, width, varying = rom_module(model, variant, layer)
    with tempfile.TemporaryDirectory(prefix="opq-rom-") as td:
        src = Path(td) / "rom_only.v"
        src.write_text(text)
        st = eda.synth([src], "rom_only", family, Path(td) / "syn", json_out=False, timeout=600)
    return {"model": model, "variant": variant, "layer": layer, "family": family, "depth": depth, "width": width,
            "width_varying": varying, "lut_equiv": st["lut_equiv"], "lut": st["lut"], "muxf": st["muxf"], "ff": st["ff"],
            "bram18": st["bram18"] + 2 * st["bram36"], "seconds": st["seconds"]}


def main() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from opq_hw.cost.rtl import rom_logic_luts

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", default="ecp5,ice40,xc7")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    old = json.loads(OUT.read_text()) if OUT.exists() else {"rows": []}
    done = {(r["model"], r["variant"], r["layer"], r["family"]): r for r in old["rows"]}
    todo = [(m, v, i, f) for f in args.families.split(",") if f for m, v, i in roms_in_logic(f)
            if (m, v, i, f) not in done]
    print(f"{len(todo)} ROMs to synthesize ({len(done)} reused)", flush=True)
    rows = list(done.values())
    for r in rows:
        r.setdefault("width_varying", rom_module(r["model"], r["variant"], r["layer"])[3])
    with ThreadPoolExecutor(max_workers=args.jobs) as ex:
        for r in ex.map(synth_rom, todo):
            rows.append(r)
            print(f"  {r['family']:5} {r['model']:27} v{r['variant']} L{r['layer']}: {r['depth']} x {r['width']} -> "
                  f"{r['lut_equiv']} LUT ({r['seconds']:.0f} s)", flush=True)
            write_json(OUT, {"rows": rows})
    from opq_hw.rtl import eda

    summary = {}
    for fam in sorted({r["family"] for r in rows}):
        fr = [r for r in rows if r["family"] == fam]
        e = [abs(rom_logic_luts(r["depth"], r["width_varying"], fam) - r["lut_equiv"]) / r["lut_equiv"] for r in fr]
        summary[fam] = {"n": len(fr), "mape": round(sum(e) / len(e), 4), "max": round(max(e), 4)}
        print(f"{fam}: law vs measured on {len(fr)} ROMs: MAPE {summary[fam]['mape'] * 100:.1f}% "
              f"(max {summary[fam]['max'] * 100:.1f}%)")
    write_json(OUT, {"yosys": eda.yosys_version(), "law_error": summary, "rows": sorted(
        rows, key=lambda r: (r["family"], r["depth"] * r["width"]))})


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"done in {time.time() - t0:.0f} s")
