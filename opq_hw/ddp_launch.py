"""`opq-hw finetune RUN --nproc N`: the local launcher of a distributed finetune (`opq_hw.ddp`).

`finetune_run` holds the run's lock and, for N > 1, starts N processes with torchrun's own launcher
API (`elastic_launch`: a c10d rendezvous on a free local port), each running the module a cluster
runs under torchrun:

    torchrun --nproc-per-node N [--nnodes M --rdzv-backend c10d --rdzv-endpoint HOST:PORT] \\
        -m opq_hw.finetune RUN [--epochs E] [--lr LR] [--batch-size B] [--checkpoint PATH]

(the module is named here as a string and never imported into this process: `opq_hw.finetune`
stays the package's finetune function).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable

from .ddp import LOCK_ENV, MAX_NPROC, FinetuneOptions, check_world, run_worker
from .errors import OpqError

WORKER = "opq_hw.finetune"  # python -m WORKER: one process


def finetune_run(run: str | os.PathLike, opts: FinetuneOptions, *, nproc: int = 1, log: Callable[[str], Any] = print,
                 progress: bool = False) -> dict:
    """Finetune the run `run` in place (`opts`: `ddp.FinetuneOptions`) with `nproc` local
    processes; returns the finetune record (also appended to the manifest's `finetunes`)."""
    from .rundir import locked, read_manifest

    run = Path(os.path.abspath(run))
    if not 1 <= nproc <= MAX_NPROC:
        raise OpqError(f"--nproc must be 1..{MAX_NPROC}, got {nproc}")
    check_world(opts, nproc)
    with locked(run):
        if nproc == 1:
            return run_worker(run, opts, log=log, progress=progress, lock_held=True)
        _launch(run, opts, nproc)
        return read_manifest(run)["finetunes"][-1]


def _launch(run: Path, opts: FinetuneOptions, nproc: int) -> None:
    """`nproc` processes of `python -m WORKER` through torchrun's launcher, as
    `torchrun --standalone --nproc-per-node N` starts them; their output goes to this terminal."""
    import uuid

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    cfg = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                       rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.1)
    env = {LOCK_ENV: str(os.getpid()), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        elastic_launch(cfg, sys.executable)("-m", WORKER, str(run), *opts.argv())
    except ChildFailedError as e:
        codes = sorted({f.exitcode for f in e.failures.values()})
        raise OpqError(f"the finetune failed in {len(e.failures)} of {nproc} processes (exit code(s) "
                       f"{', '.join(map(str, codes))}; the first error is printed above); the run is unchanged") from None
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
