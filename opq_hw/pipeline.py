"""The pipeline as plain functions: pretrain -> compress (inspect, allocate, apply, finetune,
export) into a run directory (`opq_hw.run.load_run` reads one back)."""
from __future__ import annotations

import dataclasses
import io
import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .artifact import atomic_dir, config_hash, write_bytes, write_json, write_npy
from .errors import OpqError
from .spec import DEFAULTS, Allocation, LayerSpec
from .steps import Step, run_steps, timings


@dataclass(frozen=True)
class CompressConfig:
    """Everything that defines a run (hashed into the manifest; JSON round-trip)."""

    model: str = DEFAULTS.model  # built-in name, module:factory, or path/to/float_model.onnx
    weights: str | None = None  # float state_dict (weights_only); built-ins are pre-trained when absent
    data: str | None = None  # built-in name | file.npz | module:function | None (weights only; see opq_hw.data)
    target_cr: float | None = DEFAULTS.target_cr
    target_kind: str = DEFAULTS.target_kind  # cr_w | cr_idx
    method: str = DEFAULTS.method  # opq | uniform | global-magnitude | per-channel
    scale_mode: str = DEFAULTS.scale_mode  # pow2 (hardware, bit-exact fixed point) | float (paper-faithful)
    weighting: str | None = None  # layer weighting: relative (a_i = 1/sum w^2) | mean (1/N_i) | total (1); None: relative for opq, mean otherwise
    mask_order: str = DEFAULTS.mask_order  # OPQ masks: magnitude (raw |w|) | channel-normalised (|w|/max|w_c|, old)
    error_model: str = DEFAULTS.error_model  # OPQ error model: exact-gain-inner | exact-gain | exact (per-layer tables) | laplace (closed forms, old)
    sensitivity: str = DEFAULTS.sensitivity  # layer weighting from data: none (data-free) | calib | output-diag (opq_hw.sensitivity; need data)
    min_bits: int = DEFAULTS.min_bits
    max_bits: int = DEFAULTS.max_bits
    uniform_bits: int | None = None
    act_bits: int | None = DEFAULTS.act_bits
    epochs: int = DEFAULTS.epochs
    lr: float = DEFAULTS.lr
    lr_schedule: str = DEFAULTS.lr_schedule  # finetune learning rate over the steps: constant | cosine
    distill_weight: float = DEFAULTS.distill_weight  # finetune: distillation from the float model, 0..1 (0: off)
    distill_temperature: float = DEFAULTS.distill_temperature  # finetune: its softmax temperature
    seed: int = DEFAULTS.seed
    pretrain_epochs: int | None = None  # built-ins without --weights: pre-training epochs (None: the recipe's)
    input_shape: tuple[int, ...] | None = None  # per-sample shape when neither data nor a built-in gives it
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    board: str | None = None  # hardware-aware mode: fit this board ...
    arch: str | None = None  # ... with this architecture's cost model
    dequantize: bool = False  # an already-quantized ONNX graph: its quantized weights back to float (onnx_frontend.dequantize)

    def __post_init__(self):
        from .validate import check_config

        check_config(self.to_dict())  # every field in its stated range (opq_hw/validate.py)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        # absent while they hold the value of runs made before they existed: those runs' hashes stay as they were,
        # and `from_dict` reads an absent key as that value (whatever the default is now)
        for k, v in LEGACY.items():
            if d[k] == v:
                del d[k]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CompressConfig":
        d = dict(d)
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise OpqError(f"unknown config keys {sorted(unknown)}")
        d = {**LEGACY, **d}
        if d.get("input_shape") is not None:
            d["input_shape"] = tuple(d["input_shape"])
        return cls(**d)


# config fields added after runs existed, and the value those runs had (recorded only when different)
LEGACY: dict[str, Any] = {"dequantize": False, "lr_schedule": "constant", "distill_weight": 0.0,
                          "distill_temperature": 2.0, "sensitivity": "none"}


def cache_dir() -> Path:
    return Path(os.environ.get("OPQ_HW_CACHE", Path.home() / ".cache" / "opq-hw"))


