"""A corpus of float ONNX models the way other tools write them, built offline by the tests.

`build_corpus(folder)` trains small PyTorch models on sklearn's 8x8 digits (a few epochs, fixed
seeds: a couple of seconds each) and writes, per entry, `NAME.onnx` and `NAME.npz` (x_train,
y_train, x_test, y_test in the model's own input layout: NHWC / NWC for the channels-last graphs;
360 test samples). Two families:

- `t_*`: `torch.onnx.export` (the TorchScript exporter, `dynamo=False`, which works offline) at
  opsets 9, 11, 13 and 17, BatchNorm kept in the graph (`do_constant_folding=False`), some with a
  fixed batch of 1, some with a Softmax/Sigmoid head, `x.view(x.size(0), -1)` at opset 9;
- `k_*`: graphs written with `onnx.helper` in the shapes tf2onnx gives Keras models: channels-last
  input and the leading Transpose, MatMul + Add dense layers, BatchNormalization nodes, Transpose
  before Reshape/Flatten, Dropout/Identity, Softmax/Sigmoid heads, a fixed batch of 1000,
  auto_pad=SAME_UPPER, Keras Conv1D as Unsqueeze + Conv 2-D + Squeeze, ReduceMean as global pooling,
  an opset-7 graph with Gemm(transB=0), weights as external data.

`UNSUPPORTED` lists graphs the front end must refuse, with the text the error must contain.
"""
from __future__ import annotations

import dataclasses
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str
    onnx: Path
    npz: Path
    data: str  # the built-in data set whose samples fit the model (in the model's layout)
    layout: str | None  # user layout the front end must record (NHWC / NWC), None otherwise
    tail: str | None  # the classifier head the front end must cut off
    n_bn: int  # BatchNormalization nodes the front end must fold
    n_kept: int = 0  # BatchNormalization nodes it cannot fold (kept: the carrier makes them channel affines)


# ------------------------------------------------------------------ data and training

def digits_views():
    from opq_hw.data import load_dataset

    xtr, ytr, xte, yte = load_dataset("digits")  # (N, 1, 8, 8)
    return xtr, ytr, xte, yte


def view(x: np.ndarray, kind: str) -> np.ndarray:
    """digits (N,1,8,8) in a model's user layout: img NCHW, flat (N,64), flat3 (N,1,64),
    seq (N,8,8) NCW (rows are channels), nhwc (N,8,8,1), nwc (N,8,8) = seq transposed."""
    n = len(x)
    out = {"img": lambda: x, "flat": lambda: x.reshape(n, 64), "flat3": lambda: x.reshape(n, 1, 64),
           "seq": lambda: x.reshape(n, 8, 8), "nhwc": lambda: x.transpose(0, 2, 3, 1),
           "nwc": lambda: x.reshape(n, 8, 8).transpose(0, 2, 1)}[kind]()
    return np.ascontiguousarray(out, dtype=np.float32)


def model_view(kind: str) -> str:
    return {"nhwc": "img", "nwc": "seq"}.get(kind, kind)


def train(model: nn.Module, kind: str, epochs: int = 6, seed: int = 0) -> nn.Module:
    from opq_hw.training import train as _train

    torch.manual_seed(seed)
    xtr, ytr, _, _ = digits_views()
    _train(model, view(xtr, model_view(kind)), ytr, epochs=epochs, lr=5e-3, batch_size=64, seed=seed, progress=False)
    return model.eval()


def write_npz(path: Path, kind: str) -> None:
    xtr, ytr, xte, yte = digits_views()
    np.savez(path, x_train=view(xtr, kind), y_train=ytr, x_test=view(xte, kind), y_test=yte)


# ------------------------------------------------------------------ torch models

class Head(nn.Module):
    """The trained logits model with a classifier head for export."""

    def __init__(self, body: nn.Module, head: str | None):
        super().__init__()
        self.body, self.head = body, head

    def forward(self, x):
        y = self.body(x)
        if self.head == "softmax":
            return torch.softmax(y, dim=1)
        if self.head == "sigmoid":
            return torch.sigmoid(y)
        return y


class ViewNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.pool, self.fc = nn.Conv2d(1, 8, 3, padding=1), nn.MaxPool2d(2), nn.Linear(128, 10)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv(x)))
        return self.fc(x.view(x.size(0), -1))


class ResNet(nn.Module):
    def __init__(self, gap: bool = False):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2))
        self.c1 = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.c2 = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8))
        self.pool = nn.AdaptiveAvgPool2d(1) if gap else nn.AvgPool2d(2)
        self.fc = nn.Linear(8 if gap else 32, 10)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(self.c2(self.c1(x)) + x)
        return self.fc(torch.flatten(self.pool(x), 1))


class ConcatNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(1, 4, 1), nn.ReLU())
        self.rest = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(12, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Flatten(), nn.Linear(64, 10))

    def forward(self, x):
        return self.rest(torch.cat([self.a(x), self.b(x)], dim=1))


def _mlp_o9():
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 10))


def _cnn_bn():  # the third BatchNorm follows a ReLU: not foldable, kept as a channel affine
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.BatchNorm2d(16),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 10))


def _cnn1d_bn():
    return nn.Sequential(nn.Conv1d(8, 16, 3, padding=1), nn.BatchNorm1d(16), nn.ReLU(), nn.AvgPool1d(2),
                         nn.Conv1d(16, 16, 3, padding=1), nn.BatchNorm1d(16), nn.ReLU(), nn.MaxPool1d(2),
                         nn.Flatten(), nn.Linear(32, 10))


def _cnn1d_gap():
    return nn.Sequential(nn.Conv1d(8, 16, 3, padding=1), nn.ReLU(), nn.Conv1d(16, 32, 3, padding=1),
                         nn.BatchNorm1d(32), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(32, 10))


def _dwsep():
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 16, 1), nn.BatchNorm2d(16), nn.ReLU(), nn.AvgPool2d(2), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(64, 10))


def _acts1():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.LeakyReLU(0.1), nn.Linear(48, 32), nn.Tanh(),
                         nn.Linear(32, 24), nn.Hardtanh(), nn.Linear(24, 10))


def _acts2():
    return nn.Sequential(nn.Linear(64, 48), nn.ELU(), nn.Linear(48, 32), nn.SELU(), nn.Linear(32, 24), nn.Sigmoid(),
                         nn.Linear(24, 16), nn.ReLU6(), nn.Linear(16, 10))


def _mlp_bn():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10))


def _mlp_bn_in():  # a BatchNorm on the input: not foldable, kept as a channel affine
    return nn.Sequential(nn.Flatten(), nn.BatchNorm1d(64), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(),
                         nn.Linear(32, 10))


# name: (factory, user view, opset, head, dynamic batch, BN count)
TORCH = {
    "t_mlp_o9": (_mlp_o9, "flat", 9, None, True, 0),
    "t_view_o9": (ViewNet, "img", 9, None, True, 0),
    "t_cnn_bn_o11": (_cnn_bn, "img", 11, None, False, 2),
    "t_acts1_o11": (_acts1, "img", 11, "softmax", True, 0),
    "t_cnn1d_gap_o11": (_cnn1d_gap, "seq", 11, None, True, 1),
    "t_cnn1d_bn_o13": (_cnn1d_bn, "seq", 13, "softmax", True, 2),
    "t_dwsep_o13": (_dwsep, "img", 13, None, True, 3),
    "t_concat_o13": (ConcatNet, "img", 13, None, True, 1),
    "t_resnet_o17": (ResNet, "img", 17, None, True, 3),
    "t_acts2_o17": (_acts2, "flat", 17, "sigmoid", False, 0),
    "t_mlp_bn_o17": (_mlp_bn_in, "img", 17, None, True, 1),
}
KEPT_BN = {"t_cnn_bn_o11": 1, "t_mlp_bn_o17": 1}  # BatchNorms that follow no layer (a ReLU, the input)


EPOCHS = {"t_acts2_o17": 20}  # the sigmoid layer in the middle learns slowly


