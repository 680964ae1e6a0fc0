"""BatchNorm folding for PyTorch models: every nn.BatchNorm1d/2d that directly follows a
Conv1d/Conv2d/Linear (whose output only it reads) is folded into that layer's weight and bias
(torch.nn.utils.fusion) and replaced by nn.Identity, in place, before `inspect_model`. Pairs are
found with torch.fx, so a BatchNorm anywhere else is refused with a named error instead of
reaching the hardware as an unquantized float affine."""
from __future__ import annotations

import torch
from torch import nn

from .onnx_frontend import UnfoldableBatchNorm

BN = (nn.BatchNorm1d, nn.BatchNorm2d)
LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear)


def _set(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, new)


def fold_batchnorm(model: nn.Module) -> list[dict[str, str]]:
    """Fold BN into the preceding layer, in place; returns [{"bn": name, "into": layer}]."""
    import torch.fx as fx
    from torch.nn.utils.fusion import fuse_conv_bn_weights, fuse_linear_bn_weights

    mods = dict(model.named_modules())
    bns = [n for n, m in mods.items() if isinstance(m, BN)]
    if not bns:
        return []
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
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(mods.get(node.target), BN):
            continue
        prev = node.args[0] if node.args else None
        ok = (isinstance(prev, fx.Node) and prev.op == "call_module" and isinstance(mods.get(prev.target), LAYERS)
              and len(prev.users) == 1 and calls[prev.target] == 1 and calls[node.target] == 1)
        if not ok:
            what = (f"{prev.op} {prev.target}" if isinstance(prev, fx.Node) else "the input")
            raise UnfoldableBatchNorm(
                f"BatchNorm {node.target!r} follows {what}, not a Conv1d/Conv2d/Linear whose output only it reads, "
                f"so it cannot be folded into a layer's weights; put it right after a Conv/Linear or remove it")
        pairs.append((prev.target, node.target))
    folds = []
    with torch.no_grad():
        for lname, bname in pairs:
            layer, bn = mods[lname], mods[bname]
            if not bn.track_running_stats or bn.running_mean is None:
                raise UnfoldableBatchNorm(f"BatchNorm {bname!r} keeps no running statistics; it cannot be folded")
            bias = layer.bias if layer.bias is not None else torch.zeros(layer.weight.shape[0])
            gamma = bn.weight if bn.affine else torch.ones_like(bn.running_mean)
            beta = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
            fuse = fuse_linear_bn_weights if isinstance(layer, nn.Linear) else fuse_conv_bn_weights
            w, b = fuse(layer.weight, bias, bn.running_mean, bn.running_var, bn.eps, gamma, beta)
            layer.weight = nn.Parameter(w.detach().clone())
            layer.bias = nn.Parameter(b.detach().clone())
            _set(model, bname, nn.Identity())
            folds.append({"bn": bname, "into": lname})
    return folds
