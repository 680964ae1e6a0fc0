"""`--sensitivity calib`: a per-layer weighting measured on the calibration samples (opq_hw.sensitivity),
an option; the default allocation stays data-free and its records and hashes unchanged."""
import json

import numpy as np
import pytest
import torch

from opq_hw.allocation import allocate
from opq_hw.errors import OpqError
from opq_hw.layers import inspect_model, layer_weights
from opq_hw.models import digits_cnn
from opq_hw.sensitivity import measure
from opq_hw.spec import Allocation


def _model():
    torch.manual_seed(0)
    m = digits_cnn()
    with torch.no_grad():  # heavy-tailed, trained-like weights
        for p in m.parameters():
            p.copy_(torch.distributions.Laplace(0.0, 0.3).sample(p.shape))
    specs = inspect_model(m, torch.zeros(1, 1, 8, 8))
    return m, specs, layer_weights(m, specs)


def test_measure_is_deterministic_leaves_the_model_and_differs_by_layer():
    m, specs, w = _model()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    x = torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    names = [s.name for s in specs]
    r1, r2 = measure(m, names, x), measure(m, names, x)
    assert r1 == r2  # bit for bit: fixed seed, one thread
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())  # every weight restored
    assert set(r1["layers"]) == set(names) and r1["samples"] == 64 and r1["source"] == "calib"
    mult = np.array(list(r1["layers"].values()))
    assert np.all(mult > 0) and np.mean(mult) == pytest.approx(1.0)
    assert mult.max() / mult.min() > 1.5  # the layers of this model are not equally sensitive
    # the first conv scaled up 4x and the second down 4x (ReLU and max-pool commute with the scale: the same
    # function): the same output change per unit relative noise in every layer, as the `relative` weighting
    with torch.no_grad():
        m.get_submodule(names[0]).weight.mul_(4.0)
        m.get_submodule(names[0]).bias.mul_(4.0)
        m.get_submodule(names[1]).weight.div_(4.0)
    r3 = measure(m, names, x)
    for n in names:
        assert r3["kl_per_noise"][n] == pytest.approx(r1["kl_per_noise"][n], rel=1e-4)


def test_sensitivity_changes_the_allocation_and_is_recorded():
    m, specs, w = _model()
    x = torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    rec = measure(m, [s.name for s in specs], x)
    plain = allocate(specs, w, target_cr=20)
    same = allocate(specs, w, target_cr=20, sensitivity=None)
    assert json.dumps(plain.to_dict()) == json.dumps(same.to_dict()) and "sensitivity" not in plain.to_dict()
    # the most sensitive layer weighted 20x more than the rest: it gets more bits or survivors
    names = [s.name for s in specs]
    hi = names[1]
    tilted = {"layers": {n: (20.0 if n == hi else 1.0) for n in names}}
    a = allocate(specs, w, target_cr=20, sensitivity=tilted)
    pa, pp = a.layer(hi), plain.layer(hi)
    assert pa.n_nonzero * pa.bits > pp.n_nonzero * pp.bits
    assert a.cr_w >= 20 * (1 - 1e-9)
    b = allocate(specs, w, target_cr=20, sensitivity=rec)
    assert b.sensitivity == rec
    assert [(la.bits, la.n_nonzero) for la in b.layers] != [(la.bits, la.n_nonzero) for la in plain.layers]
    assert Allocation.from_json(b.to_json()) == b  # round trip through allocation.json
    # a_i of each layer carries its multiplier
    for la, lp in zip(b.layers, plain.layers):
        assert la.weight == pytest.approx(lp.weight * rec["layers"][la.name])


@pytest.mark.parametrize("rec, pat", [
    ({"layers": {"0": 1.0}}, "covers layers"),
    ("calib", "must be a record"),
    ({"kl": {}}, "must be a record"),
    ({"layers": {"0": 1.0, "3": 0.0, "7": 1.0}}, "finite number > 0"),
    ({"layers": {"0": 1.0, "3": float("nan"), "7": 1.0}}, "finite number > 0"),
    ({"layers": {"0": 1.0, "3": True, "7": 1.0}}, "finite number > 0"),
])
def test_bad_sensitivity_records_are_errors(rec, pat):
    _, specs, w = _model()
    assert [s.name for s in specs] == ["0", "3", "7"]
    with pytest.raises(OpqError, match=pat):
        allocate(specs, w, target_cr=20, sensitivity=rec)


