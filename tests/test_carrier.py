"""The Brevitas carrier computes exactly the compressed weights; finetuning keeps masks and quantizers frozen."""
import copy

import numpy as np
import pytest
import torch
from torch import nn

from opq_hw.allocation import allocate, compress
from opq_hw.carrier import ActConfig, apply, carried_layers, int_weights, quant_state
from opq_hw.training import finetune
from opq_hw.layers import inspect_model, layer_weights
from opq_hw.models import digits_cnn, digits_mlp, mnist1d_cnn
from opq_hw.quant import dequantize


def _setup(factory, shape, mode, method="opq", seed=0):
    torch.manual_seed(seed)
    m = factory()
    specs = inspect_model(m, torch.zeros(shape))
    w = layer_weights(m, specs)
    return m, specs, w, allocate(specs, w, target_cr=15, scale_mode=mode, method=method)


def _compressed_float_model(m, specs, alloc, w):
    """Plain torch: the float model with its weights replaced by the dequantized compressed weights."""
    ref = copy.deepcopy(m)
    mods = dict(ref.named_modules())
    with torch.no_grad():
        for name, (q, s, _) in compress(w, alloc).items():
            mods[name].weight.copy_(dequantize(q, s))
    return ref


@pytest.mark.parametrize("factory,shape", [(digits_cnn, (4, 1, 8, 8)), (digits_mlp, (4, 64)), (mnist1d_cnn, (4, 1, 40))])
@pytest.mark.parametrize("mode", ["pow2", "float"])
@pytest.mark.parametrize("method", ["opq", "per-channel"])
def test_carrier_forward_equals_plain_torch(factory, shape, mode, method):
    m, specs, w, alloc = _setup(factory, shape, mode, method)
    q = apply(m, specs, alloc, ActConfig(bits=None, scale_mode=mode))
    comp = compress(w, alloc)
    for name, layer in carried_layers(q).items():
        assert torch.equal(int_weights(layer), comp[name][0])  # integer codes: exact
        assert isinstance(layer, (__import__("brevitas").nn.QuantConv1d, __import__("brevitas").nn.QuantConv2d,
                                  __import__("brevitas").nn.QuantLinear))
        assert int(layer.quant_weight().bit_width) == alloc.layer(name).bits
    x = torch.randn(shape)
    ref = _compressed_float_model(m, specs, alloc, w)
    with torch.no_grad():
        got, want = q(x), ref(x)
    if mode == "pow2":
        assert torch.equal(got, want)
    else:
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_quantized_activations_are_on_pow2_grid():
    m, specs, w, alloc = _setup(digits_cnn, (1, 1, 8, 8), "pow2")
    q = apply(m, specs, alloc, calib=torch.rand(64, 1, 8, 8))
    import brevitas.nn as qnn

    acts = [mod for mod in q.modules() if isinstance(mod, (qnn.QuantReLU, qnn.QuantIdentity))]
    assert len(acts) == 3  # input quantizer + two ReLUs
    for mod in acts:
        assert float(np.log2(float(mod.act_quant.scale()))).is_integer()
    for layer in carried_layers(q).values():
        if layer.bias is not None:
            assert layer.bias_quant.is_quant_enabled