def _export_torch(name: str, folder: Path) -> Entry:
    factory, kind, opset, head, dynamic, n_bn = TORCH[name]
    model = train(factory(), kind, epochs=EPOCHS.get(name, 6), seed=len(name))
    path = folder / f"{name}.onnx"
    x = torch.as_tensor(view(digits_views()[2][:1], kind))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Head(model, head), x, str(path), opset_version=opset, dynamo=False, input_names=["x"],
                          output_names=["y"], do_constant_folding=False,
                          dynamic_axes={"x": {0: "N"}, "y": {0: "N"}} if dynamic else None)
    npz = folder / f"{name}.npz"
    write_npz(npz, kind)
    return Entry(name, path, npz, "digits", None, {"softmax": "softmax", "sigmoid": "sigmoid"}.get(head), n_bn,
                 KEPT_BN.get(name, 0))


# ------------------------------------------------------------------ tf2onnx-shaped graphs

class _G:
    """A small graph writer: nodes, initializers, unique names."""

    def __init__(self, auto_pad: bool = False, conv1d_as_2d: bool = False):
        self.nodes, self.inits, self.i = [], [], 0
        self.auto_pad = auto_pad  # 'same' convolutions as auto_pad=SAME_UPPER instead of explicit pads
        self.conv1d_as_2d = conv1d_as_2d  # Conv1d as Unsqueeze + Conv 2-D + Squeeze

    def name(self, base):
        self.i += 1
        return f"{base}_{self.i}"

    def const(self, base, arr, dtype=np.float32):
        from onnx import numpy_helper

        n = self.name(base)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(np.asarray(arr, dtype=dtype)), n))
        return n

    def op(self, op, inputs, base=None, **attrs):
        from onnx import helper

        out = self.name((base or op.lower()) + "_out")
        self.nodes.append(helper.make_node(op, inputs, [out], name=self.name(base or op), **attrs))
        return out


def _np(t):
    return t.detach().numpy().astype(np.float32)


def _emit_seq(g: _G, x: str, layers) -> str:
    """tf2onnx-style nodes for trained conv-part layers (the tensor is channels-first here)."""
    for m in layers:
        if isinstance(m, nn.Conv1d) and g.conv1d_as_2d:  # TF's Conv1D: ExpandDims + Conv2D + Squeeze (opset 11)
            w = _np(m.weight)[:, :, None, :]
            x = g.op("Unsqueeze", [x], "expand_dims", axes=[2])
            x = g.op("Conv", [x, g.const("kernel", w), g.const("bias", _np(m.bias))], "conv1d",
                     kernel_shape=[1, m.kernel_size[0]], pads=[0, m.padding[0], 0, m.padding[0]])
            x = g.op("Squeeze", [x], "squeeze", axes=[2])
        elif isinstance(m, (nn.Conv1d, nn.Conv2d)):
            k = list(m.kernel_size)
            pad = dict(auto_pad="SAME_UPPER") if g.auto_pad else dict(pads=list(m.padding) * 2)
            x = g.op("Conv", [x, g.const("kernel", _np(m.weight)), g.const("bias", _np(m.bias))], "conv",
                     kernel_shape=k, strides=list(m.stride), group=m.groups, **pad)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            x = g.op("BatchNormalization", [x, g.const("gamma", _np(m.weight)), g.const("beta", _np(m.bias)),
                                            g.const("mean", _np(m.running_mean)), g.const("var", _np(m.running_var))],
                     "batch_normalization", epsilon=float(m.eps))
        elif isinstance(m, nn.ReLU):
            x = g.op("Relu", [x], "re_lu")
        elif isinstance(m, nn.LeakyReLU):
            x = g.op("LeakyRelu", [x], "leaky_re_lu", alpha=float(m.negative_slope))
        elif isinstance(m, (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d)):
            nd = 1 if isinstance(m, (nn.MaxPool1d, nn.AvgPool1d)) else 2
            k = m.kernel_size if isinstance(m.kernel_size, tuple) else (m.kernel_size,) * nd
            op = "MaxPool" if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d)) else "AveragePool"
            x = g.op(op, [x], op.lower(), kernel_shape=list(k), strides=list(k))
        elif isinstance(m, nn.Dropout):
            x = g.op("Dropout", [x], "dropout")
        else:
            raise TypeError(type(m))
    return x


