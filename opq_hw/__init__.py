"""opq-hw: one-shot pruning-quantization (OPQ) to FPGA accelerators.

Importing the package is light: torch, brevitas, hls4ml and FINN load only when a verb needs them.
Pipeline verbs: inspect -> allocate -> apply -> finetune -> export_qonnx (then estimate, build, simulate).
"""
from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "inspect": ("opq_hw.layers", "inspect_model"),
    "allocate": ("opq_hw.allocation", "allocate"),
    "compress": ("opq_hw.allocation", "compress"),
    "apply": ("opq_hw.carrier", "apply"),
    "finetune": ("opq_hw.training", "finetune"),
    "export_qonnx": ("opq_hw.export", "export_qonnx"),
    "load_run": ("opq_hw.run", "load_run"),
    "OpqError": ("opq_hw.errors", "OpqError"),
    "Allocation": ("opq_hw.spec", "Allocation"),
    "LayerAlloc": ("opq_hw.spec", "LayerAlloc"),
    "LayerSpec": ("opq_hw.spec", "LayerSpec"),
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'opq_hw' has no attribute {name!r}")
