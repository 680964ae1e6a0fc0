"""The integer network behind the open RTL flow: exact against Brevitas, JSON round-trip, clear errors.
Fast (no EDA tools): a small Brevitas model is built inline."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from opq_hw.errors import OpqError
from opq_hw.rtl.gen import matrix_for
from opq_hw.rtl.intnet import IntNet, extract, rne_shift


@given(st.lists(st.integers(-(2 ** 20), 2 ** 20), min_size=1, max_size=50), st.integers(-12, 4))
@settings(max_examples=200, deadline=None)
def test_rne_shift_is_round_half_even(vals, shift):
    acc = np.array(vals, dtype=np.int64)
    want = np.round(acc.astype(np.float64) * 2.0 ** shift)  # numpy rounds half to even, exact here
    np.testing.assert_array_equal(rne_shift(acc, shift), want.astype(np.int64))


def test_rne_shift_ties():
    np.testing.assert_array_equal(rne_shift(np.array([4, 12, 20, -4, -12, 5, 11]), -3), [0, 2, 2, 0, -2, 1, 1])


def _bmodel(kind: str, bits: int = 4, pow2: bool = True, seed: int = 0) -> nn.Module:
    import brevitas.nn as qnn
    from brevitas.quant.fixed_point import (Int8ActPerTensorFixedPoint, Int8WeightPerChannelFixedPoint,
                                            Uint8ActPerTensorFixedPoint)
    from brevitas.quant.scaled_int import Int8ActPerTensorFloat, Int16Bias

    wq = Int8WeightPerChannelFixedPoint.let(bit_width=bits)
    aq = Int8ActPerTensorFixedPoint if pow2 else Int8ActPerTensorFloat
    torch.manual_seed(seed)

    def relu():
        return qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, return_quant_tensor=True)

    if kind == "cnn2d":
        body = [qnn.QuantConv2d(1, 4, 3, padding=1, weight_quant=wq, bias_quant=Int16Bias), relu(), nn.MaxPool2d(2),
                qnn.QuantConv2d(4, 6, 3, padding=1, weight_quant=wq, bias_quant=Int16Bias), relu(), nn.MaxPool2d(2),
                nn.Flatten(), qnn.QuantLinear(24, 5, weight_quant=wq, bias_quant=Int16Bias)]
        shape = (1, 8, 8)
    elif kind == "cnn1d":
        body = [qnn.QuantConv1d(1, 4, 5, padding=2, weight_quant=wq, bias_quant=Int16Bias), relu(), nn.MaxPool1d(2),
                qnn.QuantConv1d(4, 4, 3, padding=0, weight_quant=wq, bias_quant=Int16Bias), relu(),
                nn.Flatten(), qnn.QuantLinear(4 * 8, 3, weight_quant=wq, bias_quant=Int16Bias)]
        shape = (1, 20)
    else:
        body = [qnn.QuantLinear(16, 12, weight_quant=wq, bias_quant=Int16Bias), relu(),
                qnn.QuantLinear(12, 4, weight_quant=wq, bias_quant=Int16Bias)]
        shape = (16,)
    m = nn.Sequential(qnn.QuantIdentity(act_quant=aq, return_quant_tensor=True), *body)
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() > 1:
                p.mul_((torch.rand_like(p) > 0.4).float())  # some exact zeros, as after pruning
    m.train()
    with torch.no_grad():
        for _ in range(4):
            m(torch.randn((64,) + shape) * 3)
    m.eval()
    m.example_shape = shape
    return m


@pytest.mark.parametrize("kind", ["cnn2d", "cnn1d", "mlp"])
def test_intnet_bit_exact_against_brevitas(kind):
    m = _bmodel(kind)
    x = torch.randn((300,) + m.example_shape) * 3
    with torch.no_grad():
        xq = m[0](x).value.numpy()
        ref = m(torch.as_tensor(xq))
    ref = (ref.value if hasattr(ref, "value") else ref).numpy()
    net = extract(m, xq[:1])
    np.testing.assert_array_equal(net.predict(xq), ref)
    # the requantization is exercised: some activations saturate, some are cut to 0
    acts = net.forward_int(net.to_int_input(xq), upto=1)
    assert acts.min() == 0 and acts.max() > 0
    net2 = IntNet.from_dict(json.loads(json.dumps(net.to_dict())))
    np.testing.assert_array_equal(net2.predict(xq), ref)


def test_dense_matrix_is_in_stream_order():
    """matrix_for permutes the dense weights from torch's flatten order (c, h, w) to the stream's (h, w, c)."""
    m = _bmodel("cnn2d")
    net = extract(m, np.zeros((1, 1, 8, 8), dtype=np.float32))
    L = net.layers[-1]
    c, h, w = L.in_shape
    a = np.arange(c * h * w).reshape(c, h, w)
    stream = a.transpose(1, 2, 0).reshape(-1)  # what opq_collect presents
    np.testing.assert_array_equal(stream @ matrix_for(L), a.reshape(-1) @ L.w.T)


def test_rejects_float_scales():
    m = _bmodel("mlp", pow2=False)
    with pytest.raises(OpqError, match="power of two"):
        extract(m, np.zeros((1, 16), dtype=np.float32))


def test_rejects_off_grid_input():
    m = _bmodel("mlp")
    net = extract(m, np.zeros((1, 16), dtype=np.float32))
    with pytest.raises(OpqError, match="grid"):
        net.to_int_input(np.full((1, 16), 0.3333, dtype=np.float32))


def test_rejects_unsupported_layer():
    import brevitas.nn as qnn
    from brevitas.quant.fixed_point import Int8ActPerTensorFixedPoint

    m = nn.Sequential(qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, return_quant_tensor=True),
                      nn.Flatten(), nn.Linear(16, 3))
    m.eval()
    with pytest.raises(OpqError, match="float"):
        extract(m, np.zeros((1, 16), dtype=np.float32))
