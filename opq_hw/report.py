"""Resource-estimate reports of a run directory: `cost.json`, `reports/estimate.md` and a
self-contained `reports/estimate.html` (matplotlib figures embedded as base64 PNG).

`estimate_run(run, board, arch)` needs only the run's JSON records (specs, allocation, manifest):
no torch, no tools. `report_run(run)` puts the estimate beside measured resources that a flow
left in the run (`build/<flow>/resources.json`, see `measured_resources`).
"""
from __future__ import annotations

import base64
import dataclasses
import html
import os
from pathlib import Path
from typing import Any, Mapping

from .artifact import dumps, png_bytes, read_json
from .rundir import write_outputs
from .boards import RESOURCES, list_boards, load_board
from .cost import ARCH_FLOW, CostReport, choose_folding, estimate
from .cost.accuracy import STATISTIC, fmt
from .cost.fit import FITS, OPTIMISTIC
from .errors import OpqError
from .spec import DEFAULTS, Allocation, LayerSpec


def read_records(run_dir: str | os.PathLike) -> tuple[list[LayerSpec], Allocation, dict[str, Any]]:
    """(specs, allocation, manifest) of a run directory, JSON only (every core artifact verified)."""
    from .rundir import open_run
    from .spec import read_records as read_specs_alloc

    manifest = open_run(run_dir)
    specs, alloc = read_specs_alloc(run_dir)
    return specs, alloc, manifest


def run_act_bits(manifest: Mapping[str, Any]) -> int | None:
    return manifest.get("config", {}).get("act_bits", 8)


def estimate_for(specs, alloc, board, arch, act_bits, folding=None, affines=None, logit_bits=None) -> CostReport:
    """Estimate with `folding`, or with the fastest folding that fits (the most folded if none fits); `affines`:
    the run's BatchNorms kept as channel affines (manifest `bn_affine`); `logit_bits`: `run_logit_bits`."""
    if folding is None:
        folding = choose_folding(specs, alloc, board, arch, act_bits=act_bits, strict=False)
    return estimate(specs, alloc, board, arch, folding=folding, act_bits=act_bits, affines=affines, logit_bits=logit_bits)


def run_logit_bits(run_dir: str | os.PathLike, specs: list[LayerSpec], arch: str = "") -> int | None:
    """The last layer's accumulator width from the run's actual integer weights, as opq_hw.rtl.seq sizes the
    logits: read from `build/rtl/intnet.json` (the integer network `build --flow rtl` extracted and checked
    bit-exact; verified against the manifest), None when the run has none (the estimate is then weight-agnostic)
    or when its layers are not the run's (names or shapes differ: a stale build). `arch` rtl-da: the width da4ml
    gave them where the run has a da4ml build of these layers (`_da4ml_logit_bits`), else that bound."""
    from .rundir import verify

    if arch == "rtl-da":
        da = _da4ml_logit_bits(Path(run_dir), specs)
        if da:
            return da
    from .rtl.intnet import IntNet
    from .rtl.seq import _acc_bits

    f = Path(run_dir) / "build" / "rtl" / "intnet.json"
    if not f.is_file():
        return None
    verify(run_dir, ["build/rtl/intnet.json"])
    try:
        layers = IntNet.from_dict(read_json(f)).layers
    except (KeyError, TypeError, ValueError) as e:
        raise OpqError(f"{f}: not an integer network record ({e}); build it again with `opq-hw build RUN --flow rtl`") from None
    if [(L.name, int(L.w.shape[0])) for L in layers] != [(s.name, s.out_channels) for s in specs]:
        return None
    return _acc_bits(layers[-1], layers[-1].in_bits, layers[-1].in_signed)


def _da4ml_logit_bits(run_dir: Path, specs: list[LayerSpec]) -> int | None:
    """The logits' width AW of the run's da4ml build (`build/rtl/rtl_build.json`, verified against the manifest:
    the last layer's `acc_w`, what opq_serialize is instantiated with; da4ml sizes it from the interval of the
    actual sums, 0-1 bit under opq_hw.rtl.seq's bound), None without such a build (seq, digit-serial, or of
    other layers)."""
    from .rundir import verify

    f = run_dir / "build" / "rtl" / "rtl_build.json"
    if not f.is_file():
        return None
    verify(run_dir, ["build/rtl/rtl_build.json"])
    rec = read_json(f)
    layers = rec.get("layers") if isinstance(rec, dict) else None
    if not isinstance(layers, list) or rec.get("arch") != "da4ml" or rec.get("serial_bits") or \
            [str(L.get("name")) if isinstance(L, dict) else None for L in layers] != [s.name for s in specs]:
        return None
    aw = layers[-1].get("acc_w")
    return int(aw) if isinstance(aw, int) and not isinstance(aw, bool) and aw > 0 else None


