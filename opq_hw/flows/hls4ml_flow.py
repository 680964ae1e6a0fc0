"""hls4ml flow: run directory -> QONNX -> hls4ml project, its C simulation, and its synthesis reports.

Path: the run's `model.qonnx.onnx` (Brevitas export) -> `split_channel_scales` -> qonnx cleanup,
channels-last, Gemm->MatMul (as the hls4ml QONNX frontend docs prescribe) -> hls4ml
`convert_from_onnx_model`. The input is pinned to the input quantizer's exact fixed-point grid; every other
type (weights, biases, channel scales, accumulators, ApplyAlpha scale and bias, results) is set from the exact
range/precision analysis of the converted graph (`hls4ml_types`): a first conversion gives hls4ml's graph, the
analysis derives each type, and the next conversion sets them by layer name in the config. The types are read
back from the model and from the written project and checked; `exact` is that check, and a type that would
round or saturate stops the conversion with an error naming the layer and the type (unless `allow_inexact`).
`build` also writes the graph it hands to hls4ml (`QONNX_FOR_HLS4ML`) and the converter's arguments with the
full config (`CONVERT_CONFIG`): stock hls4ml converts them to the same exact project.

Per-output-channel weight scales. hls4ml 1.3.0 cannot convert a Quant node with a per-channel
scale on a weight (it fails inside `infer_precision`). OPQ's unified channel-wise quantization
has such scales (s_c = 2^e_c in pow2 mode), so before conversion each such layer is split:
conv(x, q * s) + b == s * (conv(x, q) + b / s) exactly, so the layer keeps the allocation's B-bit
integer codebook q (a Quant with scale 1: hls4ml stores it as ap_fixed<B,B>, the per-layer weight
precision equal to the allocation's bit width), its Int16Bias divided by s_c lies on the input's
grid (one per-tensor scale), and an explicit `Mul` by the constant s_c follows the layer, which
hls4ml turns into an ApplyAlpha; its scale type is set to ufixed<spread + 1, max(e) + 1>, which holds
every s_c exactly (`channel_scale_type`). The build records it per layer (`opq_hls4ml.json`: `alloc_bits`,
`weight_precision`, `channel_scale_precision`). Float (non-pow2) scales cannot be computed exactly:
they raise an `OpqError` unless `allow_inexact=True`, which re-rounds the weights onto a pow2 grid
4 bits finer than the smallest scale (the measured error is then reported by the simulation harness).

All hls4ml / qonnx imports are inside functions (`import opq_hw` stays light).
"""
from __future__ import annotations

import contextlib
import copy
import io as io_mod
import math
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..artifact import dumps, read_json, write_bytes, write_json
from ..rundir import record as record_build, write_outputs
from ..steps import Step, record_steps, run_build, run_steps
from ..errors import OpqError
from ..tail import TailTables, check_tail_option, hw_head, run_tail

FLOW = "hls4ml"
BACKENDS = ("Vitis", "Vivado")
IO_TYPES = {"parallel": "io_parallel", "stream": "io_stream", "io_parallel": "io_parallel", "io_stream": "io_stream"}
PROJECT = "myproject"
BUILD_INFO = "opq_hls4ml.json"
QONNX_FOR_HLS4ML = "model_for_hls4ml.qonnx.onnx"  # the graph handed to hls4ml (stock hls4ml converts it)
CONVERT_CONFIG = "hls4ml_convert.json"  # the keyword arguments of hls4ml's convert_from_onnx_model for it
MAX_TYPE_PASSES = 3  # conversions at most: hls4ml's own types, then the analysis' (repeated once if hls4ml regrouped)
INEXACT_EXTRA_BITS = 4  # allow_inexact: the re-rounding grid is this many bits finer than the smallest scale
DEFAULT_CLOCK_NS = 10.0  # used only when no board is given


# --------------------------------------------------------------------------- options / board


def _backend(backend: str) -> str:
    for b in BACKENDS:
        if backend.lower() == b.lower():
            return b
    raise OpqError(f"unknown hls4ml backend {backend!r}; use one of {list(BACKENDS)} (--backend)")


def _io(io: str) -> str:
    if io not in IO_TYPES:
        raise OpqError(f"unknown hls4ml io type {io!r}; use 'parallel' or 'stream' (--io)")
    return IO_TYPES[io]


def _board_info(board: str | None, part: str | None = None, clock_period: float | None = None) -> dict[str, Any]:
    """Part and clock period from `board_configs/<board>.yaml` (via `opq_hw.boards`)."""
    info: dict[str, Any] = {"board": board, "part": part, "clock_period_ns": clock_period, "source": "arguments"}
    if board is not None:
        from ..boards import load_board

        b = load_board(board)  # an unknown or invalid board is an OpqError naming the fix
        info["part"] = part or b.part
        if clock_period is None:
            info["clock_period_ns"] = round(1e3 / b.clock_mhz, 4)
        info["source"] = f"board_configs/{board}.yaml"
    if info["clock_period_ns"] is None:
        info["clock_period_ns"] = DEFAULT_CLOCK_NS
    return info


def _reuse_factors(run, board: str | None, reuse: int | dict[str, int] | None,
                   strategy: str = "latency") -> tuple[dict[str, int], str]:
    """Reuse factor per allocated layer: explicit > allocation's `reuse_factor` > cost model > 1."""
    names = [s.name for s in run.specs if not run.allocation.layer(s.name).skipped]
    if isinstance(reuse, int):
        return {n: reuse for n in names}, "argument"
    if isinstance(reuse, dict):
        unknown = set(reuse) - set(names)
        if unknown:
            raise OpqError(f"reuse factors for unknown layers {sorted(unknown)}; layers are {names}")
        return {n: int(reuse.get(n, 1)) for n in names}, "argument"
    from_alloc = {n: run.allocation.layer(n).reuse_factor for n in names}
    if all(v for v in from_alloc.values()):
        return {n: int(v) for n, v in from_alloc.items()}, "allocation"
    if board is None:
        return {n: 1 for n in names}, "fallback 1 (no board given, so no cost model)"
    try:
        from ..cost import choose_folding
    except ImportError:
        return {n: 1 for n in names}, "fallback 1 (no cost model available)"
    arch = f"hls4ml-{strategy}"
    act_bits = run.config.get("act_bits", 8)
    try:
        folding, source = choose_folding(run.specs, run.allocation, board, arch, act_bits=act_bits), f"cost model ({arch})"
    except OpqError as e:  # nothing fits: still write the most folded design, and say so
        folding = choose_folding(run.specs, run.allocation, board, arch, act_bits=act_bits, strict=False)
        source = f"cost model ({arch}), most folded; it does not fit: {e}"
    return {n: int(folding.get(n, {}).get("reuse_factor", 1)) for n in names}, source


# --------------------------------------------------------------------------- QONNX preparation


def _attr(node, name: str, default=None):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            v = helper.get_attribute_value(a)
            return v.decode() if isinstance(v, bytes) else v
    return default


def _pow2_exponents(s: np.ndarray) -> np.ndarray | None:
    """Integer exponents e with s == 2**e exactly, or None when some entry is not a positive power of two."""
    s = np.asarray(s, dtype=np.float64)
    if np.any(s <= 0) or not np.all(np.isfinite(s)):
        return None
    mant, ex = np.frexp(s)
    if not np.all(mant == 0.5):
        return None
    return (ex - 1).astype(np.int64)


def _quant_values(model, n) -> np.ndarray:
    """What a Quant node on a constant outputs (float64)."""
    from qonnx.custom_op.general.quant import quant

    ins = [model.get_initializer(i) for i in n.input]
    return quant(ins[0].astype(np.float32), ins[1], ins[2], ins[3], int(_attr(n, "signed", 1)), int(_attr(n, "narrow", 0)),
                 _attr(n, "rounding_mode", "ROUND")).astype(np.float64)


