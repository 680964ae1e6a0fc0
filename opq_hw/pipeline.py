"""The pipeline as plain functions: pretrain -> compress (inspect, allocate, apply, finetune,
export) into a run directory, and `load_run` to read one back."""
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

from .artifact import atomic_dir, config_hash, read_json, write_bytes, write_json, write_npy
from .errors import OpqError
from .spec import Allocation, LayerSpec


@dataclass(frozen=True)
class CompressConfig:
    """Everything that defines a run (hashed into the manifest; JSON round-trip)."""

    model: str = "digits-cnn"  # built-in name, module:factory, or path/to/float_model.onnx
    weights: str | None = None  # float state_dict (weights_only); built-ins are pre-trained when absent
    data: str | None = None  # digits | mnist1d | None (no finetuning, no accuracy)
    target_cr: float | None = 20.0
    target_kind: str = "cr_w"  # cr_w | cr_idx
    method: str = "opq"  # opq | uniform | global-magnitude | per-channel
    scale_mode: str = "pow2"  # pow2 (hardware, bit-exact fixed point) | float (paper-faithful)
    weighting: str | None = None  # layer weighting: relative (a_i = 1/sum w^2) | mean (1/N_i) | total (1); None: relative for opq, mean otherwise
    mask_order: str = "magnitude"  # OPQ masks: magnitude (raw |w|) | channel-normalised (|w|/max|w_c|, old)
    error_model: str = "exact-gain"  # OPQ error model: exact-gain | exact (per-layer tables) | laplace (closed forms, old)
    min_bits: int = 2
    max_bits: int = 8
    uniform_bits: int | None = None
    act_bits: int | None = 8
    epochs: int = 5
    lr: float = 1e-3
    seed: int = 0
    pretrain_epochs: int | None = None  # built-ins without --weights: pre-training epochs (None: the recipe's)
    input_shape: tuple[int, ...] | None = None  # per-sample shape when neither data nor a built-in gives it
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    board: str | None = None  # hardware-aware mode: fit this board ...
    arch: str | None = None  # ... with this architecture's cost model

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CompressConfig":
        d = dict(d)
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise OpqError(f"unknown config keys {sorted(unknown)}")
        if d.get("input_shape") is not None:
            d["input_shape"] = tuple(d["input_shape"])
        return cls(**d)


def cache_dir() -> Path:
    return Path(os.environ.get("OPQ_HW_CACHE", Path.home() / ".cache" / "opq-hw"))


def dataset_for(cfg_data: str | None, model_ref: str):
    """(x_train, y_train, x_test, y_test) shaped for the model, or None without data."""
    from .data import load_dataset
    from .models import BUILTIN

    if cfg_data is None:
        return None
    name = cfg_data
    if cfg_data == "digits" and model_ref in BUILTIN and BUILTIN[model_ref][1] == "digits-flat":
        name = "digits-flat"
    return load_dataset(name)


def pretrained(model_ref: str, epochs: int | None = None, seed: int = 0) -> torch.nn.Module:
    """A built-in model trained on its data set, cached (state_dict) after the first call."""
    from .training import train
    from .models import BUILTIN, build_model, load_state

    if model_ref not in BUILTIN:
        raise OpqError(f"no pre-training recipe for {model_ref!r}; pass --weights with a trained state_dict")
    _, data, _ = BUILTIN[model_ref]
    epochs = epochs or (60 if data == "mnist1d" else 40)
    path = cache_dir() / "pretrained" / f"{model_ref}-seed{seed}-e{epochs}.pt"
    torch.manual_seed(seed)
    model = build_model(model_ref)
    if path.is_file():
        return load_state(model, path)
    xtr, ytr, _, _ = dataset_for(data if data != "digits-flat" else "digits", model_ref)
    train(model, xtr, ytr, epochs=epochs, lr=3e-3, batch_size=64, seed=seed, progress=False, desc="pretrain")
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    write_bytes(path, buf.getvalue())
    return model


def _float_model(cfg: CompressConfig) -> torch.nn.Module:
    from .models import BUILTIN, build_model, load_state

    if cfg.weights:
        return load_state(build_model(cfg.model), cfg.weights)
    if cfg.model in BUILTIN:
        return pretrained(cfg.model, epochs=cfg.pretrain_epochs, seed=cfg.seed)
    return build_model(cfg.model)


