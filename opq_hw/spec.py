"""The nouns of an OPQ run: what a layer is (`LayerSpec`) and what OPQ decided for it
(`LayerAlloc`, `Allocation`). Frozen dataclasses that round-trip through JSON."""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

from .errors import OpqError

KINDS = ("conv1d", "conv2d", "linear")


@dataclass(frozen=True)
class Defaults:
    """The default of each compression option, stated once: `CompressConfig` (opq_hw.pipeline),
    the CLI, the hardware-aware fit (opq_hw.hwaware), the cost model (opq_hw.cost), the estimate
    (opq_hw.report) and the carrier's `ActConfig` read them here. This module imports nothing
    heavy, so the CLI can too."""

    model: str = "digits-cnn"  # the demo's model
    target_cr: float = 20.0  # target compression rate
    target_kind: str = "cr_w"  # what target_cr refers to: cr_w | cr_idx
    method: str = "opq"  # opq | uniform | global-magnitude | per-channel
    scale_mode: str = "pow2"  # pow2 (hardware, bit-exact fixed point) | float (paper-faithful)
    mask_order: str = "magnitude"  # OPQ masks: magnitude (raw |w|) | channel-normalised (|w|/max|w_c|, old)
    error_model: str = "exact-gain-inner"  # OPQ error model: exact-gain-inner | exact-gain | exact (per-layer tables) | laplace (closed forms, old)
    sensitivity: str = "none"  # layer weighting from data: none (data-free) | calib | output-diag (measured on the calibration samples)
    min_bits: int = 2  # weight bit-width range of the allocation
    max_bits: int = 8
    act_bits: int = 8  # activation bits (None in a config: float activations)
    arch: str = "hls4ml-latency"  # cost-model architecture of --board and `estimate`
    epochs: int = 5  # finetune epochs
    lr: float = 1e-3  # finetune learning rate
    lr_schedule: str = "constant"  # finetune learning-rate schedule: constant | cosine (opq_hw.training.lr_factor)
    distill_weight: float = 0.0  # finetune: weight of distillation from the float model, 0..1 (0: cross-entropy only)
    distill_temperature: float = 2.0  # finetune: softmax temperature of the distillation term
    seed: int = 0


DEFAULTS = Defaults()


def _tuples(d: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    out = dict(d)
    for k in keys:
        if out.get(k) is not None:
            out[k] = tuple(out[k])
    return out


def _type_ok(v: Any, ann: str) -> bool:
    """Does the JSON value `v` (tuples already converted) fit the annotation string `ann`?
    Understands the shapes the records use: str, int, float, bool, None, Any, dict[...], list[...],
    tuple[X, ...] and unions; a class name is accepted as is (converted by the caller)."""
    ann = ann.strip()
    parts = _split_union(ann)
    if len(parts) > 1:
        return any(_type_ok(v, a) for a in parts)
    if ann == "None":
        return v is None
    if ann == "Any":
        return True
    if ann == "bool":
        return isinstance(v, bool)
    if ann == "int":
        return isinstance(v, int) and not isinstance(v, bool)
    if ann == "float":
        return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)
    if ann == "str":
        return isinstance(v, str)
    if ann.startswith("dict["):
        return isinstance(v, dict) and all(isinstance(k, str) for k in v)
    if ann.startswith("list["):
        return isinstance(v, list)
    if ann.startswith("tuple[") and ann.endswith(", ...]"):
        inner = ann[len("tuple["):-len(", ...]")]
        return isinstance(v, tuple) and all(_type_ok(x, inner) for x in v)
    return True