def _set_quant(model, n, values: np.ndarray, scale: float, bits: int | None = None) -> None:
    """Point a constant Quant node at new values and a per-tensor scale (and bit width)."""
    model.set_initializer(n.input[0], np.asarray(values, dtype=np.float32))
    model.set_initializer(f"{n.name}_tensor_scale", np.array(scale, dtype=np.float32))
    n.input[1] = f"{n.name}_tensor_scale"
    if bits is not None:
        model.set_initializer(f"{n.name}_tensor_bits", np.array(float(bits), dtype=np.float32))
        n.input[3] = f"{n.name}_tensor_bits"


def _onto_grid(model, n, exps: np.ndarray) -> dict[str, Any]:
    """A constant Quant with per-channel pow2 scales 2^e_c -> one grid 2^min(e), B + spread bits (exact)."""
    bits = int(np.asarray(model.get_initializer(n.input[3])).item())
    k = int(exps.max() - exps.min())
    _set_quant(model, n, _quant_values(model, n), 2.0 ** int(exps.min()), bits + k)
    return {"node": n.name, "kind": "grid", "bits_in": bits, "bits_out": bits + k, "exact": True}


def _split_layer(model, layer, wq, exps: np.ndarray, producers: dict) -> dict[str, Any]:
    """Conv/Gemm `layer` with per-output-channel pow2 weight scales s_c = 2^e_c -> integer weights at the
    allocation's B bits (scale 1), the bias divided by s_c (Int16Bias: then on the input's grid), and an
    explicit `Mul` by the constant s_c after the layer (hls4ml turns it into an ApplyAlpha; `convert`
    gives its scale the exact type `channel_scale_type`). conv(x, q s) + b == s (conv(x, q) + b / s) exactly.
    (A plain constant, not a Quant: qonnx's channels-last conversion folds its transposes, while it loops
    forever moving transposes past a Mul fed by a Quant on 1-D convolutions.)"""
    from onnx import helper

    s = model.get_initializer(wq.input[1]).astype(np.float64)
    c_out = s.size
    if s.reshape(-1).shape[0] != s.shape[0]:
        raise OpqError(f"weight quantizer {wq.name!r}: per-channel scales must run along the output axis (axis 0)")
    bits = int(np.asarray(model.get_initializer(wq.input[3])).item())
    ints = _quant_values(model, wq) / s
    _set_quant(model, wq, ints, 1.0)
    sc = s.reshape(-1)
    bias_rec = None
    if len(layer.input) > 2 and layer.input[2]:
        bq = producers.get(layer.input[2])
        if bq is None or bq.op_type != "Quant" or model.get_initializer(bq.input[0]) is None:
            b = model.get_initializer(layer.input[2])
            if b is None:
                raise OpqError(f"layer {layer.name!r}: its bias is neither a constant nor a quantized constant")
            model.set_initializer(layer.input[2], (b.reshape(-1) / sc).astype(np.float32))
        else:
            ratio = model.get_initializer(bq.input[1]).astype(np.float64).reshape(-1) / sc
            if ratio.size == c_out and not np.all(ratio == ratio[0]):
                raise OpqError(f"bias quantizer {bq.name!r}: its scale is not (input scale) x (weight scale); "
                               "use Int16Bias (the hardware mode's bias quantizer)")
            _set_quant(model, bq, _quant_values(model, bq).reshape(-1) / sc, float(ratio.reshape(-1)[0]))
            bias_rec = float(ratio.reshape(-1)[0])
    e = exps.reshape(-1)
    k = int(e.max() - e.min())
    shape = (1, c_out) + (1,) * (len(model.get_tensor_shape(layer.output[0]) or [0, 0]) - 2)
    scale_name, raw = f"{layer.name}_channel_scale_value", f"{layer.name}_channel_scale_raw"
    model.set_initializer(scale_name, (2.0 ** e).reshape(shape).astype(np.float32))
    out = layer.output[0]
    layer.output[0] = raw
    nodes = model.graph.node
    nodes.insert(list(nodes).index(layer) + 1,
                 helper.make_node("Mul", [raw, scale_name], [out], name=f"{layer.name}_channel_scale"))
    return {"node": wq.name, "layer": layer.name, "kind": "split", "bits_in": bits, "bits_out": bits,
            "scale_exponents": [int(e.min()), int(e.max())], "scale_bits": k + 1, "bias_step": bias_rec, "exact": True}


