"""Exact range/precision analysis of the network hls4ml builds, the types that make it bit-exact, and the check.

hls4ml gives every tensor, weight and accumulator a fixed-point type; whatever the converter does not infer
from a QONNX `Quant` node falls back to the default `fixed<16,6>`, which rounds or wraps silently (a bias that
hls4ml moves behind a small per-channel scale, b*s, needs far more fractional bits). This module walks the
converted `ModelGraph` in order and propagates, for every tensor, an exact value set: per-element bounds
[lo, hi] and the grid 2^-frac every value lies on. Per layer it derives what each type must hold:

- Dense / Conv1D / Conv2D / Depthwise: weights (the integer codebook of the allocation's B bits when known,
  else the data), bias (its data on its grid), accumulator (every partial sum in any order:
  min(0, b) + sum(min(0, w*x)) .. max(0, b) + sum(max(0, w*x)), on the grid 2^-(f_x + f_w) joined with the bias
  grid) and result (the exact output range, same grid);
- ApplyAlpha / BatchNormalization (y = x*s + b per channel): scale, bias and result (x*s + b exactly);
- Activation linear / relu that quantizes (its type rounds or saturates by design: a QONNX Quant node): kept,
  and checked to be one of the graph's activation quantizers; one that does not quantize: holds its input;
- Pooling (max; average over a power-of-two window without padding), Merge add, Concatenate, Reshape,
  Transpose, Clone, ZeroPadding: their accumulators and results hold what they compute.

The minimal type of a value set is what `set` writes into the hls4ml config (by layer name, so every type has
its own name); `check` reads the types back from a converted `ModelGraph` (the type a name resolves to is the
first one in layer order, as hls4ml's writer emits each typedef name once) and lists every type that would
round or saturate, every weight whose written value differs from its data, and every layer or type the
analysis does not know. Arithmetic is float64 and guarded to stay below 2^52 LSBs (exact).

All hls4ml imports are inside functions.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

MAX_FRAC = 48  # data needing more fractional bits is not on a fixed-point grid for this analysis
MIN_FRAC = -64  # the grid of all-zero data: it constrains nothing
EXACT_LIMIT = 2.0 ** 52  # |value| * 2^frac below this: float64 arithmetic on the value set is exact
UNUSED = {  # types hls4ml declares that the generated code of these layers never uses
    "index_t": "sparse index type (unused: dense weights)",
    "table_t": "lookup-table type (unused by linear/relu)",
    "bias_precision": "converter bookkeeping (unused by the generated code)",
    "scale_precision": "converter bookkeeping (unused by the generated code)",
}


@dataclass(frozen=True)
class Fixed:
    """A fixed-point type: `width` bits, `integer` of them left of the binary point, two's complement if `signed`."""

    width: int
    integer: int
    signed: bool
    rounding: str = "TRN"
    saturation: str = "WRAP"

    @property
    def frac(self) -> int:
        return self.width - self.integer

    def spec(self) -> str:
        """hls4ml's precision string (`fixed<W,I>`, or with the modes when they are not TRN/WRAP)."""
        base = f"{'' if self.signed else 'u'}fixed<{self.width},{self.integer}"
        if (self.rounding, self.saturation) != ("TRN", "WRAP"):
            base += f",{self.rounding},{self.saturation}"
        return base + ">"

    def int_bounds(self) -> tuple[int, int]:
        """Least and greatest value in LSBs (units of 2^-frac)."""
        if self.signed:
            lo, hi = -(2 ** (self.width - 1)), 2 ** (self.width - 1) - 1
            return (lo + 1 if self.saturation == "SAT_SYM" else lo), hi
        return 0, 2 ** self.width - 1

    def bounds(self) -> tuple[float, float]:
        lo, hi = self.int_bounds()
        return float(np.ldexp(lo, -self.frac)), float(np.ldexp(hi, -self.frac))

    @classmethod
    def minimal(cls, lo: float, hi: float, frac: int, min_width: int = 1) -> "Fixed":
        """The narrowest type on the grid 2^-frac that holds every value in [lo, hi]."""
        if lo == 0 and hi == 0:  # only zeros: one bit holds them on any grid
            return cls(max(1, min_width), max(1, min_width), True if min_width > 1 else False)
        lo_i, hi_i = int(np.floor(np.ldexp(lo, frac))), int(np.ceil(np.ldexp(hi, frac)))
        signed = lo_i < 0
        if signed:
            width = max(1, hi_i.bit_length() + 1, (-lo_i - 1).bit_length() + 1)
        else:
            width = max(1, hi_i.bit_length())
        width = max(width, min_width)
        return cls(width, width - frac, signed)

    @classmethod
    def parse(cls, spec: str) -> "Fixed":
        """From a precision string: fixed<W,I>, ufixed<W,I>, ap_fixed<W,I,Q,O>, int<W>, uint<W>."""
        s = spec.strip().lower().replace("ap_", "")
        kind, _, rest = s.partition("<")
        args = [a.strip() for a in rest.rstrip(">").split(",")]
        signed = not kind.startswith("u")
        w = int(args[0])
        i = int(args[1]) if kind.endswith("fixed") else w
        modes = [a.upper() for a in args[2:4]]
        return cls(w, i, signed, modes[0] if modes else "TRN", modes[1] if len(modes) > 1 else "WRAP")

    @classmethod
    def of(cls, prec) -> "Fixed | None":
        """From an hls4ml precision object (fixed or integer); None for anything else (float types)."""
        w = getattr(prec, "width", None)
        if w is None or not hasattr(prec, "signed"):
            return None
        integer = getattr(prec, "integer", w)
        rnd = getattr(prec, "rounding_mode", None)
        sat = getattr(prec, "saturation_mode", None)
        return cls(int(w), int(integer), bool(prec.signed), str(rnd) if rnd is not None else "TRN",
                   str(sat) if sat is not None else "WRAP")

    def problem(self, v: "Values") -> str | None:
        """Why this type cannot hold the value set exactly (None when it can)."""
        if v.frac > self.frac and not (v.min == 0 and v.max == 0):
            return f"rounds: the values need {v.frac} fractional bits, {self.spec()} has {self.frac}"
        lo, hi = self.bounds()
        if v.min < lo or v.max > hi:
            return f"saturates or wraps: the values span [{v.min:g}, {v.max:g}], {self.spec()} holds [{lo:g}, {hi:g}]"
        return None