def across_boards(specs, alloc, arch, act_bits, affines=None) -> list[CostReport]:
    """The same allocation on every shipped board that has the architecture's flow (dev boards
    such as icebreaker share their part's row: they are skipped)."""
    out = []
    for name in list_boards():
        b = load_board(name)
        if ARCH_FLOW[arch] in b.flows and b.based_on is None:
            out.append(estimate_for(specs, alloc, b, arch, act_bits, affines=affines))
    return out


# ------------------------------------------------------------------------------------------------
# figures
# ------------------------------------------------------------------------------------------------
def figures(rep: CostReport, alloc: Allocation) -> dict[str, bytes]:
    """PNG bytes of: per-layer sparsity and bits, per-layer resources stacked against the board
    capacity, per-layer cycles with the bottleneck marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = [lc.name for lc in rep.layers]
    x = np.arange(len(names))
    out = {}

    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    sp = [_sparsity(alloc, lc) * 100 for lc in rep.layers]
    ax.bar(x - 0.2, sp, 0.4, color="#4c72b0", label="sparsity %")
    ax.set_ylabel("sparsity (%)")
    ax.set_ylim(0, 100)
    ax2 = ax.twinx()
    ax2.bar(x + 0.2, [lc.bits for lc in rep.layers], 0.4, color="#dd8452", label="weight bits")
    ax2.set_ylabel("weight bits")
    ax2.set_ylim(0, max(lc.bits for lc in rep.layers) + 1)
    ax.set_xticks(x, names)
    ax.set_xlabel("layer")
    ax.set_title("OPQ allocation per layer")
    fig.legend(loc="upper right", fontsize=8)
    out["allocation"] = png_bytes(fig)

    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    res = [r for r in RESOURCES if rep.capacity[r] > 0]
    left = np.zeros(len(res))
    cmap = plt.get_cmap("tab10")
    for i, lc in enumerate(rep.layers):
        vals = np.array([100.0 * getattr(lc, r) / rep.capacity[r] for r in res])
        ax.barh(res, vals, left=left, color=cmap(i % 10), label=lc.name)
        left += vals
    # what the design holds beyond its layers (rtl-seq / rtl-da top level: stream, sequencer, logits), in the totals
    top = np.array([100.0 * (rep.totals[r] - sum(getattr(lc, r) for lc in rep.layers)) / rep.capacity[r] for r in res])
    if top.any():
        ax.barh(res, top, left=left, color="#cccccc", label="top level")
        left += top
    shell = np.array([100.0 * rep.shell[r] / rep.capacity[r] for r in res])
    if shell.any():
        ax.barh(res, shell, left=left, color="#999999", label="shell")
    for j, r in enumerate(res):
        lim = 100.0 * rep.limits[r] / rep.capacity[r]
        ax.plot([lim, lim], [j - 0.4, j + 0.4], color="red", lw=2)
        lo, hi = (100.0 * v / rep.capacity[r] for v in rep.used_range.get(r, (0, 0)))
        if hi > lo:  # the error band of the total (with the shell): optimistic .. pessimistic end
            ax.errorbar([left[j] + shell[j]], [j], xerr=[[left[j] + shell[j] - lo], [hi - left[j] - shell[j]]],
                        color="black", capsize=4, lw=1.2, label="error band" if j == 0 else None)
    ax.axvline(100, color="black", lw=0.8)
    ax.set_xlabel(f"% of {rep.board} capacity (red: utilisation limit; black: error band)")
    ax.set_title(f"{rep.arch} on {rep.board}: {rep.fit or ('fits' if rep.fits else 'does not fit')} "
                 f"(binding: {rep.binding})", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    out["resources"] = png_bytes(fig)

    fig, ax = plt.subplots(figsize=(6.4, 3.0))
    cyc = [lc.cycles for lc in rep.layers]
    colors = ["#c44e52" if n == rep.bottleneck else "#55a868" for n in names]
    ax.bar(x, cyc, color=colors)
    ax.set_xticks(x, names)
    ax.set_ylabel("cycles per sample")
    ax.set_xlabel("layer")
    ax.set_title(f"cycles per layer (red: bottleneck {rep.bottleneck}, II {rep.ii_cycles})")
    out["cycles"] = png_bytes(fig)
    return out


# ------------------------------------------------------------------------------------------------
# text
# ------------------------------------------------------------------------------------------------
def _fold_str(f: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in f.items()) or "-"


def _dims(shape) -> str:
    return "x".join(str(d) for d in shape)


def _sparsity(alloc: Allocation, lc) -> float:
    """The allocation's sparsity of a layer; a BatchNorm kept as a channel affine (kind "affine") has none."""
    return 0.0 if lc.kind == "affine" else alloc.layer(lc.name).sparsity