def split_channel_scales(model, allow_inexact: bool = False):
    """qonnx-style transformation: no per-channel scale left on any Quant node, computed exactly.

    Per-output-channel pow2 weight scales of a Conv/Gemm are split off (`_split_layer`): the layer keeps
    the allocation's B-bit integer codebook and an explicit per-channel scale node follows it. Other
    per-channel pow2 constants go onto one finer grid (`_onto_grid`). Non-pow2 scales cannot be computed
    exactly: they raise `OpqError` unless `allow_inexact`, which re-rounds the weights onto a pow2 grid
    INEXACT_EXTRA_BITS finer than the smallest scale (the simulation harness then measures the error).
    Returns `(model, changed, records)`, one record per rewritten Quant node.
    """
    inits = {i.name for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    records: list[dict[str, Any]] = []
    done: set[str] = set()
    # first the layers: a weight quantizer with per-output-channel pow2 scales is split off, and the
    # layer's bias quantizer with it (before the generic pass below could put the bias on a grid)
    for layer in [n for n in model.graph.node if n.op_type in ("Conv", "Gemm") and len(n.input) > 1]:
        wq = producers.get(layer.input[1])
        if wq is None or wq.op_type != "Quant" or wq.input[0] not in inits:
            continue
        scale = model.get_initializer(wq.input[1])
        exps = _pow2_exponents(scale) if scale is not None else None
        zeropt = model.get_initializer(wq.input[2])
        if exps is None or scale.size == 1 or exps.size != scale.shape[0] or zeropt is None or np.any(zeropt != 0):
            continue  # per-tensor, non-pow2 or unusual: the generic pass below decides
        records.append(_split_layer(model, layer, wq, exps, producers))
        done.add(wq.name)
        if len(layer.input) > 2 and layer.input[2] in producers:
            done.add(producers[layer.input[2]].name)
    for n in list(model.graph.node):
        if n.op_type != "Quant" or n.name in done:
            continue
        scale = model.get_initializer(n.input[1])
        zeropt = model.get_initializer(n.input[2])
        bw = model.get_initializer(n.input[3])
        if scale is None or zeropt is None or bw is None:
            raise OpqError(f"Quant node {n.name!r} has non-constant scale/zero-point/bit width; hls4ml needs constants "
                           "(re-export the run with `opq-hw compress`)")
        if np.any(zeropt != 0):
            raise OpqError(f"Quant node {n.name!r} has a non-zero zero point; only symmetric quantizers map to hls4ml exactly")
        exps = _pow2_exponents(scale)
        if n.input[0] not in inits:  # an activation quantizer
            if exps is None or len(set(exps.reshape(-1).tolist())) > 1:
                if not allow_inexact:
                    raise OpqError(f"activation quantizer {n.name!r} has a non-power-of-two or per-channel scale "
                                   f"{np.asarray(scale).reshape(-1)[:4].tolist()}: hls4ml fixed point cannot compute it exactly. "
                                   "Compress with scale_mode='pow2' (the hardware mode), or pass --allow-inexact to accept "
                                   "float rescaling and have the error measured")
            continue
        if scale.size == 1 and exps is not None:
            continue  # per-tensor pow2: hls4ml handles it exactly
        if exps is not None:
            rec = _onto_grid(model, n, exps)
        else:
            if not allow_inexact:
                raise OpqError(f"weight quantizer {n.name!r} has non-power-of-two scales (e.g. "
                               f"{np.asarray(scale).reshape(-1)[:3].tolist()}): its fixed-point hardware cannot be bit-exact. "
                               "Compress with scale_mode='pow2' (the hardware mode), or pass --allow-inexact to re-round "
                               "the weights onto a pow2 grid and have the error measured")
            wq = _quant_values(model, n)
            step = 2.0 ** (math.floor(math.log2(float(np.min(scale)))) - INEXACT_EXTRA_BITS)
            ints = np.round(wq / step)
            new_bits = max(2, int(math.ceil(math.log2(float(np.abs(ints).max()) + 1))) + 1)
            for a in n.attribute:
                if a.name == "narrow":
                    a.i = 0
            _set_quant(model, n, ints * step, step, new_bits)
            rec = {"node": n.name, "kind": "inexact", "bits_in": int(np.asarray(bw).item()), "bits_out": new_bits,
                   "exact": False, "max_abs_error": float(np.abs(ints * step - wq).max())}
        records.append(rec)
    if records:
        from qonnx.transformation.infer_shapes import InferShapes

        model = model.transform(InferShapes())
    return model, bool(records), records


def _channel_scales(model) -> dict[str, np.ndarray]:
    """The per-channel pow2 scale constants of the `Mul` nodes (`_split_layer`), by Mul node name."""
    out = {}
    for n in model.graph.node:
        v = model.get_initializer(n.input[1]) if n.op_type == "Mul" and len(n.input) == 2 else None
        if v is not None and v.size > 1 and _pow2_exponents(v) is not None:
            out[n.name] = v
    return out


def _channel_scale_vectors(model):
    """After the channels-last conversion: the per-channel constants of the `Mul` and `Add` nodes (the channel
    scales of `_split_layer`, the a and b of a BatchNorm kept as a channel affine) become 1-D (C,), which
    broadcasts over (H, W, C) in ONNX and is the shape hls4ml's ApplyAlpha expects."""
    for n in model.graph.node:
        if n.op_type not in ("Mul", "Add") or len(n.input) != 2:
            continue
        v = model.get_initializer(n.input[1])
        shape = model.get_tensor_shape(n.output[0])
        if v is not None and v.size > 1 and shape and v.size == shape[-1] and v.shape[-1] == v.size:
            model.set_initializer(n.input[1], v.reshape(-1))
    return model


def channel_scale_type(scales: np.ndarray) -> str:
    """The exact unsigned fixed-point type of a set of pow2 scales 2^e: ufixed<e_max - e_min + 1, e_max + 1>."""
    e = _pow2_exponents(scales).reshape(-1)
    return f"ufixed<{int(e.max() - e.min()) + 1},{int(e.max()) + 1}>"


def prepare_qonnx(onnx_path: str | os.PathLike, allow_inexact: bool = False):
    """The run's QONNX graph made ready for hls4ml: channel scales split off, cleaned, channels-last, MatMul."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
    from qonnx.transformation.gemm_to_matmul import GemmToMatMul
    from qonnx.util.cleanup import cleanup_model

    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise OpqError(f"{onnx_path} not found; the run directory must hold model.qonnx.onnx (re-create it with `opq-hw compress`)")
    model = ModelWrapper(str(onnx_path))
    model = cleanup_model(model)
    model, _, records = split_channel_scales(model, allow_inexact=allow_inexact)
    model = cleanup_model(model)
    with _avgpool_channels_last():
        model = model.transform(ConvertToChannelsLastAndClean())
        model = cleanup_model(_global_pool_channels_last(model))
    model = model.transform(GemmToMatMul())
    model = cleanup_model(_channel_scale_vectors(cleanup_model(model)))
    return model, records


@contextlib.contextmanager
def _avgpool_channels_last():
    """Let qonnx's channels-last conversion take AveragePool as it takes MaxPool.

    hls4ml's ONNX parser accepts (Max|Average)Pool only in qonnx's channels-last domain, and qonnx 0.x converts
    only MaxPool there. An average pool is the same window walk (kernel, strides, pads: the shape rules of the
    channels-last MaxPool wrapper), so while converting, an `AveragePool` op is registered in that domain and
    added to the op types the transformation converts (that addition is undone afterwards)."""
    import importlib

    from qonnx.custom_op.channels_last.max_pool import MaxPool_v1
    from qonnx.custom_op import registry

    cl = importlib.import_module("qonnx.transformation.channels_last")
    domain = "qonnx.custom_op.channels_last"

    class AveragePool_v1(MaxPool_v1):
        def get_nodeattr_types(self):
            return {**super().get_nodeattr_types(), "ceil_mode": ("i", False, 0),
                    "count_include_pad": ("i", False, 0), "auto_pad": ("s", False, "NOTSET")}

    ops = registry._OP_REGISTRY.setdefault(domain, {})
    if "AveragePool" not in ops:  # kept registered: later shape inference on the converted graph needs it
        ops["AveragePool"] = {v: AveragePool_v1 for v in (1, 7, 10, 11, 19, 22)}
    added_type = "AveragePool" not in cl._channelsLast_node_types
    if added_type:
        cl._channelsLast_node_types.append("AveragePool")
    try:
        yield
    finally:
        if added_type:
            cl._channelsLast_node_types.remove("AveragePool")


def _global_pool_channels_last(model):
    """Transpose(to channels-first) -> GlobalAveragePool -> Flatten  ==>  channels-last AveragePool over the whole map
    -> Flatten.

    qonnx's channels-last conversion leaves a global pooling on a channels-first tensor (it has no channels-last
    GlobalAveragePool), which hls4ml 1.3.0 mis-reads (its global-pooling parser takes the channels-first shape
    while the generated code pools channels-last data). An average pool whose window is the whole map computes the
    same means on the channels-last tensor itself; its (1, 1[, 1], C) result flattens to the same vector as
    (1, C, 1[, 1]). Only this exact pattern is rewritten; `refuse_unsupported` refuses what is left."""
    from onnx import helper

    graph = model.graph
    producers = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    perms = {3: [0, 2, 1], 4: [0, 3, 1, 2]}
    for n in list(graph.node):
        if n.op_type != "GlobalAveragePool" or n.domain != "":
            continue
        tr = producers.get(n.input[0])
        nxt = consumers.get(n.output[0], [])
        if tr is None or tr.op_type != "Transpose" or len(consumers.get(tr.output[0], [])) != 1:
            continue
        if len(nxt) != 1 or nxt[0].op_type != "Flatten" or int(_attr(nxt[0], "axis", 1)) != 1:
            continue
        shape = model.get_tensor_shape(tr.input[0])
        if shape is None or len(shape) not in perms or list(_attr(tr, "perm", [])) != perms[len(shape)]:
            continue
        spatial = [int(d) for d in shape[1:-1]]
        pool = helper.make_node("AveragePool", [tr.input[0]], [n.output[0]], name=n.name,
                                domain="qonnx.custom_op.channels_last", kernel_shape=spatial, strides=spatial,
                                pads=[0] * (2 * len(spatial)))
        idx = list(graph.node).index(n)
        graph.node.remove(n)
        graph.node.insert(idx, pool)
        graph.node.remove(tr)
        for vi in list(graph.value_info):
            if vi.name in (n.output[0], tr.output[0]):
                graph.value_info.remove(vi)
    return model


NOT_EXACT_ACTIVATIONS = {"LeakyRelu", "Tanh", "Sigmoid", "Elu", "Selu", "HardSigmoid", "Softmax", "LogSoftmax",
                         "ThresholdedRelu", "Softplus", "Softsign", "HardSwish", "PRelu"}


def _clip_bounds(model, n) -> tuple[float | None, float | None]:
    vals = []
    for k in (1, 2):
        v = model.get_initializer(n.input[k]) if len(n.input) > k and n.input[k] else None
        vals.append(None if v is None else float(np.asarray(v).reshape(-1)[0]))
    return vals[0], vals[1]


def _quant_max(model, q) -> float | None:
    """The largest value a per-tensor Quant node (zero point 0) outputs."""
    scale, zp, bits = (model.get_initializer(q.input[k]) for k in (1, 2, 3))
    if scale is None or zp is None or bits is None or np.size(scale) != 1 or np.any(np.asarray(zp) != 0):
        return None
    b, signed, narrow = int(np.asarray(bits).item()), int(_attr(q, "signed", 1)), int(_attr(q, "narrow", 0))
    top = 2 ** (b - 1) - 1 if signed else 2 ** b - 1 - narrow
    return float(np.asarray(scale).item()) * top


def _clip_why(model, n) -> str:
    lo, hi = _clip_bounds(model, n)
    users = [c for c in model.graph.node if n.output[0] in c.input]
    if lo != 0.0 or hi is None:
        return f"its bounds are ({lo}, {hi}), not (0, M)"
    qmax = [_quant_max(model, c) if c.op_type == "Quant" else None for c in users]
    if not users or any(q is None for q in qmax):
        return "it does not feed per-tensor activation quantizers only"
    return (f"M = {hi:g} is below the quantizer's largest value {max(qmax):g}, and a fixed-point type saturates only at "
            "its power-of-two range")


def clip_to_relu(model) -> list[str]:
    """Clip(0, M) (ReLU6 and the like) -> Relu where every consumer is a per-tensor Quant whose largest value is
    at most M: Quant saturates at or below M, so Quant(clip(x, 0, M)) = Quant(relu(x)) for every x, exactly.
    Returns the rewritten nodes' names; any other Clip is left for `refuse_unsupported` to name."""
    done = []
    for n in model.graph.node:
        if n.op_type != "Clip":
            continue
        lo, hi = _clip_bounds(model, n)
        users = [c for c in model.graph.node if n.output[0] in c.input]
        qmax = [_quant_max(model, c) if c.op_type == "Quant" else None for c in users]
        if lo == 0.0 and hi is not None and users and all(q is not None and q <= hi for q in qmax) \
                and n.output[0] not in {o.name for o in model.graph.output}:
            n.op_type = "Relu"
            del n.input[1:]
            done.append(n.name)
    return done


