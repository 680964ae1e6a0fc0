"""A run read back: the Brevitas model and its records (`Run`, `load_run`), the weights checked
against the allocation, and which model code a run may build (`model_source`, `model_ref`: no code
that a run directory names is imported unless the user names it again).

`opq_hw.rundir` owns the directory's files (manifest, hashes, lock, builds); this module sits above
it and the core (carrier, models, data), so that neither of those imports upward.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from .errors import OpqError
from .rundir import open_run, verify

if TYPE_CHECKING:
    import numpy as np

    from .spec import Allocation, LayerSpec


# ------------------------------------------------------------------------------------------------
# no code from data
# ------------------------------------------------------------------------------------------------
_model_source: contextvars.ContextVar[tuple[str | None, bool]] = contextvars.ContextVar("opq_model_source",
                                                                                         default=(None, False))


@contextlib.contextmanager
def model_source(model: str | None = None, trust_run: bool = False) -> Iterator[None]:
    """Within: `load_run` builds a `module:factory` run's model from `model` (the user named it
    again), or from the run's record when `trust_run`."""
    tok = _model_source.set((model, bool(trust_run)))
    try:
        yield
    finally:
        _model_source.reset(tok)


def model_ref(run: Path, recorded: str, model: str | None = None, trust_run: bool | None = None) -> str:
    """Which model reference `load_run` may build for a run. Built-in names come from the
    registry; a float ONNX run uses its own copy; anything else must be given again by the user."""
    from .models import BUILTIN

    ctx_model, ctx_trust = _model_source.get()
    model = model or ctx_model
    trust_run = ctx_trust if trust_run is None else trust_run
    if recorded in BUILTIN:
        return recorded
    if recorded.endswith(".onnx"):
        return str(run / "float_model.onnx")
    if model:
        return model
    if trust_run:
        return recorded
    raise OpqError(f"run {run} was made from the model factory {recorded!r}; opq-hw does not import code that a run "
                   f"directory names. If you trust that module, give it again: --model {recorded} (or pass "
                   "--trust-run to use the run's record)")


# ------------------------------------------------------------------------------------------------
# weights against the allocation
# ------------------------------------------------------------------------------------------------
def check_weights(run: Path, qmodel, alloc) -> None:
    """The loaded weights must be the allocation's: mask digest, survivors, bit widths and scales."""
    import torch

    from .carrier import carried_layers
    from .quant import mask_digest, qmax

    layers = carried_layers(qmodel)
    for la in alloc.layers:
        if la.skipped:
            continue
        if la.name not in layers:
            raise OpqError(f"{run}: allocation.json names layer {la.name!r}, which the model does not carry; "
                           "re-create the run with `opq-hw compress`")
        fm = layers[la.name].parametrizations.weight[0]
        mask = fm.mask.detach()
        problems = []
        if mask_digest(mask) != la.mask_digest:
            problems.append("mask digest")
        if int(mask.sum()) != la.n_nonzero:
            problems.append(f"n_nonzero ({la.n_nonzero} recorded, {int(mask.sum())} in the weights)")
        bits = la.channel_bits or (la.bits,) * mask.shape[0]
        want_k = torch.tensor([float(qmax(b)) for b in bits])
        if not torch.equal(fm.kmax.detach().reshape(-1), want_k):
            problems.append("bits")
        want_s = torch.tensor(la.scales, dtype=torch.float32)
        got_s = fm.lsb.detach().reshape(-1)
        if got_s.shape != want_s.shape or not torch.allclose(got_s, want_s, rtol=1e-6, atol=0):
            problems.append("scales")
        if problems:
            raise OpqError(f"{run}: weights.pt does not match allocation.json for layer {la.name!r} "
                           f"({', '.join(problems)}); the two files come from different runs or one was edited: "
                           "re-create the run with `opq-hw compress`")


