"""Uncompressed (8-bit, unpruned) vs OPQ-compressed digits CNN through the open RTL flow on one part:
LUTs, FFs, Fmax, bitstream or not, bit-exactness, throughput, latency, stage times.

    python benchmarks/rtl_compare.py [--board ecp5-85f] [--rtl-arch seq|da4ml] [--opq RUN] [--dense RUN]

Without --opq/--dense the two runs are compressed here first (digits-cnn: OPQ at 20x CR_w pow2,
and `uniform` 8-bit at 4x CR_w, i.e. 8 bits with only the ~1% zeros the allocator's rounding
leaves). Writes benchmarks/results/rtl_compare_<arch>_<board>.json and .md.
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from opq_hw.artifact import read_json, write_bytes, write_json, write_png  # noqa: E402
from opq_hw.errors import OpqError  # noqa: E402


def _cpu() -> float:
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def one(run: Path, board: str, pipeline: float, arch: str, reuse: bool = False) -> dict:
    from opq_hw.flows.rtl_flow import build

    prev = run / "build" / "rtl" / "rtl_build.json"
    if reuse and prev.exists():
        import json

        s = json.loads(prev.read_text())
        if s.get("board") == board and float(s.get("pipeline", -1)) == pipeline and s.get("arch", "da4ml") == arch:
            return {"run": run.name, "ok": "error" not in s.get("pnr", {}) and s.get("fit", {}).get("fits", False),
                    "error": s.get("fit", {}).get("message") or s.get("pnr", {}).get("error"), "reused": True,
                    "wall_s": s.get("seconds", {}).get("total"), "cpu_s": s.get("cpu_seconds"), "summary": s}
    t, c = time.time(), _cpu()
    rec: dict = {"run": run.name}
    try:
        s = build(run, board=board, pipeline=pipeline or None, rtl_arch=arch, log=None)
        rec["ok"] = True
    except OpqError as e:
        rec["ok"] = False
        rec["error"] = str(e).splitlines()[0]
        import json

        p = run / "build" / "rtl" / "rtl_build.json"
        s = json.loads(p.read_text()) if p.exists() else {}
    rec["wall_s"] = round(time.time() - t, 1)
    rec["cpu_s"] = round(_cpu() - c, 1)
    rec["summary"] = s
    return rec


def row(name: str, r: dict) -> str:
    s = r["summary"]
    syn, pnr, sim = s.get("synth", {}), s.get("pnr", {}), s.get("simulation", {})
    layers = s.get("layers", [])
    nnz = sum(lm.get("n_nonzero", 0) for lm in layers)
    bits = "/".join(str(lm.get("w_bits", "?")) for lm in layers)
    fmax = pnr.get("fmax_mhz")
    est = (sum(lm.get("da4ml_cost", 0) for lm in layers) if s.get("arch", "da4ml") == "da4ml"
           else sum(lm.get("rom_bits", 0) for lm in layers))
    return (f"| {name} | {bits} | {nnz} | {est:.0f} | {syn.get('lut', '-')} | {syn.get('carry', '-')} | {syn.get('lut_equiv', '-')} | "
            f"{syn.get('ff', '-')} | {syn.get('dsp', '-')} | {syn.get('bram18', '-')} | {fmax if fmax is None else f'{fmax:.1f}'} | "
            f"{'yes' if pnr.get('bitstream') else 'no'} | "
            f"{sim.get('exact_samples', '-')}/{sim.get('n', '-')} | {sim.get('accuracy', 0) * 100:.2f}% | "
            f"{sim.get('latency_cycles', '-')} | "
            f"{sim.get('throughput_sps_at_fmax', 0):.0f} | {r['wall_s']} | {r['cpu_s']} |")


def plot(res: dict, path: Path) -> None:
    """LUT-equivalents, block RAMs and samples/s at Fmax, OPQ vs uncompressed, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = {"opq": "OPQ 20x", "dense8": "uncompressed 8-bit"}
    metrics = [("LUT-equivalents", lambda s: s.get("synth", {}).get("lut_equiv")),
               ("block RAMs", lambda s: s.get("synth", {}).get("bram18")),
               ("samples/s at Fmax", lambda s: s.get("simulation", {}).get("throughput_sps_at_fmax"))]
    fig, axes = plt.subplots(1, 3, figsize=(10, 3))
    for ax, (title, get) in zip(axes, metrics):
        vals = [get(res[k]["summary"]) or 0 for k in names]
        ax.bar(list(names.values()), vals, color=["tab:green", "tab:gray"])
        ax.set_title(title)
        for i, v in enumerate(vals):
            ax.text(i, v, f"{v:,.0f}", ha="center", va="bottom")
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle(f"digits-cnn, open RTL flow ({res.get('arch', 'da4ml')}), {res['board']}", y=1.06)
    write_png(path, fig)


