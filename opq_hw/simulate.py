"""One simulation harness over several levels, each compared sample by sample with the Brevitas model.

A level is a function `(run, x_q, **opts) -> float32 logits (N, n_out)`, where `x_q` is already on
the input quantizer's grid in PyTorch layout (NCHW / NCL / NF); a level converts layouts itself.
Levels are "module:function" strings in `LEVELS` (qonnx here, the others from the flow registry
`opq_hw.flows`) and imported only when used, so `import opq_hw.simulate` pulls in neither qonnx nor
hls4ml. A flow's new level is one more entry in its `Flow.levels`.

`simulate(run_dir, level)` streams the run's test set through the level and the reference
(the Brevitas model in eval mode), and reports exact agreement per sample, the largest difference
in output LSBs, accuracy and throughput. It prints `bit-exact: yes|no`, writes the record to
`RUN/reports/simulate_<level>.json`, and returns it (`bit_exact` decides the CLI's exit code).
"""
from __future__ import annotations

import importlib
import inspect
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .artifact import dumps
from .equivalence import compare, reference
from .errors import OpqError
from .flows import levels as flow_levels
from .validate import read_npy

# the levels the flows provide come from their registry (opq_hw.flows); qonnx is the flows' common input
LEVELS: dict[str, str] = {"qonnx": "opq_hw.simulate:_run_qonnx", **flow_levels()}


def level_function(level: str) -> Callable[..., np.ndarray]:
    """The level's function, imported on demand."""
    if level not in LEVELS:
        raise OpqError(f"unknown simulation level {level!r}; choose one of {sorted(LEVELS)}")
    mod, _, fn = LEVELS[level].partition(":")
    try:
        return getattr(importlib.import_module(mod), fn)
    except (ImportError, AttributeError) as e:
        from .validate import TOOL_PACKAGES

        root = (getattr(e, "name", None) or "").split(".")[0]
        fix = f"; run `{TOOL_PACKAGES[root]}`" if root in TOOL_PACKAGES else ""
        raise OpqError(f"simulation level {level!r} ({LEVELS[level]}) is not available here: {e}{fix}") from e


def _run_qonnx(run, x_q: np.ndarray, batch: int = 256) -> np.ndarray:
    """Level "qonnx": qonnx's reference executor on the run's `model.qonnx.onnx`, in batches."""
    from .export import execute_qonnx

    return execute_qonnx(run.path / "model.qonnx.onnx", x_q, batch=batch).astype(np.float32).reshape(len(x_q), -1)


def output_lsb(run, x_q: np.ndarray) -> np.ndarray | None:
    """The LSB of each logit: (input scale of the last layer) x (its per-channel weight scale).

    In pow2 mode the logits are integers on this grid, so differences divide into whole LSBs.
    None when it cannot be read from the model (float activations).
    """
    import torch

    from .carrier import carried_layers

    last = carried_layers(run.qmodel).get(run.specs[-1].name)
    if last is None:
        return None
    seen: dict[str, Any] = {}

    def hook(_m, inputs):
        seen["x"] = inputs[0]

    iq = getattr(last, "input_quant", None)
    if iq is not None and getattr(iq, "is_quant_enabled", False):  # the layer quantizes its own input
        h = iq.register_forward_hook(lambda _m, _i, out: seen.__setitem__("x", out))
    else:
        h = last.register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            run.qmodel(torch.as_tensor(x_q[:1]))
    finally:
        h.remove()
    xs = getattr(seen.get("x"), "scale", None)
    if xs is None:
        return None
    with torch.no_grad():
        ws = last.quant_weight().scale.detach().reshape(-1)
    return (float(xs.reshape(-1)[0]) * ws).numpy().astype(np.float64)


def _inputs(run, data: str | os.PathLike | None, n: int | None) -> tuple[np.ndarray, np.ndarray | None, str, str | None]:
    """(x, labels or None, description, note) for the run: see `opq_hw.data.run_inputs`."""
    from .data import run_inputs

    return run_inputs(run, None if data is None else str(data), n, command="simulate")


