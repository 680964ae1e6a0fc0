"""QONNX export of the Brevitas carrier, and execution of the exported graph."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch


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
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def execute_qonnx(path: str | os.PathLike, x: np.ndarray) -> np.ndarray:
    """Run the QONNX graph (qonnx's reference executor) sample by sample; returns (N, ...) outputs."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    model = ModelWrapper(str(path))
    iname, oname = model.graph.input[0].name, model.graph.output[0].name
    outs = [execute_onnx(model, {iname: x[i:i + 1].astype(np.float32)})[oname] for i in range(len(x))]
    return np.concatenate(outs, axis=0)
