"""Built-in float models, and loading a model by name, `module:factory` or float ONNX file."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .carrier_graph import Add
from .errors import OpqError


def digits_cnn() -> nn.Module:
    """8x8 digits CNN: 2 conv blocks + classifier (6,032 weights)."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 2 * 2, 10),
    )


def digits_mlp() -> nn.Module:
    """64-64-32-10 MLP on flattened 8x8 digits (6,464 weights)."""
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def mnist1d_cnn() -> nn.Module:
    """1-D CNN for MNIST-1D (length 40): 4 conv layers + classifier (11,072 weights)."""
    return nn.Sequential(
        nn.Conv1d(1, 32, 5, padding=2), nn.ReLU(),
        nn.Conv1d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool1d(2),
        nn.Conv1d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool1d(2),
        nn.Conv1d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool1d(2),
        nn.Flatten(), nn.Linear(32 * 5, 10),
    )


def mnist28_lenet() -> nn.Module:
    """LeNet-5-style CNN on 28x28 MNIST (LeCun et al. 1998, with ReLU and max pooling):
    conv5x5(6) - pool - conv5x5(16) - pool - 120 - 84 - 10 (61,470 weights)."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
    )


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions and a skip (identity, or a strided 1x1 convolution where the shape
    changes), joined by an `Add` (its shared quantizer makes the sum exact), then ReLU: the block of
    ResNet-8 in MLPerf Tiny (He et al. 2016, BatchNorm left out)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        # declared in the order the exported QONNX graph lists them (conv1, skip, conv2): the flows
        # pair the graph's weight nodes with the allocation's layers in that order
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1, stride=stride) if (stride != 1 or c_in != c_out) else nn.Identity()
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.add = Add()
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.add(self.conv2(self.relu1(self.conv1(x))), self.skip(x)))


def mnist28_resnet() -> nn.Module:
    """ResNet-8-style network (MLPerf Tiny's, widths 8/16/32 instead of 16/32/64) on 28x28 MNIST:
    stem conv - pool - three residual blocks (the last two strided, 1x1 skips) - 4x4 average pool -
    linear (19,464 weights)."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 14x14
        ResidualBlock(8, 8), ResidualBlock(8, 16, stride=2), ResidualBlock(16, 32, stride=2),  # 14, 7, 4
        nn.AvgPool2d(4), nn.Flatten(), nn.Linear(32, 10),
    )


