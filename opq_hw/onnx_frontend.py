"""ONNX front end: a float ONNX graph from another exporter (torch.onnx.export at any opset from 7,
tf2onnx from Keras) normalised into the shapes the converter (onnx2torch) and the carrier support.

`load_onnx(path, input_shape)` checks the graph, rewrites it and returns a `Frontend`: the
normalised, self-contained graph (`proto`), what was done to it (`record`, stored in the run's
manifest as `frontend`) and `torch_model()`, the onnx2torch conversion. Library transformations do
what they can (onnx.version_converter, onnx shape inference with data propagation and, where that
cannot follow a shape computation, one onnxruntime run on a probe batch; onnxoptimizer's constant
extraction, bias fusion, dead-end, transpose and initializer passes; torch.nn.utils.fusion on the
PyTorch path, opq_hw.bnfold); the rewrites below are the ones they lack, each a function
`(model, shapes, record) -> None` on the ModelProto:

- refusals first, before anything is converted: quantized graphs (QONNX Quant/BipolarQuant,
  QuantizeLinear/DequantizeLinear, QLinear*/Integer ops), custom domains, op types outside
  `SUPPORTED_OPS` (every offending node named), several inputs or outputs;
- opset < 13 upgraded to 13 (onnx2torch converts opsets 13 to 17 op for op);
- a batch dimension fixed in the graph (tf2onnx writes e.g. 1000) made symbolic, also in Reshape
  targets; unknown non-batch input dimensions need `--input-shape` (and the error says so);
- Dropout / Identity removed; Reshape, Squeeze and Flatten (any axis) that amount to a flatten to
  (N, -1) become Flatten(axis=1), no-op ones are dropped, others refused;
- a leading channels-last Transpose (NHWC -> NCHW, NWC -> NCW, as tf2onnx writes it) removed: the
  model takes channels-first input, `record["input_layout"]` keeps the user's layout and
  `to_model_layout` converts user arrays; a channels-last Transpose right before Flatten -> dense is
  folded into the dense layer's weight rows;
- ReduceMean over all spatial axes (tf2onnx's GlobalAveragePooling, also behind its channels-last
  Transpose) -> GlobalAveragePool; auto_pad written out as pads, asymmetric padding refused;
- Unsqueeze -> Conv 2-D (kernel 1 x k) -> Squeeze (tf2onnx's Keras Conv1D) -> Conv 1-D;
- MatMul (+ Add of a constant) with a constant right operand -> Gemm (onnx2torch makes nn.Linear);
- BatchNormalization right after Conv/Gemm folded into that layer's weights and bias (recorded); any other
  (on the input, after an activation, a pooling, a residual Add) kept, recorded in `kept_bn` with the reason:
  the carrier computes it as a quantized per-channel affine (`carrier_graph.ChannelAffine`); one in training
  mode, with non-constant parameters or on a 3-D map refused (`UnfoldableBatchNorm`);
- a final Softmax / LogSoftmax / Sigmoid (classifier head) cut off: the hardware computes the
  pre-activation outputs and the run says `tail: softmax on the host`.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import OpqError

OPSET = 13  # graphs below are upgraded to this opset; onnx2torch converts 13..17
MAX_OPSET = 17

LAYER_OPS = {"Conv", "Gemm", "MatMul"}
ACTIVATION_OPS = {"Relu", "LeakyRelu", "Tanh", "Sigmoid", "Softmax", "LogSoftmax", "Selu", "Elu", "Clip", "HardSigmoid"}
POOL_OPS = {"MaxPool", "AveragePool", "GlobalAveragePool"}
STRUCTURE_OPS = {"Add", "Concat", "Flatten", "Reshape", "Squeeze", "Transpose", "BatchNormalization", "Dropout", "Identity",
                 "ReduceMean"}  # ReduceMean: only as a global average pool (tf2onnx's GlobalAveragePooling)
SUPPORTED_OPS = LAYER_OPS | ACTIVATION_OPS | POOL_OPS | STRUCTURE_OPS
# Ops that only compute Reshape targets (torch's x.view(x.size(0), -1) at old opsets); they must vanish.
SHAPE_OPS = {"Constant", "Shape", "Gather", "Unsqueeze", "Cast", "Slice", "ConstantOfShape"}
QUANT_OPS = {"Quant", "BipolarQuant", "Trunc", "MultiThreshold", "QuantizeLinear", "DequantizeLinear",
             "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger", "QLinearAdd",
             "QLinearMul", "QLinearSigmoid", "QLinearLeakyRelu", "QLinearConcat", "QLinearAveragePool",
             "QLinearGlobalAveragePool"}
STANDARD_DOMAINS = ("", "ai.onnx")
TAIL_OPS = {"Softmax": "softmax", "LogSoftmax": "log-softmax", "Sigmoid": "sigmoid"}
CHANNELS_LAST = {3: ("NWC", [0, 2, 1]), 4: ("NHWC", [0, 3, 1, 2])}
_PROBE_BATCH = 7  # batch size for shape inference (distinct from the small dims of a sample)


class UnsupportedOnnx(OpqError):
    """The graph uses ops (or a structure) the front end does not support."""


class QuantizedOnnx(OpqError):
    """The graph is already quantized; OPQ needs the float model."""


class UnfoldableBatchNorm(OpqError):
    """A BatchNormalization that can neither be folded into a layer nor kept as a channel affine."""


def onnx2torch_convert():
    """onnx2torch's `convert`. onnx2torch imports torchvision for its NMS and RoIAlign converters
    only, and PyPI's torchvision does not load beside the pinned CPU torch; so it is installed
    without dependencies and, where torchvision cannot be imported, those two ops raise instead."""
    import sys
    import types

    try:
        import torchvision  # noqa: F401
    except Exception:
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]

        def unsupported(*_a, **_k):
            raise OpqError("this ONNX model uses NMS or RoIAlign, which need torchvision; opq-hw does not support them")

        tv, ops = types.ModuleType("torchvision"), types.ModuleType("torchvision.ops")
        ops.nms = ops.roi_align = unsupported
        tv.ops = ops
        sys.modules.setdefault("torchvision", tv)
        sys.modules.setdefault("torchvision.ops", ops)
    try:
        from onnx2torch import convert
    except ImportError as e:
        raise OpqError(f"ONNX input needs onnx2torch ({e}); run `make setup` (it installs onnx2torch with pip --no-deps)") from e
    return convert


@dataclass
class Frontend:
    """A normalised float graph and what the front end did to it."""

    proto: Any  # onnx.ModelProto, self-contained (no external data)
    record: dict[str, Any] = field(default_factory=dict)

    def torch_model(self):
        convert = onnx2torch_convert()
        try:
            model = convert(copy.deepcopy(self.proto))
        except OpqError:
            raise
        except Exception as e:  # the ops were checked; this is a converter limitation
            raise UnsupportedOnnx(f"onnx2torch cannot convert the normalised graph ({type(e).__name__}: "
                                  f"{str(e).splitlines()[0][:300]}); export the model with simpler ops") from e
        return tidy_torch_model(model)

    def to_bytes(self) -> bytes:
        return self.proto.SerializeToString()

    @property
    def notes(self) -> list[str]:
        return record_notes(self.record)


def tidy_torch_model(model):
    """onnx2torch's modules in the plain torch.nn forms Brevitas handles: pooling sizes as tuples
    (Brevitas' average-pool handler multiplies them), GlobalAveragePool as AdaptiveAvgPool (whose
    custom ONNX export breaks Brevitas' TorchScript export)."""
    from torch import nn

    for name, m in list(model.named_modules()):
        if isinstance(m, (nn.AvgPool1d, nn.AvgPool2d, nn.MaxPool1d, nn.MaxPool2d)):
            for a in ("kernel_size", "stride", "padding", "dilation"):
                if isinstance(getattr(m, a, None), list):
                    setattr(m, a, tuple(getattr(m, a)))
        elif type(m).__name__ == "OnnxGlobalAveragePoolWithKnownInputShape":
            nd = len(m._x_dims)
            if nd not in (1, 2):
                raise UnsupportedOnnx(f"GlobalAveragePool {name!r} over {nd} spatial dimensions; opq-hw takes 1-D and 2-D")
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child,
                    nn.AdaptiveAvgPool1d(1) if nd == 1 else nn.AdaptiveAvgPool2d(1))
    return model