def _example_input(cfg: CompressConfig, data) -> torch.Tensor:
    from .models import BUILTIN

    if data is not None:
        return torch.as_tensor(data[2][:1])
    if cfg.input_shape:
        return torch.zeros((1,) + tuple(cfg.input_shape))
    if cfg.model in BUILTIN:
        return torch.zeros(BUILTIN[cfg.model][2])
    if cfg.model.endswith(".onnx"):
        import onnx

        dims = onnx.load(cfg.model).graph.input[0].type.tensor_type.shape.dim
        shape = [d.dim_value or 1 for d in dims]
        return torch.zeros(shape)
    raise OpqError("cannot tell the model's input shape: give --data or --input-shape C,H,W")


@dataclass
class Run:
    """A run directory read back: the Brevitas model and its records."""

    path: Path
    qmodel: torch.nn.Module
    allocation: Allocation
    specs: list[LayerSpec]
    config: dict[str, Any]
    manifest: dict[str, Any]

    def int_weights(self, name: str) -> np.ndarray:
        from .carrier import carried_layers, int_weights

        return int_weights(carried_layers(self.qmodel)[name]).numpy().astype(np.int64)

    def test_data(self) -> tuple[np.ndarray, np.ndarray]:
        data = dataset_for(self.config["data"] or _builtin_data(self.config["model"]), self.config["model"])
        if data is None:
            raise OpqError(f"run {self.path} has no data set; pass --data")
        return data[2], data[3]


def _builtin_data(model_ref: str) -> str | None:
    from .models import BUILTIN

    if model_ref in BUILTIN:
        return "digits" if BUILTIN[model_ref][1].startswith("digits") else BUILTIN[model_ref][1]
    return None


def quantize_input(run: Run, x: np.ndarray) -> np.ndarray:
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


def _check_out(out: Path, chash: str, overwrite: bool) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise OpqError(f"output {out} exists and is not a directory; choose another --out")
    man = out / "manifest.json"
    if man.is_file():
        old = read_json(man).get("config_hash")
        if old == chash or overwrite:
            return
        raise OpqError(f"output {out} already holds a different run (config hash {old}, this one {chash}); "
                       "choose another --out, or pass --overwrite to replace it")
    if any(out.iterdir()):
        raise OpqError(f"output {out} is not empty and is not an opq-hw run; choose another --out")