@dataclass
class Values:
    """An exact value set: per-element bounds (arrays, broadcastable to the tensor) and the grid 2^-frac."""

    lo: np.ndarray
    hi: np.ndarray
    frac: int

    @property
    def min(self) -> float:
        return float(np.min(self.lo)) if np.size(self.lo) else 0.0

    @property
    def max(self) -> float:
        return float(np.max(self.hi)) if np.size(self.hi) else 0.0

    def minimal(self, min_width: int = 1) -> Fixed:
        return Fixed.minimal(self.min, self.max, self.frac, min_width)

    def exact_arithmetic(self) -> bool:
        return max(abs(self.min), abs(self.max)) * 2.0 ** self.frac < EXACT_LIMIT

    @classmethod
    def of_type(cls, t: Fixed, shape) -> "Values":
        lo, hi = t.bounds()
        return cls(np.full(shape, lo), np.full(shape, hi), t.frac)

    @classmethod
    def of_data(cls, data) -> "Values | None":
        a = np.asarray(data, dtype=np.float64)
        f = frac_bits(a)
        return None if f is None else cls(a, a, f)


def frac_bits(a) -> int | None:
    """The fewest fractional bits f (possibly negative) with every a * 2^f an integer; None if none <= MAX_FRAC."""
    a = np.asarray(a, dtype=np.float64).ravel()
    a = a[a != 0]
    if not a.size:
        return MIN_FRAC
    if not np.all(np.isfinite(a)):
        return None
    for f in range(MIN_FRAC + 1, MAX_FRAC + 1):
        s = np.ldexp(a, f)
        if np.all(s == np.round(s)):
            return f
    return None


