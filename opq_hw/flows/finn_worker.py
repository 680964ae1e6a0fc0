"""FINN steps for opq-hw, run by `.venv-finn/bin/python finn_worker.py REQUEST.json`.

This file runs in the FINN environment only (see scripts/make_finn_env.sh). It imports finn,
qonnx, onnx and numpy, never opq_hw (whose modules load torch and our own pins): the flow
(`opq_hw/flows/finn_flow.py`) hands a JSON request over and reads a JSON result back.

The request (all paths absolute):
  model            QONNX model of the run (model.qonnx.onnx)
  out_dir          folder for the intermediate models and FINN's estimate reports
  result           where to write the result JSON
  fpga_part        FPGA part for layer specialisation and resource estimates
  clk_ns           clock period (ns), for FINN's throughput estimate
  layer_names      our conv/linear layer names, in network order (mapped onto the MVAUs in order)
  specialize_config  FINN ApplyConfig dict applied before SpecializeLayers (preferred_impl_style)
  folding_config   FINN ApplyConfig dict applied after SpecializeLayers (PE, SIMD, resType, ...)
  target_cycles    initiation interval the MVAU folding was chosen for; the other streaming
                   nodes (sliding windows, pools, thresholds) are folded to meet it too
  verify_input / verify_expected   .npy files: quantized inputs and the Brevitas logits
  verify_n         number of samples to execute (null = all)

The steps mirror FINN's builder (`finn.builder.build_dataflow_steps`), whose module cannot be
imported without Vivado, by calling the same transformations, plus two of ours:
  * fold_bias_quant: constant-folds the Quant nodes of Conv/Gemm biases (Brevitas Int16Bias with
    per-channel scales), which qonnx's ExtractBiasFromConv cannot reshape;
  * round_half_even: Brevitas/QONNX quantizers round half to even, FINN's MultiThreshold counts
    `x >= t`, i.e. rounds ties up. With power-of-two scales ties do happen (the accumulator lands
    exactly between two output levels), so each threshold whose crossing level is odd is made
    strict: +1 on integer inputs, the next float32 on float inputs. Bit-exactness is checked by
    executing the graph, not assumed.
"""
from __future__ import annotations

import json
import math
import sys
import time
import traceback
from functools import partial
from pathlib import Path

import numpy as np

FINN_LAYER_OPS = ("MVAU", "VVAU")


def _log(msg: str) -> None:
    print(f"[finn_worker] {msg}", flush=True)


def _imports():
    from finn.util.settings import initialize_dummy_settings

    initialize_dummy_settings()


def fold_bias_quant(model):
    """Replace each all-constant Quant node that feeds only the bias input of Conv/Gemm by its value."""
    from qonnx.custom_op.registry import getCustomOp

    g = model.graph
    n_fold = 0
    for n in list(g.node):
        if n.op_type != "Quant" or any(model.get_initializer(i) is None for i in n.input):
            continue
        cons = model.find_consumers(n.output[0]) or []
        if not cons or not all(c.op_type in ("Conv", "Gemm") and list(c.input).index(n.output[0]) == 2 for c in cons):
            continue
        ctx = {i: model.get_initializer(i) for i in n.input}
        ctx[n.output[0]] = None
        getCustomOp(n).execute_node(ctx, g)
        model.set_initializer(n.output[0], np.asarray(ctx[n.output[0]], dtype=np.float32))
        g.node.remove(n)
        n_fold += 1
    return model, n_fold


