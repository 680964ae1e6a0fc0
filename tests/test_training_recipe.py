"""The finetune recipe options (opq_hw.training): learning-rate schedule, distillation from the
float model; their config record and command-line options."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from opq_hw.errors import OpqError
from opq_hw.training import LR_SCHEDULES, lr_factor, recipe_loss, teacher_logits, train


def test_lr_factor_values():
    total = 10
    assert [lr_factor(s, total, "constant") for s in range(total)] == [1.0] * total
    cos = [lr_factor(s, total, "cosine") for s in range(total)]
    assert cos[0] == 1.0 and cos[5] == pytest.approx(0.5) and cos[-1] == pytest.approx(0.5 * (1 + math.cos(0.9 * math.pi)))
    assert all(a > b > 0 for a, b in zip(cos, cos[1:]))  # strictly decreasing, never 0 on a step that is taken
    assert set(LR_SCHEDULES) == {"constant", "cosine"}
    with pytest.raises(OpqError, match="'linear'.*constant, cosine"):
        lr_factor(0, total, "linear")


def _tiny(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def _data(n=40):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_schedule_sets_the_learning_rate_of_every_step(monkeypatch):
    x, y = _data()
    seen = []
    step = torch.optim.Adam.step

    def spy(self, *a, **k):
        seen.append(self.param_groups[0]["lr"])
        return step(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    train(_tiny(), x, y, epochs=2, lr=0.01, batch_size=16, progress=False, lr_schedule="cosine")
    assert seen == [0.01 * lr_factor(s, 6, "cosine") for s in range(6)]  # 3 steps per epoch, one curve over both
    seen.clear()
    train(_tiny(), x, y, epochs=2, lr=0.01, batch_size=16, progress=False)
    assert seen == [0.01] * 6
    with pytest.raises(OpqError, match="schedule 'step'"):
        train(_tiny(), x, y, epochs=1, progress=False, lr_schedule="step")


def test_cosine_resumes_the_same_curve(tmp_path, monkeypatch):
    """A run stopped after epoch 1 and resumed from its checkpoint ends where the uninterrupted one
    does, bit for bit: the schedule follows the global step."""
    import opq_hw.artifact as art

    x, y = _data()
    kw = dict(epochs=3, lr=0.01, batch_size=16, progress=False, lr_schedule="cosine", tag="t")
    full = _tiny()
    train(full, x, y, **kw)
    write, calls = art.write_bytes, []

    def stop_after_first(*a, **k):
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return write(*a, **k)

    monkeypatch.setattr(art, "write_bytes", stop_after_first)
    with pytest.raises(KeyboardInterrupt):
        train(_tiny(), x, y, checkpoint=tmp_path / "ck", **kw)
    monkeypatch.setattr(art, "write_bytes", write)
    part = _tiny(seed=7)  # other starting weights: the checkpoint's replace them
    train(part, x, y, checkpoint=tmp_path / "ck", **kw)
    assert all(torch.equal(a, b) for a, b in zip(full.state_dict().values(), part.state_dict().values()))


def test_distillation_loss():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(12, 5, generator=g), torch.randn(12, 5, generator=g)
    y = torch.randint(0, 5, (12,), generator=g)
    for red in ("mean", "sum"):
        ce = F.cross_entropy(s, y, reduction=red)
        assert torch.equal(recipe_loss(s, y, None, 0.0, reduction=red), ce)  # weight 0: the cross-entropy itself
        assert torch.equal(recipe_loss(s, y, t, 0.0, reduction=red), ce)
        T, a = 3.0, 0.25
        kl = (F.softmax(t / T, 1) * (F.log_softmax(t / T, 1) - F.log_softmax(s / T, 1))).sum(1)
        want = (1 - a) * ce + a * T * T * (kl.mean() if red == "mean" else kl.sum())
        assert torch.allclose(recipe_loss(s, y, t, a, T, red), want, rtol=1e-6)
    assert recipe_loss(s, y, s.clone(), 1.0, 2.0).abs().item() < 1e-6  # a student equal to its teacher: no loss
    with pytest.raises(OpqError, match="teacher"):
        recipe_loss(s, y, None, 0.5)


def test_distillation_trains_towards_the_teacher_which_never_changes():
    x, y = _data(64)
    teacher = _tiny(seed=5)
    before = [p.detach().clone() for p in teacher.parameters()]
    soft = teacher_logits(teacher, x, batch=16)
    assert not soft.requires_grad and torch.equal(soft, teacher(x).detach())
    student = _tiny()
    gap0 = F.kl_div(F.log_softmax(student(x), 1), F.log_softmax(soft, 1), log_target=True, reduction="batchmean").item()
    train(student, x, y, epochs=20, lr=0.01, batch_size=16, progress=False, soft_targets=soft, distill_weight=1.0)
    gap = F.kl_div(F.log_softmax(student(x), 1), F.log_softmax(soft, 1), log_target=True, reduction="batchmean").item()
    assert gap < 0.3 * gap0
    assert all(torch.equal(a, b) and b.grad is None for a, b in zip(before, teacher.parameters()))
    # weight 0 with soft targets given: the same run as without them, bit for bit
    a, b = _tiny(), _tiny()
    ha = train(a, x, y, epochs=2, lr=0.01, batch_size=16, progress=False, soft_targets=soft, distill_weight=0.0)
    hb = train(b, x, y, epochs=2, lr=0.01, batch_size=16, progress=False)
    assert ha == hb and all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    with pytest.raises(OpqError, match="teacher's logits"):
        train(_tiny(), x, y, epochs=1, progress=False, distill_weight=0.5)


def test_fast_twin_finetune_with_the_recipe_equals_the_carrier():
    """The fast twin (opq_hw.fakequant) trains the carrier bit for bit as Brevitas's own forward
    does, with the cosine schedule and distillation too; the finetune names a missing teacher."""
    from test_fakequant import _carrier

    from opq_hw.models import digits_cnn
    from opq_hw.training import finetune

    x = torch.rand(64, 1, 8, 8)
    y = torch.randint(0, 10, (64,))
    torch.manual_seed(3)
    teacher = digits_cnn()
    states = []
    for fast in (True, False):
        q, _ = _carrier(digits_cnn, (32, 1, 8, 8))
        hist = finetune(q, (x, y), epochs=2, batch_size=32, lr=1e-2, progress=False, fast=fast, lr_schedule="cosine",
                        teacher=teacher, distill_weight=0.5, distill_temperature=3.0)
        states.append((hist, q.state_dict()))
    (h1, s1), (h2, s2) = states
    assert h1 == h2 and all(torch.equal(s1[k], s2[k]) for k in s1)
    with pytest.raises(OpqError, match="float teacher"):
        finetune(q, (x, y), epochs=1, progress=False, distill_weight=0.5)


def test_config_round_trip_and_old_hashes():
    from opq_hw.artifact import config_hash
    from opq_hw.pipeline import CompressConfig

    cfg = CompressConfig(lr_schedule="cosine", distill_weight=0.5, distill_temperature=3.0)
    d = cfg.to_dict()
    assert (d["lr_schedule"], d["distill_weight"], d["distill_temperature"]) == ("cosine", 0.5, 3.0)
    assert CompressConfig.from_dict(d) == cfg
    old = CompressConfig().to_dict()  # the recipe of runs made before the options existed: not recorded, same hash
    assert not {"lr_schedule", "distill_weight", "distill_temperature"} & set(old)
    back = CompressConfig.from_dict(old)
    assert (back.lr_schedule, back.distill_weight, back.distill_temperature) == ("constant", 0.0, 2.0)
    assert config_hash(back.to_dict()) == config_hash(old)
    for kw, pat in [({"lr_schedule": "linear"}, "lr_schedule"), ({"distill_weight": 1.5}, "distill_weight"),
                    ({"distill_weight": float("nan")}, "distill_weight"), ({"distill_temperature": 0}, "distill_temperature")]:
        with pytest.raises(OpqError, match=pat):
            CompressConfig(**kw)


def test_cli_recipe_options(capsys, tmp_path):
    import argparse

    from opq_hw.cli import _add_compress_args, _config, main

    p = argparse.ArgumentParser()
    _add_compress_args(p, demo=False)
    args = p.parse_args(["--model", "digits-cnn", "--data", "digits", "--lr-schedule", "cosine",
                         "--distill-weight", "0.3", "--distill-temperature", "4"])
    cfg = _config(args, demo=False)
    assert (cfg.lr_schedule, cfg.distill_weight, cfg.distill_temperature) == ("cosine", 0.3, 4.0)
    for bad, name in [(["--lr-schedule", "linear"], "--lr-schedule"), (["--distill-weight", "2"], "--distill-weight"),
                      (["--distill-temperature", "-1"], "--distill-temperature")]:
        with pytest.raises(SystemExit) as e:
            main(["compress", "--model", "digits-cnn", "--out", str(tmp_path / "r")] + bad)
        err = capsys.readouterr().err
        assert e.value.code == 2 and name in err and bad[1] in err
    # `opq-hw finetune` (DDP) has no float model to distil from: it refuses by name before loading anything
    assert main(["finetune", str(tmp_path / "none"), "--distill-weight", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "--distill-weight 0.5" in err and "opq-hw compress --distill-weight" in err
    with pytest.raises(SystemExit):
        main(["finetune", str(tmp_path / "none"), "--lr-schedule", "linear"])
    assert "--lr-schedule" in capsys.readouterr().err


def test_distributed_finetune_takes_the_schedule(demo_run, tmp_path):
    """`opq-hw finetune` (opq_hw.ddp) with --lr-schedule cosine: recorded, a different run than the
    constant rate, and a checkpoint of the constant-rate finetune is not resumed by it."""
    import shutil

    from opq_hw.ddp import FinetuneOptions
    from opq_hw.ddp_launch import finetune_run

    quiet = dict(log=lambda *_: None)
    recs = {}
    for sched in ("constant", "cosine"):
        run = shutil.copytree(demo_run, tmp_path / sched)
        recs[sched] = finetune_run(run, FinetuneOptions(epochs=1, lr_schedule=sched, checkpoint=str(tmp_path / "ck")),
                                   nproc=1, **quiet)
    assert recs["cosine"]["lr_schedule"] == "cosine" and recs["cosine"]["resumed_from_epoch"] == 0
    assert recs["constant"]["history"] != recs["cosine"]["history"]
    w = [torch.load(tmp_path / s / "weights.pt", weights_only=True) for s in ("constant", "cosine")]
    assert any(not torch.equal(w[0][k], w[1][k]) for k in w[0])