def layer_label(name: str, specs: list[LayerSpec] | None = None) -> str:
    """A layer's name with its kind and shapes, e.g. `3 (conv2d 16x4x4 -> 32x4x4)`."""
    s = next((s for s in specs or () if s.name == name), None)
    return name if s is None else f"{name} ({s.kind} {_dims(s.in_shape)} -> {_dims(s.out_shape)})"


def _shown(rep: CostReport, r: str) -> bool:
    """A resource worth a figure: the board has it or the design uses it."""
    return rep.capacity.get(r, 0) > 0 or rep.totals.get(r, 0) > 0


def figure_cells(rep: CostReport) -> dict[str, str]:
    """Every total of the estimate with its error band: `LUT` -> `1,404 ± 9 %`, `BRAM18` -> `4 (exact)`,
    `DSP` -> `0 (uncalibrated)`; II, latency (cycles and us) and frames/s carry the cycles' band
    (frames/s = clock / II, so its relative band is b / (1 - b))."""
    cells = {r: fmt(rep.totals[r], rep.band(r)) for r in ("LUT", "FF", "DSP", "BRAM18", "URAM") if _shown(rep, r)}
    cyc = rep.band("cycles")
    cells["II"] = fmt(rep.ii_cycles, cyc, " cycles")
    cells["latency"] = fmt(rep.latency_cycles, cyc, " cycles") + f" = {rep.latency_us:.2f} us"
    fps = cyc if not cyc.rel else dataclasses.replace(cyc, rel=cyc.rel / (1 - cyc.rel) if cyc.rel < 1 else float("inf"))
    cells["frames/s"] = fmt(rep.throughput_fps, fps)
    return cells


def figures_line(rep: CostReport) -> str:
    """The `opq-hw estimate` second line: every total with its band."""
    return "figures: " + ", ".join(f"{k} {v}" for k, v in figure_cells(rep).items())


def accuracy_lines(rep: CostReport) -> list[str]:
    """Where the bands come from, and which figures are uncalibrated and why."""
    cal = {f: rep.band(f) for f in ("LUT", "FF", "DSP", "BRAM18", "URAM", "cycles") if f == "cycles" or _shown(rep, f)}
    out = []
    known = [f"{f} {b.label()} (mean {100 * b.mape:.1f} %)" for f, b in cal.items() if b.calibrated]
    if known:
        scope = {b.scope for b in cal.values() if b.calibrated}
        n = {b.n for b in cal.values() if b.calibrated}
        out.append(f"Error bands ({STATISTIC}, n = {'/'.join(map(str, sorted(n)))} held-out "
                   f"{'/'.join(sorted(scope))} measurements; {rep.provenance.get('error bands', '')}): " + ", ".join(known) + ".")
    unc: dict[str, list[str]] = {}
    for f, b in cal.items():
        if not b.calibrated:
            unc.setdefault(b.why or "uncalibrated", []).append(f)
    out += [f"Uncalibrated {', '.join(fs)}: {why.removeprefix('uncalibrated: ')}." for why, fs in unc.items()]
    for part in rep.part_bands:
        pb = {f: rep.part_band(part, f) for f in ("LUT", "FF", "DSP", "BRAM18", "URAM") if rep.parts[part].get(f)}
        out.append(f"The {part} row has its own band ({', '.join(f'{f} {b.label()}' for f, b in pb.items())}; "
                   + (next(iter(pb.values())).why if pb else "") + "); the totals' bands add its absolute error to "
                   "opq_top's (both at the worst end of their bands, same direction: conservative).")
    return out


