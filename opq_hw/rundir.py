"""Run-directory safety: what opq-hw wrote (SHA-256 of every file, in the manifest), one writer at
a time (an advisory lock beside the run), verified reads, builds swapped in only on success, and
no code named by a run imported unless the user names it again.

A run directory is data and is treated as untrusted: every command checks the files it reads
against the manifest (`verify`), and `open_run` refuses a run that another tool version or a
person changed. The hashes catch accidental and careless changes (an edited `allocation.json`,
another run's `weights.pt`); they are not a signature.
"""
from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

from .artifact import make_tmp_dir, read_json, stale_tmp_dirs, swap_in, write_bytes, write_json
from .errors import OpqError
from .validate import check_config

if TYPE_CHECKING:
    import numpy as np

    from .spec import Allocation, LayerSpec

TOOL = "opq-hw"
SCHEMA = 2  # 2: manifest["artifacts"] = {relative path: sha256} of every file opq-hw wrote
MANIFEST = "manifest.json"
# What `compress` writes; every command that reads a run verifies these.
CORE = ("allocation.json", "specs.json", "weights.pt", "model.qonnx.onnx", "golden_input.npy", "golden_output.npy",
        "golden_labels.npy",
        "metrics.json", "float_model.onnx")
LATER = ("build/", "cost.json", "reports/")  # what later commands add to a run


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------
# the lock
# ------------------------------------------------------------------------------------------------
_held: dict[str, list] = {}


def lock_path(run: str | os.PathLike) -> Path:
    """The lock file of a run: a hidden sibling (the run directory itself is swapped as a whole)."""
    run = Path(os.path.abspath(run))
    return run.parent / f".{run.name}.lock"


def _acquire(lp: Path, run) -> int:
    """flock the lock file without waiting; retried when another process removed the file between
    our open and our lock (then we would hold a lock on an unlinked file)."""
    import fcntl

    while True:
        fd = os.open(lp, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                pid = os.read(fd, 32).decode(errors="replace").strip() or "?"
            finally:
                os.close(fd)
            raise OpqError(f"another opq-hw command (pid {pid}) is writing {run} right now (lock {lp}); wait for it "
                           "to finish, or use another run directory") from None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lp))
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)


@contextlib.contextmanager
def locked(run: str | os.PathLike) -> Iterator[None]:
    """Hold the run's advisory lock (re-entrant in this process; released by the OS if the process
    dies). A second opq-hw process that wants the same run fails at once with an OpqError instead
    of waiting or interleaving. The lock file is removed on release."""
    lp = lock_path(run)
    key = str(lp)
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    try:
        lp.parent.mkdir(parents=True, exist_ok=True)
        fd = _acquire(lp, run)
    except OSError as e:
        raise OpqError(f"cannot create the lock file {lp} ({e.strerror or e}); the folder holding the run must be "
                       "writable: choose another --out or fix its permissions") from None
    _held[key] = [fd, 1]
    try:
        yield
    finally:
        del _held[key]
        with contextlib.suppress(OSError):
            os.unlink(lp)  # while still holding it: a waiting opener notices (samestat) and retries
        os.close(fd)


# ------------------------------------------------------------------------------------------------
# manifest and verification
# ------------------------------------------------------------------------------------------------
def rel(run: Path, p: Path) -> str:
    return p.relative_to(run).as_posix()


def hash_tree(run: Path, top: Path) -> dict[str, str]:
    """{relative path: sha256} of every regular file under `top` (symlinks are not followed)."""
    out = {}
    if top.is_file():
        return {rel(run, top): sha256_file(top)}
    for dirpath, dirnames, filenames in os.walk(top):
        for f in filenames:
            p = Path(dirpath) / f
            if p.is_file() and not p.is_symlink():
                out[rel(run, p)] = sha256_file(p)
    return out


