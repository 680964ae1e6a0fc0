"""`estimate`: a network's cost on a board under one architecture, the layers' costs added up
into a `CostReport` with the fit verdict (`fits`)."""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

from ..boards import RESOURCES, Board, load_board
from ..errors import OpqError
from ..spec import DEFAULTS, Allocation, LayerSpec
from .accuracy import FIGURES, Accuracy, accuracy, board_top_accuracy, combine
from .common import mem_bits
from .fit import fits
from .records import CostReport, LayerCost, layer_pairs, network_params
from .registry import Architecture, architecture, layer_cost


def estimate(specs: list[LayerSpec], allocation: Allocation, board: "Board | str", arch: str,
             folding: Mapping[str, Mapping[str, Any]] | None = None,
             act_bits: int | None = DEFAULTS.act_bits, affines: list[Mapping[str, Any]] | None = None,
             logit_bits: int | None = None) -> CostReport:
    """Cost of `allocation` on `board` with architecture `arch`.

    folding: per layer name, {"reuse_factor": R} (hls4ml) or {"pe": P, "simd": Q, ...} (FINN);
    layers not named are fully parallel (or use LayerAlloc.reuse_factor when set, for hls4ml).
    act_bits: activation bits between layers (the run's `act_bits`); the first layer's input is
    the 8-bit signed input quantizer. affines: the BatchNorms kept as channel affines (the run's manifest
    `bn_affine` records), costed by `cost.hls4ml.hls4ml_affine` under the hls4ml architectures; the other
    flows refuse them, and the report says so. An RTL architecture on a dev board (a board with pins,
    where `build --flow rtl` wraps opq_top in the board top) adds the board top's glue
    (`opq_hw.cost.rtl.board_top_cost`) as its own entry of `parts` and in the totals, with its own
    error band (`part_bands`, `opq_hw.cost.accuracy.board_top_accuracy`); the totals' bands and the fit
    verdict then add the absolute errors of opq_top and the board top (`accuracy.combine`). logit_bits:
    the last layer's accumulator width from the actual weights (a run's IntNet, `opq_hw.report.run_logit_bits`),
    which sizes rtl-seq's logits memory as the RTL does; None: the weight-agnostic width (a budget-only estimate).
    """
    board = load_board(board)
    a = architecture(arch, board)
    folding = dict(folding or {})
    unknown = set(folding) - {s.name for s in specs}
    if unknown:
        raise OpqError(f"folding names unknown layers {sorted(unknown)}; layers: {[s.name for s in specs]}")
    cal = a.calibration.load(board.family) if a.calibration is not None else None
    layers = []
    notes = []
    params = network_params(specs, allocation, act_bits)
    if logit_bits and params:
        from .rtl import seq_logit_bits

        agnostic = seq_logit_bits(params[-1])
        params[-1] = dataclasses.replace(params[-1], logit_bits=int(logit_bits))
        if a.name == "rtl-seq":
            notes.append(f"logits memory sized from the actual weights ({int(logit_bits)}-bit accumulators, as the RTL "
                         f"does; weight-agnostic: {agnostic})")
        elif a.name == "rtl-da":
            notes.append(f"output serializer sized from the actual weights ({int(logit_bits)}-bit logits; weight-agnostic: "
                         f"{params[-1].acc_bits} x top_logit_width_ratio)")
    for (s, la), p in zip(layer_pairs(specs, allocation), params):
        fold = {**a.default_folding(p), **a.alloc_folding(la), **folding.get(s.name, {})}
        r = layer_cost(p, board, arch, fold, cal)
        dense, sparse = mem_bits(p)
        layers.append(LayerCost(
            name=s.name, kind=s.kind, bits=p.w_bits, act_bits=p.a_bits, n_weights=s.n_weights, n_nonzero=int(la.n_nonzero),
            mem_bits_dense=int(dense), mem_bits_sparse=int(round(float(sparse))),
            **{k: int(round(float(r[k]))) for k in RESOURCES}, mults=int(round(float(r["mults"]))),
            cycles=int(r["cycles"]), latency_cycles=int(round(float(r["latency"]))), folding=fold))
        if la.skipped:
            notes.append(f"{s.name}: skipped by OPQ (32-bit dense weights) - costed at 32 bits")
    layers += _affine_costs(affines or [], board, a, act_bits, notes)
    if cal is not None:
        notes.append(f"{arch} coefficients: {cal['provenance']}")
    notes += a.notes
    top = a.top(params, board, cal) if a.top is not None and params else None
    if top is not None:
        notes.append(f"{a.name} top level (stream in, {'sequencer' if a.sequential else 'pools'}, logits out; in the totals): "
                     + ", ".join(f"{r} {int(top[r])}" for r in RESOURCES if top[r]) + f", {int(top['cycles'])} cycles")
    parts = {f"{a.name} top level": _part(top)} if top is not None else {}
    glue = None
    if a.flow == "rtl" and board.pins and params:  # `build --flow rtl --board B` wraps opq_top in the board top
        from .rtl import BOARD_TOP_CALIBRATION, board_top_cost, link_geometry

        glue = board_top_cost(*link_geometry(params, a.name), board)
        parts[BOARD_TOP] = _part(glue)
        bcal = BOARD_TOP_CALIBRATION.load(board.family)
        notes.append("board top (serial link, frame buffers, byte packer; in the totals): "
                     + ", ".join(f"{r} {int(glue[r])}" for r in RESOURCES if glue[r]) + f"; {bcal['provenance']}")
        top = {r: int((top or {}).get(r, 0)) + int(glue.get(r, 0)) for r in RESOURCES} | \
            {k: (top or {}).get(k, 0) for k in ("cycles", "latency")}
    if act_bits is None:
        notes.append("the run has float activations; costed as 16-bit activations")
    return _report(layers, board, a, act_bits or 16, cal, notes, top, parts, glue)


