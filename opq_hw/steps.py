"""Steps as data: `compress` and each flow's build are lists of named step functions, run by one loop.

A step is `Step(name, fn)` with `fn(ctx) -> None | "skipped"`: it reads and writes the context
object `ctx` of its pipeline ("skipped": it decided it does not apply); `when(ctx)`, if given, is
asked first (e.g. no place and route for a design that does not fit). `run_steps` runs the list in order, times each step, optionally logs
each start, and returns the step records `{"name", "seconds", "status"}` (status: done, skipped,
resumed) that go into the run's manifest (`manifest["steps"]`, see `record_steps`).

Resume (`run_build` with a `key`): after each step the loop writes a journal into the build's work
directory (`.opq-steps.json`: the key, the steps completed, `ctx.state`). A build killed before it
finished (SIGKILL, a crash, a power cut: its temporary directory stays, see `rundir.build_dir`) is
picked up by the next build of the same flow whose key is the same -- the key hashes everything the
build reads: the run's recorded artifacts, the flow, the board, the options, the opq-hw version.
Then the steps marked `rerun` run again (cheap steps that rebuild in-memory objects the others
use; they must come first and be deterministic), the completed `resumable` steps are skipped
and `ctx.state` is restored to what it was after the last of them, and the rest runs. A resumable
step's whole effect must be files in the work directory and JSON in `ctx.state`, and, since the
step that was running when the build was killed runs again, a step first clears what it writes. A build started
with another key removes the stale directory instead. A completed step that is neither `rerun` nor
`resumable` ends the skipping (it and everything after it run again).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from .artifact import read_json, write_json
from .errors import OpqError

JOURNAL = ".opq-steps.json"  # in a build's work directory while it runs; removed before the swap
STATUSES = ("done", "skipped", "resumed")


@dataclass(frozen=True)
class Step:
    name: str
    fn: Callable[[Any], str | None]
    rerun: bool = False  # on resume: always run again (rebuilds in-memory state; cheap, deterministic)
    resumable: bool = False  # on resume: skipped when completed (its effect: files in the work dir + ctx.state)
    when: Callable[[Any], bool] | None = None  # run only if when(ctx); else recorded as skipped, not announced


def run_steps(steps: Sequence[Step], ctx: Any, *, announce: Callable[[Step], Any] | None = None,
              journal: Path | None = None, key: str | None = None,
              resume: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Run `steps` on `ctx` in order, timing each; returns their records.

    journal: write the progress there after each step (needs `ctx.state`, a JSON dict). resume: a
    journal read back (the caller checked its key); see the module docstring for what is skipped."""
    names = [s.name for s in steps]
    if len(set(names)) != len(names):
        raise ValueError(f"step names repeat: {names}")
    first_other = next((i for i, s in enumerate(steps) if not s.rerun), len(steps))
    if any(s.rerun for s in steps[first_other:]):
        raise ValueError("steps marked rerun must come first")
    done_before = list(resume.get("done", [])) if resume else []
    records: list[dict[str, Any]] = []
    completed: list[str] = []
    skipping = bool(done_before)
    for step in steps:
        if skipping and not step.rerun:
            if step.name in done_before and step.resumable:
                if not any(r["status"] == "resumed" for r in records):
                    ctx.state.clear()
                    ctx.state.update(json.loads(json.dumps(resume["state"])))
                records.append({"name": step.name, "seconds": 0.0, "status": "resumed"})
                completed.append(step.name)
                _write_journal(journal, key, completed, ctx)
                continue
            skipping = False
        t0 = time.perf_counter()
        if step.when is not None and not step.when(ctx):
            status = "skipped"
        else:
            if announce is not None:
                announce(step)
            status = step.fn(ctx) or "done"
        if status not in STATUSES:
            raise ValueError(f"step {step.name} returned {status!r}")
        records.append({"name": step.name, "seconds": round(time.perf_counter() - t0, 3), "status": status})
        completed.append(step.name)
        _write_journal(journal, key, completed, ctx)
    return records


def _write_journal(journal: Path | None, key: str | None, completed: list[str], ctx: Any) -> None:
    if journal is not None:
        write_json(journal, {"key": key, "done": completed, "state": ctx.state})


def read_journal(work: Path, key: str) -> dict[str, Any] | None:
    """The journal of an interrupted build in `work`, when it was made with `key` (else None)."""
    p = work / JOURNAL
    if not p.is_file():
        return None
    try:
        j = read_json(p)
    except (OpqError, OSError):
        return None  # a torn journal: the build starts over
    if not isinstance(j, dict) or j.get("key") != key or not isinstance(j.get("done"), list) \
            or not all(isinstance(n, str) for n in j["done"]) or not isinstance(j.get("state"), dict):
        return None
    return j


def build_key(run_manifest: Mapping[str, Any], flow: str, board: str | None, options: Mapping[str, Any]) -> str:
    """What a build's result depends on: the run's recorded core artifacts, flow, board, options, tool version."""
    from . import __version__
    from .rundir import CORE

    arts = {k: v for k, v in (run_manifest.get("artifacts") or {}).items() if k in CORE}
    blob = json.dumps({"artifacts": arts, "flow": flow, "board": board, "options": dict(options), "version": __version__},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def timings(records: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """{step: seconds} of the steps that ran."""
    return {r["name"]: r["seconds"] for r in records if r["status"] == "done"}


def record_steps(run: str | os.PathLike, what: str, records: list[dict[str, Any]]) -> None:
    """Put the step records of `what` ("compress", "build/rtl", ...) into the run's manifest."""
    from .rundir import update_manifest

    def fn(m):
        steps = m.get("steps")
        m["steps"] = {**(steps if isinstance(steps, dict) else {}), what: records}

    update_manifest(run, fn)


def run_build(run: Path, flow: str, steps: Sequence[Step], ctx: Any, *, key: str | None = None,
              log: Callable[[str], Any] | None = print, announce: Callable[[Step], Any] | None = None,
              after: Callable[[Any], None] | None = None):
    """`steps` in `rundir.build_dir(run, flow)` (ctx.out: the work directory, ctx.build: the Build);
    with `key`, resumable (see the module docstring). `after(ctx)` runs last inside the build
    directory, untimed. Returns (the Build, the step records), the records also in the manifest under
    `build/<flow>` (or `build/<flow>.failed`)."""
    from .rundir import build_dir

    with build_dir(run, flow, log, resume=(lambda work: read_journal(work, key)) if key else None) as bd:
        ctx.out, ctx.build = bd.path, bd
        if bd.resumed is not None and log:
            log(f"note: resuming the interrupted {flow} build after its step(s) "
                + ", ".join(bd.resumed["done"]))
        records = run_steps(steps, ctx, announce=announce, journal=bd.path / JOURNAL if key else None, key=key,
                            resume=bd.resumed)
        ctx.records = records
        if after is not None:
            after(ctx)
        (bd.path / JOURNAL).unlink(missing_ok=True)
    record_steps(run, f"build/{bd.path.name}", records)
    return bd, records
