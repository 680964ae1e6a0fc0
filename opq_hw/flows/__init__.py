"""The flows: one registry, name -> `Flow`.

A flow turns a run directory into an accelerator project (`build`), may provide simulation levels
(`levels`: level name -> "module:function", see `opq_hw.simulate`), and may read a tool's reports
back into `build/<flow>/resources.json` (`read_resources`, used by `opq_hw.report`). Its options are
one dataclass (`options`): every field documented, defaults stated once, checked in
`__post_init__`; the CLI's `build` flags, their `--help` text and the "do not apply to the X flow"
errors are all read from these dataclasses.

This module is light: a flow's module (hls4ml, FINN driver, RTL generators) is imported only when
one of its functions runs, so `import opq_hw` and `opq-hw --help` load none of them.

Adding a flow: write `opq_hw/flows/<name>_flow.py` with `build(run_dir, board=..., log=print,
**options)` (parse them with `FLOWS[name].parse_options`), define its options dataclass here and
add one `Flow` to `FLOWS`.
"""
from __future__ import annotations

import dataclasses
import importlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from ..errors import OpqError


def option(default: Any = None, *, help: str, flag: str | None = None, choices: tuple | None = None,
           argtype: Callable[[], Callable[[str], Any]] | None = None, action: str | None = None,
           misplaced: str | None = None) -> Any:
    """A flow option: a dataclass field with its documentation.

    flag: the `opq-hw build` flag (None: Python API only); choices / argtype (a factory of the
    argparse type) / action ("store_true", "store_false") say how the CLI reads it. misplaced: the
    explanation given when the flag is passed to a flow that does not take it ({flow} is replaced)."""
    return field(default=default, metadata={"help": help, "flag": flag, "choices": choices, "argtype": argtype,
                                            "action": action, "misplaced": misplaced})


def tail_option(meaning: str) -> Any:
    """`--tail host|hw` (a final Softmax/Sigmoid head; opq_hw.tail): every flow reads it, a flow without tables
    refuses `hw` by name."""
    return option("host", flag="--tail", choices=("host", "hw"), help=meaning)


def _positive(name: str, zero_ok: bool = False, hi: float | None = None):
    def make():
        from ..validate import positive_arg

        return positive_arg(name, zero_ok=zero_ok, hi=hi)
    return make


def _int_in(name: str, lo: int, hi: int):
    def make():
        from ..validate import int_arg

        return int_arg(name, lo, hi)
    return make