def compress_run(cfg: CompressConfig, out: str | os.PathLike, *, overwrite: bool = False, progress: bool = True,
                 log=print) -> Path:
    """Run the pipeline for `cfg` and write the run directory `out` (atomically)."""
    from .allocation import allocate
    from .carrier import ActConfig, apply
    from .export import export_qonnx
    from .training import accuracy, finetune
    from .layers import inspect_model, layer_weights

    out = Path(out)
    chash = config_hash(cfg.to_dict())
    _check_out(out, chash, overwrite)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    def tick(step):
        nonlocal t0
        timings[step] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()

    torch.manual_seed(cfg.seed)
    data = dataset_for(cfg.data, cfg.model)
    model = _float_model(cfg)
    model.eval()
    tick("load")
    example = _example_input(cfg, data)
    if data is not None:
        data = tuple(_fit_layout(a, example) if i % 2 == 0 else a for i, a in enumerate(data))
    specs = inspect_model(model, example)
    weights = layer_weights(model, specs)
    metrics: dict[str, Any] = {}
    if data is not None:
        metrics["acc_float"] = accuracy(model, data[2], data[3])
    tick("inspect")
    if cfg.board:
        from .hwaware import fit_allocation  # hardware-aware mode (cost model)

        alloc, fit_info = fit_allocation(specs, weights, cfg.board, cfg.arch or "hls4ml-latency", method=cfg.method,
                                         scale_mode=cfg.scale_mode, weighting=cfg.weighting, min_bits=cfg.min_bits,
                                         max_bits=cfg.max_bits, overrides=cfg.overrides,
                                         act_bits=cfg.act_bits)
        metrics["fit"] = fit_info
    else:
        alloc = allocate(specs, weights, target_cr=cfg.target_cr, target_kind=cfg.target_kind, method=cfg.method,
                         scale_mode=cfg.scale_mode, weighting=cfg.weighting, min_bits=cfg.min_bits,
                         max_bits=cfg.max_bits, uniform_bits=cfg.uniform_bits, overrides=cfg.overrides,
                         mask_order=cfg.mask_order, error_model=cfg.error_model)
    tick("allocate")
    calib = torch.as_tensor(data[0][:512]) if data is not None else example.repeat(8, *([1] * (example.dim() - 1))) + torch.randn(8, *example.shape[1:])
    qmodel = apply(model, specs, alloc, ActConfig(bits=cfg.act_bits, scale_mode=cfg.scale_mode), calib=calib)
    tick("apply")
    notes = list(alloc.notes)
    with atomic_dir(out) as tmp:
        if data is not None:
            metrics["acc_oneshot"] = accuracy(qmodel, data[2], data[3])
            if cfg.epochs > 0:
                metrics["finetune_loss"] = finetune(qmodel, (data[0], data[1]), epochs=cfg.epochs, lr=cfg.lr, seed=cfg.seed,
                                                    checkpoint=tmp / "finetune.ckpt", progress=progress)
                (tmp / "finetune.ckpt").unlink()
            metrics["acc_finetuned"] = accuracy(qmodel, data[2], data[3])
        else:
            notes.append("no data: finetuning and accuracy were skipped (pass --data digits|mnist1d)")
        tick("finetune")
        metrics.update(cr_w=alloc.cr_w, cr_idx=alloc.cr_idx, target=alloc.target, target_kind=alloc.target_kind,
                       n_weights=sum(s.n_weights for s in specs), n_nonzero=sum(la.n_nonzero for la in alloc.layers))
        export_qonnx(qmodel, example, tmp / "model.qonnx.onnx")
        tick("export")
        golden_x = data[2] if data is not None else example.numpy()
        xq = _quantize(qmodel, golden_x)
        with torch.no_grad():
            golden_y = qmodel(torch.as_tensor(xq)).numpy().astype(np.float32)
        write_npy(tmp / "golden_input.npy", xq)
        write_npy(tmp / "golden_output.npy", golden_y)
        buf = io.BytesIO()
        torch.save(qmodel.state_dict(), buf)
        write_bytes(tmp / "weights.pt", buf.getvalue())
        if cfg.model.endswith(".onnx"):
            shutil.copyfile(cfg.model, tmp / "float_model.onnx")
        write_json(tmp / "allocation.json", alloc.to_dict())
        write_json(tmp / "specs.json", [s.to_dict() for s in specs])
        write_json(tmp / "metrics.json", metrics)
        write_json(tmp / "manifest.json", {"tool": "opq-hw", "config": cfg.to_dict(), "config_hash": chash,
                                           "versions": _versions(), "timings_s": timings, "notes": notes,
                                           "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    log(summary_table(specs, alloc, metrics))
    for n in notes:
        log(f"note: {n}")
    return out


def _fit_layout(x: np.ndarray, example: torch.Tensor) -> np.ndarray:
    shape = tuple(example.shape[1:])
    if x.shape[1:] == shape:
        return x
    if int(np.prod(x.shape[1:])) == int(np.prod(shape)):
        return x.reshape((len(x),) + shape)
    raise OpqError(f"data samples of shape {x.shape[1:]} do not fit the model input {shape}; pick the matching --data")


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


def load_run(run_dir: str | os.PathLike) -> Run:
    """Read a run directory back into a Brevitas model (weights_only state_dict) and its records."""
    from .carrier import ActConfig, build_carrier
    from .models import build_model

    path = Path(run_dir)
    man_path = path / "manifest.json"
    if not man_path.is_file():
        raise OpqError(f"{path} is not an opq-hw run (no manifest.json); create one with `opq-hw compress` or `opq-hw demo`")
    manifest = read_json(man_path)
    cfg = CompressConfig.from_dict(manifest["config"])
    alloc = Allocation.from_dict(read_json(path / "allocation.json"))
    specs = [LayerSpec.from_dict(d) for d in read_json(path / "specs.json")]
    model = build_model(str(path / "float_model.onnx") if cfg.model.endswith(".onnx") else cfg.model)
    qmodel = build_carrier(model, specs, alloc, ActConfig(bits=cfg.act_bits, scale_mode=cfg.scale_mode))
    try:
        state = torch.load(path / "weights.pt", map_location="cpu", weights_only=True)
        qmodel.load_state_dict(state)
    except Exception as e:
        raise OpqError(f"{path / 'weights.pt'} cannot be loaded into the run's model ({type(e).__name__}: "
                       f"{str(e).splitlines()[0][:200]}); re-create the run") from e
    qmodel.eval()
    return Run(path=path, qmodel=qmodel, allocation=alloc, specs=specs, config=cfg.to_dict(), manifest=manifest)