def test_finetune_keeps_masks_and_quantizers_frozen(tmp_path):
    m, specs, w, alloc = _setup(digits_cnn, (1, 1, 8, 8), "pow2")
    x = torch.rand(128, 1, 8, 8)
    y = torch.randint(0, 10, (128,))
    q = apply(m, specs, alloc, calib=x)
    before = quant_state(q)
    w_before = {n: l.parametrizations.weight.original.detach().clone() for n, l in carried_layers(q).items()}
    hist = finetune(q, (x, y), epochs=2, lr=1e-2, progress=False, checkpoint=tmp_path / "ck.pt")
    assert len(hist) == 2
    after = quant_state(q)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    changed = False
    for name, layer in carried_layers(q).items():
        mask = layer.parametrizations.weight[0].mask.bool()
        assert torch.all(layer.quant_weight().value[~mask] == 0)  # pruned weights stay exactly zero
        assert torch.all(int_weights(layer)[mask] != 0)  # survivors never round to zero
        assert int(layer.quant_weight().bit_width) == alloc.layer(name).bits
        changed |= not torch.equal(layer.parametrizations.weight.original, w_before[name])
    assert changed  # the weights did train
    # a second call with the same checkpoint resumes (nothing left to do: history is the saved one)
    assert finetune(q, (x, y), epochs=2, lr=1e-2, progress=False, checkpoint=tmp_path / "ck.pt") == hist


def test_resumed_finetune_equals_uninterrupted(tmp_path):
    m, specs, w, alloc = _setup(digits_mlp, (1, 64), "pow2")
    x = torch.rand(96, 64)
    y = torch.randint(0, 10, (96,))
    q1 = apply(m, specs, alloc, calib=x)
    q2 = copy.deepcopy(q1)
    finetune(q1, (x, y), epochs=3, progress=False)
    finetune(q2, (x, y), epochs=1, progress=False, checkpoint=tmp_path / "c.pt")
    q3 = copy.deepcopy(q2)
    finetune(q3, (x, y), epochs=3, progress=False, checkpoint=tmp_path / "c.pt")
    with torch.no_grad():
        assert torch.equal(q1(x), q3(x))


def test_unsupported_layer_named():
    from opq_hw.errors import OpqError

    m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.LSTM(4, 4))
    with pytest.raises(OpqError, match="'3' is a LSTM"):
        inspect_model(m, torch.zeros(1, 1, 3, 3))


def test_inspect_depthwise_and_grouped():
    m = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1, groups=4), nn.Conv2d(8, 8, 3, groups=8, stride=2), nn.Flatten(),
                      nn.Linear(8 * 3 * 3, 5))
    specs = inspect_model(m, torch.zeros(1, 4, 8, 8))
    assert [s.groups for s in specs] == [4, 8, 1]
    assert specs[1].out_shape == (8, 3, 3) and specs[1].out_pixels == 9 and specs[1].fan_in == 9
    w = layer_weights(m, specs)
    a = allocate(specs, w, target_cr=8)
    q = apply(m, specs, a, ActConfig(bits=None))
    ref = _compressed_float_model(m, specs, a, w)
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        assert torch.equal(q(x), ref(x))


