"""QONNX export of the Brevitas carrier, and execution of the exported graph."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from .artifact import _umask


def export_qonnx(qmodel: torch.nn.Module, example_input: torch.Tensor, path: str | os.PathLike) -> Path:
    """Write `model.qonnx.onnx` (Brevitas `export_qonnx`, TorchScript path, then qonnx cleanup), atomically."""
    from brevitas.export import export_qonnx as _export
    from qonnx.util.cleanup import cleanup

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".onnx")
    os.close(fd)
    try:
        qmodel.eval()
        with torch.no_grad():
            _export(qmodel, input_t=example_input[:1], export_path=tmp, dynamo=False)
        cleanup(tmp, out_file=tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; every artifact gets the umask's mode
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


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
