"""`inspect`: the LayerSpec of every Conv1d/Conv2d/Linear of a float model."""
from __future__ import annotations

import math

import torch
from torch import nn

from .errors import OpqError
from .spec import LayerSpec

SUPPORTED = (nn.Conv1d, nn.Conv2d, nn.Linear)
# Modules that carry no weights to compress and are known to be fine around them.
PASSIVE = (nn.ReLU, nn.MaxPool1d, nn.MaxPool2d, nn.Flatten, nn.Identity, nn.Dropout, nn.BatchNorm1d, nn.BatchNorm2d,
           nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.Sequential, nn.ModuleList)


def _tuple(x, n):
    return tuple(x) if isinstance(x, (tuple, list)) else (x,) * n


def inspect_model(model: nn.Module, example_input: torch.Tensor) -> list[LayerSpec]:
    """Per-layer specs for every nn.Conv1d, nn.Conv2d (incl. depthwise/grouped) and nn.Linear, in the
    order the forward pass runs them (not the order the model declares them).

    Raises OpqError naming any module with weights of an unsupported type (ConvTranspose, RNNs, ...).
    """
    for name, m in model.named_modules():
        if isinstance(m, SUPPORTED) or isinstance(m, PASSIVE) or m is model:
            continue
        own = [p for p, _ in m.named_parameters(recurse=False)]
        if own:
            raise OpqError(f"layer {name!r} is a {type(m).__name__} with weights, which opq-hw does not compress; "
                           f"supported: Conv1d, Conv2d, Linear (replace it, or remove it from the model)")
    shapes: dict[str, tuple] = {}
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, SUPPORTED):
            hooks.append(m.register_forward_hook(
                lambda mod, inp, out, name=name: shapes.__setitem__(name, (tuple(inp[0].shape[1:]), tuple(out.shape[1:])))))
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example_input)
    except Exception as e:
        raise OpqError(f"the model does not run on the example input of shape {tuple(example_input.shape)}: {e}") from e
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    for name, m in model.named_modules():
        if isinstance(m, SUPPORTED) and name not in shapes:
            raise OpqError(f"layer {name!r} is not used in the forward pass; remove it or give an input that reaches it")
    specs = []
    modules = dict(model.named_modules())
    for name, (in_shape, out_shape) in shapes.items():  # the order the forward pass runs the layers in
        m = modules[name]
        w = m.weight
        if isinstance(m, nn.Linear):
            kind, k, st, pd, g = "linear", (), (), (), 1
            in_ch, out_ch = m.in_features, m.out_features
            pixels = math.prod(out_shape[:-1]) if len(out_shape) > 1 else 1
        else:
            nd = 1 if isinstance(m, nn.Conv1d) else 2
            if isinstance(m.padding, str):
                raise OpqError(f"layer {name!r}: string padding {m.padding!r} is not supported; give integer padding")
            kind = f"conv{nd}d"
            k, st, pd, g = _tuple(m.kernel_size, nd), _tuple(m.stride, nd), _tuple(m.padding, nd), m.groups
            in_ch, out_ch = m.in_channels, m.out_channels
            pixels = math.prod(out_shape[1:])
        specs.append(LayerSpec(name=name, kind=kind, in_channels=in_ch, out_channels=out_ch, kernel_size=k, stride=st,
                               padding=pd, groups=g, weight_shape=tuple(w.shape), n_weights=w.numel(),
                               in_shape=in_shape, out_shape=out_shape, out_pixels=int(pixels),
                               has_bias=m.bias is not None))
    if not specs:
        raise OpqError("the model has no Conv1d/Conv2d/Linear layer to compress")
    return specs


def layer_weights(model: nn.Module, specs: list[LayerSpec]) -> dict[str, torch.Tensor]:
    mods = dict(model.named_modules())
    return {s.name: mods[s.name].weight.detach() for s in specs}
