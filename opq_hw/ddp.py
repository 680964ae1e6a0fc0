"""Distributed finetuning of an existing run (PyTorch DDP): the work of each process. The entry
points (`opq-hw finetune RUN --nproc N`, and the module torchrun starts on a cluster) are in
opq_hw/finetune.py.

Every process loads the run (verified against its manifest) and its data, freezes the masks and
quantizers (`carrier.freeze`), and checks with the others that it holds the same masks, codebooks
and scales, the same starting weights, the same data and the same options (SHA-256 digests,
all-gathered; `compare_digests`): any difference stops every process before training, naming the
rank and what differs. Training is `training.finetune` (the loop `compress` uses, with the fast
constant-scale twin) with a `Group`: each process takes its share of every global batch, DDP
averages the gradients (gloo on CPU, nccl on GPU). Only rank 0 writes: the checkpoint after each
epoch, and at the end the run, atomically (a complete copy in a temporary sibling, swapped in),
under the run's lock, with the manifest's hashes updated. The checkpoint holds nothing that
depends on the number of processes (epoch, global step, seed, global batch), so a finetune
interrupted with N processes resumes with any other number.

Nothing is pickled between processes: options travel as command-line
arguments, tensors through the process group, the checkpoint as bytes loaded with
`weights_only=True`.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .artifact import config_hash
from .errors import OpqError

MAX_NPROC = 256
LOCK_ENV = "OPQ_HW_LOCK_HOLDER"  # set by `--nproc`: the pid of the parent that holds the run's lock
TIMEOUT_S = 600  # a collective that waits longer than this (a process died) fails instead of hanging


@dataclass(frozen=True)
class FinetuneOptions:
    """What a distributed finetune does (the same on every process; passed as arguments)."""

    epochs: int = 1  # epochs of this finetune (a resumed one continues up to this count)
    lr: float | None = None  # learning rate (None: the run's compress --lr)
    lr_schedule: str | None = None  # constant | cosine over this finetune's steps (None: the run's compress --lr-schedule)
    seed: int | None = None  # shuffling seed (None: the run's --seed)
    batch_size: int = 64  # global batch: all processes together (the same steps as one process)
    checkpoint: str | None = None  # after each epoch (None: a hidden file beside the run, removed at the end)
    data: str | None = None  # a user's data again (.npz or module:function); built-in data is reloaded
    device: str = "cpu"  # cpu (gloo) | cuda (nccl; cuda:LOCAL_RANK per process)
    model: str | None = None  # module:factory of a run made from one (never imported from the run)
    trust_run: bool = False

    def argv(self) -> list[str]:
        out = ["--epochs", str(self.epochs), "--batch-size", str(self.batch_size), "--device", self.device]
        for flag, val in (("--lr", self.lr), ("--lr-schedule", self.lr_schedule), ("--seed", self.seed), ("--checkpoint", self.checkpoint),
                          ("--data", self.data), ("--model", self.model)):
            if val is not None:
                out += [flag, repr(val) if isinstance(val, float) else str(val)]
        return out + (["--trust-run"] if self.trust_run else [])


# ------------------------------------------------------------------------------------------------
# the process group
# ------------------------------------------------------------------------------------------------
@dataclass
class Group:
    """This process's place in the DDP group, and the few collectives the finetune needs."""

    rank: int
    world: int
    device: Any  # torch.device

    @classmethod
    def init(cls, rank: int, world: int, local_rank: int, device: str) -> "Group":
        import datetime

        import torch
        import torch.distributed as dist

        if device == "cuda":
            if not torch.cuda.is_available():
                raise OpqError("--device cuda: this PyTorch build sees no GPU; use --device cpu (gloo)")
            dev, backend = torch.device("cuda", local_rank), "nccl"
            torch.cuda.set_device(dev)
        else:
            dev, backend = torch.device("cpu"), "gloo"
        dist.init_process_group(backend, rank=rank, world_size=world, timeout=datetime.timedelta(seconds=TIMEOUT_S))
        return cls(rank=rank, world=world, device=dev)

    def close(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()

    def wrap(self, net):
        from torch.nn.parallel import DistributedDataParallel

        # buffers (masks, frozen scales) are identical everywhere (checked at start): not re-sent each step
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(net, device_ids=ids, forward_sync_buffers=False)

    def _t(self, t):
        return t.to(self.device)

    def sum(self, value: float) -> float:
        import torch
        import torch.distributed as dist

        t = self._t(torch.tensor([value], dtype=torch.float64))
        dist.all_reduce(t)
        return float(t.item())

    def broadcast_bytes(self, data: bytes | None) -> bytes:
        """Rank 0's bytes (b"" for None) on every rank."""
        import torch
        import torch.distributed as dist

        n = self._t(torch.tensor([len(data or b"") if self.rank == 0 else 0], dtype=torch.int64))
        dist.broadcast(n, 0)
        if int(n.item()) == 0:
            return b""
        buf = torch.frombuffer(bytearray(data), dtype=torch.uint8) if self.rank == 0 else \
            torch.empty(int(n.item()), dtype=torch.uint8)
        buf = self._t(buf)
        dist.broadcast(buf, 0)
        return buf.cpu().numpy().tobytes()

    def gather_digests(self, digests: dict[str, str]) -> list[dict[str, str]]:
        """Every rank's hex digests (same keys everywhere), as tensors: nothing is pickled."""
        import torch
        import torch.distributed as dist

        keys = sorted(digests)
        mine = self._t(torch.tensor([list(bytes.fromhex(digests[k])) for k in keys], dtype=torch.int64))
        got = [torch.empty_like(mine) for _ in range(self.world)]
        dist.all_gather(got, mine)
        return [{k: bytes(row.tolist()).hex() for k, row in zip(keys, g.cpu())} for g in got]

    def agree(self, error: BaseException | None, what: str) -> None:
        """Every rank learns whether any failed `what`; the failing ones re-raise their own error."""
        import torch
        import torch.distributed as dist

        flags = [0] * self.world
        flags[self.rank] = int(error is not None)
        t = self._t(torch.tensor(flags, dtype=torch.int64))
        dist.all_reduce(t)
        if error is not None:
            raise error
        bad = [r for r, v in enumerate(t.tolist()) if v]
        if bad:
            raise OpqError(f"{what} failed in process(es) of rank {', '.join(map(str, bad))} (its error is printed "
                           "by that process); nothing was written")


DIGEST_WHAT = {
    "frozen": "masks and quantizers (masks, codebooks, scales: every state entry that does not train)",
    "weights": "starting weights (weights.pt)",
    "data": "training data",
    "options": "finetune options (epochs, lr, schedule, seed, global batch) or run",
}


def compare_digests(per_rank: list[dict[str, str]]) -> None:
    """Refuse (OpqError) when any rank's digests differ from rank 0's, naming the rank and what differs."""
    ref = per_rank[0]
    problems = [f"rank {r}: {DIGEST_WHAT.get(k, k)}" for r, d in enumerate(per_rank[1:], 1)
                for k in sorted(ref) if d.get(k) != ref[k]]
    if problems:
        raise OpqError("the processes do not hold the same finetune; differing from rank 0: " + "; ".join(problems)
                       + ". Every process must read the same run directory and data (on a cluster: identical copies, "
                       "checked with the run's manifest hashes) with the same options")


def state_digests(qmodel, data_sha: str, options: dict[str, Any]) -> dict[str, str]:
    """SHA-256 of what must be identical on every process before DDP starts."""
    trainable = {n for n, p in qmodel.named_parameters() if p.requires_grad}
    frozen, weights = hashlib.sha256(), hashlib.sha256()
    for name, t in sorted(qmodel.state_dict().items()):
        h = weights if name in trainable else frozen
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes())
    return {"frozen": frozen.hexdigest(), "weights": weights.hexdigest(),
            "data": hashlib.sha256(data_sha.encode()).hexdigest(),
            "options": hashlib.sha256(config_hash(options).encode()).hexdigest()}  # every digest 32 bytes


