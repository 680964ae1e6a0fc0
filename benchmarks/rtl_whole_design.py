"""Whole-design accuracy of the open-flow cost model (rtl-seq; rtl-da where Yosys allows): estimated
vs Yosys-synthesized LUT, FF, BRAM18, DSP of complete designs (`opq_top`: every layer module, the
activation buffers, the loader, the logits and the sequencer) with real model shapes, and the
calibration of the whole-design coefficients of `opq_hw.cost.rtl_seq` / `rtl_seq_top`.

Designs: the built-in models (digits-cnn, digits-mlp, mnist1d-cnn, basicmotions-cnn, mnist28-lenet; not
mnist28-resnet and mnist28-mobilenet, whose residual Add, strided and depthwise convolutions and average
pools the RTL flow rejects: opq_hw.rtl.intnet) and the shapes
of the imported-model corpus (tests/corpus.py: dense 64-32-16-10, 64-48-32-24-10, 64-48-32-24-16-10,
64-32-10, conv 1-8 + pool + dense, conv 8-16 2-D, conv1d 8-16-16) plus a 64-128-10 MLP (128 wide),
each with integer weights drawn like an OPQ allocation (per layer 2-6 bits, 20-60 % survivors,
Laplace magnitudes; fixed seeds). Whole MODELS are held out (HELDOUT): the fit never sees any of
their layers. Each design is synthesized once per family with Yosys (the flow's `synth`, layer
modules kept as hierarchy): per layer module counts and the whole design's counts.

The fit (`fit`): per family, non-negative least squares of the layer-module LUT/FF on
`seq_features` (training designs' layer modules), then of the top level (whole design minus its
layer modules) on `seq_top_features`; the memory mapping (block RAM / LUT RAM / logic) is Yosys's
rule (`opq_hw.cost.rtl.yosys_memory`), not fitted. Cycles per sample are exact counts: checked
against Verilator on --verilator designs.

    python benchmarks/rtl_whole_design.py [--families ecp5,ice40,xc7] [--jobs 2] [--refit] [--verilator N]

Writes benchmarks/results/rtl_whole_design.json and .md, and (unless --no-write) the fitted
coefficients and the held-out error (`heldout_error`) into board_configs/rtl_seq_calibration.yaml and
(rtl-da: the da4ml-cost law `fit_da_law`, the top level's) rtl_da_calibration.yaml.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from opq_hw.artifact import write_bytes, write_json  # noqa: E402
from opq_hw.rtl.intnet import Flatten, IntLayer, IntNet, Pool  # noqa: E402

# name -> (input (C, H, W), ops): ("conv", cout, k) 'same' padding (H = 1: a 1-D conv 1 x k), ("conv", cout, k, p)
# padding p on each side (0: 'valid'), ("pool", k), ("flat",), ("fc", n_out)
MODELS = {
    "digits-cnn": ((1, 8, 8), [("conv", 16, 3), ("pool", 2), ("conv", 32, 3), ("pool", 2), ("flat",), ("fc", 10)]),
    "digits-mlp": ((1, 1, 64), [("fc", 64), ("fc", 32), ("fc", 10)]),
    "mnist1d-cnn": ((1, 1, 40), [("conv", 32, 5), ("conv", 32, 3), ("pool", 2), ("conv", 32, 3), ("pool", 2),
                                 ("conv", 32, 3), ("pool", 2), ("flat",), ("fc", 10)]),
    "basicmotions-cnn": ((6, 1, 100), [("conv", 16, 5), ("pool", 2), ("conv", 32, 5), ("pool", 2), ("conv", 32, 3),
                                       ("pool", 5), ("flat",), ("fc", 4)]),
    "corpus-mlp-64-32-16": ((1, 1, 64), [("fc", 32), ("fc", 16), ("fc", 10)]),
    "corpus-mlp-64-48-32-24": ((1, 1, 64), [("fc", 48), ("fc", 32), ("fc", 24), ("fc", 10)]),
    "corpus-mlp-64-48-32-24-16": ((1, 1, 64), [("fc", 48), ("fc", 32), ("fc", 24), ("fc", 16), ("fc", 10)]),
    "corpus-mlp-64-32": ((1, 1, 64), [("fc", 32), ("fc", 10)]),
    "corpus-mlp-64-128": ((1, 1, 64), [("fc", 128), ("fc", 10)]),
    "corpus-cnn-8": ((1, 8, 8), [("conv", 8, 3), ("pool", 2), ("flat",), ("fc", 10)]),
    "corpus-cnn-8-16": ((1, 8, 8), [("conv", 8, 3), ("pool", 2), ("conv", 16, 3), ("pool", 2), ("flat",), ("fc", 10)]),
    "corpus-conv1d-16-16": ((8, 1, 8), [("conv", 16, 3), ("pool", 2), ("conv", 16, 3), ("pool", 2), ("flat",), ("fc", 10)]),
    "mnist28-lenet": ((1, 28, 28), [("conv", 6, 5, 2), ("pool", 2), ("conv", 16, 5, 0), ("pool", 2), ("flat",),
                                    ("fc", 120), ("fc", 84), ("fc", 10)]),
}
# whole models the fit never sees (two CNNs, a 1-D CNN, two MLPs)
HELDOUT = ("digits-cnn", "corpus-conv1d-16-16", "corpus-mlp-64-32-16", "corpus-mlp-64-48-32-24-16", "mnist28-lenet")
# and per (arch, family): designs drawn after that family's fit was settled, kept as held-out checks. iCE40 rtl-seq
# corpus-mlp-64-128 (a 64 -> 128 layer, ROMs deeper than 4,096 words, more RAM4Ks than the model counts): fitted in,
# it moves the trained digits demo's iCE40 LUT estimate from +12.5 % to +18.4 % (benchmarks/README section 6)
HELDOUT_IN = {("seq", "ice40"): ("corpus-mlp-64-128",)}


def heldout_models(arch: str, fam: str) -> tuple[str, ...]:
    return HELDOUT + HELDOUT_IN.get((arch, fam), ())
# rtl-da designs not drawn: the weight-agnostic estimate of mnist28-lenet's is 154k-291k LUTs (xc7 v0 to iCE40
# v1; at v0 129k-193k of it the 400 -> 120 layer), above every board here and far beyond what Yosys finishes here
DA_TOO_LARGE = ("mnist28-lenet",)
VARIANTS = 2  # allocations drawn per model (seeds 0, 1)
FAMILY_BOARD = {"ecp5": "ecp5-85f", "ice40": "ice40-up5k", "xc7": "arty-a7-100t"}


def make_net(name: str, variant: int, act_bits: int = 4) -> IntNet:
    """An IntNet of model `name`'s shapes with integer weights drawn like an OPQ allocation; unsigned
    `act_bits`-bit activations after the first layer (4 unless a row says `act_bits`; the same weights)."""
    in_shape, ops = MODELS[name]
    rng = np.random.default_rng(1000 * variant + sum(map(ord, name)))
    stages: list = []
    shape = in_shape
    bits_in, signed = 8, True
    n_layers = sum(op[0] in ("conv", "fc") for op in ops)
    k = 0
    for op in ops:
        if op[0] == "pool":
            stages.append(Pool(op[1]))
            c, h, w = shape
            shape = (c, h // (op[1] if h > 1 else 1), w // op[1])
            continue
        if op[0] == "flat":
            stages.append(Flatten())
            continue
        last = k == n_layers - 1
        bits = int(rng.choice([2, 3, 4, 5, 6]))
        keep = float(rng.uniform(0.2, 0.6))
        c, h, w = shape
        if op[0] == "conv":
            cout, kk = op[1], op[2]
            kh = 1 if h == 1 else kk
            wshape = (cout, c, kh, kk)
            p = op[3] if len(op) > 3 else kk // 2
            pad = (0 if h == 1 else p, p)
            out_shape = (cout, h + 2 * pad[0] - kh + 1, w + 2 * pad[1] - kk + 1)
            kind = "conv"
        else:
            cout = op[1]
            wshape = (cout, c * h * w)
            pad, out_shape, kind = (0, 0), (cout, 1, 1), "linear"
        qmax = 2 ** (bits - 1) - 1
        mag = np.minimum(np.ceil(rng.exponential(qmax / 3, size=wshape)), qmax)
        wq = (mag * rng.choice([-1, 1], size=wshape)).astype(np.int64)
        wq[rng.random(wshape) > keep] = 0
        b = rng.integers(-200, 200, size=cout)
        stages.append(IntLayer(f"L{k}", kind, wq, b.astype(np.int64), bits_in, signed, shape, out_shape, pad,
                               tuple([-10] * cout),
                               None if last else tuple(int(s) for s in rng.integers(-8, -3, size=cout)),
                               None if last else act_bits, None if last else -4))
        shape, bits_in, signed = out_shape, act_bits, False
        k += 1
    return IntNet(in_shape, 8, True, -4, stages, in_shape)


def net_of(r: dict) -> IntNet:
    """The IntNet a row was synthesized from."""
    return make_net(r["model"], r["variant"], r.get("act_bits", 4))


def row_key(r: dict) -> tuple:
    return r["model"], r["variant"], r["family"], r.get("arch", "seq"), r.get("act_bits", 4)


def layer_params_of(net: IntNet):
    """The cost model's LayerParams of each layer of `net` (what `network_params` gives for a run)."""
    from opq_hw.cost import LayerParams

    layers = net.layers
    out = []
    for i, L in enumerate(layers):
        c, h, w = L.in_shape
        if L.kind == "conv":
            kh, kw = L.w.shape[2], L.w.shape[3]
            ph, pw = L.padding
            p = LayerParams(name=L.name, kind="conv2d" if h > 1 else "conv1d", fan_in=int(np.prod(L.w.shape[1:])),
                            out_channels=L.w.shape[0], out_pixels=int(np.prod(L.out_shape[1:])), in_pixels=h * w,
                            in_channels=c, kernel=(kh, kw) if h > 1 else (kw,), in_width=w, n_weights=int(L.w.size),
                            nnz=int(np.count_nonzero(L.w)), w_bits=_w_bits(L), a_bits=L.in_bits, a_signed=L.in_signed,
                            has_bias=True, in_words=c * (h + 2 * ph) * (w + 2 * pw), last=i == len(layers) - 1)
        else:
            p = LayerParams(name=L.name, kind="linear", fan_in=L.w.shape[1], out_channels=L.w.shape[0], out_pixels=1,
                            in_pixels=1, in_channels=L.w.shape[1], kernel=(), in_width=1, n_weights=int(L.w.size),
                            nnz=int(np.count_nonzero(L.w)), w_bits=_w_bits(L), a_bits=L.in_bits, a_signed=L.in_signed,
                            has_bias=True, in_words=L.w.shape[1], last=i == len(layers) - 1)
        out.append(dataclasses.replace(p, laplace_b=LAPLACE_B, out_bits=int(L.out_bits or 0)))
    return out


