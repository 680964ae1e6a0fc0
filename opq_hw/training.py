"""Training loops: float pre-training and STE finetuning with frozen masks and quantizers."""
from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import OpqError
from .spec import DEFAULTS


def accuracy(model: nn.Module, x, y, batch: int = 512) -> float:
    """Top-1 accuracy as a fraction."""
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    was = model.training
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            correct += int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum())
    model.train(was)
    return correct / len(x)


def train(model: nn.Module, x, y, *, epochs: int, lr: float = 1e-3, batch_size: int = 64, seed: int = 0,
          checkpoint: str | os.PathLike | None = None, progress: bool = True, desc: str = "train",
          tag: str | None = None, forward: nn.Module | None = None, group=None) -> list[float]:
    """Adam on the parameters that require grad; returns the mean loss per epoch.

    `forward`: a module that computes `model`'s forward on `model`'s own parameters and buffers
    (the finetune twin, `fakequant.fast_twin`); the parameters, optimizer and checkpoints stay
    `model`'s, so a run is the same whichever forward computed it.

    With `checkpoint`, model + optimizer + epoch are saved (atomically) after each epoch and a run
    that finds the file resumes from it (loaded with weights_only=True) when it carries the same
    `tag` (the run's configuration); a checkpoint with another tag is ignored and overwritten.

    `group` (`opq_hw.ddp.Group`, data-parallel over several processes): every process walks the
    same global batches of `batch_size` samples, in the same order as one process would, and
    computes the share `batch[rank::world]`; PyTorch DDP averages the gradients, and each share's
    loss is its sum x world / (global batch), so a step follows the gradient of the global batch's
    mean loss whatever the number of processes (up to float summation order). Only rank 0 writes
    the checkpoint; it reads it and sends it to the others. What the checkpoint holds (epoch,
    global step, seed, global batch) does not depend on the number of processes, so one written
    by N processes resumes with any other number.
    """
    from tqdm import tqdm

    from .artifact import write_bytes

    x, y = torch.as_tensor(x), torch.as_tensor(y)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise OpqError("nothing to train: no parameter requires grad")
    opt = torch.optim.Adam(params, lr=lr)
    rank, world = (group.rank, group.world) if group is not None else (0, 1)
    start, history = 0, []
    data = Path(checkpoint).read_bytes() if checkpoint is not None and rank == 0 and Path(checkpoint).is_file() else None
    if group is not None:
        data = group.broadcast_bytes(data)  # rank 0's file, to every process
    if data:
        try:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            if isinstance(state, dict) and state.get("tag") == tag:
                model.load_state_dict(state["model"])
                opt.load_state_dict(state["optim"])
                start, history = int(state["epoch"]), [float(v) for v in state["history"]]
        except Exception as e:
            raise OpqError(f"checkpoint {checkpoint} cannot be resumed ({type(e).__name__}: {str(e)[:200]}); "
                           "delete it to start over") from e
    loss_fn = nn.CrossEntropyLoss()
    sum_fn = nn.CrossEntropyLoss(reduction="sum")
    net = forward if forward is not None else model
    if group is not None:
        net = group.wrap(net)
    dev = params[0].device
    steps = -(-len(x) // batch_size)
    for epoch in range(start, epochs):
        g = torch.Generator().manual_seed(seed * 1000 + epoch)
        order = torch.randperm(len(x), generator=g)
        model.train()
        net.train()
        total, n = 0.0, 0
        bar = tqdm(range(0, len(x), batch_size), desc=f"{desc} {epoch + 1}/{epochs}", disable=not progress or rank > 0,
                   leave=False)
        for i in bar:
            idx = order[i:i + batch_size]
            opt.zero_grad()
            if world == 1:
                loss = loss_fn(net(x[idx].to(dev)), y[idx].to(dev))
                loss.backward()
                part = loss.item() * len(idx)
            else:
                mine = idx[rank::world]
                if len(mine):
                    loss = sum_fn(net(x[mine].to(dev)), y[mine].to(dev))
                else:  # a last batch smaller than the group: a zero gradient, but every process takes the step
                    loss = net(x[idx[:1]].to(dev)).sum() * 0
                (loss * (world / len(idx))).backward()
                part = loss.item()
            opt.step()
            total += part
            n += len(idx)
            bar.set_postfix(loss=f"{total / n:.4f}")
        if group is not None:
            total = group.sum(total)  # the global batch's loss; n is already global
        history.append(total / n)
        if checkpoint is not None and rank == 0:
            buf = io.BytesIO()
            torch.save({"model": model.state_dict(), "optim": opt.state_dict(), "epoch": epoch + 1,
                        "history": history, "tag": tag, "global_step": (epoch + 1) * steps, "seed": seed,
                        "batch_size": batch_size, "world_size": world}, buf)
            write_bytes(checkpoint, buf.getvalue())
    model.eval()
    net.eval()
    return history


def checkpoint_info(path: str | os.PathLike) -> tuple[str | None, int, int] | None:
    """(tag, epoch, processes that wrote it) of a training checkpoint (weights_only), None where
    there is none or it cannot be read (`train` then names the problem)."""
    if not Path(path).is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        return state.get("tag"), int(state.get("epoch", 0)), int(state.get("world_size", 1))
    except Exception:  # noqa: BLE001 - a torn or foreign file
        return None


def finetune(qmodel: nn.Module, data, *, epochs: int = 3, lr: float = DEFAULTS.lr, batch_size: int = 64, seed: int = 0,
             checkpoint: str | os.PathLike | None = None, progress: bool = True, tag: str | None = None,
             fast: bool = True, group=None) -> list[float]:
    """Finetune the compressed model: only weights, biases (and BN) train; masks and quantizers are
    frozen, rounding passes gradients straight through (STE). `data` = (x_train, y_train).

    fast: train through `fakequant.fast_twin` (the same arithmetic with the frozen scales read
    once: 1.3-1.45x a float step (medians) instead of ~3x, benchmarks/README section 3) where its output
    equals the carrier's bit for bit on the first batch, in eval and train mode (checked here;
    otherwise the carrier itself is trained). The twin shares the carrier's parameters, so the
    carrier comes out trained either way. `group`: data-parallel over several processes (see `train`)."""
    from .carrier import freeze

    freeze(qmodel)
    torch.manual_seed(seed)
    x, y = np.asarray(data[0]), np.asarray(data[1])
    with one_thread():
        twin = _fast_twin(qmodel, torch.as_tensor(x[:batch_size])) if fast else None
        if group is not None:  # its device (cuda:LOCAL_RANK with nccl); the twin's constants go along
            for m in (qmodel, twin):
                if m is not None:
                    m.to(group.device)
        return train(qmodel, x, y, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, checkpoint=checkpoint,
                     progress=progress, desc="finetune", tag=tag, forward=twin, group=group)


def _fast_twin(qmodel: nn.Module, batch: torch.Tensor) -> nn.Module | None:
    """The carrier's fast twin, or None where it cannot be built or does not match bit for bit."""
    from .fakequant import fast_twin, matches

    try:
        twin = fast_twin(qmodel, batch[:1])
    except (NotImplementedError, AttributeError, RuntimeError, TypeError):  # a module it does not know:
        return None  # the carrier's own (slower) forward computes the same
    return twin if matches(qmodel, twin, batch) else None


@contextlib.contextmanager
def one_thread():
    """Train on one torch thread: a multi-threaded GEMM splits the batch reduction of a weight
    gradient by thread count, so the last float bit of a few weights would depend on it (measured:
    6 of 12,299 weights of digits-cnn between 1 and 2 threads). The models here are small enough that
    one thread costs nothing, and run directories come out bit-identical whatever the thread setting."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(prev)