# ------------------------------------------------------------------------------------------------
# one process
# ------------------------------------------------------------------------------------------------
def default_checkpoint(run: Path) -> Path:
    run = Path(os.path.abspath(run))
    return run.parent / f".{run.name}.finetune.ckpt"


def _prepare(run: Path, opts: FinetuneOptions) -> dict[str, Any]:
    """The run's model (frozen), its training data fitted to the model, and the resolved options."""
    import numpy as np

    from .carrier import freeze
    from .data import fit_to_model, load_data, require_run_data, same_data
    from .run import load_run

    r = load_run(run, model=opts.model, trust_run=opts.trust_run)
    rec = require_run_data(run, "finetune")
    if rec.get("kind") == "builtin":
        spec = rec["name"]
    elif opts.data:
        spec = opts.data
    else:
        raise OpqError(f"run {run.name!r} was compressed with the data {rec.get('name')!r}, which opq-hw does not load "
                       "from a run's record: pass it again with --data")
    data = load_data(spec, seed=0)  # as `compress` loads it
    if not same_data(rec, data):
        raise OpqError(f"--data {data.name} (sha256 {data.sha256[:12]}) is not the data run {run.name!r} was compressed "
                       f"with ({rec.get('name')}, sha256 {str(rec.get('sha256'))[:12]}); finetune on the run's own data")
    gout = np.load(run / "golden_output.npy", mmap_mode="r", allow_pickle=False)
    layout = None if data.builtin else rec.get("layout")
    data = fit_to_model(data, tuple(r.specs[0].in_shape), n_out=int(gout.shape[-1]), layout=layout)
    freeze(r.qmodel)
    cfg = r.config
    lr = opts.lr if opts.lr is not None else float(cfg["lr"])
    schedule = opts.lr_schedule or cfg.get("lr_schedule", "constant")  # absent from runs made before it existed
    seed = opts.seed if opts.seed is not None else int(cfg["seed"])
    start = r.manifest["artifacts"]["weights.pt"]
    # what a resumable checkpoint must carry: the starting point and the step rule, not the process count
    tag = config_hash({"weights": start, "allocation": r.manifest["artifacts"].get("allocation.json"),
                       "data": data.sha256, "lr": lr, "seed": seed, "batch_size": opts.batch_size,
                       # a decaying rate's curve spans the finetune's epochs: part of the step rule
                       **({"lr_schedule": schedule, "epochs": opts.epochs} if schedule != "constant" else {})})
    return {"run": r, "data": data, "lr": lr, "lr_schedule": schedule, "seed": seed, "tag": tag, "start": start}


