"""The run directory: atomic writes, JSON read/write, config hashing."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np


def _default(o: Any):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "to_dict"):
        return o.to_dict()
    raise TypeError(f"cannot write {type(o).__name__} as JSON")


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=_default, sort_keys=False) + "\n"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write a file atomically: a temp file in the same folder, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_bytes(path, dumps(obj).encode())


JSON_MAX_BYTES = 256 << 20  # no record of a run comes near this


def read_json(path: str | os.PathLike) -> Any:
    """A JSON record; a missing, oversized, empty, truncated or non-UTF-8 file is an OpqError naming it."""
    from .errors import OpqError

    path = Path(path)
    try:
        if path.stat().st_size > JSON_MAX_BYTES:
            raise OpqError(f"{path} is larger than {JSON_MAX_BYTES >> 20} MiB; it is not an opq-hw record")
        raw = path.read_bytes()
    except OSError as e:
        raise OpqError(f"{path} cannot be read ({e.strerror or e}); re-create it (or the run holding it)") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise OpqError(f"{path} is not UTF-8 text (byte {e.start}); it is corrupt: re-create it") from None
    if not text.strip():
        raise OpqError(f"{path} is empty; it is corrupt (a truncated write?): re-create it")
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise OpqError(f"{path} is not valid JSON ({getattr(e, 'msg', 'nested too deeply')} at line "
                       f"{getattr(e, 'lineno', '?')}); it is truncated or corrupt: re-create it") from None


def write_npy(path: str | os.PathLike, arr: np.ndarray) -> Path:
    import io

    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return write_bytes(path, buf.getvalue())


def png_bytes(fig, dpi: int = 110) -> bytes:
    """A matplotlib figure as PNG bytes; the figure is closed."""
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def write_png(path: str | os.PathLike, fig, dpi: int = 110) -> Path:
    return write_bytes(path, png_bytes(fig, dpi))


def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=_default).encode()).hexdigest()[:16]


TMP_MARKER = ".opq-hw-tmp"  # inside every temporary directory atomic_dir makes (removed before the swap)


def make_tmp_dir(path: str | os.PathLike) -> Path:
    """A temporary sibling `.NAME.XXXXXXXX.tmp` of `path`, marked as opq-hw's."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    os.chmod(tmp, 0o777 & ~_umask())
    (tmp / TMP_MARKER).write_text(json.dumps({"tool": "opq-hw", "target": path.name, "pid": os.getpid()}))
    return tmp


def stale_tmp_dirs(path: str | os.PathLike) -> list[Path]:
    """Temporary siblings of `path` that opq-hw made (marker inside, or an old run swapped out
    right before a crash). Only meaningful while holding the run's lock: then nobody is using them."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    out = []
    pre = f".{path.name}."
    for p in sorted(path.parent.iterdir()):
        if not (p.name.startswith(pre) and p.name.endswith(".tmp") and p.is_dir() and not p.is_symlink()):
            continue
        if len(p.name) != len(pre) + 8 + 4:  # mkdtemp's 8 random characters
            continue
        if (p / TMP_MARKER).is_file() or (p / "manifest.json").is_file() or not any(p.iterdir()):
            out.append(p)  # empty: killed between mkdtemp and the marker (nothing in it to lose)
    return sorted(out, key=lambda p: p.stat().st_mtime)


def remove_tmp_dir(tmp: Path) -> None:
    """Remove a temporary directory of ours with its marker last, so that a kill halfway leaves
    it recognisable (`stale_tmp_dirs`) for the next command to finish removing."""
    with contextlib.suppress(OSError):
        for p in tmp.iterdir():
            if p.name == TMP_MARKER:
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    p.unlink()
    with contextlib.suppress(OSError):
        (tmp / TMP_MARKER).unlink()
    with contextlib.suppress(OSError):
        tmp.rmdir()


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two directory entries (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    AT_FDCWD, RENAME_EXCHANGE = -100, 2
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return fn(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0


def swap_in(tmp: Path, path: Path) -> None:
    """Put the complete directory `tmp` at `path`; an existing `path` is replaced in one atomic
    step where the OS can (so a crash leaves either the old or the new directory, never none)."""
    with contextlib.suppress(FileNotFoundError):
        (tmp / TMP_MARKER).unlink()
    if path.exists() and not path.is_symlink() and path.is_dir() and _exchange(tmp, path):
        with contextlib.suppress(OSError):  # `tmp` now holds the old content: mark it, then remove it
            (tmp / TMP_MARKER).write_text("{}")
        remove_tmp_dir(tmp)
        return
    old = None
    if path.exists():
        old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
        os.replace(path, old)  # onto the empty dir
    os.replace(tmp, path)
    if old is not None:
        with contextlib.suppress(OSError):  # marked only now: before, a killed swap is restored from it
            (old / TMP_MARKER).write_text("{}")
        remove_tmp_dir(old)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Build a directory in a temp sibling; on success it replaces `path`, on error it is removed.

    An existing `path` is replaced only after the new content is complete. Callers that write into
    a run directory hold its lock (`opq_hw.rundir.locked`)."""
    path = Path(path)
    made = [p for p in [path.parent, *path.parent.parents] if not p.exists()]  # removed again on failure
    tmp = make_tmp_dir(path)
    try:
        yield tmp
    except BaseException:
        remove_tmp_dir(tmp)
        for p in made:  # innermost first; only while empty
            with contextlib.suppress(OSError):
                p.rmdir()
        raise
    swap_in(tmp, path)