# the drawn magnitudes are exponential with mean qmax / 3: a Laplace scale of 1/3 of the largest
# magnitude, what an allocation records as `laplace_b` (the rtl-da estimate's CSD digit count uses it)
LAPLACE_B = 1 / 3


def _w_bits(L: IntLayer) -> int:
    m = int(np.abs(L.w).max())
    return max(2, m.bit_length() + 1)


def pooled_out_pixels(net: IntNet) -> list[int]:
    """Per layer: the output positions its ROM walk visits (pool offsets included = the conv's out pixels)."""
    return [int(np.prod(L.out_shape[1:])) for L in net.layers]


# Yosys 0.23's Verilog frontend takes superlinear time on a ROM written as an `initial` block of word
# assignments (seq.py's form; measured here on LeNet's 23,756-entry ROM cut to 1,500 / 3,000 / 6,000
# entries: 2.3 / 6.8 / 46 s, and 0.35 s for the 6,000 read by $readmemh). A ROM of at least this many
# entries is handed to Yosys as $readmemh of the same words (the same memory contents: one $meminit
# instead of one per word); every other design's ROMs are below it (the largest 4,106 entries) and
# go to Yosys as generated. Rows synthesized so record `rom_readmemh`.
READMEMH_MIN_ENTRIES = 8192


