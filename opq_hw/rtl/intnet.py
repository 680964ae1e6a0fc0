"""The integer network the RTL implements, read off a Brevitas model in hardware mode (pow2 scales).

`extract(qmodel, x)` walks the model's leaf modules in forward order (found with hooks on one
forward pass) and returns an `IntNet`: the input quantizer, then per layer the integer weights,
the integer bias (Int16Bias: round-half-even of b / (s_in * s_w[c]), clamped to int16), and the
requantization to the next activation grid as a per-channel power-of-two shift (round half to
even, as Brevitas' QuantReLU rounds with torch.round, then clamp to [0, 2^bits - 1]), max pools
and the flatten. `IntNet.forward_int` is the bit-exact integer reference every RTL test checks
against; `IntNet.logits` turns the last accumulators into the float32 logits Brevitas returns.

Everything is integers plus power-of-two exponents, so `IntNet.to_dict()` round-trips via JSON.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..errors import OpqError


def rne_shift(acc: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """acc * 2^shift rounded half to even (shift < 0 drops -shift bits; shift >= 0 is exact).

    `shift` broadcasts against `acc` (per channel). Integer-only: floor, remainder and the tie rule.
    """
    acc = np.asarray(acc, dtype=np.int64)
    shift = np.broadcast_to(np.asarray(shift, dtype=np.int64), acc.shape)
    out = np.empty_like(acc)
    left = shift >= 0
    out[left] = acc[left] << shift[left]
    k = -shift[~left]
    a = acc[~left]
    q = a >> k  # floor
    r = a - (q << k)
    half = np.int64(1) << (k - 1)
    up = (r > half) | ((r == half) & ((q & 1) == 1))
    out[~left] = q + up
    return out


@dataclass
class IntLayer:
    """One conv/linear layer in integers. conv: w (cout, cin, kh, kw); linear: w (cout, cin) with
    cin in the torch order of the flattened input."""

    name: str
    kind: str  # conv | linear
    w: np.ndarray
    b: np.ndarray
    in_bits: int
    in_signed: bool
    in_shape: tuple[int, int, int]  # (C, H, W) of the input activation (1-D: H = 1)
    out_shape: tuple[int, int, int]
    padding: tuple[int, int] = (0, 0)
    w_exp: tuple[int, ...] = ()  # log2 of s_in * s_w[c]: the accumulator's LSB per channel
    # requantization to the next activation (None for the last layer, whose output is the logits)
    out_shift: tuple[int, ...] | None = None  # per channel: log2(s_in * s_w[c] / s_out)
    out_bits: int | None = None
    out_exp: int | None = None  # log2 s_out

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["w"] = self.w.tolist()
        d["b"] = self.b.tolist()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "IntLayer":
        d = dict(d)
        d["w"] = np.asarray(d["w"], dtype=np.int64)
        d["b"] = np.asarray(d["b"], dtype=np.int64)
        for k in ("in_shape", "out_shape", "padding", "w_exp"):
            d[k] = tuple(d[k])
        if d.get("out_shift") is not None:
            d["out_shift"] = tuple(d["out_shift"])
        return cls(**d)


@dataclass(frozen=True)
class Pool:
    """Max pooling over K x K windows at stride K, no padding, floor (a 1-D activation, H = 1: 1 x K)."""

    k: int

    def window(self, h: int) -> tuple[int, int]:
        """(rows, columns) of the window on an activation of height `h`."""
        return (self.k if h > 1 else 1, self.k)

    def out_shape(self, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        c, h, w = shape
        kr, kc = self.window(h)
        return (c, h // kr, w // kc)

    def to_dict(self) -> dict[str, Any]:
        return {"op": "pool", "args": [self.k]}


@dataclass(frozen=True)
class Flatten:
    """The flatten before the dense layers (a no-op on integers: dense layers take (C, H, W) and
    flatten in torch order themselves)."""

    def to_dict(self) -> dict[str, Any]:
        return {"op": "flatten", "args": []}


Stage = IntLayer | Pool | Flatten

# JSON "op" -> the stage it reads back
_STAGE_FROM_DICT = {
    "layer": IntLayer.from_dict,
    "pool": lambda d: Pool(int(d["args"][0])),
    "flatten": lambda d: Flatten(),
}


@dataclass
class IntNet:
    """Input quantizer + a list of stages: IntLayer, Pool or Flatten."""

    in_shape: tuple[int, int, int]
    in_bits: int
    in_signed: bool
    in_exp: int  # log2 of the input quantizer's scale
    stages: list[Stage] = field(default_factory=list)
    torch_in_shape: tuple[int, ...] = ()  # per-sample input shape in PyTorch layout

    def __post_init__(self):
        bad = [s for s in self.stages if not isinstance(s, (IntLayer, Pool, Flatten))]
        if bad:
            raise TypeError(f"IntNet stages are IntLayer, Pool or Flatten records, got {bad[0]!r}")

    @property
    def layers(self) -> list[IntLayer]:
        return [s for s in self.stages if isinstance(s, IntLayer)]

    def to_dict(self) -> dict[str, Any]:
        st = [{"op": "layer", **s.to_dict()} if isinstance(s, IntLayer) else s.to_dict() for s in self.stages]
        return {"in_shape": list(self.in_shape), "in_bits": self.in_bits, "in_signed": self.in_signed,
                "in_exp": self.in_exp, "torch_in_shape": list(self.torch_in_shape), "stages": st}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "IntNet":
        stages = []
        for s in d["stages"]:
            s = dict(s)
            stages.append(_STAGE_FROM_DICT[s.pop("op")](s))
        return cls(tuple(d["in_shape"]), d["in_bits"], d["in_signed"], d["in_exp"], stages,
                   tuple(d.get("torch_in_shape", ())))

    # -- the integer reference -------------------------------------------------------------
    def to_int_input(self, x_q: np.ndarray) -> np.ndarray:
        """Input on the quantizer grid (float, PyTorch layout) -> integers (N, C, H, W).

        Raises OpqError if a value is off the grid or out of range (give `quantize_input(run, x)`)."""
        x = np.asarray(x_q, dtype=np.float64)
        n = x.shape[0]
        xi = x * 2.0 ** (-self.in_exp)
        r = np.rint(xi)
        lo, hi = (-(2 ** (self.in_bits - 1)), 2 ** (self.in_bits - 1) - 1) if self.in_signed else (0, 2 ** self.in_bits - 1)
        if not np.array_equal(r, xi) or r.min(initial=0) < lo or r.max(initial=0) > hi:
            raise OpqError("the RTL input is not on the input quantizer's grid; pass "
                           "opq_hw.pipeline.quantize_input(run, x), not raw data")
        return r.astype(np.int64).reshape((n,) + tuple(self.in_shape))

    def forward_int(self, xi: np.ndarray, upto: int | None = None) -> np.ndarray:
        """Integer forward pass. Returns the last layer's accumulators (N, n_out), or the
        activation after stage `upto` (exclusive index) as (N, C, H, W) integers."""
        a = np.asarray(xi, dtype=np.int64)
        for i, st in enumerate(self.stages):
            if upto is not None and i >= upto:
                return a
            if isinstance(st, IntLayer):
                a = _layer_int(st, a)
            elif isinstance(st, Pool):
                n, c, h, w = a.shape
                kr, kc = st.window(h)
                _, oh, ow = st.out_shape((c, h, w))
                a = a[:, :, : oh * kr, : ow * kc].reshape(n, c, oh, kr, ow, kc).max(axis=(3, 5))
        return a

    def logits(self, acc: np.ndarray) -> np.ndarray:
        """Last layer's integer accumulators -> float32 logits, exactly as Brevitas computes them."""
        last = self.layers[-1]
        scale = np.array([2.0 ** e for e in last.w_exp], dtype=np.float64)
        return (np.asarray(acc, dtype=np.float64).reshape(len(acc), -1) * scale).astype(np.float32)

    def predict(self, x_q: np.ndarray) -> np.ndarray:
        return self.logits(self.forward_int(self.to_int_input(x_q)))


