"""hls4ml flow: run directory -> QONNX -> hls4ml project, its C simulation, and its synthesis reports.

Path: the run's `model.qonnx.onnx` (Brevitas export) -> `fold_channel_scales` -> qonnx cleanup,
channels-last, Gemm->MatMul (as the hls4ml QONNX frontend docs prescribe) -> hls4ml
`convert_from_onnx_model`, every precision `auto` (inferred from the Quant nodes) except the input,
which is pinned to the input quantizer's exact fixed-point grid.

Per-output-channel weight scales. hls4ml 1.3.0 cannot convert a Quant node with a per-channel
scale on a weight (it fails inside `infer_precision`). OPQ's unified channel-wise quantization
has such scales, so before conversion every per-channel pow2 weight (and bias) quantizer is
folded into one per-tensor pow2 grid: with scales s_c = 2^e_c, e_min = min e_c and
k = max e_c - e_min, the weights q_c * s_c equal (q_c * 2^(e_c - e_min)) * 2^e_min exactly,
so the Quant node gets scale 2^e_min and bit width B + k, and its input is replaced by the
already-quantized values. The integer codebook of the layer does not change (a per-channel shift
of a constant operand is free in a constant multiplier); only the stored container widens from
B to B + k bits. The build records both (`opq_hls4ml.json`: `alloc_bits`, `shift_bits`,
`weight_precision`). Float (non-pow2) scales cannot be folded exactly: they raise an `OpqError`
unless `allow_inexact=True`, which re-rounds the weights onto a pow2 grid 4 bits finer than the
smallest scale (the measured error is then reported by the simulation harness).

All hls4ml / qonnx imports are inside functions (`import opq_hw` stays light).
"""
from __future__ import annotations

import contextlib
import io as io_mod
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..artifact import atomic_dir, read_json, write_bytes, write_json
from ..errors import OpqError

FLOW = "hls4ml"
BACKENDS = ("Vitis", "Vivado")
IO_TYPES = {"parallel": "io_parallel", "stream": "io_stream", "io_parallel": "io_parallel", "io_stream": "io_stream"}
PROJECT = "myproject"
BUILD_INFO = "opq_hls4ml.json"
INEXACT_EXTRA_BITS = 4  # allow_inexact: the re-rounding grid is this many bits finer than the smallest scale
DEFAULT_CLOCK_NS = 10.0  # used only when the board gives no clock


# --------------------------------------------------------------------------- options / board


def _backend(backend: str) -> str:
    for b in BACKENDS:
        if backend.lower() == b.lower():
            return b
    raise OpqError(f"unknown hls4ml backend {backend!r}; use one of {list(BACKENDS)} (--backend)")


def _io(io: str) -> str:
    if io not in IO_TYPES:
        raise OpqError(f"unknown hls4ml io type {io!r}; use 'parallel' or 'stream' (--io)")
    return IO_TYPES[io]


def _board_info(board: str | None, part: str | None = None, clock_period: float | None = None) -> dict[str, Any]:
    """Part and clock period from `board_configs/<board>.yaml` (via `opq_hw.boards`)."""
    info: dict[str, Any] = {"board": board, "part": part, "clock_period_ns": clock_period, "source": "arguments"}
    if board is not None:
        try:
            from ..boards import load_board
        except ImportError:
            load_board = None
        if load_board is None:
            if part is None:
                raise OpqError(f"board {board!r} cannot be looked up (opq_hw.boards is not available); pass part=... explicitly")
        else:
            try:
                b = load_board(board)
            except OpqError:
                raise
            except Exception as e:  # unknown board names are the board module's to report; make them user errors
                raise OpqError(f"unknown board {board!r} ({e}); list boards with `opq-hw boards`") from e
            info["part"] = part or getattr(b, "part", None)
            if clock_period is None:
                for attr, conv in (("clock_period_ns", lambda v: v), ("clock_ns", lambda v: v), ("clock_mhz", lambda v: 1e3 / v),
                                   ("fclk_mhz", lambda v: 1e3 / v), ("clock_hz", lambda v: 1e9 / v)):
                    v = getattr(b, attr, None)
                    if v:
                        info["clock_period_ns"] = round(float(conv(v)), 4)
                        break
            info["source"] = f"board_configs/{board}.yaml"
    if info["clock_period_ns"] is None:
        info["clock_period_ns"] = DEFAULT_CLOCK_NS
    return info


