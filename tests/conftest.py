"""Shared fixtures. Every run directory a test needs is built here, in pytest's tmp dirs."""
from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(items):
    """Slow tests first (a stable sort): `make test` spreads the suite over the cores with
    pytest-xdist, and a minutes-long test queued last would run alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session", autouse=True)
def _cache(tmp_path_factory):
    """Pre-trained float models are cached per test session (never read from a user's cache).
    One torch thread: these models are tiny, and threads only contend on a 2-core machine."""
    import torch

    torch.set_num_threads(1)
    if "OPQ_HW_CACHE" not in os.environ:
        os.environ["OPQ_HW_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield


def _run(tmp_path_factory, name: str, **kw):
    from opq_hw.pipeline import CompressConfig, compress_run

    cfg = CompressConfig(**kw)
    return compress_run(cfg, tmp_path_factory.mktemp(name) / "run", progress=False, log=lambda *_: None)


@pytest.fixture(scope="session")
def cnn():
    """(specs, weights) of an untrained digits-cnn (seed 0): what the hardware-aware allocation tests fit."""
    import torch

    from opq_hw.layers import inspect_model, layer_weights
    from opq_hw.models import BUILTIN, build_model

    torch.manual_seed(0)
    m = build_model("digits-cnn")
    specs = inspect_model(m, torch.zeros(BUILTIN["digits-cnn"].example_shape))
    return specs, layer_weights(m, specs)


@pytest.fixture
def copy_run(tmp_path):
    """A private copy of a session run: tests that write into a run never touch the shared one."""
    import shutil

    return lambda run_dir: shutil.copytree(run_dir, tmp_path / "run")


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """digits-cnn, OPQ at 20x CR_w, pow2 (hardware) mode, 2 finetune epochs."""
    return _run(tmp_path_factory, "demo", model="digits-cnn", data="digits", target_cr=20, epochs=2)


@pytest.fixture(scope="session")
def mlp_run(tmp_path_factory):
    """digits-mlp, OPQ at 20x CR_w, pow2 mode, 2 finetune epochs."""
    return _run(tmp_path_factory, "mlp", model="digits-mlp", data="digits", target_cr=20, epochs=2)


@pytest.fixture(scope="session")
def mnist1d_run(tmp_path_factory):
    """mnist1d-cnn, OPQ at 20x CR_w, pow2 mode, 1 finetune epoch (pre-trained 15 epochs: tests need
    a trained-like model, not the best one)."""
    return _run(tmp_path_factory, "mnist1d", model="mnist1d-cnn", data="mnist1d", target_cr=20, epochs=1,
                pretrain_epochs=15)


@pytest.fixture(scope="session")
def onnx_corpus(tmp_path_factory):
    """tests/corpus.py: float ONNX models as other exporters write them (+ a .npz each), built once."""
    from corpus import build_corpus

    return build_corpus(tmp_path_factory.mktemp("onnx_corpus"))


@pytest.fixture(scope="session")
def onnx_corpus_run(onnx_corpus, tmp_path_factory):
    """name -> run directory of `compress --model NAME.onnx --data digits --target-cr 8` (no finetuning),
    built on first use and shared by the session."""
    runs = {}

    def get(name: str):
        if name not in runs:
            runs[name] = _run(tmp_path_factory, f"onnx_{name}", model=str(onnx_corpus[name].onnx), data="digits",
                              target_cr=8, epochs=0)
        return runs[name]

    return get