def _shapes_after(layers, x0):
    """(C, *spatial) before the first Linear, found by running the layers."""
    with torch.no_grad():
        x = x0
        for m in layers:
            if isinstance(m, (nn.Flatten, nn.Linear)):
                return tuple(x.shape[1:])
            x = m(x)
    return None


def _emit_model(seq: nn.Sequential, in_shape, channels_last: bool, head: str | None, batch, opset: int = 13,
                dense: str = "matmul", batch_reshape: int = -1, extra_dropout: bool = True, auto_pad: bool = False,
                conv1d_as_2d: bool = False):
    from onnx import TensorProto, helper

    g = _G(auto_pad, conv1d_as_2d)
    layers = list(seq)
    rank = len(in_shape)
    x = "input_1"
    h = x
    if channels_last:
        h = g.op("Transpose", [x], "transpose", perm=[0, rank, *range(1, rank)])
    if extra_dropout:
        h = g.op("Identity", [h], "identity")
    cf = (1,) + ((in_shape[-1],) + tuple(in_shape[:-1]) if channels_last else tuple(in_shape))
    flat_shape = _shapes_after(layers, torch.zeros(cf))  # (C, *spatial) at the flatten
    out = _emit_with_shape(g, h, layers, channels_last, flat_shape, dense, batch_reshape)
    if head == "softmax":
        out = g.op("Softmax", [out], "softmax", axis=-1)
    elif head == "sigmoid":
        out = g.op("Sigmoid", [out], "sigmoid")
    b = batch if batch is not None else "unk__1"
    graph = helper.make_graph(g.nodes, "keras_model", [helper.make_tensor_value_info(x, TensorProto.FLOAT, [b, *in_shape])],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, [b, 10])], g.inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="tf2onnx")
    m.ir_version = 7 if opset < 13 else 8
    return m


def _emit_with_shape(g, x, layers, channels_last, flat_shape, dense, batch_reshape):
    # split at the first Linear: conv part, then dense part with the flatten
    first_lin = next(i for i, m in enumerate(layers) if isinstance(m, nn.Linear))
    x = _emit_seq(g, x, [m for m in layers[:first_lin] if not isinstance(m, nn.Flatten)])
    dense_layers = layers[first_lin:]
    w = _np(dense_layers[0].weight).T
    if flat_shape is not None and len(flat_shape) > 1:
        if channels_last:
            c, sp = flat_shape[0], list(flat_shape[1:])
            idx = np.moveaxis(np.arange(c * int(np.prod(sp))).reshape([c] + sp), 0, -1).reshape(-1)
            w = w[idx]
            x = g.op("Transpose", [x], "transpose", perm=[0] + list(range(2, 2 + len(sp))) + [1])
        x = g.op("Reshape", [x, g.const("shape", [batch_reshape, w.shape[0]], np.int64)], "flatten")
    for i, m in enumerate(dense_layers):
        if isinstance(m, nn.Linear):
            wi = w if i == 0 else _np(m.weight).T
            if dense == "matmul":
                x = g.op("MatMul", [x, g.const("kernel", wi)], "dense")
                x = g.op("Add", [x, g.const("bias", _np(m.bias))], "dense_bias")
            else:
                x = g.op("Gemm", [x, g.const("kernel", wi), g.const("bias", _np(m.bias))], "dense", transB=0)
        else:
            x = _emit_seq(g, x, [m])
    return x


def _k_mlp_b1000(folder):
    seq = train(nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 16), nn.ReLU(),
                              nn.Linear(16, 10)), "flat", seed=11)
    return _emit_model(seq, (64,), False, "softmax", 1000), "flat", None, "softmax", 0


def _k_cnn_nhwc(folder):
    seq = train(nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                              nn.Linear(64, 10)), "img", seed=12)
    return _emit_model(seq, (8, 8, 1), True, "softmax", None), "nhwc", "NHWC", "softmax", 1


def _k_cnn1d_nwc_b1000(folder):
    seq = train(nn.Sequential(nn.Conv1d(8, 16, 3, padding=1), nn.BatchNorm1d(16), nn.ReLU(), nn.AvgPool1d(2),
                              nn.Dropout(0.1), nn.Conv1d(16, 16, 3, padding=1), nn.ReLU(), nn.MaxPool1d(2),
                              nn.Flatten(), nn.Linear(32, 10)), "seq", seed=13)
    return _emit_model(seq, (8, 8), True, "sigmoid", 1000, batch_reshape=1000, auto_pad=True), "nwc", "NWC", \
        "sigmoid", 1


