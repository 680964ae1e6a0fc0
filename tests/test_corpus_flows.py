"""Acceptance of the float-ONNX corpus (tests/corpus.py) through the hardware flows.

Every corpus model is compressed from its own .npz (its own input layout, no finetuning) and then either
runs through hls4ml's C simulation bit-exactly on all 360 test samples of that .npz (`simulate --level csim`),
or its hls4ml build is refused with a named error (exit 2, no traceback) that says which node and op and
what to do. t_cnn_bn_o11 (a BatchNorm after a ReLU) and t_mlp_bn_o17 (a BatchNorm on the input) keep a
BatchNorm that cannot be folded: hls4ml computes it exactly as a channel affine, the FINN and RTL flows refuse it
by name. The refusals are the constructs hls4ml 1.3.0 cannot take or would not compute exactly. A small
subset goes through the open RTL flow (Verilator check against the golden model included)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.tools]

HLS4ML_EXACT = ("t_mlp_o9", "t_view_o9", "t_cnn_bn_o11", "t_cnn1d_gap_o11", "t_cnn1d_bn_o13", "t_concat_o13",
                "t_resnet_o17", "t_mlp_bn_o17", "k_mlp_b1000", "k_cnn_nhwc", "k_cnn1d_nwc_b1000", "k_conv1d_nwc_o11",
                "k_mlp_o7_gemm", "k_res_gap_nhwc", "k_external")  # k_external: LeakyReLU(0.25), a power-of-two slope
HLS4ML_REFUSED = {
    "t_acts1_o11": "hls4ml cannot compute node 'LeakyRelu_0' (ONNX op LeakyRelu) bit-exactly: its slope 0.1 is not a "
                   "power of two",
    "t_acts2_o17": "hls4ml cannot compute node 'Elu_0' (ONNX op Elu) bit-exactly",
    "t_dwsep_o13": "hls4ml cannot take node 'Conv_1' (ONNX op Conv) with group=8 (a grouped/depthwise convolution)",
    "k_dwsep_nhwc_mean": "hls4ml cannot take node 'Clip_0' (ONNX op Clip): hls4ml 1.3.0's ONNX front end has no "
                         "Clip layer (ReLU6, Hardtanh and clamps export as Clip); a Clip(0, M) is taken as a ReLU only where M is at "
                         "least the largest value of the activation quantizer after it (M = 6 is below",
}
MIN_SAMPLES = 200


def test_every_corpus_model_is_classified():
    from corpus import NAMES

    assert sorted(HLS4ML_EXACT + tuple(HLS4ML_REFUSED)) == sorted(NAMES)


@pytest.fixture(scope="module")
def corpus_runs(onnx_corpus, tmp_path_factory):
    """name -> run directory of `compress --model NAME.onnx --data NAME.npz --target-cr 8 --epochs 0`."""
    from opq_hw.pipeline import CompressConfig, compress_run

    runs = {}

    def get(name: str):
        if name not in runs:
            e = onnx_corpus[name]
            cfg = CompressConfig(model=str(e.onnx), data=str(e.npz), target_cr=8, epochs=0)
            runs[name] = compress_run(cfg, tmp_path_factory.mktemp(f"corpus_{name}") / "run", progress=False,
                                      log=lambda *_: None)
        return runs[name]

    return get


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (os.getcwd(), os.environ.get("PYTHONPATH")) if p))
    return subprocess.run([sys.executable, "-m", "opq_hw.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=600)


@pytest.mark.parametrize("name", HLS4ML_EXACT)
def test_hls4ml_csim_bit_exact(name, onnx_corpus, corpus_runs, capsys):
    """estimate -> build -> simulate --level csim on the model's own .npz: bit-exact on every sample."""
    import re

    from opq_hw.cli import main

    run = corpus_runs(name)
    npz = onnx_corpus[name].npz
    assert main(["estimate", str(run), "--board", "pynq-z2"]) == 0
    assert main(["build", str(run), "--flow", "hls4ml", "--board", "pynq-z2"]) == 0
    capsys.readouterr()
    rc = main(["simulate", str(run), "--level", "csim", "--data", str(npz)])
    out = capsys.readouterr().out
    m = re.search(r"csim: (\d+)/(\d+) samples exact", out)
    assert m, out
    assert int(m.group(2)) >= MIN_SAMPLES and m.group(1) == m.group(2), out
    assert rc == 0 and out.rstrip().endswith("bit-exact: yes"), out


