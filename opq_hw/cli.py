"""`opq-hw` command line: a thin layer over the pipeline functions."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

from . import validate as v
from .errors import OpqError
from .spec import DEFAULTS as D


DATA_HELP = ("built-in name (digits, mnist1d, mnist28, basicmotions), a .npz with x_train, y_train, x_test, y_test "
             "(or x, y: split 80/20, stratified, seed 0), or package.module:function returning them")

TAIL_HELP = ("a final Softmax/Sigmoid head: host (default; the hardware computes the outputs before it, compared "
             "bit-exactly) or hw (hls4ml computes it with lookup tables, compared within a stated tolerance)")


def _add_compress_args(p: argparse.ArgumentParser, demo: bool) -> None:
    p.add_argument("--out", default=None, type=v.out_dir_arg, help="run directory to write (default runs/<model>-<target>x)")
    p.add_argument("--model", default=D.model if demo else None, required=not demo,
                   help="built-in name (digits-cnn, digits-mlp, mnist1d-cnn, mnist28-lenet, mnist28-resnet, "
                        "mnist28-mobilenet, basicmotions-cnn), package.module:factory, or path/to/float_model.onnx")
    if demo:
        p.add_argument("--data", choices=["digits", "mnist1d"], default="digits", help="built-in data set")
    else:
        p.add_argument("--data", help=DATA_HELP + "; calibrates activations, finetunes, measures accuracy, gives the "
                       "golden test arrays (without it: weights only, activations not calibrated)")
    p.add_argument("--target-cr", type=v.target_cr_arg, default=D.target_cr,
                   help=f"target compression rate, > 1 (default {D.target_cr:g})")
    p.add_argument("--epochs", type=v.epochs_arg, default=D.epochs, help=f"finetune epochs, >= 0 (default {D.epochs})")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run with a different config")
    if demo:
        p.add_argument("--no-sim", action="store_true", help="skip the closing hls4ml C-simulation bit-exact check")
        return
    p.add_argument("--weights", help="float state_dict (.pt), loaded with weights_only=True")
    p.add_argument("--target-kind", choices=["cr_w", "cr_idx"], default=D.target_kind,
                   help="what --target-cr refers to: weights + side info (cr_w) or also a position bitmap (cr_idx)")
    p.add_argument("--method", choices=["opq", "uniform", "global-magnitude", "per-channel"], default=D.method)
    p.add_argument("--scale-mode", choices=["pow2", "float"], default=D.scale_mode,
                   help="pow2: power-of-two scales, bit-exact fixed point (default); float: paper-faithful float scales")
    p.add_argument("--weighting", choices=["relative", "mean", "total"],
                   help="layer weighting a_i: relative (1/sum w^2; opq's default), mean (1/N_i; the baselines') or total (1)")
    p.add_argument("--mask-order", choices=["magnitude", "channel-normalised"], default=D.mask_order, help="OPQ masks keep the largest raw |w| (default) or |w|/max|w_c| (old)")
    p.add_argument("--error-model", choices=["exact-gain-inner", "exact-gain", "exact", "laplace"], default=D.error_model, help="OPQ error: exact per-layer table up to a layer gain, bounded to [1/2, 2] at the first and last layer (default), unbounded (exact-gain, the previous default), exact, or Laplace closed forms (old)")
    p.add_argument("--sensitivity", choices=["none", "calib", "output-diag"], default=D.sensitivity,
                   help="layer weighting from data: none (data-free, default), calib (each layer's output change per unit "
                        "relative weight noise, measured on the calibration samples of --data, multiplies a_i) or "
                        "output-diag (each weight's error weighted by its input's mean square on those samples)")
    p.add_argument("--min-bits", type=v.bits_arg("--min-bits"), default=D.min_bits, help=f"2..16 (default {D.min_bits})")
    p.add_argument("--max-bits", type=v.bits_arg("--max-bits"), default=D.max_bits, help=f"2..16 (default {D.max_bits})")
    p.add_argument("--uniform-bits", type=v.bits_arg("--uniform-bits"), help="bit width (2..16) of the uniform / global-magnitude baselines")
    p.add_argument("--act-bits", type=v.act_bits_arg, default=D.act_bits, help="activation bits, 2..16 (0: float activations)")
    p.add_argument("--lr", type=v.lr_arg, default=D.lr, help="finetune learning rate, finite, 0 < lr <= 10")
    _add_recipe_args(p)
    p.add_argument("--seed", type=v.seed_arg, default=D.seed, help="0..2**32-1")
    p.add_argument("--input-shape", type=v.input_shape_arg, help="per-sample input shape, e.g. 1,8,8 (when no data gives it)")
    p.add_argument("--override", type=v.override_arg, action="append", default=[],
                   help="per-layer override LAYER_OR_GLOB:skip or LAYER_OR_GLOB:min_bits=6,max_bits=8,weight=2 (repeatable)")
    p.add_argument("--board", help="hardware-aware mode: fit this board (see `opq-hw boards`) instead of a rate")
    p.add_argument("--arch", default=D.arch, help="cost-model architecture for --board")
    p.add_argument("--fit", action="store_true", help="with --board: allocate to fit the board's limits")
    p.add_argument("--dequantize", action="store_true", help="an already-quantized ONNX model (QONNX Quant, QCDQ): "
                   "turn its quantized weights back into float ones (activation quantizers dropped) and proceed")


def _add_recipe_args(p: argparse.ArgumentParser) -> None:
    """The finetune recipe beyond --lr (the same for every --method)."""
    p.add_argument("--lr-schedule", choices=["constant", "cosine"], default=D.lr_schedule,
                   help=f"finetune learning rate over the steps: constant, or cosine decay to 0 (default {D.lr_schedule})")
    p.add_argument("--distill-weight", type=v.distill_weight_arg, default=D.distill_weight,
                   help="finetune loss (1-a)*CE + a*T^2*KL to the float model's softened outputs; a in 0..1 "
                        f"(default {D.distill_weight:g}: cross-entropy only)")
    p.add_argument("--distill-temperature", type=v.distill_temperature_arg, default=D.distill_temperature,
                   help=f"softmax temperature T of --distill-weight, > 0 (default {D.distill_temperature:g})")


def _config(args, demo: bool):
    from .pipeline import CompressConfig

    if demo:
        model = args.model if args.data != "mnist1d" or args.model != D.model else "mnist1d-cnn"
        return CompressConfig(model=model, data=args.data, target_cr=args.target_cr, epochs=args.epochs)
    v.compress_args(args)
    if args.board and not args.fit:
        raise OpqError("--board selects the hardware-aware mode; add --fit to allocate for the board's limits")
    return CompressConfig(
        model=args.model, weights=args.weights, data=args.data, target_cr=None if args.fit else args.target_cr,
        target_kind=args.target_kind, method=args.method, scale_mode=args.scale_mode, weighting=args.weighting,
        mask_order=args.mask_order, error_model=args.error_model, sensitivity=args.sensitivity,
        min_bits=args.min_bits, max_bits=args.max_bits, uniform_bits=args.uniform_bits,
        act_bits=args.act_bits or None, epochs=args.epochs if args.data else 0, lr=args.lr,
        lr_schedule=args.lr_schedule, distill_weight=args.distill_weight, distill_temperature=args.distill_temperature,
        seed=args.seed,
        input_shape=args.input_shape, overrides=dict(args.override), board=args.board if args.fit else None,
        arch=args.arch if args.fit else None, dequantize=args.dequantize)


def cmd_compress(args, demo: bool = False) -> int:
    from .pipeline import compress_run

    cfg = _config(args, demo)
    out = Path(args.out or f"runs/{Path(cfg.model).stem.replace(':', '-')}-{cfg.target_cr or 'fit'}x")
    compress_run(cfg, out, overwrite=args.overwrite, progress=sys.stderr.isatty())
    print(f"run written to {out}")
    if demo and not args.no_sim:
        res = _simulate(out, "csim")
        return 0 if res.get("bit_exact") else 1
    return 0


def _simulate(run, level, **kw) -> dict:
    from .simulate import simulate

    return simulate(run, level, **kw)


def cmd_finetune(args) -> int:
    from .ddp import options, summary
    from .ddp_launch import finetune_run

    rec = finetune_run(args.run, options(args), nproc=args.nproc, progress=sys.stderr.isatty())
    print(summary(rec))
    print(f"run {args.run} updated (manifest: finetunes)")
    return 0


def cmd_inspect(args) -> int:
    from .layers import inspect_model
    from .models import BUILTIN, build_model
    from .pipeline import CompressConfig, example_input

    if args.input_shape is None and not (args.model in BUILTIN or args.model.endswith(".onnx")):
        raise OpqError(f"give --input-shape C,H,W (per sample) for {args.model!r}: only built-in and ONNX models carry it")
    model = build_model(args.model).eval()
    example = example_input(CompressConfig(model=args.model, input_shape=args.input_shape), None)
    specs = inspect_model(model, example)
    if args.json:
        for s in specs:
            print(json.dumps(s.to_dict()))
        return 0
    from .inspection import flow_support, render_table

    print(render_table(specs, flow_support(model, example, specs)))
    return 0


def cmd_simulate(args) -> int:
    opts = {k: getattr(args, k) for k in ("backend", "io", "board", "allow_inexact", "rtl_arch", "tail")
            if getattr(args, k, None) is not None and (k, getattr(args, k)) != ("tail", "host")}
    with v.missing_tools(f"simulate --level {args.level}"):
        res = _simulate(args.run, args.level, data=args.data, n=args.n, **opts)
    return 0 if res.get("bit_exact") or res.get("within_tolerance") else 1


def cmd_build(args) -> int:
    from .data import require_run_data
    from .flows import cli_options, get_flow

    flow = get_flow(args.flow)
    options = flow.parse_options({kw["dest"]: getattr(args, kw["dest"], None) for kw in cli_options().values()})
    require_run_data(args.run, "build")
    with v.missing_tools(f"build --flow {args.flow}"):
        res = flow.build(args.run, board=args.board, options=options)
    return int(res.get("returncode", 0)) if isinstance(res, dict) else 0


def cmd_hil(args) -> int:
    from .flows.rtl_hil import run_hil

    with v.missing_tools("hil --port sim"):
        res = run_hil(args.run, args.port, baud=args.baud, n=args.n, data=args.data, timeout=args.timeout)
    return 0 if res["bit_exact"] else 1


def _add_flow_args(p: argparse.ArgumentParser) -> None:
    """`build`'s flow options, read from the flows' option dataclasses (opq_hw.flows)."""
    from .flows import cli_options

    for flag, kw in cli_options().items():
        kw = dict(kw)
        parts = kw.pop("help_parts")
        make = kw.pop("argtype", None)
        if make is not None:
            kw["type"] = make()
        p.add_argument(flag, help="; ".join(parts), **kw)


def cmd_flash(args) -> int:
    from .flash import flash

    flash(args.run, args.board, dry_run=args.dry_run)
    return 0


def cmd_boards(args) -> int:
    from .boards import list_boards, load_board

    if args.name:
        print(json.dumps(load_board(args.name).to_dict(), indent=1))
    else:
        for b in list_boards():
            print(b)
    return 0


def cmd_estimate(args) -> int:
    from .report import accuracy_lines, estimate_run, figures_line, one_line, part_cell

    rep = estimate_run(args.run, board=args.board, arch=args.arch)
    print(one_line(rep, args.run))
    print(figures_line(rep))
    for name, c in rep.parts.items():
        print(f"  {name} (in the totals): " + ", ".join(f"{r} {part_cell(rep, name, r)}" for r in ("LUT", "FF", "DSP", "BRAM18")
                                                     if c[r]))
    for line in accuracy_lines(rep):
        print(line)
    return 0


def cmd_report(args) -> int:
    from .report import report_run

    report_run(args.run)
    return 0


def cmd_sweep(args) -> int:
    import os

    from .sweep import SweepConfig, parse_names, parse_targets, sweep

    cfg = SweepConfig(model=args.model, data=args.data, targets=parse_targets(args.targets),
                      boards=parse_names(args.boards, "--boards"), arch=args.arch, epochs=args.epochs,
                      method=args.method, lr=args.lr, lr_schedule=args.lr_schedule, distill_weight=args.distill_weight,
                      distill_temperature=args.distill_temperature, seed=args.seed, weights=args.weights,
                      folding=args.folding)
    jobs = args.jobs if args.jobs is not None else min(os.cpu_count() or 1, len(cfg.targets))
    sweep(cfg, args.out, jobs=jobs, scheduler=args.scheduler, overwrite=args.overwrite)
    return 0


def _add_sweep_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="as `compress --model`")
    p.add_argument("--data", required=True, help=DATA_HELP)
    p.add_argument("--weights", help="float state_dict (.pt), loaded with weights_only=True")
    p.add_argument("--targets", required=True, help="target compression rates (CR_w), comma-separated, e.g. 5,10,20,40")
    p.add_argument("--boards", required=True, help="boards to estimate each point on, comma-separated (`opq-hw boards`)")
    p.add_argument("--arch", default=D.arch, help=f"cost-model architecture (default {D.arch})")
    p.add_argument("--folding", choices=["fastest-fit", "parallel"], default="fastest-fit",
                   help="per board: the fastest folding that fits (default) or fully parallel (reuse 1 / PE=MH, SIMD=MW)")
    p.add_argument("--epochs", type=v.epochs_arg, default=0, help="finetune epochs per point, >= 0 (default 0)")
    p.add_argument("--method", choices=["opq", "uniform", "global-magnitude", "per-channel"], default=D.method)
    p.add_argument("--lr", type=v.lr_arg, default=D.lr, help="finetune learning rate")
    _add_recipe_args(p)
    p.add_argument("--seed", type=v.seed_arg, default=D.seed, help="0..2**32-1")
    p.add_argument("--jobs", type=v.jobs_arg, help="points computed at once by the local process pool (default: "
                   "the CPU count, at most the number of targets)")
    p.add_argument("--scheduler", help="run the points on a Dask distributed cluster at this address (tcp://host:8786) "
                   "instead of the local pool; needs the optional extra opq-hw[dask] and DIR on a shared file system")
    p.add_argument("--out", required=True, type=v.out_dir_arg, help="sweep folder: points/<rate>/ runs, sweep.json, "
                   "sweep.csv, pareto.png, sweep.html; a finished point found there is reused")
    p.add_argument("--overwrite", action="store_true", help="compute the points of a sweep folder made with another "
                   "configuration again (a folder opq-hw did not make is never written into)")


def _add_trust_args(p: argparse.ArgumentParser) -> None:
    """A run never names code that opq-hw imports: a module:factory run's model is given again here."""
    p.add_argument("--model", help="module:factory of a run made from one (opq-hw never imports what a run names)")
    p.add_argument("--trust-run", action="store_true", help="import the module:factory recorded in the run")


