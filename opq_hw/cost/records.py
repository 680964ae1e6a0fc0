"""The cost model's records: `LayerParams` (a layer as the formulas see it, built from a `LayerSpec`
and its `LayerAlloc` by `layer_params` / `network_params`), `LayerCost` (what one layer costs) and
`CostReport` (a design's cost on a board, per layer and in total, with the fit verdict). Frozen
dataclasses; the reports round-trip through JSON (`cost.json`)."""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import OpqError
from ..spec import DEFAULTS, Allocation, LayerAlloc, LayerSpec, _from_dict

INPUT_BITS = 8  # the input quantizer of every hardware-mode model: 8-bit signed (see the core contract)


@dataclass(frozen=True)
class LayerParams:
    """Integer shape of one layer's matrix-vector product: MH = out_channels rows, MW = fan_in
    columns (K*K*C_in/groups for a conv), evaluated at `out_pixels` positions per sample.
    `nnz` may be a float or a numpy array (the allocator evaluates many survivor counts at once)."""

    name: str
    kind: str
    fan_in: int
    out_channels: int
    out_pixels: int
    in_pixels: int  # input positions per sample (conv: spatial size of the input; linear: 1)
    in_channels: int
    kernel: tuple[int, ...]
    in_width: int  # last spatial dimension of the input (the line length of a line buffer)
    n_weights: int
    nnz: Any
    w_bits: int
    a_bits: int
    a_signed: bool
    has_bias: bool
    in_words: int = 0  # input activation words with the zero padding (C_in x padded spatial size; linear: fan_in)
    laplace_b: float = 0.0  # OPQ's Laplace scale of the normalised weights (0: unknown, magnitudes taken as uniform)
    last: bool = False  # the network's output layer (no requantization: its accumulators are the logits)
    out_bits: int = 0  # bits of the requantized output activations (0: a_bits, as for every layer after the first)
    # the last layer: its accumulator width from the actual weights (opq_hw.rtl.seq `_acc_bits`, what the RTL's
    # logits memory holds), where the estimate has them (a run's IntNet); 0: unknown, the weight-agnostic width
    logit_bits: int = 0

    @property
    def acc_bits(self) -> int:
        """Signed accumulator that cannot overflow: a W-bit signed times an A-bit (un)signed
        product has W+A (-1 if signed) bits; summing fan_in of them adds ceil(log2 fan_in)."""
        return self.w_bits + self.a_bits - int(self.a_signed) + clog2(self.fan_in)


def clog2(x: int) -> int:
    return int(math.ceil(math.log2(x))) if x > 1 else 0


def layer_params(spec: LayerSpec, la: LayerAlloc, index: int, act_bits: int | None = DEFAULTS.act_bits,
                 n_nonzero: Any = None, bits: int | None = None, last: bool = False) -> LayerParams:
    """Params of layer `index` (0 = first: fed by the 8-bit signed input quantizer; later layers are
    fed by unsigned `act_bits` QuantReLU outputs; `last`: the network's output layer, whose
    accumulators are the logits). `n_nonzero`/`bits` override the allocation's."""
    a_bits = INPUT_BITS if index == 0 else (act_bits or 16)
    if spec.kind == "linear":
        in_pixels, in_width, kernel = 1, 1, ()
        in_words = spec.n_weights // spec.out_channels
    else:
        in_pixels = int(np.prod(spec.in_shape[1:]))
        in_width = int(spec.in_shape[-1])
        kernel = tuple(spec.kernel_size)
        in_words = spec.in_channels * int(np.prod([d + 2 * q for d, q in zip(spec.in_shape[1:], spec.padding)]))
    return LayerParams(
        name=spec.name, kind=spec.kind, fan_in=spec.n_weights // spec.out_channels, out_channels=spec.out_channels,
        out_pixels=spec.out_pixels, in_pixels=in_pixels, in_channels=spec.in_channels, kernel=kernel, in_width=in_width,
        n_weights=spec.n_weights, nnz=la.n_nonzero if n_nonzero is None else n_nonzero,
        w_bits=int(la.bits if bits is None else bits), a_bits=int(a_bits), a_signed=index == 0, has_bias=spec.has_bias,
        in_words=int(in_words), laplace_b=float(la.laplace_b), last=last, out_bits=int(act_bits or 16))



def layer_pairs(specs: list[LayerSpec], allocation: Allocation) -> list[tuple[LayerSpec, LayerAlloc]]:
    names = [la.name for la in allocation.layers]
    if [s.name for s in specs] != names:
        raise OpqError(f"specs {[s.name for s in specs]} and allocation layers {names} differ; "
                       "use the specs.json and allocation.json of the same run")
    return [(s, allocation.layer(s.name)) for s in specs]