BOARD_TOP = "board top (UART link, frame buffers)"  # the part `estimate` adds on a dev board


def _with_board_top(acc: Accuracy, bt: Accuracy, totals: Mapping[str, int], glue: Mapping[str, Any]) -> Accuracy:
    """The totals' bands with the board top inside them: per resource opq_top's band on its usage
    (totals - glue) and the board top's on the glue, absolute errors added (`accuracy.combine`);
    cycles: opq_top's (the board top adds none)."""
    bands = {f: combine([(acc.band(f), float(totals[f] - int(glue.get(f, 0)))), (bt.band(f), float(glue.get(f, 0)))])
             for f in FIGURES if f != "cycles"}
    return Accuracy(acc.arch, acc.family, {**bands, "cycles": acc.band("cycles")},
                    f"{acc.source}; board top: {bt.source}, absolute errors added")


def _part(c: Mapping[str, Any]) -> dict[str, int]:
    """A part of the design beyond its layers (a report row): its resources and cycles."""
    return {r: int(c[r]) for r in RESOURCES} | {"cycles": int(c.get("cycles", 0))}


def _affine_costs(affines, board: Board, a: Architecture, act_bits: int | None, notes: list[str]) -> list[LayerCost]:
    """LayerCost of each kept BatchNorm affine (hls4ml's BatchNormalization layer); a note where the flow refuses it."""
    from .hls4ml import hls4ml_affine

    out = []
    for r in affines:
        if a.flow != "hls4ml":
            notes.append(f"BatchNorm {r['bn']!r} kept as a per-channel affine: not costed, the {a.flow} flow refuses it "
                         "(--flow hls4ml builds it)")
            continue
        n_in = int(math.prod(r.get("in_shape") or [r["channels"]]))
        x_bits = int(r.get("in_bits") or act_bits or 16)
        b_bits = int(r.get("b_bits") or 16)
        c = hls4ml_affine(n_in, int(r["a_bits"]), x_bits, b_bits, board)
        out.append(LayerCost(name=str(r["bn"]), kind="affine", bits=int(r["a_bits"]), act_bits=x_bits,
                             n_weights=int(r["channels"]), n_nonzero=int(r["channels"]),
                             mem_bits_dense=int(r["channels"]) * (int(r["a_bits"]) + b_bits),
                             mem_bits_sparse=int(r["channels"]) * (int(r["a_bits"]) + b_bits),
                             **{k: int(c[k]) for k in RESOURCES}, mults=int(c["mults"]), cycles=int(c["cycles"]),
                             latency_cycles=int(c["latency"]), folding={"reuse_factor": 1}))
    return out