def _layer_int(L: IntLayer, a: np.ndarray) -> np.ndarray:
    n = a.shape[0]
    if L.kind == "conv":
        cout, cin, kh, kw = L.w.shape
        ph, pw = L.padding
        ap = np.pad(a, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        win = np.lib.stride_tricks.sliding_window_view(ap, (kh, kw), axis=(2, 3))  # n c oh ow kh kw
        acc = np.einsum("ncyxij,ocij->noyx", win, L.w, optimize=True) + L.b[None, :, None, None]
    else:
        acc = a.reshape(n, -1) @ L.w.T + L.b[None, :]
        acc = acc.reshape(n, -1, 1, 1)
    if L.out_shift is None:
        return acc.reshape(n, -1)
    y = rne_shift(acc, np.asarray(L.out_shift).reshape(1, -1, 1, 1))
    return np.clip(y, 0, 2 ** L.out_bits - 1)


# -- extraction from Brevitas ----------------------------------------------------------------
def _log2_exact(v: float, what: str) -> int:
    if not (v > 0) or not math.isfinite(v):
        raise OpqError(f"{what}: scale {v} is not a positive number")
    e = math.log2(v)
    if e != round(e):
        raise OpqError(f"{what}: scale {v} is not a power of two; the RTL flow needs a run compressed with "
                       f"scale_mode='pow2' (opq-hw compress ... --scale-mode pow2)")
    return int(round(e))


def _qt_params(qt, what: str) -> tuple[int, bool, int]:
    """(bits, signed, exponent) of a Brevitas QuantTensor with a scalar pow2 scale and zero point 0."""
    try:
        scale = qt.scale.detach().reshape(-1)
        zp = qt.zero_point.detach().reshape(-1)
        bits = int(qt.bit_width.detach().reshape(-1)[0])
        signed = bool(qt.signed)
    except AttributeError as e:
        raise OpqError(f"{what} does not return a QuantTensor (set return_quant_tensor=True) ({e})") from e
    if scale.numel() != 1:
        raise OpqError(f"{what}: per-channel activation scales are not supported by the RTL flow")
    if float(zp.abs().max()) != 0.0:
        raise OpqError(f"{what}: non-zero zero point; the RTL flow needs symmetric (zero-point 0) activations")
    return bits, signed, _log2_exact(float(scale[0]), what)


def _bias_int(b: np.ndarray, w_exp: list[int]) -> np.ndarray:
    """Int16Bias: round half to even of b / (s_in * s_w[c]), clamped to the signed 16-bit range."""
    v = np.asarray(b, dtype=np.float64) * np.array([2.0 ** -e for e in w_exp])
    return np.clip(np.rint(v), -(2 ** 15), 2 ** 15 - 1).astype(np.int64)


def extract(qmodel, example_x, int_weights=None) -> IntNet:
    """Read the integer network off a Brevitas model (eval mode, pow2 scales).

    `example_x`: one float input batch in PyTorch layout (its values do not matter).
    `int_weights(name)`, if given (e.g. `Run.int_weights`), is cross-checked against the
    integers Brevitas itself uses. Raises OpqError for anything the RTL flow cannot build.
    One handler per module kind (`_handlers`) reads each leaf module's call in forward order.
    """
    import torch

    from ..carrier_graph import refuse_affines

    refuse_affines(qmodel, "RTL", "its generators have no per-channel multiply-add stage")
    x = torch.as_tensor(np.asarray(example_x, dtype=np.float32))
    calls = _leaf_calls(qmodel, x)
    torch_in_shape = tuple(x.shape[1:])
    walk = _Walk(_stream_shape(torch_in_shape), torch_in_shape, int_weights)
    handlers = _handlers()
    for name, m, out in calls:
        name = getattr(m, "opq_layer", name)  # the float model's layer name (opq_hw.carrier)
        what = f"layer {name!r} ({type(m).__name__})"
        handler = next((h for types, h in handlers if isinstance(m, types)), None)
        if walk.net is None and handler is not _quant_identity:
            raise OpqError(f"{what} comes before the input quantizer; the RTL flow needs a QuantIdentity input quantizer first")
        if handler is None:
            raise _unsupported(m, what)
        handler(walk, name, m, out, what)
    net = walk.net
    if net is None or not net.layers:
        raise OpqError("the model has no input quantizer or no layer; the RTL flow needs a Brevitas model in hardware mode")
    if net.layers[-1].out_shift is not None:
        raise OpqError("the last layer ends in a QuantReLU; the RTL flow expects float logits from the last layer")
    return net


def _stream_shape(torch_in_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """The (C, H, W) the RTL streams for a per-sample PyTorch input shape."""
    if len(torch_in_shape) == 1:
        return (1, 1, torch_in_shape[0])  # a feature vector streams as W pixels of 1 channel
    if len(torch_in_shape) == 2:
        return (torch_in_shape[0], 1, torch_in_shape[1])
    if len(torch_in_shape) == 3:
        return tuple(torch_in_shape)
    raise OpqError(f"input of per-sample shape {torch_in_shape} is not supported (1-D, 2-D or 3-D only)")


def _leaf_calls(qmodel, x) -> list[tuple[str, Any, Any]]:
    """(name, module, output) of every leaf module's call in forward order (Brevitas layers count
    as leaves, their own children do not), from one no-grad forward pass in eval mode."""
    from ..carrier_graph import forward_with_hooks

    qnn = _brevitas()
    leaves = [(n, m) for n, m in qmodel.named_modules() if len(list(m.children())) == 0 or
              isinstance(m, (qnn.QuantIdentity, qnn.QuantReLU, qnn.QuantConv1d, qnn.QuantConv2d, qnn.QuantLinear))]
    # keep only the outermost of nested matches (brevitas modules have children)
    top: list[tuple[str, Any]] = []
    for n, m in leaves:
        if any(n.startswith(t + ".") for t, _ in top):
            continue
        top.append((n, m))
    calls: list[tuple[str, Any, Any]] = []
    hooks = [m.register_forward_hook(lambda mod, inp, out, n=n: calls.append((n, mod, out))) for n, m in top]
    qmodel.eval()
    forward_with_hooks(qmodel, x, hooks)
    return calls


def _brevitas():
    try:
        import brevitas.nn as qnn
    except ImportError as e:  # pragma: no cover - brevitas is a core dependency
        raise OpqError("brevitas is not installed; pip install brevitas") from e
    return qnn


@dataclass
class _Walk:
    """What `extract` knows between two modules: the network so far, the current activation's
    shape (C, H, W) and grid (bits, signedness, log2 scale), and the last layer read."""

    shape: tuple[int, int, int]
    torch_in_shape: tuple[int, ...]
    int_weights: Callable[[str], Any] | None = None
    net: IntNet | None = None
    bits: int | None = None
    signed: bool | None = None
    exp: int | None = None
    pending: IntLayer | None = None  # the last conv/linear layer (its out_shift is set by the QuantReLU after it)

    def add_layer(self, L: IntLayer) -> None:
        self.net.stages.append(L)
        self.pending = L
        self.shape = L.out_shape


Handler = Callable[[_Walk, str, Any, Any, str], None]


def _handlers() -> tuple[tuple[Any, Handler], ...]:
    """(module types, handler) in the order they are tried."""
    from torch import nn

    qnn = _brevitas()
    return ((qnn.QuantIdentity, _quant_identity), ((qnn.QuantConv1d, qnn.QuantConv2d), _conv),
            (qnn.QuantLinear, _linear), (qnn.QuantReLU, _relu), ((nn.MaxPool1d, nn.MaxPool2d), _pool),
            (nn.Flatten, _flatten), ((nn.Identity, nn.Dropout), _pass))


def _unsupported(m, what: str) -> OpqError:
    from torch import nn

    hint = " (a layer left in float: the RTL flow needs every layer quantized)" if isinstance(
        m, (nn.Conv1d, nn.Conv2d, nn.Linear)) else ""
    return OpqError(f"{what} is not supported by the RTL flow{hint} (supported: QuantIdentity, QuantConv1d/2d, "
                    f"QuantLinear, QuantReLU, MaxPool1d/2d, Flatten)")


def _quant_identity(walk: _Walk, name: str, m, out, what: str) -> None:
    """The input quantizer (the first QuantIdentity); a later one must not requantize."""
    bits, signed, e = _qt_params(out, what)
    if walk.net is None:
        walk.net = IntNet(walk.shape, bits, signed, e, [], walk.torch_in_shape)
    elif walk.pending is not None or e != walk.exp:
        raise OpqError(f"{what}: a requantizing QuantIdentity inside the network is not supported by the RTL flow")
    walk.exp, walk.bits, walk.signed = e, bits, signed


def _layer_weights(walk: _Walk, name: str, m, what: str) -> tuple[np.ndarray, tuple[int, ...], np.ndarray]:
    """(integer weights, per-channel accumulator exponents, integer bias) of a QuantConv/QuantLinear."""
    if walk.pending is not None and walk.pending.out_shift is None:
        raise OpqError(f"{what}: layer {walk.pending.name!r} before it has no QuantReLU; the RTL flow needs "
                       f"conv/linear -> QuantReLU between layers")
    qw = m.quant_weight()
    w_int = qw.int().detach().cpu().numpy().astype(np.int64)
    ws = qw.scale.detach().cpu().reshape(-1).double().numpy()
    if ws.size == 1:
        ws = np.full(w_int.shape[0], ws[0])
    w_exp = [walk.exp + _log2_exact(float(s), what + " weight") for s in ws]
    if walk.int_weights is not None:
        ref = np.asarray(walk.int_weights(name)).astype(np.int64)
        if ref.shape != w_int.shape or not np.array_equal(ref, w_int):
            raise OpqError(f"{what}: the run's integer weights differ from what the Brevitas model computes; "
                           f"the run directory is inconsistent, rebuild it")
    b = m.bias.detach().cpu().double().numpy() if m.bias is not None else np.zeros(w_int.shape[0])
    return w_int, tuple(w_exp), _bias_int(b, w_exp)


def _linear(walk: _Walk, name: str, m, out, what: str) -> None:
    w_int, w_exp, b_int = _layer_weights(walk, name, m, what)
    c, h, w = walk.shape
    if walk.shape != (m.in_features, 1, 1) and c * h * w != m.in_features:
        raise OpqError(f"{what}: expects {m.in_features} inputs, gets {c}x{h}x{w}")
    walk.add_layer(IntLayer(name, "linear", w_int, b_int, walk.bits, walk.signed, walk.shape, (m.out_features, 1, 1),
                            w_exp=w_exp))


def _conv(walk: _Walk, name: str, m, out, what: str) -> None:
    """A stride-1, dilation-1, zero-padded convolution (1-D as H = 1)."""
    w_int, w_exp, b_int = _layer_weights(walk, name, m, what)
    if m.groups != 1:
        raise OpqError(f"{what}: grouped/depthwise convolutions are not supported by the RTL flow yet")
    st, dl, pd = tuple(m.stride), tuple(m.dilation), m.padding
    if isinstance(pd, str):
        raise OpqError(f"{what}: string padding {pd!r} is not supported; use integer padding")
    pd = tuple(pd)
    if any(s != 1 for s in st) or any(d != 1 for d in dl):
        raise OpqError(f"{what}: only stride 1, dilation 1 convolutions stream through the RTL window; "
                       f"got stride {st}, dilation {dl}")
    if getattr(m, "padding_mode", "zeros") != "zeros":
        raise OpqError(f"{what}: padding_mode {m.padding_mode!r} is not supported (zeros only)")
    w4 = w_int if w_int.ndim == 4 else w_int[:, :, None, :]
    kh, kw = w4.shape[2], w4.shape[3]
    ph, pw = (pd[0], pd[1]) if len(pd) == 2 else (0, pd[0])
    if ph > kh - 1 or pw > kw - 1:
        raise OpqError(f"{what}: padding {pd} larger than kernel-1 is not supported")
    c, h, w = walk.shape
    out_shape = (m.out_channels, h + 2 * ph - kh + 1, w + 2 * pw - kw + 1)
    walk.add_layer(IntLayer(name, "conv", w4, b_int, walk.bits, walk.signed, walk.shape, out_shape,
                            padding=(ph, pw), w_exp=w_exp))


def _relu(walk: _Walk, name: str, m, out, what: str) -> None:
    """The requantization of the layer before it to the ReLU's unsigned grid."""
    L = walk.pending
    if L is None or L.out_shift is not None:
        raise OpqError(f"{what}: a QuantReLU must follow a conv/linear layer directly for the RTL flow")
    bits, signed, e = _qt_params(out, what)
    if signed:
        raise OpqError(f"{what}: signed ReLU output is not supported")
    L.out_shift = tuple(int(we - e) for we in L.w_exp)
    L.out_bits = bits
    L.out_exp = e
    walk.exp, walk.bits, walk.signed = e, bits, False


def _pool(walk: _Walk, name: str, m, out, what: str) -> None:
    k = m.kernel_size if isinstance(m.kernel_size, int) else m.kernel_size[0]
    ks = m.kernel_size if isinstance(m.kernel_size, tuple) else (k,)
    s = m.stride if m.stride is not None else k
    s = s if isinstance(s, int) else s[0]
    pad = m.padding if isinstance(m.padding, int) else max(m.padding)
    dil = m.dilation if isinstance(m.dilation, int) else max(m.dilation)
    if len(set(ks)) != 1 or s != k or pad != 0 or dil != 1 or m.ceil_mode:
        raise OpqError(f"{what}: only square KxK max pooling with stride K, no padding, floor mode is supported")
    if walk.pending is not None and walk.pending.out_shift is None:
        raise OpqError(f"{what}: pooling the float logits is not supported")
    p = Pool(int(k))
    walk.shape = p.out_shape(walk.shape)
    walk.net.stages.append(p)


def _flatten(walk: _Walk, name: str, m, out, what: str) -> None:
    walk.net.stages.append(Flatten())


def _pass(walk: _Walk, name: str, m, out, what: str) -> None:
    """Identity and Dropout (eval mode) change nothing."""