def network_params(specs: list[LayerSpec], allocation: Allocation,
                   act_bits: int | None = DEFAULTS.act_bits) -> list[LayerParams]:
    """`layer_params` of every layer in network order (the first fed by the input quantizer, the
    last one's accumulators the logits)."""
    pairs = layer_pairs(specs, allocation)
    return [layer_params(s, la, i, act_bits, last=i == len(pairs) - 1) for i, (s, la) in enumerate(pairs)]



@dataclass(frozen=True)
class LayerCost:
    """What one layer costs under one architecture and folding."""

    name: str
    kind: str
    bits: int
    act_bits: int
    n_weights: int
    n_nonzero: int
    mem_bits_dense: int
    mem_bits_sparse: int
    LUT: int
    FF: int
    DSP: int
    BRAM18: int
    URAM: int
    mults: int
    cycles: int  # cycles per sample spent in this layer (= its initiation interval)
    latency_cycles: int
    folding: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LayerCost":
        return _from_dict(cls, d)


@dataclass(frozen=True)
class CostReport:
    """A design's cost on a board: per layer and in total, with the fit verdict.

    `utilisation[r]` = (total + shell) / capacity; `binding` is the resource closest to (or
    furthest over) its limit; `over[r]` says how much of r is missing at the estimate. `bands`: per
    figure (LUT, FF, BRAM18, URAM, DSP, cycles) the error band (`opq_hw.cost.accuracy.Band.to_dict`);
    `used_range[r]`: [optimistic, pessimistic] usage with the shell; `fit`: the verdict with the
    bands (`fits`, `fits only at the optimistic end`, `does not fit`, see `opq_hw.cost.fit`), and
    `fits` is True only for `fits`. `parts`: what the totals hold beyond the layers, one row each (the RTL
    top level; on a dev board, the board top's serial link); `part_bands`: the bands of a part measured
    apart (the board top), which `bands` (the totals') then include. `ii_cycles` is the network's initiation interval (its slowest
    layer, `bottleneck`), `latency_cycles` the sum over layers.
    """

    arch: str
    board: str
    part: str
    family: str
    clock_mhz: float
    act_bits: int
    layers: tuple[LayerCost, ...]
    totals: dict[str, int]
    capacity: dict[str, int]
    limits: dict[str, float]
    shell: dict[str, int]
    utilisation: dict[str, float]
    fits: bool
    binding: str
    over: dict[str, float]
    ii_cycles: int
    latency_cycles: int
    latency_us: float
    throughput_fps: float
    bottleneck: str
    mem_bits_dense: int
    mem_bits_sparse: int
    coefficients: dict[str, Any]
    provenance: dict[str, str]
    notes: tuple[str, ...] = field(default_factory=tuple)
    fit: str = ""
    bands: dict[str, Any] = field(default_factory=dict)
    used_range: dict[str, Any] = field(default_factory=dict)
    parts: dict[str, dict[str, int]] = field(default_factory=dict)  # beyond the layers, in the totals: top level, board top
    part_bands: dict[str, dict[str, Any]] = field(default_factory=dict)  # a part with its own band: per figure

    def part_band(self, part: str, figure: str):
        """The error band of one part's figure (the board top's), or None when the part has no band of its
        own (the RTL top level: inside the whole-design band)."""
        from .band import Band

        b = self.part_bands.get(part, {}).get(figure)
        return Band.from_dict(b) if b is not None else None

    def band(self, figure: str):
        """The error band of `figure` (an `accuracy.Band`; uncalibrated when the record has none)."""
        from .band import Band

        b = self.bands.get(figure)
        return Band.from_dict(b) if b is not None else Band(why="uncalibrated: the record states no error band")

    @property
    def uncalibrated(self) -> tuple[str, ...]:
        """The resources the design uses whose estimate has no error band."""
        return tuple(r for r, v in self.totals.items() if v > 0 and not self.band(r).calibrated)

    @property
    def fit_label(self) -> str:
        """The verdict, qualified when a used resource has no error band (as `Fit.label`)."""
        from .fit import FITS, NO_FIT, verdict_label

        return verdict_label(self.fit or (FITS if self.fits else NO_FIT), self.uncalibrated)

    @property
    def folding(self) -> dict[str, dict[str, Any]]:
        return {lc.name: dict(lc.folding) for lc in self.layers}

    def layer(self, name: str) -> LayerCost:
        for lc in self.layers:
            if lc.name == name:
                return lc
        raise KeyError(f"no layer {name!r}; layers: {[lc.name for lc in self.layers]}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["layers"] = [lc.to_dict() for lc in self.layers]
        d["notes"] = list(self.notes)
        if not d["parts"]:  # no architecture top level (hls4ml, FINN): the record as before
            del d["parts"]
        if not d["part_bands"]:  # no part with a band of its own (no board top): the record as before
            del d["part_bands"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CostReport":
        d = dict(d)
        d["layers"] = tuple(LayerCost.from_dict(x) for x in d["layers"])
        d["notes"] = tuple(d.get("notes", ()))
        return _from_dict(cls, d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, s: str) -> "CostReport":
        return cls.from_dict(json.loads(s))