def test_batchnorm_kept_as_quantized_channel_affine():
    """A BatchNorm on the input and one after a ReLU cannot be folded: the carrier keeps each as a channel affine
    a*x + b, a_c an 8-bit integer times a power of two s_c, b_c on the product grid s_c * s_x, computed exactly in
    float32, followed by an activation quantizer; the record states the quantization error."""
    import math

    from opq_hw.bnfold import fold_batchnorm
    from opq_hw.carrier_graph import affines

    torch.manual_seed(0)
    m = nn.Sequential(nn.BatchNorm1d(16), nn.Linear(16, 8), nn.ReLU(), nn.BatchNorm1d(8), nn.Linear(8, 4))
    with torch.no_grad():
        for bn in (m[0], m[3]):
            bn.running_mean.uniform_(-1, 2)
            bn.running_var.uniform_(0.2, 4)
            bn.weight.uniform_(-2, 2)
            bn.bias.uniform_(-1, 1)
    m.eval()
    folds, kept = fold_batchnorm(m)
    assert folds == [] and [k["bn"] for k in kept] == ["0", "3"]
    x = torch.randn(256, 16) * 1.5 + 0.5
    specs = inspect_model(m, x[:1])
    alloc = allocate(specs, layer_weights(m, specs), target_cr=4, scale_mode="pow2")
    q = apply(m, specs, alloc, ActConfig(bits=8, scale_mode="pow2"), calib=x)
    affs = affines(q)
    assert [a.opq_affine for a in affs] == ["0", "3"]
    seen = {}
    hooks = [a.register_forward_pre_hook(lambda mod, inp: seen.__setitem__(mod.opq_affine, inp[0])) for a in affs]
    with torch.no_grad():
        y = q(x)
    for h in hooks:
        h.remove()
    for a in affs:
        rec = a.record()
        sa, grid = a.a_scale.double(), a.b_scale.double()
        assert torch.equal(torch.log2(sa), torch.log2(sa).round()) and bool((grid > 0).all())
        ai, bi = a.a.double() / sa, a.b.double() / grid
        assert torch.equal(ai, ai.round()) and ai.abs().max() <= 127 and torch.equal(bi, bi.round())
        assert ai.abs().min() >= 64  # each channel's own scale: every multiplier keeps 7 significant bits
        assert rec["a_max_rel_error"] <= 1 / 128 and rec["b_saturated"] == 0
        assert rec["b_max_abs_error"] <= rec["b_grid_range"][1] / 2
        assert rec["in_bits"] == 8 and rec["b_bits"] >= 16
        xin = seen[a.opq_affine]
        v, sx = xin.value, float(xin.scale)
        assert torch.allclose(sa * sx, grid)
        xi = v.double() / sx
        assert torch.equal(xi, xi.round())  # the input is on its quantizer's grid
        got = v * a.a + a.b  # what the module computes (float32)
        assert torch.equal(got.double(), (xi * ai + bi) * grid)  # = the integer arithmetic, exactly
    with torch.no_grad():
        ref = m(x)
    assert float((y - ref).norm() / ref.norm()) < 0.15  # 8-bit affine + 4x compressed weights, still the model


def test_carrier_built_once_with_quantizers_as_the_constructor_makes_them(monkeypatch):
    """build_carrier builds the structure once (not a probe and then the carrier): after its probe pass it puts
    the input quantizers (where the input is float, here after a Tanh) and the Int16 bias quantizers in place,
    where a layer constructed with them holds them (the same quantizer modules, in the same order)."""
    import brevitas.nn as qnn
    from brevitas.quant.scaled_int import Int16Bias

    import opq_hw.carrier as carrier

    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Tanh(), nn.Conv2d(4, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))
    specs = inspect_model(m, torch.zeros(1, 1, 8, 8))
    alloc = allocate(specs, layer_weights(m, specs), target_cr=4, scale_mode="pow2")
    builds = []
    real = carrier._build_carrier
    monkeypatch.setattr(carrier, "_build_carrier", lambda *a, **k: (builds.append(1), real(*a, **k))[1])
    act = ActConfig(bits=8, scale_mode="pow2")
    q = apply(m, specs, alloc, act, calib=torch.rand(32, 1, 8, 8))
    assert len(builds) == 1
    layers = carried_layers(q)
    assert [n for n, la in layers.items() if la.input_quant.is_quant_enabled] == ["2"]
    assert all(la.bias_quant.is_quant_enabled for la in layers.values())
    in_q, _ = carrier._act_quants(act)
    for s in specs:
        la = alloc.layer(s.name)
        kw = dict(bias=True, weight_quant=carrier._weight_quant(la.bits, "pow2", s.out_channels, len(s.weight_shape)),
                  bias_quant=Int16Bias, input_quant=in_q if s.name == "2" else None, return_quant_tensor=False)
        fresh = (qnn.QuantLinear(s.in_channels, s.out_channels, **kw) if s.kind == "linear" else
                 qnn.QuantConv2d(s.in_channels, s.out_channels, s.kernel_size, **kw))
        def quantizers(layer):  # the quantizer modules, in order (what orders their state-dict keys)
            return [(n, type(x).__name__) for n, x in layer.named_modules() if "_quant" in n]

        assert quantizers(layers[s.name]) == quantizers(fresh)