def record_notes(rec: dict[str, Any]) -> list[str]:
    """Human-readable lines for the manifest notes and the compress log."""
    out = []
    if rec.get("opset_in") != rec.get("opset"):
        out.append(f"ONNX opset {rec.get('opset_in')} upgraded to {rec.get('opset')}")
    for f in rec.get("folded_bn", []):
        out.append(f"BatchNormalization {f['bn']!r} folded into {f['into']!r}")
    for f in rec.get("kept_bn", []):
        out.append(f"BatchNormalization {f['bn']!r} {f['why']}, so it cannot be folded: kept as a quantized per-channel "
                   "affine a*x + b (manifest `bn_affine`)")
    if rec.get("input_layout"):
        out.append(f"input layout {rec['input_layout']}: the graph's leading Transpose was removed, the model runs "
                   f"{rec['model_layout']}; the user's {rec['input_layout']} data is transposed to it "
                   f"(onnx_frontend.to_model_layout)")
    if rec.get("fixed_batch") is not None:
        out.append(f"fixed batch dimension {rec['fixed_batch']} in the graph made symbolic")
    if rec.get("tail"):
        out.append(f"tail: {rec['tail']} on the host (the hardware computes the pre-{rec['tail']} outputs; "
                   "comparisons are made on those)")
    if rec.get("dequantized"):
        d = rec["dequantized"]
        out.append(f"--dequantize: {len(d['weights'])} quantized weights turned back into float constants (their "
                   f"quantized values), {len(d['activation_quantizers_removed'])} activation quantizers removed")
    if rec.get("external_data"):
        out.append("weights were stored as ONNX external data; the run keeps a self-contained copy")
    return out


def to_model_layout(x: np.ndarray, layout: str | dict | None) -> np.ndarray:
    """User-layout input arrays (N, ...) in the model's layout (`opq_hw.data.to_model_layout`);
    `layout` is the run's `input_layout`, or the whole front-end record, or None."""
    from .data import to_model_layout as convert

    return convert(x, layout.get("input_layout") if isinstance(layout, dict) else layout)


# ------------------------------------------------------------------ helpers on the graph

def _nodes_desc(nodes, domains: bool = True) -> str:
    by_op: dict[str, list[str]] = {}
    for n in nodes:
        custom = domains and n.domain not in STANDARD_DOMAINS
        by_op.setdefault(f"{n.domain}.{n.op_type}" if custom else n.op_type, []).append(n.name or n.output[0])
    return ", ".join(f"{op} (node{'s' if len(v) > 1 else ''} {', '.join(repr(s) for s in v[:6])}"
                     f"{', ...' if len(v) > 6 else ''})" for op, v in sorted(by_op.items()))


def _consumers(graph, name: str) -> list:
    return [n for n in graph.node if name in n.input]


def _producer(graph, name: str):
    for n in graph.node:
        if name in n.output:
            return n
    return None


def _init(graph, name: str):
    for t in graph.initializer:
        if t.name == name:
            return t
    return None


def _init_array(graph, name: str) -> np.ndarray | None:
    from onnx import numpy_helper

    t = _init(graph, name)
    return None if t is None else numpy_helper.to_array(t)


def _set_init(graph, name: str, arr: np.ndarray) -> None:
    from onnx import numpy_helper

    t = _init(graph, name)
    new = numpy_helper.from_array(np.ascontiguousarray(arr), name)
    if t is None:
        graph.initializer.append(new)
    else:
        t.CopyFrom(new)


def _fresh_init(graph, base: str, arr: np.ndarray) -> str:
    names = {t.name for t in graph.initializer} | {o for n in graph.node for o in n.output}
    name, i = base, 0
    while name in names:
        i += 1
        name = f"{base}_{i}"
    _set_init(graph, name, arr)
    return name


def _used_elsewhere(graph, name: str, node) -> bool:
    return any(name in n.input for n in graph.node if n is not node) or any(o.name == name for o in graph.output)


def _attr(node, name: str, default=None):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _bypass(graph, node, keep: str, drop: str) -> None:
    """Remove `node`: readers of its output `drop` read `keep` instead (a graph output keeps its name:
    the producer of `keep` is renamed)."""
    if any(o.name == drop for o in graph.output):
        prod = _producer(graph, keep)
        if prod is None or _used_elsewhere(graph, keep, node) or any(o.name == keep for o in graph.output):
            node.op_type, node.domain = "Identity", ""
            del node.input[1:]
            del node.attribute[:]
            return
        for n in graph.node:
            for i, v in enumerate(n.input):
                if v == keep:
                    n.input[i] = drop
        prod.output[list(prod.output).index(keep)] = drop
    else:
        for n in graph.node:
            for i, v in enumerate(n.input):
                if v == drop:
                    n.input[i] = keep
    graph.node.remove(node)


