"""The user's own data in every command (`--data file.npz | module:function`), runs without data,
and `opq-hw inspect`'s table."""
from __future__ import annotations

import json
import shutil
import sys
import textwrap

import numpy as np
import pytest

from opq_hw.cli import main
from opq_hw.data import MIN_XY, SPLIT_RULE, load_data, split_xy
from opq_hw.errors import OpqError

FACTORY = "opq_hw.models:digits_mlp"  # untrained 64-64-32-10 MLP: no pre-training cost


def _digits_flat():
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.data / 16.0).astype(np.float32), d.target.astype(np.int64)


@pytest.fixture(scope="module")
def user_npz(tmp_path_factory):
    """The digits as a user would save them: one x, y pair (split by the documented rule)."""
    x, y = _digits_flat()
    path = tmp_path_factory.mktemp("data") / "mydata.npz"
    np.savez(path, x=x, y=y)
    return path


@pytest.fixture(scope="module")
def user_run(tmp_path_factory, user_npz):
    out = tmp_path_factory.mktemp("user") / "run"
    assert main(["compress", "--model", FACTORY, "--input-shape", "64", "--data", str(user_npz), "--epochs", "1",
                 "--target-cr", "10", "--out", str(out)]) == 0
    return out


def test_split_rule_is_seeded_stratified_80_20():
    from sklearn.model_selection import train_test_split

    x, y = _digits_flat()
    xtr, ytr, xte, yte = split_xy(x, y)
    exp = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    assert np.array_equal(xtr, exp[0]) and np.array_equal(xte, exp[1]) and len(xte) == 360
    assert np.array_equal(np.bincount(yte), np.bincount(exp[3]))
    # a class with a single sample cannot be stratified: plain seeded split, same sizes
    y2 = np.r_[np.zeros(19, np.int64), 1]
    a, b = split_xy(np.arange(40, dtype=np.float32).reshape(20, 2), y2), split_xy(
        np.arange(40, dtype=np.float32).reshape(20, 2), y2)
    assert len(a[2]) == 4 and all(np.array_equal(u, v) for u, v in zip(a, b))
    assert "seed 0" in SPLIT_RULE and "80/20" in SPLIT_RULE


def test_fit_inputs_reshapes_only_when_unambiguous():
    from opq_hw.data import fit_inputs

    x = np.arange(2 * 8 * 8 * 3, dtype=np.float32).reshape(2, 8, 8, 3)  # NHWC
    y = fit_inputs(x, (3, 8, 8), layout="NHWC")
    assert y.shape == (2, 3, 8, 8) and y[1, 2, 5, 7] == x[1, 5, 7, 2]
    with pytest.raises(OpqError, match=r"the model wants \(3, 8, 8\) per sample"):
        fit_inputs(x, (3, 8, 8))  # same size, other layout: never reshaped silently
    assert fit_inputs(np.zeros((2, 40), np.float32), (1, 40)).shape == (2, 1, 40)
    assert fit_inputs(np.zeros((2, 1, 8, 8), np.float32), (64,)).shape == (2, 64)
    with pytest.raises(OpqError, match="layout NWC"):
        fit_inputs(x, (3, 8, 8), layout="NWC")


@pytest.mark.slow
def test_user_npz_compress_records_and_golden(user_run, user_npz):
    man = json.loads((user_run / "manifest.json").read_text())
    d = load_data(str(user_npz))
    assert man["data"]["kind"] == "npz" and man["data"]["name"] == "mydata.npz"
    assert man["data"]["sha256"] == d.sha256 and man["data"]["split"] == SPLIT_RULE
    assert man["data"]["n_train"] == 1437 and man["data"]["n_test"] == 360
    cal = man["calibration"]
    assert cal["samples"] == 512 and "training samples of mydata.npz" in cal["method"]
    assert set(cal["activations"]) == {"input_quant", "body.1", "body.3"}
    # golden: the whole test split, real samples with their labels, on the input grid
    gx, gy = np.load(user_run / "golden_input.npy"), np.load(user_run / "golden_labels.npy")
    assert gx.shape == (360, 64) and np.array_equal(gy, d.y_test)
    assert np.abs(gx - d.x_test).max() <= cal["activations"]["input_quant"]["scale"]  # on the grid (1.0 saturates)
    assert man["golden"]["test_samples"] == 360 and man["golden"]["train_samples"] == 0
    assert {"acc_float", "acc_oneshot", "acc_finetuned"} <= set(json.loads((user_run / "metrics.json").read_text()))


