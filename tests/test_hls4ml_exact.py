"""hls4ml flow: the exact type analysis, the tiny-scale regression, and the QONNX graph stock hls4ml converts."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from opq_hw.errors import OpqError


# ---------------------------------------------------------------- the analysis' arithmetic (fast)


def test_minimal_types_hold_exactly_what_they_must():
    from opq_hw.flows.hls4ml_types import MIN_FRAC, Fixed, Values, frac_bits

    assert frac_bits([0.5, 0.25, 3.0]) == 2 and frac_bits([16.0, 32.0]) == -4 and frac_bits([0.0]) == MIN_FRAC
    assert frac_bits([0.1]) is None  # not on a grid within MAX_FRAC bits
    assert Fixed.minimal(-7, 7, 0) == Fixed(4, 4, True)
    assert Fixed.minimal(0, 255 / 64, 6) == Fixed(8, 2, False)
    assert Fixed.minimal(-1.0, 0.999969482421875, 15) == Fixed(16, 1, True)
    assert Fixed.minimal(2 ** -13, 2 ** -12, 13) == Fixed(2, -11, False)  # ufixed<2,-11>: the channel scales
    # hls4ml's default holds a bias b*s = 0.81567383 (15 fractional bits) only by rounding it
    v = Values(np.array([0.815673828125]), np.array([0.815673828125]), 15)
    assert "rounds" in Fixed.parse("fixed<16,6>").problem(v)
    assert Fixed.parse("fixed<16,1>").problem(v) is None
    assert "saturates" in Fixed.parse("fixed<8,2>").problem(Values(np.array([-3.0]), np.array([1.0]), 2))
    assert Fixed.parse("ap_fixed<8,5,AP_RND_CONV,AP_SAT,0>") == Fixed(8, 5, True, "RND_CONV", "SAT")
    assert Fixed.parse("ap_ufixed<1,-9>").spec() == "ufixed<1,-9>"


def test_weighted_sum_bounds_every_partial_sum():
    from opq_hw.flows.hls4ml_types import _weighted_sum

    rng = np.random.default_rng(0)
    w = rng.integers(-7, 8, size=(6, 3)).astype(float)
    b = np.array([5.0, -3.0, 0.0])
    acc, out = _weighted_sum(np.full(6, -2.0), np.full(6, 1.75), w, b, 2, 0, 0)
    for _ in range(200):  # random inputs on the grid, random summation orders: every partial sum inside
        x = rng.integers(-8, 8, size=6) / 4
        for j in range(3):
            s = b[j]
            assert acc.lo[j] <= s <= acc.hi[j]
            for i in rng.permutation(6):
                s += w[i, j] * x[i]
                assert acc.lo[j] <= s <= acc.hi[j]
            assert out.lo[j] <= s <= out.hi[j]


class _Prec:
    def __init__(self, spec):
        from opq_hw.flows.hls4ml_types import Fixed

        f = Fixed.parse(spec)
        self.width, self.integer, self.signed = f.width, f.integer, f.signed
        self.rounding_mode, self.saturation_mode = f.rounding, f.saturation


class _Type:
    def __init__(self, name, spec):
        self.name, self.precision = name, _Prec(spec)


class _Var:
    def __init__(self, shape, t):
        self.shape, self.type = shape, t


class _Layer:
    """Just what the analysis reads from an hls4ml layer."""

    def __init__(self, name, cls, inputs, shape, types, attrs=None):
        self.name, self.class_name, self.inputs, self.outputs = name, cls, inputs, [name]
        self.types = {k: _Type(f"{name}_{k}", v) for k, v in types.items()}
        self.weights, self.attrs = {}, attrs or {}
        self._out = _Var(shape, self.types["result_t"])

    def get_attr(self, k, default=None):
        return self.attrs.get(k, default)

    def get_output_variable(self):
        return self._out


class _Graph:
    def __init__(self, layers):
        self.layers = layers

    def get_layers(self):
        return self.layers


def test_analysis_of_pooling_add_concat_and_unknown_layers():
    """Layers the carrier does not emit today (Add, Concat, average pooling, tables) are analysed or named."""
    from opq_hw.flows.hls4ml_types import Fixed, analyse, check

    inp = _Layer("in", "Input", [], [4, 4, 3], {"result_t": "fixed<8,3>"})
    mx = _Layer("mx", "Pooling2D", ["in"], [2, 2, 3], {"result_t": "fixed<8,3>", "accum_t": "fixed<8,3>"},
                {"pool_op": "Max", "pool_height": 2, "pool_width": 2})
    av = _Layer("av", "Pooling2D", ["in"], [2, 2, 3], {"result_t": "fixed<8,3>", "accum_t": "fixed<16,6>"},
                {"pool_op": "Average", "pool_height": 2, "pool_width": 2})
    add = _Layer("add", "Merge", ["mx", "av"], [2, 2, 3], {"result_t": "fixed<8,3>"}, {"op": "add"})
    cat = _Layer("cat", "Concatenate", ["mx", "add"], [2, 2, 6], {"result_t": "fixed<16,6>"})
    g = _Graph([inp, mx, av, add, cat])
    a = analyse(g, Fixed.parse("fixed<8,3>"))
    set_to = {(r["layer"], r["type"]): r["set_to"] for r in a.table()}
    assert set_to[("mx", "result_t")] == "fixed<8,3>"
    # hls4ml's average: the sum of the 4 values (range x4) then /4 in the accumulator (2 more fractional bits)
    assert set_to[("av", "accum_t")] == "fixed<12,5>" and set_to[("av", "result_t")] == "fixed<10,3>"
    assert set_to[("add", "result_t")] == "fixed<11,4>" and set_to[("cat", "result_t")] == "fixed<11,4>"
    problems = {(p["layer"], p["type"].split()[0]) for p in check(g, a)}
    # the types given above: the average's result rounds, the add's saturates, the concat and the max fit
    assert ("av", "result_t") in problems and ("add", "result_t") in problems
    assert ("cat", "result_t") not in problems and ("mx", "result_t") not in problems
    av.attrs["pool_width"] = 3  # a 6-value window: the division is not exact
    sm = _Layer("sm", "Softmax", ["mx"], [2, 2, 3], {"result_t": "fixed<16,6>"})
    a = analyse(_Graph([inp, mx, av, sm]), Fixed.parse("fixed<8,3>"))
    msgs = " ".join(p for lay in a.layers for p in lay.problems)
    assert "non-power of two" in msgs and "no exact analysis for hls4ml layer class Softmax" in msgs


# ---------------------------------------------------------------- the tiny-scale MLP (the reported defect)


@pytest.fixture(scope="module")
def tiny_scale_run(tmp_path_factory):
    """digits-mlp whose weights are ~2^-10 of the usual (per-channel scales 2^-14 .. 2^-10) and whose biases are
    O(1): every bias hls4ml moves behind the channel scale, b*s, needs more fractional bits than fixed<16,6>."""
    import torch

    from opq_hw.models import build_model
    from opq_hw.pipeline import CompressConfig, compress_run

    torch.manual_seed(1)
    m = build_model("digits-mlp")
    with torch.no_grad():
        for lay in m.modules():
            if isinstance(lay, torch.nn.Linear):
                lay.weight.mul_(2.0 ** -10)
                lay.bias.uniform_(-1.5, 1.5)
    d = tmp_path_factory.mktemp("tiny")
    torch.save(m.state_dict(), d / "float.pt")
    cfg = CompressConfig(model="digits-mlp", weights=str(d / "float.pt"), data="digits", target_cr=8, epochs=0)
    return compress_run(cfg, d / "run", progress=False, log=lambda *_: None)


@pytest.mark.slow
@pytest.mark.tools
def test_tiny_scales_old_types_are_flagged_and_wrong(tiny_scale_run, tmp_path):
    """hls4ml's own types (what the flow used to ship as `exact: true`) round b*s: the check names the layer and
    the type, the conversion refuses, and the compiled C simulation indeed differs from the Brevitas model."""
    from opq_hw.flows.hls4ml_flow import convert, predict_csim
    from opq_hw.run import load_run
    from opq_hw.simulate import reference

    run = load_run(tiny_scale_run)
    with pytest.raises(OpqError, match=r"bias_t \(.*fixed<16,6.*rounds"):
        convert(run, tmp_path / "a", set_types=False)
    hm, info = convert(run, tmp_path / "b", set_types=False, allow_inexact=True)
    assert info["exact"] is False
    bad = [p for p in info["type_check"]["problems"] if p["type"].startswith("bias_t")]
    assert bad and all("ApplyAlpha" in next(r["class"] for r in info["types"] if r["layer"] == p["layer"]) for p in bad)
    x, _ = run.test_data()
    from opq_hw.pipeline import quantize_input

    xq = quantize_input(run, x)
    hm.compile()
    y = predict_csim(hm, xq)
    assert np.sum(np.any(y != reference(run, xq), axis=1)) > len(xq) // 2  # the defect: most samples differ


@pytest.mark.slow
def test_build_exits_nonzero_naming_layer_and_type(tiny_scale_run, copy_run, monkeypatch, capsys):
    """When a type cannot be set (here: the analysis' types are withheld from the config, so hls4ml keeps its
    defaults), `opq-hw build` stops with exit 2 and names the layer and the type; no project is left behind."""
    from opq_hw.cli import main
    from opq_hw.flows import hls4ml_types

    run_dir = copy_run(tiny_scale_run)
    monkeypatch.setattr(hls4ml_types.Analysis, "config_precisions", lambda self: {})
    assert main(["build", str(run_dir), "--flow", "hls4ml", "--board", "pynq-z2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the hls4ml project would not compute the run exactly") and "Traceback" not in err
    assert re.search(r"bn_\w+: bias_t \(\w+ = fixed<16,6,TRN,WRAP,0>\): rounds", err), err
    assert not (run_dir / "build" / "hls4ml").exists()


@pytest.mark.slow
@pytest.mark.tools
def test_tiny_scales_build_is_exact_and_stock_hls4ml_converts_its_graph(tiny_scale_run, copy_run, tmp_path):
    """`build` sets every type from the analysis (checked on the model and on the written project), C-sim is
    bit-exact on the whole test split, and the QONNX graph + config it writes go through stock hls4ml's
    `convert_from_onnx_model` to the same exact C simulation."""
    import hls4ml
    from qonnx.core.modelwrapper import ModelWrapper

    from opq_hw.flows.hls4ml_flow import (CONVERT_CONFIG, QONNX_FOR_HLS4ML, _input_precision, activation_quantizers,
                                          build, predict_csim)
    from opq_hw.flows.hls4ml_types import Fixed, analyse, check
    from opq_hw.pipeline import quantize_input
    from opq_hw.run import load_run
    from opq_hw.simulate import reference, simulate

    run_dir = copy_run(tiny_scale_run)
    rec = build(run_dir, part="xc7z020clg400-1", log=lambda *_: None)
    assert rec["exact"] is True and rec["type_check"]["problems"] == [] and rec["type_check"]["written_project_problems"] == []
    alpha_bias = [r for r in rec["types"] if r["class"] == "ApplyAlpha" and r["type"] == "bias_t"]
    assert alpha_bias and max(r["frac_bits"] for r in alpha_bias) > 10  # b*s needs more than fixed<16,6> has
    assert all(r["set_to"] is not None for r in rec["types"] if r["role"] == "exact")
    saved = json.loads((run_dir / "build" / "hls4ml" / "opq_hls4ml.json").read_text())
    assert saved["exact"] is True

    res = simulate(run_dir, "csim", write=False, log=None)  # the whole digits test split (360)
    assert res["bit_exact"] and res["exact_samples"] == res["n"] >= 200

    prj = run_dir / "build" / "hls4ml"
    kw = json.loads((prj / CONVERT_CONFIG).read_text())
    model = ModelWrapper(str(prj / QONNX_FOR_HLS4ML))
    stock = hls4ml.converters.convert_from_onnx_model(model, output_dir=str(tmp_path / "stock"), **kw)
    in_t = _input_precision(model)
    assert check(stock, analyse(stock, Fixed.parse(in_t), activation_quantizers(model))) == []
    stock.compile()
    run = load_run(run_dir)
    x, _ = run.test_data()
    xq = quantize_input(run, x)
    np.testing.assert_array_equal(predict_csim(stock, xq), reference(run, xq))


# ---------------------------------------------------------------- the property sweep, a seeded subset


def _property_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "hls4ml_property.py"
    spec = importlib.util.spec_from_file_location("hls4ml_property", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# MLP / 2-D CNN / 1-D CNN, with and without BN folds, channel scales 2^-12 .. 2^7, 2- to 6-bit, 2-97 % pruning;
# each run is built once and compiled for both io types (benchmarks/hls4ml_property.py runs 50 such cases)
PROPERTY_SEEDS = [6, 4, 23, 9, 16, 11]


@pytest.mark.slow
@pytest.mark.tools
@pytest.mark.parametrize("seed", PROPERTY_SEEDS)
def test_random_models_csim_bit_exact(seed):
    prop = _property_module()
    res = prop.run_case(prop.random_case(seed), ios=("parallel", "stream"), opt="O1")
    for io, r in res["io"].items():
        assert r["problems"] == [] and r["type_check_exact"], (io, r["problems"])
        assert r["exact_samples"] == res["n"] >= 100, (io, res)


@pytest.mark.slow
@pytest.mark.tools
def test_stock_hls4ml_converts_a_cnn_graph_exactly(tmp_path):
    """The QONNX graph + config for a 2-D CNN with a folded BN (channels-last inside), through stock hls4ml's
    `convert_from_onnx_model` with io_stream: C-sim equal to the Brevitas model on every input."""
    import hls4ml
    from qonnx.core.modelwrapper import ModelWrapper

    from opq_hw.flows.hls4ml_flow import CONVERT_CONFIG, QONNX_FOR_HLS4ML, convert, predict_csim
    from opq_hw.simulate import reference

    prop = _property_module()
    case = prop.random_case(4)
    assert case["kind"] == "cnn2d" and case["bn"]
    run, xq = prop.make_run(case, tmp_path / "run")
    convert(run, tmp_path / "prj", io="stream", graph_out=tmp_path)
    kw = json.loads((tmp_path / CONVERT_CONFIG).read_text())
    assert kw["io_type"] == "io_stream"
    hm = hls4ml.converters.convert_from_onnx_model(ModelWrapper(str(tmp_path / QONNX_FOR_HLS4ML)),
                                                   output_dir=str(tmp_path / "stock"), **kw)
    hm.compile()
    np.testing.assert_array_equal(predict_csim(hm, xq), reference(run, xq))


@pytest.mark.parametrize("bits,rewritten", [(7, True), (8, False)])
def test_clip_becomes_relu_only_where_the_quantizer_saturates_below_it(bits, rewritten):
    """ReLU6 -> Quant(2^-5, unsigned): with 7 bits the quantizer's largest value 127/32 < 6, so the clip never acts
    and it is a ReLU (qonnx execution identical on values across the whole range); with 8 bits (255/32 > 6) it
    stays, and the hls4ml build refuses it naming the reason."""
    from onnx import TensorProto, helper
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    from opq_hw.flows.hls4ml_flow import clip_to_relu, refuse_unsupported

    inits = [helper.make_tensor(n, TensorProto.FLOAT, [], [v]) for n, v in
             (("lo", 0.0), ("hi", 6.0), ("s", 2.0 ** -5), ("z", 0.0), ("b", float(bits)))]
    nodes = [helper.make_node("Clip", ["x", "lo", "hi"], ["c"], name="relu6"),
             helper.make_node("Quant", ["c", "s", "z", "b"], ["y"], name="q", domain="qonnx.custom_op.general",
                              signed=0, narrow=0, rounding_mode="ROUND")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], inits)
    g.value_info.append(helper.make_tensor_value_info("c", TensorProto.FLOAT, [1, 64]))
    model = ModelWrapper(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]))
    x = np.linspace(-4, 12, 64, dtype=np.float32).reshape(1, 64)
    before = execute_onnx(model, {"x": x})["y"]
    assert clip_to_relu(model) == (["relu6"] if rewritten else [])
    assert [n.op_type for n in model.graph.node] == (["Relu", "Quant"] if rewritten else ["Clip", "Quant"])
    np.testing.assert_array_equal(execute_onnx(model, {"x": x})["y"], before)
    if not rewritten:
        with pytest.raises(OpqError, match=r"M = 6 is below the quantizer's largest value 7\.96875"):
            refuse_unsupported(model)
