"""Training loops: float pre-training and STE finetuning with frozen masks and quantizers."""
from __future__ import annotations

import contextlib
import io
import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import OpqError
from .spec import DEFAULTS

LR_SCHEDULES = ("constant", "cosine")  # the finetune's learning rate over its steps (`lr_factor`)


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


def lr_factor(step: int, total: int, schedule: str = "constant") -> float:
    """The learning rate of step `step` (0-based) of `total`, as a fraction of the base rate.

    constant: 1. cosine: 0.5 * (1 + cos(pi * step / total)), from 1 at the first step down towards
    0 at the last (Loshchilov & Hutter, "SGDR: stochastic gradient descent with warm restarts",
    ICLR 2017, eq. 5, one cycle without restart, eta_min = 0). A function of the global step only,
    so a resumed run (any process count) continues the same curve."""
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))
    raise OpqError(f"unknown learning-rate schedule {schedule!r}; choose one of {', '.join(LR_SCHEDULES)}")


def recipe_loss(logits: torch.Tensor, y: torch.Tensor, teacher_logits: torch.Tensor | None = None,
                weight: float = 0.0, temperature: float = 2.0, reduction: str = "mean") -> torch.Tensor:
    """(1 - a) * CE(logits, y) + a * T^2 * KL(softmax(t / T) || softmax(logits / T)), a = `weight`,
    T = `temperature`, t = the float teacher's logits: knowledge distillation (Hinton, Vinyals &
    Dean, "Distilling the knowledge in a neural network", 2015, section 2: the T^2 keeps the soft
    term's gradient scale independent of T). `reduction`: mean or sum over the batch. With a = 0 it
    is the cross-entropy itself (the same op, bit for bit), and no teacher is needed."""
    ce = F.cross_entropy(logits, y, reduction=reduction)
    if not weight:
        return ce
    if teacher_logits is None:
        raise OpqError("distillation (weight > 0) needs the teacher's logits")
    t = temperature
    kl = F.kl_div(F.log_softmax(logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1), log_target=True,
                  reduction="sum")
    if reduction == "mean":
        kl = kl / len(y)
    return (1.0 - weight) * ce + (weight * t * t) * kl


def teacher_logits(teacher: nn.Module, x, batch: int = 512) -> torch.Tensor:
    """The float teacher's logits on every training sample: one eval-mode, no-grad pass before the
    finetune (the teacher never trains, so its outputs are the same every epoch)."""
    x = torch.as_tensor(x)
    was = teacher.training
    teacher.eval()
    try:
        with torch.no_grad():
            return torch.cat([teacher(x[i:i + batch]).float() for i in range(0, len(x), batch)])
    finally:
        teacher.train(was)


def train(model: nn.Module, x, y, *, epochs: int, lr: float = 1e-3, batch_size: int = 64, seed: int = 0,
          checkpoint: str | os.PathLike | None = None, progress: bool = True, desc: str = "train",
          tag: str | None = None, forward: nn.Module | None = None, group=None, lr_schedule: str = "constant",
          soft_targets: torch.Tensor | None = None, distill_weight: float = 0.0,
          distill_temperature: float = 2.0) -> list[float]:
    """Adam on the parameters that require grad; returns the mean loss per epoch.

    `lr_schedule`: the learning rate of each step, `lr * lr_factor(global step, epochs * steps)`.
    `soft_targets` (the teacher's logits for every sample of `x`), `distill_weight`,
    `distill_temperature`: the loss is `recipe_loss` (cross-entropy alone at weight 0).

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
    if lr_schedule not in LR_SCHEDULES:
        raise OpqError(f"unknown learning-rate schedule {lr_schedule!r}; choose one of {', '.join(LR_SCHEDULES)}")
    if distill_weight and (soft_targets is None or len(soft_targets) != len(x)):
        raise OpqError("distillation needs the teacher's logits for every training sample (soft_targets)")

    def loss_fn(out, sel, reduction="mean"):
        soft = soft_targets[sel].to(out.device) if distill_weight else None
        return recipe_loss(out, y[sel].to(out.device), soft, distill_weight, distill_temperature, reduction)

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
        for step, i in enumerate(bar, epoch * steps):
            idx = order[i:i + batch_size]
            for pg in opt.param_groups:
                pg["lr"] = lr * lr_factor(step, epochs * steps, lr_schedule)
            opt.zero_grad()
            if world == 1:
                loss = loss_fn(net(x[idx].to(dev)), idx)
                loss.backward()
                part = loss.item() * len(idx)
            else:
                mine = idx[rank::world]
                if len(mine):
                    loss = loss_fn(net(x[mine].to(dev)), mine, "sum")
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
             fast: bool = True, group=None, lr_schedule: str = DEFAULTS.lr_schedule, teacher: nn.Module | None = None,
             distill_weight: float = DEFAULTS.distill_weight,
             distill_temperature: float = DEFAULTS.distill_temperature) -> list[float]:
    """Finetune the compressed model: only weights, biases (and BN) train; masks and quantizers are
    frozen, rounding passes gradients straight through (STE). `data` = (x_train, y_train).

    fast: train through `fakequant.fast_twin` (the same arithmetic with the frozen scales read
    once: 1.3-1.45x a float step (medians) instead of ~3x, benchmarks/README section 3) where its output
    equals the carrier's bit for bit on the first batch, in eval and train mode (checked here;
    otherwise the carrier itself is trained). The twin shares the carrier's parameters, so the
    carrier comes out trained either way. `group`: data-parallel over several processes (see `train`).

    The recipe (the same for every method): `lr_schedule` (`lr_factor`), and with `distill_weight`
    a > 0 knowledge distillation from `teacher` (the float model the compressed one was made from;
    it is only evaluated, once, under no_grad: `teacher_logits`) at temperature
    `distill_temperature` (`recipe_loss`)."""
    from .carrier import freeze

    freeze(qmodel)
    torch.manual_seed(seed)
    x, y = np.asarray(data[0]), np.asarray(data[1])
    if distill_weight and teacher is None:
        raise OpqError("distillation (distill_weight > 0) needs the float teacher model")
    with one_thread():
        soft = teacher_logits(teacher, x) if distill_weight else None
        twin = _fast_twin(qmodel, torch.as_tensor(x[:batch_size])) if fast else None
        if group is not None:  # its device (cuda:LOCAL_RANK with nccl); the twin's constants go along
            for m in (qmodel, twin):
                if m is not None:
                    m.to(group.device)
        return train(qmodel, x, y, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, checkpoint=checkpoint,
                     progress=progress, desc="finetune", tag=tag, forward=twin, group=group, lr_schedule=lr_schedule,
                     soft_targets=soft, distill_weight=distill_weight, distill_temperature=distill_temperature)


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