def read_manifest(run: str | os.PathLike) -> dict[str, Any]:
    """The manifest of an opq-hw run, checked for our tool and schema (not the files)."""
    run = Path(run)
    man = run / MANIFEST
    if not man.is_file():
        raise OpqError(f"{run} is not an opq-hw run (no {MANIFEST}); create one with `opq-hw compress` or `opq-hw demo`")
    try:
        m = read_json(man)
    except (ValueError, UnicodeDecodeError) as e:
        raise OpqError(f"{man} is not valid JSON ({e}); re-create the run with `opq-hw compress`") from None
    if not isinstance(m, dict) or m.get("tool") != TOOL:
        raise OpqError(f"{man} is not an opq-hw manifest (no \"tool\": \"opq-hw\"); re-create the run with `opq-hw compress`")
    if m.get("schema") != SCHEMA or not isinstance(m.get("artifacts"), dict):
        raise OpqError(f"{run} was written by an older opq-hw (manifest schema {m.get('schema', 1)}, this version reads "
                       f"{SCHEMA}: no file hashes to check it against); re-create the run with `opq-hw compress`")
    if not isinstance(m.get("config"), dict):
        raise OpqError(f"{man}: not an opq-hw manifest (no `config` object); re-create the run with `opq-hw compress`")
    try:
        check_config(m["config"])
    except OpqError as e:
        raise OpqError(f"{man}: config: {e}; re-create the run with `opq-hw compress`") from None
    return m


def _fix_for(name: str) -> str:
    if name == "cost.json":
        return "run `opq-hw estimate` again to rewrite it"
    if name.startswith("build/"):
        return f"run `opq-hw build` again to rewrite {'/'.join(name.split('/')[:2])}/"
    if name.startswith("reports/"):
        return "run the command that wrote it again"
    return "re-create the run with `opq-hw compress` (into a new --out, or remove this one)"


