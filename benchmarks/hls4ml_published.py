"""hls4ml-latency / hls4ml-resource estimates against published hls4ml synthesis results.

There is no Vivado/Vitis HLS here, so the hls4ml cost model cannot be measured in this workplace;
this benchmark collects the public hls4ml results that state the model, the precision, the reuse
factor, the part and the tool's numbers, and puts our estimate beside each. Every record cites
where its numbers are (URL and the comment, table or file); a number the source does not state is
None, never filled in. The nonzero weights of the example models are counted from the public
weight files (fastmachinelearning/example-models, commit ce390f9, keras/*.h5, with h5py when this
script was written; the counts are recorded here so the benchmark reads no file at run time).

A record is compared only where the design is the one the cost model prices (io_parallel, Latency
strategy, dense layers or today's conv) and the source states both the configuration and the
measurement; the others are listed with the reason. The coefficients are adjusted only where the
comparison supports it; see benchmarks/README.md for the conclusion.

Usage: .venv/bin/python benchmarks/hls4ml_published.py    (writes benchmarks/results/hls4ml_published.json)
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from opq_hw.artifact import write_json  # noqa: E402
from opq_hw.boards import load_board  # noqa: E402
from opq_hw.cost import LayerParams, layer_cost  # noqa: E402

EXAMPLE_MODELS = "https://github.com/fastmachinelearning/example-models (commit ce390f9), keras/"

# (fan_in, out, nonzero weights) per dense layer, counted from the example-models weight files
JET_3LAYER_70PRUNED = [(16, 64, 431), (64, 32, 469), (32, 32, 227), (32, 5, 78)]  # KERAS_3layer_70pruned_retrained_weights.h5
ONE_LAYER = [(10, 32, 320), (32, 1, 32)]  # KERAS_1layer_weights.h5 (no weight is zero)

RECORDS: list[dict[str, Any]] = [
    {
        "id": "jet3layer-70pruned-rf1",
        "source": "https://github.com/fastmachinelearning/hls4ml/pull/86 (description: keras-config.yml and the "
                  "csynth report it quotes)",
        "model": "KERAS_3layer (jet tagging 16-64-32-32-5, ReLU, softmax), 70 % pruned weights "
                 f"({EXAMPLE_MODELS}KERAS_3layer_70pruned_retrained_weights.h5: 1,205 of 4,256 weights nonzero)",
        "layers": JET_3LAYER_70PRUNED, "precision": "ap_fixed<16,6>", "bits": 16, "reuse_factor": 1,
        "io": "io_parallel", "strategy": "Latency", "part": "xcku115-flvb2104-2-i", "clock_ns": 5,
        "tool": "Vivado HLS (csynth estimate; the PR fixes synthesis in 2018.2)",
        "measured": {"latency_cycles": 22, "LUT": None, "FF": None, "DSP": None, "BRAM18": None},
        "not_stated": "the resource table is not in the quoted part of the description",
        "comparable": True,
    },
    {
        "id": "1layer-dsp-vs-lut-mult",
        "source": "https://github.com/fastmachinelearning/hls4ml/issues/99 (first comment, table 'DSP multipliers')",
        "model": f"the 1-hidden-layer example (KERAS_1layer 10-32-1, {EXAMPLE_MODELS}KERAS_1layer_weights.h5: "
                 "352 multiplications, none by zero)",
        "layers": ONE_LAYER, "precision": None, "bits": None, "reuse_factor": None,
        "io": "io_parallel", "strategy": "Latency", "part": None, "clock_ns": None,
        "tool": "Vivado HLS 2018.2, 'default hls4ml options from the head'",
        "measured": {"latency_cycles": 12, "LUT": 11819, "FF": 9798, "DSP": 305, "BRAM18": None},
        "not_stated": "precision, reuse factor and part are not stated (the thread asks for the precision)",
        "comparable": False,
    },
    {
        "id": "conv1d-small-rf1",
        "source": "https://github.com/fastmachinelearning/hls4ml/issues/56 (description, table 'Default weights', "
                  "row Reuse 1)",
        "model": "KERAS_conv1d_small (input 10x4, three Conv1D 'same' k=4 with 3/2/1 filters, dense 10-5-5; "
                 f"{EXAMPLE_MODELS}KERAS_conv1d_small_weights.h5: 155 weights, none zero)",
        "layers": None, "precision": "ap_fixed<18,8>", "bits": 18, "reuse_factor": 1,
        "io": "io_parallel", "strategy": "Latency (2018 conv1d)", "part": None, "clock_ns": None,
        "tool": "Vivado HLS 2017.2",
        "measured": {"latency_cycles": 24, "II": 1, "LUT": 28161, "FF": 47149, "DSP": 547, "BRAM18": 13},
        "not_stated": "part not stated",
        "comparable": False,
        "why_not": "hls4ml's 2018 conv1d unrolled the kernel over every output position (II 1: 547 DSP for 155 "
                   "weights); the cost model prices today's io_parallel conv (one kernel instance, II = positions "
                   "x R), so the design differs",
    },
    {
        "id": "svhn-cnn-pruned-rf1",
        "source": "https://github.com/fastmachinelearning/hls4ml-tutorial archived/pruned_cnn/vivado_synth.rpt "
                  "(commit 0117b13) and archived/pruned_cnn/myproject_prj/solution1/syn/report/myproject_csynth.rpt "
                  "(commit 3069ac8)",
        "model": "the tutorial's pruned SVHN CNN (part 6)", "layers": None,
        "precision": "ap_fixed<16,6>", "bits": 16, "reuse_factor": 1, "io": "io_stream", "strategy": "Latency",
        "part": "xcu250-figd2104-2L-e", "clock_ns": 5, "tool": "Vivado 2020.1 (synthesized) / Vivado HLS 2020.1",
        "measured": {"LUT": 123948, "FF": 43435, "DSP": 5386, "BRAM18": 84, "hls_LUT": 245466, "hls_FF": 52549,
                     "hls_DSP": 5414, "hls_BRAM18": 100},
        "not_stated": "the pruned weights (nonzeros per layer) are not in the repository",
        "comparable": False,
        "why_not": "io_stream (FIFOs and line buffers the cost model does not price) and unknown nonzeros",
    },
]

STAND_IN_BOARD = "zcu102"  # an UltraScale+ part: DSP48E2 (27x18) as in the KU115/U250 of the sources


def estimate_dense(layers: list[tuple[int, int, int]], bits: int, reuse: int, arch: str) -> dict[str, float]:
    """Our per-layer formula summed over dense layers with `bits`-bit weights and activations."""
    board = load_board(STAND_IN_BOARD)
    tot = {"LUT": 0.0, "FF": 0.0, "DSP": 0.0, "BRAM18": 0.0, "latency_cycles": 0.0, "II": 0.0}
    for i, (n_in, n_out, nnz) in enumerate(layers):
        p = LayerParams(name=str(i), kind="linear", fan_in=n_in, out_channels=n_out, out_pixels=1, in_pixels=1,
                        in_channels=n_in, kernel=(), in_width=1, n_weights=n_in * n_out, nnz=nnz, w_bits=bits,
                        a_bits=bits, a_signed=True, has_bias=True, in_words=n_in, last=i == len(layers) - 1)
        r = layer_cost(p, board, arch, {"reuse_factor": reuse})
        for k in ("LUT", "FF", "DSP", "BRAM18"):
            tot[k] += float(r[k])
        tot["latency_cycles"] += float(r["latency"])
        tot["II"] = max(tot["II"], float(r["cycles"]))
    return tot


def main() -> None:
    rows = []
    for rec in RECORDS:
        row = {k: v for k, v in rec.items() if k != "layers"}
        if rec["comparable"]:
            est = estimate_dense(rec["layers"], rec["bits"], rec["reuse_factor"], "hls4ml-latency")
            row["estimated"] = est
            row["rel_error"] = {k: (est[k] - m) / m for k, m in rec["measured"].items()
                                if m is not None and k in est}
        rows.append(row)
    out = {"stand_in_board": STAND_IN_BOARD, "architecture": "hls4ml-latency", "records": rows,
           "conclusion": "one comparable published figure (latency of the 70 %-pruned jet tagger); no published "
                         "resource figure here states model, precision, reuse factor and part together for the "
                         "architecture the cost model prices, so the LUT/FF/DSP coefficients stay uncalibrated"}
    write_json(ROOT / "benchmarks" / "results" / "hls4ml_published.json", out)
    print("| source | model | precision | RF | part | figure | published | estimate | error |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        for k, m in r["measured"].items():
            if m is None:
                continue
            est = r.get("estimated", {}).get(k)
            err = r.get("rel_error", {}).get(k)
            print(f"| {r['source'].split(' ')[0]} | {r['id']} | {r['precision'] or 'not stated'} | "
                  f"{r['reuse_factor'] or 'not stated'} | {r['part'] or 'not stated'} | {k} | {m:,} | "
                  f"{'-' if est is None else f'{est:,.0f}'} | {'-' if err is None else f'{100 * err:+.0f} %'} |")


if __name__ == "__main__":
    main()