def readmemh_roms(files: list[Path]) -> int:
    """Rewrite, in the written design, each `initial` ROM of at least READMEMH_MIN_ENTRIES words as a
    $readmemh of a .hex file beside it (the words in address order); returns the number rewritten."""
    import re

    n = 0
    for f in files:
        if f.suffix != ".v":
            continue
        text = f.read_text()
        m = re.search(r"( *)reg \[(\d+):0\] rom \[0:(\d+)\];\n *initial begin\n((?: *rom\[\d+\] = \d+'h[0-9a-f]+;\n)+) *end\n", text)
        if not m or int(m.group(3)) + 1 < READMEMH_MIN_ENTRIES:
            continue
        words = re.findall(r"rom\[(\d+)\] = \d+'h([0-9a-f]+);", m.group(4))
        if [int(k) for k, _ in words] != list(range(int(m.group(3)) + 1)):
            raise SystemExit(f"{f.name}: ROM words not in address order; cannot hand them to $readmemh")
        hexf = f.with_suffix(".rom.hex")
        hexf.write_text("".join(w + "\n" for _, w in words))
        ind = m.group(1)
        f.write_text(text[:m.start()] + f"{ind}reg [{m.group(2)}:0] rom [0:{m.group(3)}];\n{ind}initial $readmemh(\"{hexf}\", rom);\n"
                     + text[m.end():])
        n += 1
    return n


def synth_one(args) -> dict:
    from opq_hw.rtl import eda
    from opq_hw.rtl.gen import write_design
    from opq_hw.rtl.seq import generate_seq

    name, variant, fam, arch, act_bits = args
    net = make_net(name, variant, act_bits)
    tag = {"act_bits": act_bits} if act_bits != 4 else {}
    if arch == "da":
        from opq_hw.errors import OpqError
        from opq_hw.rtl.gen import generate

        try:
            d = generate(net)
        except OpqError as e:
            return {"model": name, "variant": variant, "family": fam, "arch": arch, **tag,
                    "unsupported": str(e).splitlines()[0]}
    else:
        d = generate_seq(net)
    with tempfile.TemporaryDirectory(prefix="opq-whole-") as td:
        files = write_design(d, Path(td) / "src")
        if readmemh_roms(files):
            tag["rom_readmemh"] = True
        st = eda.synth(files, d.top, fam, Path(td) / "syn", json_out=False, timeout=1800,
                       modules=[m["module"] for m in d.layer_modules])
    keys = ("lut_equiv", "lut", "carry", "ff", "dsp", "bram18", "bram36", "lutram", "srl", "muxf")
    return {"model": name, "variant": variant, "family": fam, "arch": arch, **tag, "seconds": st["seconds"],
            "total": {k: st[k] for k in keys},
            "modules": [{k: st["modules"][m["module"]][k] for k in keys} for m in d.layer_modules],
            "layers": [{k: m.get(k) for k in ("rom_entries", "entry_bits", "acc_w", "cycles", "buffer_words", "da4ml_cost")}
                       for m in d.layer_modules],
            # cycles per sample: seq's count of its stages (== Verilator's interval); da: one pixel per cycle
            "interval": d.latency_stages if arch == "seq" else d.in_pixels}


def synthesize(families: list[str], jobs: int, old: dict | None, arch: str, variants: int, models: list[str],
               out: Path, act_bits: int = 4) -> list[dict]:
    from concurrent.futures import ThreadPoolExecutor

    done = {row_key(r): r for r in (old or {}).get("rows", [])}
    if arch == "da" and set(models) & set(DA_TOO_LARGE):
        print(f"rtl-da: not synthesizing {', '.join(sorted(set(models) & set(DA_TOO_LARGE)))} (DA_TOO_LARGE)", flush=True)
        models = [m for m in models if m not in DA_TOO_LARGE]
    todo = [(m, v, f, arch, act_bits) for f in families for m in models for v in range(variants)
            if (m, v, f, arch, act_bits) not in done]
    print(f"{len(todo)} whole designs to synthesize ({len(done)} reused)", flush=True)
    rows = list(done.values())
    with ThreadPoolExecutor(max_workers=jobs) as ex:
        for r in ex.map(synth_one, todo):
            rows.append(r)
            if "unsupported" in r:
                print(f"  {r['family']:5} {r['model']:28} {arch}: not supported ({r['unsupported']})", flush=True)
                continue
            print(f"  {r['family']:5} {r['model']:28} v{r['variant']}: LUT {r['total']['lut_equiv']} FF {r['total']['ff']} "
                  f"BRAM {r['total']['bram18'] + 2 * r['total']['bram36']} DSP {r['total']['dsp']} ({r['seconds']:.0f} s)",
                  flush=True)
            write_json(out, {**(old or {}), "rows": rows})  # progress survives an interruption
    return rows


SEQ_KEYS = ("lut_per_layer", "lut_per_acc_bit", "lut_per_table_bit", "lut_per_addr_bit", "lut_per_rom_lut",
            "lut_per_conv2d", "lut_per_requant_bit", "lut_per_soft_mult_bit", "ff_scale", "ff_per_layer", "top_lut", "top_lut_per_layer", "lut_per_lutram_mux_bit", "lut_per_buf_logic_bit",
            "top_lut_per_logit_bit", "top_ff", "top_ff_per_layer")


def design_features(params, board) -> dict:
    """Per layer and top-level features of one design (what the fit regresses on)."""
    from opq_hw.cost import seq_features, yosys_memory
    from opq_hw.cost.common import bram_aspects
    from opq_hw.cost.rtl import _seq_memories, lutram_mux_bits, seq_layer_registers, seq_logit_bits, seq_logits_memory

    layers = []
    for q in params:
        f = seq_features(q)
        m = _seq_memories(q, board, f)
        layers.append({"acc": float(f["acc"]), "table_bits": float(m["table_logic_bits"]), "addr": float(f["addr"]),
                       "rom_luts": float(m["rom_luts"]), "conv2d": float(len(q.kernel) == 2),
                       "requant": float(f["acc"]) * (not q.last), "soft_mult": _soft_mult(q, board),
                       "regs": float(seq_layer_registers(q) - (q.w_bits + f["addr"]) * float(m["rom_in_block"])),
                       "buf_lutram_mux": float(m["buf_lutram_mux"]), "buf_logic_bits": float(m["buf_logic_bits"]),
                       "read_reg": float(q.a_bits) if yosys_memory(q.a_bits, int(f["in_words"]), board.family, False, True,
                                                                   bram_aspects(board))[0] != "block" else 0.0})
    last = params[-1]
    acc = seq_logit_bits(last)
    kind, cells = seq_logits_memory(last, board)
    return {"layers": layers, "n": len(params),
            "logit_lutram_mux": float(lutram_mux_bits(acc, last.out_channels, board.family) if kind == "lutram" else 0),
            "logit_logic": float(acc * last.out_channels if kind == "logic" else 0)}