# ------------------------------------------------------------------------------------------------
# a run read back
# ------------------------------------------------------------------------------------------------
@dataclass
class Run:
    """A run directory read back: the Brevitas model and its records."""

    path: Path
    qmodel: Any  # torch.nn.Module (the Brevitas model)
    allocation: Allocation
    specs: list[LayerSpec]
    config: dict[str, Any]
    manifest: dict[str, Any]

    def int_weights(self, name: str) -> np.ndarray:
        import numpy as np

        from .carrier import carried_layers, int_weights

        return int_weights(carried_layers(self.qmodel)[name]).numpy().astype(np.int64)

    def test_data(self) -> tuple[np.ndarray, np.ndarray]:
        """The run's test inputs (model layout) and labels: a built-in data set is loaded again; a
        user's data (file or module, never imported from here) comes from the golden arrays."""
        import numpy as np

        from .data import fit_inputs, load_data, require_run_data

        rec = require_run_data(self.path, "simulate")
        if rec.get("kind") == "builtin":
            d = load_data(rec["name"])
            return fit_inputs(d.x_test, tuple(self.specs[0].in_shape)), d.y_test
        labels = self.path / "golden_labels.npy"
        if not labels.is_file():
            raise OpqError(f"run {self.path.name!r} has no golden_labels.npy; pass --data again "
                           f"({rec.get('name')}), or compress the run again")
        return (np.load(self.path / "golden_input.npy", allow_pickle=False),
                np.load(labels, allow_pickle=False))



def load_run(run_dir: str | os.PathLike, *, model: str | None = None, trust_run: bool | None = None) -> Run:
    """Read a run directory back into a Brevitas model (weights_only state_dict) and its records.

    Every artifact is checked against the manifest's SHA-256, and the weights against the
    allocation (masks, survivors, bits, scales). No code named by the run is imported: built-in
    models come from the registry, a float ONNX run uses its own copy, and a `module:factory`
    model must be given again (`model`, or `run.model_source`), or `trust_run` given."""
    import torch

    from .carrier import ActConfig, build_carrier
    from .models import build_model, check_state_dict, read_state_dict
    from .pipeline import CompressConfig  # the config record (validated)
    from .spec import read_records
    from .validate import read_npy

    path = Path(run_dir)
    manifest = open_run(path)
    verify(path, ["weights.pt"] + (["float_model.onnx"] if str(manifest.get("config", {}).get("model", "")).endswith(".onnx")
                                   else []), manifest=manifest)  # recorded, present and unchanged
    cfg = CompressConfig.from_dict(manifest["config"])
    specs, alloc = read_records(path)
    fmodel = build_model(model_ref(path, cfg.model, model, trust_run))
    if not cfg.model.endswith(".onnx"):
        from .bnfold import fold_batchnorm

        fold_batchnorm(fmodel)  # the same structure as at compress time (weights come from weights.pt)
    golden = path / "golden_input.npy"
    example = torch.as_tensor(read_npy(golden)[:1]) if golden.is_file() else None
    try:
        qmodel = build_carrier(fmodel, specs, alloc, ActConfig(bits=cfg.act_bits, scale_mode=cfg.scale_mode),
                               example=example)
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        shape = "" if example is None else f" and golden_input.npy (samples of shape {tuple(example.shape[1:])})"
        raise OpqError(f"{path}: allocation.json, specs.json{shape} do not describe the run's model ({type(e).__name__}: "
                       f"{str(e).splitlines()[0][:200] if str(e) else ''}); re-create the run with `opq-hw compress`") from None
    try:
        state = read_state_dict(path / "weights.pt", "run weights")
        check_state_dict(qmodel, state, str(path / "weights.pt"), keys=False)
        qmodel.load_state_dict(state)
    except OpqError as e:
        raise OpqError(f"{e} (re-create the run)") from None
    except Exception as e:
        raise OpqError(f"{path / 'weights.pt'} cannot be loaded into the run's model ({type(e).__name__}: "
                       f"{str(e).splitlines()[0][:200]}); re-create the run") from e
    qmodel.eval()
    check_weights(path, qmodel, alloc)
    return Run(path=path, qmodel=qmodel, allocation=alloc, specs=specs, config=cfg.to_dict(), manifest=manifest)
