"""Carrier pieces for graphs beyond Conv/Linear + ReLU chains (models from the ONNX front end, and
PyTorch models whose residual joins are `Add` modules):

- `insert_join_quants`: every residual Add and every Concat of two or more activations gets ONE
  quantizer, shared by all its inputs, so the inputs are on the same grid and the join is exact in
  fixed point (the sum / concatenation of integers of one scale); in a PyTorch model (not an fx
  graph) the joins are its `Add` modules, which hold the shared quantizer themselves;
- `ChannelAffine`: a BatchNorm that cannot be folded into a layer, kept as a quantized per-channel
  affine a_c * x + b_c followed by an activation quantizer (`finalize_affines` puts b on its grid);
- `float_input_layers`: the allocated layers (and affines) whose input is not an integer tensor on a usable grid
  (after Tanh, Sigmoid, ELU, average pooling with a divisor that is not a power of two, a residual
  Add, ...), found by one forward pass. The carrier gives those layers their own input quantizer,
  so every layer computes integer x integer products and its Int16 bias has an input scale.

Both are structural (they depend on the graph, not on values), so `load_run` rebuilds the same
carrier from the same float model.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .errors import OpqError


class Add(nn.Module):
    """A residual join `a + b` as a module, so that the carrier can find it in a PyTorch model and
    put one quantizer, shared by both inputs, in front of it (`insert_join_quants`): write
    `self.add = Add()` and `y = self.add(x, skip)` where a model would write `x + skip`."""

    def __init__(self):
        super().__init__()
        self.quant: nn.Module | None = None

    def forward(self, a, b):
        if self.quant is not None:
            a, b = self.quant(a), self.quant(b)
        return a + b


def _is_join(m: nn.Module) -> bool:
    name = type(m).__name__
    if name == "OnnxConcat":
        return True
    return name == "OnnxBinaryMathOperation" and getattr(m, "math_op_function", None) is torch.add


def insert_join_quants(body: nn.Module, make_quant) -> list[str]:
    """Shared input quantizers for the Add/Concat nodes of an fx GraphModule (onnx2torch output), or
    for the `Add` modules of any other model. Returns the names of the joins."""
    import torch.fx as fx

    if not isinstance(body, fx.GraphModule):
        adds = [(name, m) for name, m in body.named_modules() if isinstance(m, Add)]
        for _, m in adds:
            m.quant = make_quant()
        return [name for name, _ in adds]
    mods = dict(body.named_modules())
    joins = []
    for node in list(body.graph.nodes):
        if node.op != "call_module" or not _is_join(mods.get(node.target, nn.Identity())):
            continue
        if sum(isinstance(a, fx.Node) for a in node.args) < 2:
            continue
        qname = f"opq_join_{len(joins)}"
        body.add_submodule(qname, make_quant())
        with body.graph.inserting_before(node):
            node.args = tuple(body.graph.call_module(qname, (a,)) if isinstance(a, fx.Node) else a for a in node.args)
        joins.append(str(node.target))
    if joins:
        body.graph.lint()
        body.recompile()
    return joins


def _on_grid(x, pow2: bool) -> bool:
    from brevitas.quant_tensor import IntQuantTensor

    if not isinstance(x, IntQuantTensor):
        return False
    if not bool(torch.all(torch.as_tensor(x.zero_point) == 0)):
        return False
    if pow2:
        s = torch.as_tensor(x.scale).detach().reshape(-1)
        return all(v > 0 and math.log2(v).is_integer() for v in s.tolist())
    return True


def float_input_layers(qmodel: nn.Module, example: torch.Tensor, pow2: bool) -> set[str]:
    """Allocated layers (by `opq_layer` name) and kept BatchNorm affines (by `opq_affine` name) whose input in
    a forward pass on `example` is not an integer tensor with zero point 0 (and, in pow2 mode, a power-of-two
    scale)."""
    seen: dict[str, bool] = {}
    hooks = []
    for m in qmodel.modules():
        name = getattr(m, "opq_layer", None) or getattr(m, "opq_affine", None)
        if name is not None:
            hooks.append(m.register_forward_pre_hook(
                lambda mod, inp, name=name: seen.__setitem__(name, _on_grid(inp[0], pow2))))
    _eval_forward(qmodel, example, hooks)
    return {name for name, ok in seen.items() if not ok}


def _eval_forward(qmodel: nn.Module, example: torch.Tensor, hooks: list) -> None:
    """`forward_with_hooks` in eval mode; the model's mode is restored afterwards."""
    was = qmodel.training
    qmodel.eval()
    try:
        forward_with_hooks(qmodel, example, hooks)
    finally:
        qmodel.train(was)