def _reuse_factors(run, board: str | None, reuse: int | dict[str, int] | None,
                   strategy: str = "latency") -> tuple[dict[str, int], str]:
    """Reuse factor per allocated layer: explicit > allocation's `reuse_factor` > cost model > 1."""
    names = [s.name for s in run.specs if not run.allocation.layer(s.name).skipped]
    if isinstance(reuse, int):
        return {n: reuse for n in names}, "argument"
    if isinstance(reuse, dict):
        unknown = set(reuse) - set(names)
        if unknown:
            raise OpqError(f"reuse factors for unknown layers {sorted(unknown)}; layers are {names}")
        return {n: int(reuse.get(n, 1)) for n in names}, "argument"
    from_alloc = {n: run.allocation.layer(n).reuse_factor for n in names}
    if all(v for v in from_alloc.values()):
        return {n: int(v) for n, v in from_alloc.items()}, "allocation"
    if board is None:
        return {n: 1 for n in names}, "fallback 1 (no board given, so no cost model)"
    try:
        from ..cost import choose_folding
    except ImportError:
        return {n: 1 for n in names}, "fallback 1 (no cost model available)"
    arch = f"hls4ml-{strategy}"
    act_bits = run.config.get("act_bits", 8)
    try:
        folding, source = choose_folding(run.specs, run.allocation, board, arch, act_bits=act_bits), f"cost model ({arch})"
    except OpqError as e:  # nothing fits: still write the most folded design, and say so
        folding = choose_folding(run.specs, run.allocation, board, arch, act_bits=act_bits, strict=False)
        source = f"cost model ({arch}), most folded; it does not fit: {e}"
    return {n: int(folding.get(n, {}).get("reuse_factor", 1)) for n in names}, source


# --------------------------------------------------------------------------- QONNX preparation


def _attr(node, name: str, default=None):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            v = helper.get_attribute_value(a)
            return v.decode() if isinstance(v, bytes) else v
    return default


def _pow2_exponents(s: np.ndarray) -> np.ndarray | None:
    """Integer exponents e with s == 2**e exactly, or None when some entry is not a positive power of two."""
    s = np.asarray(s, dtype=np.float64)
    if np.any(s <= 0) or not np.all(np.isfinite(s)):
        return None
    mant, ex = np.frexp(s)
    if not np.all(mant == 0.5):
        return None
    return (ex - 1).astype(np.int64)