@dataclass(frozen=True)
class FlowOptions:
    """Base of the flows' option dataclasses."""

    @classmethod
    def fields(cls) -> tuple[dataclasses.Field, ...]:
        return dataclasses.fields(cls)

    def given(self) -> dict[str, Any]:
        """The options as keyword arguments of the flow module's `build`."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass(frozen=True)
class Hls4mlOptions(FlowOptions):
    backend: str = option("Vitis", flag="--backend", choices=("Vitis", "Vivado"), help="backend")
    io: str = option("parallel", flag="--io", choices=("parallel", "stream"), help="io type")
    strategy: str = option("latency", flag="--strategy", choices=("latency", "resource"),
                           help="strategy (reuse factors from the cost model)")
    synth: bool = option(False, flag="--synth", action="store_true",
                         help="run the vendor synthesis tool (must be on PATH)")
    allow_inexact: bool = option(False, flag="--allow-inexact", action="store_true",
                                 help="allow float-scale runs (error is measured)")
    part: str | None = option(None, help="FPGA part (default: the board's)")
    clock_period: float | None = option(None, help="clock period in ns (default: the board's clock)")
    reuse: int | dict[str, int] | None = option(None, help="reuse factor, one for all layers or per layer name "
                                                           "(default: from the cost model for the board)")
    tail: str = tail_option("a final Softmax/Sigmoid head on the host (default; the outputs before it are compared "
                            "exactly) or hw (hls4ml's lookup tables, compared within a stated tolerance)")

    def __post_init__(self):
        if self.strategy not in ("latency", "resource"):
            raise OpqError(f"unknown hls4ml strategy {self.strategy!r}; use 'latency' or 'resource' (--strategy)")


@dataclass(frozen=True)
class FinnOptions(FlowOptions):
    target_fps: float | None = option(None, flag="--target-fps", argtype=_positive("--target-fps"),
                                      help="throughput target for folding")
    finn_python_path: str | os.PathLike | None = option(None, help="python of the FINN environment "
                                                                   "(default: OPQ_HW_FINN_PYTHON, else .venv-finn)")
    run_finn: bool = option(True, help="run FINN's steps when its environment exists")
    verify_n: int | None = option(None, help="test samples FINN's Python execution checks (default all)")
    timeout_s: float = option(1800, help="wall-clock limit of the FINN worker, seconds")
    tail: str = tail_option("host only (hw is refused: no float head in FINN's dataflow)")

    def __post_init__(self):
        t = self.target_fps
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not t > 0 or math.isinf(t)):
            raise OpqError(f"--target-fps must be a positive number of frames per second, got {t!r}")


RTL_ARCHS = ("seq", "da4ml")


@dataclass(frozen=True)
class RtlOptions(FlowOptions):
    rtl_arch: str = option("seq", flag="--rtl-arch", choices=RTL_ARCHS,
                           help="seq (default; one sparse MAC per layer, weights in block RAM) or da4ml "
                                "(constant-weight adder graphs, one pixel per cycle)")
    pipeline: float = option(0.0, flag="--pipeline", argtype=_positive("--pipeline", zero_ok=True),
                             help="--rtl-arch da4ml: latency cutoff per pipeline stage (0: combinational kernels)")
    serial_bits: int = option(0, flag="--serial-bits", argtype=_int_in("--serial-bits", 0, 16),
                              help="--rtl-arch da4ml: feed each layer's activations this many bits per cycle "
                                   "(1: bit-serial; kernels over D-bit digits, one pixel every (activation "
                                   "bits / D) cycles); 0: whole activations, one pixel per cycle")
    freq: float | None = option(None, flag="--freq", argtype=_positive("--freq", hi=5000),
                                help="place-and-route target in MHz (default: the board's clock); on a dev board "
                                     "(icebreaker, ulx3s-85f, ...) the core clock: a PLL from the oscillator "
                                     "(icepll / ecppll), the oscillator itself when omitted or equal")
    timing_allow_fail: bool = option(False, flag="--timing-allow-fail", action="store_true",
                                     help="dev boards: keep the build when nextpnr's Fmax is below the clock "
                                          "(default: the build fails)")
    baud: float = option(115200, flag="--baud", argtype=_positive("--baud", hi=12_000_000),
                         help="dev boards (icebreaker, ulx3s-85f): the UART baud rate of the board top")
    data: str | None = option(None, flag="--data",
                              help="data for the Verilator check: any --data value of `opq-hw compress` "
                                   "(default: the run's own test data)",
                              misplaced="(its own Verilator check); the {flow} build does not run the model: check it "
                                        "with `opq-hw simulate RUN --level qonnx|csim --data ...`")
    sim: bool = option(True, flag="--no-sim", action="store_false", help="skip the Verilator check")
    synth: bool = option(True, flag="--synth", action="store_true", help="Yosys synthesis (default on)")
    pnr: bool = option(True, flag="--no-pnr", action="store_false", help="stop after synthesis")
    tool_timeout: float = option(3600, flag="--tool-timeout", argtype=_positive("--tool-timeout"),
                                 help="wall-clock limit per Yosys/nextpnr run, seconds")
    per_layer: bool = option(True, help="also synthesize each layer module alone (per-layer resources)")
    n_sim: int | None = option(None, help="test samples the Verilator check runs (default all)")
    seed: int = option(1, help="nextpnr seed")
    tail: str = tail_option("host only (hw is refused: no exp/sigmoid tables in the RTL)")

    def __post_init__(self):
        if self.rtl_arch not in RTL_ARCHS:
            raise OpqError(f"unknown RTL architecture {self.rtl_arch!r}; use one of {list(RTL_ARCHS)} (--rtl-arch)")
        if self.pipeline < 0:
            raise OpqError(f"--pipeline must be >= 0 (da4ml latency cutoff per stage; 0 = combinational), got {self.pipeline}")
        if self.baud != int(self.baud) or not 300 <= self.baud <= 12_000_000:
            raise OpqError(f"--baud must be a whole number of bits per second in 300..12000000, got {self.baud:g}")
        if isinstance(self.serial_bits, bool) or not isinstance(self.serial_bits, int) or not 0 <= self.serial_bits <= 16:
            raise OpqError(f"--serial-bits must be a whole number of bits in 0..16 (0: whole activations), "
                           f"got {self.serial_bits!r}")
        if self.rtl_arch == "seq" and self.serial_bits:
            raise OpqError("--serial-bits feeds the da4ml kernels digit by digit; it does not apply to --rtl-arch seq "
                           "(add --rtl-arch da4ml)")
        if self.rtl_arch == "seq" and self.pipeline:
            raise OpqError("--pipeline is the da4ml kernels' latency cutoff; it does not apply to --rtl-arch seq "
                           "(add --rtl-arch da4ml)")


def _split(ref: str) -> tuple[str, str]:
    mod, _, fn = ref.partition(":")
    return mod, fn


@dataclass(frozen=True)
class Flow:
    """One flow: where its code is, what it takes, what it provides."""

    name: str  # registry key, `--flow NAME`, `build/NAME/`
    title: str  # as written in messages ("the FINN flow")
    module: str  # the flow module, imported on first use
    options: type[FlowOptions]
    summary: str  # one line for --help
    levels: Mapping[str, str] = field(default_factory=dict)  # simulation level -> "module:function"
    resources: str | None = None  # "module:function(run_dir)" reading tool reports into build/NAME/resources.json
    resources_marker: str | None = None  # ... called only when build/NAME/<this file> exists

    def parse_options(self, given: Mapping[str, Any]) -> FlowOptions:
        """The options dataclass from keyword arguments (None: not given, the default)."""
        given = {k: v for k, v in given.items() if v is not None}
        names = {f.name for f in self.options.fields()}
        bad = sorted(set(given) - names)
        if bad:
            raise OpqError(misplaced_message(self, bad))
        return self.options(**given)

    def build(self, run_dir: str | os.PathLike, board: str | None, options: FlowOptions | Mapping[str, Any] | None = None,
              log: Callable[[str], Any] | None = print) -> Any:
        opts = options if isinstance(options, FlowOptions) else self.parse_options(options or {})
        return importlib.import_module(self.module).build(run_dir, board=board, log=log, **opts.given())

    def read_resources(self, run_dir: str | os.PathLike) -> None:
        """Refresh `build/<flow>/resources.json` from the tool reports the flow left (when it has a reader
        and a project is there)."""
        if self.resources is None or not (Path(run_dir) / "build" / self.name / (self.resources_marker or "")).exists():
            return
        mod, fn = _split(self.resources)
        getattr(importlib.import_module(mod), fn)(run_dir)


def misplaced_message(flow: Flow, bad: list[str]) -> str:
    """Options a flow does not take: which flow takes them, from the options dataclasses."""
    if len(bad) == 1:
        owners = [(g, f) for g in FLOWS.values() if g is not flow for f in g.options.fields() if f.name == bad[0]]
        if owners and owners[0][1].metadata.get("misplaced") and owners[0][1].metadata.get("flag"):
            g, f = owners[0]
            return f"{f.metadata['flag']} applies to --flow {g.name} {f.metadata['misplaced'].format(flow=flow.name)}"
    return (f"options {bad} do not apply to the {flow.title} flow; its options are "
            + ", ".join(f.name for f in flow.options.fields()))


FLOWS: dict[str, Flow] = {
    "hls4ml": Flow("hls4ml", "hls4ml", "opq_hw.flows.hls4ml_flow", Hls4mlOptions,
                   "hls4ml project (Vitis/Vivado HLS), C-simulation level csim",
                   levels={"csim": "opq_hw.flows.hls4ml_flow:simulate_csim"},
                   resources="opq_hw.flows.hls4ml_flow:report", resources_marker="project.tcl"),
    "finn": Flow("finn", "FINN", "opq_hw.flows.finn_flow", FinnOptions,
                 "FINN build directory, FINN's transformations and estimates"),
    "rtl": Flow("rtl", "rtl", "opq_hw.flows.rtl_flow", RtlOptions,
                "open RTL (Verilog) -> Verilator -> Yosys -> nextpnr, simulation level rtl",
                levels={"rtl": "opq_hw.flows.rtl_flow:simulate_rtl"}),
}


def get_flow(name: str) -> Flow:
    if name not in FLOWS:
        raise OpqError(f"unknown flow {name!r}; choose one of {sorted(FLOWS)}")
    return FLOWS[name]


def levels() -> dict[str, str]:
    """Every flow's simulation levels: level name -> "module:function"."""
    out: dict[str, str] = {}
    for f in FLOWS.values():
        out.update(f.levels)
    return out


def cli_options() -> dict[str, dict[str, Any]]:
    """The `opq-hw build` flags of all flows: flag -> argparse keyword arguments (dest, help, ...).

    A flag several flows take is added once, its help naming each flow's meaning."""
    out: dict[str, dict[str, Any]] = {}
    for fl in FLOWS.values():
        for f in fl.options.fields():
            m = f.metadata
            if not m.get("flag"):
                continue
            kw: dict[str, Any] = {"dest": f.name}
            if m["action"]:
                kw.update(action=m["action"], default=None)  # None: not given (the flow's default applies)
            if m["choices"]:
                kw["choices"] = list(m["choices"])
            if m["argtype"]:
                kw["argtype"] = m["argtype"]
            seen = out.setdefault(m["flag"], {**kw, "help_parts": []})
            if {k: v for k, v in seen.items() if k != "help_parts"} != kw:
                raise ValueError(f"flows disagree on how {m['flag']} is read")  # a registry error (tests build --help)
            seen["help_parts"].append(f"{fl.title}: {m['help']}")
    return out
