"""FINN flow: the build directory contract and folding (fast, no FINN), the worker's own graph
rewrites on tiny QONNX graphs (qonnx only), and FINN's steps in `.venv-finn` (slow, tools)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from opq_hw.errors import OpqError
from opq_hw.flows import finn_flow


def _contract(run_dir, **kw):
    return finn_flow.build(run_dir, board="pynq-z2", run_finn=False, log=lambda *_: None, **kw)


# --------------------------------------------------------------------------------------------
# directory contract and folding (no FINN)
# --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_directory_contract_without_finn(demo_run):
    from opq_hw.boards import load_board
    from opq_hw.cost import choose_folding
    from opq_hw.run import load_run

    rec = _contract(demo_run)
    d = demo_run / "build" / "finn"
    for f in ("model.qonnx.onnx", "folding_config.json", "specialize_layers_config.json",
              "dataflow_build_config.json", "opq_finn.json"):
        assert (d / f).is_file(), f
    assert (d / "model.qonnx.onnx").read_bytes() == (demo_run / "model.qonnx.onnx").read_bytes()
    assert rec["finn_status"].startswith("skipped")
    board = load_board("pynq-z2")
    cfg = json.loads((d / "dataflow_build_config.json").read_text())
    assert cfg["fpga_part"] == board.part == "xc7z020clg400-1"
    assert cfg["synth_clk_period_ns"] == pytest.approx(1000 / board.clock_mhz)
    assert cfg["board"] == "Pynq-Z2" and cfg["shell_flow_type"] == "vivado_zynq"
    assert cfg["folding_config_file"] == "folding_config.json"
    assert cfg["steps"][0] == "step_qonnx_to_finn" and "step_synthesize_bitfile" in cfg["steps"]
    assert "finn build dataflow_build_config.json model.qonnx.onnx" in rec["finn_build_command"]

    run = load_run(demo_run)
    fold = json.loads((d / "folding_config.json").read_text())
    spec = json.loads((d / "specialize_layers_config.json").read_text())
    expected = choose_folding(run.specs, run.allocation, board, arch="finn-mvau", act_bits=run.config["act_bits"])
    assert len(fold) - 1 == len(run.specs) == len(spec) - 1  # + "Defaults"
    for k, s in enumerate(run.specs):
        f = fold[f"MVAU_hls_{k}"]
        assert spec[f"MVAU_{k}"] == {"preferred_impl_style": "hls"}
        assert (s.n_weights // s.out_channels) % f["SIMD"] == 0 and s.out_channels % f["PE"] == 0
        assert (f["PE"], f["SIMD"]) == (expected[s.name]["pe"], expected[s.name]["simd"])
        assert f["resType"] == "lut"
    # the build record and report round-trip through JSON; no absolute paths of this machine
    assert json.loads((d / "opq_finn.json").read_text()) == json.loads(json.dumps(rec))
    assert str(demo_run) not in (d / "dataflow_build_config.json").read_text()
    assert (demo_run / "reports" / "finn.md").is_file()


@pytest.mark.slow
def test_target_fps_folds_to_the_target(demo_run):
    from opq_hw.boards import load_board

    clock = load_board("pynq-z2").clock_mhz * 1e6
    fast = _contract(demo_run)
    slow = _contract(demo_run, target_fps=2000.0)
    assert slow["ours_ii_cycles"] <= clock / 2000.0
    assert slow["ours_ii_cycles"] > fast["ours_ii_cycles"]  # folded harder: fewer resources
    assert slow["ours_totals"]["LUT"] < fast["ours_totals"]["LUT"]
    with pytest.raises(OpqError, match="target-fps|target_fps"):
        _contract(demo_run, target_fps=1e12)


@pytest.mark.slow
def test_bad_inputs_name_the_fix(demo_run, tmp_path):
    with pytest.raises(OpqError, match="does not support the FINN flow"):
        finn_flow.build(demo_run, board="ecp5-85f", run_finn=False, log=lambda *_: None)
    with pytest.raises(OpqError, match="needs --board"):
        finn_flow.build(demo_run, board=None, run_finn=False, log=lambda *_: None)
    with pytest.raises(OpqError, match="positive"):
        _contract(demo_run, target_fps=-5)
    with pytest.raises(OpqError, match="do not apply to the FINN flow"):
        _contract(demo_run, io="stream")
    with pytest.raises(OpqError, match="make finn-env"):
        finn_flow.build(demo_run, board="pynq-z2", finn_python_path=tmp_path / "nope" / "python", log=lambda *_: None)
    with pytest.raises(OpqError, match="not an opq-hw run"):
        finn_flow.build(tmp_path, board="pynq-z2", run_finn=False, log=lambda *_: None)


def test_configs_name_finn_nodes_in_order():
    spec, fold = finn_flow.finn_configs(["a", "b"], {"a": {"pe": 2, "simd": 3}, "b": {"pe": 1, "simd": 8}})
    assert spec == {"Defaults": {}, "MVAU_0": {"preferred_impl_style": "hls"}, "MVAU_1": {"preferred_impl_style": "hls"}}
    assert fold["MVAU_hls_0"]["PE"] == 2 and fold["MVAU_hls_0"]["SIMD"] == 3
    assert fold["MVAU_hls_1"] == {"PE": 1, "SIMD": 8, "resType": "lut", "mem_mode": "internal_decoupled", "ram_style": "auto"}


def test_software_nodes_say_where_and_why():
    nodes = [{"name": "T", "op_type": "Transpose", "hw": False}, {"name": "M0", "op_type": "MVAU", "hw": True},
             {"name": "X", "op_type": "Softsign", "hw": False}, {"name": "M1", "op_type": "MVAU", "hw": True},
             {"name": "A", "op_type": "Add", "hw": False}]
    sw = finn_flow._software_nodes(nodes)
    assert [n["name"] for n in sw] == ["T", "X", "A"]
    assert "before the accelerator" in sw[0]["why"]
    assert "refuse" in sw[1]["why"]
    assert "after the accelerator" in sw[2]["why"]


def test_residual_add_is_refused_by_name_and_a_bias_add_is_not(tmp_path):
    """A join of two feature maps is refused before FINN runs; an Add of a constant (a bias) is not."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    bias = helper.make_tensor("b", TensorProto.FLOAT, [4], [0.0] * 4)

    def save(nodes):
        path = tmp_path / f"m{len(nodes)}.onnx"
        onnx.save(helper.make_model(helper.make_graph(nodes, "g", [x], [y], [bias])), str(path))
        return path

    finn_flow.refuse_unsupported(save([helper.make_node("Add", ["x", "b"], ["y"], name="bias_add")]))
    joined = save([helper.make_node("Relu", ["x"], ["r"], name="relu"),
                   helper.make_node("Add", ["r", "x"], ["y"], name="skip_add")])
    with pytest.raises(OpqError, match=r"cannot take 'skip_add' \(Add\): FINN 1.6.1 streamlines residual Adds"):
        finn_flow.refuse_unsupported(joined)


