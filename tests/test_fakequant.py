"""The finetune twin (opq_hw.fakequant) computes the Brevitas carrier's forward and gradients bit for bit."""
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from opq_hw.allocation import allocate
from opq_hw.carrier import ActConfig, apply, quant_state
from opq_hw.fakequant import FastLayer, fast_twin, matches
from opq_hw.layers import inspect_model, layer_weights
from opq_hw.models import digits_cnn, digits_mlp, mnist1d_cnn, model_from_onnx
from opq_hw.training import finetune


def _carrier(factory, shape, mode="pow2", bits=8, seed=0):
    torch.manual_seed(seed)
    model = factory()
    specs = inspect_model(model, torch.zeros((1,) + shape[1:]))
    alloc = allocate(specs, layer_weights(model, specs), target_cr=15, scale_mode=mode)
    x = torch.randn(shape)
    return apply(model, specs, alloc, ActConfig(bits=bits, scale_mode=mode), calib=x), x


def _same_forward_and_grads(q, x):
    twin = fast_twin(q, x[:1])
    assert any(isinstance(m, FastLayer) for m in twin.modules())
    assert matches(q, twin, x)  # eval and train mode, bit for bit
    y = torch.randint(0, 10, (len(x),))
    params = [p for p in q.parameters() if p.requires_grad]
    grads = []
    for net in (q, twin):
        net.train()
        torch.manual_seed(1)
        grads.append(torch.autograd.grad(F.cross_entropy(net(x), y), params))
    assert all(torch.equal(a, b) for a, b in zip(*grads))


@pytest.mark.parametrize("factory,shape", [(digits_cnn, (32, 1, 8, 8)), (digits_mlp, (32, 64)), (mnist1d_cnn, (32, 1, 40))])
@pytest.mark.parametrize("mode,bits", [("pow2", 8), ("float", 8), ("pow2", None)])
def test_twin_equals_carrier_builtin(factory, shape, mode, bits):
    q, x = _carrier(factory, shape, mode, bits)
    _same_forward_and_grads(q, x)


@pytest.mark.parametrize("net", ["ResNet", "ConcatNet"])
def test_twin_equals_carrier_add_concat(tmp_path, net):
    """onnx2torch graphs with a residual Add / a Concat (shared join quantizers), BatchNorm, AvgPool."""
    sys.path.insert(0, str(Path(__file__).parent))
    import corpus

    torch.manual_seed(0)
    path = tmp_path / "m.onnx"
    torch.onnx.export(getattr(corpus, net)().eval(), torch.zeros(1, 1, 8, 8), str(path), opset_version=13, dynamo=False,
                      dynamic_axes={"input": {0: "N"}}, input_names=["input"])
    q, x = _carrier(lambda: model_from_onnx(path), (32, 1, 8, 8))
    assert any(n.startswith("body.opq_join") for n, _ in q.named_modules())
    _same_forward_and_grads(q, x)


def test_a_different_scale_is_caught():
    q, x = _carrier(digits_cnn, (32, 1, 8, 8))
    twin = fast_twin(q, x[:1])
    layer = next(m for m in twin.modules() if isinstance(m, FastLayer))
    layer.wq.scale.mul_(2)
    assert not matches(q, twin, x)


def test_fast_finetune_trains_the_carrier_as_brevitas_does():
    """Same data, same seed: the carrier after fast finetuning equals the one finetuned through
    Brevitas's own forward, every weight, bias and BatchNorm statistic bit for bit."""
    x = torch.rand(96, 1, 8, 8)
    y = torch.randint(0, 10, (96,))
    states = []
    for fast in (True, False):
        q, _ = _carrier(digits_cnn, (32, 1, 8, 8))
        before = quant_state(q)
        hist = finetune(q, (x, y), epochs=2, batch_size=32, lr=1e-2, progress=False, fast=fast)
        after = quant_state(q)
        assert all(torch.equal(before[k], after[k]) for k in before)  # masks and quantizers frozen
        states.append((hist, q.state_dict()))
    (h1, s1), (h2, s2) = states
    assert h1 == h2
    assert s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)


def test_finetune_falls_back_to_the_carrier(monkeypatch):
    """A twin that cannot be built, or does not match, is not used: the carrier trains itself."""
    import opq_hw.fakequant as fq
    from opq_hw.training import _fast_twin

    q, x = _carrier(digits_cnn, (32, 1, 8, 8))
    assert _fast_twin(q, x) is not None
    monkeypatch.setattr(fq, "matches", lambda *a: False)
    assert _fast_twin(q, x) is None

    def unknown(*a):
        raise NotImplementedError("module")

    monkeypatch.setattr(fq, "fast_twin", unknown)
    assert _fast_twin(q, x) is None