def fold_channel_scales(model, allow_inexact: bool = False):
    """qonnx-style transformation: per-channel weight/bias Quant nodes -> one per-tensor pow2 grid.

    Returns `(model, changed, records)`; `records` has one dict per folded Quant node
    (tensor, bits in/out, shift, exact, max weight error). Activation Quant nodes with non-pow2
    scales raise `OpqError` unless `allow_inexact` (hls4ml then inserts float rescaling).
    """
    from qonnx.custom_op.general.quant import quant

    inits = {i.name for i in model.graph.initializer}
    records: list[dict[str, Any]] = []
    changed = False
    for n in model.graph.node:
        if n.op_type != "Quant":
            continue
        scale = model.get_initializer(n.input[1])
        zeropt = model.get_initializer(n.input[2])
        bw = model.get_initializer(n.input[3])
        if scale is None or zeropt is None or bw is None:
            raise OpqError(f"Quant node {n.name!r} has non-constant scale/zero-point/bit width; hls4ml needs constants "
                           "(re-export the run with `opq-hw compress`)")
        if np.any(zeropt != 0):
            raise OpqError(f"Quant node {n.name!r} has a non-zero zero point; only symmetric quantizers map to hls4ml exactly")
        exps = _pow2_exponents(scale)
        is_const = n.input[0] in inits
        if not is_const:  # an activation quantizer
            if exps is None or len(set(exps.reshape(-1).tolist())) > 1:
                if not allow_inexact:
                    raise OpqError(f"activation quantizer {n.name!r} has a non-power-of-two or per-channel scale "
                                   f"{np.asarray(scale).reshape(-1)[:4].tolist()}: hls4ml fixed point cannot compute it exactly. "
                                   "Compress with scale_mode='pow2' (the hardware mode), or pass --allow-inexact to accept "
                                   "float rescaling and have the error measured")
            continue
        if scale.size == 1 and exps is not None:
            continue  # per-tensor pow2: hls4ml handles it exactly
        signed, narrow, rmode = int(_attr(n, "signed", 1)), int(_attr(n, "narrow", 0)), _attr(n, "rounding_mode", "ROUND")
        w = model.get_initializer(n.input[0])
        wq = quant(w.astype(np.float32), scale, zeropt, bw, signed, narrow, rmode).astype(np.float64)
        bits = int(np.asarray(bw).item())
        if exps is not None:
            k = int(exps.max() - exps.min())
            step = 2.0 ** int(exps.min())
            new_w = wq.astype(np.float32)
            new_bits = bits + k
            exact = True
        else:
            if not allow_inexact:
                raise OpqError(f"weight quantizer {n.name!r} has non-power-of-two scales (e.g. "
                               f"{np.asarray(scale).reshape(-1)[:3].tolist()}): its fixed-point hardware cannot be bit-exact. "
                               "Compress with scale_mode='pow2' (the hardware mode), or pass --allow-inexact to re-round "
                               "the weights onto a pow2 grid and have the error measured")
            step = 2.0 ** (math.floor(math.log2(float(np.min(scale)))) - INEXACT_EXTRA_BITS)
            ints = np.round(wq / step)
            new_w = (ints * step).astype(np.float32)
            k = None
            new_bits = max(2, int(math.ceil(math.log2(float(np.abs(ints).max()) + 1))) + 1)
            narrow = 0
            exact = False
            for a in n.attribute:
                if a.name == "narrow":
                    a.i = 0
        model.set_initializer(n.input[0], new_w)
        sname, bname = f"{n.name}_folded_scale", f"{n.name}_folded_bits"
        model.set_initializer(sname, np.array(step, dtype=np.float32))
        model.set_initializer(bname, np.array(float(new_bits), dtype=np.float32))
        n.input[1], n.input[3] = sname, bname
        records.append({"node": n.name, "tensor": n.input[0], "bits_in": bits, "bits_out": new_bits,
                        "shift_bits": k, "step": step, "exact": exact,
                        "max_abs_error": float(np.abs(new_w.astype(np.float64) - wq).max())})
        changed = True
    return model, changed, records