def dataset_for(cfg_data: str | None, model_ref: str):
    """(x_train, y_train, x_test, y_test) shaped for the model, or None without data."""
    from .data import load_dataset
    from .models import BUILTIN

    if cfg_data is None:
        return None
    name = cfg_data
    if cfg_data == "digits" and model_ref in BUILTIN and BUILTIN[model_ref].data == "digits-flat":
        name = "digits-flat"
    return load_dataset(name)


def pretrained(model_ref: str, epochs: int | None = None, seed: int = 0) -> torch.nn.Module:
    """A built-in model trained on its data set, cached (state_dict) after the first call."""
    from .training import one_thread, train
    from .models import BUILTIN, build_model, load_state

    if model_ref not in BUILTIN:
        raise OpqError(f"no pre-training recipe for {model_ref!r}; pass --weights with a trained state_dict")
    recipe = BUILTIN[model_ref]
    data = recipe.data
    epochs = epochs or recipe.pretrain_epochs
    path = cache_dir() / "pretrained" / f"{model_ref}-seed{seed}-e{epochs}.pt"
    torch.manual_seed(seed)
    model = build_model(model_ref)
    if path.is_file():
        try:
            return load_state(model, path)
        except OpqError:
            pass  # a corrupt cache entry (empty, truncated) is rebuilt below
    xtr, ytr, _, _ = dataset_for(data if data != "digits-flat" else "digits", model_ref)
    with one_thread():  # bit-identical whatever the torch thread count
        train(model, xtr, ytr, epochs=epochs, lr=3e-3, batch_size=64, seed=seed, progress=False, desc="pretrain")
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    write_bytes(path, buf.getvalue())
    return model


def _float_model(cfg: CompressConfig) -> tuple[torch.nn.Module, dict[str, Any], bytes | None]:
    """(float model, front-end record, normalised ONNX bytes or None). ONNX files go through the
    ONNX front end; PyTorch models get their BatchNorms folded (opq_hw.bnfold)."""
    from .bnfold import fold_batchnorm
    from .models import BUILTIN, build_model, load_state

    if cfg.model.endswith(".onnx"):
        from .onnx_frontend import load_onnx

        fe = load_onnx(cfg.model, cfg.input_shape, dequantize_graph=cfg.dequantize)
        model = fe.torch_model()
        return (load_state(model, cfg.weights) if cfg.weights else model), fe.record, fe.to_bytes()
    if cfg.weights:
        model = load_state(build_model(cfg.model), cfg.weights)
    elif cfg.model in BUILTIN:
        model = pretrained(cfg.model, epochs=cfg.pretrain_epochs, seed=cfg.seed)
    else:
        model = build_model(cfg.model)
    folds, kept = fold_batchnorm(model)
    return model, ({"folded_bn": folds} if folds else {}) | ({"kept_bn": kept} if kept else {}), None


def example_input(cfg: CompressConfig, data, frontend: dict[str, Any] | None = None) -> torch.Tensor:
    """A zero input of the model's shape: the ONNX graph's, --input-shape, a built-in's, else the data's."""
    from .models import BUILTIN

    if frontend and frontend.get("input_shape"):
        return torch.zeros((1,) + tuple(frontend["input_shape"]))
    if cfg.input_shape:
        return torch.zeros((1,) + tuple(cfg.input_shape))
    if cfg.model in BUILTIN:
        return torch.zeros(BUILTIN[cfg.model].example_shape)
    if data is not None:
        return torch.zeros((1,) + tuple(data.x_test.shape[1:]))
    raise OpqError("cannot tell the model's input shape: give --data or --input-shape C,H,W")