def test_missing_env_message(monkeypatch, tmp_path):
    with pytest.raises(OpqError, match="make finn-env"):
        finn_flow.finn_python(tmp_path / "python")
    monkeypatch.setenv("OPQ_HW_FINN_PYTHON", str(tmp_path / "python"))
    found = finn_flow.finn_python()
    assert found is None or found.name == "python" and found.parent.parent.name == ".venv-finn"


def test_worker_imports_neither_torch_nor_opq_hw():
    code = ("import runpy, sys; runpy.run_path(sys.argv[1], run_name='not_main'); "
            "bad = [m for m in ('torch', 'opq_hw', 'brevitas', 'finn') if m in sys.modules]; print(bad); "
            "sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code, str(finn_flow.WORKER)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


# --------------------------------------------------------------------------------------------
# the worker's graph rewrites, on tiny graphs (qonnx is in the main environment too)
# --------------------------------------------------------------------------------------------
def _worker():
    import runpy

    return runpy.run_path(str(finn_flow.WORKER), run_name="finn_worker_under_test")


def _mt_model(thresholds: np.ndarray, in_dtype: str, out_bias: float):
    from onnx import TensorProto, helper
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper

    c, n_t = thresholds.shape
    inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c])
    node = helper.make_node("MultiThreshold", ["x", "t"], ["y"], domain="qonnx.custom_op.general",
                            out_dtype="INT8", out_bias=float(out_bias))
    m = ModelWrapper(helper.make_model(helper.make_graph([node], "g", [inp], [out])))
    m.set_initializer("t", thresholds.astype(np.float32))
    m.set_tensor_datatype("x", DataType[in_dtype])
    return m