@dataclass
class TypeReq:
    """What one type of one layer must hold."""

    key: str  # e.g. accum_t
    values: Values | None = None  # the exact value set (None: quantizer, unused or unknown)
    set_to: Fixed | None = None  # the type the analysis writes (None: leave as is)
    role: str = "exact"  # exact | quantizer | tail | unused | unknown
    note: str = ""


@dataclass
class LayerReq:
    name: str
    cls: str
    types: dict[str, TypeReq] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


@dataclass
class Analysis:
    layers: list[LayerReq]

    def layer(self, name: str) -> LayerReq | None:
        return next((lay for lay in self.layers if lay.name == name), None)

    def config_precisions(self) -> dict[str, dict[str, str]]:
        """{hls4ml layer name: {precision key (no _t): spec}} for every type the analysis sets or keeps."""
        out: dict[str, dict[str, str]] = {}
        for lay in self.layers:
            for key, r in lay.types.items():
                if r.set_to is not None and r.role != "tail":  # a head's types are in its own config entry
                    out.setdefault(lay.name, {})[key[:-2] if key.endswith("_t") else key] = r.set_to.spec()
        return out

    def table(self) -> list[dict[str, Any]]:
        """Per layer and type: the value set and the type (JSON-friendly)."""
        rows = []
        for lay in self.layers:
            for key, r in lay.types.items():
                rows.append({"layer": lay.name, "class": lay.cls, "type": key, "role": r.role,
                             "range": [r.values.min, r.values.max] if r.values is not None else None,
                             "frac_bits": r.values.frac if r.values is not None else None,
                             "set_to": r.set_to.spec() if r.set_to is not None else None, "note": r.note})
        return rows


# --------------------------------------------------------------------------- the analysis