def _report(layers: list[LayerCost], board: Board, a: Architecture, act_bits: int, cal, notes,
            top: Mapping[str, Any] | None = None, parts: Mapping[str, Mapping[str, int]] | None = None,
            glue: Mapping[str, Any] | None = None) -> CostReport:
    top = top or {}
    totals = {r: int(sum(getattr(lc, r) for lc in layers) + int(top.get(r, 0))) for r in RESOURCES}
    acc = accuracy(a.name, board.family)  # the error bands: the verdict is checked at usage x (1 +- band)
    part_bands = {}
    if glue is not None:  # the board top's own band; the totals' add both parts' absolute errors
        bt = board_top_accuracy(board.family)
        part_bands[BOARD_TOP] = bt.to_dict()
        acc = _with_board_top(acc, bt, totals, glue)
    fit = fits(board, totals, acc.margins())
    bott = max(layers, key=lambda lc: lc.cycles)
    ii = sum(lc.cycles for lc in layers) if a.sequential else bott.cycles  # rtl-seq: one layer at a time
    # the top level: rtl-seq adds its cycles (load, drain, output), a stream takes at least its input pixels
    ii = ii + int(top.get("cycles", 0)) if a.sequential else max(ii, int(top.get("cycles", 0)))
    lat = int(sum(lc.latency_cycles for lc in layers)) + int(top.get("latency", 0))
    coeffs: dict[str, Any] = dict(board.coefficients)
    prov = {"board": f"board_configs/{board.name}.yaml", **{f"board.{k}": v for k, v in board.provenance.items()}}
    if cal is not None:
        key = a.name.replace("-", "_")
        coeffs.update({f"{key}.{k}": v for k, v in cal.items() if k != "provenance"})
        prov[key] = cal["provenance"]
    prov["formulas"] = f"opq_hw.cost.{a.formula.__name__} (docstring cites the sources)"
    prov["error bands"] = acc.source
    return CostReport(
        arch=a.name, board=board.name, part=board.part, family=board.family, clock_mhz=board.clock_mhz,
        act_bits=int(act_bits), layers=tuple(layers), totals=totals, capacity=dict(board.capacity),
        limits=dict(fit.allowed), shell=dict(board.shell),
        utilisation={r: (round(v, 6) if math.isfinite(v) else None) for r, v in fit.utilisation.items()}, fits=fit.ok,
        binding=fit.binding, over=fit.over, ii_cycles=int(ii), latency_cycles=lat, latency_us=lat / board.clock_mhz,
        throughput_fps=board.clock_mhz * 1e6 / ii, bottleneck=bott.name,
        mem_bits_dense=int(sum(lc.mem_bits_dense for lc in layers)),
        mem_bits_sparse=int(sum(lc.mem_bits_sparse for lc in layers)), coefficients=coeffs, provenance=prov,
        notes=tuple(notes), fit=fit.verdict, bands=acc.to_dict(), part_bands=part_bands,
        used_range={r: [round(fit.low[r], 3), round(fit.high[r], 3)] for r in RESOURCES},
        parts={k: dict(v) for k, v in (parts or {}).items()})
