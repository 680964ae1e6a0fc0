"""Design-space sweeps: one model compressed at several rates (`compress_run`, one run directory per
point under `DIR/points/`), each point estimated on several boards (`report.estimate_for`, whose
fit verdict is `cost.fits`), the points run in parallel, and the trade-off written as
`DIR/sweep.json`, `DIR/sweep.csv`, `DIR/pareto.png` and a self-contained `DIR/sweep.html`.

Parallelism: a local process pool (`jobs`), or a Dask distributed cluster (`scheduler`: an address
or a `distributed.Client`; the optional extra `opq-hw[dask]`). A point is a plain function of a JSON
record (`run_point`), so any engine that maps a function over records can run it.

Resuming: a point is a run directory written atomically by `compress_run`; a point whose run holds
this exact configuration and verifies is kept as is (status "reused"), a half-written one (a
temporary sibling left by a killed run) is removed and computed again, a finetune resumes from its
checkpoint. Estimates are cheap and always recomputed, so adding a board re-estimates without
recompressing.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from .errors import OpqError
from .spec import DEFAULTS, _from_dict

KIND = "sweep"
SCHEMA = 1
RECORD = "sweep.json"  # also the mark of a folder that `opq-hw sweep` owns
POINTS = "points"
SHARES = ("LUT", "FF", "DSP", "BRAM18", "URAM")  # resources whose share of the board a row carries
PLOTTED = ("LUT", "BRAM18", "DSP")  # the Pareto plot's panels
FOLDINGS = ("fastest-fit", "parallel")  # how each point is folded on each board (see SweepConfig.folding)
DASK_EXTRA = "pip install 'opq-hw[dask]' (or: pip install 'dask[distributed]')"


@dataclass(frozen=True)
class SweepConfig:
    """What a sweep computes (JSON round-trip). Every point is `compress` of the same model and data
    at one target rate; every point is estimated on every board with `arch`."""

    model: str  # built-in name, module:factory or path/to/float_model.onnx (as `compress --model`)
    data: str  # built-in name | file.npz | module:function (as `compress --data`); accuracy needs it
    targets: tuple[float, ...]  # target compression rates (CR_w), each > 1
    boards: tuple[str, ...]  # board names (`opq-hw boards`)
    arch: str = DEFAULTS.arch  # cost-model architecture (opq_hw.cost.ARCHS)
    epochs: int = 0  # finetune epochs per point
    method: str = DEFAULTS.method
    lr: float = DEFAULTS.lr
    lr_schedule: str = DEFAULTS.lr_schedule  # the finetune recipe, as `compress` (absent from older records: default)
    distill_weight: float = DEFAULTS.distill_weight
    distill_temperature: float = DEFAULTS.distill_temperature
    seed: int = DEFAULTS.seed
    weights: str | None = None  # float state_dict; built-ins are pre-trained when absent
    folding: str = "fastest-fit"  # fastest-fit: the fastest folding that fits each board (the most folded if none
    #                               fits; cost.choose_folding) | parallel: fully parallel (reuse 1, PE = MH, SIMD = MW)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["targets"], d["boards"] = list(self.targets), list(self.boards)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SweepConfig":
        d = dict(d)
        for k in ("targets", "boards"):
            if isinstance(d.get(k), list):
                d[k] = tuple(d[k])
        return _from_dict(cls, d)

    def point_config(self, target: float):
        """The `CompressConfig` of the point at `target`."""
        from .pipeline import CompressConfig

        return CompressConfig(model=self.model, weights=self.weights, data=self.data, target_cr=target,
                              method=self.method, epochs=self.epochs, lr=self.lr, lr_schedule=self.lr_schedule,
                              distill_weight=self.distill_weight, distill_temperature=self.distill_temperature,
                              seed=self.seed)

    def base(self) -> dict[str, Any]:
        """What every point shares (its compress config without the rate): two sweeps with the same
        base may share a folder (other targets, boards or arch add to it)."""
        d = self.point_config(self.targets[0]).to_dict()
        del d["target_cr"]
        return d


@dataclass(frozen=True)
class SweepRow:
    """One point on one board: the compression, its accuracy and its estimated cost."""

    target: float
    board: str
    arch: str
    run: str  # the point's run directory, relative to the sweep folder
    status: str  # compressed | reused (in the sweep that wrote this record)
    cr_w: float
    cr_idx: float
    acc_float: float | None
    acc_oneshot: float | None
    acc_finetuned: float | None
    accuracy: float | None  # finetuned (= one-shot when epochs is 0)
    fits: bool  # opq_hw.cost.fits: every resource within the board's utilisation limit (at the pessimistic end of its band)
    fit: str  # the verdict with the error bands: fits | fits only at the optimistic end | does not fit (opq_hw.cost.fit)
    uncalibrated: str  # used resources whose estimate has no error band ("LUT, FF"; empty: none)
    binding: str
    LUT: int
    FF: int
    DSP: int
    BRAM18: int
    URAM: int
    share_LUT: float | None  # (total + shell) / capacity; None where the board lacks the resource
    share_FF: float | None
    share_DSP: float | None
    share_BRAM18: float | None
    share_URAM: float | None
    ii_cycles: int
    latency_us: float
    throughput_fps: float
    pareto: bool = False  # fits, and no other fitting point on this board is as accurate and as fast (II) with no larger share

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SweepRow":
        return _from_dict(cls, dict(d))

    def share(self, r: str) -> float | None:
        return getattr(self, f"share_{r}")


# ------------------------------------------------------------------------------------------------
# checks
# ------------------------------------------------------------------------------------------------
def parse_targets(s: str | Iterable[Any]) -> tuple[float, ...]:
    """`5,10,20` -> (5.0, 10.0, 20.0): each a compression rate > 1, none twice, at least one."""
    from .validate import target_cr_value

    items = [x.strip() for x in s.split(",")] if isinstance(s, str) else list(s)
    items = [x for x in items if x != ""]
    if not items:
        raise OpqError("--targets is empty; give compression rates, e.g. --targets 5,10,20,40")
    try:
        out = tuple(float(target_cr_value(x, "--targets")) for x in items)
    except ValueError as e:
        raise OpqError(f"{e}; e.g. --targets 5,10,20,40") from None
    dup = sorted({t for t in out if out.count(t) > 1})
    if dup:
        raise OpqError(f"--targets names {', '.join(f'{t:g}' for t in dup)} more than once; give each rate once")
    return out


def parse_names(s: str | Iterable[str], what: str) -> tuple[str, ...]:
    items = [x.strip() for x in s.split(",")] if isinstance(s, str) else [str(x) for x in s]
    items = [x for x in items if x]
    if not items:
        raise OpqError(f"{what} is empty; give at least one, e.g. {what} pynq-z2,ultra96-v2 (see `opq-hw boards`)")
    dup = sorted({x for x in items if items.count(x) > 1})
    if dup:
        raise OpqError(f"{what} names {', '.join(dup)} more than once")
    return tuple(items)


def check_sweep(cfg: SweepConfig) -> None:
    """Everything that can be checked before any point runs: the rates, the boards, the
    architecture on each board, the model reference, the data and every point's config."""
    from .boards import load_board
    from .cost import architecture

    parse_targets(cfg.targets)
    parse_names(cfg.boards, "--boards")
    for b in cfg.boards:
        architecture(cfg.arch, load_board(b))  # unknown board / arch, or a board without the arch's flow
    for t in cfg.targets:
        cfg.point_config(t)  # CompressConfig checks every field
    if cfg.folding not in FOLDINGS:
        raise OpqError(f"--folding must be one of {', '.join(FOLDINGS)}, got {cfg.folding!r}")
    if not cfg.data:
        raise OpqError("a sweep needs --data (accuracy is half of the trade-off): a built-in name, a .npz file or "
                       "package.module:function")
    from .data import load_data

    load_data(cfg.data, seed=0)  # an unknown or malformed data set fails here, not in every point