def _k_conv1d_nwc_o11(folder):
    seq = train(nn.Sequential(nn.Conv1d(8, 16, 3, padding=1), nn.BatchNorm1d(16), nn.ReLU(), nn.MaxPool1d(2),
                              nn.Conv1d(16, 16, 3, padding=1), nn.ReLU(), nn.MaxPool1d(2),
                              nn.Flatten(), nn.Linear(32, 10)), "seq", seed=18)
    return _emit_model(seq, (8, 8), True, "softmax", None, opset=11, conv1d_as_2d=True), "nwc", "NWC", "softmax", 1


def _k_mlp_o7_gemm(folder):
    seq = train(_mlp_bn(), "img", seed=14)
    return _emit_model(seq, (1, 8, 8), False, None, None, opset=7, dense="gemm", extra_dropout=False), \
        "img", None, None, 1


def _k_external(folder):
    import onnx
    from onnx import helper

    seq = train(nn.Sequential(nn.Linear(64, 32), nn.LeakyReLU(0.25), nn.Linear(32, 10)), "flat", seed=15)
    g = _G()
    x = g.op("Flatten", ["input_1"], "flatten", axis=2)
    x = g.op("Gemm", [x, g.const("w1", _np(seq[0].weight)), g.const("b1", _np(seq[0].bias))], "dense", transB=1)
    x = g.op("LeakyRelu", [x], "leaky", alpha=0.25)  # a power-of-two slope: exact in hls4ml
    x = g.op("Dropout", [x], "dropout")
    x = g.op("Gemm", [x, g.const("w2", _np(seq[2].weight)), g.const("b2", _np(seq[2].bias))], "dense", transB=1)
    graph = helper.make_graph(g.nodes, "ext", [helper.make_tensor_value_info("input_1", 1, ["N", 1, 64])],
                              [helper.make_tensor_value_info(x, 1, ["N", 10])], g.inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    path = folder / "k_external.onnx"
    onnx.save(m, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="k_external.weights",
              size_threshold=0)
    return None, "flat3", None, None, 0


class ResGap(nn.Module):
    def __init__(self):
        super().__init__()
        self.c0, self.c1, self.c2 = (nn.Conv2d(1, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1),
                                     nn.Conv2d(16, 16, 3, padding=1))
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = torch.relu(self.c0(x))
        x = torch.relu(self.c2(torch.relu(self.c1(x))) + x)
        return self.fc(x.mean((2, 3)))


def _k_res_gap_nhwc(folder):
    from onnx import helper

    m = train(ResGap(), "img", epochs=12, seed=16)
    g = _G()
    x = g.op("Transpose", ["input_1"], "transpose", perm=[0, 3, 1, 2])

    def conv(x, c):
        return g.op("Conv", [x, g.const("kernel", _np(c.weight)), g.const("bias", _np(c.bias))], "conv",
                    kernel_shape=[3, 3], pads=[1, 1, 1, 1])

    x = g.op("Relu", [conv(x, m.c0)], "re_lu")
    y = g.op("Relu", [conv(x, m.c1)], "re_lu")
    y = g.op("Add", [conv(y, m.c2), x], "add")
    y = g.op("Relu", [y], "re_lu")
    y = g.op("GlobalAveragePool", [y], "global_average_pooling2d")
    y = g.op("Squeeze", [y, g.const("axes", [2, 3], np.int64)], "squeeze")
    y = g.op("MatMul", [y, g.const("kernel", _np(m.fc.weight).T)], "dense")
    y = g.op("Add", [y, g.const("bias", _np(m.fc.bias))], "dense_bias")
    y = g.op("Softmax", [y], "softmax", axis=-1)
    graph = helper.make_graph(g.nodes, "res", [helper.make_tensor_value_info("input_1", 1, ["unk__2", 8, 8, 1])],
                              [helper.make_tensor_value_info(y, 1, ["unk__2", 10])], g.inits)
    mm = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="tf2onnx")
    mm.ir_version = 8
    return mm, "nhwc", "NHWC", "softmax", 0