def check_world(opts: FinetuneOptions, world: int) -> None:
    """The options against the number of processes (the same answer on every process)."""
    if opts.checkpoint and Path(opts.checkpoint).is_dir():
        raise OpqError(f"--checkpoint {opts.checkpoint} is a directory; give a file path (it is created)")
    if opts.batch_size < world:
        raise OpqError(f"--batch-size {opts.batch_size} is the global batch, shared by the {world} processes: give at "
                       f"least {world}")


def run_worker(run: str | os.PathLike, opts: FinetuneOptions, *, rank: int = 0, world: int = 1, local_rank: int = 0,
               lock_held: bool = False, log: Callable[[str], Any] = print, progress: bool = False) -> dict | None:
    """One process of the finetune (all of it when world == 1); returns the finetune record on rank 0."""
    from .rundir import locked

    run = Path(os.path.abspath(run))
    check_world(opts, world)
    group = Group.init(rank, world, local_rank, opts.device) if world > 1 else None
    try:
        with contextlib.ExitStack() as stack:
            err, prep = None, None
            try:
                if rank == 0 and not lock_held:
                    stack.enter_context(locked(run))
                prep = _prepare(run, opts)
            except Exception as e:  # noqa: BLE001 - every rank must hear of it, or the others wait
                err = e
            if group is not None:
                group.agree(err, "loading the run")
            elif err is not None:
                raise err
            return _train_and_write(run, opts, prep, group, rank, world, log, progress)
    finally:
        if group is not None:
            group.close()