def _version() -> str:
    from . import __version__

    return __version__


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="opq-hw", description="One-shot pruning-quantization to FPGA accelerators.")
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="pretrain a small model, compress it with OPQ, finetune, export, check C-sim")
    _add_compress_args(d, demo=True)
    d.set_defaults(func=lambda a: cmd_compress(a, demo=True))
    c = sub.add_parser("compress", help="compress a model into a run directory")
    _add_compress_args(c, demo=False)
    c.set_defaults(func=cmd_compress)
    f = sub.add_parser("finetune", help="finetune a run in place, on N local processes (PyTorch DDP); on a cluster: "
                       "torchrun --nproc-per-node N [--nnodes ...] -m opq_hw.finetune RUN")
    from .ddp import add_args as add_finetune_args

    add_finetune_args(f, local=True)
    f.set_defaults(func=cmd_finetune)
    i = sub.add_parser("inspect", help="print the layer specs of a model")
    i.add_argument("--model", required=True)
    i.add_argument("--input-shape", type=v.input_shape_arg)
    i.add_argument("--json", action="store_true", help="one JSON LayerSpec per line instead of the table")
    i.set_defaults(func=cmd_inspect)
    s = sub.add_parser("simulate", help="run a run's test set through a level and check bit-exactness")
    s.add_argument("run")
    s.add_argument("--level", required=True, help="qonnx | csim | rtl")
    s.add_argument("--data", help=DATA_HELP + "; or 'golden', or a .npy of inputs (default: the run's own test data)")
    s.add_argument("--n", type=v.count_arg, help="number of test samples, >= 1 (default all)")
    s.add_argument("--backend", choices=["Vitis", "Vivado"], help="csim: hls4ml backend (default Vitis)")
    s.add_argument("--io", choices=["parallel", "stream"], help="csim: hls4ml io type (default parallel)")
    s.add_argument("--board", help="csim: take reuse factors from the cost model for this board")
    s.add_argument("--allow-inexact", action="store_true", default=None, help="csim: accept a float-scale run, measure the error")
    s.add_argument("--rtl-arch", choices=["seq", "da4ml"], help="rtl: architecture (default: the build's, else seq)")
    s.add_argument("--tail", choices=["host", "hw"], help=TAIL_HELP)
    _add_trust_args(s)
    s.set_defaults(func=cmd_simulate)
    b = sub.add_parser("build", help="generate an accelerator project for a run")
    b.add_argument("run")
    from .flows import FLOWS

    b.add_argument("--flow", required=True, help=" | ".join(FLOWS))
    b.add_argument("--board", required=True)
    _add_flow_args(b)
    _add_trust_args(b)
    b.set_defaults(func=cmd_build)
    fl = sub.add_parser("flash", help="write a run's board bitstream (build --flow rtl --board B) onto the board")
    fl.add_argument("run")
    fl.add_argument("--board", required=True, help="the dev board the run was built for (icebreaker, ulx3s-85f, ecp5-evn)")
    fl.add_argument("--dry-run", action="store_true", help="print the programmer's command, run nothing")
    fl.set_defaults(func=cmd_flash)
    h = sub.add_parser("hil", help="hardware in the loop: test samples to a board top (or its Verilator twin, "
                                   "--port sim) over the serial link, the logits checked bit for bit")
    h.add_argument("run")
    h.add_argument("--port", required=True, help="serial port of the board (e.g. /dev/ttyUSB1), or 'sim': the "
                   "Verilator twin of the run's board top (UART pins included) behind a pseudo-terminal")
    h.add_argument("--baud", type=v.baud_arg, help="the bitstream's baud rate (default: build/rtl/board.json); with "
                   "--port sim any rate the board clock divides within 2%% (a faster twin)")
    h.add_argument("--n", type=v.count_arg, help="number of test samples, >= 1 (default all)")
    h.add_argument("--data", help=DATA_HELP + "; or 'golden', or a .npy of inputs (default: the run's own test data)")
    h.add_argument("--timeout", type=v.positive_arg("--timeout"), help="seconds to wait for each answer (default: "
                   "2 s plus the frame time on a board, 60 s or more for the twin)")
    _add_trust_args(h)
    h.set_defaults(func=cmd_hil)
    bo = sub.add_parser("boards", help="list boards, or show one")
    bo.add_argument("name", nargs="?")
    bo.set_defaults(func=cmd_boards)
    e = sub.add_parser("estimate", help="resource/latency estimate report for a run on a board")
    e.add_argument("run")
    e.add_argument("--board", required=True)
    e.add_argument("--arch", default=D.arch)
    e.set_defaults(func=cmd_estimate)
    r = sub.add_parser("report", help="estimates beside synthesis results found in the run")
    r.add_argument("run")
    r.set_defaults(func=cmd_report)
    sw = sub.add_parser("sweep", help="compress at several rates, estimate each on several boards, plot the trade-off")
    _add_sweep_args(sw)
    sw.set_defaults(func=cmd_sweep)
    return p


