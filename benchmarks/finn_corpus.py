"""The float-ONNX corpus (tests/corpus.py) through the FINN flow: `compress --data M.npz` then `build --flow finn`.

For every corpus model: the run is compressed as tests/test_corpus_flows.py does (its own .npz, target CR 8, no
finetuning), then `opq-hw build RUN --flow finn --board pynq-z2` runs FINN's steps in the FINN environment and
checks FINN's Python execution of the graph against the run's golden outputs after each stage (FINN's own
simulation levels; the dataflow graph after `hw_layers` is the one FINN synthesises). A model passes when the
last stage is bit-exact on all golden samples; otherwise the record keeps the error the build printed (a refusal
by name, or FINN's own failure). CI runs a subset (tests/test_corpus_flows.py); this script runs the whole
corpus and writes benchmarks/results/finn_corpus.json.

    OPQ_HW_FINN_PYTHON=.venv-finn/bin/python python benchmarks/finn_corpus.py [--names a,b] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def one(name: str, entry, work: Path) -> dict:
    from opq_hw.pipeline import CompressConfig, compress_run

    run = work / f"run_{name}"
    cfg = CompressConfig(model=str(entry.onnx), data=str(entry.npz), target_cr=8, epochs=0)
    compress_run(cfg, run, progress=False, log=lambda *_: None)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "opq_hw.cli", "build", str(run), "--flow", "finn", "--board",
                           "pynq-z2"], capture_output=True, text=True, env=env, timeout=1800)
    rec: dict = {"model": name, "returncode": proc.returncode, "seconds": round(time.perf_counter() - t0, 1),
                 "traceback": "Traceback" in proc.stderr}
    rep = run / "reports" / "finn.json"
    if rep.is_file():
        r = json.loads(rep.read_text())
        rec["finn_status"] = r.get("finn_status")
        rec["verify"] = [{k: v[k] for k in ("stage", "n", "mismatched_samples", "bit_exact")} for v in r.get("verify", [])]
        rec["software_nodes"] = r.get("software_nodes")
    last = rec.get("verify", [])[-1:] or [{}]
    rec["result"] = ("bit-exact" if proc.returncode == 0 and last[0].get("bit_exact") else "refused")
    if proc.returncode != 0:
        rec["error"] = (proc.stderr.strip().splitlines() or [""])[-1][:400].replace(str(work), "WORK")
    return rec


def main(argv=None) -> int:
    from corpus import NAMES, build_corpus

    ap = argparse.ArgumentParser()
    ap.add_argument("--names", default=",".join(NAMES))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "finn_corpus.json"))
    a = ap.parse_args(argv)
    if not os.environ.get("OPQ_HW_FINN_PYTHON"):
        print("set OPQ_HW_FINN_PYTHON to the FINN environment's python (make finn-env)", file=sys.stderr)
        return 2
    names = a.names.split(",")
    out_path = Path(a.out)
    done = {r["model"]: r for r in json.loads(out_path.read_text())["models"]} if out_path.is_file() else {}
    with tempfile.TemporaryDirectory(prefix="opq-finn-corpus-") as d:
        corpus = build_corpus(Path(d) / "corpus", names=names)
        for n in names:  # each result is written at once; a later call with --names replaces those models' rows
            done[n] = one(n, corpus[n], Path(d))
            print(json.dumps({k: done[n].get(k) for k in ("model", "result", "seconds", "error")}), flush=True)
            rows = [done[m] for m in NAMES if m in done]
            out = {"flow": "finn", "board": "pynq-z2", "n_models": len(rows),
                   "bit_exact": sum(r["result"] == "bit-exact" for r in rows),
                   "refused": sum(r["result"] == "refused" for r in rows), "models": rows}
            out_path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"{out['bit_exact']}/{len(rows)} bit-exact, {out['refused']} refused -> {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
