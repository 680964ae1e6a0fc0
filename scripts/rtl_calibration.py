"""Fit the cost model's rtl-da (or, with --arch seq, rtl-seq) coefficients per family against real
Yosys synthesis, and report the held-out error.

Layers: random conv/dense layers (not the demo model): shapes, weight bits (2-8) and sparsity
(0-90%) drawn with a fixed seed, each a full layer module of the open RTL flow (window or
collector + da4ml kernel + requantization), synthesized alone with Yosys 0.23 for xc7, ecp5 and
ice40 (one Yosys process per family, two at a time). 3/4 of the layers are fitted, 1/4 held out
(conv and dense alike); the held-out ones are also synthesized with pipelined kernels (da4ml
latency cutoff 5). The fit (see `_fit_da`): da4ml's cost from CSD digits and adder width, once
for all families (the training layers plus 240 more layers solved by da4ml alone), then per family
the LUT coefficients of `opq_hw.cost.rtl_da` by non-negative least squares. Flip-flops are not
fitted: the model counts them, and the held-out check says how exactly. Writes
board_configs/rtl_da_calibration.yaml and benchmarks/results/rtl_calibration.{json,png};
`--refit` fits again from the synthesis counts committed in rtl_calibration.json (the layers and
da4ml's solutions are regenerated from the seed) without running Yosys.

--act4 N (with --add: synthesize only what the committed rows lack): N more random layers with 4-bit
unsigned inputs and outputs (seed + ACT4_SEED), as every layer after the first of a whole design, for the
families given; the fit's `lut_per_da_act_bit` (LUTs per unit of da4ml cost per input bit, free sign) is
0 for a family without them. The da4ml-cost law here stays the 3-term one of the 8-bit layers;
benchmarks/rtl_whole_design.py --refit writes its 4-term law back into the YAML.

--last N (with --add, as --act4): N random LAST layers (seed + LAST_SEED, tags z<i>): dense, no
requantizer (the accumulators are the logits, registered, as every whole design's output layer), wide
fan-in (64-256 inputs) and few outputs (4-16), unsigned inputs (after a ReLU) at 8 bits (even i) and 4
bits (odd i). Every other random layer has a requantizer, so without these rows the fit cannot tell the
LUTs per unit of da4ml cost from those per requantized accumulator bit; with them, `lut_per_last_da` (the
last layer's LUTs per unit of da4ml cost beyond `lut_per_da`) is fitted for the families of LAST_DA_FAMILIES
(elsewhere the rows are held-out checks). With --act4 or --last, --add synthesizes only the rows of the
groups named (the random 4-bit layers, the last layers).

--arch seq: runs benchmarks/rtl_whole_design.py (the rtl-seq coefficients are fitted on whole designs
of real model shapes, layer modules and top level, with the memories mapped by Yosys's own rule;
random single layers missed the buffers, the top level and the LUT-RAM/block-RAM split).

--ff-check: the flip-flop count of pipelined kernels on layers never used to develop its rules
(opq_hw.rtl.kept_bits was worked out on this script's layers of seeds 0 to 3): fresh
random layers from seeds 10, 11, 12, pipelined at da4ml latency cutoffs 1.5, 3 and 8 (one to 13
stages), each layer module synthesized per family; the cost model fed with da4ml's solution
(rtl-da FF, xc7 SRLs included) against Yosys. Writes benchmarks/results/rtl_ff_check.json.

    python scripts/rtl_calibration.py [--n 32] [--families xc7,ecp5,ice40] [--arch da4ml|seq] [--refit]
    python scripts/rtl_calibration.py --add --act4 16 --families xc7
    python scripts/rtl_calibration.py --add --last 16 --families ecp5
    python scripts/rtl_calibration.py --ff-check [--n 12]
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
from opq_hw.rtl.intnet import Flatten, IntLayer, IntNet  # noqa: E402


def random_layer(rng: np.random.Generator, i: int, max_digits: float = 3000.0, act_bits: int = 8):
    """(IntNet of [layer with requant, tiny dense head], LayerParams) for layer i: conv (even i) or
    dense (odd i), shapes, weight bits and sparsity drawn from `rng`; draws again while the layer
    would hold more than `max_digits` CSD digits (a ~10k-LUT kernel: larger ones take Yosys minutes).
    act_bits 8: signed 8-bit inputs and outputs (the first layer of a design); 4: unsigned 4-bit
    inputs and outputs, as every layer after the first of the whole designs (conv: up to 8 input
    channels, the stream's 32 bits per pixel)."""
    from opq_hw.cost import LayerParams, csd_digits_mean

    kind = "conv" if i % 2 == 0 else "linear"
    while True:
        bits = int(rng.choice([2, 3, 4, 5, 6, 8]))
        sparsity = float(rng.choice([0.0, 0.3, 0.5, 0.7, 0.9]))
        if kind == "conv":
            cin = int(rng.choice([1, 2, 4] if act_bits == 8 else [2, 4, 8]))  # the stream takes <= 32 bits per pixel
            cout = int(rng.choice([4, 8, 16, 32]))
            h = w = int(rng.choice([6, 8]))
            shape_w = (cout, cin, 3, 3)
            in_shape, out_shape = (cin, h, w), (cout, h, w)
        else:
            cin = int(rng.choice([16, 32, 48, 64]))
            cout = int(rng.choice([8, 16, 32]))
            shape_w = (cout, cin)
            in_shape, out_shape = (1, 1, cin), (cout, 1, 1)
        if np.prod(shape_w) * (1 - sparsity) * csd_digits_mean(bits) <= max_digits:
            break
    qmax = 2 ** (bits - 1) - 1
    wq = rng.integers(-qmax, qmax + 1, size=shape_w)
    wq[rng.random(shape_w) < sparsity] = 0
    b = rng.integers(-200, 200, size=cout)
    in_bits, in_signed = act_bits, act_bits == 8
    L = IntLayer(f"cal{i}", kind, wq.astype(np.int64), b.astype(np.int64), in_bits, in_signed, in_shape, out_shape,
                 padding=(1, 1) if kind == "conv" else (0, 0), w_exp=tuple([-10] * cout),
                 out_shift=tuple(int(s) for s in rng.integers(-8, -3, size=cout)), out_bits=act_bits, out_exp=-4)
    head = IntLayer(f"head{i}", "linear", rng.integers(-1, 2, size=(2, int(np.prod(out_shape)))).astype(np.int64),
                    np.zeros(2, dtype=np.int64), act_bits, False, out_shape, (2, 1, 1), w_exp=(-12, -12))
    net = IntNet(in_shape if kind == "conv" else (1, 1, cin), in_bits, in_signed, -4, [L, Flatten(), head])
    fan_in = int(np.prod(shape_w[1:]))
    p = LayerParams(name=L.name, kind="conv2d" if kind == "conv" else "linear", fan_in=fan_in, out_channels=cout,
                    out_pixels=int(np.prod(out_shape[1:])), in_pixels=int(np.prod(in_shape[1:])) if kind == "conv" else 1,
                    in_channels=cin, kernel=(3, 3) if kind == "conv" else (), in_width=in_shape[2],
                    n_weights=int(wq.size), nnz=int(np.count_nonzero(wq)), w_bits=bits, a_bits=in_bits, a_signed=in_signed,
                    has_bias=True, in_words=cin * (h + 2) * (w + 2) if kind == "conv" else fan_in)
    return net, p


def random_last_layer(rng: np.random.Generator, i: int, max_digits: float = 1500.0):
    """(IntNet of [Flatten, last layer], LayerParams) for last layer i: dense, no requantizer (its registered
    accumulators are the design's logits, gen.py), fan-in 64-256 laid out as C channels x N pixels (the
    collector's stream, <= 32 bits per pixel, at least as many pixels as outputs), 4-16 outputs, unsigned
    inputs of 8 (even i) or 4 (odd i) bits, as the output layer of a whole design after a ReLU; weight bits
    and sparsity drawn as in `random_layer`; at most `max_digits` CSD digits (the last layers of
    benchmarks/rtl_whole_design.py's designs hold 60-1,310)."""
    from opq_hw.cost import LayerParams, csd_digits_mean

    act_bits = 8 if i % 2 == 0 else 4
    while True:
        bits = int(rng.choice([2, 3, 4, 5, 6, 8]))
        sparsity = float(rng.choice([0.0, 0.3, 0.5, 0.7, 0.9]))
        fan_in = int(rng.choice([64, 96, 128, 160, 192, 256]))
        cout = int(rng.choice([4, 8, 10, 16]))
        c = int(rng.choice([1, 2, 4] if act_bits == 8 else [1, 4, 8]))
        if cout * fan_in * (1 - sparsity) * csd_digits_mean(bits) <= max_digits and fan_in // c >= cout:
            break  # (the serializer sends one logit per input pixel: at least as many pixels as outputs)
    qmax = 2 ** (bits - 1) - 1
    wq = rng.integers(-qmax, qmax + 1, size=(cout, fan_in))
    wq[rng.random(wq.shape) < sparsity] = 0
    b = rng.integers(-200, 200, size=cout)
    in_shape = (c, 1, fan_in // c)
    L = IntLayer(f"last{i}", "linear", wq.astype(np.int64), b.astype(np.int64), act_bits, False, in_shape, (cout, 1, 1),
                 w_exp=tuple([-10] * cout))
    net = IntNet(in_shape, act_bits, False, -4, [Flatten(), L])
    p = LayerParams(name=L.name, kind="linear", fan_in=fan_in, out_channels=cout, out_pixels=1, in_pixels=1,
                    in_channels=fan_in, kernel=(), in_width=1, n_weights=int(wq.size), nnz=int(np.count_nonzero(wq)),
                    w_bits=bits, a_bits=act_bits, a_signed=False, has_bias=True, in_words=fan_in, last=True)
    return net, p


def synth_family(family: str, designs: list[tuple[str, list[Path]]], work: Path) -> dict[str, dict]:
    """One Yosys process: each layer module synthesized alone (design -load between them)."""
    files = sorted({p for _, fs in designs for p in fs})
    lines = [f"read_verilog {p}" for p in files] + ["design -save base"]
    cmd = eda.SYNTH_CMD[family]
    for mod, _ in designs:
        lines += ["design -load base", cmd.format(top=mod, json="x.json").replace(" -json x.json", ""),
                  f"tee -o {family}_{mod}.stat stat"]
    (work / f"cal_{family}.ys").write_text("\n".join(lines) + "\n")
    t = time.time()
    r = subprocess.run(["yosys", "-q", "-l", f"cal_{family}.log", "-s", f"cal_{family}.ys"], cwd=work,
                       capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"Yosys failed ({family}): {r.stderr.strip()[-2000:]}")
    out = {}
    for mod, _ in designs:
        st = eda.parse_stat((work / f"{family}_{mod}.stat").read_text(), family, mod)
        st.pop("cells")
        out[mod] = st
    out["_seconds"] = time.time() - t
    return out


PIPE = 5.0  # da4ml latency cutoff of the pipelined variants (the flow's --pipeline)


def heldout(i: int) -> bool:
    """1/4 of the layers, conv and dense alike, never seen by the fit."""
    return i % 8 in (3, 4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32, help="random layers (3/4 fitted, 1/4 held out)")
    ap.add_argument("--families", default="xc7,ecp5,ice40")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--arch", default="da4ml", choices=["da4ml", "seq"])
    ap.add_argument("--refit", action="store_true", help="da4ml: refit from the committed rows, no synthesis")
    ap.add_argument("--ff-check", action="store_true", help="pipelined flip-flop counts on fresh layers")
    ap.add_argument("--act4", type=int, default=None,
                    help="random layers with 4-bit unsigned inputs and outputs (tags q<i>; default: as committed, else 0)")
    ap.add_argument("--last", type=int, default=None,
                    help="random last layers (no requantizer, tags z<i>; default: as committed, else 0)")
    ap.add_argument("--add", action="store_true",
                    help="keep the committed rows' synthesis counts: synthesize only the rows (or --families) they lack")
    args = ap.parse_args()
    if args.arch == "seq":
        return main_seq(args)
    if args.ff_check:
        return main_ff_check(args)
    path = ROOT / "benchmarks" / "results" / "rtl_calibration.json"
    old = json.loads(path.read_text()) if args.refit or args.add else None
    n4 = args.act4 if args.act4 is not None else (old or {}).get("act4", {}).get("n", 0)
    n_last = args.last if args.last is not None else (old or {}).get("last", {}).get("n", 0)
    rows = _layer_rows(args) + _layer_rows(args, act_bits=4, n=n4) + _layer_rows(args, n=n_last, last=True)
    seconds = (old or {}).get("synth_seconds", {})
    if old:
        synth = {r["tag"]: r["synth"] for r in old["rows"]}
        for r in rows:
            r["synth"] = dict(synth.get(r["tag"], {}))
    if args.refit:
        missing = [r["tag"] for r in rows if not r["synth"]]
        if missing:
            raise SystemExit(f"no synthesis counts for layers {missing}: run without --refit")
    else:  # --add: only the rows (or families) not synthesized yet; of the groups named, with --act4 / --last
        named = {g for g, v in (("q", args.act4), ("z", args.last)) if v is not None}
        todo = [r for r in rows if not old or (not named or r["tag"][0] in named)
                and any(f not in r["synth"] for f in args.families.split(",") if f)]
        if todo:
            new = _synthesize_da(todo, args)
            seconds = {**seconds, **({f"{f}_added": round(seconds.get(f"{f}_added", 0) + v, 1) for f, v in new.items()}
                                     if old else new)}  # each --add's Yosys time adds up
    for r in rows:
        r.pop("_design")
    if not args.refit:
        write_json(path,  # the rows first: a refit needs no synthesis
                   {"yosys": eda.yosys_version(), "seed": args.seed, "synth_seconds": seconds,
                    "act4": {"n": n4, "seed": args.seed + ACT4_SEED}, "last": {"n": n_last, "seed": args.seed + LAST_SEED},
                    "rows": [_slim(r) for r in rows]})
    _fit_da(rows, seconds, args)


ACT4_SEED = 4000  # the 4-bit-input layers are drawn from seed + ACT4_SEED
LAST_SEED = 5000  # the last layers (no requantizer) from seed + LAST_SEED
# families whose fit has the input-width term `lut_per_da_act_bit` (fitted on their 4-bit-input rows); kept
# only where it lowered the whole designs' leave-one-model-out LUT error (benchmarks/README.md section 6).
# Elsewhere the term is 0 and a family's 4-bit random layers are held-out checks only
ACT_BIT_FAMILIES = ("xc7",)  # iCE40: 4.8 % (max 15.6 %) -> 4.9 % (15.7 %) with it, not kept
# families whose fit has the last layer's own scale `lut_per_last_da` (fitted on their --last rows), by the
# same rule: ECP5 6.5 % (max 19.5 %) -> 4.8 % (11.0 %); iCE40 4.8 % (15.6 %) -> 5.2 % (15.8 %), not kept
LAST_DA_FAMILIES = ("ecp5",)


def _layer_rows(args, act_bits: int = 8, n: int | None = None, last: bool = False) -> list[dict]:
    """One row per layer module: the layer's LayerParams and what the generator records of da4ml's
    solution (cost, latency, registers kept by synthesis, shift-register runs), for every layer
    combinational and for the held-out ones also pipelined (cutoff PIPE). `_design` keeps the design.
    act_bits 4: n layers with 4-bit inputs (seed + ACT4_SEED, tags q<i>, combinational only); last: n
    last layers (`random_last_layer`, seed + LAST_SEED, tags z<i>, combinational only)."""
    from dataclasses import asdict

    rng = np.random.default_rng(args.seed + (LAST_SEED if last else ACT4_SEED if act_bits == 4 else 0))
    rows = []
    for i in range(args.n if n is None else n):
        net, p = random_last_layer(rng, i) if last else random_layer(rng, i, act_bits=act_bits)
        for pipe in [0.0] + ([PIPE] if heldout(i) and act_bits == 8 and not last else []):
            d = generate(net, pipeline=pipe)
            m = d.layer_modules[0]
            tag = "z" if last else "p" if pipe else "c" if act_bits == 8 else "q"
            rows.append({"i": i, "tag": f"{tag}{i}", "pipeline": pipe, "params": asdict(p),
                         "da4ml_cost": m["da4ml_cost"], "kernel_latency": m["kernel_latency"],
                         "registers": m["registers"], "chains": m["chains"], "synth": {}, "_design": d})
    return rows


def _synthesize_da(rows: list[dict], args) -> dict[str, float]:
    """Each family's Yosys counts of every row's layer module, into row["synth"]."""
    from concurrent.futures import ThreadPoolExecutor

    with tempfile.TemporaryDirectory(prefix="opq-rtlcal-") as td:
        work = Path(td)
        designs = []
        for r in rows:
            files = _rename_into(write_design(r["_design"], work / r["tag"]), r["tag"],
                                 ("opq_L0", "opq_L1", "opq_k0", "opq_k1", "opq_top"))
            designs.append((f"opq_L0_{r['tag']}", [f for f in files if f.name.startswith(("opq_L0_", "opq_k0_"))]))
        shared = list({f.name: f for f in work.glob("*/*.v") if not f.name.startswith(("opq_L", "opq_k", "opq_top"))}
                      .values())  # one copy of each primitive that some kernel instantiates
        designs = [(mod, fs + shared) for mod, fs in designs]
        fams = [f for f in args.families.split(",") if f]
        print(f"synthesizing {len(designs)} layer modules for {', '.join(fams)} (two Yosys processes at a time) ...",
              flush=True)
        with ThreadPoolExecutor(max_workers=2) as ex:
            synth = dict(zip(fams, ex.map(lambda f: synth_family(f, designs, work), fams)))
    for r in rows:
        for fam in fams:
            s = synth[fam][f"opq_L0_{r['tag']}"]
            r["synth"][fam] = {k: s[k] for k in ("lut_equiv", "lut", "carry", "ff", "lutram", "srl", "muxf")}
    return {f: round(synth[f]["_seconds"], 1) for f in fams}


FF_CHECK = ((10, 1.5), (11, 3.0), (12, 8.0))  # (seed, da4ml latency cutoff) of the --ff-check layers


def main_ff_check(args) -> None:
    from dataclasses import asdict

    from opq_hw.boards import load_board
    from opq_hw.cost import rtl_calibration, rtl_da

    rows = []
    for seed, cut in FF_CHECK:
        rng = np.random.default_rng(seed)
        for i in range(args.n):
            net, p = random_layer(rng, i)
            d = generate(net, pipeline=cut)
            m = d.layer_modules[0]
            rows.append({"tag": f"s{seed}l{i}", "seed": seed, "cutoff": cut, "stages": m["kernel_stages"],
                         "params": asdict(p), "da4ml_cost": m["da4ml_cost"], "kernel_latency": m["kernel_latency"],
                         "registers": m["registers"], "chains": m["chains"], "synth": {}, "_design": d})
    seconds = _synthesize_da(rows, args)
    boards = {"xc7": load_board("arty-a7-100t"), "ecp5": load_board("ecp5-85f"), "ice40": load_board("ice40-up5k")}
    result = {"yosys": eda.yosys_version(), "synth_seconds": seconds, "checks": FF_CHECK, "families": {}, "rows": []}
    for fam in rows[0]["synth"]:
        cal = rtl_calibration(fam)
        errs = {r["tag"]: int(round(float(rtl_da(_params(r), boards[fam], cal, _kernel(r))["FF"]))) - r["synth"][fam]["ff"]
                for r in rows}
        by_cut = {str(cut): {"n": sum(r["cutoff"] == cut for r in rows),
                             "exact": sum(errs[r["tag"]] == 0 for r in rows if r["cutoff"] == cut)} for _, cut in FF_CHECK}
        result["families"][fam] = {"n": len(rows), "exact": sum(e == 0 for e in errs.values()),
                                   "max_abs_error": max(map(abs, errs.values())),
                                   "max_rel_error": max(abs(e) / r["synth"][fam]["ff"] for e, r in zip(errs.values(), rows)),
                                   "by_cutoff": by_cut, "errors": {k: e for k, e in errs.items() if e}}
        f = result["families"][fam]
        print(f"{fam}: FF exact on {f['exact']}/{f['n']} pipelined layer modules (max error {f['max_abs_error']} FF, "
              f"{f['max_rel_error'] * 100:.2f}%); by cutoff {by_cut}", flush=True)
    result["rows"] = [{"tag": r["tag"], "cutoff": r["cutoff"], "stages": r["stages"], "kind": r["params"]["kind"],
                       "registers": r["registers"], "ff": {fam: r["synth"][fam]["ff"] for fam in r["synth"]},
                       "srl": {fam: r["synth"][fam]["srl"] for fam in r["synth"]}} for r in rows]
    write_json(ROOT / "benchmarks" / "results" / "rtl_ff_check.json", result)


def _slim(r: dict) -> dict:
    """A row as recorded: the layer regenerates from the seed, so its shape facts stay out."""
    p = r["params"]
    return {"tag": r["tag"], "kind": p["kind"], "fan_in": p["fan_in"], "out_channels": p["out_channels"],
            "w_bits": p["w_bits"], "a_bits": p["a_bits"], "nnz": p["nnz"], "da4ml_cost": r["da4ml_cost"], "registers": r["registers"],
            "synth": r["synth"]}


def _params(r: dict):
    from opq_hw.cost import LayerParams

    return LayerParams(**{**r["params"], "kernel": tuple(r["params"]["kernel"])})


def _kernel(r: dict) -> dict:
    """What the generator recorded of da4ml's solution of the row's layer, as the cost model takes it."""
    return {"da4ml_cost": r["da4ml_cost"], "registers": r["registers"], "chains": r["chains"], "latency": r["kernel_latency"]}


def da_cost_rows(seed: int, n: int = 240) -> list[dict]:
    """(digits, width, da4ml cost) of n more random layers: da4ml's solver only, no synthesis."""
    from opq_hw.cost import da_features
    from opq_hw.rtl.gen import make_kernel

    rng = np.random.default_rng(seed + 1000)
    out = []
    for i in range(n):
        net, p = random_layer(rng, i)
        f = da_features(p)
        if float(f["digits"]) > 0:
            out.append({"digits": float(f["digits"]), "width": f["width"], "da4ml_cost": make_kernel(net.layers[0], "k", 0.0).cost})
    return out


def _fit_da(rows: list[dict], seconds: dict, args) -> None:
    """Fit (1) da4ml's cost from CSD digits and adder width, family-independent, on the training
    layers plus `da_cost_rows`; (2) per family LUT = lut_per_da * da + lut_per_requant_bit *
    requant_bits + lut_per_window_bit * window_bits + lut_per_conv_layer * conv + lut_per_layer
    + lut_per_last_da * da (last layers only: 0 without --last rows)
    [+ lut_per_da_act_bit * (A - 8) * da, families of ACT_BIT_FAMILIES], non-negative least squares with da = da4ml's exact cost of the training layers. Held out:
    the LUT error weight-agnostic (da from (1)) and with da4ml's solution at hand (da exact), and
    the register count (no fit) on the combinational and the pipelined held-out layers."""
    from scipy.optimize import nnls

    from opq_hw.boards import load_board
    from opq_hw.cost import da4ml_cost_estimate, da_features, rtl_da

    boards = {"xc7": load_board("arty-a7-100t"), "ecp5": load_board("ecp5-85f"), "ice40": load_board("ice40-up5k")}
    fams = list(rows[0]["synth"])
    lasts = [r for r in rows if r["params"]["last"]]  # no requantizer, synthesized for some families
    comb = [r for r in rows if not r["pipeline"] and r["params"]["a_bits"] == 8 and not r["params"]["last"]]
    train = [r for r in comb if not heldout(r["i"])]
    test = [r for r in comb if heldout(r["i"])]
    piped = [r for r in rows if r["pipeline"]]
    act4 = [r for r in rows if r["params"]["a_bits"] == 4 and not r["params"]["last"]]  # 4-bit inputs, some families
    feats = {r["tag"]: da_features(_params(r)) for r in rows}

    extra = da_cost_rows(args.seed)
    pts = [(float(feats[r["tag"]]["digits"]), feats[r["tag"]]["width"], r["da4ml_cost"]) for r in train] + \
          [(e["digits"], e["width"], e["da4ml_cost"]) for e in extra]
    pts = [q for q in pts if q[0] > 0 and q[2] > 0]
    A = np.array([[1.0, np.log(d), np.log(w)] for d, w, _ in pts])
    (c0, e_d, e_w), *_ = np.linalg.lstsq(A, np.log([q[2] for q in pts]), rcond=None)
    da_cal = {"da_coef": float(np.exp(c0)), "da_digit_exp": float(e_d), "da_width_exp": float(e_w)}

    def mape(pairs):
        return float(np.mean([abs(e - m) / m for e, m in pairs])) if pairs else None

    da_err = mape([(float(da4ml_cost_estimate(_params(r), da_cal)), r["da4ml_cost"]) for r in test if r["da4ml_cost"] > 0])
    result = {"yosys": eda.yosys_version(), "seed": args.seed, "n_layers": len(comb), "n_train": len(train),
              "n_test": len(test), "n_pipelined": len(piped), "pipeline_cutoff": PIPE, "synth_seconds": seconds,
              "act4": {"n": len(act4), "seed": args.seed + ACT4_SEED}, "last": {"n": len(lasts), "seed": args.seed + LAST_SEED},
              "da4ml_cost_fit": {**da_cal, "n_points": len(pts), "mape_heldout": da_err}, "families": {},
              "rows": [_slim(r) for r in rows]}
    print(f"da4ml cost = {da_cal['da_coef']:.3f} digits^{e_d:.3f} width^{e_w:.3f} ({len(pts)} layers); "
          f"held-out MAPE {da_err * 100:.1f}%", flush=True)
    keys = ("lut_per_da", "lut_per_requant_bit", "lut_per_window_bit", "lut_per_conv_layer", "lut_per_layer",
            "lut_per_last_da")
    cal_yaml, plot_rows = {}, {}
    for fam in fams:
        def x(r, da):
            f, a = feats[r["tag"]], (r["params"]["a_bits"] - 8) * (fam in ACT_BIT_FAMILIES)
            return [da, float(f["requant_bits"]), float(f["window_bits"]), f["conv"], 1.0, f["last"] * da * (fam in LAST_DA_FAMILIES),
                    da * a, -da * a]

        train4 = [r for r in act4 if fam in r["synth"] and not heldout(r["i"]) and fam in ACT_BIT_FAMILIES]
        test4 = [r for r in act4 if fam in r["synth"] and heldout(r["i"])]
        trainz = [r for r in lasts if fam in r["synth"] and not heldout(r["i"]) and fam in LAST_DA_FAMILIES]
        testz = [r for r in lasts if fam in r["synth"] and heldout(r["i"])]
        fitted = train + train4 + trainz
        A = np.array([x(r, r["da4ml_cost"]) for r in fitted])
        # the shift-register LUTs (xc7 SRLs) are counted by the model, not fitted
        y = np.array([r["synth"][fam]["lut_equiv"] - r["synth"][fam].get("srl", 0) for r in fitted], dtype=float)
        coef, _ = nnls(A, y)  # the last two columns: a free-sign scale per input bit (0 without 4-bit rows)
        cal = {**da_cal, **dict(zip(keys, (float(c) for c in coef))), "lut_per_da_act_bit": float(coef[6] - coef[7])}
        b = boards[fam]

        ests = {(r["tag"], k): rtl_da(_params(r), b, cal, _kernel(r) if k else None) for r in rows for k in (False, True)}

        def est(r, with_kernel):
            return ests[r["tag"], with_kernel]

        def err(rs, res, with_kernel):
            return mape([(float(est(r, with_kernel)[res]), r["synth"][fam][res.lower() if res == "FF" else "lut_equiv"])
                         for r in rs])

        def ff_check(rs):
            d = [int(round(float(est(r, True)["FF"]))) - r["synth"][fam]["ff"] for r in rs]
            return {"n": len(rs), "exact": sum(x == 0 for x in d), "max_abs_error": max(map(abs, d)),
                    "mape": mape([(r["synth"][fam]["ff"] + x, r["synth"][fam]["ff"]) for r, x in zip(rs, d)]),
                    "errors": dict(zip((r["tag"] for r in rs), d))}

        res = {**{k: float(v) for k, v in cal.items()},
               "lut_mape_train": err(fitted, "LUT", True), "lut_mape_heldout": err(test, "LUT", False),
               "n_train_last": len(trainz), "n_heldout_last": len(testz),
               "lut_mape_heldout_last": err(testz, "LUT", False), "lut_mape_heldout_last_with_kernel": err(testz, "LUT", True),
               "lut_mape_train_last_with_kernel": err(trainz, "LUT", True),
               "n_train_act4": len(train4), "n_heldout_act4": len(test4),
               "lut_mape_heldout_act4": err(test4, "LUT", False), "lut_mape_heldout_act4_with_kernel": err(test4, "LUT", True),
               "ff_mape_heldout_act4": err(test4, "FF", False),
               "lut_mape_heldout_with_kernel": err(test, "LUT", True), "ff_mape_heldout": err(test, "FF", False),
               "ff_with_kernel": {"combinational": ff_check(test), "pipelined": ff_check(piped)},
               "heldout": [{"tag": r["tag"], "pipelined": bool(r["pipeline"]), "LUT": int(r["synth"][fam]["lut_equiv"]), "FF": r["synth"][fam]["ff"],
                            "LUT_estimated": int(est(r, False)["LUT"]), "LUT_with_kernel": int(est(r, True)["LUT"]),
                            "FF_estimated": int(est(r, False)["FF"]), "FF_with_kernel": int(est(r, True)["FF"])}
                           for r in test + piped + test4 + testz]}
        result["families"][fam] = res
        fc, fp = res["ff_with_kernel"]["combinational"], res["ff_with_kernel"]["pipelined"]
        a4 = (f" ({len(train4)} of them with 4-bit inputs: lut_per_da_act_bit"
              f"{'' if fam in ACT_BIT_FAMILIES else ' 0, not fitted'}; held-out 4-bit layers ({len(test4)}) "
              f"LUT MAPE {res['lut_mape_heldout_act4'] * 100:.1f}% weight-agnostic, "
              f"{res['lut_mape_heldout_act4_with_kernel'] * 100:.1f}% with da4ml's solution)") if test4 else ""
        a4 += (f" ({len(trainz)} of them last layers, no requantizer: lut_per_last_da"
               f"{'' if fam in LAST_DA_FAMILIES else ' 0, not fitted'}; held-out last layers ({len(testz)}) LUT MAPE "
               f"{res['lut_mape_heldout_last'] * 100:.1f}% weight-agnostic, {res['lut_mape_heldout_last_with_kernel'] * 100:.1f}% "
               f"with da4ml's solution)") if testz else ""
        prov = (f"fitted by scripts/rtl_calibration.py (seed {args.seed}) on {len(fitted)} random conv/dense layer "
                f"modules{a4} of the open RTL flow (window/collector + da4ml kernel + requant, not the demo model), "
                f"{eda.yosys_version().split('(')[0].strip()} {eda.SYNTH_CMD[fam].split(' -top')[0]}; LUT-equivalents "
                f"(ecp5: LUT4 + 2 x CCU2C; xc7: LUT + SRL); held-out ({len(test)} layers) LUT MAPE "
                f"{res['lut_mape_heldout'] * 100:.1f}% weight-agnostic, {res['lut_mape_heldout_with_kernel'] * 100:.1f}% "
                f"with da4ml's solution; FF (counted, not fitted) MAPE {res['ff_mape_heldout'] * 100:.1f}%, with da4ml's "
                f"solution exact on {fc['exact']}/{fc['n']} combinational and {fp['exact']}/{fp['n']} pipelined held-out "
                f"layers (max error {fc['max_abs_error']} / {fp['max_abs_error']} FF)")
        cal_yaml[fam] = {**{k: round(v, 5) for k, v in cal.items()}, "provenance": prov}
        plot_rows[fam] = res["heldout"]
        print(f"{fam}: LUT = {' + '.join(f'{c:.3g} {k}' for k, c in zip(keys, coef))}, "
              f"lut_per_da_act_bit {cal['lut_per_da_act_bit']:.4g} ({len(train4)} 4-bit layers fitted"
              + (f", {len(test4)} held out: LUT MAPE {res['lut_mape_heldout_act4'] * 100:.1f}%, with da4ml's solution "
                 f"{res['lut_mape_heldout_act4_with_kernel'] * 100:.1f}%" if test4 else "") + ")"
              + (f"; {len(trainz)} last layers fitted, {len(testz)} held out: LUT MAPE {res['lut_mape_heldout_last'] * 100:.1f}%, "
                 f"with da4ml's solution {res['lut_mape_heldout_last_with_kernel'] * 100:.1f}%" if testz else "") + "; held-out LUT MAPE "
              f"{res['lut_mape_heldout'] * 100:.1f}% (with da4ml's solution {res['lut_mape_heldout_with_kernel'] * 100:.1f}%, "
              f"train {res['lut_mape_train'] * 100:.1f}%); FF MAPE {res['ff_mape_heldout'] * 100:.1f}%; with da4ml's "
              f"solution FF exact {fc['exact']}/{fc['n']} combinational (max error {fc['max_abs_error']}), "
              f"{fp['exact']}/{fp['n']} pipelined (max error {fp['max_abs_error']})", flush=True)
    _plot_da(plot_rows, ROOT / "benchmarks" / "results" / "rtl_calibration.png")
    _write(result, cal_yaml, "rtl_calibration.json", "rtl_da_calibration.yaml",
           "# rtl-da cost-model coefficients per family, fitted against Yosys synthesis of the open RTL flow's\n"
           "# layer modules; written by scripts/rtl_calibration.py (read by opq_hw.cost.rtl_calibration).\n"
           "# da_*: da4ml's cost from the CSD digits and adder width (the same fit for every family).\n")


def _plot_da(rows: dict[str, list[dict]], path: Path) -> None:
    """Held-out layer modules: estimated vs Yosys LUT-equivalents and flip-flops, per family (the
    weight-agnostic estimate assumes combinational kernels: shown for those only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from opq_hw.artifact import write_png

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for fam, rs in rows.items():
        for ax, (key, ests) in zip(axes, (("LUT", ("LUT_estimated", "LUT_with_kernel")), ("FF", ("FF_estimated", "FF_with_kernel")))):
            for e, mk, what in zip(ests, ("o", "x"), ("weight-agnostic", "with da4ml's solution")):
                sel = [r for r in rs if mk == "x" or not r["pipelined"]]
                ax.plot([r[key] for r in sel], [r[e] for r in sel], mk, ms=5, label=f"{fam} {what}")
    for ax, key in zip(axes, ("LUT-equivalents", "flip-flops")):
        lo, hi = ax.get_xlim()
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"Yosys 0.23 {key}")
        ax.set_ylabel(f"rtl-da estimate, {key}")
        ax.set_title(f"held-out layer modules: {key}")
    axes[0].legend(fontsize=7)
    write_png(path, fig, dpi=100)


def _rename_into(files: list[Path], tag: str, names: tuple[str, ...]) -> list[Path]:
    """Rename this design's modules apart (suffix _<tag>) so that all layers live in one Yosys session."""
    out = []
    for f in files:
        txt = f.read_text()
        for m in names:
            txt = txt.replace(m, f"{m}_{tag}")
        if f.name.startswith(names):
            nf = f.with_name(f.name.replace(".v", f"_{tag}.v"))
            nf.write_text(txt)
            f.unlink()
            out.append(nf)
        else:
            out.append(f)
    return out


def main_seq(args) -> None:
    """rtl-seq is calibrated on whole designs (layer modules and top level together, memories by
    Yosys's own mapping rule): benchmarks/rtl_whole_design.py does it."""
    import runpy

    sys.argv = [str(ROOT / "benchmarks" / "rtl_whole_design.py"), "--families", args.families] + (
        ["--refit"] if args.refit else [])
    runpy.run_path(sys.argv[0], run_name="__main__")


def _write(result: dict, cal_yaml: dict, json_name: str, yaml_name: str, header: str) -> None:
    """The fit record (benchmarks/results) and the coefficients with provenance (board_configs), atomically.
    What benchmarks/rtl_whole_design.py wrote from whole designs (top_* coefficients, heldout_error)
    stays."""
    import yaml

    write_json(ROOT / "benchmarks" / "results" / json_name, result)
    path = ROOT / "board_configs" / yaml_name
    old = yaml.safe_load(path.read_text()) if path.exists() else {}
    for fam, v in cal_yaml.items():
        kept = {k: x for k, x in (old or {}).get(fam, {}).items() if k.startswith("top_") or k == "heldout_error"}
        v.update(kept)
    header += ("# top_*: the top level (pools, output serializer), fitted on whole designs by benchmarks/rtl_whole_design.py\n"
               "# --arch da; heldout_error: the whole-design error on designs of models that fit never saw (fractions).\n")
    if path.exists():  # the header as the file has it (benchmarks/rtl_whole_design.py describes what it fits there)
        header = "".join(line for line in path.read_text().splitlines(keepends=True)[:40] if line.startswith("#")) or header
    write_bytes(path, (header + yaml.safe_dump(cal_yaml, sort_keys=True, width=200)).encode())


if __name__ == "__main__":
    main()