def round_half_even(model):
    """Make every MultiThreshold round ties to even, as the QONNX/Brevitas quantizers it replaced."""
    from qonnx.util.basic import get_by_name

    n_fix = 0
    for n in model.graph.node:
        if n.op_type != "MultiThreshold":
            continue
        t = model.get_initializer(n.input[1])
        if t is None:
            continue
        t = t.astype(np.float64)
        ob = get_by_name(n.attribute, "out_bias")
        ob = float(ob.f) if ob is not None else 0.0
        osc = get_by_name(n.attribute, "out_scale")
        osc = float(osc.f) if osc is not None else 1.0
        if osc != 1.0 or not ob.is_integer():
            raise RuntimeError(f"{n.name}: out_scale {osc}, out_bias {ob}: cannot tell the output level of a "
                               "threshold; round_half_even needs out_scale 1 and an integer out_bias")
        if (np.diff(t, axis=-1) < 0).any():
            raise RuntimeError(f"{n.name}: thresholds are not ascending (negative scale?); round_half_even "
                               "cannot tell which side a tie belongs to")
        levels = ob + np.arange(1, t.shape[-1] + 1)
        odd = np.broadcast_to((levels % 2) != 0, t.shape)
        if model.get_tensor_datatype(n.input[0]).is_integer():
            t2 = np.where(odd & (t == np.round(t)), t + 1, t)
        else:
            t2 = np.where(odd, np.nextafter(t.astype(np.float32), np.float32(np.inf)).astype(np.float64), t)
        n_fix += int((t2 != t).sum())
        model.set_initializer(n.input[1], t2.astype(np.float32))
    return model, n_fix


def move_transpose_before_scalar_threshold(model):
    """Swap MultiThreshold -> Transpose into Transpose -> MultiThreshold when the thresholds are
    the same for every channel (shape [1, T]): an elementwise map commutes with a transpose.
    With one input channel FINN leaves the input quantizer before the NCHW -> NHWC transpose,
    which would sit between hardware layers; after the swap the transpose leads the graph."""
    from onnx import helper
    from qonnx.transformation.general import SortGraph
    from qonnx.transformation.infer_data_layouts import InferDataLayouts
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes

    n_moved = 0
    for t in list(model.graph.node):
        if t.op_type != "Transpose":
            continue
        mt = model.find_producer(t.input[0])
        if mt is None or mt.op_type != "MultiThreshold" or len(model.find_consumers(mt.output[0]) or []) != 1:
            continue
        thr = model.get_initializer(mt.input[1])
        perm = [list(a.ints) for a in t.attribute if a.name == "perm"]
        if thr is None or thr.shape[0] != 1 or perm != [[0, 2, 3, 1]]:
            continue
        x, mid, y = mt.input[0], mt.output[0], t.output[0]
        # the threshold now reads channels-last data (qonnx infers layouts from this attribute)
        lay = [a for a in mt.attribute if a.name == "data_layout"]
        if lay:
            lay[0].s = b"NHWC"
        else:
            mt.attribute.append(helper.make_attribute("data_layout", "NHWC"))
        x_dt = model.get_tensor_datatype(x)
        t.input[0], t.output[0] = x, mid
        mt.input[0], mt.output[0] = mid, y
        model.set_tensor_shape(mid, model.get_tensor_shape(y))
        model.set_tensor_datatype(mid, x_dt)
        n_moved += 1
    if n_moved:
        for tr in (SortGraph(), InferShapes(), InferDataTypes(), InferDataLayouts()):
            model = model.transform(tr)
    return model, n_moved


def step_qonnx_to_finn(model, req, info):
    from qonnx.transformation.change_3d_tensors_to_4d import Change3DTo4DTensors
    from qonnx.util.cleanup import cleanup_model
    from finn.transformation.qonnx.convert_qonnx_to_finn import ConvertQONNXtoFINN
    from finn.transformation.qonnx.quant_act_to_multithreshold import default_filter_function_generator

    model = cleanup_model(model)
    model, info["bias_quant_folded"] = fold_bias_quant(model)
    model = cleanup_model(model)
    model = model.transform(ConvertQONNXtoFINN(filter_function=default_filter_function_generator(
        max_multithreshold_bit_width=8)))
    if len(model.get_tensor_shape(model.graph.input[0].name)) == 3 and model.get_nodes_by_op_type("Conv"):
        # 1-D convolutions (N, C, L): FINN lowers 2-D ones; qonnx rewrites them as (N, C, L, 1)
        model = model.transform(Change3DTo4DTensors())
        info["conv1d_as_2d"] = len(model.get_tensor_shape(model.graph.input[0].name)) == 4
        for n in model.graph.node:  # Change3DTo4DTensors leaves MaxPool's `dilations` 1-D
            for a in n.attribute:
                if n.op_type == "MaxPool" and a.name == "dilations" and len(a.ints) == 1:
                    a.ints.append(1)
        if not info["conv1d_as_2d"]:
            raise RuntimeError("the 1-D convolutions could not be rewritten as 2-D ones (qonnx Change3DTo4DTensors "
                               f"refused: node types {sorted({n.op_type for n in model.graph.node})})")
    return model