def _train_and_write(run: Path, opts: FinetuneOptions, prep: dict, group, rank: int, world: int, log,
                     progress: bool) -> dict | None:
    from .training import accuracy, checkpoint_info, finetune

    r, data = prep["run"], prep["data"]
    options = {"epochs": opts.epochs, "lr": prep["lr"], "lr_schedule": prep["lr_schedule"], "seed": prep["seed"],
               "batch_size": opts.batch_size, "tag": prep["tag"]}
    if group is not None:
        compare_digests(group.gather_digests(state_digests(r.qmodel, data.sha256, options)))
    ckpt = Path(opts.checkpoint) if opts.checkpoint else default_checkpoint(run)
    resumed = 0
    if rank == 0:
        info = checkpoint_info(ckpt)
        if info is not None and info[0] == prep["tag"]:
            resumed = info[1]
            log(f"note: resuming the finetune from epoch {resumed} of {ckpt.name} (written by {info[2]} process(es); "
                f"now {world})")
        elif info is not None:
            log(f"note: {ckpt.name} holds another finetune's checkpoint (other starting weights or options): "
                "starting over, it will be overwritten")
        acc_before = accuracy(r.qmodel, data.x_test, data.y_test)
    t0, c0 = time.perf_counter(), time.process_time()
    history = finetune(r.qmodel, (data.x_train, data.y_train), epochs=opts.epochs, lr=prep["lr"],
                       batch_size=opts.batch_size, seed=prep["seed"], checkpoint=ckpt, progress=progress,
                       tag=prep["tag"], group=group, lr_schedule=prep["lr_schedule"])
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    r.qmodel.to("cpu")
    err, rec = None, None
    if rank == 0:
        try:
            trained = max(0, opts.epochs - resumed)
            rec = {"epochs": opts.epochs, "resumed_from_epoch": resumed, "lr": prep["lr"],
                   "lr_schedule": prep["lr_schedule"], "distill_weight": 0.0, "seed": prep["seed"],
                   "batch_size": opts.batch_size, "world_size": world,
                   "backend": "single process" if group is None else ("nccl" if opts.device == "cuda" else "gloo"),
                   "device": opts.device, "train_samples": int(len(data.x_train)), "history": history,
                   "acc_before": acc_before, "acc_after": accuracy(r.qmodel, data.x_test, data.y_test),
                   "train_seconds": round(seconds, 3), "train_cpu_seconds_rank0": round(cpu, 3),
                   "samples_per_s": round(trained * len(data.x_train) / seconds, 1) if trained and seconds > 0 else None,
                   "weights_before": prep["start"]}
            write_finetuned(run, r, data, rec)
            if not opts.checkpoint:
                ckpt.unlink(missing_ok=True)
        except Exception as e:  # noqa: BLE001 - reported to every rank below
            err = e
    if group is not None:
        group.agree(err, "writing the run")
    elif err is not None:
        raise err
    return rec


# ------------------------------------------------------------------------------------------------
# writing the run (rank 0)
# ------------------------------------------------------------------------------------------------
REWRITTEN = ("weights.pt", "model.qonnx.onnx", "golden_output.npy", "metrics.json")
# later outputs made from the allocation and specs alone (unchanged by a finetune): kept
STILL_VALID = ("cost.json", "reports/estimate")