def forward_with_hooks(model: nn.Module, x: torch.Tensor, hooks: list):
    """One no-grad forward of `model` on `x` for what `hooks` (registered handles) record; the
    handles are removed afterwards, whatever happens. Returns the model's output."""
    try:
        with torch.no_grad():
            return model(x)
    finally:
        for h in hooks:
            h.remove()


# ------------------------------------------------------------------ BatchNorm kept as a channel affine

AFFINE_BITS = 8  # the per-channel multiplier a_c: signed narrow-range integers, each with its own scale
AFFINE_BIAS_BITS = 16  # the offset b_c: signed integers on its channel's product grid (like the layers' Int16Bias),
AFFINE_BIAS_MAX_BITS = 24  # widened up to this where |b| needs it (float32 still adds a*x + b exactly), then saturated


class ChannelAffine(nn.Module):
    """A BatchNorm that cannot be folded into a layer (after a ReLU, a pooling, a residual Add, on the input),
    kept in the carrier as  y_c = a_c * x_c + b_c  with a = gamma / sqrt(var + eps), b = beta - mean * a.

    Quantization (what the hardware computes, exactly), per channel c as for a layer's weights and bias:
    - a_c: an AFFINE_BITS-bit narrow signed integer times its own scale s_c (a power of two in pow2 mode,
      |a_c| / K otherwise): a BatchNorm's multipliers span orders of magnitude (a channel of near-constant input
      has a huge one), so one scale per tensor would round the small ones away;
    - b_c: signed integers on the grid s_c * s_x of that channel's products (s_x: the input's scale), the
      convention of the layers' Int16Bias: AFFINE_BIAS_BITS bits, or as many more as |b_c| needs up to
      AFFINE_BIAS_MAX_BITS (beyond that it saturates, and the record counts the channels that did). a_c*x + b_c is
      then an integer times s_c * s_x below 2^24 (b's width is capped for that by the input's bits), which float32
      computes exactly;
    - the input: an integer tensor on a power-of-two grid (the quantizer before it), else `input_quant`, its own
      quantizer (set by the carrier, as for layers, `float_input_layers`); the output: `out_quant`, an activation
      quantizer like the one after every layer.
    `b` is put on its grid by `finalize_affines` once the input scale is known (after calibration); until then
    (calibration, float activations) b stays the float offset. Buffers only: nothing here trains."""

    def __init__(self, bn: nn.Module, name: str, scale_mode: str):
        super().__init__()
        with torch.no_grad():
            var, mean = bn.running_var.double(), bn.running_mean.double()
            gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(mean)
            beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(mean)
            a = gamma / torch.sqrt(var + float(bn.eps))
            b = beta - mean * a
        k = 2 ** (AFFINE_BITS - 1) - 1
        s = torch.where(a != 0, a.abs() / k, torch.ones_like(a))
        if scale_mode == "pow2":
            s = torch.exp2(torch.ceil(torch.log2(s)))
        q = torch.clamp(torch.round(a / s), -k, k)
        self.opq_affine = name
        self.register_buffer("a_float", a.float())
        self.register_buffer("b_float", b.float())
        self.register_buffer("a", (q * s).float())
        self.register_buffer("a_scale", s.float())
        self.register_buffer("b", b.float().clone())
        self.register_buffer("b_scale", torch.zeros_like(s).float())  # 0: b not on its grid yet
        self.register_buffer("b_bits", torch.tensor(0))
        self.input_quant: nn.Module | None = None
        self.out_quant: nn.Module | None = None

    def forward(self, x):
        if self.input_quant is not None:
            x = self.input_quant(x)
        v = x.value if hasattr(x, "value") and not isinstance(x, torch.Tensor) else x
        shape = (1, -1) + (1,) * (v.dim() - 2)
        y = v * self.a.reshape(shape) + self.b.reshape(shape)
        return self.out_quant(y) if self.out_quant is not None else y

    def set_input_scale(self, s_x: float, in_bits: int = 8) -> None:
        """b_c on the grid s_c * s_x, AFFINE_BIAS_BITS signed bits or wider (saturating, recorded by `record`), and
        never so wide that |a_c*x| + |b_c| (x: `in_bits`-bit integers) leaves float32's exact integers (2^24)."""
        room = 2 ** 24 - (2 ** (AFFINE_BITS - 1) - 1) * 2 ** in_bits  # what |b_c| may take, in LSBs
        if room <= 2 ** (AFFINE_BIAS_BITS - 1):
            raise OpqError(f"BatchNorm {self.opq_affine!r}, kept as a channel affine, gets {in_bits}-bit inputs: a*x + b "
                           "would not be exact in float32; use activations of at most 16 bits (--act-bits)")
        grid = self.a_scale.double() * s_x
        codes = torch.round(self.b_float.double() / grid)
        need = float(codes.abs().max()) if codes.numel() else 0.0
        bits = min(max(AFFINE_BIAS_BITS, math.ceil(math.log2(need + 1)) + 1), AFFINE_BIAS_MAX_BITS,
                   int(math.log2(room)) + 1)
        k = 2 ** (bits - 1) - 1
        with torch.no_grad():
            self.b_scale.copy_(grid)
            self.b_bits.fill_(bits)
            self.b.copy_(torch.clamp(codes, -k, k) * grid)

    def record(self) -> dict:
        """What was kept and how it was quantized, with the quantization error (for the manifest)."""
        a_err = (self.a - self.a_float).abs()
        b_err = (self.b - self.b_float).abs()
        grid, bits = self.b_scale.double(), int(self.b_bits)
        on_grid = bool((grid > 0).all())
        k = 2 ** (bits - 1) - 1
        return {"bn": self.opq_affine, "channels": int(self.a.numel()), **getattr(self, "in_info", {}), "a_bits": AFFINE_BITS,
                "a_scale_range": [float(self.a_scale.min()), float(self.a_scale.max())],
                "a_max_abs_error": float(a_err.max()),
                "a_max_rel_error": float((a_err / self.a_float.abs().clamp(min=1e-30)).max()),
                "b_bits": bits if on_grid else None,
                "b_grid_range": [float(grid.min()), float(grid.max())] if on_grid else None,
                "b_max_abs_error": float(b_err.max()),
                "b_saturated": int((self.b_float.double().abs() > k * grid + grid / 2).sum()) if on_grid else 0}


