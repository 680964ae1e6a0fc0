"""Hostile and careless inputs through the CLI (issue 12, validation at the edge).

One table: each row is an argv (placeholders {run} {out} {bad} {tmp}), an optional setup that
writes the bad file, and a regex the error must match. Every row must exit 2 with `error: ...`
naming the problem, print no traceback, and leave the whole test folder (the run copy, the bad
files, the destination) byte-for-byte as it was. Rows run in-process through `opq_hw.cli.main`;
the `subprocess` rows (slow) run the real console entry point and look at its stderr.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from opq_hw.cli import main

ROOT = Path(__file__).resolve().parents[1]
PYNQ = (ROOT / "board_configs" / "pynq-z2.yaml").read_text()


@dataclass
class Row:
    id: str
    argv: list[str]
    match: str
    setup: Callable[[Path, Path | None], None] | None = None
    run: bool = False  # needs a copy of the session run at {run}
    patch: Callable | None = None  # monkeypatch hook (e.g. hide a tool package)
    cwd: str | None = None  # run with this working directory (relative to tmp)
    subprocess: bool = False
    marks: list = field(default_factory=list)


# ------------------------------------------------------------------------------------------------
# setup helpers
# ------------------------------------------------------------------------------------------------
def _bad(tmp: Path) -> Path:
    d = tmp / "bad"
    d.mkdir(exist_ok=True)
    return d


def write(name: str, data: bytes | str):
    def setup(tmp, run):
        p = _bad(tmp) / name
        p.write_bytes(data.encode() if isinstance(data, str) else data)
    return setup


def ckpt(fn):
    """A digits-mlp state_dict (random init), changed by fn(state) -> object to save, at {bad}/w.pt."""
    def setup(tmp, run):
        import torch

        from opq_hw.models import digits_mlp

        torch.manual_seed(0)
        obj = fn({k: v.clone() for k, v in digits_mlp().state_dict().items()})
        torch.save(obj, _bad(tmp) / "w.pt")
    return setup


def _set(sd, key, value):
    sd[key] = value
    return sd


def board(old: str, new: str, count: int = 1):
    """pynq-z2.yaml with one text replacement, at {bad}/b.yaml."""
    def setup(tmp, run):
        assert old in PYNQ, old
        (_bad(tmp) / "b.yaml").write_text(PYNQ.replace(old, new, count))
    return setup


def _rehash(run: Path, name: str) -> None:
    """Record the changed file's SHA-256 in the manifest, as a hostile editor would, so that the
    command gets past the integrity check (tests/test_run_safety.py covers that) to the parser."""
    if name == "manifest.json":
        return
    from opq_hw.rundir import sha256_file

    man = json.loads((run / "manifest.json").read_text())
    man["artifacts"][name] = sha256_file(run / name)
    (run / "manifest.json").write_text(json.dumps(man))


def edit_json(name: str, fn):
    """Change the run's JSON record `name` with fn(obj) -> obj (or raw bytes)."""
    def setup(tmp, run):
        p = run / name
        new = fn(json.loads(p.read_text()))
        p.write_bytes(new if isinstance(new, bytes) else json.dumps(new).encode())
        _rehash(run, name)
    return setup


def raw_file(name: str, fn):
    """Replace the run's file `name` with fn(old bytes)."""
    def setup(tmp, run):
        p = run / name
        p.write_bytes(fn(p.read_bytes()))
        _rehash(run, name)
    return setup


def remove(name: str):
    def setup(tmp, run):
        (run / name).unlink()
    return setup


def _layer0(fn):
    def f(a):
        fn(a["layers"][0])
        return a
    return f


def det_onnx(tmp, run):
    import onnx
    import onnx.helper as h
    from onnx import TensorProto

    x = h.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 4])
    y = h.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    m = h.make_model(h.make_graph([h.make_node("Det", ["x"], ["y"])], "g", [x], [y]),
                     opset_imports=[h.make_opsetid("", 17)])
    onnx.save(m, str(_bad(tmp) / "det.onnx"))


def gemm_onnx(tmp, run):
    """A supported float graph (one Gemm), at {bad}/gemm.onnx."""
    import numpy as np
    import onnx
    import onnx.helper as h
    from onnx import TensorProto, numpy_helper

    x = h.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = h.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    m = h.make_model(h.make_graph([h.make_node("Gemm", ["x", "w"], ["y"])], "g", [x], [y], [w]),
                     opset_imports=[h.make_opsetid("", 17)])
    onnx.save(m, str(_bad(tmp) / "gemm.onnx"))


