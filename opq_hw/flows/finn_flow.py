"""FINN flow: run directory -> FINN build directory, FINN's own transformations and estimates.

`build(run_dir, board, target_fps=None)` writes `RUN/build/finn/` (atomically):

  model.qonnx.onnx                 the run's QONNX model (FINN's input)
  folding_config.json              PE/SIMD per MVAU, chosen by opq_hw.cost.choose_folding
                                   (arch "finn-mvau") to meet --target-fps within the board
  specialize_layers_config.json    MVAUs as HLS layers with LUT multipliers (what finn-mvau costs)
  dataflow_build_config.json       FINN's DataflowBuildConfig: part, clock, shell flow, steps
  opq_finn.json                    the build record (what ran, bit-exactness, estimates, command)

When the FINN environment (`.venv-finn`, made by `make finn-env`) exists, it then runs
`finn_worker.py` in it as a subprocess (FINN is never imported here; JSON in, JSON out): QONNX ->
FINN-ONNX, tidy-up, streamlining (scales and biases absorbed into thresholds), conversion to
hardware layers, FINN's Python execution of that dataflow graph on the run's whole test set
(compared with the Brevitas logits, bit for bit), layer specialisation for the board's part,
the folding above, and FINN's analytical per-layer resource and cycle estimates. Those are put
beside `opq_hw.cost.estimate(..., arch="finn-mvau")` in `RUN/reports/finn.json|md`.
It also writes model_hw.onnx (the verified hardware-layer graph) and, in
dataflow_build_config.json, the remaining FINN builder steps, so that on a machine with Vivado

    cd RUN/build/finn && finn build dataflow_build_config.json model_hw.onnx

makes the bitstream (finn-plus 1.6.1 CLI: `finn build FLOW_CONFIG MODEL`). Without the FINN
environment the directory is still written (the config then starts from the QONNX model) and the
FINN steps are skipped with a message saying how to enable them.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from ..artifact import dumps, read_json, write_json
from ..rundir import write_outputs
from ..steps import Step, run_build
from ..errors import OpqError
from ..resources import source_root

FLOW = "finn"
BUILD_INFO = "opq_finn.json"
FINN_VERSION = "1.6.1"
WORKER = Path(__file__).with_name("finn_worker.py")
ENV_HINT = ("run `make finn-env` (scripts/make_finn_env.sh: creates .venv-finn with finn-plus "
            f"{FINN_VERSION}, ~10 min) or set OPQ_HW_FINN_PYTHON to that environment's python")
# FINN's own names for the boards it has shells for (finn.util.basic.pynq_part_map / alveo_part_map);
# vocabulary of the FINN tool, not board facts (those are in board_configs/*.yaml)
# FINN builder steps after our worker's (model_hw.onnx is the output of step_minimize_bit_width_initial)
STEPS_AFTER_HW = ["step_create_dataflow_partition", "step_specialize_layers", "step_apply_folding_config",
                  "step_minimize_bit_width", "step_transpose_decomposition", "step_generate_estimate_reports",
                  "step_assign_ddr_weight_offsets", "step_generate_hardware", "step_create_stitched_ip",
                  "step_prepare_synthesis", "step_synthesize_bitfile", "step_make_driver", "step_deployment_package"]
STEPS_FROM_QONNX = ["step_qonnx_to_finn", "step_tidy_up", "step_streamline", "step_convert_to_hw",
                    "step_minimize_bit_width_initial"] + STEPS_AFTER_HW
METRICS = (("LUT", "LUT"), ("BRAM18", "BRAM_18K"), ("DSP", "DSP"), ("URAM", "URAM"))


# --------------------------------------------------------------------------------------------
# the FINN environment
# --------------------------------------------------------------------------------------------
def finn_python(explicit: str | os.PathLike | None = None) -> Path | None:
    """The FINN environment's python: `explicit`, $OPQ_HW_FINN_PYTHON, or `.venv-finn/bin/python`
    at the root of the source checkout (`make finn-env`; none when installed from a wheel); None
    when there is none."""
    root = source_root()
    checkout = root / ".venv-finn" / "bin" / "python" if root is not None else None
    for cand in (explicit, os.environ.get("OPQ_HW_FINN_PYTHON"), checkout):
        if cand and Path(cand).is_file() and os.access(cand, os.X_OK):
            return Path(cand)
        if cand and cand is explicit:
            raise OpqError(f"FINN python {str(cand)!r} does not exist; {ENV_HINT}")
    return None


# --------------------------------------------------------------------------------------------
# folding and configs (no FINN needed)
# --------------------------------------------------------------------------------------------
def _board(board: str | None):
    from ..boards import load_board

    if not board:
        raise OpqError("the FINN flow needs --board (e.g. pynq-z2); `opq-hw boards` lists them")
    b = load_board(board)
    if "finn" not in b.flows:
        raise OpqError(f"board {b.name!r} does not support the FINN flow (its flows: {list(b.flows)}); "
                       "choose a Xilinx board, e.g. --board pynq-z2")
    return b


def choose_folding(run, board, target_fps: float | None = None) -> dict[str, dict[str, int]]:
    """PE/SIMD per conv/linear layer from the cost model (`opq_hw.cost.choose_folding`, arch
    "finn-mvau"): the fastest folding that fits the board, or the cheapest that meets target_fps."""
    from ..cost import choose_folding as cost_choose_folding

    act_bits = run.config.get("act_bits")
    fold = cost_choose_folding(run.specs, run.allocation, board, arch="finn-mvau", target_fps=target_fps,
                               act_bits=act_bits)
    return {name: {"pe": int(f["pe"]), "simd": int(f["simd"])} for name, f in fold.items()}


def finn_configs(layer_names: list[str], folding: dict[str, dict[str, int]]) -> tuple[dict, dict]:
    """(specialize_layers_config, folding_config) in FINN's ApplyConfig format.

    The k-th conv/linear layer is FINN's k-th MVAU: `MVAU_k` before specialisation and
    `MVAU_hls_k` after it (all MVAUs are made HLS layers, so FINN's node naming is predictable).
    HLS MVAUs with LUT multipliers and decoupled on-chip weights are what `finn-mvau` costs."""
    spec = {"Defaults": {}}
    fold = {"Defaults": {}}
    for k, name in enumerate(layer_names):
        spec[f"MVAU_{k}"] = {"preferred_impl_style": "hls"}
        f = folding[name]
        fold[f"MVAU_hls_{k}"] = {"PE": int(f["pe"]), "SIMD": int(f["simd"]), "resType": "lut",
                                 "mem_mode": "internal_decoupled", "ram_style": "auto"}
    return spec, fold


def dataflow_build_config(board, model_file: str, steps: list[str],
                          folding_file: str = "folding_config.json") -> dict[str, Any]:
    """FINN's DataflowBuildConfig (JSON form) for `finn build` on a machine with Vivado.

    `folding_file`: our MVAU folding, or (after FINN ran) the folding FINN applied to every
    streaming node (sliding windows, pools, thresholds folded to the same interval)."""
    finn_board, shell = board.finn_board, board.finn_shell_flow
    cfg: dict[str, Any] = {
        "output_dir": "output",
        "synth_clk_period_ns": round(1000.0 / board.clock_mhz, 6),
        "fpga_part": board.part,
        "folding_config_file": folding_file,
        "specialize_layers_config_file": "specialize_layers_config.json",
        "standalone_thresholds": False,
        "minimize_bit_width": True,
        "auto_fifo_depths": True,
        "steps": steps,
        "generate_outputs": ["estimate_reports", "stitched_ip"],
        "model_path": model_file,
    }
    if finn_board:
        cfg.update(board=finn_board, shell_flow_type=shell,
                   generate_outputs=["estimate_reports", "stitched_ip", "bitfile", "pynq_driver" if shell == "vivado_zynq"
                                     else "stitched_ip", "deployment_package"])
    return cfg


# --------------------------------------------------------------------------------------------
# comparison with our cost model
# --------------------------------------------------------------------------------------------
def _err(ours: float, theirs: float) -> dict[str, Any]:
    diff = ours - theirs
    rel = (diff / theirs) if theirs else (0.0 if diff == 0 else None)
    return {"ours": ours, "finn": theirs, "diff": diff, "rel_err": rel}


def _bits(dtype: str | None) -> int | None:
    """Bit width of a FINN/QONNX integer data type name (INT17 -> 17, UINT8 -> 8), else None."""
    import re

    m = re.fullmatch(r"U?INT(\d+)", dtype or "")
    return int(m.group(1)) if m else None


def compare(run, board, folding: dict[str, dict[str, int]], finn_res: dict[str, Any]) -> dict[str, Any]:
    """Per layer and metric: our finn-mvau estimate beside FINN's res_estimation/exp_cycles."""
    from ..cost import estimate

    act_bits = run.config.get("act_bits")
    ours = estimate(run.specs, run.allocation, board, "finn-mvau", folding=folding, act_bits=act_bits)
    # the same formulas fed FINN's minimised weight/accumulator widths (FINN derives them from the
    # actual integer weights): separates formula error from data-type error
    typed = {}
    for row in finn_res.get("layers", []):
        if row["layer"] in folding and _bits(row["weightDataType"]) and _bits(row["accDataType"]):
            typed[row["layer"]] = dict(folding[row["layer"]], w_bits=_bits(row["weightDataType"]),
                                       acc_bits=_bits(row["accDataType"]))
    ours_typed = estimate(run.specs, run.allocation, board, "finn-mvau", folding={**folding, **typed}, act_bits=act_bits)
    rows = []
    for row in finn_res.get("layers", []):
        name, node = row["layer"], row["node"]
        if name is None:
            continue
        lc = ours.layer(name)
        fr = finn_res["estimates"]["resources"].get(node, {})
        r = {"layer": name, "node": node, "op_type": row["op_type"], "PE": row["PE"], "SIMD": row["SIMD"],
             "weightDataType": row["weightDataType"], "accDataType": row["accDataType"]}
        for ours_key, finn_key in METRICS:
            r[ours_key] = _err(float(getattr(lc, ours_key)), float(fr.get(finn_key, 0)))
        r["cycles"] = _err(float(lc.cycles), float(finn_res["estimates"]["cycles"].get(node, 0)))
        r["LUT_with_finn_types"] = _err(float(ours_typed.layer(name).LUT), float(fr.get("LUT", 0)))
        rows.append(r)
    summary = {}
    for m in ("LUT", "BRAM18", "DSP", "URAM", "cycles", "LUT_with_finn_types"):
        errs = [abs(r[m]["rel_err"]) for r in rows if r[m]["rel_err"] is not None]
        summary[m] = {"exact_layers": sum(1 for r in rows if r[m]["diff"] == 0), "layers": len(rows),
                      "max_abs_rel_err": max(errs) if errs else None,
                      "mean_abs_rel_err": (sum(errs) / len(errs)) if errs else None}
    return {"layers": rows, "summary": summary, "ours_totals": ours.totals, "ours_ii_cycles": ours.ii_cycles,
            "ours_throughput_fps": ours.throughput_fps, "finn_network": finn_res["estimates"]["network"],
            "finn_total": finn_res["estimates"]["total"], "notes": list(ours.notes)}


def _markdown(record: dict[str, Any]) -> str:
    lines = [f"# FINN flow: {record['run']} on {record['board']} ({record['part']}, {record['clock_mhz']:g} MHz)", ""]
    lines.append(f"FINN environment: {record['finn_status']}")
    for v in record.get("verify", []):
        lines.append(f"- Python execution after {v['stage']}: {'bit-exact' if v['bit_exact'] else 'NOT bit-exact'} on "
                     f"{v['n']} test samples (max |diff| {v['max_abs_diff']:g}, {v['mismatched_samples']} samples differ)")
    if record.get("software_nodes") is not None:
        sw = record["software_nodes"]
        listed = ", ".join("%s (%s: %s)" % (n["name"], n["op_type"], n["why"]) for n in sw) or "none"
        lines.append(f"- nodes left outside FINN hardware layers: {listed}")
    cmp_ = record.get("comparison")
    if cmp_:
        lines += ["", "| layer | FINN node | PE | SIMD | metric | ours | FINN | error |", "|---|---|---|---|---|---|---|---|"]
        for r in cmp_["layers"]:
            for m in ("LUT", "BRAM18", "DSP", "cycles"):
                e = r[m]
                rel = "n/a" if e["rel_err"] is None else f"{100 * e['rel_err']:+.1f}%"
                lines.append(f"| {r['layer']} | {r['node']} | {r['PE']} | {r['SIMD']} | {m} | {e['ours']:g} | {e['finn']:g} | {rel} |")
        def pct(v):
            return "n/a" if v is None else "%.1f%%" % (100 * v)

        lines += ["", "Per metric: " + "; ".join(
            f"{m} exact on {s['exact_layers']}/{s['layers']} layers, max |rel err| {pct(s['max_abs_rel_err'])}"
            for m, s in cmp_["summary"].items())]
        net = cmp_["finn_network"]
        lines.append(f"FINN network estimate: max cycles {net.get('max_cycles')} ({net.get('max_cycles_node_name')}), "
                     f"{net.get('estimated_throughput_fps', 0):.0f} frames/s; ours (MVAUs only): II "
                     f"{cmp_['ours_ii_cycles']} cycles, {cmp_['ours_throughput_fps']:.0f} frames/s")
    lines += ["", f"Bitstream (needs Vivado): `{record['finn_build_command']}`", ""]
    return "\n".join(lines)


def _software_nodes(nodes: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Nodes FINN did not turn into hardware layers, each with why (and where) it stays in software."""
    out = []
    for i, n in enumerate(nodes):
        if n["hw"]:
            continue
        if not any(m["hw"] for m in nodes[:i]):
            why = ("input layout change NCHW -> NHWC, before the accelerator (host/DMA side, as usual in FINN)"
                   if n["op_type"] == "Transpose" else "before the accelerator: runs on the host")
        elif not any(m["hw"] for m in nodes[i + 1:]):
            why = "after the accelerator: runs on the host"
        else:
            why = ("between hardware layers with no FINN hardware layer for it: FINN's dataflow partition "
                   "(and so `finn build`) will refuse the graph")
        out.append({"name": n["name"], "op_type": n["op_type"], "why": why})
    return out


# --------------------------------------------------------------------------------------------
# the verb
# --------------------------------------------------------------------------------------------
# Activations FINN's QONNX conversion cannot turn into thresholds (it takes ReLU and the identity before a Quant);
# its own error for them is a bare KeyError deep in ConvertQONNXtoFINN (measured: benchmarks/finn_corpus.py).
FINN_NO_THRESHOLDS = {"LeakyRelu", "Tanh", "Sigmoid", "Elu", "Selu", "Clip", "HardSigmoid", "Softplus", "PRelu",
                      "HardSwish", "Softmax", "LogSoftmax"}


def refuse_unsupported(model_path: str | os.PathLike) -> None:
    """Refuse, before FINN runs, what this flow cannot take through FINN, naming the nodes and why (each measured
    on the corpus, benchmarks/finn_corpus.py: FINN's own failures there are a bare KeyError or AssertionError, or
    layers left outside the dataflow graph)."""
    import onnx

    graph = onnx.load(str(model_path)).graph

    def named(ops, pred=lambda n: True):
        nodes = [n for n in graph.node if n.op_type in ops and pred(n)]
        return ", ".join(f"{n.name!r} ({n.op_type})" for n in nodes[:6]) + (", ..." if len(nodes) > 6 else "")

    def group(n):
        return any(a.name == "group" and a.i != 1 for a in n.attribute)

    consts = {i.name for i in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}

    def join(n):  # an Add of two feature maps (a residual join), not a bias
        return not any(i in consts for i in n.input)

    why = [(named(FINN_NO_THRESHOLDS), "FINN turns an activation followed by its quantizer into thresholds only for "
                                       "ReLU (and the identity); use ReLU in the float model"),
           (named({"AveragePool", "GlobalAveragePool"}),
            "this flow's hardware conversion (FINN's InferPool: MaxPool and Brevitas' QuantAvgPool2d) leaves a float "
            "average pool between quantizers outside the dataflow graph, and the layers after it are not converted; "
            "use MaxPool in the float model"),
           (named({"Concat"}), "FINN 1.6.1's conversion fails on a Concat of quantized feature maps (AssertionError)"),
           (named({"Conv"}, group), "grouped/depthwise convolutions become FINN VVAU layers, which this flow's "
                                    "folding and specialisation configs (MVAU per layer) do not cover"),
           (named({"Add"}, join), "FINN 1.6.1 streamlines residual Adds of two feature maps bit-exact, but its "
                                  "hardware conversion then leaves layers outside the dataflow graph (measured: "
                                  "mnist28-resnet with a MaxPool head, 5 of 10 MVAUs left as Transpose/Im2Col/MatMul)")]
    found = [(d, w) for d, w in why if d]
    if found:
        raise OpqError("the FINN flow cannot take " + "; ".join(f"{d}: {w}" for d, w in found)
                       + ". Build this run with --flow hls4ml or --flow rtl where they take it")


class _Ctx:
    """What the build's steps share (the FINN worker runs in one subprocess: this build does not resume)."""

    def __init__(self, run, o, b, names, folding, spec_cfg, fold_cfg, ours, fpy, record, log):
        self.run, self.o, self.b, self.names, self.folding = run, o, b, names, folding
        self.spec_cfg, self.fold_cfg, self.ours, self.fpy, self.record, self.log = spec_cfg, fold_cfg, ours, fpy, record, log
        self.state: dict[str, Any] = {}


def _step_contract(c: _Ctx) -> None:
    """FINN's input and our configs: the directory contract, written with or without FINN."""
    shutil.copyfile(c.run.path / "model.qonnx.onnx", c.out / "model.qonnx.onnx")
    write_json(c.out / "folding_config.json", c.fold_cfg)
    write_json(c.out / "specialize_layers_config.json", c.spec_cfg)


def _step_finn(c: _Ctx) -> str | None:
    tmp, b, record = c.out, c.b, c.record
    if c.fpy is None:
        record["finn_status"] = ("skipped: " + ("not requested" if not c.o.run_finn else f"no FINN environment; {ENV_HINT}"))
        write_json(tmp / "dataflow_build_config.json", dataflow_build_config(b, "model.qonnx.onnx", STEPS_FROM_QONNX))
        record["finn_build_command"] = f"cd build/{FLOW} && finn build dataflow_build_config.json model.qonnx.onnx"
        record["note"] = ("FINN's own streamlining rounds ties up while Brevitas rounds half to even: run this "
                          "flow with the FINN environment to get model_hw.onnx with even-rounding thresholds")
        return "skipped"
    res = _run_worker(c.fpy, c.run, tmp, b, c.names, c.spec_cfg, c.fold_cfg, c.ours.ii_cycles, c.o.verify_n,
                      c.o.timeout_s, c.log)
    record["finn_status"] = "ran" if res.get("ok") else f"failed: {res.get('error')}"
    record["finn_seconds"] = res.get("seconds")
    record["finn_versions"] = res.get("versions")
    record["verify"] = res.get("verify", [])
    record["info"] = res.get("info", {})
    if res.get("ok"):
        write_json(tmp / "finn_estimates.json", {k: res[k] for k in ("layers", "estimates", "applied_folding")})
        write_json(tmp / "applied_folding_config.json", res["applied_folding"])
        write_json(tmp / "dataflow_build_config.json",
                   dataflow_build_config(b, "model_hw.onnx", STEPS_AFTER_HW, "applied_folding_config.json"))
        record["finn_build_command"] = f"cd build/{FLOW} && finn build dataflow_build_config.json model_hw.onnx"
        record["hw_nodes"] = res["hw_nodes"]
        record["software_nodes"] = _software_nodes(res["hw_nodes"])
        record["finn_layers"] = res["layers"]
        record["comparison"] = compare(c.run, b, c.folding, res)
    else:
        write_json(tmp / "dataflow_build_config.json", dataflow_build_config(b, "model.qonnx.onnx", STEPS_FROM_QONNX))
        record["finn_build_command"] = f"cd build/{FLOW} && finn build dataflow_build_config.json model.qonnx.onnx"
        record["traceback"] = res.get("traceback", "")[-4000:]
    return None


def _finish(c: _Ctx, t0: float) -> None:
    c.record["build_s"] = round(time.perf_counter() - t0, 2)
    write_json(c.out / BUILD_INFO, c.record)
    if c.fpy is not None and c.record["finn_status"] != "ran":
        c.build.failed = c.record["finn_status"]


STEPS = [Step("contract", _step_contract), Step("finn", _step_finn)]


def build(run_dir: str | os.PathLike, board: str | None = None, log=print, **options) -> dict[str, Any]:
    """Write `RUN/build/finn/` and, with the FINN environment, run FINN's steps on it.

    options: `opq_hw.flows.FinnOptions` (target_fps, finn_python_path, run_finn, verify_n, timeout_s).
    Returns the build record (also `build/finn/opq_finn.json`); `record["finn_status"]` says whether
    FINN ran ("ran"), or why not. Raises OpqError when FINN ran and failed, or when the dataflow
    graph is not bit-exact with the Brevitas model.
    """
    from ..carrier_graph import refuse_affines
    from ..data import require_run_data
    from ..run import load_run
    from ..tail import refuse_tail_hw
    from . import FLOWS

    o = FLOWS["finn"].parse_options(options)
    refuse_tail_hw("FINN", o.tail, "FINN's dataflow ends in integer thresholds; it builds no float head")
    require_run_data(run_dir, "build --flow finn")  # uncalibrated activations make no hardware
    run = load_run(run_dir)
    refuse_unsupported(run.path / "model.qonnx.onnx")
    refuse_affines(run.qmodel, "FINN", "FINN's streamlining absorbs a Mul into the next thresholds only where every "
                   "multiplier is positive (AbsorbMulIntoMultiThreshold, dividing the thresholds in float), and this "
                   "flow has not verified that path bit-exact")
    b = _board(board)
    if run.allocation.scale_mode != "pow2":
        log("note: this run has float scales; FINN absorbs them into thresholds, but bit-exactness is only "
            "expected for pow2 (hardware-mode) runs")
    names = [s.name for s in run.specs]
    folding = choose_folding(run, b, o.target_fps)
    spec_cfg, fold_cfg = finn_configs(names, folding)
    from ..cost import estimate

    ours = estimate(run.specs, run.allocation, b, "finn-mvau", folding=folding, act_bits=run.config.get("act_bits"))
    fpy = finn_python(o.finn_python_path) if o.run_finn else None
    record: dict[str, Any] = {
        "flow": FLOW, "run": run.path.name, "board": b.name, "part": b.part, "clock_mhz": b.clock_mhz,
        "target_fps": o.target_fps, "layers": names,
        "folding": folding, "folding_source": "opq_hw.cost.choose_folding(arch='finn-mvau')",
        "ours_ii_cycles": ours.ii_cycles, "ours_throughput_fps": ours.throughput_fps,
        "ours_totals": ours.totals, "finn_version": FINN_VERSION,
    }
    t0 = time.perf_counter()
    c = _Ctx(run, o, b, names, folding, spec_cfg, fold_cfg, ours, fpy, record, log)
    # swapped in only on success; a failed FINN run goes to build/finn.failed
    bd, _ = run_build(run.path, FLOW, STEPS, c, log=log, after=lambda c: _finish(c, t0))
    final = bd.path
    write_outputs(run.path, {"reports/finn.json": dumps(record).encode(), "reports/finn.md": _markdown(record).encode()})
    log(f"FINN build directory written to {final} (folding from the cost model: "
        + ", ".join(f"{n} PE={f['pe']} SIMD={f['simd']}" for n, f in folding.items()) + ")")
    if fpy is None:
        log(f"FINN steps skipped: {record['finn_status'][len('skipped: '):]}")
        return record
    if not record["finn_status"] == "ran":
        raise OpqError(f"FINN steps failed ({record['finn_status']}); see {final / 'finn_worker.log'}. "
                       f"The directory contract is written; {ENV_HINT} if the environment is broken")
    for v in record["verify"]:
        log(f"  FINN Python execution after {v['stage']}: {'bit-exact' if v['bit_exact'] else 'differs'} "
            f"({v['mismatched_samples']}/{v['n']} samples differ, max |diff| {v['max_abs_diff']:g})")
    log(f"  FINN estimates beside ours: {run.path / 'reports' / 'finn.md'}")
    last = record["verify"][-1] if record["verify"] else None
    if last is None or not last["bit_exact"]:
        raise OpqError(f"FINN's dataflow graph is not bit-exact with the Brevitas model "
                       f"({'no verification ran' if last is None else str(last['mismatched_samples']) + ' samples differ'}); "
                       f"see {run.path / 'reports' / 'finn.json'}")
    return record


def _run_worker(fpy: Path, run, tmp: Path, board, names, spec_cfg, fold_cfg, target_cycles, verify_n, timeout_s,
                log) -> dict[str, Any]:
    tmp, run_path = Path(tmp).resolve(), Path(run.path).resolve()  # the worker runs in its own folder
    work = tmp / ".worker"
    work.mkdir()
    req = {"model": str(tmp / "model.qonnx.onnx"), "out_dir": str(tmp), "result": str(work / "result.json"),
           "fpga_part": board.part, "clk_ns": 1000.0 / board.clock_mhz, "layer_names": names,
           "specialize_config": spec_cfg, "folding_config": fold_cfg, "target_cycles": int(target_cycles),
           "verify_input": str(run_path / "golden_input.npy"), "verify_expected": str(run_path / "golden_output.npy"),
           "verify_n": verify_n}
    write_json(work / "request.json", req)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["FINN_BUILD_DIR"] = str(work / "finn_tmp")
    env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", "1")
    log(f"running FINN's steps in {fpy.parent.parent.name} (this takes a minute) ...")
    with open(tmp / "finn_worker.log", "w") as out:
        try:
            proc = subprocess.run([str(fpy), str(WORKER), str(work / "request.json")], cwd=work, env=env,
                                  stdout=out, stderr=subprocess.STDOUT, timeout=timeout_s)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = None
    res_path = work / "result.json"
    if res_path.is_file():
        res = read_json(res_path)
    else:
        res = {"ok": False, "error": ("timed out after %ds" % timeout_s) if rc is None else
               f"the FINN worker exited with {rc} and wrote no result (broken environment?)"}
    shutil.rmtree(work, ignore_errors=True)
    # no absolute paths of this machine in the record
    _log = (tmp / "finn_worker.log")
    if _log.is_file():
        _log.write_text(_log.read_text().replace(str(tmp), "build/finn"))
    return res
