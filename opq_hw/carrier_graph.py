"""Carrier pieces for graphs beyond Conv/Linear + ReLU chains (models from the ONNX front end, and
PyTorch models whose residual joins are `Add` modules):

- `insert_join_quants`: every residual Add and every Concat of two or more activations gets ONE
  quantizer, shared by all its inputs, so the inputs are on the same grid and the join is exact in
  fixed point (the sum / concatenation of integers of one scale); in a PyTorch model (not an fx
  graph) the joins are its `Add` modules, which hold the shared quantizer themselves;
- `float_input_layers`: the allocated layers whose input is not an integer tensor on a usable grid
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
    """Allocated layers (by `opq_layer` name) whose input in a forward pass on `example` is not an
    integer tensor with zero point 0 (and, in pow2 mode, a power-of-two scale)."""
    seen: dict[str, bool] = {}
    hooks = []
    for m in qmodel.modules():
        if hasattr(m, "opq_layer"):
            hooks.append(m.register_forward_pre_hook(
                lambda mod, inp: seen.__setitem__(mod.opq_layer, _on_grid(inp[0], pow2))))
    was = qmodel.training
    qmodel.eval()
    try:
        forward_with_hooks(qmodel, example, hooks)
    finally:
        qmodel.train(was)
    return {name for name, ok in seen.items() if not ok}


def forward_with_hooks(model: nn.Module, x: torch.Tensor, hooks: list) -> None:
    """One no-grad forward of `model` on `x` for what `hooks` (registered handles) record; the
    handles are removed afterwards, whatever happens."""
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