@pytest.mark.slow
def test_user_npz_simulate_qonnx(user_run, user_npz, tmp_path, capsys):
    from opq_hw.run import model_source
    from opq_hw.simulate import simulate as sim

    def simulate(*a, **k):  # the run's model factory is given again, as on the command line
        with model_source(FACTORY):
            return sim(*a, **k)

    # without --data: the run's own test split (the golden arrays; the file is never needed again)
    assert main(["simulate", str(user_run), "--level", "qonnx", "--model", FACTORY]) == 0
    assert "360/360 samples exact" in capsys.readouterr().out
    # the same file again: recognised by its content, no note
    res = simulate(user_run, "qonnx", data=str(user_npz), n=40, write=False, log=None)
    assert res["bit_exact"] and res["n"] == 40 and "data_note" not in res
    # other data of the right shape is used, and the result says it is not the run's
    x, y = _digits_flat()
    other = tmp_path / "other.npz"
    np.savez(other, x_train=x[:100], y_train=y[:100], x_test=x[-50:], y_test=y[-50:])
    res = simulate(user_run, "qonnx", data=str(other), write=False, log=None)
    assert res["bit_exact"] and res["n"] == 50 and "not the data the run was compressed with" in res["data_note"]
    # ... and refused only when it matters: samples that do not fit the model
    bad = tmp_path / "bad.npz"
    np.savez(bad, x_train=np.zeros((10, 1, 8, 9), np.float32), y_train=np.zeros(10, np.int64),
             x_test=np.zeros((4, 1, 8, 9), np.float32), y_test=np.zeros(4, np.int64))
    assert main(["simulate", str(user_run), "--level", "qonnx", "--data", str(bad), "--model", FACTORY]) == 2
    err = capsys.readouterr().err
    assert "the model wants (64,)" in err and "Traceback" not in err


def _bad_cases(tmp):
    x, y = np.random.default_rng(0).random((40, 64), dtype=np.float32), np.arange(40) % 10
    cases = {
        "missing": ({"x_train": x, "y_train": y, "x_test": x}, "missing key(s) ['y_test']"),
        "no keys": ({"features": x}, "missing key(s)"),
        "dtype": ({"x": x.astype(str), "y": y}, "inputs must be real numbers"),
        "objects": ({"x": np.array([x[0], "a"], dtype=object), "y": y[:2]}, "holds Python objects"),
        "nan": ({"x": np.where(np.arange(64) == 3, np.nan, x), "y": y}, "NaN or inf in 40 sample(s)"),
        "inf": ({"x_train": x, "y_train": y, "x_test": np.where(np.arange(64) == 0, np.inf, x[:8]),
                 "y_test": y[:8]}, "x_test holds NaN or inf"),
        "lengths": ({"x": x, "y": y[:39]}, "x has 40 samples but y has 39"),
        "float labels": ({"x": x, "y": y + 0.5}, "labels y are not integers"),
        "one-hot": ({"x": x, "y": np.eye(10)[y]}, "one-hot"),
        "negative": ({"x": x, "y": y - 1}, "class indices start at 0"),
        "few": ({"x": x[:MIN_XY - 1], "y": y[:MIN_XY - 1]}, "too few samples"),
        "few split": ({"x_train": x[:3], "y_train": y[:3], "x_test": x[:3], "y_test": y[:3]}, "too few samples"),
        "shape": ({"x": x[:, :60], "y": y}, "the model wants (64,) per sample"),
        "classes": ({"x": x, "y": y + 5}, "has label 14 but the model has 10 outputs"),
    }
    out = []
    for name, (arrays, msg) in cases.items():
        p = tmp / f"{name.replace(' ', '_')}.npz"
        np.savez(p, **arrays)
        out.append((str(p), msg))
    junk = tmp / "junk.npz"
    junk.write_bytes(b"not a zip file")
    out += [(str(junk), "not a readable .npz"), (str(tmp / "absent.npz"), "not found"),
            ("no-such-set", "not a built-in name"), (str(tmp / "x.npy"), "is a .npy file")]
    return out