def main(argv: list[str] | None = None) -> int:
    import warnings

    # Known-harmless library chatter that would bury the tool's own output.
    warnings.filterwarnings("ignore", message="fast_hadamard_transform")
    warnings.filterwarnings("ignore", message="The GemmToMatMul transformation only offers")
    args = parser().parse_args(argv)
    return run_cli(lambda: run_command(args))




# ------------------------------------------------------------------------------------------------
# interrupts and crashes
# ------------------------------------------------------------------------------------------------
class Terminated(BaseException):
    """SIGTERM, raised like KeyboardInterrupt so every `with` block cleans up."""


def run_cli(func: Callable[[], int]) -> int:
    """Run a CLI command: OpqError -> `error: ...`, exit 2; Ctrl-C -> exit 130, SIGTERM -> 143 (temporary
    directories removed by their context managers); anything else is a bug: one line and a log file."""
    import os
    import signal
    import time
    import traceback

    from .artifact import write_bytes

    def on_term(signum, frame):
        raise Terminated()

    try:
        prev = signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread
        prev = None
    try:
        return int(func() or 0)
    except OpqError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C); temporary files removed, nothing half-written was left", file=sys.stderr)
        return 130
    except Terminated:
        print("terminated (SIGTERM); temporary files removed, nothing half-written was left", file=sys.stderr)
        return 143
    except Exception as e:  # noqa: BLE001 - the last resort: a bug
        from .pipeline import cache_dir

        log = cache_dir() / "logs" / f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        where = str(log)
        try:
            write_bytes(log, ("opq-hw " + " ".join(sys.argv[1:]) + "\n\n" + traceback.format_exc()).encode())
        except OSError:
            where = "(could not be written)"
        print(f"error: internal error, a bug in opq-hw ({type(e).__name__}: {str(e)[:200]}); the traceback is in "
              f"{where}: please report it", file=sys.stderr)
        return 1
    finally:
        if prev is not None:
            signal.signal(signal.SIGTERM, prev)


def run_command(args) -> int:
    """A CLI verb on an existing run holds the run's lock throughout (one command per run at a
    time) and builds a `module:factory` model only from what the user gave (--model / --trust-run)."""
    import contextlib

    from .run import model_source
    from .rundir import locked

    run = getattr(args, "run", None)
    ctx = locked(run) if run and Path(run).is_dir() else contextlib.nullcontext()
    with ctx, model_source(getattr(args, "model", None) if run else None, bool(getattr(args, "trust_run", False))):
        return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