def _check_model(cfg: SweepConfig) -> None:
    """The model exists (a built-in is pre-trained here once, so parallel points do not all train it)."""
    from .models import BUILTIN, build_model

    if cfg.model in BUILTIN and not cfg.weights:
        from .pipeline import pretrained

        pretrained(cfg.model, seed=cfg.seed)
    elif cfg.model.endswith(".onnx") and not Path(cfg.model).is_file():
        raise OpqError(f"model file {cfg.model} not found")
    elif not cfg.model.endswith(".onnx"):
        build_model(cfg.model)  # an unknown name or an unimportable module:factory is an OpqError


def read_sweep(out: str | os.PathLike) -> dict[str, Any]:
    """`DIR/sweep.json` of an opq-hw sweep, checked for our tool and kind."""
    from .artifact import read_json

    p = Path(out) / RECORD
    if not p.is_file():
        raise OpqError(f"{out} is not an opq-hw sweep (no {RECORD}); run `opq-hw sweep --out {out}` to make one")
    try:
        d = read_json(p)
    except OpqError as e:
        raise OpqError(f"{e} (it is the record of the sweep in {out})") from None
    if not isinstance(d, dict) or d.get("tool") != "opq-hw" or d.get("kind") != KIND:
        raise OpqError(f"{p} is not an opq-hw sweep record (no \"tool\": \"opq-hw\", \"kind\": \"sweep\")")
    if d.get("schema") != SCHEMA or not isinstance(d.get("config"), dict):
        raise OpqError(f"{p} was written by another opq-hw version (sweep schema {d.get('schema')}, this one reads "
                       f"{SCHEMA}); choose another --out")
    return d