def _k_dwsep_nhwc_mean(folder):
    """A Keras MobileNet-style block as tf2onnx writes it without its transpose optimizer: ReLU6 as Clip,
    a depthwise Conv (group = channels), GlobalAveragePooling as Transpose + ReduceMean."""
    from onnx import helper

    seq = train(nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU6(),
                              nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), nn.ReLU6(),
                              nn.Conv2d(16, 32, 1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                              nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)), "img", epochs=10, seed=17)
    g = _G(auto_pad=True)
    x = g.op("Transpose", ["input_1"], "transpose", perm=[0, 3, 1, 2])
    lo, hi = g.const("clip_min", 0.0), g.const("clip_max", 6.0)
    for m in list(seq)[:10]:
        if isinstance(m, nn.ReLU6):
            x = g.op("Clip", [x, lo, hi], "re_lu6")
        else:
            x = _emit_seq(g, x, [m])
    x = g.op("Transpose", [x], "transpose", perm=[0, 2, 3, 1])
    x = g.op("ReduceMean", [x], "global_average_pooling2d", axes=[1, 2], keepdims=0)
    x = g.op("MatMul", [x, g.const("kernel", _np(seq[12].weight).T)], "dense")
    x = g.op("Add", [x, g.const("bias", _np(seq[12].bias))], "dense_bias")
    x = g.op("Softmax", [x], "softmax", axis=-1)
    graph = helper.make_graph(g.nodes, "mobile", [helper.make_tensor_value_info("input_1", 1, ["unk__3", 8, 8, 1])],
                              [helper.make_tensor_value_info(x, 1, ["unk__3", 10])], g.inits)
    mm = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="tf2onnx")
    mm.ir_version = 8
    return mm, "nhwc", "NHWC", "softmax", 3


KERAS: dict[str, Callable] = {
    "k_mlp_b1000": _k_mlp_b1000,
    "k_cnn_nhwc": _k_cnn_nhwc,
    "k_cnn1d_nwc_b1000": _k_cnn1d_nwc_b1000,
    "k_conv1d_nwc_o11": _k_conv1d_nwc_o11,
    "k_mlp_o7_gemm": _k_mlp_o7_gemm,
    "k_external": _k_external,
    "k_res_gap_nhwc": _k_res_gap_nhwc,
    "k_dwsep_nhwc_mean": _k_dwsep_nhwc_mean,
}


def _build_keras(name: str, folder: Path) -> Entry:
    import onnx

    model, kind, layout, tail, n_bn = KERAS[name](folder)
    path = folder / f"{name}.onnx"
    if model is not None:
        onnx.checker.check_model(model)
        onnx.save(model, str(path))
    npz = folder / f"{name}.npz"
    write_npz(npz, kind)
    return Entry(name, path, npz, "digits", layout, tail, n_bn)


NAMES = tuple(TORCH) + tuple(KERAS)


def build_corpus(folder: str | Path, names=NAMES) -> dict[str, Entry]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    out = {}
    for n in names:
        torch.manual_seed(zlib.crc32(n.encode()))  # each entry's initial weights independent of the others
        out[n] = _export_torch(n, folder) if n in TORCH else _build_keras(n, folder)
    return out


# ------------------------------------------------------------------ graphs the front end must refuse

def _tiny(nodes, inits, in_shape=("N", 4), out_shape=("N", 4), opset=13, domains=()):
    from onnx import helper

    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, list(in_shape))],
                              [helper.make_tensor_value_info("y", 1, list(out_shape))], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]
                          + [helper.make_opsetid(d, 1) for d in domains])
    m.ir_version = 8
    return m


def _init(name, arr, dtype=np.float32):
    from onnx import numpy_helper

    return numpy_helper.from_array(np.asarray(arr, dtype=dtype), name)


