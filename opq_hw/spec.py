"""The nouns of an OPQ run: what a layer is (`LayerSpec`) and what OPQ decided for it
(`LayerAlloc`, `Allocation`). Frozen dataclasses that round-trip through JSON."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

KINDS = ("conv1d", "conv2d", "linear")


def _tuples(d: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    out = dict(d)
    for k in keys:
        if out.get(k) is not None:
            out[k] = tuple(out[k])
    return out


def _from_dict(cls, d: dict[str, Any]):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown keys {sorted(unknown)}; expected a subset of {sorted(names)}")
    return cls(**d)


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

    @property
    def macs(self) -> int:
        """Dense multiply-accumulates per sample."""
        return self.n_weights * self.out_pixels

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LayerSpec":
        return _from_dict(cls, _tuples(d, ("kernel_size", "stride", "padding", "weight_shape", "in_shape", "out_shape")))


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
        return _from_dict(cls, _tuples(d, ("scales", "channel_bits", "channel_nonzero")))


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

    def layer(self, name: str) -> LayerAlloc:
        for la in self.layers:
            if la.name == name:
                return la
        raise KeyError(f"no layer {name!r} in the allocation; layers: {[la.name for la in self.layers]}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["layers"] = [la.to_dict() for la in self.layers]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Allocation":
        d = dict(d)
        d["layers"] = tuple(LayerAlloc.from_dict(x) for x in d["layers"])
        d["notes"] = tuple(d.get("notes", ()))
        return _from_dict(cls, d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, s: str) -> "Allocation":
        return cls.from_dict(json.loads(s))
