"""BatchNorm folding for PyTorch models: every nn.BatchNorm1d/2d that directly follows a
Conv1d/Conv2d/Linear (whose output only it reads) is folded into that layer's weight and bias
(torch.nn.utils.fusion) and replaced by nn.Identity, in place, before `inspect_model`. Pairs are
found with torch.fx. A BatchNorm anywhere else (on the input, after an activation, a pooling or a residual
join) stays: the carrier computes it as a quantized per-channel affine (`carrier_graph.ChannelAffine`), and
the run records why it could not be folded. One without running statistics, or a model torch.fx cannot
trace, is refused with a named error."""
from __future__ import annotations

import torch
from torch import nn

from .onnx_frontend import UnfoldableBatchNorm

BN = (nn.BatchNorm1d, nn.BatchNorm2d)
LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear)


def _set(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, new)


def _describe(node, mods) -> str:
    """What a BatchNorm follows, in words: "ReLU '3'", "the model input", "add"."""
    import torch.fx as fx

    if not isinstance(node, fx.Node) or node.op == "placeholder":
        return "the model input"
    if node.op == "call_module":
        return f"{type(mods.get(node.target)).__name__} {node.target!r}"
    return f"{getattr(node.target, '__name__', node.target)}"


def fold_batchnorm(model: nn.Module) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Fold BN into the preceding layer, in place; returns ([{"bn": name, "into": layer}], [{"bn": name, "why":
    reason}] for the BNs that stay: the carrier keeps those as quantized channel affines)."""
    import torch.fx as fx
    from torch.nn.utils.fusion import fuse_conv_bn_weights, fuse_linear_bn_weights

    mods = dict(model.named_modules())
    bns = [n for n, m in mods.items() if isinstance(m, BN)]
    if not bns:
        return [], []
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as e:
        raise UnfoldableBatchNorm(
            f"the model has BatchNorm layers ({', '.join(bns[:4])}) and cannot be traced by torch.fx to find the "
            f"layer each follows ({type(e).__name__}: {str(e).splitlines()[0][:200]}); fold them into the "
            f"preceding Conv/Linear yourself") from e
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs, kept = [], []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(mods.get(node.target), BN):
            continue
        prev = node.args[0] if node.args else None
        ok = (isinstance(prev, fx.Node) and prev.op == "call_module" and isinstance(mods.get(prev.target), LAYERS)
              and len(prev.users) == 1 and calls[prev.target] == 1 and calls[node.target] == 1)
        bn = mods[node.target]
        if not bn.track_running_stats or bn.running_mean is None:
            raise UnfoldableBatchNorm(f"BatchNorm {node.target!r} keeps no running statistics, so it normalises with "
                                      "each batch's own: it can be neither folded nor kept as a fixed affine; use "
                                      "track_running_stats=True (the default) and train the model")
        if not ok:
            what = _describe(prev, mods)
            if calls[node.target] != 1:
                raise UnfoldableBatchNorm(f"BatchNorm {node.target!r} is called {calls[node.target]} times; use one "
                                          "BatchNorm module per place")
            kept.append({"bn": node.target, "why": f"follows {what}, not a Conv1d/Conv2d/Linear whose output only it reads"})
            continue
        pairs.append((prev.target, node.target))
    folds = []
    with torch.no_grad():
        for lname, bname in pairs:
            layer, bn = mods[lname], mods[bname]
            bias = layer.bias if layer.bias is not None else torch.zeros(layer.weight.shape[0])
            gamma = bn.weight if bn.affine else torch.ones_like(bn.running_mean)
            beta = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
            fuse = fuse_linear_bn_weights if isinstance(layer, nn.Linear) else fuse_conv_bn_weights
            w, b = fuse(layer.weight, bias, bn.running_mean, bn.running_var, bn.eps, gamma, beta)
            layer.weight = nn.Parameter(w.detach().clone())
            layer.bias = nn.Parameter(b.detach().clone())
            _set(model, bname, nn.Identity())
            folds.append({"bn": bname, "into": lname})
    return folds, kept