def part_cell(rep: CostReport, part: str, r: str) -> str:
    """One figure of a part's row: `1,244 ± 27 %` when the part has a band of its own (the board top),
    else the number (the RTL top level, inside the whole-design band)."""
    b = rep.part_band(part, r)
    return fmt(rep.parts[part][r], b) if b is not None and rep.parts[part][r] else f"{rep.parts[part][r]:,}"


def _with_band(rep: CostReport, figure: str) -> str:
    if figure != "cycles" and not _shown(rep, figure):
        return figure
    return f"{figure} ({rep.band(figure).label()})"


def _total(rep: CostReport, r: str) -> str:
    return fmt(rep.totals[r], rep.band(r)) if _shown(rep, r) else "-"


def layer_rows(rep: CostReport, alloc: Allocation, specs: list[LayerSpec] | None = None) -> tuple[list[str], list[list[str]]]:
    """Per-layer table; each figure's column header carries its band (`LUT (± 9 %)`), the totals
    row the totals with their bands."""
    head = ["layer", "bits", "nonzero", "sparsity", "folding", *[_with_band(rep, r) for r in ("LUT", "FF", "DSP", "BRAM18", "URAM")],
            _with_band(rep, "cycles"), "latency"]
    rows = []
    for lc in rep.layers:
        rows.append([layer_label(lc.name, specs), str(lc.bits), f"{lc.n_nonzero}/{lc.n_weights}", f"{_sparsity(alloc, lc):.3f}",
                     _fold_str(lc.folding), f"{lc.LUT:,}", f"{lc.FF:,}", str(lc.DSP), str(lc.BRAM18), str(lc.URAM),
                     f"{lc.cycles:,}", f"{lc.latency_cycles:,}"])
    for name, c in rep.parts.items():  # beyond the layers, in the totals; a part measured apart shows its own band
        rows.append([name, "", "", "", "", *[part_cell(rep, name, r) for r in ("LUT", "FF", "DSP", "BRAM18", "URAM")],
                     f"{c.get('cycles', 0):,}", ""])
    rows.append(["total", "", "", "", "", *[_total(rep, r) for r in ("LUT", "FF", "DSP", "BRAM18", "URAM")],
                 "II " + fmt(rep.ii_cycles, rep.band("cycles")), fmt(rep.latency_cycles, rep.band("cycles"))])
    return head, rows


def verdict_short(rep: CostReport) -> str:
    """The tri-state verdict for a table cell, `, uncalibrated` when a used resource has no band."""
    v = rep.fit or ("fits" if rep.fits else "does not fit")
    return v + (", uncalibrated" if rep.uncalibrated else "")


def board_rows(reports: list[CostReport]) -> tuple[list[str], list[list[str]]]:
    head = ["board", "fit (with error band)", "binding", *[f"{r} %" for r in RESOURCES], "II (cycles)", "latency (us)", "frames/s"]
    rows = []
    for r in reports:
        util = [("-" if r.capacity[k] == 0 and r.totals[k] == 0 else
                 ("inf" if r.utilisation[k] is None else f"{100 * r.utilisation[k]:.1f}")) for k in RESOURCES]
        rows.append([r.board, verdict_short(r), r.binding, *util, f"{r.ii_cycles:,}", f"{r.latency_us:.2f}",
                     f"{r.throughput_fps:,.0f}"])
    return head, rows


def _md_table(head, rows) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _html_table(head, rows) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


def _binding(rep: CostReport) -> str:
    b = rep.binding
    return f"{b} {fmt(rep.totals[b], rep.band(b))} + shell {rep.shell[b]:,} of {rep.limits[b]:,.0f} usable"


def _summary(rep: CostReport) -> list[str]:
    lines = [f"{rep.arch} on {rep.board} ({rep.part}, {rep.clock_mhz:g} MHz): {rep.fit_label}; binding resource "
             f"{_binding(rep)}."]
    if rep.over:
        lines.append("Missing: " + ", ".join(f"{r} {v:,.0f}" for r, v in rep.over.items()) + ".")
    high = {r: rng[1] - rep.limits[r] for r, rng in rep.used_range.items() if rng[1] > rep.limits[r] + 1e-9}
    if high and (high.keys() != rep.over.keys() or any(abs(high[r] - rep.over[r]) > 1e-6 for r in high)):
        lines.append("Missing at the pessimistic end of the error band: "
                     + ", ".join(f"{r} {v:,.0f}" for r, v in high.items()) + ".")
    lines.append("Totals: " + ", ".join(f"{k} {v}" for k, v in figure_cells(rep).items()) + ".")
    lines += accuracy_lines(rep)
    lines.append(f"Initiation interval {rep.ii_cycles:,} cycles (bottleneck layer {rep.bottleneck}), "
                 f"{rep.throughput_fps:,.0f} frames/s; latency {rep.latency_cycles:,} cycles = {rep.latency_us:.2f} us.")
    lines.append(f"Weight memory: {rep.mem_bits_dense:,} bits dense, {rep.mem_bits_sparse:,} bits sparse "
                 "(nonzeros x bits + 1-bit position bitmap).")
    return lines