def _dims(vi) -> list:
    """Dims of a value_info: int, a str for a symbolic dim, None unknown."""
    out = []
    for d in vi.type.tensor_type.shape.dim:
        out.append(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or None))
    return out


def _infer_shapes(model) -> dict[str, tuple]:
    """Shapes of every tensor with a probe batch of `_PROBE_BATCH` samples: the graph run once by
    onnxruntime on zeros with every node output exposed (exact, also where ONNX shape inference
    cannot follow a Shape -> Gather -> Concat -> Reshape chain); ONNX shape inference where that fails."""
    import onnx

    m = copy.deepcopy(model)
    del m.graph.value_info[:]
    inp = m.graph.input[0]
    dims = inp.type.tensor_type.shape.dim
    dims[0].Clear()
    dims[0].dim_value = _PROBE_BATCH
    for o in m.graph.output:
        for d in o.type.tensor_type.shape.dim:
            d.Clear()
    try:
        m = onnx.shape_inference.infer_shapes(m, strict_mode=False, data_prop=True)
    except Exception as e:
        raise UnsupportedOnnx(f"ONNX shape inference fails on this graph ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:300]}); check the model with onnx.checker") from e
    shapes: dict[str, tuple] = {}
    for vi in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
            shapes[vi.name] = tuple(_dims(vi))
    for t in m.graph.initializer:
        shapes[t.name] = tuple(t.dims)
    if all(isinstance(d, int) for n in m.graph.node for o in n.output if o for d in shapes.get(o, (None,))):
        return shapes
    try:
        import onnxruntime as ort

        types = {vi.name: vi.type.tensor_type.elem_type for vi in list(m.graph.value_info) + list(m.graph.output)}
        outs = [o for n in m.graph.node for o in n.output if o and types.get(o)]
        del m.graph.output[:]
        m.graph.output.extend(onnx.helper.make_tensor_value_info(o, types[o], None) for o in outs)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        opts.log_severity_level = 3
        sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        probe = np.zeros([d.dim_value for d in dims], dtype=np.float32)
        for name, val in zip(outs, sess.run(outs, {inp.name: probe})):
            shapes[name] = tuple(np.shape(val))
    except Exception:  # keep what shape inference found; the rewrites refuse what stays unknown
        pass
    return shapes


def _batched(shape) -> bool:
    return bool(shape) and shape[0] == _PROBE_BATCH and all(isinstance(d, int) for d in shape)


# ------------------------------------------------------------------ checks (before anything runs)

def check_quantized(model) -> None:
    q = [n for n in model.graph.node if n.op_type in QUANT_OPS]
    if q:
        raise QuantizedOnnx(f"this ONNX model is already quantized ({_nodes_desc(q, domains=False)}); OPQ prunes and quantizes "
                            "a float model itself: give the float model it was made from (e.g. "
                            "torch.onnx.export of the float network), or pass --dequantize to turn its quantized "
                            "weights back into float ones (activation quantizers are dropped)")


DEQUANTIZABLE = {"Quant", "BipolarQuant", "QuantizeLinear", "DequantizeLinear"}
_ROUND = {"ROUND": np.round, "HALF_EVEN": np.round, "FLOOR": np.floor, "CEIL": np.ceil, "ROUND_TO_ZERO": np.trunc}


