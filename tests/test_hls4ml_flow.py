"""hls4ml flow: per-channel scale folding, project generation, C-simulation bit-exactness."""
from __future__ import annotations

import json

import numpy as np
import pytest

from opq_hw.errors import OpqError


# ---------------------------------------------------------------- a tiny hand-made Brevitas model


def _tiny_qonnx(tmp_path, per_channel=True, seed=0):
    """Brevitas CNN with the contract's conventions and a wide per-channel scale spread; QONNX path + inputs."""
    import torch
    import torch.nn.utils.parametrize as P
    from brevitas.export import export_qonnx
    import brevitas.nn as qnn
    from brevitas.quant import Int8ActPerTensorFixedPoint, Int8WeightPerTensorFixedPoint, Int16Bias, Uint8ActPerTensorFixedPoint

    class W(Int8WeightPerTensorFixedPoint):
        scaling_per_output_channel = per_channel

    class Mask(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.register_buffer("m", m)

        def forward(self, w):
            return w * self.m

    torch.manual_seed(seed)
    m = torch.nn.Sequential(
        qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, return_quant_tensor=True),
        qnn.QuantConv2d(1, 8, 3, padding=1, weight_quant=W, weight_bit_width=4, bias_quant=Int16Bias),
        qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, return_quant_tensor=True),
        torch.nn.MaxPool2d(2), torch.nn.Flatten(),
        qnn.QuantLinear(8 * 4 * 4, 5, weight_quant=W, weight_bit_width=3, bias_quant=Int16Bias),
    )
    for layer in (m[1], m[5]):
        with torch.no_grad():  # channel magnitudes over two decades: scale exponents differ by up to ~7
            layer.weight.mul_(torch.logspace(-1, 1, layer.weight.shape[0]).view(-1, *([1] * (layer.weight.dim() - 1))))
        P.register_parametrization(layer, "weight", Mask((torch.rand_like(layer.weight) > 0.5).float()))
    m.train()
    with torch.no_grad():
        for _ in range(3):
            m(torch.randn(64, 1, 8, 8) * 2)
    m.eval()
    x = torch.randn(32, 1, 8, 8) * 2
    with torch.no_grad():
        xq = m[0](x).value
        y = m(xq)
    path = tmp_path / "tiny.onnx"
    export_qonnx(m, input_t=xq[:1], export_path=str(path), dynamo=False)
    return path, xq.numpy(), y.numpy()


def _exec(model, x):
    from qonnx.core.onnx_exec import execute_onnx

    iname, oname = model.graph.input[0].name, model.graph.output[0].name
    return np.concatenate([execute_onnx(model, {iname: x[i:i + 1]})[oname] for i in range(len(x))])


@pytest.mark.slow
def test_split_channel_scales_is_exact_on_qonnx(tmp_path):
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_shapes import InferShapes

    from opq_hw.flows.hls4ml_flow import split_channel_scales

    path, xq, y = _tiny_qonnx(tmp_path)
    model = ModelWrapper(str(path)).transform(InferShapes())
    before = _exec(model, xq)
    np.testing.assert_array_equal(before, y)  # the export itself is exact
    model, changed, records = split_channel_scales(model)
    assert changed and [r["kind"] for r in records] == ["split", "split"]
    assert sorted(r["bits_out"] for r in records) == [3, 4]  # the weights keep their bit widths
    assert all(r["bits_out"] == r["bits_in"] and r["exact"] for r in records)
    assert max(r["scale_exponents"][1] - r["scale_exponents"][0] for r in records) >= 3  # the spread is real
    for n in model.graph.node:  # no per-channel scale left on any Quant; weights are integers at scale 1
        if n.op_type == "Quant":
            assert model.get_initializer(n.input[1]).size == 1
    muls = [n for n in model.graph.node if n.op_type == "Mul"]
    assert len(muls) == 2
    np.testing.assert_array_equal(_exec(model, xq), y)


@pytest.mark.slow
def test_split_rejects_float_scales_unless_inexact(tmp_path):
    from qonnx.core.modelwrapper import ModelWrapper

    from opq_hw.flows.hls4ml_flow import split_channel_scales

    path, _, _ = _tiny_qonnx(tmp_path)
    model = ModelWrapper(str(path))
    wq = next(n for n in model.graph.node if n.op_type == "Quant" and model.get_initializer(n.input[0]) is not None
              and model.get_initializer(n.input[1]).size > 1)
    s = model.get_initializer(wq.input[1])
    model.set_initializer(wq.input[1], (s * 0.7).astype(np.float32))  # not a power of two (nor dyadic) any more
    with pytest.raises(OpqError, match="power-of-two.*allow-inexact"):
        split_channel_scales(model)
    model, _, records = split_channel_scales(model, allow_inexact=True)
    rec = next(r for r in records if not r["exact"])
    assert rec["kind"] == "inexact" and rec["max_abs_error"] > 0