def _check_out(out: Path, cfg: SweepConfig, overwrite: bool) -> None:
    """DIR is new, empty, or an opq-hw sweep of the same base configuration (any, with --overwrite).
    A folder that opq-hw did not make is never written into, --overwrite or not."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise OpqError(f"output {out} exists and is not a directory; choose another --out")
    probe = out if out.exists() else next((p for p in out.parents if p.exists()), Path("."))
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OpqError(f"output {out}: {probe} is not writable by this user; choose another --out")
    if not out.exists() or not any(out.iterdir()):
        return
    try:
        old = read_sweep(out)
    except OpqError as e:
        raise OpqError(f"output {out} is not empty and is not an opq-hw sweep ({e}); opq-hw writes only into a new "
                       "or empty folder or its own sweep, --overwrite or not: choose another --out") from None
    try:
        old_base = SweepConfig.from_dict(old["config"]).base()
    except (OpqError, TypeError, ValueError, IndexError) as e:
        raise OpqError(f"{out / RECORD}: unreadable config ({e}); choose another --out") from None
    new_base = cfg.base()
    if old_base != new_base and not overwrite:
        diff = ", ".join(f"{k} {old_base.get(k)!r} -> {new_base.get(k)!r}" for k in sorted(set(old_base) | set(new_base))
                         if old_base.get(k) != new_base.get(k))
        raise OpqError(f"output {out} holds a sweep of another configuration ({diff}); choose another --out, or pass "
                       "--overwrite to compute its points again (other targets, boards or --arch need no --overwrite)")


# ------------------------------------------------------------------------------------------------
# one point
# ------------------------------------------------------------------------------------------------
def point_name(target: float) -> str:
    return f"cr{target:g}"


def _stamp(p: Path):
    try:
        st = p.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def run_point(task: Mapping[str, Any]) -> dict[str, Any]:
    """One point: compress (or keep a current run), then estimate on every board. `task` and the
    answer are JSON records, so any engine can ship them: task = {"config": CompressConfig dict,
    "out": absolute run path, "overwrite", "boards", "arch", "folding", "threads"}. An OpqError comes back as
    {"error": message}; anything else is a bug and is raised."""
    from .pipeline import CompressConfig, compress_run

    t0 = time.time()
    out = Path(task["out"])
    target = float(task["config"]["target_cr"])
    try:
        if task.get("threads"):  # a local pool's worker: a share of the CPUs, and the CLI's quiet
            import warnings

            import torch

            warnings.filterwarnings("ignore", message="fast_hadamard_transform")

            torch.set_num_threads(int(task["threads"]))
        cfg = CompressConfig.from_dict(task["config"])
        before = _stamp(out / "manifest.json")
        compress_run(cfg, out, overwrite=bool(task.get("overwrite")), progress=False, log=lambda *_: None)
        # the same manifest file (inode, mtime, size) means compress found the run current and kept it
        status = "reused" if before is not None and _stamp(out / "manifest.json") == before else "compressed"
        return {"target": target, "status": status, "seconds": round(time.time() - t0, 3),
                "estimates": estimate_point(out, task["boards"], task["arch"], task.get("folding", FOLDINGS[0]))}
    except OpqError as e:
        return {"target": target, "error": str(e)}


def estimate_point(run: Path, boards: Iterable[str], arch: str, folding: str = FOLDINGS[0]) -> dict[str, Any]:
    """The point's metrics and, per board, its CostReport (folding: see SweepConfig.folding), as JSON."""
    from .artifact import read_json
    from .boards import load_board
    from .report import estimate_for, read_records, run_act_bits

    specs, alloc, manifest = read_records(run)
    metrics = read_json(run / "metrics.json")
    fold = None if folding == "fastest-fit" else {}  # {}: every layer at its default, fully parallel folding
    reps = [estimate_for(specs, alloc, load_board(b), arch, run_act_bits(manifest), fold).to_dict() for b in boards]
    return {"metrics": metrics, "config_hash": manifest.get("config_hash"), "reports": reps}