def refuse_unsupported(model, allow_inexact: bool = False) -> None:
    """Refuse, naming the node and its op, what hls4ml 1.3.0 cannot convert or would not compute exactly.

    Checked on the graph handed to hls4ml, before hls4ml sees it (its own errors are bare exceptions):
    - ops its ONNX parser has no handler for (e.g. Clip from ReLU6 / Hardtanh);
    - grouped / depthwise Conv (its ONNX Conv handler takes group=1 only);
    - a global pooling of a channels-first tensor (the Transpose the channels-last conversion leaves before it):
      its parser reads the channels-first shape but the generated code pools channels-last data, so its result
      is wrong (measured: 0 of 360 samples exact);
    - activations hls4ml computes with lookup tables or its own approximation (tanh, sigmoid, ...), and a leaky
      ReLU whose slope is not a power of two, unless `allow_inexact` (their error is then measured by the C
      simulation); a power-of-two slope is exact (alpha*x is a shift, typed by the analysis)."""
    from hls4ml.converters.onnx_to_hls import get_supported_onnx_layers

    supported = set(get_supported_onnx_layers()) | {"Dropout", "Identity"}
    producers = {o: n for n in model.graph.node for o in n.output}
    other = "; or build this run with --flow rtl (`opq-hw build RUN --flow rtl --board BOARD`)"
    for n in model.graph.node:
        where = f"node {n.name!r} (ONNX op {n.op_type})"
        if n.op_type == "Clip":
            raise OpqError(f"hls4ml cannot take {where}: hls4ml 1.3.0's ONNX front end has no Clip layer (ReLU6, "
                           "Hardtanh and clamps export as Clip); a Clip(0, M) is taken as a ReLU only where M is at "
                           f"least the largest value of the activation quantizer after it ({_clip_why(model, n)}). "
                           f"Replace it by ReLU in the float model{other}")
        if n.op_type not in supported:
            raise OpqError(f"hls4ml cannot take {where}: hls4ml 1.3.0's ONNX front end has no handler for "
                           f"{n.op_type}. Replace it in the float model{other}")
        if n.op_type == "Conv":
            group = _attr(n, "group", 1)
            if group and int(group) != 1:
                raise OpqError(f"hls4ml cannot take {where} with group={int(group)} (a grouped/depthwise "
                               "convolution): hls4ml 1.3.0's ONNX Conv handler takes group=1 only, and neither the "
                               "RTL nor the FINN flow takes one either. Use dense convolutions in the float model")
        if n.op_type in ("AveragePool", "MaxPool") and int(_attr(n, "ceil_mode", 0) or 0):
            raise OpqError(f"hls4ml cannot take {where} with ceil_mode=1: hls4ml 1.3.0 sizes pooling outputs by "
                           f"floor. Use ceil_mode=0 (or pad the map) in the float model{other}")
        if n.op_type in ("GlobalAveragePool", "GlobalMaxPool"):
            prod = producers.get(n.input[0])
            if prod is not None and prod.op_type == "Transpose":
                raise OpqError(f"hls4ml cannot compute {where} exactly: it pools a channels-first tensor, which "
                               "hls4ml 1.3.0's global-pooling parser reads as channels-last (its C simulation "
                               "gives wrong results). Replace the global pooling by an AveragePool over the "
                               f"whole map followed by Flatten in the float model{other}")
        if n.op_type == "LeakyRelu" and not allow_inexact:
            alpha = float(_attr(n, "alpha", 0.01))
            if alpha > 0 and math.frexp(alpha)[0] == 0.5:  # a power of two: alpha*x is exact (the analysis types it)
                continue
            raise OpqError(f"hls4ml cannot compute {where} bit-exactly: its slope {alpha:g} is not a power of two, so "
                           "alpha*x in hls4ml's fixed-point types rounds where the carrier's float does not. Use a "
                           "power-of-two slope (e.g. LeakyReLU(0.125)) or ReLU in the float model, or pass "
                           f"--allow-inexact to build it anyway and have the error measured{other}")
        if n.op_type in NOT_EXACT_ACTIVATIONS and not allow_inexact:
            raise OpqError(f"hls4ml cannot compute {where} bit-exactly: it evaluates {n.op_type} with its own "
                           "lookup table / fixed-point approximation, not the carrier's float function. Use ReLU "
                           "in the float model, or pass --allow-inexact to build it anyway and have the error "
                           f"measured by `opq-hw simulate --level csim`{other}")


def _input_precision(model) -> str | None:
    """The exact fixed-point type of the input quantizer (the first Quant on the graph input's path)."""
    consumers = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    t = model.graph.input[0].name
    for _ in range(8):  # walk through layout-only nodes (Transpose/Reshape) to the first Quant
        nodes = consumers.get(t, [])
        if len(nodes) != 1:
            return None
        n = nodes[0]
        if n.op_type == "Quant":
            exps = _pow2_exponents(model.get_initializer(n.input[1]))
            if exps is None or exps.size != 1:
                return None
            bits = int(np.asarray(model.get_initializer(n.input[3])).item())
            signed = int(_attr(n, "signed", 1))
            integer = bits + int(exps.item())
            return f"fixed<{bits},{integer}>" if signed else f"ufixed<{bits},{integer}>"
        if n.op_type not in ("Transpose", "Reshape", "Flatten", "Identity"):
            return None
        t = n.output[0]
    return None


# --------------------------------------------------------------------------- conversion


