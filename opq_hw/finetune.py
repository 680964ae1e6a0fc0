"""`python -m opq_hw.finetune RUN ...`: one process of a distributed finetune (`opq_hw.ddp`), as
torchrun starts it on a cluster, or `opq-hw finetune RUN --nproc N` on one machine
(`opq_hw.ddp_launch`):

    torchrun --nproc-per-node N [--nnodes M --rdzv-backend c10d --rdzv-endpoint HOST:PORT] \\
        -m opq_hw.finetune RUN [--epochs E] [--lr LR] [--batch-size B] [--checkpoint PATH]

`opq_hw.finetune` is also the package's finetune function (`opq_hw.finetune(qmodel, data)`, that is
`opq_hw.training.finetune`). Nothing in the package imports this module; should a user import it
(which makes it the package attribute), it is callable and calls that function.
"""
from __future__ import annotations

import argparse
import os
import sys
import types

from .errors import OpqError


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from .training import finetune

        return finetune(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule


def main(argv: list[str] | None = None) -> int:
    """One process (torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). An
    OpqError prints `error: ...` and exits 2; SIGTERM (torchrun stopping the group when another
    process failed) exits 143 after the temporary files are removed."""
    import signal

    from .ddp import LOCK_ENV, add_args, options, run_worker, summary

    p = argparse.ArgumentParser(prog="python -m opq_hw.finetune",
                                description="One process of a distributed finetune (start it with torchrun).")
    add_args(p, local=False)
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # SystemExit: `with` blocks clean up
    env = os.environ
    try:
        try:
            rank, world = int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1"))
            local_rank = int(env.get("LOCAL_RANK", "0"))
        except ValueError:
            raise OpqError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (torchrun sets them)") from None
        if not 0 <= rank < world:
            raise OpqError(f"RANK {rank} / WORLD_SIZE {world} is not a process group (torchrun sets them)")
        lock_held = env.get(LOCK_ENV) == str(os.getppid())  # `--nproc`: the launching parent holds the lock
        quiet = rank > 0
        rec = run_worker(args.run, options(args), rank=rank, world=world, local_rank=local_rank, lock_held=lock_held,
                         log=(lambda *_: None) if quiet else print, progress=not quiet and sys.stderr.isatty())
        if rec is not None and not lock_held:
            print(summary(rec))
        return 0
    except OpqError as e:
        print(f"error: {'' if world == 1 else f'[rank {rank}] '}{e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
