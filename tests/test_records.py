"""Named records: each compression default stated once (spec.DEFAULTS) and read by every entry
point; the IntNet stages and the built-in model registry as records. Fast, no tools."""
from __future__ import annotations

import dataclasses
import inspect
import json

import numpy as np
import pytest

from opq_hw.spec import DEFAULTS


def test_defaults_are_read_by_every_entry_point():
    from opq_hw.carrier import ActConfig
    from opq_hw.cli import parser
    from opq_hw.hwaware import fit_allocation
    from opq_hw.pipeline import CompressConfig
    from opq_hw.report import estimate_run

    want = dataclasses.asdict(DEFAULTS)
    cfg = CompressConfig()
    assert {k: getattr(cfg, k) for k in want if k != "arch"} == {k: v for k, v in want.items() if k != "arch"}
    args = parser().parse_args(["compress", "--model", "m"])
    assert {k: getattr(args, k) for k in want if k != "model"} == {k: v for k, v in want.items() if k != "model"}
    assert parser().parse_args(["demo"]).model == DEFAULTS.model
    assert parser().parse_args(["estimate", "r", "--board", "b"]).arch == DEFAULTS.arch
    assert ActConfig() == ActConfig(bits=DEFAULTS.act_bits, scale_mode=DEFAULTS.scale_mode)
    sig = inspect.signature(fit_allocation).parameters
    for k in ("arch", "act_bits", "method", "scale_mode", "min_bits", "max_bits"):
        assert sig[k].default == want[k], k
    assert inspect.signature(estimate_run).parameters["arch"].default == DEFAULTS.arch
    from opq_hw.cost import choose_folding, estimate, layer_params, network_params

    for fn in (choose_folding, estimate, layer_params, network_params):
        assert inspect.signature(fn).parameters["act_bits"].default == DEFAULTS.act_bits, fn.__name__
    from opq_hw.allocation import allocate
    from opq_hw.training import finetune

    sig = inspect.signature(allocate).parameters
    for k in ("target_kind", "method", "scale_mode", "mask_order", "error_model", "min_bits", "max_bits"):
        assert sig[k].default == want[k], k
    assert inspect.signature(finetune).parameters["lr"].default == DEFAULTS.lr


def test_intnet_stages_are_records_with_the_pool_geometry():
    from opq_hw.rtl.intnet import Flatten, IntLayer, IntNet, Pool

    p = Pool(2)
    assert p.window(6) == (2, 2) and p.window(1) == (1, 2)  # a 1-D activation (H = 1) pools along W only
    assert p.out_shape((3, 7, 5)) == (3, 3, 2) and p.out_shape((3, 1, 9)) == (3, 1, 4)
    fc = IntLayer("fc", "linear", np.ones((2, 8), np.int64), np.zeros(2, np.int64), 4, False, (2, 2, 2), (2, 1, 1),
                  w_exp=(-4, -4))
    net = IntNet((2, 4, 4), 4, False, -3, [Pool(2), Flatten(), fc], (2, 4, 4))
    d = json.loads(json.dumps(net.to_dict()))
    # the JSON form (intnet.json, the RTL build's cache key) is the one written before the records
    assert d["stages"][:2] == [{"op": "pool", "args": [2]}, {"op": "flatten", "args": []}]
    back = IntNet.from_dict(d)
    assert back.stages[:2] == [Pool(2), Flatten()] and back.to_dict() == net.to_dict()
    x = np.arange(2 * 16).reshape(1, 2, 4, 4)
    np.testing.assert_array_equal(back.forward_int(x, upto=1), x.reshape(1, 2, 2, 2, 2, 2).max(axis=(3, 5)))
    with pytest.raises(TypeError, match="IntLayer, Pool or Flatten"):
        IntNet((2, 4, 4), 4, False, -3, [("pool", 2), fc])


def test_builtin_models_are_records():
    import torch

    from opq_hw.models import BUILTIN, BuiltinModel, build_model

    for name, b in BUILTIN.items():
        assert isinstance(b, BuiltinModel) and b.pretrain_epochs > 0
        assert build_model(name)(torch.zeros(b.example_shape)).shape == (1, 4 if b.data == "basicmotions" else 10)
    assert BUILTIN["digits-mlp"].data == "digits-flat"