def _per_axis(a: np.ndarray, node, ndim: int) -> np.ndarray:
    """A QuantizeLinear/DequantizeLinear per-axis scale or zero point, shaped to broadcast along its axis."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 1 and a.size > 1:
        shape = [1] * ndim
        shape[int(_attr(node, "axis", 1)) % ndim] = a.size
        a = a.reshape(shape)
    return a


def _quant_weight(g, n, w: np.ndarray) -> np.ndarray | None:
    """The float values a weight quantizer node makes of the constant w, or None when it cannot be read."""
    if n.op_type == "BipolarQuant":
        s = _init_array(g, n.input[1])
        return None if s is None else np.where(w >= 0, 1.0, -1.0) * s
    if n.op_type == "Quant":
        s, z, b = (_init_array(g, n.input[k]) for k in (1, 2, 3))
        mode = str(_attr(n, "rounding_mode", b"ROUND"), "ascii") if isinstance(_attr(n, "rounding_mode"), bytes) \
            else str(_attr(n, "rounding_mode", "ROUND"))
        if s is None or z is None or b is None or mode.upper() not in _ROUND:
            return None
        bits, signed, narrow = float(np.asarray(b).max()), int(_attr(n, "signed", 1)), int(_attr(n, "narrow", 0))
        lo = -(2 ** (bits - 1)) + narrow if signed else 0
        hi = 2 ** (bits - 1) - 1 if signed else 2 ** bits - 1 - narrow
        q = np.clip(_ROUND[mode.upper()](w / s + z), lo, hi)
        return (q - z) * s
    # QuantizeLinear: integers of the zero point's type (uint8 without one)
    s = _init_array(g, n.input[1])
    z = _init_array(g, n.input[2]) if len(n.input) > 2 and n.input[2] else np.zeros((), np.uint8)
    if s is None or z is None:
        return None
    info = np.iinfo(z.dtype)
    s, zf = _per_axis(s, n, w.ndim), _per_axis(z, n, w.ndim)
    return np.clip(np.round(w / s) + zf, info.min, info.max)  # the integers; their DequantizeLinear follows


def dequantize(model, rec) -> None:
    """`--dequantize`: an already-quantized graph turned back into a float one. Weight quantizers (QONNX Quant /
    BipolarQuant on a constant, QuantizeLinear -> [Clip ->] DequantizeLinear on a constant, DequantizeLinear of
    an integer constant) become float constants holding the quantized values; activation quantizers (Quant,
    QuantizeLinear -> DequantizeLinear on a computed tensor) are removed. What cannot be turned back (a binary
    activation, Trunc, MultiThreshold, QLinear*/Integer ops) is refused by name. Recorded in `rec["dequantized"]`."""
    g = model.graph
    weights, acts, bad, from_q = [], [], [], set()
    for _ in range(len(g.node)):
        n = next((m for m in g.node if m.op_type in QUANT_OPS), None)
        if n is None:
            break
        w = _init_array(g, n.input[0]) if n.op_type != "DequantizeLinear" else None
        if n.op_type not in DEQUANTIZABLE or (n.op_type == "BipolarQuant" and w is None):
            bad.append(n)
            n.op_type = "_refused_" + n.op_type  # out of the loop's way; named below
            continue
        if n.op_type == "DequantizeLinear":  # alone: of an integer constant (QDQ weights), or the end of an activation pair
            x = _init_array(g, n.input[0])
            s = _init_array(g, n.input[1])
            z = _init_array(g, n.input[2]) if len(n.input) > 2 and n.input[2] else np.zeros(())
            if x is None:
                _bypass(g, n, n.input[0], n.output[0])
                acts.append(n.name or n.output[0])
            elif s is None or z is None:
                bad.append(n)
                n.op_type = "_refused_" + n.op_type
                continue
            else:
                val = (x.astype(np.float64) - _per_axis(z, n, x.ndim)) * _per_axis(s, n, x.ndim)
                if n.input[0] not in from_q:  # (a QuantizeLinear's integers: counted there)
                    weights.append(n.name or n.output[0])
                _replace_by_const(g, n, val)
            continue
        if w is None:  # an activation quantizer
            _bypass(g, n, n.input[0], n.output[0])
            acts.append(n.name or n.output[0])
            continue
        val = _quant_weight(g, n, w.astype(np.float64))
        if val is None:
            bad.append(n)
            n.op_type = "_refused_" + n.op_type
            continue
        if n.op_type == "QuantizeLinear":  # the integers stay constants; the DequantizeLinear after them is folded next
            zt = _init_array(g, n.input[2]) if len(n.input) > 2 and n.input[2] else np.zeros((), np.uint8)
            _replace_by_const(g, n, val.astype(zt.dtype))
            from_q.add(n.output[0])
            for c in _consumers(g, n.output[0]):
                if c.op_type == "Clip":  # QCDQ's clip of the integers: applied to the constant
                    lo, hi = (_init_array(g, c.input[k]) if len(c.input) > k and c.input[k] else None for k in (1, 2))
                    clipped = np.clip(val, -np.inf if lo is None else lo, np.inf if hi is None else hi)
                    _replace_by_const(g, c, clipped.astype(zt.dtype))
                    from_q.add(c.output[0])
        else:
            _replace_by_const(g, n, val)
        weights.append(n.name or n.output[0])
    if bad:
        for n in bad:
            n.op_type = n.op_type[len("_refused_"):]
        raise QuantizedOnnx(f"--dequantize cannot turn these quantized nodes back into float ones: {_nodes_desc(bad, domains=False)} "
                            "(it takes Quant, BipolarQuant on weights, QuantizeLinear/DequantizeLinear); give the float "
                            "model they were made from")
    rec["dequantized"] = {"weights": weights, "activation_quantizers_removed": acts}


def _replace_by_const(g, n, val: np.ndarray) -> None:
    """Remove node n; its output becomes a constant (float32 unless an integer dtype is given)."""
    out = n.output[0]
    g.node.remove(n)
    _set_init(g, out, val if np.issubdtype(val.dtype, np.integer) else val.astype(np.float32))


def check_ops(model) -> None:
    custom = [n for n in model.graph.node if n.domain not in STANDARD_DOMAINS]
    other = [n for n in model.graph.node if n.domain in STANDARD_DOMAINS
             and n.op_type not in SUPPORTED_OPS | SHAPE_OPS]
    if custom or other:
        raise UnsupportedOnnx(f"unsupported ONNX ops: {_nodes_desc(custom + other)}. The ONNX front end supports "
                              f"{', '.join(sorted(SUPPORTED_OPS))}; remove or replace these layers and export again")


# ------------------------------------------------------------------ rewrites

def _upgrade(model, rec) -> Any:
    import onnx
    from onnx import version_converter

    opset = next((o.version for o in model.opset_import if o.domain in STANDARD_DOMAINS), None)
    if opset is None:
        raise UnsupportedOnnx("the ONNX model imports no default-domain opset; export it again with an opset from 7")
    rec["opset_in"] = opset
    if opset < 7:
        raise UnsupportedOnnx(f"ONNX opset {opset} is older than the oldest supported (7); export it again "
                              f"with opset 13 or newer")
    target = OPSET if opset < OPSET else min(opset, MAX_OPSET)
    if target != opset:
        try:
            model = version_converter.convert_version(model, target)
        except Exception as e:
            raise UnsupportedOnnx(f"onnx.version_converter cannot move this graph from opset {opset} to {target} "
                                  f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); export it again at "
                                  f"opset {OPSET}") from e
    if model.ir_version < 7:
        model.ir_version = 7
    rec["opset"] = target
    del model.opset_import[:]
    model.opset_import.append(onnx.helper.make_opsetid("", target))
    return model


def _io(model, input_shape, rec) -> None:
    """One input, one output; batch symbolic; per-sample input shape known."""
    g = model.graph
    inits = {t.name for t in g.initializer}
    keep = [i for i in g.input if i.name not in inits]
    if len(keep) != len(g.input):  # old exporters list initializers as inputs
        del g.input[:]
        g.input.extend(keep)
    if len(g.input) != 1:
        raise UnsupportedOnnx(f"the ONNX model has {len(g.input)} inputs ({[i.name for i in g.input]}); opq-hw "
                              "takes a model with one input tensor")
    if len(g.output) != 1:
        raise UnsupportedOnnx(f"the ONNX model has {len(g.output)} outputs ({[o.name for o in g.output]}); opq-hw "
                              "takes a model with one output tensor")
    inp = g.input[0]
    if inp.type.tensor_type.elem_type != 1:
        raise UnsupportedOnnx(f"the ONNX input {inp.name!r} is not float32; export the float model with a float32 input")
    dims = _dims(inp)
    if len(dims) < 2:
        raise UnsupportedOnnx(f"the ONNX input {inp.name!r} has rank {len(dims)}; opq-hw needs a batch dimension "
                              "and at least one feature dimension")
    shape_d = inp.type.tensor_type.shape.dim
    fixed = dims[0] if isinstance(dims[0], int) else None
    rec["fixed_batch"] = fixed
    shape_d[0].Clear()
    shape_d[0].dim_param = "N"
    per = dims[1:]
    if input_shape is not None:
        input_shape = tuple(int(v) for v in input_shape)
        if len(input_shape) != len(per) or any(isinstance(d, int) and d != v for d, v in zip(per, input_shape)):
            raise OpqError(f"--input-shape {','.join(map(str, input_shape))} does not fit the ONNX input "
                           f"{inp.name!r} of shape {_shape_str(per)} (per sample, the model's input layout)")
        per = list(input_shape)
        for d, v in zip(shape_d[1:], per):
            d.Clear()
            d.dim_value = v
    unknown = [i + 1 for i, d in enumerate(per) if not isinstance(d, int)]
    if unknown:
        raise OpqError(f"the ONNX input {inp.name!r} has shape {_shape_str(['N'] + per)}: dimension"
                       f"{'s' if len(unknown) > 1 else ''} {', '.join(map(str, unknown))} "
                       f"{'are' if len(unknown) > 1 else 'is'} not fixed in the graph; give --input-shape "
                       f"{','.join(str(d) if isinstance(d, int) else '?' for d in per)} (per sample, without the "
                       f"batch, in the layout of the model's input)")
    rec["input_name"] = inp.name
    rec["user_input_shape"] = list(per)
    for o in g.output:
        od = o.type.tensor_type.shape.dim
        if len(od):
            od[0].Clear()
            od[0].dim_param = "N"
    del g.value_info[:]
    if fixed is not None:  # Reshape targets that spell the fixed batch
        for n in g.node:
            if n.op_type == "Reshape":
                tgt = _init_array(g, n.input[1])
                if tgt is not None and tgt.size and int(tgt[0]) == fixed:
                    tgt = tgt.copy()
                    tgt[0] = 0 if (tgt[1:] == -1).any() else -1
                    n.input[1] = _fresh_init(g, n.input[1] + "_nobatch", tgt.astype(np.int64))


def _shape_str(dims) -> str:
    return "(" + ", ".join(str(d) if d is not None else "?" for d in dims) + ")"


def _remove_nops(model, rec) -> None:
    g = model.graph
    for n in list(g.node):
        if n.op_type in ("Dropout", "Identity"):
            if len(n.output) > 1 and n.output[1] and _consumers(g, n.output[1]):
                raise UnsupportedOnnx(f"Dropout {n.name!r}: its mask output is used; opq-hw takes inference graphs")
            rec.setdefault("removed", []).append(f"{n.op_type} {n.name or n.output[0]!r}")
            _bypass(g, n, n.input[0], n.output[0])


def _axes(g, n) -> list[int] | None:
    """The axes of an Unsqueeze/Squeeze (attribute before opset 13, input from 13)."""
    axes = _attr(n, "axes", None)
    if axes is None and len(n.input) > 1 and n.input[1]:
        axes = _init_array(g, n.input[1])
    return None if axes is None else [int(a) for a in np.asarray(axes).reshape(-1)]


def _conv1d_from_2d(model, shapes, rec) -> None:
    """Unsqueeze -> Conv 2-D with a kernel of height (or width) 1 -> Squeeze of that axis -> a 1-D Conv:
    how tf2onnx writes Keras' Conv1D (TensorFlow runs it as ExpandDims + Conv2D + Squeeze)."""
    from onnx import helper

    g = model.graph
    for c in list(g.node):
        if c.op_type != "Conv":
            continue
        u, users = _producer(g, c.input[0]), _consumers(g, c.output[0])
        w = _init_array(g, c.input[1]) if len(c.input) > 1 else None
        if u is None or u.op_type != "Unsqueeze" or w is None or w.ndim != 4 or len(users) != 1 \
                or users[0].op_type != "Squeeze" or len(_consumers(g, u.output[0])) != 1:
            continue
        sq, ax = users[0], _axes(g, u)
        src = shapes.get(u.input[0])
        if not ax or len(ax) != 1 or not src or len(src) != 3 or ax[0] % 4 not in (2, 3) \
                or [a % 4 for a in (_axes(g, sq) or [])] != [ax[0] % 4]:
            continue
        unit = ax[0] % 4 - 2  # the spatial axis of size 1 (0: height, 1: width)
        keep = 1 - unit
        k = list(_attr(c, "kernel_shape", w.shape[2:]))
        pads = list(_attr(c, "pads", [0, 0, 0, 0]))
        st, dil = list(_attr(c, "strides", [1, 1])), list(_attr(c, "dilations", [1, 1]))
        if k[unit] != 1 or pads[unit] or pads[2 + unit] or _attr(c, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            continue
        w1 = w.reshape(w.shape[0], w.shape[1], w.shape[2 + keep])
        new = helper.make_node("Conv", [u.input[0], _fresh_init(g, c.input[1] + "_1d", w1)] + list(c.input[2:]),
                               [sq.output[0]], name=c.name, kernel_shape=[k[keep]], strides=[st[keep]],
                               dilations=[dil[keep]], pads=[pads[keep], pads[2 + keep]], group=int(_attr(c, "group", 1)))
        g.node.insert(list(g.node).index(c), new)
        for n in (u, c, sq):
            g.node.remove(n)
        rec.setdefault("conv1d_from_2d", []).append(c.name or c.output[0])


def _flatten_like(model, shapes, rec) -> None:
    """Reshape / Squeeze / Flatten: to (N, -1) -> Flatten(axis=1); to the same shape -> removed."""
    from onnx import helper

    g = model.graph
    for n in list(g.node):
        if n.op_type not in ("Reshape", "Squeeze", "Flatten"):
            continue
        src, dst = shapes.get(n.input[0]), shapes.get(n.output[0])
        label = f"{n.op_type} {n.name or n.output[0]!r}"
        if not (src and dst and _batched(src) and all(isinstance(d, int) for d in dst)):
            raise UnsupportedOnnx(f"{label}: its shapes cannot be inferred; opq-hw takes Reshape/Flatten to (N, -1) "
                                  "with a static per-sample shape")
        if not _batched(dst):
            raise UnsupportedOnnx(f"{label} folds the batch dimension into the features ({_shape_str(src)} -> "
                                  f"{_shape_str(dst)} with a batch of {_PROBE_BATCH}); opq-hw takes a flatten to (N, -1)")
        if dst == src:
            rec.setdefault("removed", []).append(f"{label} (no-op)")
            _bypass(g, n, n.input[0], n.output[0])
            continue
        if len(dst) == 2 and dst[1] == math.prod(src[1:]):
            if n.op_type == "Flatten" and _attr(n, "axis", 1) == 1:
                continue
            new = helper.make_node("Flatten", [n.input[0]], [n.output[0]], name=n.name, axis=1)
            g.node.insert(list(g.node).index(n), new)
            g.node.remove(n)
            rec.setdefault("flattened", []).append(label)
            continue
        raise UnsupportedOnnx(f"{label} maps per-sample shape {_shape_str(src[1:])} to {_shape_str(dst[1:])}; opq-hw "
                              "takes only a flatten to (N, -1) here")


def _optimize(model, passes) -> Any:
    import onnxoptimizer

    try:
        return onnxoptimizer.optimize(model, passes)
    except Exception as e:
        raise UnsupportedOnnx(f"onnxoptimizer ({', '.join(passes)}) fails on this graph ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:200]})") from e


def _strip_input_transpose(model, shapes, rec) -> None:
    g = model.graph
    inp = g.input[0]
    rank = len(inp.type.tensor_type.shape.dim)
    users = _consumers(g, inp.name)
    rec["input_layout"] = None
    if rank not in CHANNELS_LAST or not users:
        return
    name, perm = CHANNELS_LAST[rank]
    if not all(t.op_type == "Transpose" and list(_attr(t, "perm", [])) == perm for t in users):
        return  # (every reader of the input must take it channels-first)
    dims = inp.type.tensor_type.shape.dim
    vals = [d.dim_value for d in dims]
    for d, p in zip(dims[1:], perm[1:]):
        d.Clear()
        d.dim_value = vals[p]
    for t in users:
        _bypass(g, t, inp.name, t.output[0])
    rec["input_layout"] = name
    rec["input_perm"] = perm
    rec["model_layout"] = {"NWC": "NCW", "NHWC": "NCHW"}[name]


def _mean_to_gap(model, shapes, rec) -> None:
    """ReduceMean over all spatial axes -> GlobalAveragePool (+ Flatten without keepdims). tf2onnx writes
    Keras' GlobalAveragePooling as a ReduceMean, often over the channels-last axes behind a Transpose
    (NCHW -> NHWC): that Transpose is dropped and the mean taken over the channels-first axes."""
    from onnx import helper

    g = model.graph
    for n in list(g.node):
        if n.op_type != "ReduceMean":
            continue
        label = f"ReduceMean {n.name or n.output[0]!r}"
        axes = _attr(n, "axes", None)
        if axes is None and len(n.input) > 1 and n.input[1]:
            axes = _init_array(g, n.input[1])
        src = shapes.get(n.input[0])
        keep = int(_attr(n, "keepdims", 1))
        if axes is None or not src:
            raise UnsupportedOnnx(f"{label}: axes or input shape unknown; opq-hw takes ReduceMean only as a global "
                                  "average pool over all spatial axes")
        r = len(src)
        axes = sorted(int(a) % r for a in np.asarray(axes).reshape(-1))
        t = _producer(g, n.input[0])
        if (axes == list(range(1, r - 1)) and not keep and t is not None and t.op_type == "Transpose"
                and list(_attr(t, "perm", [])) == [0] + list(range(2, r)) + [1]
                and len(_consumers(g, t.output[0])) == 1):
            n.input[0] = t.input[0]
            g.node.remove(t)
            axes = list(range(2, r))
        if axes != list(range(2, r)) or r < 3:
            raise UnsupportedOnnx(f"{label} averages over axes {axes} of a rank-{r} tensor; opq-hw takes ReduceMean "
                                  "only as a global average pool over all spatial axes (channels-first)")
        i = list(g.node).index(n)
        if keep:
            g.node.insert(i, helper.make_node("GlobalAveragePool", [n.input[0]], [n.output[0]], name=n.name))
        else:
            mid = n.output[0] + "_gap"
            g.node.insert(i, helper.make_node("Flatten", [mid], [n.output[0]], name=(n.name or "gap") + "_flatten", axis=1))
            g.node.insert(i, helper.make_node("GlobalAveragePool", [n.input[0]], [mid], name=n.name))
        g.node.remove(n)
        rec.setdefault("global_average_pools", []).append(label)


def _explicit_pads(model, shapes, rec) -> None:
    """auto_pad SAME_UPPER / SAME_LOWER / VALID written out as pads (onnx2torch takes explicit pads only);
    padding that is not the same on both sides is refused (it would need a separate Pad layer)."""
    from onnx import helper

    g = model.graph
    for n in g.node:
        if n.op_type not in ("Conv", "MaxPool", "AveragePool"):
            continue
        label = f"{n.op_type} {n.name or n.output[0]!r}"
        auto = _attr(n, "auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        src = shapes.get(n.input[0])
        if auto != "NOTSET":
            if not src or not all(isinstance(d, int) for d in src):
                raise UnsupportedOnnx(f"{label} uses auto_pad={auto} on an input of unknown shape")
            spatial = list(src[2:])
            k = list(_attr(n, "kernel_shape", None) or _init_array(g, n.input[1]).shape[2:])
            st = list(_attr(n, "strides", [1] * len(spatial)))
            dil = list(_attr(n, "dilations", [1] * len(spatial)))
            begin, end = [], []
            for i, size in enumerate(spatial):
                total = 0 if auto == "VALID" else max((-(-size // st[i]) - 1) * st[i] + (k[i] - 1) * dil[i] + 1 - size, 0)
                small, large = total // 2, total - total // 2
                begin.append(large if auto == "SAME_LOWER" else small)
                end.append(small if auto == "SAME_LOWER" else large)
            for a in list(n.attribute):
                if a.name in ("auto_pad", "pads"):
                    n.attribute.remove(a)
            n.attribute.append(helper.make_attribute("pads", begin + end))
            rec.setdefault("explicit_pads", []).append(label)
        pads = list(_attr(n, "pads", []))
        if pads and pads[:len(pads) // 2] != pads[len(pads) // 2:]:
            raise UnsupportedOnnx(f"{label} pads {pads[:len(pads) // 2]} before and {pads[len(pads) // 2:]} after; "
                                  "opq-hw takes the same padding on both sides (an odd kernel with stride 1 and "
                                  "'same' padding, or 'valid')")


def _matmul_to_gemm(model, shapes, rec) -> None:
    from onnx import helper

    g = model.graph
    for n in list(g.node):
        if n.op_type != "MatMul":
            continue
        label = f"MatMul {n.name or n.output[0]!r}"
        w = _init_array(g, n.input[1])
        a = shapes.get(n.input[0])
        if w is None or w.ndim != 2:
            raise UnsupportedOnnx(f"{label} multiplies two activations (or by a non-2-D constant); opq-hw takes "
                                  "MatMul by a constant weight matrix (a dense layer)")
        if not a or len(a) != 2:
            raise UnsupportedOnnx(f"{label} acts on an input of rank {len(a) if a else '?'}; opq-hw takes dense layers "
                                  "on (N, features) inputs (flatten first)")
        inputs, out, drop = [n.input[0], n.input[1]], n.output[0], None
        users = _consumers(g, n.output[0])
        if len(users) == 1 and users[0].op_type == "Add" and not any(o.name == n.output[0] for o in g.output):
            add = users[0]
            other = add.input[1] if add.input[0] == n.output[0] else add.input[0]
            b = _init_array(g, other)
            if b is not None and b.size == w.shape[1] and b.ndim <= 2:
                inputs.append(_fresh_init(g, other + "_bias", b.reshape(-1).astype(np.float32)))
                out, drop = add.output[0], add
        gemm = helper.make_node("Gemm", inputs, [out], name=n.name or n.output[0])
        g.node.insert(list(g.node).index(n), gemm)
        g.node.remove(n)
        if drop is not None:
            g.node.remove(drop)
        rec.setdefault("gemm_from_matmul", []).append(n.name or n.output[0])


def _gemm_weight(g, n) -> tuple[np.ndarray, bool]:
    """(weight as stored, trans_b) of a Gemm with constant B; alpha/beta folded in."""
    label = f"Gemm {n.name or n.output[0]!r}"
    if _attr(n, "transA", 0):
        raise UnsupportedOnnx(f"{label} transposes its input (transA=1); opq-hw takes Gemm with transA=0")
    w = _init_array(g, n.input[1])
    if w is None:
        raise UnsupportedOnnx(f"{label} has a non-constant weight; opq-hw takes dense layers with constant weights")
    return w, bool(_attr(n, "transB", 0))


def _canonical_gemm(model, shapes, rec) -> None:
    """Gemm: alpha/beta folded into B/C, C made 1-D (what onnx2torch turns into nn.Linear)."""
    g = model.graph
    for n in g.node:
        if n.op_type != "Gemm":
            continue
        w, _ = _gemm_weight(g, n)
        alpha, beta = float(_attr(n, "alpha", 1.0)), float(_attr(n, "beta", 1.0))
        if alpha != 1.0:
            n.input[1] = _fresh_init(g, n.input[1] + "_a", (w * alpha).astype(np.float32))
        if len(n.input) > 2 and n.input[2]:
            c = _init_array(g, n.input[2])
            if c is None:
                raise UnsupportedOnnx(f"Gemm {n.name!r} adds a non-constant C; opq-hw takes dense layers with a constant bias")
            out = w.shape[0] if _attr(n, "transB", 0) else w.shape[1]
            if c.size not in (1, out):
                raise UnsupportedOnnx(f"Gemm {n.name!r}: bias of shape {c.shape} is not per output feature")
            n.input[2] = _fresh_init(g, n.input[2] + "_c", np.broadcast_to(c.reshape(-1) * beta, (out,)).astype(np.float32))
        for a in list(n.attribute):
            if a.name in ("alpha", "beta"):
                n.attribute.remove(a)


def _absorb_flatten_transpose(model, shapes, rec) -> None:
    """Transpose(NCHW -> NHWC / NCW -> NWC) -> Flatten -> Gemm: the transpose becomes a permutation of
    the Gemm's weight rows (tf2onnx writes it before Keras' Flatten + Dense)."""
    g = model.graph
    for t in list(g.node):
        if t.op_type != "Transpose":
            continue
        src = shapes.get(t.input[0])
        perm = list(_attr(t, "perm", []))
        if not src or len(src) not in CHANNELS_LAST or perm != [0] + list(range(2, len(src))) + [1]:
            continue
        fl = _consumers(g, t.output[0])
        if len(fl) != 1 or fl[0].op_type != "Flatten" or _attr(fl[0], "axis", 1) != 1:
            continue
        dense = _consumers(g, fl[0].output[0])
        if len(dense) != 1 or dense[0].op_type != "Gemm" or dense[0].input[0] != fl[0].output[0]:
            continue
        d = dense[0]
        w, trans_b = _gemm_weight(g, d)
        c, spatial = src[1], list(src[2:])
        # row index in channels-last flatten order, listed in channels-first order
        idx = np.arange(c * math.prod(spatial)).reshape(spatial + [c])
        idx = np.moveaxis(idx, -1, 0).reshape(-1)
        w2 = w[:, idx] if trans_b else w[idx, :]
        d.input[1] = _fresh_init(g, d.input[1] + "_cf", w2.astype(np.float32))
        _bypass(g, t, t.input[0], t.output[0])
        rec.setdefault("transposes_absorbed", []).append(f"Transpose {t.name or t.output[0]!r} into {d.name!r}")


def _fold_bn(model, shapes, rec) -> None:
    g = model.graph
    for bn in list(g.node):
        if bn.op_type != "BatchNormalization":
            continue
        label = f"BatchNormalization {bn.name or bn.output[0]!r}"
        if len([o for o in bn.output if o]) > 1 or _attr(bn, "training_mode", 0):
            raise UnfoldableBatchNorm(f"{label} is in training mode; export the model in eval mode")
        p = _producer(g, bn.input[0])
        params = [_init_array(g, v) for v in bn.input[1:5]]
        if any(a is None for a in params):
            raise UnfoldableBatchNorm(f"{label} has non-constant parameters; export the model in eval mode")
        if p is None or p.op_type not in ("Conv", "Gemm") or len(_consumers(g, bn.input[0])) != 1 \
                or any(o.name == bn.input[0] for o in g.output) or _init(g, p.input[1]) is None \
                or sum(p.input[1] in n.input for n in g.node) != 1:
            what = "the model input" if p is None else f"{p.op_type} {p.name or p.output[0]!r}"
            src = shapes.get(bn.input[0])
            if src is not None and len(src) > 4:
                raise UnfoldableBatchNorm(f"{label} normalises a {len(src) - 2}-D map; opq-hw keeps a BatchNormalization "
                                          "it cannot fold only on (N, C), 1-D and 2-D maps")
            if any(a.size != params[0].size for a in params):
                raise UnfoldableBatchNorm(f"{label}: its scale, bias, mean and variance differ in size")
            rec.setdefault("kept_bn", []).append(  # the carrier keeps it as a quantized channel affine
                {"bn": bn.name or bn.output[0], "why": f"follows {what}, not a Conv/Gemm/MatMul whose output only it reads"})
            continue
        gamma, beta, mean, var = (a.astype(np.float64) for a in params)
        k = gamma / np.sqrt(var + float(_attr(bn, "epsilon", 1e-5)))
        w = _init_array(g, p.input[1]).astype(np.float64)
        out_axis = 0
        if p.op_type == "Gemm":
            out_axis = 0 if _attr(p, "transB", 0) else 1
        n_out = w.shape[out_axis]
        if k.size != n_out:
            raise UnfoldableBatchNorm(f"{label} has {k.size} channels but {p.name!r} has {n_out} outputs")
        shape = [1] * w.ndim
        shape[out_axis] = n_out
        b = _init_array(g, p.input[2]).astype(np.float64) if len(p.input) > 2 and p.input[2] else np.zeros(n_out)
        p.input[1] = _fresh_init(g, p.input[1] + "_bn", (w * k.reshape(shape)).astype(np.float32))
        bias = _fresh_init(g, (p.name or "layer") + "_bias_bn", ((b.reshape(-1) - mean) * k + beta).astype(np.float32))
        if len(p.input) > 2:
            p.input[2] = bias
        else:
            p.input.append(bias)
        _bypass(g, bn, bn.input[0], bn.output[0])
        rec.setdefault("folded_bn", []).append({"bn": bn.name or bn.output[0], "into": p.name or p.output[0]})


def _strip_tail(model, shapes, rec) -> None:
    g = model.graph
    rec["tail"] = None
    out = g.output[0]
    n = _producer(g, out.name)
    if n is None or n.op_type not in TAIL_OPS:
        return
    src = shapes.get(n.input[0])
    if n.op_type in ("Softmax", "LogSoftmax"):
        axis = _attr(n, "axis", -1 if rec.get("opset", OPSET) >= 13 else 1)
        if not src or len(src) != 2 or axis not in (1, -1):
            return
    if _used_elsewhere(g, n.input[0], n):
        return
    p = _producer(g, n.input[0])
    if p is None:
        return
    p.output[list(p.output).index(n.input[0])] = out.name
    g.node.remove(n)
    rec["tail"] = TAIL_OPS[n.op_type]


def _final_check(model) -> None:
    g = model.graph
    left = [n for n in g.node if n.op_type in SHAPE_OPS or n.op_type in ("MatMul", "ReduceMean")]
    if left:
        raise UnsupportedOnnx(f"unsupported ONNX ops on the data path: {_nodes_desc(left)}; opq-hw takes them only "
                              "where they compute a Reshape to (N, -1)")
    for n in g.node:
        if n.op_type == "Add":
            consts = [v for v in n.input if _init(g, v) is not None]
            if consts:
                raise UnsupportedOnnx(f"Add {n.name or n.output[0]!r} adds a constant that is not a layer's bias; "
                                      "opq-hw takes Add of two activations (residual) or a bias right after Conv/MatMul")
        if n.op_type == "Conv" and _init(g, n.input[1]) is None:
            raise UnsupportedOnnx(f"Conv {n.name!r} has a non-constant weight; opq-hw takes constant weights")


def _name_nodes(model) -> None:
    seen: set[str] = set()
    for i, n in enumerate(model.graph.node):
        if not n.name or n.name in seen:
            n.name = f"{n.op_type}_{i}"
        seen.add(n.name)


def normalize(model, input_shape=None, rec: dict[str, Any] | None = None, dequantize_graph: bool = False):
    """The rewrites above, in order, on a loaded (self-contained) ModelProto. Returns (model, record).
    `dequantize_graph`: an already-quantized graph is turned back into a float one first (`dequantize`)."""
    import onnx

    rec = {} if rec is None else rec
    if dequantize_graph:
        dequantize(model, rec)
    check_quantized(model)
    check_ops(model)
    model = _upgrade(model, rec)
    _name_nodes(model)
    model = _optimize(model, ["extract_constant_to_initializer", "eliminate_duplicate_initializer"])
    _io(model, input_shape, rec)
    _remove_nops(model, rec)
    _conv1d_from_2d(model, _infer_shapes(model), rec)
    _flatten_like(model, _infer_shapes(model), rec)
    model = _optimize(model, ["eliminate_deadend", "eliminate_unused_initializer", "fuse_consecutive_transposes",
                              "eliminate_nop_transpose", "fuse_add_bias_into_conv"])
    shapes = _infer_shapes(model)
    for step in (_mean_to_gap, _explicit_pads, _strip_input_transpose, _matmul_to_gemm, _canonical_gemm,
                 _absorb_flatten_transpose, _fold_bn, _strip_tail):
        step(model, shapes, rec)
        shapes = _infer_shapes(model)
    model = _optimize(model, ["eliminate_deadend", "eliminate_unused_initializer"])
    _final_check(model)
    per = list(shapes[model.graph.input[0].name][1:])
    rec["input_shape"] = per
    rec.setdefault("model_layout", None)
    rec["output_shape"] = list(shapes[model.graph.output[0].name][1:])
    model = onnx.shape_inference.infer_shapes(model)
    try:
        onnx.checker.check_model(model)
    except Exception as e:
        raise UnsupportedOnnx(f"the normalised graph does not pass onnx.checker ({e}); please report this model") from e
    return model, rec


def load_onnx(path: str | Path, input_shape=None, dequantize_graph: bool = False) -> Frontend:
    """Read a float .onnx (external data resolved next to it), check and normalise it."""
    import onnx
    from onnx.external_data_helper import load_external_data_for_model, uses_external_data

    path = Path(path)
    if not path.is_file():
        raise OpqError(f"ONNX model {str(path)!r} not found; give an existing .onnx file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise OpqError(f"{path.name} is not an ONNX model ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                       "export it again with torch.onnx.export or tf2onnx") from e
    external = any(uses_external_data(t) for t in model.graph.initializer)
    if external:
        try:
            load_external_data_for_model(model, str(path.parent))
        except Exception as e:
            raise OpqError(f"{path.name} keeps its weights in external data files that cannot be read "
                           f"({type(e).__name__}: {e}); keep the data files next to the .onnx file") from e
        for t in model.graph.initializer:
            del t.external_data[:]
            t.data_location = onnx.TensorProto.DEFAULT
    try:
        onnx.checker.check_model(model)
    except Exception as e:
        raise OpqError(f"{path.name} is not a valid ONNX model ({str(e).splitlines()[0][:300]}); export it again") from e
    rec: dict[str, Any] = {"source": path.name, "external_data": external}
    model, rec = normalize(model, input_shape, rec, dequantize_graph)
    return Frontend(model, rec)