def markdown(res: dict) -> str:
    arch, board = res.get("arch", "da4ml"), res["board"]
    est = "da4ml LUT estimate" if arch == "da4ml" else "weight ROM bits"
    hdr = (f"| model | bits per layer | nonzero weights | {est} | LUT4/LUT | carry cells | LUT-equiv | FF | DSP | BRAM | Fmax MHz | "
           "bitstream | bit-exact samples | accuracy | latency cycles | samples/s at Fmax | flow wall s | flow CPU s |\n"
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    md = (f"# Open RTL flow ({arch} architecture): uncompressed vs OPQ, digits-cnn on {board}\n\n"
          f"Written by benchmarks/rtl_compare.py. Tools: {res['opq']['summary'].get('tools', {})}. "
          f"Wall time is on a shared 2-core machine; CPU s is the flow's own CPU time (all stages).\n\n"
          + hdr + "\n" + row("OPQ 20x (pow2)", res["opq"]) + "\n" + row("uncompressed 8-bit", res["dense8"]) + "\n")
    for k in ("opq", "dense8"):
        sm = res[k]["summary"]
        if not res[k].get("ok") and res[k].get("error"):
            md += f"\n{k}: {res[k]['error']}\n"
        for key in ("synth_error",):
            if key in sm:
                md += f"\n{k}: {sm[key].splitlines()[0]}\n"
        if "pnr" in sm and "error" in sm["pnr"]:
            md += f"\n{k}: place and route: {sm['pnr']['error'].splitlines()[0]}\n"
        if "synth" not in sm:
            md += f"\n{k}: no Yosys counts in this record (synthesis not run or not finished)\n"
    return md


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--board", default="ecp5-85f")
    ap.add_argument("--opq", type=Path)
    ap.add_argument("--dense", type=Path)
    ap.add_argument("--pipeline", type=float, default=0.0, help="da4ml only")
    ap.add_argument("--rtl-arch", default="seq", choices=["seq", "da4ml"])
    ap.add_argument("--reuse", action="store_true", help="take an existing build/rtl/rtl_build.json of the same board")
    ap.add_argument("--replot", action="store_true", help="only redraw the PNG from the committed JSON")
    args = ap.parse_args()
    out = ROOT / "benchmarks" / "results"
    stem = f"rtl_compare_{args.rtl_arch}_{args.board}"
    if args.replot:
        res = read_json(out / f"{stem}.json")
        plot(res, out / f"{stem}.png")
        write_bytes(out / f"{stem}.md", markdown(res).encode())
        return
    tmp = None
    if args.opq is None or args.dense is None:
        from opq_hw.pipeline import CompressConfig, compress_run

        tmp = Path(tempfile.mkdtemp(prefix="opq-rtlcmp-"))
        if args.opq is None:
            args.opq = compress_run(CompressConfig(model="digits-cnn", data="digits", target_cr=20, epochs=2),
                                    tmp / "opq", progress=False)
        if args.dense is None:
            args.dense = compress_run(CompressConfig(model="digits-cnn", data="digits", method="uniform", uniform_bits=8,
                                                     target_cr=4, epochs=2), tmp / "dense8", progress=False)
    arch = args.rtl_arch
    res = {"board": args.board, "arch": arch, "pipeline": args.pipeline,
           "opq": one(Path(args.opq), args.board, args.pipeline, arch, args.reuse),
           "dense8": one(Path(args.dense), args.board, args.pipeline, arch, args.reuse)}
    write_json(out / f"{stem}.json", res)
    plot(res, out / f"{stem}.png")
    md = markdown(res)
    write_bytes(out / f"{stem}.md", md.encode())
    print(md)


if __name__ == "__main__":
    main()
