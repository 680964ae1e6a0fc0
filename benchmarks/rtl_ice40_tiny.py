"""A model small enough for the iCE40 UP5K through the whole open RTL flow (the digits demo CNN does
not fit its 5,280 LUTs): a tiny digits CNN (conv 1->4, pool, conv 4->8, pool, dense 32->10; 644
weights), pre-trained here, OPQ-compressed (pow2), then RTL -> Verilator -> Yosys -> nextpnr-ice40
-> icepack bitstream. Writes benchmarks/results/rtl_ice40_tiny.json.

    python benchmarks/rtl_ice40_tiny.py [--board ice40-up5k] [--cr 10]
"""
from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))  # so that the run's model reference "rtl_ice40_tiny:tiny_cnn" imports


def tiny_cnn():
    from torch import nn

    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(32, 10))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--board", default="ice40-up5k")
    ap.add_argument("--cr", type=float, default=10.0)
    ap.add_argument("--out", type=Path, help="run directory (default: a temp dir)")
    args = ap.parse_args()
    import torch

    from opq_hw.artifact import write_bytes, write_json
    from opq_hw.data import load_dataset
    from opq_hw.errors import OpqError
    from opq_hw.training import train
    from opq_hw.flows.rtl_flow import build
    from opq_hw.pipeline import CompressConfig, compress_run

    tmp = Path(tempfile.mkdtemp(prefix="opq-ice40-"))
    torch.manual_seed(0)
    model = tiny_cnn()
    xtr, ytr, _, _ = load_dataset("digits")
    train(model, xtr, ytr, epochs=40, lr=3e-3, batch_size=64, seed=0, progress=False, desc="pretrain")
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    wpath = write_bytes(tmp / "tiny_cnn.pt", buf.getvalue())
    run = compress_run(CompressConfig(model="rtl_ice40_tiny:tiny_cnn", weights=str(wpath), data="digits",
                                      target_cr=args.cr, epochs=2), args.out or tmp / "run", progress=False,
                       overwrite=True)
    try:
        s = build(run, board=args.board, rtl_arch="da4ml")  # this script records the da4ml architecture
        ok, err = True, None
    except OpqError as e:
        import json

        s = json.loads((Path(run) / "build" / "rtl" / "rtl_build.json").read_text())
        ok, err = False, str(e)
    write_json(HERE / "results" / f"rtl_tiny_{args.board}.json", {"ok": ok, "error": err, "model": "tiny_cnn (644 weights)",
                                                                   "target_cr": args.cr, "summary": s})


if __name__ == "__main__":
    main()