def one_line(rep: CostReport, path: str | os.PathLike | None = None) -> str:
    """The `opq-hw estimate` summary line."""
    where = f"; wrote {Path(path) / 'cost.json'} and {Path(path) / 'reports' / 'estimate.html'}" if path is not None else ""
    return (f"estimate: {rep.arch} on {rep.board}: {rep.fit_label} (binding {_binding(rep)}), "
            f"II {fmt(rep.ii_cycles, rep.band('cycles'), ' cycles')}, latency {rep.latency_us:.2f} us, "
            f"{rep.throughput_fps:,.0f} frames/s{where}")


def report_notes(rep: CostReport, manifest: Mapping[str, Any] | None = None, folding_given: bool = False) -> list[str]:
    """The Notes section: the cost model's own notes, how the folding was chosen, and the run's notes
    (allocation, data and calibration)."""
    notes = list(rep.notes)
    notes.append("folding: " + ("as given" if folding_given else
                                f"the fastest that fits {rep.board} (opq_hw.cost.choose_folding; the most folded "
                                "if none fits)"))
    m = manifest or {}
    act = (m.get("config") or {}).get("act_bits", 8)
    notes.append(f"activations: {act}-bit" if act else "activations: float (costed as 16-bit)")
    cal = m.get("calibration")
    if isinstance(cal, dict) and cal.get("method"):
        notes.append(f"activation calibration: {cal['method']}")
    notes += [f"run: {n}" for n in m.get("notes", [])]
    return notes


def render_markdown(rep: CostReport, alloc: Allocation, boards: list[CostReport], pngs: Mapping[str, str],
                    specs: list[LayerSpec] | None = None, notes: list[str] | None = None) -> str:
    parts = [f"# Resource estimate: {rep.arch} on {rep.board}", "", *_summary(rep), "",
             "Analytical estimate (opq_hw.cost), not a synthesis result; see the notes and provenance below.", "",
             "## Per layer", "", _md_table(*layer_rows(rep, alloc, specs)), ""]
    for key, title in (("allocation", "Sparsity and bit width"), ("resources", "Resources against the board"),
                       ("cycles", "Cycles per layer")):
        if key in pngs:
            parts += [f"![{title}]({pngs[key]})", ""]
    parts += [f"## Across boards ({rep.arch}, fastest folding that fits each)", "", _md_table(*board_rows(boards)), "",
              "## Notes", ""] + [f"- {n}" for n in (rep.notes if notes is None else notes)] + ["", "## Provenance", ""] + \
        [f"- {k}: {v}" for k, v in rep.provenance.items()] + [""]
    return "\n".join(parts)


_CSS = """body{font-family:sans-serif;margin:2em;max-width:70em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}td,th{border:1px solid #bbb;padding:3px 8px;text-align:right;white-space:nowrap}
th{background:#eee}td:first-child{text-align:left}.fit{color:#1a7f37;font-weight:bold}.nofit{color:#c00;font-weight:bold}
.optimistic{color:#b35900;font-weight:bold}.band{color:#555}
img{max-width:100%;margin:0.5em 0}"""


