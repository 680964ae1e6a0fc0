"""The ONNX front end on the corpus of tests/corpus.py: the converted PyTorch model equals
onnxruntime on the original graph, compress -> QONNX is bit-exact, unsupported graphs are refused
with a named error (exit code 2, no traceback), and BatchNorm folding on the PyTorch path."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import corpus
from corpus import _init, _tiny
from opq_hw.errors import OpqError
from opq_hw.onnx_frontend import load_onnx, to_model_layout


def _ort(path, x: np.ndarray) -> np.ndarray:
    """onnxruntime on the original graph; a graph with a fixed batch is fed in chunks of it."""
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inp = s.get_inputs()[0]
    b = inp.shape[0]
    if not isinstance(b, int):
        return s.run(None, {inp.name: x})[0]
    n = len(x)
    xx = np.concatenate([x] * (b // n + 1))[:max(b, n) + (-max(b, n)) % b]
    return np.concatenate([s.run(None, {inp.name: xx[i:i + b]})[0] for i in range(0, len(xx), b)])[:n]


def _head(y: np.ndarray, tail: str | None) -> np.ndarray:
    t = torch.as_tensor(y)
    return {None: t, "softmax": torch.softmax(t, 1), "sigmoid": torch.sigmoid(t)}[tail].numpy()


@pytest.mark.slow  # the corpus takes ~20 s to train and write
@pytest.mark.parametrize("name", corpus.NAMES)
def test_frontend_equals_onnxruntime(onnx_corpus, name):
    e = onnx_corpus[name]
    fe = load_onnx(e.onnx)
    rec = fe.record
    assert rec["input_layout"] == e.layout and rec["tail"] == e.tail
    assert len(rec.get("folded_bn", [])) == e.n_bn and len(rec.get("kept_bn", [])) == e.n_kept
    ops = [n.op_type for n in fe.proto.graph.node]
    assert ops.count("BatchNormalization") == e.n_kept
    assert not set(ops) & {"Dropout", "Identity", "MatMul", "Reshape", "Squeeze", "Unsqueeze", "Shape",
                      "Softmax", "ReduceMean", "Transpose"}
    assert all(not t.external_data for t in fe.proto.graph.initializer)
    model = fe.torch_model().eval()
    d = np.load(e.npz)
    assert len(d["x_test"]) >= 200
    rng = np.random.default_rng(0)
    x_real = d["x_test"][:64]
    x_rand = rng.normal(0, 1, size=(32,) + x_real.shape[1:]).astype(np.float32)
    for x in (x_real, x_rand):
        with torch.no_grad():
            y = model(torch.as_tensor(to_model_layout(x, rec))).numpy()
        np.testing.assert_allclose(_head(y, rec["tail"]), _ort(e.onnx, x), rtol=1e-4, atol=2e-5)
    # the normalised graph goes through the front end unchanged (load_run reads it back)
    again = load_onnx_bytes(fe.to_bytes())
    assert [n.op_type for n in again.proto.graph.node] == [n.op_type for n in fe.proto.graph.node]


def load_onnx_bytes(data: bytes):
    import onnx

    from opq_hw.onnx_frontend import Frontend, normalize

    model, rec = normalize(onnx.load_from_string(data))
    return Frontend(model, rec)


@pytest.mark.slow
@pytest.mark.parametrize("name", corpus.NAMES)
def test_compress_then_qonnx_bit_exact(onnx_corpus, onnx_corpus_run, name):
    from opq_hw.simulate import simulate

    e = onnx_corpus[name]
    run = onnx_corpus_run(name)
    man = json.loads((run / "manifest.json").read_text())
    fe = man["frontend"]
    assert fe["input_layout"] == e.layout and len(fe.get("folded_bn", [])) == e.n_bn
    assert len(fe.get("kept_bn", [])) == len(man["bn_affine"]) == e.n_kept  # kept BNs: quantized channel affines
    if e.tail:
        assert f"tail: {e.tail} on the host" in " ".join(man["notes"])
    res = simulate(run, "qonnx", write=False, log=None)
    assert res["n"] >= 200 and res["bit_exact"] and res["max_diff_lsb"] == 0, res  # the output LSB is known
    assert res["accuracy"] > 0.15  # compressed 20x without finetuning, still far above chance (0.1)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in corpus.NAMES if n.startswith("k_")] + ["t_cnn_bn_o11"])
def test_compress_without_data(onnx_corpus, tmp_path, name):
    """No data: the input shape comes from the graph (no --input-shape), compress still exports."""
    from opq_hw.pipeline import CompressConfig, compress_run
    from opq_hw.simulate import simulate

    out = compress_run(CompressConfig(model=str(onnx_corpus[name].onnx), data=None, epochs=0, target_cr=8),
                       tmp_path / "run", progress=False, log=lambda *_: None)
    assert (out / "model.qonnx.onnx").is_file()
    with pytest.raises(OpqError, match="compressed without --data"):  # nothing calibrated: nothing to check
        simulate(out, "qonnx", data="golden", write=False, log=None)


@pytest.mark.slow
def test_external_data_run_is_self_contained(onnx_corpus, tmp_path):
    from opq_hw.cli import main

    src = tmp_path / "src"
    src.mkdir()
    for f in ("k_external.onnx", "k_external.weights"):
        shutil.copy(onnx_corpus["k_external"].onnx.parent / f, src / f)
    out = tmp_path / "run"
    assert main(["compress", "--model", str(src / "k_external.onnx"), "--out", str(out), "--target-cr", "8",
                 "--data", "digits", "--epochs", "0"]) == 0
    shutil.rmtree(src)  # later commands need nothing but the run
    from opq_hw.simulate import simulate

    assert simulate(out, "qonnx", data="golden", write=False, log=None)["bit_exact"]
    man = json.loads((out / "manifest.json").read_text())
    assert man["frontend"]["external_data"] is True


def _unsupported_cases():
    return sorted(corpus.UNSUPPORTED())


@pytest.mark.parametrize("case", _unsupported_cases())
def test_unsupported_graphs_are_refused_by_name(case, tmp_path, capsys):
    import onnx

    from opq_hw.cli import main

    model, text = corpus.UNSUPPORTED()[case]
    path = tmp_path / f"{case}.onnx"
    onnx.save(model, str(path))
    rc = main(["compress", "--model", str(path), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and text in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_input_shape_completes_unknown_dims(tmp_path):
    model, _ = corpus.UNSUPPORTED()["unknown_dims"]
    import onnx

    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    fe = load_onnx(path, input_shape=(3, 4, 4))
    assert fe.record["input_shape"] == [3, 4, 4]
    with pytest.raises(OpqError, match="does not fit the ONNX input"):
        load_onnx(path, input_shape=(2, 4, 4))


def test_channels_last_input_read_by_two_transposes(tmp_path):
    """tf2onnx without its transpose optimizer: each reader of the NHWC input has its own Transpose."""
    import onnx
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(1)
    k = [numpy_helper.from_array(rng.normal(size=(3, 2, 3, 3)).astype(np.float32), f"k{i}") for i in range(2)]
    nodes = [helper.make_node("Transpose", ["x"], [f"t{i}"], name=f"tr{i}", perm=[0, 3, 1, 2]) for i in range(2)]
    nodes += [helper.make_node("Conv", [f"t{i}", f"k{i}"], [f"c{i}"], name=f"conv{i}", kernel_shape=[3, 3],
                               pads=[1, 1, 1, 1]) for i in range(2)]
    nodes += [helper.make_node("Add", ["c0", "c1"], ["a"], name="add"),
              helper.make_node("GlobalAveragePool", ["a"], ["p"], name="gap"),
              helper.make_node("Flatten", ["p"], ["y"], name="flat")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, ["N", 4, 4, 2])],
                          [helper.make_tensor_value_info("y", 1, ["N", 3])], k)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    path = tmp_path / "two.onnx"
    onnx.save(m, str(path))
    fe = load_onnx(path)
    assert fe.record["input_layout"] == "NHWC" and "Transpose" not in {n.op_type for n in fe.proto.graph.node}
    x = rng.normal(size=(5, 4, 4, 2)).astype(np.float32)
    with torch.no_grad():
        y = fe.torch_model()(torch.as_tensor(to_model_layout(x, fe.record))).numpy()
    np.testing.assert_allclose(y, _ort(path, x), rtol=1e-4, atol=1e-5)


def test_to_model_layout():
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    assert to_model_layout(x, None) is x
    np.testing.assert_array_equal(to_model_layout(x, {"input_layout": "NHWC"}), x.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(to_model_layout(x[..., 0], "NWC"), x[..., 0].transpose(0, 2, 1))
    with pytest.raises(OpqError, match="cannot be in layout NWC"):
        to_model_layout(x, "NWC")


def test_user_data_is_converted_built_in_data_is_not():
    from opq_hw.data import Data, fit_to_model

    x = np.arange(3 * 8 * 2, dtype=np.float32).reshape(3, 8, 2)  # NWC: 8 steps, 2 channels
    y = np.arange(3)
    d = Data(x, y, x, y, kind="npz", name="mydata.npz")
    got = fit_to_model(d, (2, 8), n_out=3, layout="NWC")
    assert got.x_train.shape == (3, 2, 8) and np.array_equal(got.x_test, x.transpose(0, 2, 1)) and got.layout == "NWC"
    assert fit_to_model(d, (8, 2), n_out=3, layout=None).x_train is x  # already the model's layout


# ------------------------------------------------------------------ PyTorch path: BatchNorm folding

def _trained_bn_model():
    from torch import nn

    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                      nn.Linear(256, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    m.train()
    with torch.no_grad():
        for _ in range(5):
            m(torch.randn(32, 1, 8, 8) * 2 + 0.5)  # running statistics that are not the identity
    return m.eval()


def test_fold_batchnorm_torch_equals_unfolded():
    from torch import nn

    from opq_hw.bnfold import fold_batchnorm

    m = _trained_bn_model()
    x = torch.randn(16, 1, 8, 8)
    with torch.no_grad():
        ref = m(x)
        folds, kept = fold_batchnorm(m)
        out = m(x)
    assert folds == [{"bn": "1", "into": "0"}, {"bn": "5", "into": "4"}] and kept == []
    assert isinstance(m[1], nn.Identity) and isinstance(m[5], nn.Identity) and m[0].bias is not None
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_fold_batchnorm_keeps_bn_not_after_a_layer():
    """A BatchNorm after a ReLU or on the input is kept (the carrier makes it a channel affine), with the reason;
    one without running statistics is refused by name."""
    from torch import nn

    from opq_hw.bnfold import fold_batchnorm
    from opq_hw.onnx_frontend import UnfoldableBatchNorm

    m = nn.Sequential(nn.BatchNorm2d(1), nn.Conv2d(1, 4, 3), nn.ReLU(), nn.BatchNorm2d(4)).eval()
    folds, kept = fold_batchnorm(m)
    assert folds == [] and isinstance(m[3], nn.BatchNorm2d)
    assert kept == [{"bn": "0", "why": "follows the model input, not a Conv1d/Conv2d/Linear whose output only it reads"},
                    {"bn": "3", "why": "follows ReLU '2', not a Conv1d/Conv2d/Linear whose output only it reads"}]
    m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.BatchNorm2d(4, track_running_stats=False)).eval()
    with pytest.raises(UnfoldableBatchNorm, match="BatchNorm '2' keeps no running statistics"):
        fold_batchnorm(m)


def bn_factory():
    """A module:factory model with BatchNorm for the compress test below."""
    return _trained_bn_model()


@pytest.mark.slow
def test_compress_torch_model_folds_batchnorm(tmp_path):
    from opq_hw.pipeline import CompressConfig, compress_run
    from opq_hw.run import load_run
    from opq_hw.simulate import simulate

    from opq_hw.run import model_source

    from opq_hw.data import load_dataset

    xtr, ytr, xte, yte = load_dataset("digits")  # (N, 1, 8, 8); the factory's model has 3 outputs
    np.savez(tmp_path / "d3.npz", x_train=xtr, y_train=ytr % 3, x_test=xte, y_test=yte % 3)
    out = compress_run(CompressConfig(model="test_onnx_frontend:bn_factory", input_shape=(1, 8, 8), target_cr=4,
                                      data=str(tmp_path / "d3.npz"), epochs=0), tmp_path / "run", progress=False,
                       log=lambda *_: None)
    man = json.loads((out / "manifest.json").read_text())
    assert man["frontend"]["folded_bn"] == [{"bn": "1", "into": "0"}, {"bn": "5", "into": "4"}]
    assert "BatchNormalization '1' folded into '0'" in man["notes"]
    with model_source("test_onnx_frontend:bn_factory"):  # a factory run's model is given again
        run = load_run(out)
        assert not any(isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)) for m in run.qmodel.modules())
        assert simulate(out, "qonnx", data="golden", write=False, log=None)["bit_exact"]


def _quantized_mlp(kind: str):
    """A 16 -> 8 -> 4 MLP already quantized: QONNX Quant on weights and activations, or QCDQ (QuantizeLinear ->
    Clip -> DequantizeLinear on weights, QuantizeLinear -> DequantizeLinear on an activation), or QDQ with int8
    weight constants. Returns (model, the float weights the quantized graph computes with)."""
    from onnx import helper

    rng = np.random.default_rng(3)
    w1, w2 = rng.normal(size=(8, 16)).astype(np.float32), rng.normal(size=(4, 8)).astype(np.float32)
    s1, s2 = np.float32(2.0 ** -3), np.array([2.0 ** -2, 2.0 ** -3, 2.0 ** -2, 2.0 ** -4], np.float32)
    q1 = np.clip(np.round(w1 / s1), -8, 7) * s1  # 4-bit signed
    q2 = np.clip(np.round(w2 / s2[:, None]), -128, 127) * s2[:, None]  # int8 per output channel
    nodes, inits = [], [_init("b1", np.zeros(8)), _init("b2", np.zeros(4))]
    if kind == "qonnx":
        dom = "qonnx.custom_op.general"
        inits += [_init("w1", w1), _init("w2", w2), _init("s1", s1), _init("s2", s2[:, None]), _init("z", 0.0),
                  _init("bits4", 4.0), _init("bits8", 8.0), _init("sa", 2.0 ** -4)]
        nodes += [helper.make_node("Quant", ["w1", "s1", "z", "bits4"], ["w1q"], name="wq1", domain=dom, signed=1,
                                   narrow=0, rounding_mode="ROUND"),
                  helper.make_node("Quant", ["w2", "s2", "z", "bits8"], ["w2q"], name="wq2", domain=dom, signed=1,
                                   narrow=0, rounding_mode="ROUND"),
                  helper.make_node("Quant", ["x", "sa", "z", "bits8"], ["xq"], name="aq", domain=dom, signed=1,
                                   narrow=0, rounding_mode="ROUND")]
        x, domains = "xq", (dom,)
    elif kind == "qcdq":
        inits += [_init("w1", w1), _init("w2", w2), _init("s1", s1), _init("s2", s2), _init("z1", 0, np.int8),
                  _init("z2", np.zeros(4), np.int8), _init("lo", -8, np.int8), _init("hi", 7, np.int8),
                  _init("sa", 2.0 ** -4), _init("za", 0, np.int8)]
        nodes += [helper.make_node("QuantizeLinear", ["w1", "s1", "z1"], ["w1i"], name="wq1"),
                  helper.make_node("Clip", ["w1i", "lo", "hi"], ["w1c"], name="wclip1"),
                  helper.make_node("DequantizeLinear", ["w1c", "s1", "z1"], ["w1q"], name="wdq1"),
                  helper.make_node("QuantizeLinear", ["w2", "s2", "z2"], ["w2i"], name="wq2", axis=0),
                  helper.make_node("DequantizeLinear", ["w2i", "s2", "z2"], ["w2q"], name="wdq2", axis=0),
                  helper.make_node("QuantizeLinear", ["x", "sa", "za"], ["xi"], name="aq"),
                  helper.make_node("DequantizeLinear", ["xi", "sa", "za"], ["xq"], name="adq")]
        x, domains = "xq", ()
    else:  # qdq: integer weight constants
        inits += [_init("w1i", q1 / s1, np.int8), _init("w2i", q2 / s2[:, None], np.int8), _init("s1", s1),
                  _init("s2", s2), _init("z1", 0, np.int8), _init("z2", np.zeros(4), np.int8)]
        nodes += [helper.make_node("DequantizeLinear", ["w1i", "s1", "z1"], ["w1q"], name="wdq1"),
                  helper.make_node("DequantizeLinear", ["w2i", "s2", "z2"], ["w2q"], name="wdq2", axis=0)]
        x, domains = "x", ()
    nodes += [helper.make_node("Gemm", [x, "w1q", "b1"], ["h"], name="dense1", transB=1),
              helper.make_node("Relu", ["h"], ["r"], name="relu"),
              helper.make_node("Gemm", ["r", "w2q", "b2"], ["y"], name="dense2", transB=1)]
    return _tiny(nodes, inits, in_shape=("N", 16), domains=domains), (q1, q2)


@pytest.mark.parametrize("kind", ["qonnx", "qcdq", "qdq"])
def test_dequantize_turns_quantized_weights_back_to_float(kind, tmp_path):
    import onnx
    from onnx import numpy_helper

    model, (q1, q2) = _quantized_mlp(kind)
    path = tmp_path / f"{kind}.onnx"
    onnx.save(model, str(path))
    with pytest.raises(OpqError, match="already quantized .* or pass --dequantize"):
        load_onnx(path)
    fe = load_onnx(path, dequantize_graph=True)
    g = fe.proto.graph
    assert [n.op_type for n in g.node] == ["Gemm", "Relu", "Gemm"]
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    ws = [inits[n.input[1]] for n in g.node if n.op_type == "Gemm"]
    np.testing.assert_array_equal(ws[0], q1)  # the quantized values, exactly
    np.testing.assert_array_equal(ws[1], q2)
    d = fe.record["dequantized"]
    assert len(d["weights"]) == 2 and len(d["activation_quantizers_removed"]) == {"qonnx": 1, "qcdq": 2, "qdq": 0}[kind]
    assert any("--dequantize: 2 quantized weights" in n for n in fe.notes)


def test_dequantize_refuses_what_it_cannot_turn_back(tmp_path, capsys):
    import onnx
    from onnx import helper

    from opq_hw.cli import main

    dom = "qonnx.custom_op.general"
    m = _tiny([helper.make_node("BipolarQuant", ["x", "s"], ["xb"], name="binary_act", domain=dom),
               helper.make_node("Gemm", ["xb", "w"], ["y"], name="dense", transB=1)],
              [_init("s", 1.0), _init("w", np.eye(4))], domains=(dom,))
    path = tmp_path / "bin.onnx"
    onnx.save(m, str(path))
    assert main(["compress", "--model", str(path), "--dequantize", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "--dequantize cannot turn these quantized nodes back" in err and "binary_act" in err, err
    assert not (tmp_path / "run").exists()


def test_compress_dequantize_cli(tmp_path, capsys):
    import onnx

    from opq_hw.cli import main

    model, _ = _quantized_mlp("qonnx")
    path = tmp_path / "q.onnx"
    onnx.save(model, str(path))
    out = tmp_path / "run"
    assert main(["compress", "--model", str(path), "--dequantize", "--out", str(out), "--target-cr", "8"]) == 0
    man = json.loads((out / "manifest.json").read_text())
    assert man["config"]["dequantize"] is True and len(man["frontend"]["dequantized"]["weights"]) == 2