def test_bad_data_named_errors(tmp_path, capsys):
    for path, msg in _bad_cases(tmp_path):
        rc = main(["compress", "--model", FACTORY, "--input-shape", "64", "--data", path, "--epochs", "0",
                   "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert rc == 2 and msg in err and "Traceback" not in err, (path, err)
        assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_module_function_data(tmp_path, monkeypatch):
    (tmp_path / "userdata_mod.py").write_text(textwrap.dedent("""
        import numpy as np
        def four():
            r = np.random.default_rng(1)
            return (r.random((240, 64), dtype=np.float32), np.arange(240) % 10,
                    r.random((30, 64), dtype=np.float32), np.arange(30) % 10)
        def xy():
            r = np.random.default_rng(2)
            return {"x": r.random((50, 64)), "y": (np.arange(50) % 4).astype(float)}
        def wrong():
            return 3
        def broken():
            raise KeyError("no file")
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    d = load_data("userdata_mod:four")
    assert d.kind == "module" and len(d.x_test) == 30 and d.split == "given" and d.x_train.dtype == np.float32
    d2 = load_data("userdata_mod:xy")
    assert len(d2.x_test) == 10 and d2.y_train.dtype == np.int64 and d2.split == SPLIT_RULE
    assert load_data("userdata_mod:four").sha256 == d.sha256 != d2.sha256
    with pytest.raises(OpqError, match="returned int"):
        load_data("userdata_mod:wrong")
    with pytest.raises(OpqError, match="raised KeyError"):
        load_data("userdata_mod:broken")
    with pytest.raises(OpqError, match="cannot load data function"):
        load_data("userdata_mod:absent")
    out = tmp_path / "run"
    assert main(["compress", "--model", FACTORY, "--input-shape", "64", "--data", "userdata_mod:four", "--epochs", "0",
                 "--out", str(out)]) == 0
    man = json.loads((out / "manifest.json").read_text())
    assert man["data"] == {**d.record(), "layout": None}
    # the run records the function's name only; later commands never import it
    sys.modules.pop("userdata_mod", None)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(tmp_path)])
    from opq_hw.simulate import simulate

    from opq_hw.run import model_source

    with model_source(FACTORY):  # the model factory is given again; the data function is never needed
        res = simulate(out, "qonnx", write=False, log=None)
    assert res["bit_exact"] and res["n"] == 200 and "userdata_mod" not in sys.modules  # 30 test + 170 train
    assert "170 training samples" in res["data"]


@pytest.mark.slow
def test_without_data_weights_only_and_refusals(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["compress", "--model", FACTORY, "--input-shape", "64", "--epochs", "0", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "activations were NOT calibrated (no --data)" in text and "|x| <= 1" in text
    man = json.loads((out / "manifest.json").read_text())
    assert man["data"] is None and man["calibration"]["samples"] == 0
    assert man["calibration"]["activations"]["input_quant"]["range"] == [-1.0, 0.9921875]
    for f in ("model.qonnx.onnx", "weights.pt", "allocation.json"):
        assert (out / f).is_file()
    assert main(["estimate", str(out), "--board", "pynq-z2"]) == 0
    assert capsys.readouterr().out.startswith("estimate: hls4ml-latency on pynq-z2: fits")
    for argv in (["simulate", str(out), "--level", "qonnx"], ["simulate", str(out), "--level", "qonnx", "--data", "digits"],
                 ["build", str(out), "--flow", "hls4ml", "--board", "pynq-z2"],
                 ["build", str(out), "--flow", "rtl", "--board", "ice40-up5k"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "compressed without --data" in err and "Compress again with --data" in err and "Traceback" not in err
    from opq_hw.flows import finn_flow, hls4ml_flow, rtl_flow

    for build in (hls4ml_flow.build, finn_flow.build, rtl_flow.build):  # the Python API refuses it too
        with pytest.raises(OpqError, match="compressed without --data"):
            build(out, board="pynq-z2", log=None)
    assert not (out / "build").exists()


def test_data_option_on_build_applies_to_rtl_only(tmp_path, capsys):
    (tmp_path / "manifest.json").write_text(json.dumps({"data": {"kind": "npz", "name": "d.npz", "sha256": "0"}}))
    assert main(["build", str(tmp_path), "--flow", "hls4ml", "--board", "pynq-z2", "--data", "digits"]) == 2
    assert "--data applies to --flow rtl" in capsys.readouterr().err


@pytest.mark.slow
def test_inspect_table_and_json(tmp_path, capsys, monkeypatch):
    assert main(["inspect", "--model", "digits-cnn"]) == 0
    out = capsys.readouterr().out
    head, *rows = out.splitlines()
    assert head.split() == ["layer", "op", "in", "shape", "out", "shape", "params", "hls4ml", "finn", "rtl"]
    assert rows[0].split()[:5] == ["0", "conv2d", "3x3", "1x8x8", "16x8x8"] and rows[0].split()[-3:] == ["yes", "?", "yes"]
    assert "(3) rtl: supported" in out and "(1) hls4ml: supported" in out
    (tmp_path / "dwmod.py").write_text(textwrap.dedent("""
        from torch import nn
        def net():
            return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1, groups=4),
                                 nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 10))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["inspect", "--model", "dwmod:net", "--input-shape", "1,8,8"]) == 0
    out = capsys.readouterr().out
    rows = {ln.split()[0]: ln for ln in out.splitlines()[1:4]}
    assert "depthwise" in rows["2"] and rows["0"].split()[-1] == "yes" and rows["2"].split()[-2:] == ["no", "(3)"]
    assert rows["5"].split()[-1] == "?"  # not reached by the RTL check
    assert "(3) rtl: NOT supported: layer '2'" in out and "grouped/depthwise" in out
    assert main(["inspect", "--model", "digits-mlp", "--json"]) == 0
    lines = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    assert [d["name"] for d in lines] == ["0", "2", "4"] and lines[0]["in_shape"] == [64]