@contextlib.contextmanager
def _pool1d_fix():
    """Work around hls4ml 1.3.0's ONNX parser for 1-D pooling (MaxPool/AveragePool on (N, L, C)).

    Its handler reads n_filt / n_in from the channels-first positions of a channels-last shape and
    never sets pad_left / pad_right, so conversion fails ("Attribute pad_left ... not set"). While
    converting, the handler is wrapped to set them from the channels-last shape (L = shape[1],
    C = shape[2]) and the ONNX `pads`; the 2-D case passes through unchanged.
    """
    import importlib

    handlers = importlib.import_module("hls4ml.converters.onnx_to_hls").layer_handlers
    saved = {op: handlers.get(op) for op in ("MaxPool", "AveragePool")}

    def wrap(orig):
        def handler(node, input_names, input_shapes, graph):
            layer = orig(node, input_names, input_shapes, graph)
            if len(input_shapes[0]) == 3:
                pads = list(layer.get("pads") or [0, 0])
                dil = (layer.get("dilations") or [1])[0]
                layer["n_in"], layer["n_filt"] = int(input_shapes[0][1]), int(input_shapes[0][2])
                layer["pad_left"], layer["pad_right"] = int(pads[0]), int(pads[-1])
                k, st = layer["pool_width"], layer["stride_width"]
                layer["n_out"] = int((layer["n_in"] + layer["pad_left"] + layer["pad_right"] - ((k - 1) * dil + 1)) // st + 1)
            return layer

        return handler

    for op, orig in saved.items():
        if orig is not None:
            handlers[op] = wrap(orig)
    try:
        yield
    finally:
        for op, orig in saved.items():
            if orig is not None:
                handlers[op] = orig


def _weight_layers(hm) -> list:
    return [layer for layer in hm.get_layers() if "weight" in layer.weights]


def convert(run, out_dir: str | os.PathLike, *, backend: str = "Vitis", io: str = "parallel", part: str | None = None,
            clock_period: float | None = None, reuse: dict[str, int] | None = None, allow_inexact: bool = False,
            strategy: str = "latency", graph_out: str | os.PathLike | None = None, set_types: bool = True,
            tail: str | None = None):
    """An hls4ml ModelGraph for the run (not yet written), every type set from the exact analysis and checked.

    Raises `OpqError` naming the layers and types that would round or saturate (unless `allow_inexact`).
    `graph_out`: a folder that receives the QONNX graph handed to hls4ml and the config (`CONVERT_CONFIG`).
    `set_types=False` keeps hls4ml's own types (one conversion) and only checks them: what the flow did before
    the analysis existed, kept to show what the check catches.
    `tail="hw"`: the run's Softmax/Sigmoid head is appended and computed by hls4ml's tables, every table type
    stated (`opq_hw.tail.TailTables`); `info["tail"]` records it with the tolerance it is compared with.
    Returns `(hls_model, info)`."""
    import hls4ml

    from .hls4ml_types import Fixed, analyse, check, describe

    backend, io_type = _backend(backend), _io(io)
    if run.allocation.scale_mode != "pow2" and not allow_inexact:
        raise OpqError(f"run {run.path.name!r} uses {run.allocation.scale_mode!r} scales: fixed-point hardware cannot "
                       "compute it bit-exactly. Compress with scale_mode='pow2' (the hardware mode), or pass "
                       "--allow-inexact to build it anyway and have the error measured")
    model, records = prepare_qonnx(run.path / "model.qonnx.onnx", allow_inexact=allow_inexact)
    clip_to_relu(model)
    refuse_unsupported(model, allow_inexact=allow_inexact)
    head = _append_head(run, model) if check_tail_option(tail) else None
    chatter = io_mod.StringIO()
    try:
        with contextlib.redirect_stdout(chatter), _pool1d_fix():
            cfg = hls4ml.utils.config.config_from_onnx_model(model, granularity="name", backend=backend,
                                                              default_precision="fixed<16,6>", default_reuse_factor=1)
    except Exception as e:
        raise OpqError(f"hls4ml could not parse the run's QONNX graph ({type(e).__name__}: {str(e)[:300]}); node "
                       f"types present: {sorted({n.op_type for n in model.graph.node})}. Layers hls4ml supports "
                       "through QONNX: Conv, MatMul/Gemm, Relu, MaxPool, AveragePool, Flatten/Reshape, Quant; or "
                       "build this run with --flow rtl") from e
    in_name = model.graph.input[0].name
    in_prec = _input_precision(model)
    if in_prec is not None:
        cfg["LayerName"].setdefault(in_name, {}).setdefault("Precision", {})["result"] = in_prec
    for mul, scales in _channel_scales(model).items():  # the split-off channel scales: an exact type
        cfg["LayerName"].setdefault(mul, {}).setdefault("Precision", {})["scale"] = channel_scale_type(scales)
    if head is not None:
        cfg["LayerName"].setdefault(head[0], {}).update(head[1].config())
    kwargs: dict[str, Any] = dict(output_dir=str(out_dir), project_name=PROJECT, backend=backend, io_type=io_type,
                                  hls_config=cfg)
    if part:
        kwargs["part"] = part
    if clock_period:
        kwargs["clock_period"] = clock_period
    weight_nodes = [n for n in model.graph.node if n.op_type in ("Conv", "MatMul", "Gemm")]
    skipped = [s.name for s in run.specs if run.allocation.layer(s.name).skipped]
    if skipped and not allow_inexact:
        raise OpqError(f"layers {skipped} were skipped by the allocation and keep float weights: hls4ml would store them "
                       "in a default fixed-point type, not bit-exactly. Allocate every layer, or pass --allow-inexact")
    names = [s.name for s in run.specs]
    producers = {o: n for n in model.graph.node for o in n.output}
    if len(weight_nodes) == len(names):
        names = _match_layers(model, producers, weight_nodes, run, names)
    if strategy not in ("latency", "resource"):
        raise OpqError(f"unknown hls4ml strategy {strategy!r}; use 'latency' or 'resource' (--strategy)")
    cfg["Model"]["Strategy"] = strategy.capitalize()
    if len(weight_nodes) != len(names):
        raise OpqError(f"the QONNX graph has {len(weight_nodes)} conv/linear nodes but the allocation {len(names)} layers; "
                       "re-export the run")
    if reuse:
        for node, name in zip(weight_nodes, names):
            cfg["LayerName"].setdefault(node.name, {})["ReuseFactor"] = int(reuse[name])
    def _convert():
        try:
            with contextlib.redirect_stdout(chatter), _pool1d_fix(), warnings.catch_warnings():
                # hls4ml prints its topology; keep its warnings but the one for the head's stated table types
                warnings.filterwarnings("ignore", message="Overriding attribute '\\w+' of layer 'head_")
                hm = hls4ml.converters.convert_from_onnx_model(model, **kwargs)
        except OpqError:
            raise
        except Exception as e:
            kinds = sorted({n.op_type for n in model.graph.node})
            raise OpqError(f"hls4ml could not convert the run's QONNX graph ({type(e).__name__}: {str(e)[:300]}); "
                           f"node types present: {kinds}. Layers hls4ml supports through QONNX: Conv, MatMul/Gemm, Relu, "
                           "MaxPool, Flatten/Reshape, Quant") from e
        layers = _weight_layers(hm)
        if len(layers) != len(names):
            raise OpqError(f"hls4ml produced {len(layers)} weight layers but the allocation has {len(names)}: "
                           f"{[lay.name for lay in layers]} vs {names}")
        return hm, layers

    # pass 1: hls4ml's graph with its own types. The exact analysis of that graph gives every type, which the
    # next pass sets by layer name (each type its own name). Explicit types can change what hls4ml merges (a
    # linear quantizer is folded into the layer before it only while that layer's type is open), so the
    # analysis is repeated on the new graph until its types all pass the check (at most MAX_TYPE_PASSES).
    qbits_of = [_weight_bits(model, producers, node) for node in weight_nodes]
    in_fixed = Fixed.parse(in_prec) if in_prec else None
    quantizers = activation_quantizers(model)

    def _analysed():
        hm, layers = _convert()
        bits = {lay.name: b for lay, b in zip(layers, qbits_of) if b is not None}
        return hm, layers, analyse(hm, in_fixed, quantizers, bits, tail=dict([head]) if head else None)

    handed = model.model.SerializeToString()  # the graph exactly as hls4ml receives it
    hm, layers, analysis = _analysed()
    for _ in range(MAX_TYPE_PASSES - 1 if set_types else 0):
        for lname, precs in analysis.config_precisions().items():
            entry = cfg["LayerName"].setdefault(lname, {})
            if not isinstance(entry.get("Precision"), dict):
                entry["Precision"] = {}
            entry["Precision"].update(precs)
        hm, layers, analysis = _analysed()
        if not check(hm, analysis):
            break
    problems = check(hm, analysis)
    if problems and not allow_inexact:
        raise OpqError("the hls4ml project would not compute the run exactly; these types would round or saturate "
                       f"(or cannot be analysed):\n  {describe(problems)}\nPass --allow-inexact to build it anyway "
                       "and have the error measured by `opq-hw simulate --level csim`")
    per_layer = []
    order = list(hm.get_layers())
    for lay, name, node, qbits in zip(layers, names, weight_nodes, qbits_of):
        after = order[order.index(lay) + 1] if order.index(lay) + 1 < len(order) else None
        alpha = after if after is not None and after.class_name == "ApplyAlpha" else None
        la = run.allocation.layer(name)
        w = lay.weights["weight"]
        prec = w.type.precision
        data = np.asarray(w.data)
        acc = lay.get_attr("accum_t")
        res = lay.get_output_variable().type.precision
        per_layer.append({
            "layer": name, "hls_layer": lay.name, "class": lay.class_name, "alloc_bits": la.bits,
            "quant_bits": qbits,
            "weight_precision": str(prec.definition_cpp()) if hasattr(prec, "definition_cpp") else str(prec),
            "channel_scale_layer": alpha.name if alpha is not None else None,
            "channel_scale_precision": (alpha.get_attr("scale_t").precision.definition_cpp()
                                        if alpha is not None else None),
            "weight_width": int(prec.width), "weight_file": f"firmware/weights/{w.name}.txt",
            "n_weights": int(data.size), "n_zero": int(np.sum(data == 0)),
            "alloc_n_pruned": int(la.n_weights - la.n_nonzero),
            "accum_precision": str(acc.precision.definition_cpp()) if acc is not None and hasattr(acc, "precision") else None,
            "result_precision": str(res.definition_cpp()) if hasattr(res, "definition_cpp") else str(res),
            "reuse_factor": int(lay.get_attr("reuse_factor", 1)),
        })
    n_types = sum(len(lay.types) for lay in hm.get_layers())
    info = {"backend": backend, "io_type": io_type, "input_precision": in_prec, "rewritten_quant_nodes": records,
            "layers": per_layer, "exact": all(r["exact"] for r in records) and run.allocation.scale_mode == "pow2"
            and not skipped and not problems,
            "type_check": {"types_checked": n_types, "problems": problems,
                           "rule": "every type read back from the converted model holds its exact value set "
                                   "(opq_hw.flows.hls4ml_types)"},
            "types": analysis.table(),
            "tail": head[1].record() if head else _host_tail(run),
            "hls4ml_warnings": [ln for ln in chatter.getvalue().splitlines() if "WARN" in ln.upper()]}
    hm.opq_type_analysis = analysis  # for the check of the written project (`build`)
    if graph_out is not None:  # what a user hands to stock hls4ml: the graph and the full config
        graph_out = Path(graph_out)
        write_bytes(graph_out / QONNX_FOR_HLS4ML, handed)
        conv = {"hls_config": cfg, "backend": backend, "io_type": io_type, "project_name": PROJECT}
        conv.update({k: kwargs[k] for k in ("part", "clock_period") if k in kwargs})
        write_json(graph_out / CONVERT_CONFIG, conv)
    return hm, info


def _append_head(run, model):
    """`--tail hw`: the run's head (Softmax over the outputs, or Sigmoid) appended to the graph handed to hls4ml.
    Returns (its node name, its TailTables)."""
    from onnx import helper

    op = hw_head(run)
    g = model.graph
    out = g.output[0].name
    prod = next(n for n in g.node if out in n.output)
    pre = out + "_before_head"
    prod.output[list(prod.output).index(out)] = pre
    vi = copy.deepcopy(g.output[0])
    vi.name = pre
    g.value_info.append(vi)
    name = f"head_{op}"
    g.node.append(helper.make_node("Softmax" if op == "softmax" else "Sigmoid", [pre], [out], name=name,
                                   **({"axis": -1} if op == "softmax" else {})))
    n_out = int(np.prod([d.dim_value for d in g.output[0].type.tensor_type.shape.dim[1:]]))
    return name, TailTables(op, n_out)


def _host_tail(run) -> dict[str, Any] | None:
    op = run_tail(run)
    return None if op is None else {"op": op, "where": "host", "note": f"tail: {op} on the host (the hardware computes "
                                                                        f"the pre-{op} outputs; compared bit-exactly)"}


def _weight_quant(producers, node):
    """The Quant node feeding a conv/matmul node's weights, if any."""
    wq = producers.get(node.input[1]) if len(node.input) > 1 else None
    return wq if wq is not None and wq.op_type == "Quant" else None


def _int_weights(model, producers, node) -> np.ndarray | None:
    """The integer weights of a conv/matmul node (its weight Quant's input over the scale), if quantized."""
    wq = _weight_quant(producers, node)
    if wq is None:
        return None
    w, s = model.get_initializer(wq.input[0]), model.get_initializer(wq.input[1])
    if w is None or s is None:
        return None
    try:
        return np.round(np.asarray(w, np.float64) / np.asarray(s, np.float64))
    except ValueError:
        return None


def _match_layers(model, producers, weight_nodes, run, names: list[str]) -> list[str]:
    """The allocation's layer name of each conv/matmul node, in graph order, identified by its integer weights
    (never by position alone: a graph may list a residual block's layers in another order than the run's
    specs); where the weights identify no single layer, the specs' order is kept if every size agrees."""
    ints = {n: run.int_weights(n) for n in names if not run.allocation.layer(n).skipped}

    def same(q, iw):  # the same integer values (hls4ml's graph may be channels-last: compare them as multisets)
        return q is not None and iw is not None and q.size == iw.size and np.array_equal(np.sort(q, None), np.sort(iw, None))

    out, free = [], list(names)
    for node in weight_nodes:
        q = _int_weights(model, producers, node)
        hits = [n for n in free if same(q, ints.get(n))]
        if len(hits) != 1:
            break
        out.append(hits[0])
        free.remove(hits[0])
    else:
        return out
    shapes = [tuple(np.shape(model.get_initializer(wq.input[0] if wq is not None else n.input[1])))
              for n, wq in ((n, _weight_quant(producers, n)) for n in weight_nodes)]
    if all(sh and int(np.prod(sh)) == run.specs[i].n_weights for i, sh in enumerate(shapes)):
        return names
    raise OpqError("cannot tell which allocation layer each conv/matmul node of the run's QONNX graph computes "
                   f"(graph weight shapes {shapes}, allocation layers {names}); re-export the run with `opq-hw compress`")


def _weight_bits(model, producers, node) -> int | None:
    """The bit width of the Quant node feeding a conv/matmul node's weights, if any."""
    wq = _weight_quant(producers, node)
    if wq is None:
        return None
    return int(np.asarray(model.get_initializer(wq.input[3])).item())


def activation_quantizers(model) -> list:
    """The exact fixed-point types of the graph's activation Quant nodes (per-tensor pow2 scale, zero point 0):
    fixed<B, B + e> (ufixed when unsigned), convergent rounding for ROUND, saturating (symmetric when narrow)."""
    from .hls4ml_types import Fixed

    inits = {i.name for i in model.graph.initializer}
    out = []
    for n in model.graph.node:
        if n.op_type != "Quant" or n.input[0] in inits:
            continue
        scale, bits = model.get_initializer(n.input[1]), model.get_initializer(n.input[3])
        exps = _pow2_exponents(scale) if scale is not None else None
        if exps is None or exps.size != 1 or bits is None:
            continue
        b, signed, narrow = int(np.asarray(bits).item()), bool(_attr(n, "signed", 1)), bool(_attr(n, "narrow", 0))
        mode = str(_attr(n, "rounding_mode", "ROUND")).upper()
        rnd = {"ROUND": "RND_CONV", "FLOOR": "TRN", "ROUND_TO_ZERO": "TRN_ZERO"}.get(mode, "?")  # "?": matches no type
        out.append(Fixed(b, b + int(exps.item()), signed, rnd, "SAT_SYM" if narrow and signed else "SAT"))
    return out


# --------------------------------------------------------------------------- synthesis commands


def synth_command(backend: str) -> tuple[str, str]:
    """(tool binary, command line run inside the project folder) for synthesis (C-synth, no csim)."""
    backend = _backend(backend)
    if backend == "Vitis":
        return "vitis-run", "vitis-run --tcl build_prj.tcl --mode hls"
    return "vivado_hls", ('vivado_hls -f build_prj.tcl "reset=1 csim=0 synth=1 cosim=0 validation=0 export=0 '
                          'vsynth=0 fifo_opt=0"')


_BUILD_OPT_TCL = ("array set opt {\n    reset      1\n    csim       0\n    synth      1\n    cosim      0\n"
                  "    validation 0\n    export     0\n    vsynth     0\n    fifo_opt   0\n}\n")


def _fix_paths(root: Path, old: str, new: str) -> None:
    """hls4ml writes its output dir into a few text files; after the atomic rename, point them at the final path."""
    for p in root.rglob("*"):
        if p.is_file() and p.suffix in (".yml", ".tcl", ".json", ".txt", ".sh") and p.stat().st_size < 2_000_000:
            try:
                s = p.read_text()
            except UnicodeDecodeError:
                continue
            if old in s:
                write_bytes(p, s.replace(old, new).encode())


class _Ctx:
    """What the build's steps share (hls4ml's in-memory model `hm` included: this build does not resume)."""

    def __init__(self, run, o, binfo, rf, rf_source):
        self.run, self.o, self.binfo, self.rf, self.rf_source = run, o, binfo, rf, rf_source
        self.state: dict[str, Any] = {}
        self.hm = self.info = self.record = None


def _step_convert(c: _Ctx) -> None:
    o = c.o
    c.hm, c.info = convert(c.run, c.out, backend=o.backend, io=o.io, part=c.binfo["part"],
                           clock_period=c.binfo["clock_period_ns"], reuse=c.rf, allow_inexact=o.allow_inexact,
                           strategy=o.strategy, graph_out=c.out, tail=o.tail)


def _step_write(c: _Ctx) -> None:
    with contextlib.redirect_stdout(io_mod.StringIO()):
        c.hm.write()


def _step_check(c: _Ctx) -> None:
    _check_written(c.out, c.hm, c.info, c.o.allow_inexact)


def _step_project(c: _Ctx) -> None:
    """The build options file, paths of the final location, the build record."""
    final = c.run.path / "build" / FLOW
    write_bytes(c.out / "build_opt.tcl", _BUILD_OPT_TCL.encode())
    _fix_paths(c.out, str(c.out), str(final))
    tool, cmd = synth_command(c.info["backend"])
    c.record = {"flow": FLOW, "run": c.run.path.name, **c.info, **c.binfo, "reuse_source": c.rf_source,
                "qonnx_for_hls4ml": QONNX_FOR_HLS4ML, "convert_config": CONVERT_CONFIG,
                "project": PROJECT, "synth_tool": tool, "synth_command": f"cd build/{FLOW} && {cmd}",  # from the run directory
                "convert_s": None}


def _finish(c: _Ctx) -> None:
    c.record["convert_s"] = round(sum(r["seconds"] for r in c.records), 3)
    c.record["project_bytes"] = sum(p.stat().st_size for p in c.out.rglob("*") if p.is_file())
    c.record["project_files"] = sum(1 for p in c.out.rglob("*") if p.is_file())
    write_json(c.out / BUILD_INFO, c.record)


STEPS = [Step("convert", _step_convert), Step("write", _step_write), Step("check", _step_check),
         Step("project", _step_project)]


def _step_synth(c: _Ctx) -> None:
    import subprocess

    final = c.run.path / "build" / FLOW
    tool, cmd = synth_command(c.info["backend"])
    if shutil.which(tool) is None:
        raise OpqError(f"{tool} is not on PATH, so synthesis cannot run here. The project is written; on a machine "
                       f"with {c.info['backend']} HLS run:\n  cd {final} && {cmd}\nthen copy build/{FLOW}/ back into the run and "
                       f"run `opq-hw report {c.run.path}`")
    t1 = time.perf_counter()
    with open(final / "synth_stdout.log", "w") as out:
        proc = subprocess.run(cmd, shell=True, cwd=final, stdout=out, stderr=subprocess.STDOUT)
    c.record["synth_s"] = round(time.perf_counter() - t1, 1)
    c.record["synth_returncode"] = proc.returncode
    write_json(final / BUILD_INFO, c.record)
    record_build(c.run.path, f"build/{FLOW}")  # the tool's outputs are this build's: hashes into the manifest
    if proc.returncode != 0:
        raise OpqError(f"{tool} failed (exit {proc.returncode}); see {final / 'synth_stdout.log'}")
    c.record["report"] = report(c.run.path)


def build(run_dir: str | os.PathLike, board: str | None = None, log=print, **options) -> dict[str, Any]:
    """Write the hls4ml project for a run into `RUN/build/hls4ml/` (atomically) and describe it.

    options: `opq_hw.flows.Hls4mlOptions`. `synth=True` runs the vendor HLS tool when it is on PATH;
    when it is not, the project is still written and an `OpqError` gives the exact command to run on
    a machine that has the tool. The steps (`STEPS`, then `synth`) are timed into the manifest; this
    build does not resume (the converted hls4ml model lives in memory; conversion takes seconds).
    Returns the build record (also written to `build/hls4ml/opq_hls4ml.json`).
    """
    from ..data import require_run_data
    from ..run import load_run
    from . import FLOWS

    o = FLOWS["hls4ml"].parse_options(options)
    require_run_data(run_dir, "build --flow hls4ml")  # uncalibrated activations make no hardware
    run = load_run(run_dir)
    binfo = _board_info(board, o.part, o.clock_period)
    rf, rf_source = _reuse_factors(run, board, o.reuse, o.strategy)
    final = run.path / "build" / FLOW
    c = _Ctx(run, o, binfo, rf, rf_source)
    _, records = run_build(run.path, FLOW, STEPS, c, log=log, after=_finish)  # swapped in only when complete
    info, record = c.info, c.record
    log(f"hls4ml project ({info['backend']}, {info['io_type']}, part {binfo['part']}) written to {final}")
    for r in info["layers"]:
        log(f"  {r['layer']:<12} {r['weight_precision']:<24} alloc {r['alloc_bits']} bits, channel scale "
            f"{r['channel_scale_precision'] or '-'}, "
            f"zeros {r['n_zero']}/{r['n_weights']}, reuse {r['reuse_factor']}")
    tc = record["type_check"]
    log(f"  types: {tc['types_checked']} read back and checked against the exact analysis: "
        + ("none rounds or saturates" if not (tc["problems"] or tc.get("written_project_problems"))
           else f"{len(tc['problems']) + len(tc.get('written_project_problems', []))} problems (allow_inexact)"))
    if info.get("tail"):
        t = info["tail"]
        log(f"  tail: {t['op']} in hardware ({t['implementation']}, {t['table_size']} entries), compared within "
            f"tolerance {t['tolerance']:.3g}" if t["where"] == "hardware" else f"  {t['note']}")
    log(f"  for stock hls4ml: {QONNX_FOR_HLS4ML} + {CONVERT_CONFIG} (see the README)")
    if o.synth:
        records += run_steps([Step("synth", _step_synth)], c)
        record_steps(run.path, f"build/{FLOW}", records)
    return record


def _check_written(prj: Path, hm, info: dict[str, Any], allow_inexact: bool) -> None:
    """The type check once more on the written project (typedefs and weight files); raises unless allow_inexact."""
    from .hls4ml_types import check_written, describe

    problems = check_written(prj, hm, hm.opq_type_analysis)
    info["type_check"]["written_project_problems"] = problems
    if problems:
        info["exact"] = False
        if not allow_inexact:
            raise OpqError("the written hls4ml project would not compute the run exactly:\n  "
                           f"{describe(problems)}\nPass --allow-inexact to write it anyway")


def report(run_dir: str | os.PathLike, write: bool = True) -> dict[str, Any]:
    """Synthesis results of `build/hls4ml/` (read with `hls4ml.report`) next to the cost model's estimate.

    Reads the HLS C-synthesis report (`myproject_prj/solution1/syn/report/myproject_csynth.xml`)
    and, when present, the Vivado post-synthesis utilisation (`vivado_synth.rpt`, preferred as the
    measurement). Writes `build/hls4ml/resources.json` (the measurement `opq-hw report` compares
    with `cost.json`) and `reports/hls4ml_synth.json` (both side by side).
    """
    run_dir = Path(run_dir)
    prj = run_dir / "build" / FLOW
    if not (prj / "project.tcl").is_file():
        raise OpqError(f"no hls4ml project in {prj}; run `opq-hw build {run_dir} --flow hls4ml --board BOARD` first")
    from hls4ml.report import parse_vivado_report

    with contextlib.redirect_stdout(io_mod.StringIO()):
        rep = parse_vivado_report(str(prj)) or {}
    csynth = rep.get("CSynthesisReport") or {}
    vsynth = rep.get("VivadoSynthReport") or {}
    if not csynth and not vsynth:
        info = read_json(prj / BUILD_INFO) if (prj / BUILD_INFO).is_file() else {}
        cmd = info.get("synth_command", "the synthesis command in build/hls4ml/opq_hls4ml.json")
        raise OpqError(f"no synthesis report in {prj} (expected myproject_prj/solution1/syn/report/myproject_csynth.xml). "
                       f"Run `opq-hw build {run_dir} --flow hls4ml --board BOARD --synth` where the vendor tool is installed, "
                       f"or run `{cmd}` there (from the run directory) and copy build/hls4ml/ back")
    keys = {"LUT": "LUT", "FF": "FF", "DSP": "DSP", "DSP48E": "DSP", "BRAM_18K": "BRAM18", "URAM": "URAM"}

    def pick(d):
        return {ours: _num(d[k]) for k, ours in keys.items() if k in d}

    hls_est, post_synth = pick(csynth), pick(vsynth)
    measured = post_synth or hls_est
    source = "Vivado post-synthesis utilisation (vivado_synth.rpt)" if post_synth else "HLS C-synthesis estimate (csynth.xml)"
    timing = {k: _num(csynth[k]) for k in ("TargetClockPeriod", "EstimatedClockPeriod", "BestLatency", "WorstLatency",
                                            "IntervalMin", "IntervalMax") if k in csynth}
    estimated = None
    cost_path = run_dir / "cost.json"
    if cost_path.is_file():
        cost = read_json(cost_path)
        totals = cost.get("totals", {})
        estimated = {r: totals.get(r) for r in ("LUT", "FF", "DSP", "BRAM18", "URAM")}
        estimated["arch"], estimated["board"] = cost.get("arch"), cost.get("board")
    rows = []
    for r in ("LUT", "FF", "DSP", "BRAM18", "URAM"):
        m = measured.get(r)
        e = estimated.get(r) if estimated else None
        rows.append({"resource": r, "estimated": e, "hls_csynth": hls_est.get(r), "post_synth": post_synth.get(r),
                     "rel_error": (round((e - m) / m, 4) if (isinstance(e, (int, float)) and isinstance(m, (int, float)) and m)
                                   else None)})
    out = {"flow": FLOW, "source": source, "measured": measured, "hls_csynth": hls_est, "post_synth": post_synth or None,
           "estimated": estimated, "timing": timing, "side_by_side": rows,
           "available": {k[len("Available"):]: _num(v) for k, v in csynth.items() if k.startswith("Available")}}
    if write:
        write_outputs(run_dir, {f"build/{FLOW}/resources.json": dumps({**measured, "source": f"hls4ml {source}"}).encode(),
                                "reports/hls4ml_synth.json": dumps(out).encode()})
    return out


def _num(v):
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v
    return int(f) if f.is_integer() else f


# --------------------------------------------------------------------------- C simulation


def _predict_layout(hm, x_q: np.ndarray) -> np.ndarray:
    """PyTorch layout (N,C,H,W / N,C,L / N,F) -> what the compiled model's input expects."""
    shape = tuple(hm.get_input_variables()[0].shape)
    per = x_q.shape[1:]
    if x_q.ndim == 2 or shape == tuple(per):
        x = x_q
    elif x_q.ndim == 4 and shape == (per[1], per[2], per[0]):
        x = x_q.transpose(0, 2, 3, 1)
    elif x_q.ndim == 3 and shape == (per[1], per[0]):
        x = x_q.transpose(0, 2, 1)
    else:
        raise OpqError(f"input of shape {per} (PyTorch layout) does not fit the hls4ml model input {shape}")
    return np.ascontiguousarray(x.reshape(len(x), -1), dtype=np.float32)


def compile_csim(run, out_dir: str | os.PathLike, *, backend: str = "Vitis", io: str = "parallel",
                 allow_inexact: bool = False, board: str | None = None, reuse: int | dict[str, int] | None = None,
                 strategy: str = "latency", tail: str | None = None):
    """Write and compile (g++) the hls4ml C simulation of a run into `out_dir`. Returns `(hls_model, info)`.

    With `board` (or `reuse`) the reuse factors are the ones `build` would use (cost model)."""
    t0 = time.perf_counter()
    rf, rf_source = _reuse_factors(run, board, reuse, strategy) if (board or reuse) else (None, "1 (default)")
    hm, info = convert(run, out_dir, backend=backend, io=io, allow_inexact=allow_inexact, reuse=rf, strategy=strategy,
                       tail=tail)
    info["reuse_source"] = rf_source
    t1 = time.perf_counter()
    if shutil.which("g++") is None:
        raise OpqError("g++ is not on PATH; the hls4ml C simulation needs it (Debian: apt-get install g++)")
    try:
        with contextlib.redirect_stdout(io_mod.StringIO()):
            hm.compile()
    except Exception as e:
        raise OpqError(f"compiling the hls4ml C simulation failed ({type(e).__name__}: {str(e)[:300]}); "
                       f"the project is in {out_dir}") from e
    info["convert_s"] = round(t1 - t0, 3)
    info["compile_s"] = round(time.perf_counter() - t1, 3)
    return hm, info


def predict_csim(hm, x_q: np.ndarray, n_out: int | None = None) -> np.ndarray:
    """Run the compiled C simulation on inputs on the input grid, PyTorch layout; float32 (N, n_out)."""
    x = _predict_layout(hm, np.asarray(x_q, dtype=np.float32))
    y = np.asarray(hm.predict(x), dtype=np.float32)
    return y.reshape(len(x_q), -1) if n_out is None else y.reshape(len(x_q), n_out)


def simulate_csim(run, x_q: np.ndarray, backend: str = "Vitis", io: str = "parallel", allow_inexact: bool = False,
                  board: str | None = None, reuse: int | dict[str, int] | None = None, strategy: str = "latency",
                  keep: str | os.PathLike | None = None, info: dict | None = None, tail: str | None = None) -> np.ndarray:
    """Simulation level "csim": hls4ml's compiled C simulation (g++, no vendor tool).

    Compiles in a temporary folder (or `keep`); `info`, when given, receives compile timings and
    the per-layer precision record. `tail="hw"`: the run's head in hardware; the output is the head's
    (`info["tail"]` holds its tolerance, which `simulate` compares with).
    """
    tmp = None
    out_dir = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="opq-hls4ml-csim-"))
    if not keep:
        tmp = out_dir
    try:
        hm, cinfo = compile_csim(run, out_dir, backend=backend, io=io, allow_inexact=allow_inexact, board=board,
                                 reuse=reuse, strategy=strategy, tail=tail)
        t0 = time.perf_counter()
        y = predict_csim(hm, x_q)
        cinfo["predict_s"] = round(time.perf_counter() - t0, 4)
        if info is not None:
            info.update(cinfo)
        return y
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