def verify(run: str | os.PathLike, names: list[str] | tuple[str, ...] | None = None,
           manifest: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Check files of a run against the hashes in its manifest; returns the manifest.

    names=None: every core artifact the manifest records (what `compress` wrote). A core artifact
    must be recorded; a later output (build/, cost.json, reports/) that is not recorded was put
    there by someone else (e.g. synthesis reports copied back) and is not checked."""
    run = Path(run)
    m = dict(manifest) if manifest is not None else read_manifest(run)
    arts = m["artifacts"]
    if names is None:
        names = list(CORE)
        for must in ("allocation.json", "specs.json"):
            if must not in arts:
                raise OpqError(f"{run}/{MANIFEST} records no hash for {must}; re-create the run with `opq-hw compress`")
    for name in names:
        want = arts.get(name)
        p = run / name
        if want is None:
            if name in CORE and p.exists():
                raise OpqError(f"{p} is not recorded in the run's manifest (opq-hw did not write it); "
                               + _fix_for(name))
            continue
        if not p.is_file():
            raise OpqError(f"{p} is missing (the manifest records sha256 {want}); " + _fix_for(name))
        got = sha256_file(p)
        if got != want:
            raise OpqError(f"{p} changed since opq-hw wrote it: sha256 expected {want}, actual {got}; "
                           + _fix_for(name))
    return m


def open_run(run: str | os.PathLike) -> dict[str, Any]:
    """The verified manifest of a run (its core artifacts all match their recorded hashes)."""
    return verify(run)


def foreign_files(run: Path, manifest: Mapping[str, Any] | None) -> list[str]:
    """Files in `run` that opq-hw did not write, or that changed since (relative paths).
    Without a usable manifest every file but the manifest counts."""
    arts = (manifest or {}).get("artifacts") or {}
    out = []
    for dirpath, dirnames, filenames in os.walk(run):
        d = Path(dirpath)
        for name in filenames + [n for n in dirnames if (d / n).is_symlink()]:
            p = d / name
            r = rel(run, p)
            if r == MANIFEST and arts:
                continue
            if p.is_symlink() or not p.is_file() or arts.get(r) != sha256_file(p):
                out.append(r + ("" if r not in arts else " (changed)"))
    return sorted(out)


def update_manifest(run: str | os.PathLike, fn: Callable[[dict[str, Any]], None]) -> None:
    """Read-modify-write the manifest atomically, under the run's lock."""
    run = Path(run)
    with locked(run):
        m = read_manifest(run)
        fn(m)
        write_json(run / MANIFEST, m)


def record(run: str | os.PathLike, top: str, present: bool = True) -> None:
    """Record (or, with present=False, forget) every file under `run/top` in the manifest."""
    run = Path(run)

    def fn(m):
        arts = m["artifacts"]
        for k in [k for k in arts if k == top or k.startswith(top.rstrip("/") + "/")]:
            del arts[k]
        if present and (run / top).exists():
            arts.update(hash_tree(run, run / top))
        m["artifacts"] = dict(sorted(arts.items()))

    update_manifest(run, fn)


def write_outputs(run: str | os.PathLike, files: Mapping[str, bytes]) -> None:
    """Write later outputs (cost.json, reports/...) of a command into a run: each file atomically,
    all of them only once the command has computed everything, then their hashes into the manifest."""
    run = Path(run)
    with locked(run):
        read_manifest(run)
        for name, data in files.items():
            write_bytes(run / name, data)

        def fn(m):
            for name in files:
                m["artifacts"][name] = sha256_file(run / name)
            m["artifacts"] = dict(sorted(m["artifacts"].items()))

        update_manifest(run, fn)


# ------------------------------------------------------------------------------------------------
# builds
# ------------------------------------------------------------------------------------------------
@dataclass
class Build:
    """A build in progress: write into `path`; set `failed` to a message to keep the previous build."""

    path: Path
    final: Path
    failed: str | None = None
    resumed: dict[str, Any] | None = None  # the journal of the interrupted build this one continues (opq_hw.steps)

    @property
    def failed_dir(self) -> Path:
        return self.final.with_name(self.final.name + ".failed")


@contextlib.contextmanager
def build_dir(run: str | os.PathLike, flow: str, log: Callable[[str], Any] | None = None,
              resume_key: str | None = None) -> Iterator[Build]:
    """`RUN/build/<flow>/` written into a temporary sibling and swapped in only on success.

    An exception removes the temporary directory; `b.failed = "why"` keeps it as
    `build/<flow>.failed/` instead. Either way the previous good `build/<flow>/` stays. The swapped-in
    files are recorded in the manifest. Holds the run's lock throughout. The path is absolute (tools
    such as Verilator run in subfolders of it).

    resume_key: a temporary directory left by a killed build whose step journal carries this key
    is continued (`b.resumed` = its journal, see `opq_hw.steps`) instead of removed."""
    from .steps import read_journal

    run = Path(os.path.abspath(run))
    final = run / "build" / flow
    with locked(run):
        read_manifest(run)
        b = None
        for s in stale_tmp_dirs(final):
            j = read_journal(s, resume_key) if resume_key and b is None else None
            if j is not None:
                from .artifact import TMP_MARKER

                (s / TMP_MARKER).write_text(json.dumps({"tool": TOOL, "target": final.name, "pid": os.getpid()}))
                b = Build(path=s, final=final, resumed=j)
                continue
            shutil.rmtree(s, ignore_errors=True)
            if log:
                log(f"note: removed {s.name}, left by an interrupted build")
        new_parent = not final.parent.exists()
        if b is None:
            b = Build(path=make_tmp_dir(final), final=final)
        try:
            yield b
        except BaseException:
            shutil.rmtree(b.path, ignore_errors=True)
            if new_parent:  # a failed first build leaves no empty build/ behind
                with contextlib.suppress(OSError):
                    final.parent.rmdir()
            raise
        dest = b.failed_dir if b.failed else final
        swap_in(b.path, dest)
        b.path = dest
        if not b.failed and b.failed_dir.exists():
            shutil.rmtree(b.failed_dir, ignore_errors=True)
            record(run, f"build/{b.failed_dir.name}", present=False)
        record(run, f"build/{dest.name}")


# ------------------------------------------------------------------------------------------------
# no code from data
# ------------------------------------------------------------------------------------------------
_model_source: contextvars.ContextVar[tuple[str | None, bool]] = contextvars.ContextVar("opq_model_source",
                                                                                         default=(None, False))


@contextlib.contextmanager
def model_source(model: str | None = None, trust_run: bool = False) -> Iterator[None]:
    """Within: `load_run` builds a `module:factory` run's model from `model` (the user named it
    again), or from the run's record when `trust_run`."""
    tok = _model_source.set((model, bool(trust_run)))
    try:
        yield
    finally:
        _model_source.reset(tok)


def model_ref(run: Path, recorded: str, model: str | None = None, trust_run: bool | None = None) -> str:
    """Which model reference `load_run` may build for a run. Built-in names come from the
    registry; a float ONNX run uses its own copy; anything else must be given again by the user."""
    from .models import BUILTIN

    ctx_model, ctx_trust = _model_source.get()
    model = model or ctx_model
    trust_run = ctx_trust if trust_run is None else trust_run
    if recorded in BUILTIN:
        return recorded
    if recorded.endswith(".onnx"):
        return str(run / "float_model.onnx")
    if model:
        return model
    if trust_run:
        return recorded
    raise OpqError(f"run {run} was made from the model factory {recorded!r}; opq-hw does not import code that a run "
                   f"directory names. If you trust that module, give it again: --model {recorded} (or pass "
                   "--trust-run to use the run's record)")


# ------------------------------------------------------------------------------------------------
# weights against the allocation
# ------------------------------------------------------------------------------------------------
def check_weights(run: Path, qmodel, alloc) -> None:
    """The loaded weights must be the allocation's: mask digest, survivors, bit widths and scales."""
    import torch

    from .carrier import carried_layers
    from .quant import mask_digest, qmax

    layers = carried_layers(qmodel)
    for la in alloc.layers:
        if la.skipped:
            continue
        if la.name not in layers:
            raise OpqError(f"{run}: allocation.json names layer {la.name!r}, which the model does not carry; "
                           "re-create the run with `opq-hw compress`")
        fm = layers[la.name].parametrizations.weight[0]
        mask = fm.mask.detach()
        problems = []
        if mask_digest(mask) != la.mask_digest:
            problems.append("mask digest")
        if int(mask.sum()) != la.n_nonzero:
            problems.append(f"n_nonzero ({la.n_nonzero} recorded, {int(mask.sum())} in the weights)")
        bits = la.channel_bits or (la.bits,) * mask.shape[0]
        want_k = torch.tensor([float(qmax(b)) for b in bits])
        if not torch.equal(fm.kmax.detach().reshape(-1), want_k):
            problems.append("bits")
        want_s = torch.tensor(la.scales, dtype=torch.float32)
        got_s = fm.lsb.detach().reshape(-1)
        if got_s.shape != want_s.shape or not torch.allclose(got_s, want_s, rtol=1e-6, atol=0):
            problems.append("scales")
        if problems:
            raise OpqError(f"{run}: weights.pt does not match allocation.json for layer {la.name!r} "
                           f"({', '.join(problems)}); the two files come from different runs or one was edited: "
                           "re-create the run with `opq-hw compress`")


# ------------------------------------------------------------------------------------------------
# a run read back
# ------------------------------------------------------------------------------------------------
@dataclass
class Run:
    """A run directory read back: the Brevitas model and its records."""

    path: Path
    qmodel: Any  # torch.nn.Module (the Brevitas model)
    allocation: Allocation
    specs: list[LayerSpec]
    config: dict[str, Any]
    manifest: dict[str, Any]

    def int_weights(self, name: str) -> np.ndarray:
        import numpy as np

        from .carrier import carried_layers, int_weights

        return int_weights(carried_layers(self.qmodel)[name]).numpy().astype(np.int64)

    def test_data(self) -> tuple[np.ndarray, np.ndarray]:
        """The run's test inputs (model layout) and labels: a built-in data set is loaded again; a
        user's data (file or module, never imported from here) comes from the golden arrays."""
        import numpy as np

        from .data import fit_inputs, load_data, require_run_data

        rec = require_run_data(self.path, "simulate")
        if rec.get("kind") == "builtin":
            d = load_data(rec["name"])
            return fit_inputs(d.x_test, tuple(self.specs[0].in_shape)), d.y_test
        labels = self.path / "golden_labels.npy"
        if not labels.is_file():
            raise OpqError(f"run {self.path.name!r} has no golden_labels.npy; pass --data again "
                           f"({rec.get('name')}), or compress the run again")
        return (np.load(self.path / "golden_input.npy", allow_pickle=False),
                np.load(labels, allow_pickle=False))



def load_run(run_dir: str | os.PathLike, *, model: str | None = None, trust_run: bool | None = None) -> Run:
    """Read a run directory back into a Brevitas model (weights_only state_dict) and its records.

    Every artifact is checked against the manifest's SHA-256, and the weights against the
    allocation (masks, survivors, bits, scales). No code named by the run is imported: built-in
    models come from the registry, a float ONNX run uses its own copy, and a `module:factory`
    model must be given again (`model`, or `rundir.model_source`), or `trust_run` given."""
    import torch

    from .carrier import ActConfig, build_carrier
    from .models import build_model, check_state_dict, read_state_dict
    from .pipeline import CompressConfig  # the config record (validated); pipeline imports rundir only inside functions
    from .spec import read_records
    from .validate import read_npy

    path = Path(run_dir)
    manifest = open_run(path)
    verify(path, ["weights.pt"] + (["float_model.onnx"] if str(manifest.get("config", {}).get("model", "")).endswith(".onnx")
                                   else []), manifest=manifest)  # recorded, present and unchanged
    cfg = CompressConfig.from_dict(manifest["config"])
    specs, alloc = read_records(path)
    fmodel = build_model(model_ref(path, cfg.model, model, trust_run))
    if not cfg.model.endswith(".onnx"):
        from .bnfold import fold_batchnorm

        fold_batchnorm(fmodel)  # the same structure as at compress time (weights come from weights.pt)
    golden = path / "golden_input.npy"
    example = torch.as_tensor(read_npy(golden)[:1]) if golden.is_file() else None
    try:
        qmodel = build_carrier(fmodel, specs, alloc, ActConfig(bits=cfg.act_bits, scale_mode=cfg.scale_mode),
                               example=example)
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        shape = "" if example is None else f" and golden_input.npy (samples of shape {tuple(example.shape[1:])})"
        raise OpqError(f"{path}: allocation.json, specs.json{shape} do not describe the run's model ({type(e).__name__}: "
                       f"{str(e).splitlines()[0][:200] if str(e) else ''}); re-create the run with `opq-hw compress`") from None
    try:
        state = read_state_dict(path / "weights.pt", "run weights")
        check_state_dict(qmodel, state, str(path / "weights.pt"), keys=False)
        qmodel.load_state_dict(state)
    except OpqError as e:
        raise OpqError(f"{e} (re-create the run)") from None
    except Exception as e:
        raise OpqError(f"{path / 'weights.pt'} cannot be loaded into the run's model ({type(e).__name__}: "
                       f"{str(e).splitlines()[0][:200]}); re-create the run") from e
    qmodel.eval()
    check_weights(path, qmodel, alloc)
    return Run(path=path, qmodel=qmodel, allocation=alloc, specs=specs, config=cfg.to_dict(), manifest=manifest)


# ------------------------------------------------------------------------------------------------
# interrupts and crashes
# ------------------------------------------------------------------------------------------------
class Terminated(BaseException):
    """SIGTERM, raised like KeyboardInterrupt so every `with` block cleans up."""


def run_cli(func: Callable[[], int]) -> int:
    """Run a CLI command: OpqError -> `error: ...`, exit 2; Ctrl-C -> exit 130, SIGTERM -> 143 (temporary
    directories removed by their context managers); anything else is a bug: one line and a log file."""
    import signal
    import sys
    import traceback

    def on_term(signum, frame):
        raise Terminated()

    try:
        prev = signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread
        prev = None
    try:
        return int(func() or 0)
    except OpqError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C); temporary files removed, nothing half-written was left", file=sys.stderr)
        return 130
    except Terminated:
        print("terminated (SIGTERM); temporary files removed, nothing half-written was left", file=sys.stderr)
        return 143
    except Exception as e:  # noqa: BLE001 - the last resort: a bug
        from .pipeline import cache_dir

        log = cache_dir() / "logs" / f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        where = str(log)
        try:
            write_bytes(log, ("opq-hw " + " ".join(sys.argv[1:]) + "\n\n" + traceback.format_exc()).encode())
        except OSError:
            where = "(could not be written)"
        print(f"error: internal error, a bug in opq-hw ({type(e).__name__}: {str(e)[:200]}); the traceback is in "
              f"{where}: please report it", file=sys.stderr)
        return 1
    finally:
        if prev is not None:
            signal.signal(signal.SIGTERM, prev)


def run_command(args) -> int:
    """A CLI verb on an existing run holds the run's lock throughout (one command per run at a
    time) and builds a `module:factory` model only from what the user gave (--model / --trust-run)."""
    run = getattr(args, "run", None)
    ctx = locked(run) if run and Path(run).is_dir() else contextlib.nullcontext()
    with ctx, model_source(getattr(args, "model", None) if run else None, bool(getattr(args, "trust_run", False))):
        return int(args.func(args) or 0)