@pytest.mark.parametrize("name", sorted(HLS4ML_REFUSED))
def test_hls4ml_refuses_with_a_named_error(name, corpus_runs):
    """The build refuses before hls4ml runs: exit 2, `error: ...` naming the node and op, no traceback."""
    proc = _cli("build", corpus_runs(name), "--flow", "hls4ml", "--board", "pynq-z2")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("error: " + HLS4ML_REFUSED[name]), proc.stderr


# The open RTL flow on a small subset (the full corpus table is in the README): a dense model bit-exact in
# Verilator on its own .npz, and a construct the flow refuses by name.
RTL_EXACT = ("t_mlp_o9",)
RTL_REFUSED = {"t_acts1_o11": "error: layer 'body.body/body/2/LeakyRelu' (LeakyReLU) is not supported by the RTL flow",
               "t_mlp_bn_o17": "error: the RTL flow cannot take the BatchNorm 'body/body/1/BatchNormalization' kept as "
                               "a per-channel affine a*x + b"}


@pytest.mark.parametrize("name", RTL_EXACT)
def test_rtl_verilator_bit_exact(name, onnx_corpus, corpus_runs, capsys):
    import re

    from opq_hw.cli import main

    capsys.readouterr()
    rc = main(["build", str(corpus_runs(name)), "--flow", "rtl", "--board", "ecp5-85f", "--no-pnr",
               "--data", str(onnx_corpus[name].npz)])
    out = capsys.readouterr().out
    m = re.search(r"verilator: (\d+)/(\d+) samples bit-exact", out)
    assert rc == 0 and m, out
    assert int(m.group(2)) >= MIN_SAMPLES and m.group(1) == m.group(2), out


@pytest.mark.parametrize("name", sorted(RTL_REFUSED))
def test_rtl_refuses_with_a_named_error(name, onnx_corpus, corpus_runs):
    proc = _cli("build", corpus_runs(name), "--flow", "rtl", "--board", "ecp5-85f", "--no-pnr",
                "--data", onnx_corpus[name].npz)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith(RTL_REFUSED[name]), proc.stderr


# `--tail hw`: a softmax head and a sigmoid head computed by hls4ml's tables, compared with the host's float64
# head of the bit-exact reference within the tolerance stated from the tables (opq_hw.tail); the build records it.
TAIL_HW = {"k_mlp_b1000": "softmax", "k_cnn1d_nwc_b1000": "sigmoid"}


