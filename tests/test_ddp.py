"""Distributed finetuning (`opq-hw finetune RUN --nproc N`, opq_hw/ddp.py): 2 processes (gloo, CPU)
against 1 with the same global batch and seed, and a checkpoint written by 2 processes resumed by 1.

Tolerance: the float weights of 2 processes are those of 1 process within 1e-5 absolute (the
gradient of a global batch is summed in another order: measured 6e-8 after one epoch of
digits-cnn); masks, codebooks and scales (everything that does not train) are bit-identical."""
from __future__ import annotations

import shutil

import pytest
import torch

from opq_hw.errors import OpqError

ATOL = 1e-5


def _weights(run):
    return torch.load(run / "weights.pt", map_location="cpu", weights_only=True)


def _trainable(state):
    return {k for k in state if k.endswith((".original", ".bias"))}


def _assert_same(a, b, what):
    sa, sb = _weights(a), _weights(b)
    assert sa.keys() == sb.keys()
    train = _trainable(sa)
    assert train and all(k.endswith(".original") or k.endswith(".bias") for k in train)
    for k in sa:
        if k in train:
            diff = (sa[k] - sb[k]).abs().max().item()
            assert diff <= ATOL, f"{what}: {k} differs by {diff:.3g} > {ATOL}"
        else:  # masks, lsb, kmax, quantizer scales
            assert torch.equal(sa[k], sb[k]), f"{what}: frozen {k} differs"


def test_two_processes_match_one_and_resume_on_one(demo_run, tmp_path):
    from opq_hw.ddp import FinetuneOptions
    from opq_hw.ddp_launch import finetune_run
    from opq_hw.rundir import verify

    runs = {n: shutil.copytree(demo_run, tmp_path / n) for n in ("two", "one", "resumed2", "resumed1")}
    ck2, ck1 = tmp_path / "two.ckpt", tmp_path / "one.ckpt"
    quiet = dict(log=lambda *_: None)
    before = _weights(runs["one"])

    rec2 = finetune_run(runs["two"], FinetuneOptions(epochs=1, checkpoint=str(ck2)), nproc=2)
    rec1 = finetune_run(runs["one"], FinetuneOptions(epochs=1, checkpoint=str(ck1)), nproc=1, **quiet)
    assert (rec2["world_size"], rec2["backend"], rec1["world_size"]) == (2, "gloo", 1)
    _assert_same(runs["two"], runs["one"], "2 processes vs 1")
    moved = max((_weights(runs["one"])[k] - before[k]).abs().max().item() for k in _trainable(before))
    assert moved > 100 * ATOL  # the finetune did train: the tolerance is far below what one epoch moves
    assert abs(rec2["history"][0] - rec1["history"][0]) < 1e-6
    for r in (runs["two"], runs["one"]):
        verify(r)  # the manifest's hashes were updated with the files

    # a checkpoint written by 2 processes (epoch 1) continues on 1 process, like one written by 1
    recr2 = finetune_run(runs["resumed2"], FinetuneOptions(epochs=2, checkpoint=str(ck2)), nproc=1, **quiet)
    recr1 = finetune_run(runs["resumed1"], FinetuneOptions(epochs=2, checkpoint=str(ck1)), nproc=1, **quiet)
    assert recr2["resumed_from_epoch"] == recr1["resumed_from_epoch"] == 1
    assert recr2["history"][0] == rec2["history"][0] and len(recr2["history"]) == 2
    _assert_same(runs["resumed2"], runs["resumed1"], "resumed from 2 processes vs from 1")
    assert torch.load(ck2, weights_only=True)["epoch"] == 2  # ... and the checkpoint went on from there


def test_ranks_must_hold_the_same_masks(demo_run):
    """The start-up check: a rank whose masks (or weights, data, options) differ is named."""
    from opq_hw.ddp import compare_digests, state_digests
    from opq_hw.run import load_run

    q = load_run(demo_run).qmodel
    from opq_hw.carrier import freeze

    freeze(q)
    ref = state_digests(q, "data", {"lr": 1e-3})
    compare_digests([ref, dict(ref)])  # identical: accepted
    mask = next(b for n, b in q.named_buffers() if n.endswith(".mask"))
    mask.view(-1)[0] = 1 - mask.view(-1)[0]
    other = state_digests(q, "data", {"lr": 1e-3})
    assert other["frozen"] != ref["frozen"] and other["weights"] == ref["weights"]
    with pytest.raises(OpqError, match="rank 1: masks and quantizers"):
        compare_digests([ref, other])
    with pytest.raises(OpqError, match="rank 2: finetune options"):
        compare_digests([ref, ref, state_digests(q, "data", {"lr": 2e-3}) | {"frozen": ref["frozen"]}])


def test_finetune_cli_refusals(demo_run, tmp_path, capsys):
    import opq_hw
    from opq_hw.cli import main

    with pytest.raises(SystemExit) as e:
        main(["finetune", str(demo_run), "--nproc", "0"])
    assert e.value.code == 2 and "--nproc" in capsys.readouterr().err
    run = shutil.copytree(demo_run, tmp_path / "r")
    assert main(["finetune", str(run), "--nproc", "4", "--batch-size", "2"]) == 2
    assert "--batch-size 2 is the global batch" in capsys.readouterr().err
    assert main(["finetune", str(run), "--checkpoint", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert main(["finetune", str(tmp_path / "none")]) == 2
    assert callable(opq_hw.finetune) and not isinstance(opq_hw.finetune, type(opq_hw))  # the function, not the module