def rows_of(point: Mapping[str, Any], run: str) -> list[SweepRow]:
    """A finished point's rows, one per board."""
    from .cost import CostReport
    from .cost.fit import FITS, NO_FIT
    m = point["estimates"]["metrics"]
    acc = m.get("acc_finetuned", m.get("acc_oneshot"))
    out = []
    for d in point["estimates"]["reports"]:
        r = CostReport.from_dict(d)
        util = r.utilisation
        out.append(SweepRow(
            target=point["target"], board=r.board, arch=r.arch, run=run, status=point["status"],
            cr_w=m["cr_w"], cr_idx=m["cr_idx"], acc_float=m.get("acc_float"), acc_oneshot=m.get("acc_oneshot"),
            acc_finetuned=m.get("acc_finetuned"), accuracy=acc, fits=bool(r.fits), fit=r.fit or (FITS if r.fits else NO_FIT),
            uncalibrated=", ".join(r.uncalibrated), binding=r.binding, **{k: int(r.totals[k]) for k in SHARES},
            **{f"share_{k}": (None if util.get(k) is None or r.capacity[k] == 0 else float(util[k])) for k in SHARES},
            ii_cycles=int(r.ii_cycles), latency_us=float(r.latency_us), throughput_fps=float(r.throughput_fps)))
    return out


def mark_pareto(rows: list[SweepRow]) -> list[SweepRow]:
    """Per board: a fitting row is Pareto-optimal when no other fitting row of that board is at least
    as accurate, as fast (initiation interval) and as small in every resource, and better in one."""

    def vec(r):
        return [-r.accuracy, r.ii_cycles] + [r.share(k) or 0.0 for k in SHARES]

    out = []
    for r in rows:
        ok = r.fits and r.accuracy is not None
        if ok:
            a = vec(r)
            for q in rows:
                if q is r or q.board != r.board or not q.fits or q.accuracy is None:
                    continue
                b = vec(q)
                if all(x <= y for x, y in zip(b, a)) and any(x < y for x, y in zip(b, a)):
                    ok = False
                    break
        out.append(dataclasses.replace(r, pareto=ok))
    return out


# ------------------------------------------------------------------------------------------------
# running the points
# ------------------------------------------------------------------------------------------------
def _local(tasks: list[dict], jobs: int, on_done: Callable[[dict], None]) -> None:
    if jobs <= 1 or len(tasks) <= 1:
        for t in tasks:
            on_done(run_point(t))
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn: a fork of a process that has loaded torch may hang in its thread pools
    with ProcessPoolExecutor(max_workers=min(jobs, len(tasks)), mp_context=mp.get_context("spawn")) as ex:
        futs = [ex.submit(run_point, t) for t in tasks]
        try:
            for f in as_completed(futs):
                on_done(f.result())
        except BaseException:
            for f in futs:
                f.cancel()
            raise


def _distributed():
    try:
        import distributed
    except ImportError:
        raise OpqError(f"--scheduler runs the points on a Dask cluster, an optional extra that is not installed: "
                       f"{DASK_EXTRA}; or drop --scheduler to use the local process pool (--jobs)") from None
    return distributed