def hide(*mods):
    """Make `import mod` fail as if the package were not installed (and forget modules that imported it)."""
    def patch(mp):
        for m in list(sys.modules):
            if m in mods or m.split(".")[0] in mods or m.startswith(("opq_hw.flows", "opq_hw.rtl")):
                mp.delitem(sys.modules, m, raising=False)
        for m in mods:
            mp.setitem(sys.modules, m, None)
    return patch


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(9))

C = ["compress", "--model", "digits-mlp", "--epochs", "0", "--out", "{out}"]
W = C + ["--weights", "{bad}/w.pt"]
E = ["estimate", "{run}", "--board"]
EB = E + ["{bad}/b.yaml"]
EST = ["estimate", "{run}", "--board", "pynq-z2"]
SIM = ["simulate", "{run}", "--level", "qonnx", "--n", "2"]

ROWS = [
    # --- bad numbers -----------------------------------------------------------------------------
    Row("act-bits-negative", C + ["--act-bits", "-4"], r"--act-bits.*0 \(float activations\) or in 2\.\.16"),
    Row("act-bits-1", C + ["--act-bits", "1"], r"--act-bits.*2\.\.16, got 1"),
    Row("act-bits-64", C + ["--act-bits", "64"], r"--act-bits.*got 64"),
    Row("act-bits-word", C + ["--act-bits", "eight"], r"--act-bits must be an integer"),
    Row("uniform-bits-99", C + ["--method", "uniform", "--uniform-bits", "99"], r"--uniform-bits.*2\.\.16, got 99"),
    Row("uniform-bits-1", C + ["--method", "uniform", "--uniform-bits", "1"], r"--uniform-bits.*got 1"),
    Row("uniform-bits-with-opq", C + ["--uniform-bits", "4"], r"--uniform-bits applies to --method uniform"),
    Row("min-bits-1", C + ["--min-bits", "1"], r"--min-bits.*2\.\.16, got 1"),
    Row("max-bits-17", C + ["--max-bits", "17"], r"--max-bits.*2\.\.16, got 17"),
    Row("min-above-max", C + ["--min-bits", "8", "--max-bits", "4"], r"--min-bits 8 > --max-bits 4"),
    Row("lr-nan", C + ["--lr", "nan"], r"--lr.*finite number, got 'nan'"),
    Row("lr-inf", C + ["--lr", "inf"], r"--lr.*finite"),
    Row("lr-negative", C + ["--lr=-1e-3"], r"--lr.*> 0"),
    Row("lr-zero", C + ["--lr", "0"], r"--lr.*> 0"),
    Row("lr-huge", C + ["--lr", "1e6"], r"--lr.*at most 10"),
    Row("epochs-negative", C + ["--epochs", "-3"], r"--epochs must be in 0\.\.100000, got -3"),
    Row("epochs-fraction", C + ["--epochs", "1.5"], r"--epochs must be an integer"),
    Row("target-cr-nan", C + ["--target-cr", "nan"], r"--target-cr must be a finite number"),
    Row("target-cr-inf", C + ["--target-cr", "inf"], r"--target-cr must be a finite number"),
    Row("target-cr-below-1", C + ["--target-cr", "0.5"], r"--target-cr \(compression rate\) must be > 1"),
    Row("target-cr-negative", C + ["--target-cr", "-20"], r"must be > 1"),
    Row("target-cr-unreachable", C + ["--target-cr", "5000"], r"cannot be met.*reachable range", run=True),
    Row("seed-negative", C + ["--seed", "-1"], r"--seed must be in 0\.\.4294967295"),
    Row("seed-float", C + ["--seed", "1e99"], r"--seed must be an integer"),
    Row("input-shape-zero", ["compress", "--model", "opq_hw.models:digits_mlp", "--input-shape", "0,64", "--out", "{out}"],
        r"--input-shape dimension must be in 1\.\.\d+, got 0"),
    Row("input-shape-negative", C + ["--input-shape", "1,-8"], r"--input-shape dimension.*got -8"),
    Row("input-shape-garbage", C + ["--input-shape", "abc"], r"--input-shape dimension must be an integer"),
    Row("input-shape-huge", C + ["--input-shape", "100000,100000"], r"more than 16777216 values"),
    Row("input-shape-5d", C + ["--input-shape", "1,1,1,1,1"], r"1 to 4 dimensions"),
    Row("inspect-shape-zero", ["inspect", "--model", "digits-mlp", "--input-shape", "0"], r"--input-shape dimension"),
    # --- overrides -------------------------------------------------------------------------------
    Row("override-weight-nan", C + ["--override", "0:weight=nan"], r"override '0': weight must be a finite number"),
    Row("override-weight-inf", C + ["--override", "0:weight=inf"], r"override '0': weight must be a finite number"),
    Row("override-weight-negative", C + ["--override", "0:weight=-1"], r"override '0': weight must be > 0"),
    Row("override-weight-zero", C + ["--override", "0:weight=0"], r"override '0': weight must be > 0"),
    Row("override-min-bits-1", C + ["--override", "0:min_bits=1"], r"override '0': min_bits \(weight bits\) must be in 2\.\.16"),
    Row("override-max-bits-99", C + ["--override", "0:max_bits=99"], r"override '0': max_bits.*got 99"),
    Row("override-min-above-max", C + ["--override", "0:min_bits=8,max_bits=4"], r"min_bits 8 > max_bits 4"),
    Row("override-not-a-number", C + ["--override", "0:min_bits=x"], r"min_bits \(weight bits\) must be an integer"),
    Row("override-unknown-key", C + ["--override", "0:colour=3"], r"unknown keys \['colour'\]"),
    Row("override-no-items", C + ["--override", "0:"], r"override must be LAYER_OR_PATTERN:key=value"),
    Row("override-no-layer", C + ["--override", ":skip"], r"override must be LAYER_OR_PATTERN"),
    Row("override-twice", C + ["--override", "0:min_bits=4,min_bits=5"], r"gives min_bits twice"),
    Row("override-matches-nothing", C + ["--override", "nolayer:skip"], r"match no layer", run=True),
    Row("override-skips-everything", C + ["--override", "*:skip"], r"every layer is skipped", run=True),
    # --- options that need each other, names -----------------------------------------------------
    Row("fit-without-board", C + ["--fit"], r"--fit .*needs --board"),
    Row("board-without-fit", C + ["--board", "pynq-z2"], r"--board selects the hardware-aware mode; add --fit"),
    Row("fit-unknown-board", C + ["--fit", "--board", "nope"], r"unknown board 'nope'", run=True),
    Row("unknown-model", ["compress", "--model", "nope", "--out", "{out}"], r"unknown model 'nope'"),
    Row("factory-not-importable", ["compress", "--model", "no_such_mod:f", "--input-shape", "4", "--out", "{out}"],
        r"cannot load model factory"),
    Row("onnx-missing", ["compress", "--model", "{bad}/missing.onnx", "--out", "{out}"], r"missing\.onnx.*not found"),
    Row("onnx-garbage", ["compress", "--model", "{bad}/g.onnx", "--out", "{out}"], r"g\.onnx is not (a valid |an )ONNX model",
        setup=write("g.onnx", b"\x08\x07garbage" * 20)),
    Row("onnx-unsupported-op", ["compress", "--model", "{bad}/det.onnx", "--out", "{out}"],
        r"unsupported ONNX ops: Det \(node 'y'\)", setup=det_onnx),
    # --- checkpoints -------------------------------------------------------------------------------
    Row("ckpt-empty", W, r"w\.pt is empty \(0 bytes\)", setup=write("w.pt", b"")),
    Row("ckpt-garbage", W, r"w\.pt cannot be read as a weights-only state_dict: it is not a torch checkpoint", setup=write("w.pt", b"\x80\x02garbage" * 30)),
    Row("ckpt-truncated", W, r"w\.pt cannot be read as a weights-only state_dict: it is not a torch checkpoint \(no zip archive: truncated",
        setup=lambda tmp, run: (ckpt(lambda sd: sd)(tmp, run),
                                (tmp / "bad" / "w.pt").write_bytes((tmp / "bad" / "w.pt").read_bytes()[:3000]))),
    Row("ckpt-pickled-module", W, r"w\.pt is not a weights-only state_dict.*never unpickles",
        setup=ckpt(lambda sd: {"net": __import__("torch").nn.Linear(2, 2)})),
    Row("ckpt-wrong-keys", W, r"missing keys: 2\.bias; unexpected keys: extra",
        setup=ckpt(lambda sd: {**{k: v for k, v in sd.items() if k != "2.bias"}, "extra": sd["2.bias"]})),
    Row("ckpt-wrong-shape", W, r"wrong shapes: 0\.weight \(64, 63\) \(model \(64, 64\)\)",
        setup=ckpt(lambda sd: _set(sd, "0.weight", sd["0.weight"][:, :63].clone()))),
    Row("ckpt-nan", W, r"NaN or Inf values in 0\.weight",
        setup=ckpt(lambda sd: _set(sd, "0.weight", sd["0.weight"].index_fill(1, __import__("torch").tensor([3]), float("nan"))))),
    Row("ckpt-inf-bias", W, r"NaN or Inf values in 2\.bias", setup=ckpt(lambda sd: _set(sd, "2.bias", sd["2.bias"] / 0))),
    Row("ckpt-tiny", W, r"channel \d+ has weights of at most [0-9.]+e-3\d.*rescale", setup=ckpt(lambda sd: {k: v * 1e-30 for k, v in sd.items()})),
    Row("ckpt-huge", W, r"values beyond 1e\+06 in 0\.weight, 0\.bias", setup=ckpt(lambda sd: {k: v * 1e30 for k, v in sd.items()})),
    Row("ckpt-huge-bias", W, r"values beyond 1e\+06 in 0\.bias:",
        setup=ckpt(lambda sd: _set(sd, "0.bias", sd["0.bias"] * 1e37))),
    Row("ckpt-all-zero-layer", W, r"layer '2' has all-zero weights", setup=ckpt(lambda sd: _set(sd, "2.weight", sd["2.weight"] * 0))),
    Row("ckpt-int-tensors", W, r"hold torch\.int64 values where the model has floats",
        setup=ckpt(lambda sd: _set(sd, "0.weight", sd["0.weight"].long()))),
    Row("ckpt-list", W, r"holds a list, not a state_dict", setup=ckpt(lambda sd: list(sd.values()))),
    Row("ckpt-non-tensor-values", W, r"entries \['0\.weight'\] are not name -> tensor",
        setup=ckpt(lambda sd: _set(sd, "0.weight", 3))),
    Row("ckpt-missing", W, r"checkpoint .*w\.pt' not found"),
    Row("ckpt-directory", W, r"not found", setup=lambda tmp, run: (_bad(tmp) / "w.pt").mkdir()),
    # --- output paths -------------------------------------------------------------------------------
    Row("out-in-proc", C[:-1] + ["/proc/opq-hw-run"], r"cannot create /proc/opq-hw-run"),
    Row("out-is-a-file", C[:-1] + ["{bad}/file"], r"file exists and is not a directory", setup=write("file", "x")),
    Row("out-below-a-file", C[:-1] + ["{bad}/file/sub"], r"cannot create .*file is not a directory", setup=write("file", "x")),
    Row("out-dev-null", C[:-1] + ["/dev/null"], r"/dev/null exists and is not a directory"),
    Row("out-dot-not-empty", C[:-1] + ["."], r"output \S+ is not empty and is not an opq-hw run", cwd="bad",
        setup=write("notes.txt", "mine")),
    Row("out-foreign-dir", C[:-1] + ["{bad}"], r"not empty and is not an opq-hw run", setup=write("notes.txt", "mine")),
    # --- boards (--board path/to/board.yaml) ------------------------------------------------------
    Row("board-clock-nan", EB, r"b\.yaml: clock_mhz must be a finite number", run=True, setup=board("clock_mhz: 100.0", "clock_mhz: .nan")),
    Row("board-clock-inf", EB, r"clock_mhz must be a finite number", run=True, setup=board("clock_mhz: 100.0", "clock_mhz: .inf")),
    Row("board-clock-zero", EB, r"clock_mhz must be a finite number in \(0, 5000", run=True, setup=board("clock_mhz: 100.0", "clock_mhz: 0")),
    Row("board-lut-zero", EB, r"no usable LUT", run=True, setup=board("LUT: 53200", "LUT: 0")),
    Row("board-lut-1e30-string", EB, r"`capacity` values must be non-negative integers.*'LUT': '1e30'", run=True,
        setup=board("LUT: 53200", "LUT: 1e30")),
    Row("board-lut-1e30-float", EB, r"non-negative integers.*'LUT': 1e\+30", run=True, setup=board("LUT: 53200", "LUT: 1.0e+30")),
    Row("board-lut-huge-int", EB, r"non-negative integers \(at most 100,000,000\)", run=True,
        setup=board("LUT: 53200", "LUT: 1000000000000")),
    Row("board-lut-bool", EB, r"non-negative integers.*'LUT': True", run=True, setup=board("LUT: 53200", "LUT: true")),
    Row("board-limit-nan", EB, r"`utilisation_limits` values must be in \(0, 1\]", run=True,
        setup=board("utilisation_limits: {LUT: 0.8", "utilisation_limits: {LUT: .nan")),
    Row("board-coefficient-inf", EB, r"coefficients must be finite numbers", run=True,
        setup=lambda tmp, run: (_bad(tmp) / "b.yaml").write_text(re.sub(r"const_mult_lut_per_bit2: [0-9.]+",
                                                                         "const_mult_lut_per_bit2: .inf", PYNQ))),
    Row("board-dsp-width", EB, r"dsp_mult_width must be", run=True, setup=board("dsp_mult_width: [25, 18]", "dsp_mult_width: [25, 1000]")),
    Row("board-empty", EB, r"b\.yaml: the file is empty", run=True, setup=write("b.yaml", "\n  \n")),
    Row("board-binary", EB, r"b\.yaml: binary data", run=True, setup=write("b.yaml", bytes(range(256)))),
    Row("board-latin1", EB, r"b\.yaml: not UTF-8 text", run=True,
        setup=write("b.yaml", PYNQ.encode().replace(b"TUL PYNQ-Z2", b"TUL PYNQ-Z2 \xe9", 1))),
    Row("board-alias-bomb", EB, r"YAML aliases \(\*a\) are not allowed", run=True, setup=write("b.yaml", BOMB)),
    Row("board-alias-small", EB, r"YAML aliases \(\*lim\) are not allowed", run=True,
        setup=board("utilisation_limits: {LUT: 0.8, FF: 0.8, BRAM18: 0.9, URAM: 0.9, DSP: 0.9}",
                    "utilisation_limits: &lim {LUT: 0.8, FF: 0.8, BRAM18: 0.9, URAM: 0.9, DSP: 0.9}\nshell_x: *lim")),
    Row("board-too-large", EB, r"too large for a board file", run=True, setup=write("b.yaml", PYNQ + "#" * (1 << 20))),
    Row("board-bad-syntax", EB, r"b\.yaml: not valid YAML", run=True, setup=write("b.yaml", "name: [unclosed\n")),
    Row("board-a-list", EB, r"must be a mapping of board fields", run=True, setup=write("b.yaml", "- 1\n- 2\n")),
    Row("board-unknown-key", EB, r"unknown keys \['lut_count'\]", run=True, setup=board("lut_inputs: 6", "lut_inputs: 6\nlut_count: 5")),
    Row("board-unknown-name", E + ["nope"], r"unknown board 'nope'", run=True),
    Row("boards-unknown", ["boards", "nope"], r"unknown board 'nope'"),
    # --- run records read back -----------------------------------------------------------------------
    Row("alloc-truncated", EST, r"allocation\.json is not valid JSON.*truncated", run=True,
        setup=raw_file("allocation.json", lambda b: b[: len(b) // 2])),
    Row("alloc-not-utf8", EST, r"allocation\.json is not UTF-8", run=True, setup=raw_file("allocation.json", lambda b: b"\xff\xfe" + b)),
    Row("alloc-empty", EST, r"allocation\.json is empty", run=True, setup=raw_file("allocation.json", lambda b: b"")),
    Row("alloc-a-list", EST, r"allocation\.json: Allocation: expected a JSON object", run=True, setup=edit_json("allocation.json", lambda a: [a])),
    Row("alloc-bits-string", EST, r"allocation\.json: LayerAlloc: field 'bits' must be int", run=True,
        setup=edit_json("allocation.json", _layer0(lambda la: la.__setitem__("bits", "x")))),
    Row("alloc-bits-99", SIM, r"allocation\.json: LayerAlloc '0': bad bits 99", run=True,
        setup=edit_json("allocation.json", _layer0(lambda la: la.__setitem__("bits", 99)))),
    Row("alloc-scale-nan", EST, r"allocation\.json: LayerAlloc: field 'scales'", run=True,
        setup=edit_json("allocation.json", _layer0(lambda la: la["scales"].__setitem__(0, float("nan"))))),
    Row("alloc-scale-negative", SIM, r"LayerAlloc '0': bad scales", run=True,
        setup=edit_json("allocation.json", _layer0(lambda la: la["scales"].__setitem__(0, -0.5)))),
    Row("alloc-nonzero-above-n", EST, r"bad n_nonzero 99999 of n_weights", run=True,
        setup=edit_json("allocation.json", _layer0(lambda la: la.__setitem__("n_nonzero", 99999)))),
    Row("alloc-missing-key", EST, r"LayerAlloc: missing keys \['n_nonzero'\]", run=True,
        setup=edit_json("allocation.json", _layer0(lambda la: la.pop("n_nonzero")))),
    Row("alloc-renamed-layer", SIM, r"belong to different runs", run=True,
        setup=edit_json("allocation.json", _layer0(lambda la: la.__setitem__("name", "other")))),
    Row("alloc-missing-simulate", SIM, r"allocation\.json is missing", run=True, setup=remove("allocation.json")),
    Row("alloc-missing-build", ["build", "{run}", "--flow", "hls4ml", "--board", "pynq-z2"], r"allocation\.json is missing",
        run=True, setup=remove("allocation.json")),
    Row("alloc-missing-estimate", EST, r"allocation\.json is missing", run=True, setup=remove("allocation.json")),
    Row("specs-truncated", SIM, r"specs\.json is not valid JSON", run=True, setup=raw_file("specs.json", lambda b: b[:-20])),
    Row("specs-an-object", EST, r"specs\.json: expected a non-empty JSON list", run=True, setup=edit_json("specs.json", lambda s: {"x": s})),
    Row("specs-negative-channels", EST, r"specs\.json: LayerSpec '0': bad out_channels", run=True,
        setup=edit_json("specs.json", lambda s: [{**s[0], "out_channels": -4}] + s[1:])),
    Row("manifest-truncated", EST, r"manifest\.json is not valid JSON", run=True, setup=raw_file("manifest.json", lambda b: b[:40])),
    Row("manifest-a-list", SIM, r"manifest\.json:? (is )?not an opq-hw manifest", run=True, setup=edit_json("manifest.json", lambda m: [m])),
    Row("manifest-lr-nan", SIM, r"manifest\.json: config: lr \(learning rate\) must be a finite number", run=True,
        setup=edit_json("manifest.json", lambda m: {**m, "config": {**m["config"], "lr": float("nan")}})),
    Row("manifest-unknown-config", EST, r"manifest\.json: config: unknown config keys \['evil'\]", run=True,
        setup=edit_json("manifest.json", lambda m: {**m, "config": {**m["config"], "evil": 1}})),
    Row("manifest-missing", EST, r"is not an opq-hw run \(no manifest\.json\)", run=True, setup=remove("manifest.json")),
    Row("weights-truncated", SIM, r"weights\.pt cannot be read.*not a torch checkpoint", run=True, setup=raw_file("weights.pt", lambda b: b[:1000])),
    Row("weights-empty", SIM, r"weights\.pt is empty", run=True, setup=raw_file("weights.pt", lambda b: b"")),
    Row("golden-input-garbage", ["build", "{run}", "--flow", "rtl", "--board", "ice40-up5k", "--no-pnr", "--no-sim"],
        r"golden_input\.npy is not a readable \.npy array", run=True, setup=raw_file("golden_input.npy", lambda b: b[:50])),
    Row("golden-input-wrong-shape", ["build", "{run}", "--flow", "rtl", "--board", "ice40-up5k", "--no-pnr", "--no-sim"],
        r"golden_input\.npy \(samples of shape \(3,\)\) do not describe the run's model", run=True,
        setup=lambda tmp, run: (__import__("numpy").save(run / "golden_input.npy", __import__("numpy").zeros((4, 3), "float32")),
                                _rehash(run, "golden_input.npy"))),
    Row("cost-garbage", ["report", "{run}"], r"cost\.json: CostReport: missing keys", run=True,
        setup=lambda tmp, run: (run / "cost.json").write_text('{"layers": []}')),
    Row("measured-garbage", ["report", "{run}"], r"resources\.json must hold a JSON object", run=True,
        setup=lambda tmp, run: (
            subprocess_free_estimate(run),
            (run / "build" / "x").mkdir(parents=True),
            (run / "build" / "x" / "resources.json").write_text('{"LUT": "many"}'))),
    Row("not-a-run", ["estimate", "{bad}", "--board", "pynq-z2"], r"is not an opq-hw run", setup=write("x", "x")),
    # --- other commands -----------------------------------------------------------------------------
    Row("simulate-n-zero", ["simulate", "{run}", "--level", "qonnx", "--n", "0"], r"--n must be in 1\.\.", run=True),
    Row("simulate-n-negative", ["simulate", "{run}", "--level", "qonnx", "--n", "-5"], r"--n must be in 1\.\.", run=True),
    Row("simulate-unknown-level", ["simulate", "{run}", "--level", "gates"], r"unknown simulation level 'gates'", run=True),
    Row("build-unknown-flow", ["build", "{run}", "--flow", "magic", "--board", "pynq-z2"], r"unknown flow 'magic'", run=True),
    Row("build-freq-nan", ["build", "{run}", "--flow", "rtl", "--board", "ice40-up5k", "--freq", "nan"],
        r"--freq must be a finite number", run=True),
    Row("build-freq-zero", ["build", "{run}", "--flow", "rtl", "--board", "ice40-up5k", "--freq", "0"], r"--freq must be > 0", run=True),
    Row("build-fps-negative", ["build", "{run}", "--flow", "finn", "--board", "pynq-z2", "--target-fps", "-1"],
        r"--target-fps must be > 0", run=True),
    Row("build-timeout-inf", ["build", "{run}", "--flow", "rtl", "--board", "ice40-up5k", "--tool-timeout", "inf"],
        r"--tool-timeout must be a finite number", run=True),
    Row("build-pipeline-negative", ["build", "{run}", "--flow", "rtl", "--board", "ecp5-85f", "--pipeline", "-1"],
        r"--pipeline must be >= 0", run=True),
    Row("csim-without-hls4ml", ["simulate", "{run}", "--level", "csim", "--n", "2"], r"'hls4ml'.*make hls4ml-tools",
        run=True, patch=hide("hls4ml")),
    Row("rtl-without-da4ml", ["build", "{run}", "--flow", "rtl", "--board", "ecp5-85f", "--rtl-arch", "da4ml",
                              "--no-pnr", "--no-sim"], r"'da4ml'.*make rtl-tools", run=True, patch=hide("da4ml")),
    Row("onnx-without-onnx2torch", ["compress", "--model", "{bad}/gemm.onnx", "--out", "{out}"],
        r"ONNX input needs onnx2torch.*run `make setup`", setup=gemm_onnx, patch=hide("onnx2torch")),
    Row("estimate-unknown-arch", ["estimate", "{run}", "--board", "pynq-z2", "--arch", "magic"], r"magic", run=True),
    # --- the real entry point: stderr of a separate process ---------------------------------------
    Row("proc-lr-nan", C + ["--lr", "nan"], r"--lr.*finite", subprocess=True),
    Row("proc-alias-bomb", EB, r"YAML aliases", run=True, setup=write("b.yaml", BOMB), subprocess=True),
    Row("proc-out-proc", C[:-1] + ["/proc/x/y"], r"cannot create /proc/x/y", subprocess=True),
    Row("proc-alloc-truncated", SIM, r"allocation\.json is not valid JSON", run=True, subprocess=True,
        setup=raw_file("allocation.json", lambda b: b[:100])),
]


def subprocess_free_estimate(run: Path) -> None:
    """A valid cost.json in the run (the `report` rows need one), written in-process."""
    from opq_hw.report import estimate_run

    estimate_run(run, board="pynq-z2", arch="hls4ml-latency")


def tree_digest(root: Path) -> dict[str, str]:
    """path -> mode and content hash of every entry under root (directories included)."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        h = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink() else ""
        out[str(p.relative_to(root))] = f"{oct(st.st_mode)} {h}"
    return out


def _params():
    out = []
    for r in ROWS:
        marks = list(r.marks) + ([pytest.mark.slow] if r.subprocess else [])
        out.append(pytest.param(r, id=r.id, marks=marks))
    return out


def test_table_is_large_and_unique():
    ids = [r.id for r in ROWS]
    assert len(ids) == len(set(ids))
    assert len(ROWS) >= 80


@pytest.mark.parametrize("row", _params())
def test_hostile_input(row: Row, tmp_path, request, monkeypatch, capsys):
    run = None
    if row.run:
        run = tmp_path / "run"
        shutil.copytree(request.getfixturevalue("mlp_run"), run)
    (tmp_path / "bad").mkdir()
    if row.setup:
        row.setup(tmp_path, run)
    subs = {"{run}": str(run), "{out}": str(tmp_path / "out"), "{bad}": str(tmp_path / "bad"), "{tmp}": str(tmp_path)}
    argv = [a if not any(k in a for k in subs) else _sub(a, subs) for a in row.argv]
    before = tree_digest(tmp_path)
    if row.cwd:
        monkeypatch.chdir(tmp_path / row.cwd)
    if row.patch:
        row.patch(monkeypatch)
    if row.subprocess:
        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        p = subprocess.run([sys.executable, "-m", "opq_hw.cli", *argv], capture_output=True, text=True, env=env,
                           timeout=300, cwd=os.getcwd())
        rc, err = p.returncode, p.stderr
    else:
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse: bad option values exit 2 from parse_args
            rc = e.code
        err = capsys.readouterr().err
    assert rc == 2, (rc, err)
    assert "Traceback" not in err, err
    assert "weights_only=False" not in err and "weights_only` set to `False" not in err, err
    last = err.strip().splitlines()[-1] if err.strip() else ""
    assert re.search(r"(^|: )error: ", last), err
    assert re.search(row.match, last), (row.match, err)
    after = tree_digest(tmp_path)
    assert after == before, ("the failed command changed files",
                             sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k)))
    assert not (tmp_path / "out").exists()


def _sub(a: str, subs: dict[str, str]) -> str:
    for k, v in subs.items():
        a = a.replace(k, v)
    return a


def test_version_flag(capsys):
    from opq_hw import __version__

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"opq-hw {__version__}"


def test_library_rejects_what_the_cli_rejects():
    """CompressConfig and allocation.resolve_overrides hold the same ranges as the CLI options."""
    from opq_hw.allocation import resolve_overrides
    from opq_hw.errors import OpqError
    from opq_hw.pipeline import CompressConfig
    from opq_hw.validate import CONFIG_CHECKS

    import dataclasses

    assert set(CONFIG_CHECKS) == {f.name for f in dataclasses.fields(CompressConfig)}
    for kw, pat in [({"lr": float("nan")}, "lr"), ({"epochs": -3}, "epochs"), ({"act_bits": 1}, "act_bits"),
                    ({"act_bits": 0}, "None for float"), ({"min_bits": 1}, "min_bits"), ({"max_bits": 99}, "max_bits"),
                    ({"min_bits": 8, "max_bits": 4}, "min_bits 8 > max_bits 4"), ({"uniform_bits": 99}, "uniform_bits"),
                    ({"target_cr": float("inf")}, "target_cr"), ({"target_cr": 1.0}, "> 1"), ({"seed": -1}, "seed"),
                    ({"data": ""}, "data"), ({"method": "magic"}, "method"), ({"input_shape": (0, 8)}, "input_shape"),
                    ({"overrides": {"0": {"weight": float("nan")}}}, "weight"), ({"overrides": {"0": {"min_bits": 1}}}, "min_bits"),
                    ({"overrides": {"0": {"skip": "yes"}}}, "skip"), ({"overrides": ["0"]}, "overrides"),
                    ({"epochs": True}, "epochs"), ({"model": ""}, "model")]:
        with pytest.raises(OpqError, match=pat):
            CompressConfig(**kw)
    for ov, pat in [({"0": {"max_bits": 17}}, "max_bits"), ({"0": {"weight": -1}}, "weight"), ({"0": {"x": 1}}, "unknown keys"),
                    ({"0": 5}, "must be a mapping"), ({"": {"skip": True}}, "non-empty")]:
        with pytest.raises(OpqError, match=pat):
            resolve_overrides(["0", "2"], ov)
    assert resolve_overrides(["0", "2"], {"0": {"min_bits": 6, "weight": 2}})["0"].min_bits == 6
    import torch

    from opq_hw.allocation import _check_weights

    for w, pat in [(torch.full((2, 3), 1e9), "beyond 1e\\+06"), (torch.tensor([[1.0, 0.5], [1e-9, 0.0]]), "channel 1"),
                   (torch.zeros(2, 2), "all-zero"), (torch.tensor([[1.0, float("nan")]]), "NaN")]:
        with pytest.raises(OpqError, match=pat):
            _check_weights("L", w)
    _check_weights("L", torch.tensor([[1.0, 0.5], [0.0, 0.0]]))  # an all-zero channel is fine


def test_artifacts_share_one_file_mode(mlp_run):
    modes = {p.name: p.stat().st_mode & 0o777 for p in mlp_run.iterdir() if p.is_file()}
    assert len(set(modes.values())) == 1, modes
    assert "model.qonnx.onnx" in modes


def test_json_error_names_the_file_and_zip_sanity(tmp_path):
    from opq_hw.artifact import read_json
    from opq_hw.errors import OpqError

    p = tmp_path / "deep.json"
    p.write_text("[" * 100_000)
    with pytest.raises(OpqError, match="deep.json is not valid JSON"):
        read_json(p)
    assert not zipfile.is_zipfile(p)
