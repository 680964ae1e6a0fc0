"""Run directories end to end: contents, reload, QONNX equivalence, bad input, the CLI."""
import contextlib
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from opq_hw.cli import main
from opq_hw.errors import OpqError
from opq_hw.export import execute_qonnx
from opq_hw.pipeline import CompressConfig, compress_run, quantize_input
from opq_hw.run import load_run
from opq_hw.spec import Allocation


def test_demo_run_contents(demo_run):
    names = {p.name for p in demo_run.iterdir()}
    assert {"manifest.json", "allocation.json", "specs.json", "weights.pt", "model.qonnx.onnx", "golden_input.npy",
            "golden_output.npy", "metrics.json"} <= names
    assert not any(n.endswith(".tmp") or n.startswith(".") for n in names)
    m = json.loads((demo_run / "metrics.json").read_text())
    for k in ("cr_w", "cr_idx", "acc_float", "acc_oneshot", "acc_finetuned"):
        assert k in m
    assert 0.0 <= m["acc_oneshot"] <= 1.0 and m["acc_float"] > 0.9
    assert m["cr_w"] == pytest.approx(20, rel=0.01)
    man = json.loads((demo_run / "manifest.json").read_text())
    assert {"torch", "brevitas", "qonnx"} <= set(man["versions"]) and "allocate" in man["timings_s"]
    a = Allocation.from_dict(json.loads((demo_run / "allocation.json").read_text()))
    assert a.scale_mode == "pow2" and a.method == "opq"


def test_load_run_reproduces_golden_output_exactly(demo_run):
    run = load_run(demo_run)
    x = np.load(demo_run / "golden_input.npy")
    y = np.load(demo_run / "golden_output.npy")
    assert np.array_equal(quantize_input(run, x), x)  # golden inputs are on the input grid
    with torch.no_grad():
        assert np.array_equal(run.qmodel(torch.as_tensor(x)).numpy(), y)
    xt, yt = run.test_data()
    assert len(xt) == len(x)
    for la in run.allocation.layers:
        q = run.int_weights(la.name)
        assert int((q != 0).sum()) == la.n_nonzero


def test_qonnx_execution_equals_brevitas(demo_run, mlp_run):
    for r in (demo_run, mlp_run):
        x = np.load(r / "golden_input.npy")[:40]
        y = np.load(r / "golden_output.npy")[:40]
        assert np.array_equal(execute_qonnx(r / "model.qonnx.onnx", x), y)


@pytest.mark.slow
def test_export_cleanup_is_qonnx_cleanup_in_one_folding_pass(demo_run, tmp_path, monkeypatch):
    """The export's cleanup folds the constant subgraphs in one pass (qonnx folds one node per pass,
    re-inferring every shape: quadratic); the file is byte-identical to qonnx's own cleanup."""
    import onnx
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup

    import opq_hw.export as ex

    raw = []
    ours = ex._cleanup
    # the masks traced as they are (not as their values, `weights_as_values`): constant subgraphs to fold
    monkeypatch.setattr(ex, "weights_as_values", lambda m: contextlib.nullcontext(m))
    monkeypatch.setattr(ex, "_cleanup", lambda p: (raw.append(tmp_path / "raw.onnx"), onnx.save(p, raw[0]), ours(p))[-1])
    run = load_run(demo_run)
    ex.export_qonnx(run.qmodel, torch.zeros((1,) + tuple(run.specs[0].in_shape)), tmp_path / "ours.onnx")
    m = ModelWrapper(str(raw[0]))  # the raw export, as Brevitas would have written it
    n_const = sum(all(m.get_initializer(i) is not None for i in n.input) for n in m.graph.node
                  if n.op_type not in ex.QNT_OPS)
    assert n_const >= 5  # there is something to fold
    cleanup(str(raw[0]), out_file=str(tmp_path / "qonnx.onnx"))
    assert (tmp_path / "ours.onnx").read_bytes() == (tmp_path / "qonnx.onnx").read_bytes()
    # the export as it runs (the masks as their values): nothing to fold, and the steps after InferShapes,
    # with their model cleanups, skipped as changing nothing (`_settled`); still qonnx's file
    monkeypatch.undo()
    settled, real_settled = [], ex._settled
    monkeypatch.setattr(ex, "_settled", lambda m: settled.append(real_settled(m)) or settled[-1])
    raw.clear()
    monkeypatch.setattr(ex, "_cleanup", lambda p: (raw.append(tmp_path / "raw2.onnx"), onnx.save(p, raw[0]), ours(p))[-1])
    ex.export_qonnx(run.qmodel, torch.zeros((1,) + tuple(run.specs[0].in_shape)), tmp_path / "ours2.onnx")
    assert settled == [True]
    cleanup(str(raw[0]), out_file=str(tmp_path / "qonnx2.onnx"))
    assert (tmp_path / "ours2.onnx").read_bytes() == (tmp_path / "qonnx2.onnx").read_bytes()