def _split_union(ann: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in ann:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "|" and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return out + [cur.strip()]


def _from_dict(cls, d: dict[str, Any]):
    """`cls(**d)` for a record read from JSON: unknown or missing keys and values of the wrong type
    are an OpqError naming the record and the field (the caller adds the file)."""
    if not isinstance(d, dict):
        raise OpqError(f"{cls.__name__}: expected a JSON object, got {type(d).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(d) - set(fields)
    if unknown:
        raise OpqError(f"{cls.__name__}: unknown keys {sorted(unknown)}; expected a subset of {sorted(fields)}")
    missing = [n for n, f in fields.items() if n not in d and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise OpqError(f"{cls.__name__}: missing keys {missing}")
    for k, v in d.items():
        ann = fields[k].type if isinstance(fields[k].type, str) else getattr(fields[k].type, "__name__", "Any")
        if not _type_ok(v, ann):
            raise OpqError(f"{cls.__name__}: field {k!r} must be {ann}, got {v!r:.80}")
    return cls(**d)


def _tuples_checked(cls, d: Any, keys: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise OpqError(f"{cls.__name__}: expected a JSON object, got {type(d).__name__}")
    for k in keys:
        if d.get(k) is not None and not isinstance(d[k], (list, tuple)):
            raise OpqError(f"{cls.__name__}: field {k!r} must be a list, got {d[k]!r:.80}")
    return _tuples(d, keys)


@dataclass(frozen=True)
class LayerSpec:
    """What a layer is: shapes from a forward pass with the example input (per sample, no batch)."""

    name: str
    kind: str  # conv1d | conv2d | linear
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    groups: int
    weight_shape: tuple[int, ...]
    n_weights: int
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    out_pixels: int  # output positions per sample (1 for linear)
    has_bias: bool

    @property
    def fan_in(self) -> int:
        """Multiplies per output value (weights per output channel)."""
        return self.n_weights // self.out_channels

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LayerSpec":
        spec = _from_dict(cls, _tuples_checked(cls, d, ("kernel_size", "stride", "padding", "weight_shape", "in_shape",
                                                        "out_shape")))
        _check_spec(spec)
        return spec


@dataclass(frozen=True)
class LayerAlloc:
    """What OPQ decided for one layer.

    The stored weights are `w = q * scales[c]`, `q` an integer in [-(2^(bits-1)-1), 2^(bits-1)-1]
    (narrow range), zero exactly where the mask prunes. `channel_bits` is set only by the
    non-unified per-channel baseline (then `bits` is their maximum, the container width).
    """

    name: str
    bits: int
    n_weights: int
    n_nonzero: int
    sparsity: float
    scales: tuple[float, ...]
    threshold: float = 0.0  # pruning threshold in the mask score's units (magnitude order: the weakest survivor's |w|)
    laplace_b: float = 0.0  # Laplace scale of the weights in the mask score's units (raw w, or w / max|w_c|)
    weight: float = 1.0  # a_i, the layer's weight in the error objective
    channel_bits: tuple[int, ...] | None = None
    channel_nonzero: tuple[int, ...] | None = None  # per-channel survivors (per-channel baseline only)
    normalisation: str = "channel"  # what |w| is divided by for the scales (and the old ranking): channel | layer max
    # what the mask ranks: "magnitude" (raw |w| within the layer) or "channel-normalised" (|w| divided
    # by `normalisation`, the criterion before mask orders existed: the default for older allocation.json)
    mask_order: str = "channel-normalised"
    skipped: bool = False
    mask_digest: str = ""  # sha256 of the mask's bytes (uint8, row-major)
    side_bits: int = 0  # side information (scales, bit widths) counted in CR_w
    reuse_factor: int | None = None  # set by the cost model / flows

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LayerAlloc":
        la = _from_dict(cls, _tuples_checked(cls, d, ("scales", "channel_bits", "channel_nonzero")))
        _check_layer_alloc(la)
        return la


@dataclass(frozen=True)
class Allocation:
    """Per-layer decisions of one allocation plus the achieved compression.

    `cr_w` = 32*sum(N) / (sum(nonzeros*bits) + side bits), `cr_idx` adds a 1-bit-per-weight
    bitmap of positions. `target_kind` says which of the two the target refers to.
    Skipped layers count as 32-bit dense in both.
    """

    layers: tuple[LayerAlloc, ...]
    method: str
    scale_mode: str  # float | pow2
    weighting: str  # layer weighting of the objective: "mean" (1/N_i) | "total" (1) | "relative" (1/sum w_i^2)
    target: float | None
    target_kind: str  # cr_w | cr_idx | cost
    cr_w: float
    cr_idx: float
    total_bits_w: int
    total_bits_idx: int
    lam: float = 0.0
    notes: tuple[str, ...] = field(default_factory=tuple)
    mask_order: str = "channel-normalised"  # OPQ's mask criterion (see LayerAlloc.mask_order); older files lack it
    error_model: str = "laplace"  # OPQ's error model: "exact" per-layer table | "laplace" closed forms (older files)
    sensitivity: dict[str, Any] | None = None  # --sensitivity calib: the measured per-layer multipliers of a_i; output-diag: the input mean squares per column (absent: none)

    def layer(self, name: str) -> LayerAlloc:
        for la in self.layers:
            if la.name == name:
                return la
        raise OpqError(f"no layer {name!r} in the allocation; layers: {[la.name for la in self.layers]} "
                       "(the allocation belongs to another model: re-create the run)")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["layers"] = [la.to_dict() for la in self.layers]
        if d["sensitivity"] is None:  # data-free allocations keep the files they had before the option existed
            del d["sensitivity"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Allocation":
        if not isinstance(d, dict) or not isinstance(d.get("layers"), list) or not d["layers"]:
            raise OpqError("Allocation: expected a JSON object with a non-empty list `layers`")
        if not isinstance(d.get("notes", []), (list, tuple)):
            raise OpqError("Allocation: `notes` must be a list of strings")
        d = dict(d)
        d["layers"] = tuple(LayerAlloc.from_dict(x) for x in d["layers"])
        d["notes"] = tuple(d.get("notes", ()))
        a = _from_dict(cls, d)
        names = [la.name for la in a.layers]
        if len(set(names)) != len(names):
            raise OpqError(f"Allocation: layer names repeat: {names}")
        if a.scale_mode not in ("float", "pow2"):
            raise OpqError(f"Allocation: scale_mode must be 'float' or 'pow2', got {a.scale_mode!r}")
        return a

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, s: str) -> "Allocation":
        return cls.from_dict(json.loads(s))


def _check_spec(s: LayerSpec) -> None:
    bad = [k for k in ("in_channels", "out_channels", "groups", "n_weights", "out_pixels") if getattr(s, k) < 1]
    bad += [k for k in ("kernel_size", "stride", "weight_shape", "in_shape", "out_shape")
            if any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in getattr(s, k))]
    if any(not isinstance(v, int) or isinstance(v, bool) or v < 0 for v in s.padding):
        bad.append("padding")
    if s.kind not in KINDS:
        bad.append("kind")
    elif s.weight_shape and math.prod(s.weight_shape) != s.n_weights:
        bad.append("n_weights")
    if bad:
        raise OpqError(f"LayerSpec {s.name!r}: bad {', '.join(bad)}")


def _check_layer_alloc(la: LayerAlloc) -> None:
    bad = []
    if not (2 <= la.bits <= 16 or (la.skipped and la.bits == 32)):
        bad.append(f"bits {la.bits} (2..16)")
    if not (la.n_weights >= 1 and 0 <= la.n_nonzero <= la.n_weights):
        bad.append(f"n_nonzero {la.n_nonzero} of n_weights {la.n_weights}")
    if not 0.0 <= la.sparsity <= 1.0:
        bad.append(f"sparsity {la.sparsity}")
    if not la.scales or any(not (math.isfinite(v) and v > 0) for v in la.scales):
        bad.append("scales (finite, > 0)")
    if la.channel_bits is not None and (len(la.channel_bits) != len(la.scales)
                                        or any(not (isinstance(b, int) and 2 <= b <= la.bits) for b in la.channel_bits)):
        bad.append("channel_bits")
    if la.channel_nonzero is not None and (len(la.channel_nonzero) != len(la.scales)
                                           or sum(la.channel_nonzero) != la.n_nonzero
                                           or any(not isinstance(k, int) or k < 0 for k in la.channel_nonzero)):
        bad.append("channel_nonzero")
    if la.normalisation not in ("channel", "layer"):
        bad.append(f"normalisation {la.normalisation!r}")
    if not (math.isfinite(la.weight) and la.weight > 0):
        bad.append(f"weight {la.weight}")
    if la.reuse_factor is not None and la.reuse_factor < 1:
        bad.append(f"reuse_factor {la.reuse_factor}")
    if bad:
        raise OpqError(f"LayerAlloc {la.name!r}: bad {'; '.join(bad)}")


def check_records(specs: list[LayerSpec], alloc: Allocation) -> None:
    """The allocation and the specs describe the same layers (names, weight counts, channels)."""
    if [s.name for s in specs] != [la.name for la in alloc.layers]:
        raise OpqError(f"specs.json lists layers {[s.name for s in specs]} but allocation.json "
                       f"{[la.name for la in alloc.layers]}; they belong to different runs: re-create the run")
    for s, la in zip(specs, alloc.layers):
        if s.n_weights != la.n_weights or len(la.scales) != s.out_channels:
            raise OpqError(f"layer {s.name!r}: specs.json says {s.n_weights} weights and {s.out_channels} channels, "
                           f"allocation.json {la.n_weights} weights and {len(la.scales)} scales; re-create the run")


def read_records(run_dir: "str | os.PathLike") -> tuple[list[LayerSpec], Allocation]:
    """specs.json and allocation.json of a run, checked: a missing, truncated, non-UTF-8 or wrongly
    structured file is an OpqError naming it."""
    from pathlib import Path

    from .artifact import read_json

    path = Path(run_dir)
    out = []
    for fname, parse in (("specs.json", _parse_specs), ("allocation.json", Allocation.from_dict)):
        f = path / fname
        if not f.is_file():
            raise OpqError(f"{f} is missing; {path} is not a complete opq-hw run: re-create it with `opq-hw compress`")
        try:
            out.append(parse(read_json(f)))
        except OpqError as e:
            msg = str(e)
            raise OpqError(msg if msg.startswith(str(f)) else f"{f}: {msg}; re-create the run with `opq-hw compress`") from None
    specs, alloc = out
    try:
        check_records(specs, alloc)
    except OpqError as e:
        raise OpqError(f"{path}: {e}") from None
    return specs, alloc


def _parse_specs(d: Any) -> list[LayerSpec]:
    if not isinstance(d, list) or not d:
        raise OpqError("expected a non-empty JSON list of layer specs")
    return [LayerSpec.from_dict(x) for x in d]