@pytest.mark.slow
@pytest.mark.tools
def test_user_npz_csim_bit_exact(tmp_path):
    """A tiny user model and data through the hls4ml C simulation."""
    pytest.importorskip("hls4ml")
    if shutil.which("g++") is None:
        pytest.skip("g++ is needed for the hls4ml C simulation")
    from opq_hw.simulate import simulate

    r = np.random.default_rng(0)
    x = r.normal(size=(300, 16)).astype(np.float32)
    y = (x[:, :4].argmax(1)).astype(np.int64)
    np.savez(tmp_path / "tiny.npz", x=x, y=y)
    (tmp_path / "tinymod.py").write_text("from torch import nn\ndef net():\n    return nn.Sequential(nn.Linear(16, 12), "
                                         "nn.ReLU(), nn.Linear(12, 4))\n")
    from opq_hw.run import model_source

    sys.path.insert(0, str(tmp_path))
    try:
        out = tmp_path / "run"
        assert main(["compress", "--model", "tinymod:net", "--data", str(tmp_path / "tiny.npz"), "--epochs", "2",
                     "--target-cr", "6", "--out", str(out)]) == 0
        with model_source("tinymod:net"):  # a factory run's model is given again, never imported from the run
            res = simulate(out, "csim", write=False, log=None)
    finally:
        sys.path.remove(str(tmp_path))
    assert res["n"] == 200 and res["bit_exact"], res  # 60 test + 140 training samples
