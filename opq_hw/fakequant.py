"""A fast twin of the Brevitas carrier for finetuning: the same arithmetic with constant quantizers.

In finetuning every quantizer of the carrier is frozen (`carrier.freeze`), yet Brevitas recomputes
each scale from its parameter (pow2: `2^ceil(log2(.))`, clamps, STE wrappers) on every forward,
~60 small ops per layer (benchmarks/README, section 3). `fast_twin` reads every scale, zero point
and integer range once, from one forward of the carrier, and builds a twin that computes

    y = round_ste(x / s + z), clamped to [lo, hi] with two `where`s, then (y - z) * s

for the weights (after the carrier's own `FrozenMask`), the Int16 biases (s = input scale x weight
scale), the activations after each ReLU and at each input quantizer: Brevitas's `IntQuant.forward`
op for op (`RoundSte`, `TensorClamp`), so the forward and the gradients are the same floats. The
twin shares the carrier's parameters and buffers (weights, biases, BatchNorm statistics), so
training the twin trains the carrier; nothing has to be copied back. `matches` checks the claim on
a batch: the training loop uses the twin only where its output equals the carrier's bit for bit.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn


class _FakeQuant(torch.autograd.Function):
    """Brevitas's quantizer chain (optionally after a ReLU, or after the weight's FrozenMask) as
    one autograd node: the forward runs the same ops in the same order on the values (in place,
    without recording them), the backward is the product of the chain's own local gradients in
    autograd's order: where(kept, g * s, 0) / s, then the ReLU's where(x > 0, ., 0) or the mask's
    factor. `RoundSte` passes g through; `TensorClamp`'s two `where`s pass it where not clamped."""

    @staticmethod
    def forward(ctx, x, q: "IntQuantConst", relu: bool, pre: nn.Module | None):
        if pre is not None or relu:  # a new tensor (FrozenMask's or relu's output): divided in place
            y = (pre(x) if pre is not None else torch.relu(x)).div_(q.scale)
        else:
            y = x / q.scale
        y.add_(q.zero_point).round_()  # in place: the same values as Brevitas's out-of-place ops
        clamped = None
        lo, hi = torch.aminmax(y)
        # brevitas.function.ops.tensor_clamp (two wheres), skipped only where all of y is in range (a NaN
        # makes aminmax NaN: then the wheres run)
        if not (hi.item() <= q.hi_f and lo.item() >= q.lo_f):
            over = y > q.hi
            y = torch.where(over, q.hi.to(y.dtype), y)
            under = y < q.lo
            y = torch.where(under, q.lo.to(y.dtype), y)
            clamped = over | under
        if q.nonzero_zp:  # y - 0 is y, bit for bit (-0 included)
            y.sub_(q.zero_point)
        y.mul_(q.scale)
        ctx.q, ctx.pre = q, pre
        ctx.save_for_backward(clamped, x if relu else None)
        return y

    @staticmethod
    def backward(ctx, g):
        clamped, x = ctx.saved_tensors
        q = ctx.q
        gx = g * q.scale
        if clamped is not None:
            gx = torch.where(clamped, gx.new_zeros(()), gx)
        gx.div_(q.scale)
        if x is not None:  # relu's own backward, threshold_backward(grad, result, 0): result <= 0 iff x <= 0
            gx = torch.ops.aten.threshold_backward(gx, x, 0)
        if ctx.pre is not None:  # FrozenMask: wm + (fixed - wm).detach(), wm = w * mask
            gx = gx * ctx.pre.mask
        return gx, None, None, None


class IntQuantConst(nn.Module):
    """Brevitas `IntQuant.forward` (`RoundSte`, `TensorClamp`) with a constant scale, zero point
    and integer range."""

    def __init__(self, scale: torch.Tensor, zero_point: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor):
        super().__init__()
        for k, v in (("scale", scale), ("zero_point", zero_point), ("lo", lo), ("hi", hi)):
            self.register_buffer(k, v.detach().clone())
        self.nonzero_zp = bool(torch.any(self.zero_point != 0))
        scalar = self.lo.numel() == 1 and self.hi.numel() == 1  # else always take the wheres
        self.lo_f, self.hi_f = (float(self.lo), float(self.hi)) if scalar else (math.inf, -math.inf)

    def forward(self, x: torch.Tensor, relu: bool = False, pre: nn.Module | None = None) -> torch.Tensor:
        return _FakeQuant.apply(x, self, relu, pre)


class FastAct(nn.Module):
    """QuantReLU / QuantIdentity with a frozen scale: (relu) + IntQuantConst."""

    def __init__(self, relu: bool, quant: IntQuantConst):
        super().__init__()
        self.relu, self.quant = relu, quant

    def forward(self, x):
        return self.quant(x, relu=self.relu)