def is_batchnorm(m: nn.Module) -> bool:
    return isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))


def affines(qmodel: nn.Module) -> list[ChannelAffine]:
    return [m for m in qmodel.modules() if isinstance(m, ChannelAffine)]


def finalize_affines(qmodel: nn.Module, example: torch.Tensor) -> None:
    """Put every affine's b on its grid s_a * s_x, s_x read off its (quantized) input in one forward pass on
    `example`. An input without a power-of-two scale keeps b in float (float activations)."""
    if not affines(qmodel):
        return  # nothing to finalize: no forward pass
    found: dict[int, tuple[float, int]] = {}
    hooks = []
    for m in affines(qmodel):
        def pre(mod, inp):
            x = mod.input_quant(inp[0]) if mod.input_quant is not None else inp[0]
            s = getattr(x, "scale", None)
            if s is not None and torch.as_tensor(s).numel() == 1:
                v = x.value if hasattr(x, "value") else x
                bits = int(x.bit_width) if getattr(x, "bit_width", None) is not None else 8
                found[id(mod)] = (float(torch.as_tensor(s).reshape(-1)[0]), bits)
                mod.in_info = {"in_shape": list(v.shape[1:]), "in_bits": bits}
        hooks.append(m.register_forward_pre_hook(pre))
    _eval_forward(qmodel, example, hooks)
    for m in affines(qmodel):
        if id(m) in found:
            m.set_input_scale(*found[id(m)])


def refuse_affines(qmodel: nn.Module, flow: str, why: str) -> None:
    """The named refusal of a flow that cannot compute a BatchNorm kept as a channel affine (an OpqError: exit 2)."""
    names = [m.opq_affine for m in affines(qmodel)]
    if names:
        raise OpqError(f"the {flow} flow cannot take the BatchNorm {', '.join(repr(n) for n in names[:6])}"
                       f"{', ...' if len(names) > 6 else ''} kept as a per-channel affine a*x + b (it could not be "
                       f"folded into a Conv/Linear: see the run's manifest `bn_affine`): {why}. Build this run with "
                       "--flow hls4ml, which computes it exactly, or put each BatchNorm right after a Conv/Linear "
                       "in the float model so that it is folded")