def write_finetuned(run: Path, r, data, rec: dict[str, Any]) -> None:
    """The finetuned run, atomically: a copy of the run in a temporary sibling with the new weights,
    QONNX export, golden outputs and metrics, the manifest's hashes updated, swapped in. Later outputs
    made from the old weights (builds, simulation and synthesis records) are dropped and named in
    the manifest's notes; files opq-hw did not write are kept as they are."""
    import numpy as np

    from .artifact import atomic_dir, read_json, write_json, write_npy
    from .export import export_qonnx
    from .pipeline import CompressConfig, example_input, golden_outputs, write_weights
    from .rundir import MANIFEST, read_manifest, sha256_file, verify
    from .run import check_weights

    check_weights(run, r.qmodel, r.allocation)  # masks, survivors, bits and scales are still the allocation's
    # the caller holds the run's lock (rank 0, or the parent that launched the processes)
    man = read_manifest(run)
    if man["artifacts"].get("weights.pt") != rec["weights_before"]:
        raise OpqError(f"{run}/weights.pt changed while the finetune ran; nothing was written: run it again")
    verify(run, manifest=man)
    arts = dict(man["artifacts"])
    dropped = sorted(n for n in arts if n not in REWRITTEN and n != MANIFEST
                     and n.startswith(("build/", "reports/")) and not n.startswith(STILL_VALID))
    golden_y = golden_outputs(r.qmodel, np.load(run / "golden_input.npy", allow_pickle=False),
                              "the finetuned model computes NaN or Inf on the golden inputs; try a smaller --lr")
    metrics = read_json(run / "metrics.json")
    metrics["acc_finetuned"] = rec["acc_after"]
    metrics["finetune_loss"] = list(metrics.get("finetune_loss") or []) + list(rec["history"])
    with atomic_dir(run) as tmp:
        for dirpath, _dirs, files in os.walk(run):
            for f in files:
                src = Path(dirpath) / f
                name = src.relative_to(run).as_posix()
                if name in REWRITTEN or name in dropped or name == MANIFEST or src.is_symlink():
                    continue
                dst = tmp / name
                dst.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(src, dst)  # the old directory goes away whole; nothing writes into these in place
                except OSError:
                    shutil.copy2(src, dst)
        write_weights(tmp, r.qmodel)
        cfg = CompressConfig.from_dict(man["config"])
        export_qonnx(r.qmodel, example_input(cfg, data, man.get("frontend")), tmp / "model.qonnx.onnx")
        write_npy(tmp / "golden_output.npy", golden_y)
        write_json(tmp / "metrics.json", metrics)
        for n in dropped:
            del arts[n]
        for n in REWRITTEN:
            arts[n] = sha256_file(tmp / n)
        rec["weights_after"] = arts["weights.pt"]
        rec["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        man["artifacts"] = dict(sorted(arts.items()))
        man["finetunes"] = list(man.get("finetunes") or []) + [rec]
        steps = man.get("steps") if isinstance(man.get("steps"), dict) else {}
        man["steps"] = {k: v for k, v in steps.items() if not any(d.startswith(k + "/") for d in dropped)}
        if dropped:
            man["notes"] = list(man.get("notes") or []) + [
                f"finetune ({rec['created']}): removed {len(dropped)} output(s) made from the previous weights "
                f"({', '.join(sorted({'/'.join(d.split('/')[:2]) for d in dropped}))}); build and simulate again"]
        write_json(tmp / MANIFEST, man)


# ------------------------------------------------------------------------------------------------
# command line (`opq-hw finetune`, and each process of `-m opq_hw.finetune`)
# ------------------------------------------------------------------------------------------------
def add_args(p: argparse.ArgumentParser, local: bool) -> None:
    """The options of `opq-hw finetune` (local=True: with --nproc) and of each process torchrun starts."""
    from . import validate as v

    p.add_argument("run", help="the run directory to finetune (in place)")
    if local:
        p.add_argument("--nproc", type=v._argtype(lambda s: v.int_in(s, 1, MAX_NPROC, "--nproc"), "nproc"), default=1,
                       help=f"processes on this machine, 1..{MAX_NPROC} (on a cluster: torchrun, see the README)")
    p.add_argument("--epochs", type=v.epochs_arg, default=1, help="finetune epochs (default 1)")
    p.add_argument("--lr", type=v.lr_arg, help="learning rate (default: the run's compress --lr)")
    p.add_argument("--lr-schedule", choices=["constant", "cosine"],
                   help="learning rate over this finetune's steps: constant or cosine (default: the run's compress "
                        "--lr-schedule)")
    p.add_argument("--distill-weight", type=v.distill_weight_arg, default=0.0,
                   help="distillation from the float model: not available here (a run does not keep its float "
                        "model); only 0 (cross-entropy) is accepted, use `opq-hw compress --distill-weight`")
    p.add_argument("--seed", type=v.seed_arg, help="shuffling seed (default: the run's --seed)")
    p.add_argument("--batch-size", type=v._argtype(lambda s: v.int_in(s, 1, 1 << 20, "--batch-size"), "batch size"),
                   default=64, help="global batch, shared by all processes (default 64)")
    p.add_argument("--checkpoint", help="save the finetune state here after each epoch and resume from it, whatever "
                   "the process count (default: a hidden file beside the run, removed when the finetune completes)")
    p.add_argument("--data", help="a run compressed with a .npz or module:function: the same data again")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cpu (gloo) or cuda (nccl)")
    p.add_argument("--model", help="module:factory of a run made from one (opq-hw never imports what a run names)")
    p.add_argument("--trust-run", action="store_true", help="import the module:factory recorded in the run")


def options(args) -> FinetuneOptions:
    if args.distill_weight:
        raise OpqError(f"--distill-weight {args.distill_weight:g}: `opq-hw finetune` cannot distil, a run does not keep "
                       "the float model it was compressed from; compress again with `opq-hw compress "
                       "--distill-weight A` (or finetune here with cross-entropy: --distill-weight 0)")
    return FinetuneOptions(epochs=args.epochs, lr=args.lr, lr_schedule=args.lr_schedule, seed=args.seed,
                           batch_size=args.batch_size,
                           checkpoint=args.checkpoint, data=args.data, device=args.device, model=args.model,
                           trust_run=args.trust_run)


def summary(rec: dict[str, Any]) -> str:
    rate = f", {rec['samples_per_s']:.0f} samples/s" if rec.get("samples_per_s") else ""
    return (f"finetuned {rec['epochs']} epoch(s) on {rec['world_size']} process(es) ({rec['backend']}), global batch "
            f"{rec['batch_size']}{rate}: loss {', '.join(f'{h:.4f}' for h in rec['history'])}; accuracy "
            f"{rec['acc_before'] * 100:.2f}% -> {rec['acc_after'] * 100:.2f}%")