def quantize_input(run, x: np.ndarray) -> np.ndarray:
    """Inputs snapped onto the input quantizer's grid (float32, same layout)."""
    return _quantize(run.qmodel, x)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("opq-hw", "torch", "brevitas", "qonnx", "onnx", "onnxruntime", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def _inputs(cfg: CompressConfig) -> dict[str, str | None]:
    """Hashes of the input files a config names (same config, changed file: a different run)."""
    from .rundir import sha256_file

    def h(p):
        return sha256_file(p) if p and Path(p).is_file() else None

    return {"weights": h(cfg.weights), "model_file": h(cfg.model) if cfg.model.endswith(".onnx") else None}


def _check_out(out: Path, chash: str, inputs: dict, overwrite: bool) -> tuple[str, dict | None]:
    """What to do with an existing --out: ("new" | "current" | "replace", the old manifest).

    "current": the directory already holds this exact run and every file verifies: it is kept as
    is, with what later commands wrote (build/, cost.json, reports/). --overwrite replaces only a
    verifiable opq-hw run with no files opq-hw did not write."""
    from .rundir import foreign_files, read_manifest, verify

    if not out.exists() and not out.is_symlink():
        return "new", None
    if out.is_symlink() or not out.is_dir():
        raise OpqError(f"output {out} exists and is not a directory; choose another --out")
    if not any(out.iterdir()):
        return "new", None
    try:
        man = read_manifest(out)
    except OpqError as e:
        if (out / "manifest.json").is_file() and overwrite:
            raise OpqError(f"--overwrite replaces only an opq-hw run whose files all verify, and {e}".rstrip(".")
                           + f"; remove {out} yourself if you no longer need it, or choose another --out") from None
        raise OpqError(f"output {out} is not empty and is not an opq-hw run; choose another --out") from None
    same = man.get("config_hash") == chash and man.get("inputs") == inputs
    if same and not overwrite:
        try:
            verify(out, manifest=man)
        except OpqError as e:
            raise OpqError(f"output {out} holds this configuration's run, but it does not verify: {e}. Pass --overwrite "
                           "to re-create it") from None
        return "current", man
    if not overwrite and man.get("config_hash") == chash:
        raise OpqError(f"output {out} holds a run of this configuration made from different input files (--weights or "
                       "the ONNX model changed); choose another --out, or pass --overwrite to replace it")
    if not overwrite:
        raise OpqError(f"output {out} already holds a different run (config hash {man.get('config_hash')}, this one {chash}); "
                       "choose another --out, or pass --overwrite to replace it")
    foreign = foreign_files(out, man)
    if foreign:
        shown = ", ".join(foreign[:20]) + (f" and {len(foreign) - 20} more" if len(foreign) > 20 else "")
        raise OpqError(f"--overwrite replaces only files opq-hw wrote, and {out} holds {len(foreign)} other or changed "
                       f"file(s): {shown}. Move them out (or remove {out} yourself), or choose another --out")
    return "replace", man


def _resume_checkpoint(out: Path, tag_want: str, log) -> bytes | None:
    """Stale temporary siblings of `out` (a killed run): a finetune checkpoint of this configuration
    is returned to resume from; an old run swapped out just before a crash is put back; the rest is removed."""
    from .artifact import TMP_MARKER, remove_tmp_dir, stale_tmp_dirs

    ckpt = None
    for s in stale_tmp_dirs(out):
        if not (s / TMP_MARKER).exists() and (s / "manifest.json").is_file() and not out.exists():
            os.replace(s, out)
            log(f"note: restored the previous run {out} from {s.name} (a swap was interrupted)")
            continue
        c = s / "finetune.ckpt"
        if c.is_file() and ckpt is None:
            data = c.read_bytes()
            try:
                meta = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
                tag, epoch = meta.get("tag"), int(meta.get("epoch", 0))
            except Exception:  # a torn or foreign file: start over
                tag, epoch = None, 0
            if tag == tag_want:
                ckpt = data
                log(f"note: resuming the finetune from epoch {epoch} of an interrupted run ({s.name})")
                remove_tmp_dir(s)
                continue
        why = "(its checkpoint is of another configuration)" if c.is_file() else "(nothing to resume)"
        remove_tmp_dir(s)
        log(f"note: removed {s.name}, left by an interrupted run {why}")
    return ckpt


def compress_run(cfg: CompressConfig, out: str | os.PathLike, *, overwrite: bool = False, progress: bool = True,
                 log=print) -> Path:
    """Run the pipeline for `cfg` and write the run directory `out` (atomically, under its lock)."""
    from .rundir import locked

    out = Path(out)
    if out.name in ("", ".", ".."):
        out = Path(os.path.abspath(out))  # `--out .`: the directory itself (swapped as a whole, like any run)
    with locked(out):
        return _compress_locked(cfg, out, overwrite, progress, log)


def _step_load(c) -> None:
    torch.manual_seed(c.cfg.seed)
    c.model, c.frontend, c.onnx_bytes = _float_model(c.cfg)
    c.model.eval()


def _step_inspect(c) -> None:
    from .data import fit_to_model
    from .layers import inspect_model, layer_weights
    from .training import accuracy

    data = c.data
    c.example = example_input(c.cfg, data, c.frontend)
    c.specs = inspect_model(c.model, c.example)  # also checks that the model runs on the example
    if data is not None:
        with torch.no_grad():
            n_out = int(c.model(c.example).reshape(1, -1).shape[1])
        # a user's arrays are in the layout of the user's model input (channels-last for a tf2onnx
        # graph); built-in sets are in PyTorch layout. Later commands read the layout from the run.
        layout = None if data.builtin else (c.frontend or {}).get("input_layout")
        c.data = data = fit_to_model(data, tuple(c.example.shape[1:]), n_out=n_out, layout=layout)
    c.weights = layer_weights(c.model, c.specs)
    if data is not None:
        c.metrics["acc_float"] = accuracy(c.model, data.x_test, data.y_test)


def _step_allocate(c) -> None:
    from .allocation import allocate

    cfg = c.cfg
    sens = layer_sensitivity(c.model, c.specs, cfg, c.data)
    if cfg.board:
        from .hwaware import fit_allocation  # hardware-aware mode (cost model)

        c.alloc, fit_info = fit_allocation(c.specs, c.weights, cfg.board, cfg.arch or "hls4ml-latency", method=cfg.method,
                                           scale_mode=cfg.scale_mode, weighting=cfg.weighting, min_bits=cfg.min_bits,
                                           max_bits=cfg.max_bits, overrides=cfg.overrides,
                                           act_bits=cfg.act_bits, mask_order=cfg.mask_order, error_model=cfg.error_model,
                                           sensitivity=sens)
        c.metrics["fit"] = fit_info
    else:
        c.alloc = allocate(c.specs, c.weights, target_cr=cfg.target_cr, target_kind=cfg.target_kind, method=cfg.method,
                           scale_mode=cfg.scale_mode, weighting=cfg.weighting, min_bits=cfg.min_bits,
                           max_bits=cfg.max_bits, uniform_bits=cfg.uniform_bits, overrides=cfg.overrides,
                           mask_order=cfg.mask_order, error_model=cfg.error_model, sensitivity=sens)


def layer_sensitivity(model, specs: list[LayerSpec], cfg: CompressConfig, data) -> dict[str, Any] | None:
    """`--sensitivity calib` / `output-diag`: the per-layer sensitivity record (opq_hw.sensitivity) measured
    on the run's calibration samples (training split, never the test split); None for the data-free
    default (both need data: `validate.check_config`)."""
    if cfg.sensitivity == "none":
        return None
    from .allocation import resolve_overrides
    from .sensitivity import measure, measure_inputs

    opts = resolve_overrides([s.name for s in specs], cfg.overrides)
    how = measure_inputs if cfg.sensitivity == "output-diag" else measure
    return how(model, [s.name for s in specs if not opts[s.name].skip], calibration_samples(data.x_train))


def _step_apply(c) -> None:
    from .carrier import ActConfig, apply
    from .onnx_frontend import record_notes

    cfg, data = c.cfg, c.data
    calib = torch.as_tensor(calibration_samples(data.x_train)) if data is not None else None
    c.qmodel = apply(c.model, c.specs, c.alloc, ActConfig(bits=cfg.act_bits, scale_mode=cfg.scale_mode), calib=calib,
                     example=c.example)
    c.calibration, c.example_output = calibration_record(c.qmodel, c.example, calib, data)
    c.bn_affine = bn_affine_record(c.qmodel, c.frontend)
    c.notes = record_notes(c.frontend) + list(c.alloc.notes)
    if data is None and cfg.act_bits:
        c.notes.append(f"activations were NOT calibrated (no --data): {c.calibration['method']}; "
                       "`build` and `simulate` need a run compressed with --data")


def _step_finetune(c) -> None:
    """In the run's temporary directory (entered here, swapped in after the last step): the finetune
    checkpoint lives there, so a killed compress resumes its finetune (`_resume_checkpoint`)."""
    from .training import accuracy, finetune

    c.tmp = tmp = c.stack.enter_context(atomic_dir(c.out))
    cfg, data, metrics = c.cfg, c.data, c.metrics
    if data is not None:
        metrics["acc_oneshot"] = accuracy(c.qmodel, data.x_test, data.y_test)
        if cfg.epochs > 0:
            if c.ckpt is not None:
                write_bytes(tmp / "finetune.ckpt", c.ckpt)
            metrics["finetune_loss"] = finetune(c.qmodel, (data.x_train, data.y_train), epochs=cfg.epochs, lr=cfg.lr,
                                                seed=cfg.seed, checkpoint=tmp / "finetune.ckpt", progress=c.progress,
                                                tag=c.tag, lr_schedule=cfg.lr_schedule, teacher=c.model,
                                                distill_weight=cfg.distill_weight,
                                                distill_temperature=cfg.distill_temperature)
            (tmp / "finetune.ckpt").unlink()
        metrics["acc_finetuned"] = accuracy(c.qmodel, data.x_test, data.y_test)
    else:
        c.notes.append("no data: finetuning and accuracy were skipped (pass --data: a built-in name, "
                       "a .npz file or package.module:function)")


def _step_export(c) -> None:
    from .export import export_qonnx

    specs, alloc = c.specs, c.alloc
    c.metrics.update(cr_w=alloc.cr_w, cr_idx=alloc.cr_idx, target=alloc.target, target_kind=alloc.target_kind,
                     n_weights=sum(s.n_weights for s in specs), n_nonzero=sum(la.n_nonzero for la in alloc.layers))
    export_qonnx(c.qmodel, c.example, c.tmp / "model.qonnx.onnx")


def _step_golden(c) -> None:
    from .data import golden_split

    tmp, data = c.tmp, c.data
    known = None
    if data is not None:
        golden_x, golden_y_labels, c.golden = golden_split(data)
        write_npy(tmp / "golden_labels.npy", golden_y_labels)
    else:
        golden_x, c.golden = c.example.numpy(), {"test_samples": 0, "train_samples": 0,
                                                 "rule": "no data: one all-zero example input"}
    xq = _quantize(c.qmodel, golden_x)
    if data is None and np.array_equal(xq, golden_x):  # the input of calibration_record's pass (nothing trained since)
        known = c.example_output
    golden_y = golden_outputs(c.qmodel, xq, "the compressed model computes NaN or Inf on the golden inputs (weights or "
                              "biases too large for its fixed-point scales?); check the checkpoint", y=known)
    write_npy(tmp / "golden_input.npy", xq)
    write_npy(tmp / "golden_output.npy", golden_y)


def golden_outputs(qmodel, xq: np.ndarray, nonfinite: str, y: torch.Tensor | None = None) -> np.ndarray:
    """The model's float32 logits for the golden inputs (`y`: the model's output on them, already computed);
    NaN or Inf raises OpqError(`nonfinite`)."""
    if y is None:
        with torch.no_grad():
            y = qmodel(torch.as_tensor(xq))
    y = y.numpy().astype(np.float32)
    if not np.isfinite(y).all():
        raise OpqError(nonfinite)
    return y


def write_weights(tmp: Path, qmodel) -> None:
    """`weights.pt`: the Brevitas model's state dict (loaded back with weights_only=True)."""
    buf = io.BytesIO()
    torch.save(qmodel.state_dict(), buf)
    write_bytes(tmp / "weights.pt", buf.getvalue())


def _step_write(c) -> None:
    """The weights and records; what later commands wrote is kept when --overwrite reproduced the artifacts."""
    from .rundir import CORE, LATER, hash_tree

    tmp, out, old = c.tmp, c.out, c.old
    write_weights(tmp, c.qmodel)
    if c.onnx_bytes is not None:  # the normalised graph, self-contained (external data inlined)
        write_bytes(tmp / "float_model.onnx", c.onnx_bytes)
    write_json(tmp / "allocation.json", c.alloc.to_dict())
    write_json(tmp / "specs.json", [s.to_dict() for s in c.specs])
    write_json(tmp / "metrics.json", c.metrics)
    c.arts = arts = {n: h for n, h in hash_tree(tmp, tmp).items() if n in CORE}
    if old is not None and all(old["artifacts"].get(n) == arts.get(n) for n in ("allocation.json", "weights.pt",
                                                                                  "model.qonnx.onnx", "specs.json")):
        # --overwrite that reproduced the same artifacts: what later commands wrote is still valid
        for name, h in old["artifacts"].items():
            if name.startswith(LATER) and (out / name).is_file():
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(out / name, tmp / name)
                arts[name] = h
                c.kept.append(name)


# compress as data: every step timed by opq_hw.steps.run_steps into the manifest ("steps", "timings_s").
# No step resume here (the models live in memory); the finetune resumes from its checkpoint instead.
COMPRESS_STEPS = [Step("load", _step_load), Step("inspect", _step_inspect), Step("allocate", _step_allocate),
                  Step("apply", _step_apply), Step("finetune", _step_finetune), Step("export", _step_export),
                  Step("golden", _step_golden), Step("write", _step_write)]


def _compress_locked(cfg: CompressConfig, out: Path, overwrite: bool, progress: bool, log) -> Path:
    import contextlib
    from types import SimpleNamespace

    from .data import load_data
    from .rundir import MANIFEST, SCHEMA

    data = load_data(cfg.data, seed=0) if cfg.data else None
    # a user's data file enters the hash by content: the same path with other data is another run
    chash = config_hash(cfg.to_dict() if data is None or data.builtin else {**cfg.to_dict(), "data_sha256": data.sha256})
    inputs = _inputs(cfg)
    tag = config_hash({"config_hash": chash, "inputs": inputs})  # what a resumable checkpoint must carry
    ckpt = _resume_checkpoint(out, tag, log)
    action, old = _check_out(out, chash, inputs, overwrite)
    if action == "current":
        log(f"{out} already holds this run (config hash {chash}) and every file verifies: kept as is, with its "
            "build/, cost.json and reports/ (pass --overwrite to compute it again)")
        return out
    c = SimpleNamespace(cfg=cfg, out=out, data=data, tag=tag, ckpt=ckpt, old=old, progress=progress, metrics={},
                        kept=[], state={})
    with contextlib.ExitStack() as c.stack:  # the finetune step enters the run's atomic directory
        records = run_steps(COMPRESS_STEPS, c)
        steps = {"compress": records}
        old_steps = (old or {}).get("steps")
        if c.kept and isinstance(old_steps, dict):  # the kept builds' step records stay with them
            steps.update({k: v for k, v in old_steps.items() if k.startswith("build/")
                          and any(n.startswith(k + "/") for n in c.kept)})
        write_json(c.tmp / MANIFEST, {"tool": "opq-hw", "schema": SCHEMA, "config": cfg.to_dict(), "config_hash": chash,
                                      "inputs": inputs, "artifacts": dict(sorted(c.arts.items())),
                                      "versions": _versions(), "timings_s": timings(records), "steps": steps,
                                      "notes": c.notes, "data": c.data.record() if c.data is not None else None,
                                      "calibration": c.calibration, "golden": c.golden, "frontend": c.frontend,
                                      "bn_affine": c.bn_affine,
                                      "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    log(summary_table(c.specs, c.alloc, c.metrics))
    for n in c.notes:
        log(f"note: {n}")
    if old is not None:
        log(f"note: replaced the previous run in {out}; " + (f"kept {len(c.kept)} file(s) of later commands (build/, cost.json, "
            "reports/), still valid: the new artifacts are identical" if c.kept else
            "what later commands wrote there (build/, cost.json, reports/) was made from other artifacts and is gone"))
    return out


CALIB_SAMPLES = 512  # activation calibration: this many training samples, drawn with seed 0


def calibration_samples(x_train: np.ndarray) -> np.ndarray:
    """CALIB_SAMPLES training samples drawn without replacement (seed 0, kept in data order), so a
    training split sorted by class still calibrates on every class."""
    if len(x_train) <= CALIB_SAMPLES:
        return x_train
    return x_train[np.sort(np.random.default_rng(0).choice(len(x_train), CALIB_SAMPLES, replace=False))]
DEFAULT_ACT_RANGE = ("every activation quantizer keeps Brevitas's initial range, |x| <= 1 (a power-of-two scale of "
                     "2^-(bits-1) signed, 2^-bits unsigned; recorded per quantizer in the manifest's calibration)")


def bn_affine_record(qmodel, frontend: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The BatchNorms kept as quantized channel affines (`carrier_graph.ChannelAffine`): why each could not be
    folded (the front end's `kept_bn`), how its a and b were quantized, and the quantization error."""
    from .carrier_graph import affines

    def key(name: str) -> str:  # onnx2torch names a node's module by the node name without '/' in front, '.' -> '/'
        return name.lstrip("/").replace(".", "/")

    why = {key(k["bn"]): k["why"] for k in (frontend or {}).get("kept_bn", [])}
    return [{**m.record(), "why": why.get(key(m.opq_affine), "not right after a Conv/Linear layer")} for m in affines(qmodel)]


def calibration_record(qmodel, example: torch.Tensor, calib, data) -> tuple[dict[str, Any], torch.Tensor]:
    """How the activation quantizers were set, and the range each ended with (read off the model's
    pass on `example`); and the model's output of that pass."""
    from .carrier_graph import forward_with_hooks

    if calib is not None:
        rec: dict[str, Any] = {"method": "Brevitas runtime statistics (per-tensor percentile of |x|) over "
                                         f"{len(calib)} training samples of {data.name} (drawn with seed 0)", "samples": int(len(calib))}
    else:
        rec = {"method": DEFAULT_ACT_RANGE, "samples": 0}
    ranges: dict[str, list[float]] = {}
    hooks = []
    for name, m in qmodel.named_modules():
        if type(m).__name__ in ("QuantIdentity", "QuantReLU"):
            hooks.append(m.register_forward_hook(lambda _m, _i, o, name=name: ranges.__setitem__(name, o)))
    y = forward_with_hooks(qmodel, example, hooks)
    out = {}
    for name, o in ranges.items():
        scale, bits, signed = getattr(o, "scale", None), getattr(o, "bit_width", None), getattr(o, "signed", None)
        if scale is None or bits is None:
            continue
        s, b = float(scale.reshape(-1)[0]), int(bits)
        lo = -s * 2 ** (b - 1) if signed else 0.0
        hi = s * (2 ** (b - 1) - 1 if signed else 2 ** b - 1)
        out[name or "input"] = {"scale": s, "bits": b, "range": [lo, hi]}
    if not out:
        rec = {"method": "float activations (--act-bits 0): nothing to calibrate", "samples": 0}
    rec["activations"] = out
    return rec, y


def _quantize(qmodel, x) -> np.ndarray:
    with torch.no_grad():
        y = qmodel.input_quant(torch.as_tensor(x, dtype=torch.float32))
    return (y.value if hasattr(y, "value") else y).numpy().astype(np.float32)


def summary_table(specs: list[LayerSpec], alloc: Allocation, metrics: dict[str, Any]) -> str:
    lines = [f"{'layer':<16}{'kind':<8}{'weights':>9}{'nonzero':>9}{'sparsity':>10}{'bits':>6}{'CR_w':>8}"]
    for s, la in zip(specs, alloc.layers):
        cr = 32 * la.n_weights / max(1, la.n_nonzero * la.bits + la.side_bits) if not la.skipped else 1.0
        lines.append(f"{s.name:<16}{s.kind:<8}{la.n_weights:>9}{la.n_nonzero:>9}{la.sparsity:>10.3f}{la.bits:>6}{cr:>8.2f}")
    lines.append(f"{alloc.method} ({alloc.scale_mode} scales, weighting {alloc.weighting}): "
                 f"CR_w {alloc.cr_w:.2f}x, CR_idx {alloc.cr_idx:.2f}x (target {alloc.target} on {alloc.target_kind})")
    if "acc_float" in metrics:
        acc = ", ".join(f"{k[4:]} {metrics[k] * 100:.2f}%" for k in ("acc_float", "acc_oneshot", "acc_finetuned") if k in metrics)
        lines.append(f"accuracy: {acc}")
    return "\n".join(lines)