def _dwsep(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
    """MobileNet-V1's depthwise-separable block: depthwise 3x3 (groups = channels), pointwise 1x1."""
    return [nn.Conv2d(c_in, c_in, 3, stride=stride, padding=1, groups=c_in), nn.ReLU(), nn.Conv2d(c_in, c_out, 1),
            nn.ReLU()]


def mnist28_mobilenet() -> nn.Module:
    """MobileNet-V1-style network (Howard et al. 2017, width reduced, BatchNorm left out) on 28x28
    MNIST: conv - pool - four depthwise-separable blocks - 4x4 average pool - linear (9,760 weights)."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 14x14
        *_dwsep(16, 32, 1), *_dwsep(32, 32, 2), *_dwsep(32, 64, 2), *_dwsep(64, 64, 1),  # 14, 7, 4, 4
        nn.AvgPool2d(4), nn.Flatten(), nn.Linear(64, 10),
    )


def basicmotions_cnn() -> nn.Module:
    """1-D CNN for BasicMotions (6 channels x 100 steps, 4 classes): 3 conv layers + classifier
    (6,752 weights)."""
    return nn.Sequential(
        nn.Conv1d(6, 16, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2),  # 50
        nn.Conv1d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2),  # 25
        nn.Conv1d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool1d(5),  # 5
        nn.Flatten(), nn.Linear(32 * 5, 4),
    )


@dataclass(frozen=True)
class BuiltinModel:
    """A built-in model and its pre-training recipe."""

    factory: Callable[[], nn.Module]
    data: str  # the data set it trains on (opq_hw.data; digits-flat: digits as 64-vectors)
    example_shape: tuple[int, ...]  # a batch of one input
    pretrain_epochs: int  # pre-training epochs when no --weights are given


BUILTIN = {
    "digits-cnn": BuiltinModel(digits_cnn, "digits", (1, 1, 8, 8), pretrain_epochs=40),
    "digits-mlp": BuiltinModel(digits_mlp, "digits-flat", (1, 64), pretrain_epochs=40),
    "mnist1d-cnn": BuiltinModel(mnist1d_cnn, "mnist1d", (1, 1, 40), pretrain_epochs=60),
    "mnist28-lenet": BuiltinModel(mnist28_lenet, "mnist28", (1, 1, 28, 28), pretrain_epochs=15),
    "mnist28-resnet": BuiltinModel(mnist28_resnet, "mnist28", (1, 1, 28, 28), pretrain_epochs=15),
    "mnist28-mobilenet": BuiltinModel(mnist28_mobilenet, "mnist28", (1, 1, 28, 28), pretrain_epochs=15),
    "basicmotions-cnn": BuiltinModel(basicmotions_cnn, "basicmotions", (1, 6, 100), pretrain_epochs=60),
}


def model_from_onnx(path: str | Path, input_shape: tuple[int, ...] | None = None) -> nn.Module:
    """A float ONNX model, normalised by the ONNX front end (opq_hw.onnx_frontend), converted to
    PyTorch with onnx2torch."""
    from .onnx_frontend import load_onnx

    return load_onnx(path, input_shape).torch_model()


def build_model(ref: str, input_shape: tuple[int, ...] | None = None) -> nn.Module:
    """A float model from a built-in name, `package.module:factory`, or a path to a float .onnx."""
    if ref in BUILTIN:
        return BUILTIN[ref].factory()
    if ref.endswith(".onnx"):
        return model_from_onnx(ref, input_shape)
    if ":" in ref:
        mod, _, fn = ref.partition(":")
        try:
            factory = getattr(importlib.import_module(mod), fn)
        except (ImportError, AttributeError) as e:
            raise OpqError(f"cannot load model factory {ref!r} ({e}); give 'package.module:function' importable here") from e
        model = factory()
        if not isinstance(model, nn.Module):
            raise OpqError(f"{ref!r} returned {type(model).__name__}, not a torch.nn.Module")
        return model
    raise OpqError(f"unknown model {ref!r}; use one of {sorted(BUILTIN)}, 'module:factory' or a path/to/model.onnx")


def read_state_dict(path: str | Path, what: str = "checkpoint") -> dict:
    """A state_dict read with weights_only=True (never unpickle arbitrary objects); every failure is
    an OpqError naming the file (and not torch's advice to turn weights_only off)."""
    import pickle
    import zipfile

    path = Path(path)
    if not path.is_file():
        raise OpqError(f"{what} {str(path)!r} not found")
    fix = "save it with torch.save(model.state_dict(), path)"
    if path.stat().st_size == 0:
        raise OpqError(f"{what} {path.name} is empty (0 bytes); {fix}")
    if not zipfile.is_zipfile(path):  # torch.save has written zip archives since torch 1.6
        raise OpqError(f"{what} {path.name} cannot be read as a weights-only state_dict: it is not a torch checkpoint "
                       f"(no zip archive: truncated, or another format); {fix}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        why = str(e).strip().splitlines()[-1] if str(e).strip() else ""
        why = why if "weights_only" not in why and len(why) < 200 else ""
        raise OpqError(f"{what} {path.name} is not a weights-only state_dict (not loadable with weights_only=True): "
                       f"it holds Python objects other than tensors (a whole nn.Module, an optimizer, custom classes)"
                       f"{' - ' + why if why else ''}; opq-hw never unpickles them: {fix}") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, IndexError, KeyError, TypeError,
            AttributeError, UnicodeDecodeError, MemoryError) as e:
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise OpqError(f"{what} {path.name} cannot be read as a weights-only state_dict (truncated or not a torch "
                       f"file: {type(e).__name__}{': ' + first if first else ''}); {fix}") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise OpqError(f"{what} {path.name} holds a {type(state).__name__}, not a state_dict; {fix}")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise OpqError(f"{what} {path.name} is not a state_dict: entries {[str(k) for k in bad[:5]]} are not "
                       f"name -> tensor; {fix}")
    return state


MAX_VALUE = 1e6  # largest |value| in a float checkpoint (trained weights, biases and BN statistics are far below)


def check_state_dict(model: nn.Module, state: dict, name: str, keys: bool = True) -> None:
    """The state_dict fits the model: same keys (unless `keys=False`: Brevitas creates some of its
    quantizer keys on loading), shapes and finite floating values; the error names the first few
    missing, unexpected or mismatched keys."""
    want = model.state_dict()
    missing = [k for k in want if k not in state] if keys else []
    unexpected = [k for k in state if k not in want] if keys else []
    shapes = [f"{k} {tuple(state[k].shape)} (model {tuple(want[k].shape)})" for k in want
              if k in state and state[k].shape != want[k].shape]

    def few(xs):
        return ", ".join(xs[:5]) + (f" and {len(xs) - 5} more" if len(xs) > 5 else "")

    parts = ([f"missing keys: {few(missing)}"] if missing else []) + (
        [f"unexpected keys: {few(unexpected)}"] if unexpected else []) + ([f"wrong shapes: {few(shapes)}"] if shapes else [])
    if parts:
        raise OpqError(f"{name} does not match the model ({'; '.join(parts)}); give the checkpoint of this model")
    want = {k: v for k, v in want.items() if k in state}
    kinds = [k for k in want if want[k].is_floating_point() and not state[k].is_floating_point()]
    if kinds:
        raise OpqError(f"{name}: {few(kinds)} hold {state[kinds[0]].dtype} values where the model has floats")
    nonfinite = [k for k in want if state[k].is_floating_point() and not bool(torch.isfinite(state[k]).all())]
    if nonfinite:
        raise OpqError(f"{name} has NaN or Inf values in {few(nonfinite)}; fix the checkpoint (train it again)")
    huge = [k for k in want if keys and state[k].is_floating_point() and state[k].numel()
            and float(state[k].abs().max()) > MAX_VALUE]
    if huge:
        raise OpqError(f"{name} has values beyond {MAX_VALUE:g} in {few(huge)}: not a trained network's (fixed-point "
                       "scales and activations would overflow); fix the checkpoint")


def load_state(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a float state_dict with weights_only=True (never unpickle arbitrary objects)."""
    path = Path(path)
    state = read_state_dict(path)
    check_state_dict(model, state, f"checkpoint {path.name}")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise OpqError(f"checkpoint {path.name} does not match the model: {str(e).splitlines()[0][:300]}") from e
    return model