def test_measure_rejects_no_samples_and_unknown_layers():
    m, specs, _ = _model()
    with pytest.raises(OpqError, match="calibration samples"):
        measure(m, [s.name for s in specs], np.zeros((0, 1, 8, 8), np.float32))
    with pytest.raises(OpqError, match="no weight for layers"):
        measure(m, ["nope"], np.zeros((4, 1, 8, 8), np.float32))


def test_config_default_hash_unchanged_and_option_round_trips():
    from opq_hw.artifact import config_hash
    from opq_hw.pipeline import CompressConfig

    old = CompressConfig().to_dict()
    assert "sensitivity" not in old
    # the hashes of runs made before the option existed (computed on the code before it)
    assert config_hash(old) == "5e8851257d7659af"
    assert config_hash(CompressConfig(model="mnist1d-cnn", data="mnist1d", target_cr=40).to_dict()) == "0a3104e437ca1fb0"
    cfg = CompressConfig(data="digits", sensitivity="calib")
    assert cfg.to_dict()["sensitivity"] == "calib" and CompressConfig.from_dict(cfg.to_dict()) == cfg
    assert CompressConfig.from_dict(old).sensitivity == "none"
    with pytest.raises(OpqError, match="sensitivity"):
        CompressConfig(sensitivity="fisher")
    with pytest.raises(OpqError, match="--sensitivity calib.*--data"):
        CompressConfig(sensitivity="calib")  # no data: nothing to measure on


@pytest.mark.parametrize("value", ["calib", "output-diag"])
def test_cli_sensitivity_without_data_is_a_clear_error(tmp_path, capsys, value):
    from opq_hw.cli import main

    rc = main(["compress", "--model", "digits-cnn", "--target-cr", "20", "--sensitivity", value,
               "--out", str(tmp_path / "run")])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"--sensitivity {value}" in err and "--data" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_calib_run_records_the_sensitivity(tmp_path):
    """A run with data: the sensitivity is measured on the calibration samples and recorded."""
    from opq_hw.artifact import read_json
    from opq_hw.pipeline import CompressConfig, compress_run

    cfg = CompressConfig(model="digits-cnn", data="digits", target_cr=30, epochs=0, sensitivity="calib",
                         pretrain_epochs=1)  # a trained-like model is enough here
    out = compress_run(cfg, tmp_path / "run", progress=False, log=lambda *_: None)
    alloc = Allocation.from_dict(read_json(out / "allocation.json"))
    assert alloc.sensitivity["source"] == "calib" and alloc.sensitivity["samples"] == 512
    assert set(alloc.sensitivity["layers"]) == {la.name for la in alloc.layers}
    assert read_json(out / "manifest.json")["config"]["sensitivity"] == "calib"