def _soft_mult(q, board) -> float:
    """W x A' of a product Yosys leaves in LUTs (too narrow for the family's DSP), else 0."""
    from opq_hw.cost.rtl import DSP_Y_MINWIDTH, seq_product_bits

    wb, ab = seq_product_bits(q)
    return float(wb * ab) if wb + ab < DSP_Y_MINWIDTH.get(board.family, 0) else 0.0


def _nnls(X, y):
    from scipy.optimize import nnls

    return nnls(np.asarray(X, dtype=float), np.asarray(y, dtype=float))[0]


def fit(rows: list[dict], fam: str) -> dict:
    """The family's rtl-seq coefficients from the training designs' layer modules and top levels."""
    from opq_hw.boards import load_board

    board = load_board(FAMILY_BOARD[fam])
    tr = [r for r in rows if r["family"] == fam and r["model"] not in heldout_models("seq", fam)]
    XL, yL, XF, yF, XT, yT, XTF, yTF = [], [], [], [], [], [], [], []
    for r in tr:
        f = design_features(layer_params_of(net_of(r)), board)
        for L, mod in zip(f["layers"], r["modules"]):
            XL.append([1.0, L["acc"], L["table_bits"], L["addr"], L["conv2d"], L["requant"], L["soft_mult"]])
            yL.append(mod["lut_equiv"] - L["rom_luts"])  # the ROM in logic: its law, not fitted (lut_per_rom_lut 1)
            XF.append([L["regs"], 1.0])
            yF.append(mod["ff"] - L["buf_logic_bits"] * 0)
        res_lut = r["total"]["lut_equiv"] - sum(m["lut_equiv"] for m in r["modules"])
        res_ff = r["total"]["ff"] - sum(m["ff"] for m in r["modules"])
        XT.append([1.0, f["n"], sum(L["buf_lutram_mux"] for L in f["layers"]) + f["logit_lutram_mux"],
                   sum(L["buf_logic_bits"] for L in f["layers"]), f["logit_logic"]])
        yT.append(res_lut)
        XTF.append([1.0, f["n"]])
        yTF.append(res_ff - sum(L["buf_logic_bits"] + L["read_reg"] for L in f["layers"]) - f["logit_logic"])
    cl, cf, ct, ctf = _nnls(XL, yL), _nnls(XF, yF), _nnls(XT, yT), _nnls(XTF, yTF)
    vals = list(cl[:4]) + [1.0] + list(cl[4:]) + list(cf) + list(ct) + list(ctf)
    return {k: round(float(v), 5) for k, v in zip(SEQ_KEYS, vals)} | {"n_train_designs": len(tr),
                                                                      "n_train_layers": len(XL)}


DA_TOP_KEYS = ("top_lut", "top_lut_per_pool", "top_lut_per_pool_bit", "top_lut_per_out_bit", "top_logit_width_ratio")
# the top level's flip-flop fit before they were counted (`pool_registers`): dropped from the YAML when it is written
DA_TOP_OLD_KEYS = ("top_ff", "top_ff_per_pool", "top_ff_per_pool_bit", "top_ff_per_out_bit")


LAW_VARIANTS = 6  # allocations per model whose da4ml solutions the da4ml-cost law is fitted on
DA_LAW_KEYS = ("da_coef", "da_digit_exp", "da_width_exp", "da_act_exp")


def da_law_points(seed: int = 0) -> list[dict]:
    """(digits, width, A, da4ml's cost) of layers for the da4ml-cost law (da4ml's solver only, no
    synthesis): scripts/rtl_calibration.py's random layers (`da_cost_rows`: 8-bit signed inputs,
    uniform magnitudes, the law's old fit) and the layers of every model's shape over LAW_VARIANTS
    allocations (Laplace magnitudes, 4-bit unsigned activations after the first layer; seeds
    distinct from the synthesized designs' when LAW_VARIANTS > VARIANTS, `model` recorded so that
    the held-out models stay out of the fit)."""
    from opq_hw.cost import da_features
    from opq_hw.errors import OpqError
    from opq_hw.rtl.gen import generate

    sys.path.insert(0, str(ROOT / "scripts"))
    from rtl_calibration import da_cost_rows

    pts = [{"model": "random", "digits": e["digits"], "width": e["width"], "a": 8, "cost": e["da4ml_cost"]}
           for e in da_cost_rows(seed)]
    for m in (m for m in MODELS if m not in DA_TOO_LARGE):
        for v in range(LAW_VARIANTS):
            net = make_net(m, v)
            try:
                d = generate(net)
            except OpqError:  # wider input pixels than the stream takes (rtl-da does not build it)
                break
            for q, L in zip(layer_params_of(net), d.layer_modules):
                f = da_features(q)
                if float(f["digits"]) > 0 and L["da4ml_cost"]:
                    pts.append({"model": m, "variant": v, "digits": float(f["digits"]), "width": f["width"],
                                "a": q.a_bits, "cost": float(L["da4ml_cost"])})
    return pts


def fit_da_law(points: list[dict], heldout: tuple[str, ...] = HELDOUT) -> dict:
    """da4ml's cost = da_coef * digits^da_digit_exp * width^da_width_exp * A^da_act_exp (least squares
    in logs) on the points of the training models and the random layers; its error on the held-out
    models' layers. The old law (scripts/rtl_calibration.py) saw only 8-bit inputs, so it could not
    tell the input width from the weight width, and it was 37 % high on 4-bit-input layers."""
    tr = [p for p in points if p["model"] not in heldout]
    A = np.array([[1.0, np.log(p["digits"]), np.log(p["width"]), np.log(p["a"])] for p in tr])
    c = np.linalg.lstsq(A, np.log([p["cost"] for p in tr]), rcond=None)[0]
    law = dict(zip(DA_LAW_KEYS, [round(float(np.exp(c[0])), 5)] + [round(float(x), 5) for x in c[1:]]))

    def err(ps):
        e = [abs(law["da_coef"] * p["digits"] ** law["da_digit_exp"] * p["width"] ** law["da_width_exp"]
                 * p["a"] ** law["da_act_exp"] / p["cost"] - 1) for p in ps]
        return {"n": len(e), "mape": round(float(np.mean(e)), 4), "max": round(float(np.max(e)), 4)} if e else None
    return {**law, "train": err(tr), "heldout": err([p for p in points if p["model"] in heldout])}