def step_tidy_up(model, req, info):
    from qonnx.transformation.fold_constants import FoldConstants
    from qonnx.transformation.general import GiveReadableTensorNames, GiveUniqueNodeNames, RemoveStaticGraphInputs
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes

    for t in (InferShapes(), FoldConstants(), GiveUniqueNodeNames(), GiveReadableTensorNames(), InferDataTypes(),
              RemoveStaticGraphInputs()):
        model = model.transform(t)
    return model


def step_streamline(model, req, info):
    from qonnx.transformation.bipolar_to_xnor import ConvertBipolarMatMulToXnorPopcount
    from qonnx.transformation.general import RemoveUnusedTensors
    from qonnx.transformation.infer_data_layouts import InferDataLayouts
    from qonnx.transformation.lower_convs_to_matmul import LowerConvsToMatMul
    import finn.transformation.streamline.absorb as absorb
    from finn.transformation.streamline import Streamline
    from finn.transformation.streamline.reorder import MakeMaxPoolNHWC

    model = model.transform(absorb.AbsorbScalarBiasIntoMultiThreshold())
    model = model.transform(Streamline())
    if model.get_nodes_by_op_type("Conv"):
        for t in (LowerConvsToMatMul(), MakeMaxPoolNHWC(), absorb.AbsorbTransposeIntoMultiThreshold(),
                  MakeMaxPoolNHWC(), absorb.AbsorbConsecutiveTransposes()):
            model = model.transform(t)
    model = model.transform(ConvertBipolarMatMulToXnorPopcount())
    model = model.transform(Streamline())
    model = model.transform(absorb.AbsorbScalarMulAddIntoTopK())
    model = model.transform(InferDataLayouts())
    model = model.transform(RemoveUnusedTensors())
    model, info["transposes_moved_before_threshold"] = move_transpose_before_scalar_threshold(model)
    model, info["half_even_thresholds"] = round_half_even(model)
    return model


def step_convert_to_hw(model, req, info):
    from qonnx.transformation.general import GiveUniqueNodeNames
    from qonnx.transformation.infer_data_layouts import InferDataLayouts
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes
    import finn.transformation.streamline.absorb as absorb
    from finn.transformation.fpgadataflow.convert_to_hw.conv_inp_gen import InferConvInpGen
    from finn.transformation.fpgadataflow.convert_to_hw.duplicate_streams import InferDuplicateStreamsLayer
    from finn.transformation.fpgadataflow.convert_to_hw.elementwise_binary_operation import (
        InferElementwiseBinaryOperation)
    from finn.transformation.fpgadataflow.convert_to_hw.fm_padding import InferFMPadding
    from finn.transformation.fpgadataflow.convert_to_hw.pool import InferPool
    from finn.transformation.fpgadataflow.convert_to_hw.quantized_matrix_vector_activation import (
        InferQuantizedMatrixVectorActivation)
    from finn.transformation.fpgadataflow.convert_to_hw.thresholding import InferThresholdingLayer
    from finn.transformation.fpgadataflow.convert_to_hw.vector_vector_activation import InferVectorVectorActivation
    from finn.transformation.move_reshape import RemoveCNVtoFCFlatten

    # the order of FINN's step_convert_to_hw (standalone_thresholds=False), for the node kinds
    # opq-hw's models produce
    for t in (InferQuantizedMatrixVectorActivation(), InferVectorVectorActivation(), InferThresholdingLayer(),
              InferFMPadding(), InferPool(), InferConvInpGen(), RemoveCNVtoFCFlatten(),
              InferElementwiseBinaryOperation(), InferDuplicateStreamsLayer(), absorb.AbsorbConsecutiveTransposes(),
              RemoveCNVtoFCFlatten(), GiveUniqueNodeNames(), InferDataLayouts(), InferDataTypes(), InferShapes()):
        model = model.transform(t)
    return model