def test_output_diag_columns_match_the_layers_inputs_and_weight_the_error_table():
    """`output-diag`: E[x_j^2] per im2col column, the exact error table with those column weights equal to
    the diagonal output error, and all-equal column weights leave the table (and allocation) unchanged."""
    from opq_hw.quant import error_curves
    from opq_hw.sensitivity import input_moments, measure_inputs

    m, specs, w = _model()
    names = [s.name for s in specs]
    x = torch.randn(32, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    rec = measure_inputs(m, names, x)
    G = input_moments(m, names, x, full=True)
    assert rec["source"] == "output-diag" and rec["samples"] == 32
    for n in names:  # the diagonal of the Gram matrix; tr(D G D^T) is the layer's output change for a weight change D
        assert np.allclose(rec["columns"][n], torch.diag(G[n]).numpy())
        mod = m.get_submodule(n)
        D = 0.01 * torch.randn_like(mod.weight)
        outs = []
        h = mod.register_forward_hook(lambda _m, _i, o: outs.append(o.detach().double()))
        with torch.no_grad():
            m(x)
            mod.weight.add_(D)
            m(x)
            mod.weight.sub_(D)
        h.remove()
        Dm = D.double().reshape(D.shape[0], -1)
        assert float(((outs[1] - outs[0]) ** 2).sum()) / 32 == pytest.approx(float(((Dm @ G[n]) * Dm).sum()), rel=1e-6)
    # column weights in the table: the same as the weights scaled by sqrt(c) per column (gain-free, unsampled)
    wt = w[names[1]]
    c = torch.tensor(rec["columns"][names[1]], dtype=torch.float64)
    _, p1, q1 = error_curves(wt, [2, 4], mask_order="magnitude", scale_mode="float", col_weight=c)
    _, p0, q0 = error_curves(wt, [2, 4], mask_order="magnitude", scale_mode="float")
    _, pe, qe = error_curves(wt, [2, 4], mask_order="magnitude", scale_mode="float", col_weight=torch.ones_like(c))
    assert np.array_equal(p0, pe) and np.array_equal(q0, qe)
    assert not np.allclose(p1, p0)
    flat = wt.detach().double().reshape(wt.shape[0], -1)
    assert p1[0] == pytest.approx(float((flat * flat * c).sum()))  # nothing kept: the weighted energy
    plain = allocate(specs, w, target_cr=20)
    flat_rec = {"source": "output-diag", "columns": {n: [2.0] * len(rec["columns"][n]) for n in names}}
    assert allocate(specs, w, target_cr=20, sensitivity=flat_rec).layers == plain.layers  # all-equal: no change
    a = allocate(specs, w, target_cr=20, sensitivity=rec)
    assert a.sensitivity == rec and Allocation.from_json(a.to_json()) == a
    assert [(la.bits, la.n_nonzero) for la in a.layers] != [(la.bits, la.n_nonzero) for la in plain.layers]
    assert a.cr_w >= 20 * (1 - 1e-9)
    assert [la.weight for la in a.layers] == [la.weight for la in plain.layers]  # a_i unchanged: the tables carry it


@pytest.mark.parametrize("change, pat", [
    (lambda r: r["columns"].pop("3"), "exactly the allocated layers"),
    (lambda r: r["columns"].__setitem__("3", [1.0]), "finite numbers >= 0"),
    (lambda r: r["columns"]["3"].__setitem__(0, float("nan")), "finite numbers >= 0"),
    (lambda r: r["columns"].__setitem__("3", [0.0] * len(r["columns"]["3"])), "not all 0"),
])
def test_bad_output_diag_records_are_errors(change, pat):
    from opq_hw.sensitivity import measure_inputs

    m, specs, w = _model()
    rec = measure_inputs(m, [s.name for s in specs], torch.randn(8, 1, 8, 8))
    change(rec)
    with pytest.raises(OpqError, match=pat):
        allocate(specs, w, target_cr=20, sensitivity=rec)


def test_output_diag_needs_opq_exact_tables_data_and_samples():
    from opq_hw.pipeline import CompressConfig
    from opq_hw.sensitivity import measure_inputs

    m, specs, w = _model()
    rec = measure_inputs(m, [s.name for s in specs], torch.randn(8, 1, 8, 8))
    for kw in ({"method": "global-magnitude"}, {"error_model": "laplace"}):
        with pytest.raises(OpqError, match="exact error model"):
            allocate(specs, w, target_cr=20, sensitivity=rec, **kw)
    with pytest.raises(OpqError, match="calibration samples"):
        measure_inputs(m, [s.name for s in specs], np.zeros((0, 1, 8, 8), np.float32))
    with pytest.raises(OpqError, match="--sensitivity output-diag.*--data"):
        CompressConfig(sensitivity="output-diag")
    cfg = CompressConfig(data="digits", sensitivity="output-diag")
    assert CompressConfig.from_dict(cfg.to_dict()) == cfg


def test_pipeline_measures_output_diag_on_the_calibration_samples_of_the_allocated_layers():
    from types import SimpleNamespace

    from opq_hw.pipeline import CompressConfig, calibration_samples, layer_sensitivity
    from opq_hw.sensitivity import measure_inputs

    m, specs, _ = _model()
    xtr = np.random.default_rng(0).standard_normal((600, 1, 8, 8)).astype(np.float32)
    cfg = CompressConfig(data="digits", sensitivity="output-diag", overrides={"7": {"skip": True}})
    rec = layer_sensitivity(m, specs, cfg, SimpleNamespace(x_train=xtr))
    assert rec == measure_inputs(m, ["0", "3"], calibration_samples(xtr)) and rec["samples"] == 512
    assert layer_sensitivity(m, specs, CompressConfig(), None) is None
