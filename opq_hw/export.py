"""QONNX export of the Brevitas carrier, and execution of the exported graph."""
from __future__ import annotations

import collections
import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from .artifact import _umask


def export_qonnx(qmodel: torch.nn.Module, example_input: torch.Tensor, path: str | os.PathLike) -> Path:
    """Write `model.qonnx.onnx` (Brevitas `export_qonnx`, TorchScript path, then qonnx cleanup), atomically."""
    from brevitas.export import export_qonnx as _export

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".onnx")
    os.close(fd)
    try:
        qmodel.eval()
        # the ModelProto in memory: no write and read back of the raw graph
        with torch.no_grad(), weights_as_values(qmodel):
            proto = _export(qmodel, input_t=example_input[:1], export_path=None, dynamo=False)
        _cleanup(proto).save(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; every artifact gets the umask's mode
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


class _Value(torch.nn.Module):
    """A parametrization that returns a fixed tensor (a buffer, so the trace holds it as an initializer)."""

    def __init__(self, value: torch.Tensor):
        super().__init__()
        self.register_buffer("value", value)

    def forward(self, _original: torch.Tensor) -> torch.Tensor:
        return self.value


@contextlib.contextmanager
def weights_as_values(model: torch.nn.Module):
    """Every parametrized tensor of `model` (the carrier's `FrozenMask` on each layer's weight) held as the
    value its parametrizations compute, for the length of the block; restored afterwards.

    Traced as it stands, a mask is ~10 ONNX nodes per layer on weight-sized constants (the latent weight,
    the mask, the LSB floor and the clamp), which the cleanup then folds back into one initializer: most
    of the export's time on a large model. Here the trace holds that initializer directly: the value is
    the parametrization's own output (computed by torch, not re-derived), so the graph has the same
    operators and the same values after the cleanup (tests/test_pipeline.py)."""
    import torch.nn.utils.parametrize as parametrize

    swapped = []
    try:
        for m in model.modules():
            if not parametrize.is_parametrized(m):
                continue
            for name, plist in m.parametrizations.items():
                with torch.no_grad():
                    value = getattr(m, name).detach()
                old = list(plist)
                swapped.append((plist, old))
                plist[0] = _Value(value)
                for i in range(1, len(old)):
                    plist[i] = torch.nn.Identity()
        yield model
    finally:
        for plist, old in swapped:
            for i, p in enumerate(old):
                plist[i] = p


QNT_OPS = ("Quant", "BipolarQuant", "QuantizeLinear", "DequantizeLinear")  # qonnx cleanup's preserve_qnt_ops


def _cleanup(raw):
    """qonnx's `cleanup` (preserve_qnt_ops) of the raw export (a path or a ModelProto), with the
    constant subgraphs (if any) folded first in one pass; returns the ModelWrapper. qonnx's FoldConstants
    folds one node per pass and re-infers the whole graph's shapes after each (qonnx issue #104):
    quadratic in the layers, 388 of ResNet-18's 412 s of export here, ~10 constant nodes per layer.
    Folding the same nodes in graph order is the order FoldConstants would take them in (the first
    foldable node each pass), and its own pass then finds nothing left. `cleanup_model`'s
    transformations run here in its order on the one model, without the whole-model copy that
    `ModelWrapper.transform` makes by default before each (the copy is thrown away; on ResNet-50
    each is ~100 MB). The file is byte-identical to qonnx's cleanup (tests/test_pipeline.py)."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.fold_constants import FoldConstants
    from qonnx.transformation.general import (GiveReadableTensorNames, GiveUniqueNodeNames,
                                              GiveUniqueParameterTensors, RemoveStaticGraphInputs,
                                              RemoveUnusedTensors)
    from qonnx.transformation.infer_shapes import InferShapes
    from qonnx.transformation.quant_constant_folding import FoldTransposeIntoQuantInit

    model = ModelWrapper(raw)
    for n in model.graph.node:  # what cleanup_model does first, so that shapes can be inferred
        if n.op_type in ("Quant", "Trunc", "BipolarQuant"):
            n.domain = "qonnx.custom_op.general"
    # the one-pass folding (and the shapes it needs) only where there is something to fold: the masks are traced
    # as their values (`weights_as_values`), so usually there is not, and the cleanup is qonnx's as it stands
    fold = (InferShapes(), GiveUniqueParameterTensors(), _FoldConstantSubgraphs()) if _foldable(model.graph) else ()
    for t in fold + (InferShapes(),):  # qonnx.util.cleanup.cleanup_model(preserve_qnt_ops=True), step by step
        model = model.transform(t, make_deepcopy=False)
    if _settled(model):
        # its next five steps, and the model cleanup after each, provably change nothing (`_settled`): the names
        # are given on the graph as it stands, with one model cleanup at the end, as the last step's own
        model = model.transform(GiveUniqueNodeNames(), make_deepcopy=False, cleanup=False)
        return model.transform(GiveReadableTensorNames(), make_deepcopy=False)
    for t in (GiveUniqueParameterTensors(), FoldConstants(exclude_op_types=list(QNT_OPS)), FoldTransposeIntoQuantInit(),
              RemoveUnusedTensors(), RemoveStaticGraphInputs(), GiveUniqueNodeNames(), GiveReadableTensorNames()):
        model = model.transform(t, make_deepcopy=False)
    return model


def _settled(model) -> bool:
    """Whether, on `model` just out of `ModelWrapper.cleanup` (qonnx runs one after every transformation),
    qonnx's cleanup steps after InferShapes change nothing, so that skipping them and their cleanups leaves the
    same graph. Each such cleanup (about a second on ResNet-50: its passes scan the node and initializer lists
    per tensor) is RemoveUnusedTensors, RemoveStaticGraphInputs, SortGraph, SortCommutativeInputsInitializerLast
    and GiveUniqueParameterTensors: the last three leave a graph they just processed as it is (a topological
    order re-sorted is the same order, sorted inputs stay sorted, unique parameters stay unique), and the
    first two are checked here, as are the steps themselves: GiveUniqueParameterTensors is the cleanup's own
    last pass; FoldConstants folds a node (other than a quantizer) that has no inputs, only initializers, or
    is a Shape of a known shape, so none must be there; FoldTransposeIntoQuantInit needs a Transpose, so
    none must be there; RemoveUnusedTensors and RemoveStaticGraphInputs are the checks on the cleanup.
    GiveUniqueNodeNames only renames nodes, which none of the cleanup's passes reads."""
    g = model.graph
    inits = {t.name for t in g.initializer}
    used = {x for n in g.node for x in (*n.input, *n.output)}
    for n in g.node:
        if n.op_type == "Transpose":
            return False
        if n.op_type in QNT_OPS:
            continue
        if not n.input or all(i in inits for i in n.input):
            return False
        if n.op_type == "Shape" and model.get_tensor_shape(n.input[0]) is not None:
            return False
    return (inits <= used and all(v.name in used for v in g.value_info)
            and all(q.tensor_name in used for q in g.quantization_annotation)
            and not any(i.name in inits for i in g.input))


def _foldable(graph) -> bool:
    """Whether some node other than a quantizer has only constant inputs (initializers), or none."""
    inits = {t.name for t in graph.initializer}
    return any(n.op_type not in QNT_OPS and all(i in inits for i in n.input) for n in graph.node)


def _FoldConstantSubgraphs():
    from qonnx.core import onnx_exec
    from qonnx.transformation.base import Transformation
    from qonnx.transformation.general import RemoveUnusedTensors
    from qonnx.transformation.infer_shapes import InferShapes

    class FoldConstantSubgraphs(Transformation):
        """Every node whose inputs are all constant (or that has none), except the quantizers,
        replaced by its value as an initializer, in one pass in graph order."""

        def apply(self, model):
            ctx = model.make_empty_exec_context()
            opset = model.model.opset_import[0].version
            folded = []
            # which tensors are initializers, by name (model.get_initializer scans the list and converts the
            # tensor to an array: weight-sized copies, quadratic in the graph's size); a folded output is one
            inits = {t.name for t in model.graph.initializer}
            # a tensor that only folded nodes read is dropped once the last of them ran (RemoveUnusedTensors
            # would drop it after the pass; the others keep their order): ~10 weight-sized ones per layer
            readers = collections.Counter(i for n in model.graph.node for i in n.input)
            keep = {t.name for t in model.graph.output}
            for n in model.graph.node:
                if n.op_type in QNT_OPS or any(i not in inits for i in n.input):
                    continue
                for i in n.input:
                    model.get_tensor_shape(i, fix_missing_init_shape=True)
                onnx_exec.execute_node(n, ctx, model.graph, opset_version=opset)
                model.set_initializer(n.output[0], ctx[n.output[0]])
                inits.add(n.output[0])
                folded.append(n)
                for i in n.input:
                    readers[i] -= 1
                    if readers[i] == 0 and i not in keep and i in ctx:
                        del ctx[i]
                        model.del_initializer(i)
            for n in folded:
                model.graph.node.remove(n)
            if not folded:
                return model, False
            del ctx  # every tensor's value: the folded intermediates, weight-sized
            # the intermediates only the folded nodes read go now (the cleanup after this transformation would
            # drop them), not after InferShapes has serialized and parsed the graph with them (~10 per layer)
            model = model.transform(RemoveUnusedTensors(), make_deepcopy=False, cleanup=False)
            return model.transform(InferShapes(), make_deepcopy=False), True

    return FoldConstantSubgraphs()


def execute_qonnx(path: str | os.PathLike, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """Run the QONNX graph with qonnx's reference executor, `batch` samples per call.

    The exported graph has batch 1; a copy with the batch dimension re-set (shapes re-inferred)
    runs a whole batch per call.
    """
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_shapes import InferShapes

    base = ModelWrapper(str(path))
    iname, oname = base.graph.input[0].name, base.graph.output[0].name
    out_shape = [d.dim_value for d in base.graph.output[0].type.tensor_type.shape.dim][1:]
    models: dict[int, ModelWrapper] = {}
    outs = []
    for i in range(0, len(x), batch):
        xb = np.ascontiguousarray(x[i:i + batch], dtype=np.float32)
        m = models.get(len(xb))
        if m is None:
            m = ModelWrapper(base.model.__deepcopy__())
            del m.graph.value_info[:]
            m.set_tensor_shape(iname, [len(xb)] + list(xb.shape[1:]))
            m.set_tensor_shape(oname, [len(xb)] + out_shape)
            m = models[len(xb)] = m.transform(InferShapes())
        outs.append(execute_onnx(m, {iname: xb})[oname])
    return np.concatenate(outs, axis=0)