def test_bad_options_are_named():
    from opq_hw.flows.hls4ml_flow import _backend, _io

    with pytest.raises(OpqError, match="Quartus"):
        _backend("Quartus")
    with pytest.raises(OpqError, match="dataflow"):
        _io("dataflow")
    assert _backend("vivado") == "Vivado" and _io("stream") == "io_stream"


# ---------------------------------------------------------------- the demo run


@pytest.mark.slow
def test_build_writes_project_with_allocation_precisions(demo_run, copy_run):
    from opq_hw.flows.hls4ml_flow import build
    from opq_hw.run import load_run

    demo_run = copy_run(demo_run)
    rec = build(demo_run, board=None, part="xc7z020clg400-1", backend="Vitis", io="parallel", log=lambda *_: None)
    prj = demo_run / "build" / "hls4ml"
    assert (prj / "build_prj.tcl").is_file() and (prj / "firmware" / "myproject.cpp").is_file()
    assert json.loads((prj / "opq_hls4ml.json").read_text())["layers"] == rec["layers"]
    assert "xc7z020clg400-1" in (prj / "project.tcl").read_text()
    run = load_run(demo_run)
    assert len(rec["layers"]) == len(run.specs)
    for r, s in zip(rec["layers"], run.specs):
        la = run.allocation.layer(s.name)
        assert r["layer"] == s.name
        # stored weight width = the allocation's bits; the per-channel pow2 scale is a separate exact node
        assert r["quant_bits"] == la.bits == r["weight_width"], r
        assert r["weight_precision"].startswith(f"ap_fixed<{la.bits},{la.bits},")
        assert r["channel_scale_precision"] is not None
        # pruned weights are exact zeros in the generated weights, and only they are
        assert r["n_zero"] == la.n_weights - la.n_nonzero == r["alloc_n_pruned"]
        # the generated weight file holds q: the integers of the allocation's codebook, within B bits
        wfile = prj / r["weight_file"]
        vals = np.array([float(v) for v in wfile.read_text().replace("\n", ",").split(",") if v.strip()])
        q = run.int_weights(s.name)
        assert np.all(vals == np.round(vals)) and np.abs(vals).max() <= 2 ** (la.bits - 1) - 1
        assert sorted(vals.astype(int).tolist()) == sorted(np.asarray(q).astype(int).ravel().tolist())
    # no machine path leaks into the written project beyond the final location
    assert ".tmp" not in (prj / "hls4ml_config.yml").read_text()


_CSYNTH = """<?xml version="1.0" encoding="UTF-8"?>
<profile>
  <UserAssignments><TargetClockPeriod>10.00</TargetClockPeriod></UserAssignments>
  <PerformanceEstimates>
    <SummaryOfTimingAnalysis><EstimatedClockPeriod>7.250</EstimatedClockPeriod></SummaryOfTimingAnalysis>
    <SummaryOfOverallLatency><Best-caseLatency>21</Best-caseLatency><Worst-caseLatency>21</Worst-caseLatency>
      <Interval-min>9</Interval-min><Interval-max>9</Interval-max></SummaryOfOverallLatency>
  </PerformanceEstimates>
  <AreaEstimates>
    <Resources><BRAM_18K>4</BRAM_18K><DSP>2</DSP><FF>12345</FF><LUT>23456</LUT><URAM>0</URAM></Resources>
    <AvailableResources><BRAM_18K>280</BRAM_18K><DSP>220</DSP><FF>106400</FF><LUT>53200</LUT><URAM>0</URAM></AvailableResources>
  </AreaEstimates>
</profile>
"""


@pytest.mark.slow
def test_synth_without_vendor_tool_then_reports_copied_back(demo_run, copy_run, monkeypatch):
    import shutil as _sh

    from opq_hw.artifact import write_json
    from opq_hw.cost import estimate
    from opq_hw.flows import hls4ml_flow
    from opq_hw.run import load_run

    demo_run = copy_run(demo_run)
    real_which = _sh.which
    monkeypatch.setattr(hls4ml_flow.shutil, "which", lambda c: None if c in ("vitis-run", "vivado_hls") else real_which(c))
    with pytest.raises(OpqError, match=r"vivado_hls -f build_prj.tcl"):
        hls4ml_flow.build(demo_run, board="pynq-z2", backend="Vivado", synth=True, log=lambda *_: None)
    prj = demo_run / "build" / "hls4ml"
    assert (prj / "build_prj.tcl").is_file()
    with pytest.raises(OpqError, match="no synthesis report"):
        hls4ml_flow.report(demo_run, write=False)
    # the user ran the command elsewhere and copied the reports back
    sol = prj / "myproject_prj"
    (sol / "solution1" / "syn" / "report").mkdir(parents=True)
    (sol / "vivado_hls.app").write_text('<project><solutions><solution name="solution1"/></solutions></project>')
    (sol / "solution1" / "syn" / "report" / "myproject_csynth.xml").write_text(_CSYNTH)
    run = load_run(demo_run)
    write_json(demo_run / "cost.json", estimate(run.specs, run.allocation, "pynq-z2", "hls4ml-latency").to_dict())
    rep = hls4ml_flow.report(demo_run)
    assert rep["measured"] == {"LUT": 23456, "FF": 12345, "DSP": 2, "BRAM18": 4, "URAM": 0}
    assert rep["timing"]["EstimatedClockPeriod"] == 7.25 and rep["timing"]["WorstLatency"] == 21
    lut = next(r for r in rep["side_by_side"] if r["resource"] == "LUT")
    assert lut["estimated"] is not None and lut["rel_error"] == pytest.approx((lut["estimated"] - 23456) / 23456, abs=1e-4)
    res = json.loads((prj / "resources.json").read_text())
    assert res["LUT"] == 23456 and "csynth" in res["source"]
    assert (demo_run / "reports" / "hls4ml_synth.json").is_file()


