"""An ONNX graph as a computation, independent of node order and tensor names (for comparing exports)."""
from __future__ import annotations

import hashlib


def _h(*parts) -> str:
    d = hashlib.sha256()
    for p in parts:
        d.update(p if isinstance(p, bytes) else repr(p).encode())
        d.update(b"\0")
    return d.hexdigest()


def graph_structure(path) -> dict:
    """Every tensor named by what computes it: an initializer by its dtype, shape and bytes, a graph input by its
    name and type, a node's output by the node's op, domain, attributes and inputs (so named recursively) and its
    index. Two graphs with equal structures compute the same thing with the same constants, whatever the order
    of their nodes and the names of their tensors; the value_info types and the model's opsets are compared too."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    g = m.graph
    sig: dict[str, str] = {}
    for t in g.initializer:
        a = numpy_helper.to_array(t)
        sig[t.name] = _h("init", a.dtype.str, a.shape, a.tobytes())
    for i in g.input:
        sig.setdefault(i.name, _h("input", i.name, i.type.SerializeToString()))
    nodes = []
    for n in g.node:  # ONNX keeps nodes in topological order
        s = _h(n.op_type, n.domain, sorted(a.SerializeToString() for a in n.attribute),
               [sig[i] if i else "" for i in n.input])
        nodes.append(s)
        for k, o in enumerate(n.output):
            sig[o] = _h(s, k)
    return {"opsets": sorted((o.domain, o.version) for o in m.opset_import), "ir_version": m.ir_version,
            "initializers": sorted(sig[t.name] for t in g.initializer), "nodes": sorted(nodes),
            "outputs": [(sig[o.name], o.type.SerializeToString()) for o in g.output],
            "inputs": [(i.name, i.type.SerializeToString()) for i in g.input],
            "value_info": sorted((sig[v.name], v.type.SerializeToString()) for v in g.value_info)}