def _minimize(model):
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from finn.transformation.fpgadataflow.minimize_accumulator_width import MinimizeAccumulatorWidth
    from finn.transformation.fpgadataflow.minimize_weight_bit_width import MinimizeWeightBitWidth
    from finn.transformation.streamline.round_thresholds import RoundAndClipThresholds

    # FINN's _minimize_bit_width (minimize_bit_width=True)
    for t in (MinimizeWeightBitWidth(), MinimizeAccumulatorWidth(), InferDataTypes(), RoundAndClipThresholds(),
              InferDataTypes(), MinimizeWeightBitWidth(), InferDataTypes()):
        model = model.transform(t)
    return model


def step_minimize_bit_width_initial(model, req, info):
    return _minimize(model)


def _apply_config(model, config: dict, what: str, info):
    from qonnx.transformation.general import GiveUniqueNodeNames
    from finn.transformation.general import ApplyConfig

    names = {n.name for n in model.graph.node}
    missing = sorted(k for k in config if k != "Defaults" and k not in names)
    if missing:
        raise RuntimeError(f"{what}: no node named {missing} in the FINN graph (nodes: {sorted(names)})")
    model = model.transform(GiveUniqueNodeNames())
    return model.transform(ApplyConfig(dict(config)))


def step_specialize_layers(model, req, info):
    from qonnx.transformation.general import GiveUniqueNodeNames
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers

    if req.get("specialize_config"):
        model = _apply_config(model, req["specialize_config"], "specialize config", info)
    for t in (SpecializeLayers(req["fpga_part"]), GiveUniqueNodeNames(), InferShapes(), InferDataTypes()):
        model = model.transform(t)
    return model


def _fold_streaming_nodes(model, target: int) -> dict:
    """Fold the non-MVAU streaming nodes to meet the MVAUs' interval (FINN's SetFolding idea):
    the smallest SIMD/PE (a divisor of the channel count) whose expected cycles <= target."""
    from qonnx.custom_op.registry import getCustomOp

    chosen = {}
    for n in model.graph.node:
        if not n.domain.startswith("finn.custom_op.fpgadataflow") or n.op_type.split("_")[0] in FINN_LAYER_OPS:
            continue
        inst = getCustomOp(n)
        attrs = inst.get_nodeattr_types()
        key = "SIMD" if "SIMD" in attrs else ("PE" if "PE" in attrs else None)
        if key is None:
            continue
        if n.op_type.startswith("ConvolutionInputGenerator"):
            ch = int(inst.get_nodeattr("IFMChannels"))
        elif "NumChannels" in attrs:
            ch = int(inst.get_nodeattr("NumChannels"))
        elif "Channels" in attrs:
            ch = int(inst.get_nodeattr("Channels"))
        else:
            continue
        window = n.op_type == "ConvolutionInputGenerator_rtl" and "parallel_window" in attrs
        if window:
            inst.set_nodeattr("parallel_window", 0)
        best, cyc = int(inst.get_nodeattr(key)), None
        for d in [d for d in range(1, ch + 1) if ch % d == 0]:
            try:
                inst.set_nodeattr(key, d)
                c = int(inst.get_exp_cycles())
            except Exception:  # a width this op does not support: keep looking
                continue
            best, cyc = d, c
            if c <= target:
                break
        inst.set_nodeattr(key, best)
        chosen[n.name] = {key: best}
        # as FINN's SetFolding: an RTL sliding window at full SIMD that is still too slow emits
        # whole windows per cycle
        if window and best == ch and cyc is not None and cyc > target:
            inst.set_nodeattr("parallel_window", 1)
            chosen[n.name]["parallel_window"] = 1
    return chosen


def step_apply_folding_config(model, req, info):
    model = _apply_config(model, req["folding_config"], "folding config", info)
    if req.get("target_cycles"):
        info["streaming_folding"] = _fold_streaming_nodes(model, int(req["target_cycles"]))
    return model


def step_minimize_bit_width(model, req, info):
    return _minimize(model)


def applied_config(model) -> dict:
    from qonnx.custom_op.registry import getCustomOp

    keep = ("PE", "SIMD", "ram_style", "ram_style_thresholds", "resType", "mem_mode", "parallel_window")
    out = {"Defaults": {}}
    for n in model.graph.node:
        if not n.domain.startswith("finn.custom_op.fpgadataflow"):
            continue
        inst = getCustomOp(n)
        attrs = inst.get_nodeattr_types()
        out[n.name] = {k: inst.get_nodeattr(k) for k in keep if k in attrs}
    return out


