"""`opq-hw inspect`: the layers of a float model and, per flow, whether it can build them.

Flow support is not a hand-kept list: the model is put through each flow's own checks, the ones
`build` runs, on a throwaway compression of it (OPQ at 10x CR_w, pow2 scales, 8-bit activations
at their default range; no data is needed, none is used):

* hls4ml: the QONNX export is converted by `opq_hw.flows.hls4ml_flow.convert` (our rewrites and
  hls4ml's own ONNX converter), without writing or compiling a project;
* rtl: the integer network is read off the Brevitas model (`opq_hw.rtl.intnet.extract`, which
  refuses every construct the RTL generators do not implement) and the default `seq`
  architecture plans its buffers (`opq_hw.rtl.seq`);
* finn: FINN decides only inside its own environment, when `build --flow finn` streamlines and
  converts the graph (layers it cannot map are listed there); inspect does not run it.

A check that fails with an error naming a layer marks that layer "no" (the layers before it
passed, the ones after it were not reached: "?"); an error naming no layer marks the network.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from .errors import OpqError
from .flows import FLOWS as _REGISTRY
from .spec import LayerSpec

FLOWS = tuple(_REGISTRY)  # the flows whose support is checked, in the registry's order


def _check(fn) -> dict[str, Any]:
    try:
        detail = fn()
    except OpqError as e:
        return {"supported": False, "why": str(e)}
    except ImportError as e:
        return {"supported": None, "why": f"not checked: {e.name or e} is not installed"}
    except Exception as e:  # a check that breaks says so; it is not a verdict on the model
        return {"supported": None, "why": f"not checked: the check itself failed ({type(e).__name__}: {str(e)[:200]})"}
    return {"supported": True, "why": detail or ""}


def flow_support(model, example, specs: list[LayerSpec]) -> dict[str, dict[str, Any]]:
    """{flow: {"supported": True | False | None (not checked), "why": text, "layer": name or None}}."""
    import torch

    from .allocation import allocate
    from .carrier import ActConfig, apply
    from .layers import layer_weights
    from .run import Run

    try:
        alloc = allocate(specs, layer_weights(model, specs), target_cr=10.0, scale_mode="pow2")
        qmodel = apply(model, specs, alloc, ActConfig(bits=8, scale_mode="pow2"), calib=None, example=example)
    except OpqError as e:
        return {f: {"supported": False, "why": f"OPQ cannot compress it: {e}", "layer": None} for f in FLOWS}
    out: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="opq-inspect-") as tmp:
        tmp = Path(tmp)
        run = Run(path=tmp, qmodel=qmodel, allocation=alloc, specs=specs, config={"act_bits": 8, "scale_mode": "pow2"},
                  manifest={})

        def hls4ml():
            from .export import export_qonnx
            from .flows.hls4ml_flow import convert

            export_qonnx(qmodel, example, tmp / "model.qonnx.onnx")
            convert(run, tmp / "hls4ml")
            return "hls4ml converts the QONNX export (opq_hw.flows.hls4ml_flow.convert)"

        def rtl():
            from .rtl.intnet import extract
            from .rtl.seq import layer_plan

            with torch.no_grad():
                net = extract(qmodel, example.numpy())
            layer_plan(net)
            return "the integer network extracts and the seq architecture plans it (opq_hw.rtl)"

        out["hls4ml"] = _check(hls4ml)
        out["rtl"] = _check(rtl)
    from .flows.finn_flow import ENV_HINT, finn_python

    out["finn"] = {"supported": None, "why": (
        "not checked by inspect: FINN decides in `opq-hw build RUN --flow finn`, which lists any layer it leaves in "
        "software" if finn_python() is not None else f"not checked: no FINN environment here; {ENV_HINT}")}
    for r in out.values():
        r["layer"] = _named_layer(r["why"], specs) if r["supported"] is False else None
    return {f: out[f] for f in FLOWS}


def _named_layer(msg: str, specs: list[LayerSpec]) -> str | None:
    for s in specs:
        if f"layer {s.name!r}" in msg or f"layer '{s.name}'" in msg:
            return s.name
    return None


def _dims(shape) -> str:
    return "x".join(str(d) for d in shape)


def _op(s: LayerSpec) -> str:
    if s.kind == "linear":
        return "linear"
    k = "x".join(map(str, s.kernel_size))
    extra = " depthwise" if s.groups > 1 and s.groups == s.in_channels else (f" groups={s.groups}" if s.groups > 1 else "")
    st = f" s{'x'.join(map(str, s.stride))}" if any(v != 1 for v in s.stride) else ""
    return f"{s.kind} {k}{st}{extra}"


def _cell(r: dict[str, Any], s: LayerSpec, order: list[str], mark: str) -> str:
    if r["supported"] is True:
        return "yes"
    if r["supported"] is None:
        return "?"
    bad = r.get("layer")
    if bad is None:
        return f"no {mark}"
    i, j = order.index(s.name), order.index(bad)
    return "yes" if i < j else (f"no {mark}" if i == j else "?")


def render_table(specs: list[LayerSpec], support: dict[str, dict[str, Any]]) -> str:
    """The table `opq-hw inspect` prints, with one line per flow below it."""
    order = [s.name for s in specs]
    marks = {f: f"({i + 1})" for i, f in enumerate(FLOWS)}
    head = ["layer", "op", "in shape", "out shape", "params", *FLOWS]
    rows = []
    for s in specs:
        params = s.n_weights + (s.out_channels if s.has_bias else 0)
        rows.append([s.name, _op(s), _dims(s.in_shape), _dims(s.out_shape), f"{params:,}",
                     *[_cell(support[f], s, order, marks[f]) for f in FLOWS]])
    total = sum(s.n_weights + (s.out_channels if s.has_bias else 0) for s in specs)
    rows.append(["total", "", "", "", f"{total:,}", *["" for _ in FLOWS]])
    widths = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) if i < 4 else str(c).rjust(w) if i == 4 else str(c).ljust(w)
                       for i, (c, w) in enumerate(zip(r, widths))).rstrip() for r in [head] + rows]
    lines.append("")
    for f in FLOWS:
        r = support[f]
        if r["supported"] is None:
            lines.append(f"{marks[f]} {f}: {r['why']}")
        else:
            lines.append(f"{marks[f]} {f}: {'supported' if r['supported'] else 'NOT supported'}: {r['why']}")
    lines.append("yes: the flow's checks pass; no: they refuse it (reason above); ?: not checked or not reached")
    return "\n".join(lines)
