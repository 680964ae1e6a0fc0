"""Benchmark: our `finn-mvau` cost model vs FINN's own analytical estimates, and FINN's bit-exactness.

For the demo model (digits-cnn), the MLP (digits-mlp) and the 1-D CNN (mnist1d-cnn), all OPQ at 20x CR_w in pow2 (hardware)
mode with 2 finetune epochs, this builds the run, then `opq_hw.flows.finn_flow.build(..., board=
"pynq-z2")` with the fastest folding that fits the board and with a folded one (--target-fps),
which runs FINN (finn-plus 1.6.1, in .venv-finn) on the QONNX model: tidy-up, streamlining,
conversion to hardware layers, FINN's Python execution of the dataflow graph on the test set
(compared bit for bit with the Brevitas logits), specialisation, folding, and FINN's per-layer
`res_estimation` / `exp_cycles_per_layer`. Per layer and metric (LUT, BRAM18, DSP, cycles) it
records ours, FINN's and the error; also our LUT when fed FINN's minimised weight/accumulator
widths, which separates formula error from data-type error.

Goals (issue 6): BRAM18 and DSP exact, LUT within 10%, cycles exact.

Run:  python benchmarks/finn_vs_cost.py      (needs `make finn-env`; ~10 min on 2 cores once the
      float models are pre-trained and cached, ~30 min before)
Writes benchmarks/results/finn_vs_cost.json and finn_vs_cost.png (atomically).
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from opq_hw.artifact import write_json, write_png  # noqa: E402
from opq_hw.errors import OpqError  # noqa: E402
from opq_hw.flows import finn_flow  # noqa: E402

RESULTS = HERE / "results"
BOARD = "pynq-z2"
MODELS = {"digits-cnn": "digits", "digits-mlp": "digits", "mnist1d-cnn": "mnist1d"}
FOLDED_FPS = 20000.0  # the folded configuration: 20k frames/s at the board clock
GOALS = {"BRAM18": 0.0, "DSP": 0.0, "cycles": 0.0, "LUT": 0.10}


def _row(model: str, config: str, rec: dict) -> dict:
    cmp_ = rec["comparison"]
    return {
        "model": model, "config": config, "target_fps": rec["target_fps"], "folding": rec["folding"],
        "verify": [{k: v[k] for k in ("stage", "n", "bit_exact", "mismatched_samples", "max_abs_diff")}
                   for v in rec["verify"]],
        "half_even_thresholds": rec["info"].get("half_even_thresholds"),
        "software_nodes": rec["software_nodes"],
        "finn_layers": [{k: r[k] for k in ("layer", "node", "op_type", "PE", "SIMD", "MW", "MH", "weightDataType",
                                            "accDataType", "inputDataType", "outputDataType")} for r in rec["finn_layers"]],
        "layers": cmp_["layers"], "summary": cmp_["summary"],
        "ours_ii_cycles": cmp_["ours_ii_cycles"], "ours_throughput_fps": cmp_["ours_throughput_fps"],
        "finn_network": cmp_["finn_network"], "finn_total": cmp_["finn_total"], "ours_totals": cmp_["ours_totals"],
        "finn_seconds": rec["finn_seconds"], "finn_versions": rec.get("finn_versions"),
    }


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    labels, ours, finn, typed = [], [], [], []
    for r in rows:
        for lr in r["layers"]:
            labels.append(f"{r['model'].split('-')[1]}/{r['config'][:6]}/{lr['layer']}")
            ours.append(lr["LUT"]["ours"])
            finn.append(lr["LUT"]["finn"])
            typed.append(lr["LUT_with_finn_types"]["ours"])
    x = range(len(labels))
    ax = axes[0]
    ax.bar([i - 0.27 for i in x], finn, 0.27, label="FINN res_estimation")
    ax.bar(list(x), ours, 0.27, label="ours (finn-mvau)")
    ax.bar([i + 0.27 for i in x], typed, 0.27, label="ours with FINN's acc/weight widths")
    ax.set_yscale("log")
    ax.set_xticks(list(x))
    ax.set_xticklabels(labels, rotation=70, fontsize=7)
    ax.set_ylabel("LUT per MVAU")
    ax.legend(fontsize=7)
    ax.set_title("LUT: ours vs FINN")
    ax = axes[1]
    errs = [100 * (o - f) / f for o, f in zip(ours, finn)]
    ax.bar(list(x), errs)
    ax.axhline(10, color="r", ls="--", lw=0.8)
    ax.axhline(-10, color="r", ls="--", lw=0.8)
    ax.set_xticks(list(x))
    ax.set_xticklabels(labels, rotation=70, fontsize=7)
    ax.set_ylabel("LUT error, % (goal: within 10%)")
    ax.set_title("BRAM18, DSP, cycles: see JSON (exact = 0 error)")
    fig.tight_layout()
    write_png(path, fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--out", default=str(RESULTS / "finn_vs_cost.json"))
    args = ap.parse_args(argv)
    if finn_flow.finn_python() is None:
        raise OpqError(f"this benchmark needs the FINN environment: {finn_flow.ENV_HINT}")
    from opq_hw.pipeline import CompressConfig, compress_run

    rows = []
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="finn_vs_cost.") as tmp:
        for model, data in MODELS.items():
            run = compress_run(CompressConfig(model=model, data=data, target_cr=20, epochs=args.epochs, seed=0),
                               Path(tmp) / model, progress=False, log=lambda *_: None)
            for config, fps, n in (("fastest-fit", None, None), ("folded", FOLDED_FPS, 64)):
                rec = finn_flow.build(run, board=BOARD, target_fps=fps, verify_n=n, log=print)
                rows.append(_row(model, config, rec))
    per_metric = {}
    for m in ("LUT", "BRAM18", "DSP", "cycles", "LUT_with_finn_types"):
        errs = [abs(lr[m]["rel_err"]) for r in rows for lr in r["layers"] if lr[m]["rel_err"] is not None]
        per_metric[m] = {"layers": len(errs), "exact": sum(1 for e in errs if e == 0),
                         "max_abs_rel_err": max(errs), "mean_abs_rel_err": sum(errs) / len(errs)}
    goals_met = {m: per_metric[m]["max_abs_rel_err"] <= g for m, g in GOALS.items()}
    bit_exact = all(v["bit_exact"] for r in rows for v in r["verify"] if v["stage"] == "hw_layers")
    out = {
        "benchmark": "finn_vs_cost", "board": BOARD, "models": list(MODELS), "compression": "OPQ 20x CR_w, pow2 scales",
        "epochs": args.epochs, "folded_target_fps": FOLDED_FPS, "goals": GOALS, "goals_met": goals_met,
        "per_metric": per_metric, "bit_exact_hw_layers": bit_exact, "rows": rows,
        "seconds": round(time.perf_counter() - t_all, 1),
        "versions": {"python": platform.python_version(), **(rows[0]["finn_versions"] or {})},
        "notes": [
            "'hw_layers' = FINN's Python execution of the graph of FINN hardware layers (before specialisation; "
            "specialised HLS/RTL layers only execute in cppsim/rtlsim, which need Vitis/Vivado)",
            "the folded rows execute 64 test samples (the execution precedes folding, so it is the same graph); "
            "the fastest-fit rows execute the whole test set",
            "LUT_with_finn_types: our formulas with FINN's minimised accumulator/weight widths (FINN derives the "
            "accumulator from the actual integer weights; our cost model uses the data-type bound)",
        ],
    }
    write_json(args.out, out)
    _plot(rows, Path(args.out).with_suffix(".png"))
    print(f"bit-exact (hw layers): {bit_exact}")
    for m, s in per_metric.items():
        print(f"{m:<20} exact {s['exact']}/{s['layers']}, max |rel err| {100 * s['max_abs_rel_err']:.2f}%, "
              f"mean {100 * s['mean_abs_rel_err']:.2f}%")
    print(f"goals met: {goals_met}")
    return 0 if bit_exact and all(goals_met.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