def layer_heldout_error(fam: str, cal: dict) -> dict:
    """The weight-agnostic rtl-da estimate with `cal` on scripts/rtl_calibration.py's held-out
    combinational layer modules (regenerated from its seed, shapes checked against the record)
    against their Yosys counts in benchmarks/results/rtl_calibration.json: LUT and FF MAPE, max."""
    from opq_hw.boards import load_board
    from opq_hw.cost import rtl_da

    sys.path.insert(0, str(ROOT / "scripts"))
    import rtl_calibration as rc

    rec = json.loads((ROOT / "benchmarks" / "results" / "rtl_calibration.json").read_text())
    rng = np.random.default_rng(rec["seed"])
    params = {f"c{i}": rc.random_layer(rng, i)[1] for i in range(rec["n_layers"])}
    board = load_board(FAMILY_BOARD[fam])
    e = {"lut": [], "ff": []}
    for r in rec["rows"]:
        if not r["tag"].startswith("c") or not rc.heldout(int(r["tag"][1:])):
            continue
        p = params[r["tag"]]
        if (p.fan_in, p.out_channels, p.nnz) != (r["fan_in"], r["out_channels"], r["nnz"]):
            raise SystemExit(f"layer {r['tag']} does not regenerate from seed {rec['seed']}: run scripts/rtl_calibration.py")
        est, syn = rtl_da(p, board, cal), r["synth"][fam]
        e["lut"].append(abs(float(est["LUT"]) / syn["lut_equiv"] - 1))
        e["ff"].append(abs(float(est["FF"]) / syn["ff"] - 1))
    return {"scope": "per-layer", "n": len(e["lut"]),
            **{k: {"mape": round(float(np.mean(v)), 4), "max": round(float(np.max(v)), 4)} for k, v in e.items()},
            "source": "benchmarks/results/rtl_calibration.json: the held-out combinational layer modules (seed "
                      f"{rec['seed']}), weight-agnostic estimate vs Yosys 0.23, da4ml-cost law of benchmarks/rtl_whole_design.py"}


def fit_da(rows: list[dict], fam: str, law: dict | None = None, heldout: tuple[str, ...] = HELDOUT) -> dict:
    """rtl-da: the layer coefficients stay those fitted on layer modules (scripts/rtl_calibration.py),
    the da4ml-cost law `law` (`fit_da_law`) replacing that script's; the top level's (pools,
    serializer) are fitted here on the training designs' top levels."""
    from opq_hw.cost import rtl_calibration
    from opq_hw.cost.rtl import CMP_CARRY_LUT_PER_BIT, MUX_LUT_PER_BIT, SERIALIZER_COUNTER_FF, da_top_features

    tr = [r for r in rows if r["family"] == fam and r["model"] not in heldout]
    X, yl, XF, yf = [], [], [], []
    # the pools' rows (placed by Yosys's rule) at their structural cost, not fitted. The LUTs per family. The
    # flip-flops are counted (`pool_registers`, the serializer's counter; exact on every design's top level with
    # the logits at da4ml's width), but for the width of the serializer's N logits, unknown without the weights:
    # its ratio to the weight-agnostic bound is fitted on the training designs of every family (the same RTL)
    for r in (r for r in rows if r["model"] not in heldout):
        f = da_top_features(layer_params_of(net_of(r)), r["family"])
        x = [1.0, f["pools"], f["pool_bits"], f["out_bits"]]
        XF.append([f["logit_bound_bits"]])
        yf.append(r["total"]["ff"] - sum(m["ff"] for m in r["modules"]) - f["pool_ff"] - SERIALIZER_COUNTER_FF)
        if r["family"] == fam:
            X.append(x)
            yl.append(r["total"]["lut_equiv"] - sum(m["lut_equiv"] for m in r["modules"])
                      - MUX_LUT_PER_BIT[fam] * f["pool_mux_bits"] - CMP_CARRY_LUT_PER_BIT.get(fam, 0.0) * f["pool_carry_bits"])
    base = {k: v for k, v in rtl_calibration(fam, "rtl-da").items() if k not in ("provenance", "heldout_error")
            and not k.startswith("top_")} | {k: law[k] for k in DA_LAW_KEYS if law}
    top = dict(zip(DA_TOP_KEYS, [round(float(v), 5) for v in list(_nnls(X, yl)) + list(_nnls(XF, yf))])) if X else {}
    return {**base, **top, "n_train_designs": len(tr), "n_train_layers": 0}


def leave_one_model_out(rows: list[dict], fam: str, points: list[dict]) -> dict:
    """rtl-da's whole-design error band: every synthesized design of `fam` estimated with what was fitted
    without its model, one fold per model: the da4ml-cost law refitted on the law points of the other
    models (and the random layers), the top level refitted on the other models' designs; the per-layer
    coefficients (scripts/rtl_calibration.py, random layer modules) never saw a whole design. Over all
    models, not only HELDOUT: rtl-da's fixed held-out set is 2 MLPs on ECP5 (2 designs), too few to bound
    the error of a CNN. Returns the `errors` of all designs, their count, models, and per design the error."""
    fr = [r for r in rows if r["family"] == fam and "unsupported" not in r]
    models = sorted({r["model"] for r in fr})
    per = []
    for m in models:
        if len(models) < 2:
            break
        law = fit_da_law(points, heldout=(m,))
        cal = fit_da(rows, fam, law, heldout=(m,))
        for r in (r for r in fr if r["model"] == m):
            per.append({"model": m, "variant": r["variant"], **({"act_bits": r["act_bits"]} if "act_bits" in r else {}),
                        "estimate": estimate_design(r, cal), "measured": measured(r)})
    return {"errors": errors(per), "n": len(per), "models": sorted({p["model"] for p in per}),
            "rows": [{"model": p["model"], "variant": p["variant"], **({"act_bits": p["act_bits"]} if "act_bits" in p else {}),
                      **{k: round((p["estimate"][k] - p["measured"][k]) / max(p["measured"][k], 1), 4) for k in ("LUT", "FF")}}
                     for p in per]}