def _unsupported():
    from onnx import helper

    w = np.eye(4, dtype=np.float32)
    gemm = lambda i, o: helper.make_node("Gemm", [i, "w"], [o], name="dense")  # noqa: E731
    return {
        "lstm": (_tiny([helper.make_node("LSTM", ["x", "W", "R"], ["", "y"], name="lstm_1", hidden_size=4)],
                       [_init("W", np.zeros((1, 16, 4))), _init("R", np.zeros((1, 16, 4)))], in_shape=(5, "N", 4),
                       out_shape=(1, "N", 4)),
                 "unsupported ONNX ops: LSTM (node 'lstm_1')"),
        "resize": (_tiny([helper.make_node("Resize", ["x", "", "s"], ["r"], name="up"), gemm("r", "y")],
                         [_init("s", [1, 1]), _init("w", w)]),
                   "unsupported ONNX ops: Resize (node 'up')"),
        "custom_domain": (_tiny([helper.make_node("FusedGemm", ["x", "w"], ["y"], name="fused", domain="com.microsoft")],
                                [_init("w", w)], domains=("com.microsoft",)),
                          "com.microsoft.FusedGemm (node 'fused')"),
        "qonnx_quant": (_tiny([helper.make_node("Quant", ["x", "s", "z", "b"], ["q"], name="quant_in",
                                                domain="qonnx.custom_op.general", signed=1, narrow=0,
                                                rounding_mode="ROUND"), gemm("q", "y")],
                              [_init("s", 1.0), _init("z", 0.0), _init("b", 8.0), _init("w", w)],
                              domains=("qonnx.custom_op.general",)),
                        "already quantized (Quant (node 'quant_in'))"),
        "qdq": (_tiny([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q0"),
                       helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"], name="dq0"), gemm("d", "y")],
                      [_init("s", 0.1), _init("z", 0, np.int8), _init("w", w)]),
                "already quantized (DequantizeLinear (node 'dq0'), QuantizeLinear (node 'q0'))"),
        "bn_training_mode": (_tiny([gemm("x", "h"), helper.make_node("Relu", ["h"], ["r"], name="relu"),
                                    helper.make_node("BatchNormalization", ["r", "g", "b", "m", "v"], ["y"], name="bn",
                                                     training_mode=1)],
                                   [_init("w", w)] + [_init(n, np.ones(4)) for n in "gbmv"], opset=15),
                             "BatchNormalization 'bn' is in training mode"),
        "unknown_dims": (_tiny([helper.make_node("Conv", ["x", "k"], ["c"], name="conv", kernel_shape=[1, 1]),
                                helper.make_node("GlobalAveragePool", ["c"], ["p"], name="gap"),
                                helper.make_node("Flatten", ["p"], ["y"], name="flat")],
                               [_init("k", np.ones((4, 3, 1, 1)))], in_shape=("N", 3, "H", "W")),
                         "dimensions 2, 3 are not fixed in the graph; give --input-shape 3,?,?"),
        "asymmetric_pads": (_tiny([helper.make_node("Conv", ["x", "k"], ["c"], name="conv_s2", kernel_shape=[2, 2],
                                                    strides=[2, 2], auto_pad="SAME_UPPER"),
                                   helper.make_node("Flatten", ["c"], ["y"], name="flat")],
                                  [_init("k", np.ones((2, 1, 2, 2)))], in_shape=("N", 1, 5, 5), out_shape=("N", 18)),
                            "Conv 'conv_s2' pads [0, 0] before and [1, 1] after"),
        "matmul_two_activations": (_tiny([helper.make_node("MatMul", ["x", "x"], ["y"], name="mm")], [],
                                         in_shape=("N", 4, 4), out_shape=("N", 4, 4)),
                                   "MatMul 'mm' multiplies two activations"),
        "reshape_3d": (_tiny([gemm("x", "h"), helper.make_node("Reshape", ["h", "shp"], ["y"], name="rs")],
                             [_init("w", w), _init("shp", [-1, 2, 2], np.int64)], out_shape=("N", 2, 2)),
                       "Reshape 'rs' maps per-sample shape (4) to (2, 2)"),
    }


UNSUPPORTED = _unsupported  # name -> (ModelProto, expected error text), built on call (needs onnx)


if __name__ == "__main__":  # python tests/corpus.py OUT_DIR: write the corpus for a look by hand
    import sys

    for e in build_corpus(sys.argv[1] if len(sys.argv) > 1 else "onnx_corpus").values():
        print(e.onnx, e.npz, e.layout or "", e.tail or "")