def render_html(rep: CostReport, alloc: Allocation, boards: list[CostReport], figs: Mapping[str, bytes],
                specs: list[LayerSpec] | None = None, notes: list[str] | None = None) -> str:
    imgs = "".join(f'<figure><img alt="{k}" src="data:image/png;base64,{base64.b64encode(v).decode()}"></figure>'
                   for k, v in figs.items())
    cls = {FITS: "fit", OPTIMISTIC: "optimistic"}.get(rep.fit or ("fits" if rep.fits else ""), "nofit")
    verdict = f'<span class="{cls}">{html.escape(rep.fit_label)}</span>'
    summ = "".join(f"<p>{html.escape(s)}</p>" for s in _summary(rep))
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in (rep.notes if notes is None else notes))
    prov = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in rep.provenance.items())
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>opq-hw estimate: {html.escape(rep.arch)} on "
            f"{html.escape(rep.board)}</title><style>{_CSS}</style></head><body>"
            f"<h1>Resource estimate: {html.escape(rep.arch)} on {html.escape(rep.board)} — {verdict}</h1>{summ}"
            f"<p><i>Analytical estimate (opq_hw.cost), not a synthesis result.</i></p>"
            f"<h2>Per layer</h2>{_html_table(*layer_rows(rep, alloc, specs))}{imgs}"
            f"<h2>Across boards ({html.escape(rep.arch)}, fastest folding that fits each)</h2>{_html_table(*board_rows(boards))}"
            f"<h2>Notes</h2><ul>{notes}</ul><h2>Provenance</h2><ul>{prov}</ul></body></html>\n")


def estimate_run(run_dir: str | os.PathLike, board: str, arch: str = DEFAULTS.arch,
                 folding: Mapping[str, Mapping[str, Any]] | None = None, boards_table: bool = True) -> CostReport:
    """Estimate a run on `board` with `arch` (folding: given, else the fastest that fits) and write
    `cost.json`, `reports/estimate.md` (+ PNGs beside it) and a self-contained
    `reports/estimate.html`. Returns the CostReport."""
    path = Path(run_dir)
    specs, alloc, manifest = read_records(path)
    act_bits = run_act_bits(manifest)
    b = load_board(board)
    affines = manifest.get("bn_affine") or []
    rep = estimate_for(specs, alloc, b, arch, act_bits, folding, affines=affines, logit_bits=run_logit_bits(path, specs, arch))
    boards = across_boards(specs, alloc, arch, act_bits, affines) if boards_table else [rep]
    figs = figures(rep, alloc)
    files = {f"reports/estimate_{k}.png": v for k, v in figs.items()}
    pngs = {k: f"estimate_{k}.png" for k in figs}
    notes = report_notes(rep, manifest, folding_given=folding is not None)
    files["cost.json"] = dumps(rep.to_dict()).encode()
    files["reports/estimate.md"] = render_markdown(rep, alloc, boards, pngs, specs, notes).encode()
    files["reports/estimate.html"] = render_html(rep, alloc, boards, figs, specs, notes).encode()
    write_outputs(path, files)  # all at once, once everything is computed; hashes into the manifest
    return rep