def estimate_design(r: dict, cal: dict, weights: bool = False) -> dict:
    """The cost model's whole-design estimate of a row's design (layers + top level), weight-agnostic; with
    `weights`, the logits sized from the actual weights (`LayerParams.logit_bits`, what `estimate RUN` does
    after `build --flow rtl`)."""
    from opq_hw.boards import load_board
    from opq_hw.cost import rtl_da, rtl_da_top, rtl_seq, rtl_seq_top
    from opq_hw.rtl.seq import _acc_bits

    board = load_board(FAMILY_BOARD[r["family"]])
    net = net_of(r)
    params = layer_params_of(net)
    if weights:
        L = net.layers[-1]
        params[-1] = dataclasses.replace(params[-1], logit_bits=_acc_bits(L, L.in_bits, L.in_signed))
    seq = r.get("arch", "seq") == "seq"
    per = [(rtl_seq if seq else rtl_da)(q, board, cal) for q in params]
    top = (rtl_seq_top if seq else rtl_da_top)(params, board, cal)
    tot = {k: int(round(sum(float(x[k]) for x in per) + float(top[k]))) for k in ("LUT", "FF", "BRAM18", "DSP")}
    tot["cycles"] = int(sum(float(x["cycles"]) for x in per) + top["cycles"]) if seq else \
        int(max(max(float(x["cycles"]) for x in per), top["cycles"]))
    return tot


def measured(r: dict) -> dict:
    t = r["total"]
    return {"LUT": t["lut_equiv"], "FF": t["ff"], "BRAM18": t["bram18"] + 2 * t["bram36"], "DSP": t["dsp"],
            "cycles": r.get("interval", r.get("latency_stages"))}


METRICS = ("LUT", "FF", "BRAM18", "DSP", "cycles")


def errors(rows: list[dict]) -> dict:
    """Per metric: mean and max absolute relative error of the rows' estimates (0 measured: exact or 100 %)."""
    out = {}
    for k in METRICS:
        e = [abs(r["estimate"][k] - r["measured"][k]) / r["measured"][k] if r["measured"][k] else
             float(r["estimate"][k] != 0) for r in rows]
        out[k] = {"mape": round(float(np.mean(e)), 4) if e else None, "max": round(float(np.max(e)), 4) if e else None}
    return out


def verilator_check(rows: list[dict], models: list[str]) -> list[dict]:
    """Cycles per sample of the rtl-seq designs of `models` (variant 0) in Verilator (6 samples back to
    back: the mean distance between frame starts) against the design's stage count and the estimate."""
    from opq_hw.rtl.gen import write_design
    from opq_hw.rtl.seq import generate_seq
    from opq_hw.rtl.verilator import build_sim, run_sim

    out = []
    for m in models:
        net = make_net(m, 0)
        d = generate_seq(net)
        with tempfile.TemporaryDirectory(prefix="opq-whole-vl-") as td:
            binary = build_sim(write_design(d, Path(td) / "src"), Path(td) / "sim")
            px = np.random.default_rng(0).integers(-128, 128, size=(6, int(np.prod(net.in_shape))))
            res = run_sim(binary, px, d.n_out, Path(td) / "run")
        est = next((r["estimate"]["cycles"] for r in rows if r["model"] == m and r["variant"] == 0
                    and r.get("arch", "seq") == "seq" and "estimate" in r), None)
        out.append({"model": m, "verilator_interval": res.interval, "design_stage_count": d.latency_stages,
                    "estimate": est, "exact": res.interval == d.latency_stages == est})
        print(f"  Verilator {m}: interval {res.interval} cycles, design {d.latency_stages}, estimate {est}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", default="ecp5,ice40")
    ap.add_argument("--arch", default="seq", choices=["seq", "da"])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--variants", type=int, default=VARIANTS, help="allocations drawn per model")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of MODELS")
    ap.add_argument("--act-bits", type=int, default=4, choices=[4, 8],
                    help="activation width after the first layer of the designs drawn (rows record it when not 4)")
    ap.add_argument("--refit", action="store_true", help="no synthesis: fit the committed rows")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "rtl_whole_design.json",
                    help="the JSON the rows go to (a second synthesis process: another file, merged with --merge)")
    ap.add_argument("--merge", type=Path, action="append", default=[], help="add the rows of another run's JSON")
    ap.add_argument("--verilator", default="", help="comma-separated models whose rtl-seq cycles are checked in Verilator")
    ap.add_argument("--no-write", action="store_true", help="leave board_configs/rtl_*_calibration.yaml alone")
    args = ap.parse_args()
    path = args.out
    old = json.loads(path.read_text()) if path.exists() else {"rows": []}
    seen = {row_key(r) for r in old["rows"]}
    for extra in args.merge:
        for r in json.loads(extra.read_text())["rows"]:
            key = row_key(r)
            if key not in seen:
                seen.add(key)
                old["rows"].append(r)
    fams = [f for f in args.families.split(",") if f]
    models = [m for m in args.models.split(",") if m]
    unknown = set(models) - set(MODELS)
    if unknown:
        raise SystemExit(f"unknown models {sorted(unknown)}; known: {', '.join(MODELS)}")
    rows = old["rows"] if args.refit else synthesize(fams, args.jobs, old, args.arch, args.variants, models, path,
                                                         args.act_bits)
    from opq_hw.rtl import eda

    result = {"yosys": eda.yosys_version(), "heldout_models": list(HELDOUT), "results": {}, "rows": rows}
    law = None
    if rows_of(rows, "da"):
        result["da_law_points"] = old.get("da_law_points") or da_law_points()
        law = result["da_law"] = fit_da_law(result["da_law_points"])
        print(f"da4ml cost law {({k: law[k] for k in DA_LAW_KEYS})}: train {law['train']}, held-out models {law['heldout']}")
    for arch in ("seq", "da"):
        for fam in sorted({r["family"] for r in rows if r.get("arch", "seq") == arch}):
            fr = [r for r in rows if r["family"] == fam and r.get("arch", "seq") == arch and "unsupported" not in r]
            held = heldout_models(arch, fam)
            if not any(r["model"] not in held for r in fr):
                print(f"rtl-{arch} {fam}: no training designs yet, not fitted", flush=True)
                continue
            cal = fit(rows_of(rows, arch), fam) if arch == "seq" else fit_da(rows_of(rows, arch), fam, law)
            for r in fr:
                r["estimate"], r["measured"], r["heldout"] = estimate_design(r, cal), measured(r), r["model"] in held
                if arch == "seq":  # the block RAMs with the logits at the RTL's width (the run's weights known)
                    r["bram18_with_weights"] = estimate_design(r, cal, weights=True)["BRAM18"]
            res = {"calibration": cal, "train": errors([r for r in fr if not r["heldout"]]),
                   "bram18_exact_with_weights": [sum(r["bram18_with_weights"] == r["measured"]["BRAM18"] for r in fr), len(fr)]
                   if arch == "seq" else None,
                   "heldout": errors([r for r in fr if r["heldout"]]), "n_heldout": sum(r["heldout"] for r in fr),
                   "heldout_models": sorted({r["model"] for r in fr if r["heldout"]})}
            if arch == "da":  # the band: leave one model out over every design (see leave_one_model_out)
                res["lomo"] = leave_one_model_out(rows_of(rows, arch), fam, result["da_law_points"])
                lo = res["lomo"]
                print(f"rtl-da {fam}: leave-one-model-out ({lo['n']} designs of {len(lo['models'])} models) " + ", ".join(
                    f"{k} MAPE {v['mape'] * 100:.1f}% max {v['max'] * 100:.1f}%" for k, v in lo["errors"].items()
                    if v["mape"] is not None), flush=True)
            result["results"][f"{arch}/{fam}"] = res
            h = res["heldout"]
            print(f"rtl-{arch} {fam}: held-out ({res['n_heldout']} designs) " + ", ".join(
                f"{k} MAPE {v['mape'] * 100:.1f}% max {v['max'] * 100:.1f}%" for k, v in h.items() if v["mape"] is not None),
                flush=True)
            for r in fr:
                print(f"   {'H' if r['heldout'] else ' '} {r['model']:27} v{r['variant']}{_act_tag(r)} " + " ".join(
                    f"{k} {r['estimate'][k]}/{r['measured'][k]}" for k in METRICS))
    vl = [m for m in args.verilator.split(",") if m]
    result["verilator"] = verilator_check(rows, vl) if vl else (old or {}).get("verilator", [])
    write_json(path, result)
    write_bytes(path.with_suffix(".md"), markdown(result).encode())
    if not args.no_write:
        for arch in ("seq", "da"):
            write_yaml(result, arch)