@pytest.mark.parametrize("name", sorted(TAIL_HW))
def test_tail_hw_within_stated_tolerance(name, onnx_corpus, corpus_runs, capsys):
    import json
    import re

    from opq_hw.cli import main
    from opq_hw.tail import TailTables

    run = corpus_runs(name)
    op = TAIL_HW[name]
    capsys.readouterr()
    assert main(["build", str(run), "--flow", "hls4ml", "--board", "pynq-z2", "--tail", "hw"]) == 0
    out = capsys.readouterr().out
    rec = json.loads((run / "build" / "hls4ml" / "opq_hls4ml.json").read_text())
    tail = rec["tail"]
    assert tail["where"] == "hardware" and tail["op"] == op and f"tail: {op} in hardware" in out, out
    assert tail["tolerance"] == TailTables(op, tail["n"]).tolerance() < 0.02
    types = {r["type"]: r for r in rec["types"] if r["layer"] == f"head_{op}"}
    assert types["result_t"]["role"] == "tail" and types["result_t"]["set_to"] == tail["types"]["result_t"]
    assert not rec["type_check"]["problems"]  # every stated table type read back as stated
    rc = main(["simulate", str(run), "--level", "csim", "--tail", "hw", "--data", str(onnx_corpus[name].npz)])
    out = capsys.readouterr().out
    m = re.search(r"(\d+)/(\d+) samples within tolerance, max abs error ([0-9.e-]+)", out)
    assert m and int(m.group(2)) >= MIN_SAMPLES and m.group(1) == m.group(2), out
    assert 0 < float(m.group(3)) <= tail["tolerance"], out  # a table head is not bit-exact, and stays within T
    assert rc == 0 and out.rstrip().endswith(f"within tolerance {tail['tolerance']:.3g}: yes"), out
    rep = json.loads((run / "reports" / "simulate_csim.json").read_text())
    assert rep["within_tolerance"] is True and rep["bit_exact"] is False and rep["tail"]["op"] == op
    # the flows without tables refuse by name
    for flow, board in (("rtl", "ecp5-85f"), ("finn", "pynq-z2")):
        proc = _cli("build", run, "--flow", flow, "--board", board, "--tail", "hw")
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.startswith(f"error: --tail hw: the {'FINN' if flow == 'finn' else flow} flow cannot compute"), \
            proc.stderr


# The FINN flow on a subset (the whole corpus: benchmarks/finn_corpus.py -> benchmarks/results/finn_corpus.json, and
# the README table): `build --flow finn` runs FINN's steps and checks FINN's Python execution of the graph after
# each stage against the golden outputs; after `hw_layers` (the dataflow graph FINN synthesises) it is bit-exact.
FINN_EXACT = ("t_mlp_o9",)


@pytest.mark.parametrize("name", FINN_EXACT)
def test_finn_dataflow_bit_exact(name, corpus_runs):
    import json

    from opq_hw.flows import finn_flow

    if finn_flow.finn_python() is None:
        msg = f"no FINN environment: {finn_flow.ENV_HINT}"
        pytest.fail(msg) if os.environ.get("CI") else pytest.skip(msg)
    run = corpus_runs(name)
    proc = _cli("build", run, "--flow", "finn", "--board", "pynq-z2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rec = json.loads((run / "build" / "finn" / "opq_finn.json").read_text())
    hw = [v for v in rec["verify"] if v["stage"] == "hw_layers"]
    assert hw and hw[0]["n"] >= MIN_SAMPLES and hw[0]["bit_exact"] and hw[0]["mismatched_samples"] == 0, rec["verify"]
    assert all(r["op_type"].startswith("MVAU") for r in rec["finn_layers"])


FINN_REFUSED = {
    "t_acts1_o11": "error: the FINN flow cannot take 'LeakyRelu_0' (LeakyRelu), 'Tanh_0' (Tanh), 'Clip_0' (Clip): FINN "
                   "turns an activation followed by its quantizer into thresholds only for ReLU",
    "t_dwsep_o13": "error: the FINN flow cannot take 'AveragePool_0' (AveragePool): this flow's hardware conversion "
                   "(FINN's InferPool: MaxPool and Brevitas' QuantAvgPool2d) leaves a float average pool",
    "t_cnn_bn_o11": "error: the FINN flow cannot take the BatchNorm 'body/body/7/BatchNormalization' kept as a "
                    "per-channel affine a*x + b",
}


@pytest.mark.parametrize("name", sorted(FINN_REFUSED))
def test_finn_refuses_with_a_named_error(name, corpus_runs):
    """Refused before FINN runs (its own errors there are a bare KeyError/AssertionError): exit 2, no traceback."""
    proc = _cli("build", corpus_runs(name), "--flow", "finn", "--board", "pynq-z2")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith(FINN_REFUSED[name]), proc.stderr