class FastLayer(nn.Module):
    """QuantConv1d/2d/QuantLinear: input quantizer (if any), FrozenMask + weight quantizer, Int16 bias."""

    def __init__(self, layer: nn.Module, wq: IntQuantConst, bq: IntQuantConst | None, in_q: FastAct | None):
        super().__init__()
        self.weight = layer.parametrizations.weight.original  # shared with the carrier
        self.bias = layer.bias
        self.mask = layer.parametrizations.weight[0]  # the carrier's FrozenMask (its buffers shared)
        self.wq, self.bq, self.in_q = wq, bq, in_q
        self.opq_layer = layer.opq_layer
        if isinstance(layer, nn.Linear):
            self.fn = F.linear
        else:
            if layer.padding_mode != "zeros" or getattr(layer, "is_same_padded_strided", False):
                raise NotImplementedError("padding mode")
            conv = F.conv1d if isinstance(layer, nn.Conv1d) else F.conv2d
            geom = (layer.stride, layer.padding, layer.dilation, layer.groups)
            self.fn = lambda x, w, b: conv(x, w, b, *geom)

    def forward(self, x):
        if self.in_q is not None:
            x = self.in_q(x)
        w = self.wq(self.weight, pre=self.mask)
        b = self.bias
        if b is not None and self.bq is not None:
            b = self.bq(b)
        return self.fn(x, w, b)


def _const(qt, int_quant) -> IntQuantConst:
    """IntQuantConst from a QuantTensor a Brevitas quantizer returned and its IntQuant module."""
    bw = torch.as_tensor(qt.bit_width)
    return IntQuantConst(torch.as_tensor(qt.scale), torch.as_tensor(qt.zero_point),
                         int_quant.min_int(bw), int_quant.max_int(bw))


def fast_twin(qmodel: nn.Module, example: torch.Tensor) -> nn.Module:
    """The carrier with every Brevitas module replaced by its constant-quantizer equivalent.

    Scales are read from one no-grad eval forward on `example` (any input of the model's shape:
    frozen scales do not depend on it). Raises NotImplementedError for a Brevitas module it does
    not know (the caller then trains the carrier itself)."""
    import brevitas.nn as qnn

    from .carrier import _replace, carried_layers
    from .carrier_graph import forward_with_hooks

    seen: dict[int, object] = {}

    def grab(key):
        return lambda mod, inp, out: seen.__setitem__(key, out)

    acts = {n: m for n, m in qmodel.named_modules() if isinstance(m, (qnn.QuantReLU, qnn.QuantIdentity))}
    layers = {n: m for n, m in qmodel.named_modules() if hasattr(m, "opq_layer")}
    if set(map(id, layers.values())) != set(map(id, carried_layers(qmodel).values())):
        raise NotImplementedError("carried layers")
    hooks = []
    for n, m in acts.items():
        hooks.append(m.register_forward_hook(grab(("act", n))))
    for n, m in layers.items():
        if m.input_quant.is_quant_enabled:
            hooks.append(m.input_quant.register_forward_hook(grab(("in", n))))
        if m.bias is not None and m.bias_quant.is_quant_enabled:
            hooks.append(m.bias_quant.register_forward_hook(grab(("bias", n))))
    was = qmodel.training
    qmodel.eval()
    try:
        forward_with_hooks(qmodel, example, hooks)
        with torch.no_grad():
            wq = {n: (m.quant_weight(), m.weight_quant.tensor_quant.int_quant) for n, m in layers.items()}
    finally:
        qmodel.train(was)
    for m in qmodel.modules():
        if type(m).__module__.startswith("brevitas.nn") and not isinstance(
                m, (qnn.QuantReLU, qnn.QuantIdentity, qnn.QuantConv1d, qnn.QuantConv2d, qnn.QuantLinear)):
            raise NotImplementedError(type(m).__name__)

    def act_quant(mod, key) -> FastAct:
        if key not in seen:
            raise NotImplementedError(f"{key} not reached")
        iq = mod.fused_activation_quant_proxy.tensor_quant.int_quant
        return FastAct(isinstance(mod.fused_activation_quant_proxy.activation_impl, nn.ReLU), _const(seen[key], iq))

    shared = {id(t): t for t in list(qmodel.parameters()) + list(qmodel.buffers())}
    twin = copy.deepcopy(qmodel, memo=dict(shared))
    for n, m in acts.items():
        _replace(twin, n, act_quant(m.act_quant, ("act", n)))
    for n, m in layers.items():
        in_q = act_quant(m.input_quant, ("in", n)) if m.input_quant.is_quant_enabled else None
        bq = None
        if m.bias is not None and m.bias_quant.is_quant_enabled:
            if ("bias", n) not in seen:
                raise NotImplementedError(f"bias of {n} not reached")
            bq = _const(seen[("bias", n)], m.bias_quant.tensor_quant.int_quant)
        qw, iq = wq[n]
        _replace(twin, n, FastLayer(twin.get_submodule(n), _const(qw, iq), bq, in_q))
    twin.train(was)
    return twin


def matches(qmodel: nn.Module, twin: nn.Module, x: torch.Tensor) -> bool:
    """Both forwards (eval and train mode, no grad) give the same output bit for bit on `x`.

    The state (BatchNorm statistics, shared by both) and the random generator (dropout) are
    restored after each forward, so the check changes nothing."""
    out = []
    tensors = list(qmodel.parameters()) + list(qmodel.buffers())
    state = [t.detach().clone() for t in tensors]
    was = qmodel.training
    try:
        for train in (False, True):
            for m in (qmodel, twin):
                m.train(train)
                with torch.no_grad(), torch.random.fork_rng(devices=[]):
                    torch.manual_seed(0)
                    out.append(m(x))
                with torch.no_grad():  # in place (load_state_dict would re-enable Brevitas's scale gradients)
                    for t, v in zip(tensors, state):
                        t.copy_(v)
    finally:
        qmodel.train(was)
        twin.train(was)
    return all(torch.equal(out[i], out[i + 1]) and out[i].dtype == out[i + 1].dtype for i in (0, 2))