@pytest.mark.parametrize("case", ["transpose", "shape", "unused", "static_input", "settled"])
def test_cleanup_skips_only_steps_that_change_nothing(case, tmp_path):
    """`_cleanup` skips qonnx's steps after InferShapes (and their model cleanups) only on a graph where they
    change nothing (`_settled`); on a small graph for each condition it checks, the file is qonnx's own cleanup
    (without the checks, the transpose and shape cases differ from it)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_shapes import InferShapes
    from qonnx.util.cleanup import cleanup

    import opq_hw.export as ex

    w = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "w")
    q = [numpy_helper.from_array(np.array(v, dtype=np.float32), n) for n, v in
         (("s", 0.5), ("z", 0.0), ("b", 4.0))]
    nodes = [helper.make_node("Quant", ["w", "s", "z", "b"], ["wq"], domain="qonnx.custom_op.general",
                              signed=1, narrow=0, rounding_mode="ROUND"),
             helper.make_node("MatMul", ["x", "wq"], ["y0"]), helper.make_node("Relu", ["y0"], ["y"])]
    inits, inputs = [w] + q, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])]
    if case == "transpose":  # FoldTransposeIntoQuantInit's pattern
        nodes[0].output[0] = "wt"
        nodes.insert(1, helper.make_node("Transpose", ["wt"], ["wq"], perm=[0, 1]))
    elif case == "shape":  # the Shape of a known shape: FoldConstants folds it (the one-pass folding does not)
        nodes[2:] = [helper.make_node("Shape", ["y0"], ["sh"]), helper.make_node("Reshape", ["y0", "sh"], ["y"])]
    elif case == "unused":  # an initializer no node reads
        inits.append(numpy_helper.from_array(np.ones(3, dtype=np.float32), "unused"))
    elif case == "static_input":  # a graph input that is an initializer
        inputs.append(helper.make_tensor_value_info("b", TensorProto.FLOAT, []))
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
                              initializer=inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "raw.onnx")
    ours = ex._cleanup(onnx.load(tmp_path / "raw.onnx"))
    ours.save(tmp_path / "ours.onnx")
    cleanup(str(tmp_path / "raw.onnx"), out_file=str(tmp_path / "qonnx.onnx"))
    assert (tmp_path / "ours.onnx").read_bytes() == (tmp_path / "qonnx.onnx").read_bytes()
    m = ModelWrapper(str(tmp_path / "raw.onnx"))
    # the first step's model cleanup removes an unused initializer and a static input: settled after it
    assert ex._settled(m.transform(InferShapes())) == (case not in ("transpose", "shape"))


@pytest.mark.parametrize("fixture", ["demo_run", "mlp_run"])
def test_export_of_mask_values_is_the_traced_masks_folded(fixture, request, tmp_path, monkeypatch):
    """The export traces each layer's weight as the value its mask parametrization computes
    (`weights_as_values`), not as the mask's ~10 nodes on weight-sized constants that the cleanup then
    folded back: the same graph after the cleanup (operators, wiring, initializer values, shapes; only the
    order of the nodes and so their names differ) and the same outputs as the export that traces the masks."""
    from graph_compare import graph_structure

    import opq_hw.export as ex

    r = request.getfixturevalue(fixture)
    run = load_run(r)
    x0 = torch.zeros((1,) + tuple(run.specs[0].in_shape))
    ex.export_qonnx(run.qmodel, x0, tmp_path / "values.onnx")
    kinds = {type(m).__name__ for m in run.qmodel.modules()}
    assert "FrozenMask" in kinds and "_Value" not in kinds  # the parametrizations are back
    monkeypatch.setattr(ex, "weights_as_values", lambda m: contextlib.nullcontext(m))
    ex.export_qonnx(run.qmodel, x0, tmp_path / "traced.onnx")
    a, b = graph_structure(tmp_path / "traced.onnx"), graph_structure(tmp_path / "values.onnx")
    assert a["nodes"] and a == b
    x = np.load(r / "golden_input.npy")[:40]
    y = execute_qonnx(tmp_path / "values.onnx", x)
    assert np.array_equal(y, execute_qonnx(tmp_path / "traced.onnx", x))
    assert np.array_equal(y, np.load(r / "golden_output.npy")[:40])


def test_mnist1d_run_and_qonnx(mnist1d_run):
    m = json.loads((mnist1d_run / "metrics.json").read_text())
    assert m["acc_float"] > 0.6
    x = np.load(mnist1d_run / "golden_input.npy")[:20]
    y = np.load(mnist1d_run / "golden_output.npy")[:20]
    assert np.array_equal(execute_qonnx(mnist1d_run / "model.qonnx.onnx", x), y)


def test_float_scale_mode_qonnx_close(tmp_path):
    out = compress_run(CompressConfig(model="digits-mlp", data="digits", scale_mode="float", epochs=0), tmp_path / "f",
                       progress=False, log=lambda *_: None)
    x = np.load(out / "golden_input.npy")[:20]
    y = np.load(out / "golden_output.npy")[:20]
    np.testing.assert_allclose(execute_qonnx(out / "model.qonnx.onnx", x), y, rtol=1e-5, atol=1e-5)


def test_output_dir_guards(tmp_path, demo_run):
    with pytest.raises(OpqError, match="different run"):
        compress_run(CompressConfig(model="digits-cnn", data="digits", target_cr=10, epochs=2), demo_run)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "x.txt").write_text("x")
    with pytest.raises(OpqError, match="not an opq-hw run"):
        compress_run(CompressConfig(model="digits-mlp", epochs=0), junk)
    assert [p.name for p in junk.iterdir()] == ["x.txt"]  # left untouched


def test_failure_leaves_nothing_behind(tmp_path):
    out = tmp_path / "r"
    with pytest.raises(OpqError):
        compress_run(CompressConfig(model="digits-mlp", target_cr=10_000, epochs=0), out)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_bad_checkpoints(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(OpqError, match="weights-only state_dict"):
        compress_run(CompressConfig(model="digits-mlp", weights=str(bad), epochs=0), tmp_path / "o")
    wrong = tmp_path / "wrong.pt"
    torch.save({"nope": torch.zeros(3)}, wrong)
    with pytest.raises(OpqError, match="does not match the model"):
        compress_run(CompressConfig(model="digits-mlp", weights=str(wrong), epochs=0), tmp_path / "o")
    with pytest.raises(OpqError, match="not found"):
        compress_run(CompressConfig(model="digits-mlp", weights=str(tmp_path / "missing.pt"), epochs=0), tmp_path / "o")
    pickled = tmp_path / "pickled.pt"
    torch.save({"model": torch.nn.Linear(2, 2)}, pickled)  # a pickled module: refused by weights_only
    with pytest.raises(OpqError, match="weights-only"):
        compress_run(CompressConfig(model="digits-mlp", weights=str(pickled), epochs=0), tmp_path / "o")


def test_float_onnx_model_without_data(tmp_path):
    from opq_hw.models import digits_cnn

    torch.manual_seed(0)
    m = digits_cnn().eval()
    path = tmp_path / "float.onnx"
    torch.onnx.export(m, torch.zeros(1, 1, 8, 8), str(path), dynamo=False)
    logs = []
    out = compress_run(CompressConfig(model=str(path), data=None, target_cr=10, epochs=0), tmp_path / "run",
                       progress=False, log=logs.append)
    assert any("finetuning and accuracy were skipped" in line for line in logs)
    metrics = json.loads((out / "metrics.json").read_text())
    assert "acc_float" not in metrics and metrics["cr_w"] == pytest.approx(10, rel=0.01)
    run = load_run(out)
    x = np.load(out / "golden_input.npy")
    with torch.no_grad():
        assert np.array_equal(run.qmodel(torch.as_tensor(x)).numpy(), np.load(out / "golden_output.npy"))


def test_module_factory_model(tmp_path):
    out = compress_run(CompressConfig(model="opq_hw.models:digits_mlp", input_shape=(64,), target_cr=10, epochs=0),
                       tmp_path / "r", progress=False, log=lambda *_: None)
    with pytest.raises(OpqError, match="--model opq_hw.models:digits_mlp"):  # a run never names code we import
        load_run(out)
    assert load_run(out, model="opq_hw.models:digits_mlp").allocation.cr_w == pytest.approx(10, rel=0.01)
    with pytest.raises(OpqError, match="cannot load model factory"):
        compress_run(CompressConfig(model="no_such_mod:f", input_shape=(4,), epochs=0), tmp_path / "x")


def test_cli_errors_exit_2(capsys, tmp_path):
    assert main(["compress", "--model", "nope", "--out", str(tmp_path / "o")]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
    assert main(["compress", "--model", "digits-mlp", "--target-cr", "5000", "--out", str(tmp_path / "o")]) == 2
    assert "reachable range" in capsys.readouterr().err


def test_cli_compress_with_override(tmp_path, capsys):
    out = tmp_path / "r"
    rc = main(["compress", "--model", "digits-mlp", "--data", "digits", "--epochs", "1", "--target-cr", "12",
               "--override", "4:min_bits=6", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "CR_w 12" in printed and "accuracy: float" in printed
    a = Allocation.from_dict(json.loads((out / "allocation.json").read_text()))
    assert a.layer("4").bits >= 6


def test_import_is_light():
    code = ("import sys, opq_hw; heavy = [m for m in ('torch', 'brevitas', 'hls4ml', 'finn', 'qonnx', 'da4ml') "
            "if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_public_verbs_are_functions_after_full_import():
    import types

    import opq_hw
    import opq_hw.cli  # noqa: F401  (imports every submodule the verbs live in, lazily or not)
    import opq_hw.pipeline  # noqa: F401

    for name in ("inspect", "allocate", "compress", "apply", "finetune", "export_qonnx", "load_run"):
        verb = getattr(opq_hw, name)
        assert callable(verb) and not isinstance(verb, types.ModuleType), name