def _exec(m, x):
    from qonnx.core.onnx_exec import execute_onnx

    return np.concatenate([execute_onnx(m, {"x": x[i:i + 1]})["y"] for i in range(len(x))])


@pytest.mark.parametrize("in_dtype", ["INT16", "FLOAT32"])
def test_round_half_even_matches_brevitas_rounding(in_dtype):
    """A quantizer y = clip(round_half_even(x / 4), -8, 7) as FINN writes it (thresholds at the
    half steps, counted with >=) rounds ties up until round_half_even fixes the odd levels."""
    w = _worker()
    levels = np.arange(-8, 8)
    t = ((levels[1:] - 0.5) * 4.0)[None, :].repeat(2, axis=0)  # 15 thresholds, 2 channels
    x = np.arange(-40, 41, dtype=np.float32)[:, None].repeat(2, axis=1)
    ref = np.clip(np.round(x / 4.0), -8, 7)  # numpy rounds half to even, as Brevitas / QONNX ROUND
    m = _mt_model(t, in_dtype, out_bias=-8)
    before = _exec(m, x)
    assert (before != ref).any()  # ties went up: e.g. x = 2 -> 1, but round_half_even(0.5) = 0
    m, n_fix = w["round_half_even"](m)
    assert n_fix > 0
    assert np.array_equal(_exec(m, x), ref)


def test_round_half_even_refuses_what_it_cannot_read():
    w = _worker()
    m = _mt_model(np.array([[3.0, 1.0]]), "INT8", out_bias=0)
    with pytest.raises(RuntimeError, match="not ascending"):
        w["round_half_even"](m)


def test_transpose_moves_before_a_per_tensor_threshold():
    from onnx import TensorProto, helper
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    w = _worker()
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 1, 2])
    nodes = [helper.make_node("MultiThreshold", ["x", "t"], ["q"], domain="qonnx.custom_op.general",
                              out_dtype="UINT2", out_bias=0.0),
             helper.make_node("Transpose", ["q"], ["y"], perm=[0, 2, 3, 1])]
    m = ModelWrapper(helper.make_model(helper.make_graph(nodes, "g", [x], [y])))
    m.set_initializer("t", np.array([[-0.5, 0.5, 1.5]], dtype=np.float32))
    m.set_tensor_datatype("x", DataType["FLOAT32"])
    m.set_tensor_shape("q", [1, 2, 3, 1])
    xv = np.random.default_rng(0).normal(size=(1, 2, 3, 1)).astype(np.float32) * 2
    ref = execute_onnx(m, {"x": xv})["y"]
    m, n = w["move_transpose_before_scalar_threshold"](m)
    assert n == 1 and [nd.op_type for nd in m.graph.node] == ["Transpose", "MultiThreshold"]
    assert np.array_equal(execute_onnx(m, {"x": xv})["y"], ref)