def _channels(v: Values, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (last axis, channels-last) bounds of a tensor with n channels: the union over the other axes."""
    lo = np.broadcast_to(v.lo, np.broadcast_shapes(np.shape(v.lo), np.shape(v.hi)))
    hi = np.broadcast_to(v.hi, lo.shape)
    if lo.size == n:
        return lo.reshape(-1).copy(), hi.reshape(-1).copy()
    if lo.size == 1:
        return np.full(n, float(lo.reshape(-1)[0])), np.full(n, float(hi.reshape(-1)[0]))
    if lo.size % n == 0:
        return lo.reshape(-1, n).min(axis=0), hi.reshape(-1, n).max(axis=0)
    if n % lo.size == 0:
        return np.tile(lo.reshape(-1), n // lo.size), np.tile(hi.reshape(-1), n // lo.size)
    raise ValueError(f"a tensor of {lo.size} values does not split into {n} channels")


def _weighted_sum(x_lo, x_hi, w, bias, f_x, f_w, f_b) -> tuple[Values, Values]:
    """sum_i w[i, j] x[i] + b[j] with x[i] in [x_lo[i], x_hi[i]]: (accumulator values, result values).

    w: (n_in, n_out). The accumulator bound holds every partial sum in any order (bias included)."""
    p1, p2 = w * x_lo[:, None], w * x_hi[:, None]
    pmin, pmax = np.minimum(p1, p2), np.maximum(p1, p2)
    frac = max(f_x + f_w, f_b)
    out = Values(bias + pmin.sum(axis=0), bias + pmax.sum(axis=0), frac)
    acc = Values(np.minimum(bias, 0) + np.minimum(pmin, 0).sum(axis=0),
                 np.maximum(bias, 0) + np.maximum(pmax, 0).sum(axis=0), frac)
    return acc, out


def _quantize_values(v: Values, t: Fixed, relu: bool) -> Values:
    """What a quantizer type (rounding, saturating) makes of the value set v (bounds are monotone)."""
    lo, hi = (np.maximum(v.lo, 0), np.maximum(v.hi, 0)) if relu else (v.lo, v.hi)
    tlo, thi = t.bounds()
    q = lambda a: np.clip(np.ldexp(np.round(np.ldexp(a, t.frac)), -t.frac), tlo, thi)  # noqa: E731
    return Values(q(lo), q(hi), t.frac)


def _weights(layer, key: str) -> np.ndarray | None:
    w = layer.weights.get(key)
    return None if w is None else np.asarray(w.data, dtype=np.float64)


def analyse(hm, input_type: Fixed | None, quantizers: list[Fixed] | None = None,
            weight_bits: dict[str, int] | None = None, tail: dict[str, Any] | None = None) -> Analysis:
    """The exact value set of every tensor of the converted `hm`, and what each of its types must hold.

    input_type: the input quantizer's exact type (the Input layer holds it); quantizers: the activation
    quantizer types of the QONNX graph (a quantizing layer must be one of them); weight_bits: hls4ml layer
    name -> the allocation's bit width B (its weights are typed as the B-bit integer codebook); tail: hls4ml
    layer name -> the `opq_hw.tail.TailTables` of a head computed in hardware (`--tail hw`): not exact by design,
    its types are the stated ones (role "tail", checked like a quantizer's) and its error is bounded by the
    tables' tolerance instead.
    """
    weight_bits = weight_bits or {}
    vals: dict[str, Values] = {}
    out: list[LayerReq] = []
    for layer in hm.get_layers():
        cls = layer.class_name
        lr = LayerReq(layer.name, cls)
        out.append(lr)
        ov = layer.get_output_variable()
        shape = tuple(int(s) for s in ov.shape)
        ins = [vals.get(i) for i in layer.inputs]
        res: Values | None = None
        try:
            if cls == "Input":
                if input_type is None:
                    lr.problems.append("the input's exact type is unknown (the graph input is not quantized by a "
                                       "per-tensor power-of-two Quant node)")
                else:
                    res = Values.of_type(input_type, shape)
                    lr.types["result_t"] = TypeReq("result_t", res, input_type, note="the input quantizer's grid")
            elif any(v is None for v in ins):
                lr.problems.append("an input's value set is unknown (see the layers before it)")
            elif tail and layer.name in tail:
                stated = tail[layer.name].types()
                for key in layer.types:
                    lr.types[key] = TypeReq(key, set_to=Fixed.parse(stated[key]), role="tail",
                                            note=f"{tail[layer.name].op} table type, stated (within the head's tolerance)") \
                        if key in stated else TypeReq(key, role="unused", note=f"not used by hls4ml's {tail[layer.name].op}")
            elif cls == "Dense" or cls.startswith(("Conv1D", "Conv2D", "PointwiseConv", "DepthwiseConv")):
                res = _linear_layer(layer, cls, ins[0], lr, weight_bits.get(layer.name))
            elif cls in ("ApplyAlpha", "BatchNormalization"):
                res = _scale_layer(layer, ins[0], lr)
            elif cls in ("Activation", "ParametrizedActivation", "LeakyReLU"):
                res = _activation(layer, ins[0], lr, quantizers)
            elif cls in ("Pooling1D", "Pooling2D", "GlobalPooling1D", "GlobalPooling2D"):
                res = _pooling(layer, cls, ins[0], lr, shape)
            elif cls == "Merge" and layer.get_attr("op", "").lower() == "add":
                a, b = ins
                if np.size(a.lo) == np.size(b.lo) and np.size(a.hi) == np.size(b.hi):
                    res = Values(a.lo + b.lo, a.hi + b.hi, max(a.frac, b.frac))
                else:  # per-element and per-channel bounds (a residual): add the per-channel unions
                    (alo, ahi), (blo, bhi) = _channels(a, int(shape[-1])), _channels(b, int(shape[-1]))
                    res = Values(alo + blo, ahi + bhi, max(a.frac, b.frac))
            elif cls == "Concatenate":
                res = Values(np.array([min(v.min for v in ins)]), np.array([max(v.max for v in ins)]),
                             max(v.frac for v in ins))
            elif cls in ("Reshape", "Transpose", "Clone", "Repack", "ZeroPadding1D", "ZeroPadding2D", "Cropping1D",
                         "Cropping2D"):
                v = ins[0]
                zero = cls.startswith("ZeroPadding")
                res = Values(np.array([min(v.min, 0.0) if zero else v.min]), np.array([max(v.max, 0.0) if zero else v.max]),
                             v.frac)
            else:
                lr.problems.append(f"no exact analysis for hls4ml layer class {cls} "
                                   f"({layer.get_attr('activation') or layer.get_attr('op') or ''})".replace(" ()", ""))
        except ValueError as e:
            lr.problems.append(str(e))
        if res is not None:
            if not res.exact_arithmetic():
                lr.problems.append(f"values reach {max(abs(res.min), abs(res.max)):g} on a 2^-{res.frac} grid: beyond "
                                   "the analysis' exact float64 range")
            if "result_t" not in lr.types:
                lr.types["result_t"] = TypeReq("result_t", res, res.minimal())
            for o in layer.outputs:
                vals[o] = res
        for key in layer.types:  # every type of the layer has a requirement, or says why not
            if key not in lr.types:
                lr.types[key] = TypeReq(key, role="unused", note=UNUSED[key]) if key in UNUSED else \
                    TypeReq(key, role="unknown", note="no requirement derived")
    return Analysis(out)


def _data_values(layer, key, lr: LayerReq) -> Values | None:
    data = _weights(layer, key)
    if data is None:
        return None
    v = Values.of_data(data)
    if v is None:
        lr.problems.append(f"{key} data is not on a fixed-point grid (within {MAX_FRAC} fractional bits): a "
                           "non-power-of-two scale cannot be computed exactly")
    return v


def _linear_layer(layer, cls: str, x: Values, lr: LayerReq, bits: int | None) -> Values | None:
    w = _weights(layer, "weight")
    if layer.get_attr("_weights_transposed", False) is True:  # the Resource strategy's layout, back to (..., C_in, C_out)
        w = w.T if cls == "Dense" else np.moveaxis(w, 0, -1)
    wv = _data_values(layer, "weight", lr)
    b = _weights(layer, "bias")
    bv = _data_values(layer, "bias", lr) if b is not None else Values(np.zeros(1), np.zeros(1), MIN_FRAC)
    if wv is None or bv is None:
        return None
    n_out = int(layer.get_attr("n_out") or layer.get_attr("n_filt") or w.shape[-1])
    if cls == "Dense":
        w2 = w.reshape(-1, n_out)
        x_lo = np.broadcast_to(x.lo, x.lo.shape if np.ndim(x.lo) else (w2.shape[0],)).reshape(-1)
        x_hi = np.broadcast_to(x.hi, x_lo.shape).reshape(-1)
        if x_lo.size != w2.shape[0]:  # value set kept per channel only: the union bounds every input
            x_lo, x_hi = np.full(w2.shape[0], x.min), np.full(w2.shape[0], x.max)
    else:  # conv weights (..., C_in, C_out), channels-last: each output channel sums over kernel x C_in
        cin = w.shape[-2]
        c_lo, c_hi = _channels(x, int(layer.get_attr("n_chan") or cin) if not cls.startswith("Depthwise") else w.shape[-2])
        if cls.startswith("Depthwise"):  # (..., C, depth multiplier): channel c feeds outputs c*m .. c*m + m - 1
            mult = w.shape[-1]
            w2 = np.zeros((w[..., 0, 0].size * w.shape[-2], w.shape[-2] * mult))
            k = w[..., 0, 0].size
            wk = w.reshape(k, w.shape[-2], mult)
            for c in range(w.shape[-2]):
                w2[c * k:(c + 1) * k, c * mult:(c + 1) * mult] = wk[:, c, :]
            x_lo, x_hi = np.repeat(c_lo, k), np.repeat(c_hi, k)
        else:
            w2 = w.reshape(-1, w.shape[-1])
            x_lo, x_hi = np.tile(c_lo, w2.shape[0] // cin), np.tile(c_hi, w2.shape[0] // cin)
    bias = np.broadcast_to(b.reshape(-1) if b is not None else 0.0, (w2.shape[1],)).astype(np.float64)
    acc, res = _weighted_sum(x_lo, x_hi, w2, bias, x.frac, wv.frac, bv.frac)
    wset = wv
    note = "the weight data"
    if bits is not None and wv.frac == 0:  # the allocation's B-bit narrow integer codebook
        m = 2.0 ** (bits - 1) - 1
        if np.all(np.abs(w) <= m):
            wset, note = Values(np.array([-m]), np.array([m]), 0), f"the {bits}-bit integer codebook"
    lr.types["weight_t"] = TypeReq("weight_t", wset, wset.minimal(min_width=2), note=note)
    if b is not None:
        lr.types["bias_t"] = TypeReq("bias_t", bv, bv.minimal(), note="the bias on its grid")
    lr.types["accum_t"] = TypeReq("accum_t", acc, acc.minimal(), note="every partial sum, bias included")
    lr.types["result_t"] = TypeReq("result_t", res, res.minimal(), note="the exact layer output")
    return res


def _scale_layer(layer, x: Values, lr: LayerReq) -> Values | None:
    sv, bv = _data_values(layer, "scale", lr), _data_values(layer, "bias", lr)
    if sv is None or bv is None:
        return None
    s, b = _weights(layer, "scale").reshape(-1), _weights(layer, "bias").reshape(-1)
    n = max(s.size, b.size)
    s, b = np.broadcast_to(s, (n,)), np.broadcast_to(b, (n,))
    x_lo, x_hi = _channels(x, n)
    p1, p2 = x_lo * s, x_hi * s
    res = Values(np.minimum(p1, p2) + b, np.maximum(p1, p2) + b, max(x.frac + sv.frac, bv.frac))
    lr.types["scale_t"] = TypeReq("scale_t", sv, sv.minimal(), note="the per-channel scales")
    lr.types["bias_t"] = TypeReq("bias_t", bv, bv.minimal(), note="the bias after the scale (b*s), on its grid")
    lr.types["result_t"] = TypeReq("result_t", res, res.minimal(), note="x*s + b exactly")
    return res


def _activation(layer, x: Values, lr: LayerReq, quantizers: list[Fixed] | None) -> Values | None:
    act = str(layer.get_attr("activation") or "").lower()
    if act == "leakyrelu":
        x = _leaky(layer, x, lr)
        if x is None:
            return None
    elif act not in ("linear", "relu"):
        lr.problems.append(f"activation {act!r} has no exact fixed-point form (only linear, relu and leaky relu with "
                           "a power-of-two slope are analysed)")
        return None
    t = Fixed.of(layer.get_output_variable().type.precision)
    relu = act == "relu"
    if t is not None and (t.rounding, t.saturation) != ("TRN", "WRAP"):  # a quantizer by design
        if quantizers is not None and (t.width, t.integer, t.signed, t.rounding, t.saturation) not in {
                (q.width, q.integer, q.signed, q.rounding, q.saturation) for q in quantizers}:
            lr.problems.append(f"quantizing type {t.spec()} matches none of the QONNX activation quantizers "
                               f"{sorted({q.spec() for q in quantizers})}")
        res = _quantize_values(x, t, relu)
        lr.types["result_t"] = TypeReq("result_t", res, t, role="quantizer",
                                       note="rounds and saturates as its QONNX Quant node does")
        return res
    res = Values(np.maximum(x.lo, 0), np.maximum(x.hi, 0), x.frac) if relu else x
    lr.types["result_t"] = TypeReq("result_t", res, res.minimal(), note=f"{act} of its input, exactly")
    return res


def _leaky(layer, x: Values, lr: LayerReq) -> Values | None:
    """Leaky ReLU x > 0 ? x : alpha*x with alpha = 2^-k: its values on the grid 2^-(f + k); alpha's own type."""
    alpha = float(layer.get_attr("activ_param") or 0.0)
    if not (alpha > 0 and np.frexp(alpha)[0] == 0.5):
        lr.problems.append(f"leaky relu slope {alpha:g} is not a power of two: alpha*x rounds")
        return None
    av = Values(np.array([alpha]), np.array([alpha]), frac_bits(alpha))
    lr.types["param_t"] = TypeReq("param_t", av, av.minimal(), note=f"the slope {alpha:g}, exactly")
    f = x.frac + max(0, -int(np.log2(alpha)))
    return Values(np.where(x.lo < 0, alpha * x.lo, x.lo), np.where(x.hi < 0, alpha * x.hi, x.hi), f)


def _pooling(layer, cls: str, x: Values, lr: LayerReq, shape) -> Values | None:
    op = str(layer.get_attr("pool_op") or "Max").lower()
    n = int(shape[-1])
    lo, hi = _channels(x, n)
    if op == "max":
        res = Values(lo, hi, x.frac)
        lr.types["accum_t"] = TypeReq("accum_t", res, res.minimal(), note="the max of its inputs")
        return res
    if cls.startswith("Global"):
        k = int(np.prod([layer.get_attr(a) or 1 for a in ("in_height", "in_width")])) if cls.endswith("2D") \
            else int(layer.get_attr("n_in") or 1)
    else:
        k = int(np.prod([layer.get_attr(a) or 1 for a in ("pool_height", "pool_width")]))
        pads = [layer.get_attr(a) or 0 for a in ("pad_top", "pad_bottom", "pad_left", "pad_right")]
        if any(pads):
            lr.problems.append("average pooling with padding: hls4ml averages over the unpadded window")
            return None
    e = int(np.log2(k)) if k > 0 else 0
    if 2 ** e != k:
        lr.problems.append(f"average pooling over {k} values: division by a non-power of two is not exact")
        return None
    acc = Values(np.minimum(lo * k, 0), np.maximum(hi * k, 0), x.frac + e)  # the running sum, on the finer grid
    res = Values(lo, hi, x.frac + e)
    lr.types["accum_t"] = TypeReq("accum_t", acc, acc.minimal(), note=f"the running sum of {k} values, /{k} exactly")
    return res


# --------------------------------------------------------------------------- the check


def effective_types(hm) -> dict[tuple[str, str], tuple[str, Any]]:
    """(layer, type key) -> (type name, the precision that name resolves to in the written project).

    hls4ml's writer emits one typedef per name: the first definition in layer order wins."""
    first: dict[str, Any] = {}
    out = {}
    for layer in hm.get_layers():
        for key, t in layer.types.items():
            first.setdefault(t.name, t.precision)
            out[(layer.name, key)] = (t.name, first[t.name])
    return out


def check(hm, analysis: Analysis) -> list[dict[str, str]]:
    """Every type of `hm` (read back from the converted model) against `analysis`: one record per problem.

    A problem: a type that would round or saturate, a quantizing type that differs from the analysis', a weight
    whose written value differs from its data, a layer or type the analysis does not cover."""
    problems: list[dict[str, str]] = []
    eff = effective_types(hm)
    seen = set()
    for layer in hm.get_layers():
        lr = analysis.layer(layer.name)
        seen.add(layer.name)
        if lr is None:
            problems.append({"layer": layer.name, "type": "-", "problem": "not covered by the analysis"})
            continue
        for p in lr.problems:
            problems.append({"layer": layer.name, "type": "-", "problem": p})
        for key in layer.types:
            name, prec = eff[(layer.name, key)]
            r = lr.types.get(key)
            t = Fixed.of(prec)
            where = {"layer": layer.name, "type": f"{key} ({name} = {prec})"}
            if r is None or r.role == "unknown":
                problems.append({**where, "problem": "the analysis has no requirement for this type"})
            elif r.role == "unused":
                continue
            elif t is None:
                problems.append({**where, "problem": "not a fixed-point type"})
            elif r.role in ("quantizer", "tail"):
                if t != r.set_to:
                    problems.append({**where, "problem": f"the {r.role}'s type is {r.set_to.spec()}"})
            elif r.values is not None:
                why = t.problem(r.values)
                if why:
                    problems.append({**where, "problem": why})
        for wname, var in layer.weights.items():
            data = np.asarray(var.data, dtype=np.float64).reshape(-1)
            raw = getattr(var, "data_unquantized", None)
            if raw is not None and np.asarray(raw).size == data.size and not np.array_equal(  # (layouts may differ)
                    np.sort(np.asarray(raw, dtype=np.float64).reshape(-1)), np.sort(data)):
                problems.append({"layer": layer.name, "type": f"{wname} ({var.type.name})",
                                 "problem": "the converter rounded the data before writing it"})
            written = np.array([float(s) for s in _written(var)], dtype=np.float64)
            if written.size != data.size or not np.array_equal(written, data):
                bad = int(np.sum(written != data)) if written.size == data.size else data.size
                problems.append({"layer": layer.name, "type": f"{wname} ({var.type.name})",
                                 "problem": f"{bad} written values differ from the data (formatting precision)"})
    for lr in analysis.layers:
        if lr.name not in seen:
            problems.append({"layer": lr.name, "type": "-", "problem": "in the analysis but not in the model"})
    return problems


def _written(var) -> list[str]:
    """The strings hls4ml's writer emits for a weight variable (it iterates the variable)."""
    return list(iter(var))


def describe(problems: list[dict[str, str]], limit: int = 8) -> str:
    lines = [f"{p['layer']}: {p['type']}: {p['problem']}" for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"... and {len(problems) - limit} more")
    return "\n  ".join(lines)


def check_written(project_dir, hm, analysis: Analysis) -> list[dict[str, str]]:
    """The same check on the written project: each layer type's typedef in `firmware/defines.h` (what the C++
    compiler sees) against its value set, and each weight file's numbers against the weight data."""
    import re
    from pathlib import Path

    fw = Path(project_dir) / "firmware"
    defs = {}
    for h in ("defines.h", "parameters.h"):
        p = fw / h
        if p.is_file():
            for m in re.finditer(r"typedef\s+(ap_u?fixed<[^>]*>|ap_u?int<[^>]*>)\s+(\w+)\s*;", p.read_text()):
                defs.setdefault(m.group(2), m.group(1))
    problems: list[dict[str, str]] = []
    for layer in hm.get_layers():
        lr = analysis.layer(layer.name)
        if lr is None:
            continue
        for key, t in layer.types.items():
            r = lr.types.get(key)
            if r is None or r.role in ("unused", "unknown"):
                continue
            d = defs.get(t.name)
            where = {"layer": layer.name, "type": f"{key} ({t.name} = {d}, written)"}
            if d is None:
                problems.append({**where, "problem": "no typedef for it in the written project"})
                continue
            w = Fixed.parse(d)
            if r.role in ("quantizer", "tail"):
                if w != r.set_to:
                    problems.append({**where, "problem": f"the {r.role}'s type is {r.set_to.spec()}"})
            elif r.values is not None and w.problem(r.values):
                problems.append({**where, "problem": w.problem(r.values)})
        for wname, var in layer.weights.items():
            p = fw / "weights" / f"{var.name}.txt"
            if not p.is_file():
                continue
            vals = np.array([float(v) for v in p.read_text().replace("\n", ",").split(",") if v.strip()])
            data = np.asarray(var.data, dtype=np.float64).reshape(-1)
            if vals.size != data.size or not np.array_equal(vals, data):
                problems.append({"layer": layer.name, "type": f"{wname} ({p.name}, written)",
                                 "problem": "the written values differ from the weight data"})
    return problems
