"""Fit the cost model's rtl-da (or, with --arch seq, rtl-seq) coefficients per family against real
Yosys synthesis, and report the held-out error.

Layers: random conv/dense layers (not the demo model): shapes, weight bits (2-8) and sparsity
(0-90%) drawn with a fixed seed, each a full layer module of the open RTL flow (window or
collector + da4ml kernel + requantization), synthesized alone with Yosys 0.23 for xc7, ecp5 and
ice40 in one Yosys process per family. Features: the cost model's own `rtl_da` count of adder
bits X (coefficients at 1/0) and whether the layer is a conv (its line buffer, window and
counters). Fit on the training layers (least squares, LUT = a * X + b + c * conv; FF = d * X +
the model's register term), report MAPE on the held-out layers, and write the coefficients with
provenance to board_configs/rtl_da_calibration.yaml. `--refit` fits again from the synthesis rows
committed in benchmarks/results/rtl_calibration.json (the layers are regenerated from the seed)
without running Yosys.

--arch seq: the same random layers as sequential-architecture layer modules (opq_hw.rtl.seq: ROM
of the nonzero weights + one multiply-accumulate unit + requantization; the activation buffers
live in the top level and are not part of a layer module). Features from `cost.seq_features`;
LUT = a + b * acc + c * table_bits and FF = d + e * acc + f * (address + pointer bits), least
squares on the training layers; ROM bits, BRAM, DSP and cycles are exact counts, not fitted.
Writes board_configs/rtl_seq_calibration.yaml and benchmarks/results/rtl_seq_calibration.json.

    python benchmarks/rtl_calibration.py [--n 24] [--families xc7,ecp5,ice40] [--arch da4ml|seq]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from opq_hw.artifact import write_bytes, write_json  # noqa: E402
from opq_hw.rtl import eda  # noqa: E402
from opq_hw.rtl.gen import generate, write_design  # noqa: E402
from opq_hw.rtl.intnet import IntLayer, IntNet  # noqa: E402


def random_layer(rng: np.random.Generator, i: int):
    """(IntNet of [layer with requant, tiny dense head], LayerParams-like dict) for layer i."""
    kind = "conv" if i % 2 == 0 else "linear"
    bits = int(rng.choice([2, 3, 4, 5, 6, 8]))
    sparsity = float(rng.choice([0.0, 0.3, 0.5, 0.7, 0.9]))
    qmax = 2 ** (bits - 1) - 1
    if kind == "conv":
        cin = int(rng.choice([1, 2, 4]))
        cout = int(rng.choice([4, 8, 16]))
        h = w = int(rng.choice([6, 8]))
        shape_w = (cout, cin, 3, 3)
        in_shape = (cin, h, w)
        out_shape = (cout, h, w)
    else:
        cin = int(rng.choice([16, 32, 48]))
        cout = int(rng.choice([8, 16, 32]))
        shape_w = (cout, cin)
        in_shape = (1, 1, cin)
        out_shape = (cout, 1, 1)
    wq = rng.integers(-qmax, qmax + 1, size=shape_w)
    wq[rng.random(shape_w) < sparsity] = 0
    b = rng.integers(-200, 200, size=cout)
    in_bits, in_signed = 8, True
    L = IntLayer(f"cal{i}", kind, wq.astype(np.int64), b.astype(np.int64), in_bits, in_signed, in_shape, out_shape,
                 padding=(1, 1) if kind == "conv" else (0, 0), w_exp=tuple([-10] * cout),
                 out_shift=tuple(int(s) for s in rng.integers(-8, -3, size=cout)), out_bits=8, out_exp=-4)
    head = IntLayer(f"head{i}", "linear", rng.integers(-1, 2, size=(2, int(np.prod(out_shape)))).astype(np.int64),
                    np.zeros(2, dtype=np.int64), 8, False, out_shape, (2, 1, 1), w_exp=(-12, -12))
    net = IntNet(in_shape if kind == "conv" else (1, 1, cin), in_bits, in_signed, -4, [L, ("flatten",), head])
    from opq_hw.cost import LayerParams

    fan_in = int(np.prod(shape_w[1:]))
    p = LayerParams(name=L.name, kind="conv2d" if kind == "conv" else "linear", fan_in=fan_in, out_channels=cout,
                    out_pixels=int(np.prod(out_shape[1:])), in_pixels=int(np.prod(in_shape[1:])) if kind == "conv" else 1,
                    in_channels=cin, kernel=(3, 3) if kind == "conv" else (), in_width=in_shape[2],
                    n_weights=int(wq.size), nnz=int(np.count_nonzero(wq)), w_bits=bits, a_bits=in_bits, a_signed=in_signed,
                    has_bias=True, in_words=cin * (h + 2) * (w + 2) if kind == "conv" else fan_in)
    return net, p


def features(p, board) -> tuple[float, float]:
    """(adder-bit term X, FF register term R) of the cost model with unit coefficients."""
    from opq_hw.cost import rtl_da

    base = {"lut_per_adder_bit": 1.0, "ff_per_adder_bit": 0.0, "digit_scale": 1.0, "lut_per_layer": 0.0,
            "provenance": "unit"}
    r = rtl_da(p, board, base)
    return float(np.asarray(r["LUT"])), float(np.asarray(r["FF"]))


def synth_family(family: str, designs: list[tuple[str, list[Path]]], work: Path) -> dict[str, dict]:
    """One Yosys process: each layer module synthesized alone (design -load between them)."""
    files = sorted({p for _, fs in designs for p in fs})
    lines = [f"read_verilog {p}" for p in files] + ["design -save base"]
    cmd = eda.SYNTH_CMD[family]
    for mod, _ in designs:
        lines += ["design -load base", cmd.format(top=mod, json="x.json").replace(" -json x.json", ""),
                  f"tee -o {mod}.stat stat"]
    (work / f"cal_{family}.ys").write_text("\n".join(lines) + "\n")
    t = time.time()
    subprocess.run(["yosys", "-q", "-l", f"cal_{family}.log", "-s", f"cal_{family}.ys"], cwd=work, check=True,
                   capture_output=True)
    out = {}
    for mod, _ in designs:
        st = eda.parse_stat((work / f"{mod}.stat").read_text(), family, mod)
        st.pop("cells")
        out[mod] = st
    out["_seconds"] = time.time() - t
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=24, help="random layers (half train, half held out)")
    ap.add_argument("--families", default="xc7,ecp5,ice40")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--arch", default="da4ml", choices=["da4ml", "seq"])
    ap.add_argument("--refit", action="store_true", help="da4ml: refit from the committed rows, no synthesis")
    args = ap.parse_args()
    if args.arch == "seq":
        return main_seq(args)
    from opq_hw.boards import load_board

    boards = {"xc7": load_board("arty-a7-100t"), "ecp5": load_board("ecp5-85f"), "ice40": load_board("ice40-up5k")}
    rng = np.random.default_rng(args.seed)
    layers = []
    if args.refit:
        layers, synth = _committed_rows(rng)
        fams = list(synth)
    else:
        layers, synth, fams = _synthesize_da(rng, args)
    _fit_da(layers, synth, fams, boards, args)


def _committed_rows(rng):
    """The layers regenerated from the seed, with the synthesis counts committed in rtl_calibration.json."""
    old = json.loads((ROOT / "benchmarks" / "results" / "rtl_calibration.json").read_text())
    layers = []
    for i in range(old["n_layers"]):
        _, p = random_layer(rng, i)
        da = next(r["da4ml"] for r in next(iter(old["families"].values()))["rows"] if r["i"] == i)
        layers.append({"i": i, "kind": p.kind, "fan_in": p.fan_in, "out_channels": p.out_channels, "w_bits": p.w_bits,
                       "nnz": int(p.nnz), "n_weights": p.n_weights, "da4ml_cost": da, "_p": p})
    synth = {fam: {**{f"opq_L0_c{r['i']}": {"lut_equiv": r["lut"], "ff": r["ff"]} for r in fr["rows"]},
                   "_seconds": fr["synth_seconds"]} for fam, fr in old["families"].items()}
    return layers, synth


def _synthesize_da(rng, args):
    layers = []
    with tempfile.TemporaryDirectory(prefix="opq-rtlcal-") as td:
        work = Path(td)
        # all layer modules into one source folder, renamed apart
        designs = []
        for i in range(args.n):
            net, p = random_layer(rng, i)
            d = generate(net, pipeline=0.0)
            sub = work / f"l{i}"
            renamed = _rename_into(write_design(d, sub), i, ("opq_L0", "opq_L1", "opq_k0", "opq_k1", "opq_top"))
            keep = [f for f in renamed if f.name.startswith(("opq_L0_", "opq_k0_"))]
            shared = [f for f in renamed if not f.name.startswith(("opq_L", "opq_k", "opq_top"))]
            designs.append((f"opq_L0_c{i}", keep + shared))
            layers.append({"i": i, "kind": p.kind, "fan_in": p.fan_in, "out_channels": p.out_channels,
                           "w_bits": p.w_bits, "nnz": int(p.nnz), "n_weights": p.n_weights,
                           "da4ml_cost": d.layer_modules[0]["da4ml_cost"], "_p": p})
        # one copy of each shared file (identical across designs)
        uniq: dict[str, Path] = {}
        for mod, fs in designs:
            for f in fs:
                if not f.name.startswith(("opq_L", "opq_k")):
                    uniq.setdefault(f.name, f)
        designs = [(mod, [f for f in fs if f.name.startswith(("opq_L", "opq_k"))] + list(uniq.values()))
                   for mod, fs in designs]
        fams = [f for f in args.families.split(",") if f]
        synth = {}
        for fam in fams:
            print(f"synthesizing {len(designs)} layers for {fam} ...", flush=True)
            synth[fam] = synth_family(fam, designs, work)
    return layers, synth, fams


def _fit_da(layers, synth, fams, boards, args) -> None:
    train = [L for L in layers if L["i"] % 2 == 0 or L["i"] % 4 == 1]  # 3/4 train (both kinds), 1/4 held out
    test = [L for L in layers if L not in train]
    result = {"n_layers": len(layers), "n_train": len(train), "n_test": len(test), "yosys": eda.yosys_version(),
              "families": {}}
    cal_yaml = {}
    for fam in fams:
        b = boards[fam]
        rows = []
        for L in layers:
            X, R = features(L["_p"], b)
            s = synth[fam][f"opq_L0_c{L['i']}"]
            rows.append({"i": L["i"], "X": X, "R": R, "conv": float(L["kind"] != "linear"), "lut": s["lut_equiv"],
                         "ff": s["ff"], "da4ml": L["da4ml_cost"]})
        tr = [r for r in rows if any(r["i"] == L["i"] for L in train)]
        te = [r for r in rows if r not in tr]
        A = np.array([[r["X"], 1.0, r["conv"]] for r in tr])
        y = np.array([r["lut"] for r in tr], dtype=float)
        (a, c0, cc), *_ = np.linalg.lstsq(A, y, rcond=None)
        Xf = np.array([r["X"] for r in tr])
        yf = np.array([r["ff"] - r["R"] for r in tr], dtype=float)
        ffa = float(max(0.0, (Xf @ yf) / (Xf @ Xf))) if (Xf @ Xf) > 0 else 0.0

        def mape(rs, pred):
            return float(np.mean([abs(pred(r) - r[k]) / r[k] for r in rs for k in ["lut"]])) if rs else None

        lut_pred = lambda r: a * r["X"] + c0 + cc * r["conv"]  # noqa: E731
        ff_pred = lambda r: ffa * r["X"] + r["R"]  # noqa: E731
        res = {"lut_per_adder_bit": float(a), "lut_per_layer": float(c0), "lut_per_conv_layer": float(cc),
               "ff_per_adder_bit": ffa,
               "lut_mape_train": mape(tr, lut_pred), "lut_mape_heldout": mape(te, lut_pred),
               "ff_mape_heldout": float(np.mean([abs(ff_pred(r) - r["ff"]) / r["ff"] for r in te])) if te else None,
               "da4ml_estimate_mape_heldout": float(np.mean([abs(r["da4ml"] - r["lut"]) / r["lut"] for r in te])),
               "synth_seconds": round(synth[fam]["_seconds"], 1), "rows": rows}
        result["families"][fam] = res
        cal_yaml[fam] = {"lut_per_adder_bit": round(float(a), 4), "ff_per_adder_bit": round(ffa, 4),
                         "digit_scale": 1.0, "lut_per_layer": round(float(c0), 1),
                         "lut_per_conv_layer": round(float(cc), 1),
                         "provenance": (f"fitted by benchmarks/rtl_calibration.py (seed {args.seed}) on {len(tr)} random "
                                        f"conv/dense layer modules of the open RTL flow (window/collector + da4ml kernel + "
                                        f"requant, not the demo model), {eda.yosys_version().split('(')[0].strip()} "
                                        f"{eda.SYNTH_CMD[fam].split(' -top')[0]}; LUT = LUT4 + 2 x CCU2C on ecp5; held-out "
                                        f"LUT MAPE {res['lut_mape_heldout'] * 100:.1f}% on {len(te)} layers"
                                        + (" (refitted from the committed synthesis rows)" if args.refit else ""))}
        print(f"{fam}: LUT = {a:.3f} X + {c0:.0f} + {cc:.0f} conv; held-out LUT MAPE {res['lut_mape_heldout'] * 100:.1f}%, "
              f"FF MAPE {res['ff_mape_heldout'] * 100:.1f}%, da4ml estimate MAPE "
              f"{res['da4ml_estimate_mape_heldout'] * 100:.1f}%", flush=True)
    _write(result, cal_yaml, "rtl_calibration.json", "rtl_da_calibration.yaml",
           "# rtl-da cost-model coefficients per family, fitted against Yosys synthesis of the open RTL flow's\n"
           "# layer modules; written by benchmarks/rtl_calibration.py (read by opq_hw.cost.rtl_calibration).\n")
    print(json.dumps({f: {k: v for k, v in r.items() if k != "rows"} for f, r in result["families"].items()}, indent=1))


def _rename_into(files: list[Path], i: int, names: tuple[str, ...]) -> list[Path]:
    """Rename this design's modules apart (suffix _c<i>) so that all layers live in one Yosys session."""
    out = []
    for f in files:
        txt = f.read_text()
        for m in names:
            txt = txt.replace(m, f"{m}_c{i}")
        if f.name.startswith(names):
            nf = f.with_name(f.name.replace(".v", f"_c{i}.v"))
            nf.write_text(txt)
            f.unlink()
            out.append(nf)
        else:
            out.append(f)
    return out