def dask_client(scheduler: Any):
    """A `distributed.Client` for an address (a Client passes through); a clear error without the extra."""
    Client = _distributed().Client
    if isinstance(scheduler, Client):
        return scheduler
    try:
        return Client(str(scheduler), timeout="20s")
    except (OSError, TimeoutError) as e:
        raise OpqError(f"cannot reach the Dask scheduler at {scheduler} ({e}); start one (`dask scheduler`, then "
                       "`dask worker ADDRESS` on each machine) or drop --scheduler to use the local process pool") from None


def _dask(tasks: list[dict], scheduler: Any, on_done: Callable[[dict], None]) -> None:
    from distributed import as_completed

    client = dask_client(scheduler)
    own = client is not scheduler
    try:
        futs = client.map(run_point, tasks, pure=False)
        for f in as_completed(futs):
            on_done(f.result())
    finally:
        if own:
            client.close()


def sweep(cfg: SweepConfig, out: str | os.PathLike, *, jobs: int = 1, scheduler: Any = None, overwrite: bool = False,
          log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Run (or resume) the sweep `cfg` in the folder `out`; returns the record written to `out/sweep.json`."""
    from .rundir import locked

    cfg = dataclasses.replace(cfg, targets=parse_targets(cfg.targets), boards=parse_names(cfg.boards, "--boards"))
    check_sweep(cfg)
    if scheduler is not None:
        _distributed()  # the named-extra error before any work
    out = Path(os.path.abspath(out))
    _check_out(out, cfg, overwrite)
    _check_model(cfg)
    with locked(out):
        return _sweep_locked(cfg, out, jobs, scheduler, overwrite, log)


def _sweep_locked(cfg: SweepConfig, out: Path, jobs: int, scheduler: Any, overwrite: bool, log) -> dict[str, Any]:
    from .artifact import write_json

    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    record: dict[str, Any] = {"tool": "opq-hw", "kind": KIND, "schema": SCHEMA, "config": cfg.to_dict(),
                              "complete": False, "started": started, "points": [], "rows": []}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / RECORD, record)  # marks the folder as a sweep before any point is written
    threads = max(1, (os.cpu_count() or 1) // max(1, jobs)) if scheduler is None else None
    tasks = [{"config": cfg.point_config(t).to_dict(), "out": str(out / POINTS / point_name(t)),
              "overwrite": overwrite, "boards": list(cfg.boards), "arch": cfg.arch, "folding": cfg.folding,
              "threads": threads}
             for t in cfg.targets]
    done: dict[float, dict] = {}

    def on_done(res: dict) -> None:
        done[res["target"]] = res
        t = f"{res['target']:g}x"
        if "error" in res:
            log(f"point {t}: FAILED: {res['error']}")
            return
        m = res["estimates"]["metrics"]
        fits = ", ".join(f"{r['board']} {r.get('fit') or ('fits' if r['fits'] else 'does not fit')}"
                         for r in res["estimates"]["reports"])
        acc = m.get("acc_finetuned")
        log(f"point {t}: {res['status']} in {res['seconds']:.1f} s, CR_w {m['cr_w']:.2f}x"
            + (f", accuracy {100 * acc:.2f}%" if acc is not None else "") + f"; {fits}")

    t0 = time.time()
    engine = "dask" if scheduler is not None else ("local pool" if jobs > 1 else "in process")
    log(f"sweep: {len(tasks)} point(s) x {len(cfg.boards)} board(s), {cfg.arch} ({cfg.folding} folding), {engine}"
        + (f" ({jobs} jobs)" if scheduler is None and jobs > 1 else ""))
    if scheduler is not None:
        _dask(tasks, scheduler, on_done)
    else:
        _local(tasks, jobs, on_done)
    points, rows, failed = [], [], []
    for t in cfg.targets:
        res = done.get(t, {"target": t, "error": "not run"})
        run = f"{POINTS}/{point_name(t)}"
        if "error" in res:
            failed.append(res)
            points.append({"target": t, "run": run, "error": res["error"]})
            continue
        points.append({"target": t, "run": run, "status": res["status"], "seconds": res["seconds"],
                       "config_hash": res["estimates"]["config_hash"]})
        rows += rows_of(res, run)
    rows = mark_pareto(rows)
    record.update(points=points, rows=[r.to_dict() for r in rows], complete=not failed,
                  engine=engine, seconds=round(time.time() - t0, 3),
                  finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    write_outputs(out, record, rows)
    n_new = sum(1 for p in points if p.get("status") == "compressed")
    n_old = sum(1 for p in points if p.get("status") == "reused")
    log(f"sweep written to {out}: {n_new} point(s) compressed, {n_old} reused, {len(failed)} failed; "
        f"{RECORD}, sweep.csv, pareto.png, sweep.html")
    if failed:
        raise OpqError(f"{len(failed)} of {len(points)} point(s) failed: "
                       + "; ".join(f"{f['target']:g}x: {f['error']}" for f in failed)
                       + f". The others are in {out}; run the same command again to retry the failed ones")
    return record


# ------------------------------------------------------------------------------------------------
# outputs
# ------------------------------------------------------------------------------------------------
def write_outputs(out: Path, record: Mapping[str, Any], rows: list[SweepRow]) -> None:
    """sweep.csv, pareto.png, sweep.html, then sweep.json (each atomically)."""
    from .artifact import write_bytes, write_json

    png = pareto_png(rows, record["config"])
    write_bytes(out / "sweep.csv", to_csv(rows).encode())
    write_bytes(out / "pareto.png", png)
    write_bytes(out / "sweep.html", render_html(record, rows, png).encode())
    write_json(out / RECORD, record)


def to_csv(rows: list[SweepRow]) -> str:
    import csv
    import io

    buf = io.StringIO()
    names = [f.name for f in dataclasses.fields(SweepRow)]
    w = csv.DictWriter(buf, fieldnames=names, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None else v) for k, v in r.to_dict().items()})
    return buf.getvalue()


def pareto_png(rows: list[SweepRow], config: Mapping[str, Any]) -> bytes:
    """Accuracy against the share of LUT, BRAM18 and DSP, one series per board: filled markers fit
    the board, hollow ones fit only at the optimistic end of the error band, crosses do not; a black ring marks the Pareto-optimal points; labels are target rates;
    a dashed line in the board's colour is its utilisation limit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from .artifact import png_bytes
    from .boards import load_board
    from .cost.fit import OPTIMISTIC

    boards = list(dict.fromkeys(r.board for r in rows))
    cmap = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, len(PLOTTED), figsize=(4.6 * len(PLOTTED), 4.2), sharey=True)
    for ax, res in zip(axes, PLOTTED):
        ax.set_xlabel(f"{res} share of the board (%, incl. shell)")
        ax.set_title(res)
        ax.grid(alpha=0.3)
        if not any(r.share(res) for r in rows):
            ax.text(0.5, 0.5, f"no {res} used by {config.get('arch')}\n(every point at 0 %)", transform=ax.transAxes,
                    ha="center", va="center", fontsize=9, color="gray")
            continue
        for i, b in enumerate(boards):
            pts = sorted((r for r in rows if r.board == b and r.accuracy is not None and r.share(res) is not None),
                         key=lambda r: r.target)
            if not pts:
                continue
            xs = [100 * r.share(res) for r in pts]
            ys = [100 * r.accuracy for r in pts]
            c = cmap(i % 10)
            ax.plot(xs, ys, color=c, lw=1, alpha=0.6)
            with contextlib.suppress(OpqError):  # the board's utilisation limit (a board given as a path may be gone)
                ax.axvline(100 * load_board(b).utilisation_limits[res], color=c, ls="--", lw=0.8, alpha=0.7)
            for r, x, y in zip(pts, xs, ys):
                if r.fits:
                    ax.scatter([x], [y], color=c, marker="o", s=40, zorder=3,
                               edgecolors="black" if r.pareto else c, linewidths=1.6 if r.pareto else 0.5)
                elif r.fit == OPTIMISTIC:
                    ax.scatter([x], [y], facecolors="none", edgecolors=c, marker="o", s=40, zorder=3, linewidths=1.2)
                else:
                    ax.scatter([x], [y], color=c, marker="x", s=50, zorder=3)
                ax.annotate(f"{r.target:g}x", (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7, color=c)
        xs_all = [100 * r.share(res) for r in rows if r.share(res)]
        if min(xs_all) > 0 and max(xs_all) / min(xs_all) > 30:
            ax.set_xscale("log")
    axes[0].set_ylabel("test accuracy (%)")
    handles = [Line2D([], [], color=cmap(i % 10), marker="o", label=b) for i, b in enumerate(boards)]
    handles += [Line2D([], [], color="gray", marker="o", ls="", label="fits"),
                Line2D([], [], color="gray", marker="o", markerfacecolor="none", ls="", label="fits only at the optimistic end"),
                Line2D([], [], color="gray", marker="x", ls="", label="does not fit"),
                Line2D([], [], color="white", marker="o", markeredgecolor="black", ls="", label="Pareto-optimal"),
                Line2D([], [], color="gray", ls="--", label="utilisation limit")]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), fontsize=8, bbox_to_anchor=(0.5, -0.12))
    ep = config.get("epochs", 0)
    fig.suptitle(f"{config.get('model')} on {config.get('data')}, {config.get('arch')} ({config.get('folding')} "
                 "folding): accuracy "
                 f"({'finetuned ' + str(ep) + ' epoch(s)' if ep else 'one-shot'}) against resource share")
    fig.tight_layout()
    return png_bytes(fig)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def render_html(record: Mapping[str, Any], rows: list[SweepRow], png: bytes) -> str:
    """A self-contained page: the configuration, the plot (embedded) and every row."""
    import base64
    import html

    from .cost.fit import verdict_label
    from .report import _CSS, _html_table

    cfg = record["config"]
    head = ["board", "target", "CR_w", "accuracy %", "fit (with error band)", "binding", *[f"{r} %" for r in SHARES], "II (cycles)",
            "latency (us)", "frames/s", "Pareto", "run"]
    body = [[r.board, f"{r.target:g}x", f"{r.cr_w:.2f}", _pct(r.accuracy), verdict_label(r.fit, r.uncalibrated.split(", ")
                                                                                        if r.uncalibrated else ()), r.binding,
             *[_pct(r.share(k)) for k in SHARES], f"{r.ii_cycles:,}", f"{r.latency_us:.2f}", f"{r.throughput_fps:,.0f}",
             "yes" if r.pareto else "", f"{r.run} ({r.status})"] for r in sorted(rows, key=lambda r: (r.board, r.target))]
    failed = [p for p in record.get("points", []) if "error" in p]
    cmd = (f"opq-hw sweep --model {cfg['model']} --data {cfg['data']} --targets {','.join(f'{t:g}' for t in cfg['targets'])} "
           f"--boards {','.join(cfg['boards'])} --arch {cfg['arch']} --folding {cfg['folding']} --epochs {cfg['epochs']}")
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>opq-hw sweep: {html.escape(str(cfg['model']))}"
             f"</title><style>{_CSS}</style></head><body>",
             f"<h1>Design-space sweep: {html.escape(str(cfg['model']))} on {html.escape(str(cfg['data']))}</h1>",
             f"<p><code>{html.escape(cmd)}</code></p>",
             "<p>Accuracy is measured on the test split of each compressed point; resources are the analytical "
             f"estimate (opq_hw.cost, {html.escape(str(cfg['arch']))}, {html.escape(str(cfg['folding']))} folding), not "
             "synthesis results. Shares include the board's shell; a design fits when every resource stays within the "
             "board's utilisation limit, at the pessimistic end of its error band where the cost model has one "
             "(opq_hw.cost.fit).</p>",
             f'<figure><img alt="pareto" src="data:image/png;base64,{base64.b64encode(png).decode()}"></figure>',
             f"<h2>Points x boards</h2>{_html_table(head, body)}"]
    if failed:
        parts.append("<h2>Failed points</h2><ul>" + "".join(
            f"<li>{p['target']:g}x: {html.escape(p['error'])}</li>" for p in failed) + "</ul>")
    parts.append("</body></html>\n")
    return "".join(parts)