def execute(model, x: np.ndarray) -> np.ndarray:
    """FINN's Python execution, one sample at a time (FINN's HW nodes take batch 1)."""
    from finn.core.onnx_exec import execute_onnx

    iname, oname = model.graph.input[0].name, model.graph.output[0].name
    ishape = model.get_tensor_shape(iname)
    outs = []
    for i in range(len(x)):
        xi = x[i:i + 1].reshape(ishape).astype(np.float32)
        outs.append(np.asarray(execute_onnx(model, {iname: xi})[oname]).reshape(1, -1))
    return np.concatenate(outs)


def verify(model, x, y, stage: str) -> dict:
    t0 = time.perf_counter()
    out = execute(model, x).reshape(y.shape)
    diff = np.abs(out.astype(np.float64) - y.astype(np.float64))
    rows = np.flatnonzero((diff > 0).reshape(len(y), -1).any(axis=1))
    return {"stage": stage, "n": int(len(x)), "max_abs_diff": float(diff.max()) if diff.size else 0.0,
            "mismatched_samples": int(len(rows)), "first_mismatches": rows[:10].tolist(),
            "bit_exact": bool(len(rows) == 0), "argmax_agree": float((out.argmax(1) == y.argmax(1)).mean()),
            "seconds": round(time.perf_counter() - t0, 2)}


def describe_nodes(model) -> list[dict]:
    out = []
    for n in model.graph.node:
        hw = n.domain.startswith("finn.custom_op.fpgadataflow")
        out.append({"name": n.name, "op_type": n.op_type, "hw": hw})
    return out


def layer_table(model, names: list[str]) -> list[dict]:
    """Our conv/linear layers matched in order onto FINN's matrix layers (MVAU/VVAU)."""
    from qonnx.custom_op.registry import getCustomOp

    mv = [n for n in model.graph.node if n.op_type.split("_")[0] in FINN_LAYER_OPS]
    rows = []
    for i, n in enumerate(mv):
        inst = getCustomOp(n)
        a = inst.get_nodeattr_types()
        g = lambda k: inst.get_nodeattr(k) if k in a else None  # noqa: E731
        rows.append({"layer": names[i] if i < len(names) else None, "node": n.name, "op_type": n.op_type,
                     "PE": g("PE"), "SIMD": g("SIMD"), "MW": g("MW"), "MH": g("MH"), "Channels": g("Channels"),
                     "resType": g("resType"), "mem_mode": g("mem_mode"), "ram_style": g("ram_style"),
                     "noActivation": g("noActivation"), "numInputVectors": g("numInputVectors"),
                     "inputDataType": g("inputDataType"), "weightDataType": g("weightDataType"),
                     "outputDataType": g("outputDataType"), "accDataType": g("accDataType")})
    return rows


def estimates(model, fpga_part: str, clk_ns: float) -> dict:
    from finn.analysis.fpgadataflow.dataflow_performance import dataflow_performance
    from finn.analysis.fpgadataflow.exp_cycles_per_layer import exp_cycles_per_layer
    from finn.analysis.fpgadataflow.res_estimation import res_estimation
    from finn.transformation.fpgadataflow.annotate_cycles import AnnotateCycles

    res = model.analysis(partial(res_estimation, fpgapart=fpga_part))
    cyc = model.analysis(exp_cycles_per_layer)
    model = model.transform(AnnotateCycles())
    perf = dict(_dataflow_part(model).analysis(dataflow_performance))
    perf["estimated_throughput_fps"] = (1e9 / clk_ns) / max(1, int(perf["max_cycles"]))
    perf["estimated_latency_ns"] = int(perf["critical_path_cycles"]) * clk_ns
    keys = ("LUT", "BRAM_18K", "URAM", "DSP")
    total = {k: float(sum(float(r.get(k, 0)) for r in res.values())) for k in keys}
    return {"resources": {k: {m: _num(v) for m, v in r.items()} for k, r in res.items()},
            "cycles": {k: int(v) for k, v in cyc.items()}, "network": {k: _num(v) for k, v in perf.items()},
            "total": total}