def _lstsq(rows: list[dict], xkeys: tuple[str, ...], ykey: str) -> np.ndarray:
    A = np.array([[1.0] + [r[k] for k in xkeys] for r in rows])
    y = np.array([r[ykey] for r in rows], dtype=float)
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    return coef


def main_seq(args) -> None:
    from opq_hw.cost import seq_features
    from opq_hw.rtl.seq import generate_seq

    rng = np.random.default_rng(args.seed)
    layers, designs = [], []
    with tempfile.TemporaryDirectory(prefix="opq-rtlcal-seq-") as td:
        work = Path(td)
        for i in range(args.n):
            net, p = random_layer(rng, i)
            d = generate_seq(net)
            files = _rename_into(write_design(d, work / f"l{i}"), i, ("opq_S0", "opq_S1", "opq_top"))
            designs.append((f"opq_S0_c{i}", [f for f in files if f.name.startswith("opq_S0_")]))
            f = seq_features(p)
            layers.append({"i": i, "kind": p.kind, "fan_in": p.fan_in, "out_channels": p.out_channels, "w_bits": p.w_bits,
                           "nnz": int(p.nnz), "acc": float(f["acc"]), "table_bits": float(f["table_bits"]),
                           "addr_ptr": float(f["addr"] + f["ptr"]), "rom_entries": d.layer_modules[0]["rom_entries"],
                           "acc_w_design": d.layer_modules[0]["acc_w"]})
        fams = [f for f in args.families.split(",") if f]
        synth = {}
        for fam in fams:
            print(f"synthesizing {len(designs)} seq layers for {fam} ...", flush=True)
            synth[fam] = synth_family(fam, designs, work)
    train = [L for L in layers if L["i"] % 4 != 3]  # 3/4 train (both kinds), 1/4 held out
    test = [L for L in layers if L["i"] % 4 == 3]
    result = {"arch": "seq", "n_layers": len(layers), "n_train": len(train), "n_test": len(test),
              "yosys": eda.yosys_version(), "families": {}}
    cal_yaml = {}
    for fam in fams:
        rows = [{**L, "lut": synth[fam][f"opq_S0_c{L['i']}"]["lut_equiv"], "ff": synth[fam][f"opq_S0_c{L['i']}"]["ff"],
                 "dsp": synth[fam][f"opq_S0_c{L['i']}"]["dsp"], "bram": synth[fam][f"opq_S0_c{L['i']}"]["bram18"]}
                for L in layers]
        tr = [r for r in rows if r["i"] % 4 != 3]
        te = [r for r in rows if r["i"] % 4 == 3]
        lc = _lstsq(tr, ("acc", "table_bits"), "lut")
        fc = _lstsq(tr, ("acc", "addr_ptr"), "ff")

        def lut(r):
            return lc[0] + lc[1] * r["acc"] + lc[2] * r["table_bits"]

        def ff(r):
            return fc[0] + fc[1] * r["acc"] + fc[2] * r["addr_ptr"]

        def mape(rs, f, k):
            return float(np.mean([abs(f(r) - r[k]) / r[k] for r in rs]))

        res = {"lut_coef": [float(v) for v in lc], "ff_coef": [float(v) for v in fc],
               "lut_mape_train": mape(tr, lut, "lut"), "lut_mape_heldout": mape(te, lut, "lut"),
               "ff_mape_train": mape(tr, ff, "ff"), "ff_mape_heldout": mape(te, ff, "ff"),
               "dsp_per_layer": sorted({r["dsp"] for r in rows}), "synth_seconds": round(synth[fam]["_seconds"], 1),
               "rows": rows}
        result["families"][fam] = res
        cal_yaml[fam] = {"lut_per_layer": round(float(lc[0]), 2), "lut_per_acc_bit": round(float(lc[1]), 4),
                         "lut_per_table_bit": round(float(lc[2]), 4), "ff_per_layer": round(float(fc[0]), 2),
                         "ff_per_acc_bit": round(float(fc[1]), 4), "ff_per_addr_bit": round(float(fc[2]), 4),
                         "provenance": (f"fitted by benchmarks/rtl_calibration.py --arch seq (seed {args.seed}) on "
                                        f"{len(tr)} random conv/dense seq layer modules (not the demo model), "
                                        f"{eda.yosys_version().split('(')[0].strip()} {eda.SYNTH_CMD[fam].split(' -top')[0]}; "
                                        f"held-out ({len(te)} layers) LUT MAPE {res['lut_mape_heldout'] * 100:.1f}%, "
                                        f"FF MAPE {res['ff_mape_heldout'] * 100:.1f}%")}
        print(f"{fam}: held-out LUT MAPE {res['lut_mape_heldout'] * 100:.1f}% (train {res['lut_mape_train'] * 100:.1f}%), "
              f"FF MAPE {res['ff_mape_heldout'] * 100:.1f}% (train {res['ff_mape_train'] * 100:.1f}%), DSP per layer "
              f"{res['dsp_per_layer']}", flush=True)
    _write(result, cal_yaml, "rtl_seq_calibration.json", "rtl_seq_calibration.yaml",
           "# rtl-seq cost-model coefficients per family (LUT and FF only; ROM, BRAM, DSP and cycles are exact counts),\n"
           "# fitted against Yosys synthesis of the sequential architecture's layer modules; written by\n"
           "# benchmarks/rtl_calibration.py --arch seq (read by opq_hw.cost.rtl_calibration).\n")


def _write(result: dict, cal_yaml: dict, json_name: str, yaml_name: str, header: str) -> None:
    """The fit record (benchmarks/results) and the coefficients with provenance (board_configs), atomically."""
    import yaml

    write_json(ROOT / "benchmarks" / "results" / json_name, result)
    write_bytes(ROOT / "board_configs" / yaml_name, (header + yaml.safe_dump(cal_yaml, sort_keys=True, width=200)).encode())


if __name__ == "__main__":
    main()