@pytest.mark.slow
def test_unknown_board_and_strategy_are_named(demo_run):
    from opq_hw.flows.hls4ml_flow import build

    with pytest.raises(OpqError, match="no-such-board"):
        build(demo_run, board="no-such-board", log=lambda *_: None)
    with pytest.raises(OpqError, match="strategy"):
        build(demo_run, board="pynq-z2", strategy="fast", log=lambda *_: None)


@pytest.fixture(scope="module")
def float_run(tmp_path_factory):
    """digits-cnn with float (non-pow2) scales, no finetuning: not representable in fixed point."""
    from opq_hw.pipeline import CompressConfig, compress_run

    cfg = CompressConfig(model="digits-cnn", data="digits", target_cr=20, epochs=0, scale_mode="float")
    return compress_run(cfg, tmp_path_factory.mktemp("float") / "run", progress=False, log=lambda *_: None)


@pytest.mark.slow
@pytest.mark.tools
def test_float_run_is_refused_or_measured(float_run):
    from opq_hw.flows.hls4ml_flow import build
    from opq_hw.simulate import simulate

    with pytest.raises(OpqError, match="float.*allow-inexact"):
        build(float_run, board="pynq-z2", log=lambda *_: None)
    with pytest.raises(OpqError, match="allow-inexact"):
        simulate(float_run, "csim", n=5, write=False, log=None)
    res = simulate(float_run, "csim", n=60, write=False, log=None, allow_inexact=True)
    assert not res["bit_exact"] and res["max_abs_diff"] > 0 and res["note"].startswith("float-scale run")
    assert res["level_info"]["exact"] is False


@pytest.mark.slow
def test_unknown_option_is_named(demo_run):
    from opq_hw.flows.hls4ml_flow import build

    with pytest.raises(OpqError, match="target_fps"):
        build(demo_run, part="xc7z020clg400-1", target_fps=1000.0, log=lambda *_: None)


@pytest.mark.slow
@pytest.mark.tools
@pytest.mark.parametrize("backend,io,board", [("Vitis", "parallel", None), ("Vitis", "stream", None),
                                              ("Vivado", "parallel", "pynq-z2"), ("Vivado", "stream", None)])
def test_csim_bit_exact_demo(demo_run, backend, io, board):
    from opq_hw.simulate import simulate

    # with a board, the reuse factors come from the cost model (hls4ml-resource: folded multipliers)
    opts = dict(board=board, strategy="resource") if board else {}
    res = simulate(demo_run, "csim", write=False, log=None, backend=backend, io=io, **opts)  # the whole test split
    assert res["bit_exact"], res
    assert res["exact_samples"] == res["n"] and res["max_diff_lsb"] == 0.0
    assert res["accuracy"] == res["ref_accuracy"]
    info = res["level_info"]
    assert info["io_type"] == f"io_{io}" and info["backend"] == backend
    if board:
        assert info["reuse_source"].startswith("cost model")


@pytest.mark.slow
@pytest.mark.tools
@pytest.mark.parametrize("backend,io", [("Vitis", "parallel"), ("Vivado", "stream")])
def test_csim_bit_exact_mlp(mlp_run, backend, io):
    from opq_hw.simulate import simulate

    res = simulate(mlp_run, "csim", write=False, log=None, backend=backend, io=io)
    assert res["bit_exact"] and res["n"] == res["exact_samples"] > 100
    assert all(r["weight_width"] == r["alloc_bits"] for r in res["level_info"]["layers"])


@pytest.mark.slow
@pytest.mark.tools
def test_csim_bit_exact_mnist1d(mnist1d_run):
    from opq_hw.simulate import simulate

    res = simulate(mnist1d_run, "csim", n=300, write=False, log=None, io="stream")
    assert res["bit_exact"] and res["exact_samples"] == 300
    assert all(r["weight_width"] == r["alloc_bits"] for r in res["level_info"]["layers"])