# ------------------------------------------------------------------------------------------------
# estimate beside measurement
# ------------------------------------------------------------------------------------------------
def measured_resources(run_dir: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Measured resources the flows left in the run: `build/<flow>/resources.json`, a JSON object
    with totals under any of the keys LUT, FF, DSP, BRAM18, URAM (numbers) and optionally
    `"layers": {layer name: {LUT: ...}}` and `"source": "what measured it (tool, version)"`."""
    from .rundir import verify

    out = {}
    build = Path(run_dir) / "build"
    if not build.is_dir():
        return out
    for f in sorted(build.glob("*/resources.json")):
        if f.parent.name.endswith(".failed"):
            continue
        verify(run_dir, [f"build/{f.parent.name}/resources.json"])  # recorded ones must match; copied-back ones are read as given
        d = read_json(f)
        if not isinstance(d, dict) or any(r in d and d[r] is not None and (isinstance(d[r], bool) or not isinstance(
                d[r], (int, float)) or not d[r] >= 0) for r in RESOURCES):
            raise OpqError(f"{f} must hold a JSON object with LUT/FF/DSP/BRAM18/URAM totals (non-negative numbers)")
        out[f.parent.name] = d
    return out


def compare(estimated: Mapping[str, float], measured: Mapping[str, float],
            bands: Mapping[str, float | None] | None = None) -> dict[str, dict[str, Any]]:
    """Per metric: estimate, measurement, relative error (est - meas) / meas (None if meas == 0),
    the estimate's error band (None: uncalibrated) and whether the measurement lies within
    estimate x (1 -/+ band) (None when uncalibrated)."""
    out: dict[str, dict[str, Any]] = {}
    for r in RESOURCES:
        if r in measured and measured[r] is not None:
            e, m = float(estimated.get(r, 0)), float(measured[r])
            b = (bands or {}).get(r)
            out[r] = {"estimated": e, "measured": m, "rel_error": (e - m) / m if m else None, "band": b,
                      "within_band": None if b is None else bool(e * (1 - b) - 1e-9 <= m <= e * (1 + b) + 1e-9)}
    return out


def not_comparable(rep: CostReport, flow: str, measured: Mapping[str, Any], run_dir: Path) -> str | None:
    """Why `flow`'s measurement is not of the design `rep` prices (None when it is, or when the
    measurement does not say: older builds and flows that record no `arch`): another flow or
    architecture, another FPGA family (Yosys's counts depend on the family only), or a build variant
    the cost model does not price (`variant`: digit-serial inputs, pipelined kernels)."""
    arch, family, variant = (measured.get(k) for k in ("arch", "family", "variant"))
    if any(v is not None and not isinstance(v, str) for v in (arch, family, variant)):
        raise OpqError("resources.json: `arch`, `family` and `variant` must be strings; build the flow again")
    if flow != ARCH_FLOW[rep.arch]:
        return f"this is the {flow} flow's build, the estimate ({rep.arch}) prices the {ARCH_FLOW[rep.arch]} flow's"
    if arch and arch != rep.arch:
        return (f"this build is {arch}, the estimate {rep.arch}; run `opq-hw estimate {run_dir} --board {rep.board} "
                f"--arch {arch}` to compare them")
    board_family = load_board(rep.board).family
    if family and family != board_family:
        return (f"this build was synthesized for {family}, the estimate is for {rep.board} ({board_family}); estimate "
                f"it for a {family} board to compare them")
    if variant:
        return f"this build has {variant}, which the {rep.arch} estimate does not price (uncalibrated)"
    return None


def report_run(run_dir: str | os.PathLike) -> dict[str, Any]:
    """Write `reports/report.md` and `reports/report.json`: the run's `cost.json` beside every
    `build/<flow>/resources.json` found, per metric with the relative error."""
    from .rundir import open_run, verify

    path = Path(run_dir)
    open_run(path)
    if not (path / "cost.json").is_file():
        raise OpqError(f"{path} has no cost.json; run `opq-hw estimate {path} --board B --arch A` first")
    verify(path, ["cost.json"])
    d = read_json(path / "cost.json")
    try:
        if not isinstance(d, dict) or not isinstance(d.get("layers"), list):
            raise OpqError("expected a JSON object with a list `layers`")
        rep = CostReport.from_dict(d)
    except OpqError as e:
        raise OpqError(f"{path / 'cost.json'}: {e}; write it again with `opq-hw estimate {path} --board B`") from None
    from .flows import FLOWS

    for flow in FLOWS.values():  # a flow with a report reader refreshes build/<flow>/resources.json from its project
        flow.read_resources(path)
    meas = measured_resources(path)
    result: dict[str, Any] = {"arch": rep.arch, "board": rep.board, "estimated": rep.totals, "fit": rep.fit_label,
                              "bands": rep.bands, "flows": {}}
    lines = [f"# Estimate vs measurement ({rep.arch} on {rep.board})", ""]
    if not meas:
        lines.append("No measurement in this run yet (build/<flow>/resources.json); only the estimate is shown.")
    for flow, d in meas.items():
        lines += [f"## {flow} ({d.get('source', 'source not given')})", ""]
        why = not_comparable(rep, flow, d, path)
        if why:  # a measurement of another design: shown, never set against this estimate
            got = {r: d[r] for r in RESOURCES if d.get(r) is not None}
            result["flows"][flow] = {"source": d.get("source", "unknown"), "not_compared": why, "measured": got}
            lines += [f"Not compared with the estimate: {why}.", "",
                      _md_table(["metric", "measured"], [[r, f"{v:,.0f}"] for r, v in got.items()]), ""]
            continue
        cmp_ = compare(rep.totals, d, {r: rep.band(r).rel for r in RESOURCES})
        result["flows"][flow] = {"source": d.get("source", "unknown"), "totals": cmp_}
        lines += [
                  _md_table(["metric", "estimated (error band)", "measured", "error", "within the band"],
                            [[r, fmt(v["estimated"], rep.band(r)), f"{v['measured']:,.0f}",
                              "-" if v["rel_error"] is None else f"{100 * v['rel_error']:+.1f}%",
                              {None: "uncalibrated", True: "yes", False: "NO"}[v["within_band"]]]
                             for r, v in cmp_.items()]), ""]
    lines += ["## Estimate", "", *_summary(rep), ""]
    write_outputs(path, {"reports/report.json": dumps(result).encode(),
                         "reports/report.md": "\n".join(lines).encode()})
    return result