def summary_line(res: dict[str, Any]) -> str:
    lsb = res.get("max_diff_lsb")
    acc = res.get("accuracy")
    if "within_tolerance" in res:  # a head in hardware (`--tail hw`): compared within its stated tolerance
        t = res["tail"]
        return (f"{res['level']}: {t['op']} head in hardware ({t['implementation']}): {res['within_samples']}/{res['n']} "
                f"samples within tolerance, max abs error {res['max_abs_diff']:.3g} (mean {res['mean_abs_diff']:.2g}), "
                f"argmax agreement {res['argmax_agreement'] * 100:.2f}%, accuracy "
                f"{'n/a' if acc is None else f'{acc * 100:.2f}%'}, {res['throughput_sps']:.0f} samples/s\n"
                f"within tolerance {res['tolerance']:.3g}: {'yes' if res['within_tolerance'] else 'no'}")
    return (f"{res['level']}: {res['exact_samples']}/{res['n']} samples exact, max diff "
            f"{'n/a' if lsb is None else f'{lsb:g}'} LSB ({res['max_abs_diff']:g}), "
            f"accuracy {'n/a' if acc is None else f'{acc * 100:.2f}%'}, {res['throughput_sps']:.0f} samples/s "
            f"(reference {res['ref_throughput_sps']:.0f}/s)\nbit-exact: {'yes' if res['bit_exact'] else 'no'}")


def simulate(run_dir: str | os.PathLike, level: str, data: str | None = None, n: int | None = None,
             write: bool = True, log: Callable[[str], Any] | None = print, **level_opts) -> dict[str, Any]:
    """Stream test inputs through `level` and compare with the Brevitas model, sample by sample.

    `data`: None (the run's own test data), a --data value (built-in name, .npz, module:function;
    see `opq_hw.data`), "golden", or a .npy of inputs (float, model layout; quantized here). `level_opts` go to the level (csim: backend, io, allow_inexact).
    """
    from .pipeline import quantize_input
    from .run import load_run

    fn = level_function(level)
    params = inspect.signature(fn).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        bad = sorted(set(level_opts) - set(params))
        if bad:
            raise OpqError(f"options {bad} do not apply to level {level!r}; it takes {sorted(set(params) - {'run', 'x_q', 'info'})}")
    from .data import require_run_data

    require_run_data(run_dir, "simulate")
    run = load_run(run_dir)
    x, y, desc, data_note = _inputs(run, data, n)
    x_q = quantize_input(run, x)
    t0 = time.perf_counter()
    ref = reference(run, x_q)
    t_ref = time.perf_counter() - t0
    info: dict[str, Any] = {}
    kwargs = dict(level_opts)
    if "info" in params:
        kwargs["info"] = info
    t0 = time.perf_counter()
    out = np.asarray(fn(run, x_q, **kwargs), dtype=np.float32).reshape(len(x_q), -1)
    t_level = time.perf_counter() - t0
    t_pred = info.get("predict_s", t_level)
    res: dict[str, Any] = {"level": level, "run": run.path.name, "data": desc, "scale_mode": run.allocation.scale_mode,
                           "options": {k: v for k, v in level_opts.items()}}
    tail = info.get("tail") or {}
    if tail.get("where") == "hardware":  # the level computed the head (`--tail hw`): within its stated tolerance
        from .tail import compare_tail

        res.update(compare_tail(ref, out, tail))
    else:
        res.update(compare(ref, out, output_lsb(run, x_q)))
    res["accuracy"] = float(np.mean(out.argmax(1) == y)) if y is not None else None
    res["ref_accuracy"] = float(np.mean(ref.argmax(1) == y)) if y is not None else None
    res["seconds"] = round(t_level, 4)
    res["throughput_sps"] = len(x_q) / t_pred if t_pred > 0 else float("inf")
    res["ref_throughput_sps"] = len(x_q) / t_ref if t_ref > 0 else float("inf")
    if info:
        res["level_info"] = info
    if data_note:
        res["data_note"] = data_note
    if run.allocation.scale_mode != "pow2":
        res["note"] = "float-scale run: the hardware levels are not expected to be bit-exact; the error is measured above"
    if write:
        from .rundir import write_outputs

        write_outputs(run.path, {f"reports/simulate_{level}.json": dumps(res).encode()})
    if log is not None:
        if data_note:
            log(f"note: {data_note}")
        log(summary_line(res))
    return res