def rows_of(rows: list[dict], arch: str) -> list[dict]:
    return [r for r in rows if r.get("arch", "seq") == arch and "unsupported" not in r]


def heldout_error(res: dict) -> dict:
    """The shape `estimate`'s error bands read (`heldout_error` in the calibration YAML): rtl-seq the
    fixed held-out models' designs, rtl-da every design, each estimated without its model (`lomo`)."""
    h = res["lomo"]["errors"] if "lomo" in res else res["heldout"]
    names = {"LUT": "lut", "FF": "ff", "BRAM18": "bram", "DSP": "dsp", "cycles": "cycles"}
    return {"scope": "whole-design", "n": res["lomo"]["n"] if "lomo" in res else res["n_heldout"],
            **{names[k]: {"mape": float(v["mape"]), "max": float(v["max"])} for k, v in h.items()}}


def write_yaml(result: dict, arch: str) -> None:
    """board_configs/rtl_<arch>_calibration.yaml: per family the coefficients, provenance and held-out
    error (rtl-da: the layer coefficients and provenance kept, the top level's and the error added)."""
    import yaml

    from opq_hw.rtl import eda

    name = "rtl_seq_calibration.yaml" if arch == "seq" else "rtl_da_calibration.yaml"
    path = ROOT / "board_configs" / name
    text = path.read_text()
    header = "".join(ln + "\n" for ln in text.splitlines() if ln.startswith("#"))
    data = yaml.safe_load(text) or {}
    if arch == "seq":  # entries of the per-layer fit (other coefficients) no longer apply: defaults until fitted here
        data = {fam: v for fam, v in data.items() if isinstance(v, dict) and "lut_per_requant_bit" in v}
    for key, res in result["results"].items():
        a, fam = key.split("/")
        if a != arch or not (res.get("lomo", {}).get("n") or res["n_heldout"]):
            continue
        cal, h = res["calibration"], res["heldout"]
        where = (f"{cal['n_train_designs']} whole designs of real model shapes (built-in models and the imported-model "
                 f"corpus), {result['yosys'].split('(')[0].strip()} {eda.SYNTH_CMD[fam].split(' -top')[0]}")
        err = (f"held-out ({res['n_heldout']} whole designs of {len(res['heldout_models'])} models never fitted) LUT "
               f"MAPE {h['LUT']['mape'] * 100:.1f}% (max {h['LUT']['max'] * 100:.1f}%), FF MAPE {h['FF']['mape'] * 100:.1f}% "
               f"(max {h['FF']['max'] * 100:.1f}%), BRAM/DSP/cycles max error {h['BRAM18']['max'] * 100:.0f}/"
               f"{h['DSP']['max'] * 100:.0f}/{h['cycles']['max'] * 100:.0f}%") if res["n_heldout"] else ""
        if "lomo" in res:  # rtl-da's band: every design with the law and top level fitted without its model
            lo, e = res["lomo"], res["lomo"]["errors"]
            err = (f"error band (heldout_error): leave-one-model-out over {lo['n']} whole designs of {len(lo['models'])} "
                   f"models (the law and the top level refitted without the model) LUT MAPE {e['LUT']['mape'] * 100:.1f}% "
                   f"(max {e['LUT']['max'] * 100:.1f}%), FF MAPE {e['FF']['mape'] * 100:.1f}% (max {e['FF']['max'] * 100:.1f}%), "
                   f"BRAM/DSP/cycles max error {e['BRAM18']['max'] * 100:.0f}/{e['DSP']['max'] * 100:.0f}/"
                   f"{e['cycles']['max'] * 100:.0f}%; fixed " + err if res["n_heldout"] else
                   f"error band (heldout_error): leave-one-model-out over {lo['n']} whole designs of {len(lo['models'])} "
                   f"models LUT MAPE {e['LUT']['mape'] * 100:.1f}% (max {e['LUT']['max'] * 100:.1f}%), FF MAPE "
                   f"{e['FF']['mape'] * 100:.1f}% (max {e['FF']['max'] * 100:.1f}%)")
        fam_data = dict(data.get(fam) or {})
        if arch == "seq":
            fam_data = {**{k: cal[k] for k in SEQ_KEYS},
                        "provenance": (f"fitted by benchmarks/rtl_whole_design.py on {cal['n_train_layers']} layer modules "
                                       f"and the top levels of {where}; memories mapped by Yosys's memory_libmap cost rule "
                                       f"(opq_hw.cost.yosys_memory, not fitted); {err}")}
        else:
            fam_data = {**dict.fromkeys(DA_LAW_KEYS), **fam_data}  # the law's keys first, as the per-layer fit writes them
            fam_data.update({k: cal[k] for k in DA_TOP_KEYS + DA_LAW_KEYS if k in cal})
            for k in DA_TOP_OLD_KEYS:
                fam_data.pop(k, None)
            prov = str(fam_data.get("provenance", "")).split(" | ")[0]
            fam_data["provenance"] = (f"{prov} | {_law_note(result)} | whole designs: top level (pools, output serializer) "
                                      f"fitted by benchmarks/rtl_whole_design.py --arch da on the top levels of {where}; {err}")
        fam_data["heldout_error"] = heldout_error(res)
        data[fam] = fam_data
    if arch == "da" and "da_law" in result:  # the law is the same for every family; no whole designs: per-layer error
        done = {k.split("/")[1] for k, res in result["results"].items()
                if k.startswith("da/") and (res.get("lomo", {}).get("n") or res["n_heldout"])}
        for fam in [f for f in FAMILY_BOARD if f in data and f not in done]:
            fam_data = {**dict.fromkeys(DA_LAW_KEYS), **data[fam]} | {k: result["da_law"][k] for k in DA_LAW_KEYS}
            fam_data["provenance"] = f"{str(fam_data.get('provenance', '')).split(' | ')[0]} | {_law_note(result)}"
            fam_data["heldout_error"] = layer_heldout_error(fam, fam_data)
            data[fam] = fam_data
    write_bytes(path, (header + yaml.safe_dump(data, sort_keys=False, width=200)).encode())


