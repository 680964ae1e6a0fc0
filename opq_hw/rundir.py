"""Run-directory safety: what opq-hw wrote (SHA-256 of every file, in the manifest), one writer at
a time (an advisory lock beside the run), verified reads, and builds swapped in only on success.
Reading a run back into a model (`Run`, `load_run`, which code a run may build) is `opq_hw.run`.

A run directory is data and is treated as untrusted: every command checks the files it reads
against the manifest (`verify`), and `open_run` refuses a run that another tool version or a
person changed. The hashes catch accidental and careless changes (an edited `allocation.json`,
another run's `weights.pt`); they are not a signature.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from .artifact import make_tmp_dir, read_json, remove_tmp_dir, stale_tmp_dirs, swap_in, write_bytes, write_json
from .errors import OpqError
from .validate import check_config

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
              resume: Callable[[Path], Any] | None = None) -> Iterator[Build]:
    """`RUN/build/<flow>/` written into a temporary sibling and swapped in only on success.

    An exception removes the temporary directory; `b.failed = "why"` keeps it as
    `build/<flow>.failed/` instead. Either way the previous good `build/<flow>/` stays. The swapped-in
    files are recorded in the manifest. Holds the run's lock throughout. The path is absolute (tools
    such as Verilator run in subfolders of it).

    resume: reads a temporary directory left by a killed build (`opq_hw.steps` passes its journal
    reader); where it answers, that directory is continued (`b.resumed` = the answer) instead of
    removed."""
    run = Path(os.path.abspath(run))
    final = run / "build" / flow
    with locked(run):
        read_manifest(run)
        b = None
        for s in stale_tmp_dirs(final):
            j = resume(s) if resume is not None and b is None else None
            if j is not None:
                from .artifact import TMP_MARKER

                (s / TMP_MARKER).write_text(json.dumps({"tool": TOOL, "target": final.name, "pid": os.getpid()}))
                b = Build(path=s, final=final, resumed=j)
                continue
            remove_tmp_dir(s)
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