def test_fold_bias_quant_folds_only_bias_quants():
    from onnx import TensorProto, helper
    from qonnx.core.modelwrapper import ModelWrapper

    w = _worker()
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])
    nodes = [helper.make_node("Quant", ["b", "bs", "bz", "bb"], ["bq"], domain="qonnx.custom_op.general",
                              signed=1, narrow=0, rounding_mode="ROUND"),
             helper.make_node("Gemm", ["x", "w", "bq"], ["y"], transB=1)]
    m = ModelWrapper(helper.make_model(helper.make_graph(nodes, "g", [x], [y])))
    for name, v in {"b": [0.3, -0.26], "bs": [0.25, 0.125], "bz": [0.0], "bb": [16.0], "w": np.ones((2, 3))}.items():
        m.set_initializer(name, np.asarray(v, dtype=np.float32))
    m, n = w["fold_bias_quant"](m)
    assert n == 1 and [nd.op_type for nd in m.graph.node] == ["Gemm"]
    assert np.array_equal(m.get_initializer("bq"), np.array([0.25, -0.25], dtype=np.float32))


# --------------------------------------------------------------------------------------------
# FINN's steps in .venv-finn (CI runs `make finn-env` first)
# --------------------------------------------------------------------------------------------
def _need_finn():
    if finn_flow.finn_python() is None:
        msg = f"no FINN environment: {finn_flow.ENV_HINT}"
        if os.environ.get("CI"):
            pytest.fail(msg)  # CI installs it; a missing environment there is a failure
        pytest.skip(msg)


@pytest.mark.slow
@pytest.mark.tools
def test_finn_dataflow_graph_is_bit_exact_and_estimates_match(demo_run):
    _need_finn()
    from opq_hw.run import load_run

    rec = finn_flow.build(demo_run, board="pynq-z2", log=lambda *_: None)
    assert rec["finn_status"] == "ran"
    n_test = len(np.load(demo_run / "golden_input.npy"))
    hw = [v for v in rec["verify"] if v["stage"] == "hw_layers"]
    assert hw and hw[0]["n"] == n_test and hw[0]["bit_exact"] and hw[0]["max_abs_diff"] == 0.0
    assert rec["info"]["half_even_thresholds"] > 0
    # every conv/linear layer is a FINN hardware layer; only the input layout change stays outside
    run = load_run(demo_run)
    assert [r["layer"] for r in rec["finn_layers"]] == [s.name for s in run.specs]
    assert all(r["op_type"] == "MVAU_hls" for r in rec["finn_layers"])
    assert [n["op_type"] for n in rec["software_nodes"]] == ["Transpose"]
    # FINN applied our folding
    for r in rec["finn_layers"]:
        assert (r["PE"], r["SIMD"]) == (rec["folding"][r["layer"]]["pe"], rec["folding"][r["layer"]]["simd"])
    # our finn-mvau model vs FINN's analytical estimates: BRAM18, DSP and cycles exact, LUT within 10%
    s = rec["comparison"]["summary"]
    n = len(run.specs)
    assert s["BRAM18"]["exact_layers"] == n and s["DSP"]["exact_layers"] == n and s["cycles"]["exact_layers"] == n
    assert s["LUT"]["max_abs_rel_err"] <= 0.10
    # with FINN's minimised accumulator/weight widths our LUT formula is FINN's, exactly
    assert s["LUT_with_finn_types"]["exact_layers"] == n
    d = demo_run / "build" / "finn"
    for f in ("model_hw.onnx", "model_folded.onnx", "finn_estimates.json", "applied_folding_config.json"):
        assert (d / f).is_file(), f
    cfg = json.loads((d / "dataflow_build_config.json").read_text())
    assert cfg["model_path"] == "model_hw.onnx" and cfg["steps"][0] == "step_create_dataflow_partition"
    assert cfg["folding_config_file"] == "applied_folding_config.json"
    # FINN's own config class reads the build config (what `finn build` does first)
    code = ("from finn.util.settings import initialize_dummy_settings; initialize_dummy_settings(); import json, sys; "
            "from finn.builder.build_dataflow_config import DataflowBuildConfig as C; "
            "c = C.from_dict(json.load(open(sys.argv[1]))); print(c._resolve_fpga_part(), c.synth_clk_period_ns)")
    out = subprocess.run([str(finn_flow.finn_python()), "-c", code, str(d / "dataflow_build_config.json")],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["xc7z020clg400-1", "10.0"]
    assert str(demo_run) not in (d / "finn_worker.log").read_text()