def _law_note(result: dict) -> str:
    law = result["da_law"]
    return (f"da_* (da4ml's cost law, every family): fitted by benchmarks/rtl_whole_design.py on da4ml's solutions of "
            f"{law['train']['n']} layers (scripts/rtl_calibration.py's random layers and the layers of the training models' "
            f"shapes, {LAW_VARIANTS} allocations each), MAPE {law['train']['mape'] * 100:.1f}%; on {law['heldout']['n']} "
            f"layers of the held-out models {law['heldout']['mape'] * 100:.1f}% (max {law['heldout']['max'] * 100:.0f}%)")


def _act_tag(r: dict) -> str:
    """' (8-bit act.)' for a row drawn at other than the default 4-bit activations; ' ($readmemh ROM)' for
    a row whose large ROMs went to Yosys as $readmemh (`readmemh_roms`)."""
    return (f" ({r['act_bits']}-bit act.)" if r.get("act_bits", 4) != 4 else "") + (
        " ($readmemh ROM)" if r.get("rom_readmemh") else "")


def markdown(result: dict) -> str:
    """The table: every design, estimated / measured per metric, held-out rows marked; MAPE per family."""
    lines = [f"# Open RTL flow, whole designs: cost model vs {result['yosys'].split('(')[0].strip()}", "",
             "Written by benchmarks/rtl_whole_design.py. Each cell: estimated / measured (Yosys LUT-equivalents, "
             "flip-flops, block RAMs in the board's BRAM18 units, DSPs; cycles per sample of the generated RTL: "
             "rtl-seq's stage count, equal to Verilator's interval; rtl-da one input pixel per cycle). "
             "The estimate is weight-agnostic (what `opq-hw estimate` prints). **H** = held-out model (never fitted).", ""]
    for key, res in result["results"].items():
        arch, fam = key.split("/")
        lines += [f"## rtl-{arch}, {fam} ({FAMILY_BOARD[fam]})", "",
                  "| model | alloc | held out | LUT | FF | BRAM18 | DSP | cycles |", "|---|---|---|---|---|---|---|---|"]
        rs = [r for r in result["rows"] if r["family"] == fam and r.get("arch", "seq") == arch]
        for r in sorted(rs, key=lambda r: (r.get("heldout", False), r["model"], r["variant"], r.get("act_bits", 4))):
            if "unsupported" in r:
                lines.append(f"| {r['model']} | v{r['variant']} | | not supported: {r['unsupported']} | | | | |")
                continue
            cells = []
            for k in METRICS:
                e, m = r["estimate"][k], r["measured"][k]
                cells.append(f"{e} / {m}" + (f" ({(e - m) / max(m, 1) * 100:+.0f}%)" if k in ("LUT", "FF") else ""))
            lines.append(f"| {r['model']} | v{r['variant']}{_act_tag(r)} | {'**H**' if r['heldout'] else ''} | "
                         + " | ".join(cells) + " |")
        lines.append("")
        if res.get("bram18_exact_with_weights"):
            k, n = res["bram18_exact_with_weights"]
            lines.append(f"- BRAM18 with the logits sized from the actual weights (`estimate RUN` after `build --flow rtl`): "
                         f"exact on {k}/{n} designs")
        for part in ("heldout", "train", "lomo"):
            if part not in res:
                continue
            h = res[part]["errors"] if part == "lomo" else res[part]
            n = {"heldout": res["n_heldout"], "train": res["calibration"]["n_train_designs"]}.get(part) or res[part]["n"]
            what = ("leave-one-model-out, every design with the law and the top level fitted without its model: the band"
                    if part == "lomo" else part)
            lines.append(f"- {what} ({n} designs): " + ", ".join(
                f"{k} MAPE {v['mape'] * 100:.1f}% (max {v['max'] * 100:.1f}%)" for k, v in h.items() if v["mape"] is not None))
        lines.append("")
    if "da_law" in result:
        law = result["da_law"]
        lines.append(f"- rtl-da, da4ml's cost law (every family): da = {law['da_coef']} digits^{law['da_digit_exp']} "
                     f"(W+A+2)^{law['da_width_exp']} A^{law['da_act_exp']}; MAPE on {law['train']['n']} fitted layers "
                     f"{law['train']['mape'] * 100:.1f}%, on {law['heldout']['n']} layers of the held-out models "
                     f"{law['heldout']['mape'] * 100:.1f}% (max {law['heldout']['max'] * 100:.1f}%)")
    for v in result.get("verilator", []):
        lines.append(f"- Verilator, rtl-seq {v['model']} v0: interval {v['verilator_interval']:.0f} cycles per sample, "
                     f"the design's stage count {v['design_stage_count']}, the estimate {v['estimate']}: "
                     f"{'exact' if v['exact'] else 'NOT exact'}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"done in {time.time() - t0:.0f} s")