def prepare_qonnx(onnx_path: str | os.PathLike, allow_inexact: bool = False):
    """The run's QONNX graph made ready for hls4ml: folded scales, cleaned, channels-last, MatMul."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
    from qonnx.transformation.gemm_to_matmul import GemmToMatMul
    from qonnx.util.cleanup import cleanup_model

    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise OpqError(f"{onnx_path} not found; the run directory must hold model.qonnx.onnx (re-create it with `opq-hw compress`)")
    model = ModelWrapper(str(onnx_path))
    model = cleanup_model(model)
    model, _, records = fold_channel_scales(model, allow_inexact=allow_inexact)
    model = cleanup_model(model)
    model = model.transform(ConvertToChannelsLastAndClean())
    model = model.transform(GemmToMatMul())
    model = cleanup_model(model)
    return model, records


def _input_precision(model) -> str | None:
    """The exact fixed-point type of the input quantizer (the first Quant on the graph input's path)."""
    consumers = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    t = model.graph.input[0].name
    for _ in range(8):  # walk through layout-only nodes (Transpose/Reshape) to the first Quant
        nodes = consumers.get(t, [])
        if len(nodes) != 1:
            return None
        n = nodes[0]
        if n.op_type == "Quant":
            exps = _pow2_exponents(model.get_initializer(n.input[1]))
            if exps is None or exps.size != 1:
                return None
            bits = int(np.asarray(model.get_initializer(n.input[3])).item())
            signed = int(_attr(n, "signed", 1))
            integer = bits + int(exps.item())
            return f"fixed<{bits},{integer}>" if signed else f"ufixed<{bits},{integer}>"
        if n.op_type not in ("Transpose", "Reshape", "Flatten", "Identity"):
            return None
        t = n.output[0]
    return None


# --------------------------------------------------------------------------- conversion


@contextlib.contextmanager
def _pool1d_fix():
    """Work around hls4ml 1.3.0's ONNX parser for 1-D pooling (MaxPool/AveragePool on (N, L, C)).

    Its handler reads n_filt / n_in from the channels-first positions of a channels-last shape and
    never sets pad_left / pad_right, so conversion fails ("Attribute pad_left ... not set"). While
    converting, the handler is wrapped to set them from the channels-last shape (L = shape[1],
    C = shape[2]) and the ONNX `pads`; the 2-D case passes through unchanged.
    """
    import importlib

    handlers = importlib.import_module("hls4ml.converters.onnx_to_hls").layer_handlers
    saved = {op: handlers.get(op) for op in ("MaxPool", "AveragePool")}

    def wrap(orig):
        def handler(node, input_names, input_shapes, graph):
            layer = orig(node, input_names, input_shapes, graph)
            if len(input_shapes[0]) == 3:
                pads = list(layer.get("pads") or [0, 0])
                dil = (layer.get("dilations") or [1])[0]
                layer["n_in"], layer["n_filt"] = int(input_shapes[0][1]), int(input_shapes[0][2])
                layer["pad_left"], layer["pad_right"] = int(pads[0]), int(pads[-1])
                k, st = layer["pool_width"], layer["stride_width"]
                layer["n_out"] = int((layer["n_in"] + layer["pad_left"] + layer["pad_right"] - ((k - 1) * dil + 1)) // st + 1)
            return layer

        return handler

    for op, orig in saved.items():
        if orig is not None:
            handlers[op] = wrap(orig)
    try:
        yield
    finally:
        for op, orig in saved.items():
            if orig is not None:
                handlers[op] = orig


def _weight_layers(hm) -> list:
    return [layer for layer in hm.get_layers() if "weight" in layer.weights]


def convert(run, out_dir: str | os.PathLike, *, backend: str = "Vitis", io: str = "parallel", part: str | None = None,
            clock_period: float | None = None, reuse: dict[str, int] | None = None, allow_inexact: bool = False,
            strategy: str = "latency"):
    """An hls4ml ModelGraph for the run (not yet written). Returns `(hls_model, info)`."""
    import hls4ml

    backend, io_type = _backend(backend), _io(io)
    if run.allocation.scale_mode != "pow2" and not allow_inexact:
        raise OpqError(f"run {run.path.name!r} uses {run.allocation.scale_mode!r} scales: fixed-point hardware cannot "
                       "compute it bit-exactly. Compress with scale_mode='pow2' (the hardware mode), or pass "
                       "--allow-inexact to build it anyway and have the error measured")
    model, records = prepare_qonnx(run.path / "model.qonnx.onnx", allow_inexact=allow_inexact)
    chatter = io_mod.StringIO()
    with contextlib.redirect_stdout(chatter):
        cfg = hls4ml.utils.config.config_from_onnx_model(model, granularity="name", backend=backend,
                                                          default_precision="fixed<16,6>", default_reuse_factor=1)
    in_name = model.graph.input[0].name
    in_prec = _input_precision(model)
    if in_prec is not None:
        cfg["LayerName"].setdefault(in_name, {}).setdefault("Precision", {})["result"] = in_prec
    kwargs: dict[str, Any] = dict(output_dir=str(out_dir), project_name=PROJECT, backend=backend, io_type=io_type,
                                  hls_config=cfg)
    if part:
        kwargs["part"] = part
    if clock_period:
        kwargs["clock_period"] = clock_period
    weight_nodes = [n for n in model.graph.node if n.op_type in ("Conv", "MatMul", "Gemm")]
    skipped = [s.name for s in run.specs if run.allocation.layer(s.name).skipped]
    if skipped and not allow_inexact:
        raise OpqError(f"layers {skipped} were skipped by the allocation and keep float weights: hls4ml would store them "
                       "in a default fixed-point type, not bit-exactly. Allocate every layer, or pass --allow-inexact")
    names = [s.name for s in run.specs]
    if strategy not in ("latency", "resource"):
        raise OpqError(f"unknown hls4ml strategy {strategy!r}; use 'latency' or 'resource' (--strategy)")
    cfg["Model"]["Strategy"] = strategy.capitalize()
    if len(weight_nodes) != len(names):
        raise OpqError(f"the QONNX graph has {len(weight_nodes)} conv/linear nodes but the allocation {len(names)} layers; "
                       "re-export the run")
    if reuse:
        for node, name in zip(weight_nodes, names):
            cfg["LayerName"].setdefault(node.name, {})["ReuseFactor"] = int(reuse[name])
    try:
        with contextlib.redirect_stdout(chatter), _pool1d_fix():  # hls4ml prints its topology; keep its warnings
            hm = hls4ml.converters.convert_from_onnx_model(model, **kwargs)
    except OpqError:
        raise
    except Exception as e:
        kinds = sorted({n.op_type for n in model.graph.node})
        raise OpqError(f"hls4ml could not convert the run's QONNX graph ({type(e).__name__}: {str(e)[:300]}); "
                       f"node types present: {kinds}. Layers hls4ml supports through QONNX: Conv, MatMul/Gemm, Relu, "
                       "MaxPool, Flatten/Reshape, Quant") from e
    layers = _weight_layers(hm)
    if len(layers) != len(names):
        raise OpqError(f"hls4ml produced {len(layers)} weight layers but the allocation has {len(names)}: "
                       f"{[lay.name for lay in layers]} vs {names}")
    per_layer = []
    producers = {o: n for n in model.graph.node for o in n.output}
    for lay, name, node in zip(layers, names, weight_nodes):
        la = run.allocation.layer(name)
        w = lay.weights["weight"]
        prec = w.type.precision
        data = np.asarray(w.data)
        wq = producers.get(node.input[1])
        qbits = int(np.asarray(model.get_initializer(wq.input[3])).item()) if wq is not None and wq.op_type == "Quant" else None
        acc = lay.get_attr("accum_t")
        res = lay.get_output_variable().type.precision
        per_layer.append({
            "layer": name, "hls_layer": lay.name, "class": lay.class_name, "alloc_bits": la.bits,
            "quant_bits": qbits, "shift_bits": (qbits - la.bits) if qbits is not None else None,
            "weight_precision": str(prec.definition_cpp()) if hasattr(prec, "definition_cpp") else str(prec),
            "weight_width": int(prec.width), "weight_file": f"firmware/weights/{w.name}.txt",
            "n_weights": int(data.size), "n_zero": int(np.sum(data == 0)),
            "alloc_n_pruned": int(la.n_weights - la.n_nonzero),
            "accum_precision": str(acc.precision.definition_cpp()) if acc is not None and hasattr(acc, "precision") else None,
            "result_precision": str(res.definition_cpp()) if hasattr(res, "definition_cpp") else str(res),
            "reuse_factor": int(lay.get_attr("reuse_factor", 1)),
        })
    info = {"backend": backend, "io_type": io_type, "input_precision": in_prec, "folded_quant_nodes": records,
            "layers": per_layer, "exact": all(r["exact"] for r in records) and run.allocation.scale_mode == "pow2"
            and not skipped, "hls4ml_warnings": [ln for ln in chatter.getvalue().splitlines() if "WARN" in ln.upper()]}
    return hm, info


# --------------------------------------------------------------------------- synthesis commands


def synth_command(backend: str) -> tuple[str, str]:
    """(tool binary, command line run inside the project folder) for synthesis (C-synth, no csim)."""
    backend = _backend(backend)
    if backend == "Vitis":
        return "vitis-run", "vitis-run --tcl build_prj.tcl --mode hls"
    return "vivado_hls", ('vivado_hls -f build_prj.tcl "reset=1 csim=0 synth=1 cosim=0 validation=0 export=0 '
                          'vsynth=0 fifo_opt=0"')


_BUILD_OPT_TCL = ("array set opt {\n    reset      1\n    csim       0\n    synth      1\n    cosim      0\n"
                  "    validation 0\n    export     0\n    vsynth     0\n    fifo_opt   0\n}\n")


def _fix_paths(root: Path, old: str, new: str) -> None:
    """hls4ml writes its output dir into a few text files; after the atomic rename, point them at the final path."""
    for p in root.rglob("*"):
        if p.is_file() and p.suffix in (".yml", ".tcl", ".json", ".txt", ".sh") and p.stat().st_size < 2_000_000:
            try:
                s = p.read_text()
            except UnicodeDecodeError:
                continue
            if old in s:
                write_bytes(p, s.replace(old, new).encode())


def build(run_dir: str | os.PathLike, board: str | None = None, backend: str = "Vitis", io: str = "parallel",
          synth: bool = False, allow_inexact: bool = False, part: str | None = None, clock_period: float | None = None,
          reuse: int | dict[str, int] | None = None, strategy: str = "latency", log=print,
          **unsupported) -> dict[str, Any]:
    """Write the hls4ml project for a run into `RUN/build/hls4ml/` (atomically) and describe it.

    `synth=True` runs the vendor HLS tool when it is on PATH; when it is not, the project is still
    written and an `OpqError` gives the exact command to run on a machine that has the tool.
    Returns the build record (also written to `build/hls4ml/opq_hls4ml.json`).
    """
    from ..pipeline import load_run

    unsupported = {k: v for k, v in unsupported.items() if v is not None}
    if unsupported:
        raise OpqError(f"options {sorted(unsupported)} do not apply to the hls4ml flow; its options are backend, io, "
                       "synth, allow_inexact, part, clock_period, reuse")
    if strategy not in ("latency", "resource"):
        raise OpqError(f"unknown hls4ml strategy {strategy!r}; use 'latency' or 'resource' (--strategy)")
    run = load_run(run_dir)
    binfo = _board_info(board, part, clock_period)
    rf, rf_source = _reuse_factors(run, board, reuse, strategy)
    final = run.path / "build" / FLOW
    t0 = time.perf_counter()
    with atomic_dir(final) as tmp:
        hm, info = convert(run, tmp, backend=backend, io=io, part=binfo["part"], clock_period=binfo["clock_period_ns"],
                           reuse=rf, allow_inexact=allow_inexact, strategy=strategy)
        with contextlib.redirect_stdout(io_mod.StringIO()):
            hm.write()
        write_bytes(tmp / "build_opt.tcl", _BUILD_OPT_TCL.encode())
        _fix_paths(tmp, str(tmp), str(final))
        tool, cmd = synth_command(info["backend"])
        record = {"flow": FLOW, "run": run.path.name, **info, **binfo, "reuse_source": rf_source,
                  "project": PROJECT, "synth_tool": tool, "synth_command": f"cd build/{FLOW} && {cmd}",  # from the run directory
                  "convert_s": round(time.perf_counter() - t0, 3)}
        size = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file())
        record["project_bytes"] = size
        record["project_files"] = sum(1 for p in tmp.rglob("*") if p.is_file())
        write_json(tmp / BUILD_INFO, record)
    log(f"hls4ml project ({info['backend']}, {info['io_type']}, part {binfo['part']}) written to {final}")
    for r in info["layers"]:
        log(f"  {r['layer']:<12} {r['weight_precision']:<24} alloc {r['alloc_bits']} bits (+{r['shift_bits']} shift), "
            f"zeros {r['n_zero']}/{r['n_weights']}, reuse {r['reuse_factor']}")
    if synth:
        if shutil.which(tool) is None:
            raise OpqError(f"{tool} is not on PATH, so synthesis cannot run here. The project is written; on a machine "
                           f"with {info['backend']} HLS run:\n  cd {final} && {cmd}\nthen copy build/{FLOW}/ back into the run and "
                           f"run `opq-hw report {run.path}`")
        import subprocess

        t1 = time.perf_counter()
        with open(final / "synth_stdout.log", "w") as out:
            proc = subprocess.run(cmd, shell=True, cwd=final, stdout=out, stderr=subprocess.STDOUT)
        record["synth_s"] = round(time.perf_counter() - t1, 1)
        record["synth_returncode"] = proc.returncode
        write_json(final / BUILD_INFO, record)
        if proc.returncode != 0:
            raise OpqError(f"{tool} failed (exit {proc.returncode}); see {final / 'synth_stdout.log'}")
        record["report"] = report(run.path)
    return record


def report(run_dir: str | os.PathLike, write: bool = True) -> dict[str, Any]:
    """Synthesis results of `build/hls4ml/` (read with `hls4ml.report`) next to the cost model's estimate.

    Reads the HLS C-synthesis report (`myproject_prj/solution1/syn/report/myproject_csynth.xml`)
    and, when present, the Vivado post-synthesis utilisation (`vivado_synth.rpt`, preferred as the
    measurement). Writes `build/hls4ml/resources.json` (the measurement `opq-hw report` compares
    with `cost.json`) and `reports/hls4ml_synth.json` (both side by side).
    """
    run_dir = Path(run_dir)
    prj = run_dir / "build" / FLOW
    if not (prj / "project.tcl").is_file():
        raise OpqError(f"no hls4ml project in {prj}; run `opq-hw build {run_dir} --flow hls4ml --board BOARD` first")
    from hls4ml.report import parse_vivado_report

    with contextlib.redirect_stdout(io_mod.StringIO()):
        rep = parse_vivado_report(str(prj)) or {}
    csynth = rep.get("CSynthesisReport") or {}
    vsynth = rep.get("VivadoSynthReport") or {}
    if not csynth and not vsynth:
        info = read_json(prj / BUILD_INFO) if (prj / BUILD_INFO).is_file() else {}
        cmd = info.get("synth_command", "the synthesis command in build/hls4ml/opq_hls4ml.json")
        raise OpqError(f"no synthesis report in {prj} (expected myproject_prj/solution1/syn/report/myproject_csynth.xml). "
                       f"Run `opq-hw build {run_dir} --flow hls4ml --board BOARD --synth` where the vendor tool is installed, "
                       f"or run `{cmd}` there (from the run directory) and copy build/hls4ml/ back")
    keys = {"LUT": "LUT", "FF": "FF", "DSP": "DSP", "DSP48E": "DSP", "BRAM_18K": "BRAM18", "URAM": "URAM"}

    def pick(d):
        return {ours: _num(d[k]) for k, ours in keys.items() if k in d}

    hls_est, post_synth = pick(csynth), pick(vsynth)
    measured = post_synth or hls_est
    source = "Vivado post-synthesis utilisation (vivado_synth.rpt)" if post_synth else "HLS C-synthesis estimate (csynth.xml)"
    timing = {k: _num(csynth[k]) for k in ("TargetClockPeriod", "EstimatedClockPeriod", "BestLatency", "WorstLatency",
                                            "IntervalMin", "IntervalMax") if k in csynth}
    estimated = None
    cost_path = run_dir / "cost.json"
    if cost_path.is_file():
        cost = read_json(cost_path)
        totals = cost.get("totals", {})
        estimated = {r: totals.get(r) for r in ("LUT", "FF", "DSP", "BRAM18", "URAM")}
        estimated["arch"], estimated["board"] = cost.get("arch"), cost.get("board")
    rows = []
    for r in ("LUT", "FF", "DSP", "BRAM18", "URAM"):
        m = measured.get(r)
        e = estimated.get(r) if estimated else None
        rows.append({"resource": r, "estimated": e, "hls_csynth": hls_est.get(r), "post_synth": post_synth.get(r),
                     "rel_error": (round((e - m) / m, 4) if (isinstance(e, (int, float)) and isinstance(m, (int, float)) and m)
                                   else None)})
    out = {"flow": FLOW, "source": source, "measured": measured, "hls_csynth": hls_est, "post_synth": post_synth or None,
           "estimated": estimated, "timing": timing, "side_by_side": rows,
           "available": {k[len("Available"):]: _num(v) for k, v in csynth.items() if k.startswith("Available")}}
    if write:
        write_json(prj / "resources.json", {**measured, "source": f"hls4ml {source}"})
        write_json(run_dir / "reports" / "hls4ml_synth.json", out)
    return out


def _num(v):
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v
    return int(f) if f.is_integer() else f


# --------------------------------------------------------------------------- C simulation


def _predict_layout(hm, x_q: np.ndarray) -> np.ndarray:
    """PyTorch layout (N,C,H,W / N,C,L / N,F) -> what the compiled model's input expects."""
    shape = tuple(hm.get_input_variables()[0].shape)
    per = x_q.shape[1:]
    if x_q.ndim == 2 or shape == tuple(per):
        x = x_q
    elif x_q.ndim == 4 and shape == (per[1], per[2], per[0]):
        x = x_q.transpose(0, 2, 3, 1)
    elif x_q.ndim == 3 and shape == (per[1], per[0]):
        x = x_q.transpose(0, 2, 1)
    else:
        raise OpqError(f"input of shape {per} (PyTorch layout) does not fit the hls4ml model input {shape}")
    return np.ascontiguousarray(x.reshape(len(x), -1), dtype=np.float32)


def compile_csim(run, out_dir: str | os.PathLike, *, backend: str = "Vitis", io: str = "parallel",
                 allow_inexact: bool = False, board: str | None = None, reuse: int | dict[str, int] | None = None,
                 strategy: str = "latency"):
    """Write and compile (g++) the hls4ml C simulation of a run into `out_dir`. Returns `(hls_model, info)`.

    With `board` (or `reuse`) the reuse factors are the ones `build` would use (cost model)."""
    t0 = time.perf_counter()
    rf, rf_source = _reuse_factors(run, board, reuse, strategy) if (board or reuse) else (None, "1 (default)")
    hm, info = convert(run, out_dir, backend=backend, io=io, allow_inexact=allow_inexact, reuse=rf, strategy=strategy)
    info["reuse_source"] = rf_source
    t1 = time.perf_counter()
    if shutil.which("g++") is None:
        raise OpqError("g++ is not on PATH; the hls4ml C simulation needs it (Debian: apt-get install g++)")
    try:
        with contextlib.redirect_stdout(io_mod.StringIO()):
            hm.compile()
    except Exception as e:
        raise OpqError(f"compiling the hls4ml C simulation failed ({type(e).__name__}: {str(e)[:300]}); "
                       f"the project is in {out_dir}") from e
    info["convert_s"] = round(t1 - t0, 3)
    info["compile_s"] = round(time.perf_counter() - t1, 3)
    return hm, info


def predict_csim(hm, x_q: np.ndarray, n_out: int | None = None) -> np.ndarray:
    """Run the compiled C simulation on inputs on the input grid, PyTorch layout; float32 (N, n_out)."""
    x = _predict_layout(hm, np.asarray(x_q, dtype=np.float32))
    y = np.asarray(hm.predict(x), dtype=np.float32)
    return y.reshape(len(x_q), -1) if n_out is None else y.reshape(len(x_q), n_out)


def simulate_csim(run, x_q: np.ndarray, backend: str = "Vitis", io: str = "parallel", allow_inexact: bool = False,
                  board: str | None = None, reuse: int | dict[str, int] | None = None, strategy: str = "latency",
                  keep: str | os.PathLike | None = None, info: dict | None = None) -> np.ndarray:
    """Simulation level "csim": hls4ml's compiled C simulation (g++, no vendor tool).

    Compiles in a temporary folder (or `keep`); `info`, when given, receives compile timings and
    the per-layer precision record.
    """
    tmp = None
    out_dir = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="opq-hls4ml-csim-"))
    if not keep:
        tmp = out_dir
    try:
        hm, cinfo = compile_csim(run, out_dir, backend=backend, io=io, allow_inexact=allow_inexact, board=board,
                                 reuse=reuse, strategy=strategy)
        t0 = time.perf_counter()
        y = predict_csim(hm, x_q)
        cinfo["predict_s"] = round(time.perf_counter() - t0, 4)
        if info is not None:
            info.update(cinfo)
        return y
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
