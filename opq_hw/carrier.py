"""The Brevitas carrier: QuantConv/QuantLinear layers holding the frozen OPQ masks and quantizers.

`apply(model, allocation)` swaps every allocated Conv1d/Conv2d/Linear for its Brevitas layer
(per-output-channel scale, layer bit width, narrow-range signed integers), the pruning mask as a
torch parametrization on `weight`, ReLUs for quantized ReLUs and an input quantizer in front.
In `pow2` (hardware) mode every scale is a power of two and biases are Int16 on the
accumulator grid, so the model is exact in fixed point. A BatchNorm left in the model (one that could
not be folded into a layer) becomes a quantized per-channel affine (`carrier_graph.ChannelAffine`).
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

import torch
import torch.nn.utils.parametrize as parametrize
from torch import nn

from .errors import OpqError
from .quant import qmax
from .spec import DEFAULTS, Allocation, LayerAlloc, LayerSpec


@dataclass(frozen=True)
class ActConfig:
    """Activation quantization: `bits=None` leaves activations (and biases) in float."""

    bits: int | None = DEFAULTS.act_bits
    scale_mode: str = DEFAULTS.scale_mode


class FrozenMask(nn.Module):
    """Weight parametrization: zero where pruned; a survivor is kept at least 1 LSB away from zero
    (and, for per-channel bit widths, inside its channel's range). Straight-through: the gradient
    is the mask, so pruned weights get none and stay exactly zero."""

    def __init__(self, mask: torch.Tensor, scales: torch.Tensor, kmax: torch.Tensor):
        super().__init__()
        shape = (-1,) + (1,) * (mask.dim() - 1)
        self.register_buffer("mask", mask.to(torch.float32))
        self.register_buffer("lsb", scales.reshape(shape).to(torch.float32))
        self.register_buffer("kmax", kmax.reshape(shape).to(torch.float32))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        wm = w * self.mask
        floor = torch.where(w >= 0, self.lsb, -self.lsb)
        fixed = torch.where((self.mask > 0) & (wm.abs() <= 0.5 * self.lsb), floor, wm)
        fixed = torch.maximum(torch.minimum(fixed, self.kmax * self.lsb), -self.kmax * self.lsb)
        return wm + (fixed - wm).detach()


def _weight_quant(bits: int, scale_mode: str, out_channels: int, ndim: int):
    from brevitas.inject.enum import ScalingImplType
    from brevitas.quant.fixed_point import Int8WeightPerChannelFixedPoint
    from brevitas.quant.scaled_int import Int8WeightPerChannelFloat

    base = Int8WeightPerChannelFixedPoint if scale_mode == "pow2" else Int8WeightPerChannelFloat
    return base.let(bit_width=bits, scaling_impl_type=ScalingImplType.PARAMETER,
                    scaling_init=torch.ones((out_channels,) + (1,) * (ndim - 1)))


def _act_quants(act: ActConfig):
    if act.scale_mode == "pow2":
        from brevitas.quant.fixed_point import Int8ActPerTensorFixedPoint as In, Uint8ActPerTensorFixedPoint as Un
    else:
        from brevitas.quant.scaled_int import Int8ActPerTensorFloat as In, Uint8ActPerTensorFloat as Un
    return In.let(bit_width=act.bits), Un.let(bit_width=act.bits)


def _set_scales(layer, scales: tuple[float, ...], scale_mode: str) -> None:
    """Make the layer's quantizer produce exactly `scales` (the int scaling differs per quantizer)."""
    impl = layer.weight_quant.tensor_quant.scaling_impl
    want = torch.tensor(scales, dtype=torch.float32)
    with torch.no_grad():
        have = _weight_scale(layer)
        shape = impl.value.shape
        if scale_mode == "pow2":
            impl.value.add_(torch.log2(want / have).reshape(shape))
        else:
            impl.value.mul_((want / have).reshape(shape))
        got = _weight_scale(layer)
    if scale_mode == "pow2" and not torch.equal(got, want):
        raise OpqError(f"the allocation's pow2 weight scales {want.tolist()} are not what Brevitas can hold "
                       f"({got.tolist()}): they must be powers of two; re-create the run (allocation.json was changed?)")


def _weight_scale(layer) -> torch.Tensor:
    """The layer's per-channel weight scale, as `layer.quant_weight().scale` gives it. The scale is a learned
    parameter (PARAMETER scaling: the weights only give its dtype), so the quantizer runs on one zero per
    output channel rather than on the whole weight tensor (ResNet-50: 25M weights, twice per layer)."""
    w = layer.weight
    return layer.weight_quant(w.new_zeros((w.shape[0],) + (1,) * (w.dim() - 1))).scale.detach().reshape(-1)


class QuantModel(nn.Module):
    """Input quantizer + the converted body. Layer names of the float model live under `body.`."""

    def __init__(self, body: nn.Module, input_quant: nn.Module | None):
        super().__init__()
        self.input_quant = input_quant if input_quant is not None else nn.Identity()
        self.body = body

    def forward(self, x):
        y = self.body(self.input_quant(x))
        return y.value if hasattr(y, "value") and not isinstance(y, torch.Tensor) else y


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def build_carrier(model: nn.Module, specs: list[LayerSpec], allocation: Allocation, act: ActConfig,
                  example: torch.Tensor | None = None) -> QuantModel:
    """The Brevitas structure for an allocation (masks all-ones, weights copied from `model`).

    With quantized activations and an `example` input, layers whose input is not an integer tensor
    (after Tanh, Sigmoid, average pooling, a residual Add, ...) get their own input quantizer, and
    residual Adds / Concats of an onnx2torch graph a shared one (opq_hw.carrier_graph).

    Built once: first without input and bias quantizers (an Int16Bias needs its input's scale, which
    a layer with a float input has not yet; so the structure runs on float inputs), one forward pass
    on `example` finds the layers that need an input quantizer, then those and the bias quantizers
    are put in place (`_add_input_and_bias_quants`), each made as the layer's constructor makes it."""
    q = _build_carrier(model, specs, allocation, act)
    if act.bits is None:
        return q
    need: set[str] = set()
    if example is not None:
        from .carrier_graph import float_input_layers

        with _structure_only(q):
            need = float_input_layers(q, example, allocation.scale_mode == "pow2")
    _add_input_and_bias_quants(q, act, frozenset(need))
    return q


@contextlib.contextmanager
def _structure_only(q: QuantModel):
    """For a pass that reads only the structure (which tensors reach each layer, of which type, on which
    grid): every carried layer computes with its latent weight as it stands, neither masked nor quantized.
    What the pass reads does not depend on the weights' values (an activation quantizer's scale in eval
    mode is its parameter, not a statistic of its input); ResNet-50: the mask and the quantizer are not
    run over its 25M weights."""
    layers = list(carried_layers(q).values())
    saved = [(la.weight_quant.disable_quant, la.parametrizations.weight[0]) for la in layers]
    try:
        for la in layers:
            la.weight_quant.disable_quant = True
            la.parametrizations.weight[0] = nn.Identity()
        yield q
    finally:
        for la, (disabled, mask) in zip(layers, saved):
            la.weight_quant.disable_quant = disabled
            la.parametrizations.weight[0] = mask


def _proxy(layer: nn.Module, quant, **kwargs):
    """A quantizer proxy for `layer` from the injector `quant`, as Brevitas's QuantProxyMixin makes it
    in the layer's constructor (`kwargs`: what the mixin passes with the proxy's prefix stripped)."""
    injector = quant.let(**kwargs)
    return injector.proxy_class(layer, injector)


def _add_input_and_bias_quants(q: QuantModel, act: ActConfig, need: frozenset[str]) -> None:
    """Int16 bias quantizers on every allocated layer with a bias; an input quantizer on the layers and
    affines named in `need` (their input is not an integer tensor on a usable grid). The proxies replace
    the constructor's no-op ones in place, so module order and state-dict keys are those of a layer
    constructed with them."""
    import brevitas.nn as qnn
    from brevitas.quant.scaled_int import Int16Bias

    from .carrier_graph import affines

    in_q, _ = _act_quants(act)
    for name, layer in carried_layers(q).items():
        if name in need:  # QuantInputMixin passes input_act_impl=None, input_passthrough_act=True
            layer.input_quant = _proxy(layer, in_q, act_impl=None, passthrough_act=True)
        if layer.bias is not None:
            layer.bias_quant = _proxy(layer, Int16Bias)
    for aff in affines(q):
        if aff.opq_affine in need:
            aff.input_quant = qnn.QuantIdentity(act_quant=in_q, return_quant_tensor=True)


def _build_carrier(model: nn.Module, specs: list[LayerSpec], allocation: Allocation, act: ActConfig) -> QuantModel:
    """The carrier's structure without input and bias quantizers on its layers (`build_carrier` adds them)."""
    import brevitas.nn as qnn

    if act.scale_mode != allocation.scale_mode:
        raise OpqError(f"activation scale mode {act.scale_mode!r} differs from the allocation's {allocation.scale_mode!r}")
    body = copy.deepcopy(model)
    mods = dict(body.named_modules())
    quant_acts = act.bits is not None
    in_q, relu_q = _act_quants(act) if quant_acts else (None, None)
    for s in specs:
        la: LayerAlloc = allocation.layer(s.name)
        if la.skipped:
            continue
        m = mods[s.name]
        kw = dict(bias=m.bias is not None, weight_quant=_weight_quant(la.bits, allocation.scale_mode, s.out_channels, m.weight.dim()),
                  bias_quant=None, return_quant_tensor=False)
        if s.kind == "linear":
            new = qnn.QuantLinear(s.in_channels, s.out_channels, **kw)
        else:
            cls = qnn.QuantConv1d if s.kind == "conv1d" else qnn.QuantConv2d
            new = cls(s.in_channels, s.out_channels, s.kernel_size, stride=s.stride, padding=s.padding,
                      dilation=m.dilation, groups=s.groups, **kw)
        with torch.no_grad():
            new.weight.copy_(m.weight)
            if m.bias is not None:
                new.bias.copy_(m.bias)
        _set_scales(new, la.scales, allocation.scale_mode)
        bits = la.channel_bits or (la.bits,) * s.out_channels
        scales = torch.tensor(la.scales, dtype=torch.float32)
        # unsafe: the check that the parametrization keeps the weight's shape and dtype (FrozenMask does, by
        # construction) would run the mask over the whole weight tensor once more
        parametrize.register_parametrization(new, "weight", FrozenMask(
            torch.ones_like(new.weight), scales, torch.tensor([qmax(b) for b in bits], dtype=torch.float32)),
            unsafe=True)
        new.opq_layer = s.name
        _replace(body, s.name, new)
    from .carrier_graph import ChannelAffine, is_batchnorm

    for name, m in list(body.named_modules()):  # BatchNorms left after folding (opq_hw.bnfold, the ONNX front end)
        if is_batchnorm(m):
            aff = ChannelAffine(m, name, allocation.scale_mode)
            if quant_acts:
                aff.out_quant = qnn.QuantIdentity(act_quant=in_q, return_quant_tensor=True)
            _replace(body, name, aff)
    if quant_acts:
        for name, m in list(body.named_modules()):
            if isinstance(m, nn.ReLU):
                _replace(body, name, qnn.QuantReLU(act_quant=relu_q, return_quant_tensor=True))
        from .carrier_graph import insert_join_quants

        insert_join_quants(body, lambda: qnn.QuantIdentity(act_quant=in_q, return_quant_tensor=True))
    return QuantModel(body, qnn.QuantIdentity(act_quant=in_q, return_quant_tensor=True) if quant_acts else None)


def carried_layers(qmodel: QuantModel) -> dict[str, nn.Module]:
    """Allocated layer name -> its Brevitas layer."""
    return {m.opq_layer: m for m in qmodel.modules() if hasattr(m, "opq_layer")}


def apply(model: nn.Module, specs: list[LayerSpec], allocation: Allocation, act: ActConfig | None = None,
          calib: torch.Tensor | None = None, example: torch.Tensor | None = None) -> QuantModel:
    """A Brevitas model that computes the allocation's compressed weights, frozen.

    Latent weights start at the quantized values q*s (masked); activation scales are calibrated on
    `calib` (a batch of inputs) and then frozen. Without `calib` they are not calibrated: they keep
    Brevitas's initial range (|x| <= 1), never statistics of made-up inputs. `example` (an input
    of the model's shape; `calib` serves when given) lets the carrier find the layers whose input
    needs a quantizer of its own (`build_carrier`).
    """
    from .allocation import compress
    from .layers import layer_weights

    act = act or ActConfig(scale_mode=allocation.scale_mode)
    comp = compress(layer_weights(model, specs), allocation)
    q = build_carrier(model, specs, allocation, act, example=example if calib is None else calib[:1])
    layers = carried_layers(q)
    with torch.no_grad():
        for name, (qi, s, mask) in comp.items():
            layer = layers[name]
            layer.parametrizations.weight[0].mask.copy_(mask.float())
            layer.parametrizations.weight.original.copy_(qi * s.reshape((-1,) + (1,) * (qi.dim() - 1)))
    if act.bits is not None and calib is not None:
        calibrate(q, calib)
    elif act.bits is not None:
        default_act_scales(q)
    if act.bits is not None:
        from .carrier_graph import finalize_affines

        x1 = calib[:1] if calib is not None else example
        if x1 is not None:
            finalize_affines(q, x1)
    freeze(q)
    q.eval()
    return q


def calibrate(qmodel: QuantModel, x: torch.Tensor, batch: int = 256) -> None:
    """Set activation scales from statistics of `x` (Brevitas calibration mode)."""
    from brevitas.graph.calibrate import calibration_mode

    qmodel.eval()
    with torch.no_grad(), calibration_mode(qmodel):
        for i in range(0, len(x), batch):
            qmodel(x[i:i + batch])


def default_act_scales(qmodel: QuantModel) -> None:
    """No calibration data: fix every activation quantizer at its initial scale (Brevitas's
    `init_scale`, threshold 1.0, so |x| <= 1), as if its statistics had been collected."""
    for m in qmodel.modules():
        if hasattr(m, "init_scale") and hasattr(m, "collect_stats_steps"):
            m.init_scale()


def freeze(qmodel: QuantModel) -> None:
    """Quantizer parameters (weight and activation scales) never train."""
    for name, p in qmodel.named_parameters():
        if "_quant" in name:
            p.requires_grad_(False)


def quant_state(qmodel: QuantModel) -> dict[str, torch.Tensor]:
    """Everything that must not change in finetuning: masks and quantizer parameters."""
    return {k: v.detach().clone() for k, v in qmodel.state_dict().items() if "_quant" in k or k.endswith(".mask")}


def int_weights(layer: nn.Module) -> torch.Tensor:
    """Integer codes of a Brevitas layer's weights (exact: value / scale)."""
    qw = layer.quant_weight()
    return torch.round(qw.value / qw.scale).detach()