def _dataflow_part(model):
    """A copy without the leading software nodes (FINN's input Transpose), as in FINN's dataflow
    partition: FINN's dataflow_performance analysis takes hardware nodes only."""
    import copy

    from qonnx.core.modelwrapper import ModelWrapper

    m = ModelWrapper(copy.deepcopy(model.model))
    while True:
        first = [n for n in m.graph.node if m.graph.input[0].name in n.input]
        sw = [n for n in first if not n.domain.startswith("finn.custom_op.fpgadataflow") and len(n.output) == 1]
        if not sw or len(first) != 1:
            return m
        n = sw[0]
        for c in m.find_consumers(n.output[0]) or []:
            for i, t in enumerate(c.input):
                if t == n.output[0]:
                    c.input[i] = m.graph.input[0].name
        m.graph.node.remove(n)


def _num(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return int(f) if math.isfinite(f) and f.is_integer() else f
    return v


STEPS = [step_qonnx_to_finn, step_tidy_up, step_streamline, step_convert_to_hw, step_minimize_bit_width_initial,
         step_specialize_layers, step_apply_folding_config, step_minimize_bit_width]
# after these steps the graph is executed in Python and checked against the Brevitas logits
VERIFY_AFTER = {"step_qonnx_to_finn": "qonnx_to_finn", "step_streamline": "streamlined",
                "step_minimize_bit_width_initial": "hw_layers"}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: finn_worker.py REQUEST.json", file=sys.stderr)
        return 2
    req = json.loads(Path(argv[1]).read_text())
    result_path = Path(req["result"])
    out_dir = Path(req["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    res: dict = {"ok": False, "steps": [], "verify": [], "info": {}}
    t_all = time.perf_counter()
    try:
        t0 = time.perf_counter()
        _imports()
        from importlib.metadata import version

        from qonnx.core.modelwrapper import ModelWrapper

        res["versions"] = {p: version(p) for p in ("finn-plus", "qonnx", "onnx", "onnxruntime", "numpy", "brevitas")}
        res["import_s"] = round(time.perf_counter() - t0, 2)
        x = y = None
        if req.get("verify_input"):
            x = np.load(req["verify_input"], allow_pickle=False)
            y = np.load(req["verify_expected"], allow_pickle=False)
            if req.get("verify_n"):
                x, y = x[: req["verify_n"]], y[: req["verify_n"]]
        model = ModelWrapper(req["model"])
        info = res["info"]
        for step in STEPS:
            t0 = time.perf_counter()
            _log(step.__name__)
            model = step(model, req, info)
            rec = {"step": step.__name__, "seconds": round(time.perf_counter() - t0, 2),
                   "nodes": [n.op_type for n in model.graph.node]}
            res["steps"].append(rec)
            if step.__name__ == "step_minimize_bit_width_initial":
                model.save(str(out_dir / "model_hw.onnx"))
                res["hw_nodes"] = describe_nodes(model)
            if step.__name__ == "step_streamline":
                model.save(str(out_dir / "model_streamlined.onnx"))
            if x is not None and step.__name__ in VERIFY_AFTER:
                v = verify(model, x, y, VERIFY_AFTER[step.__name__])
                _log(f"verify {v['stage']}: bit_exact={v['bit_exact']} max|diff|={v['max_abs_diff']:g} "
                     f"({v['mismatched_samples']}/{v['n']} samples differ)")
                res["verify"].append(v)
        model.save(str(out_dir / "model_folded.onnx"))
        res["nodes"] = describe_nodes(model)
        res["layers"] = layer_table(model, list(req.get("layer_names") or []))
        res["applied_folding"] = applied_config(model)
        res["estimates"] = estimates(model, req["fpga_part"], float(req["clk_ns"]))
        res["ok"] = True
    except Exception as e:  # reported to the flow, which raises a clear error
        res["error"] = f"{type(e).__name__}: {e}"
        res["traceback"] = traceback.format_exc()
        _log(res["traceback"])
    res["seconds"] = round(time.perf_counter() - t_all, 2)
    tmp = result_path.with_name(result_path.name + ".tmp")
    tmp.write_text(json.dumps(res, indent=1, default=_num))
    tmp.replace(result_path)
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
