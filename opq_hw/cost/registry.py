"""The architectures the cost model knows, in one table: name -> `Architecture` (its formula, the
flow that builds it, its folding knobs, its calibration). Adding an architecture = a formula module
(one function per layer, its docstring citing the source) and one entry in `ARCHITECTURES`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ..boards import Board
from ..errors import OpqError
from ..spec import LayerAlloc
from .calibration import Calibration
from .finn import finn_mvau, pe_simd_foldings
from .hls4ml import alloc_reuse, hls4ml_latency, hls4ml_resource, reuse_foldings
from .records import LayerParams
from .rtl import DA_CALIBRATION, SEQ_CALIBRATION, rtl_da, rtl_da_top, rtl_seq, rtl_seq_top


def _unfolded(_: Any) -> dict[str, Any]:
    return {}


def _single(_: LayerParams) -> list[dict[str, Any]]:
    return [{}]


@dataclass(frozen=True)
class Architecture:
    """One cost architecture.

    formula(p, board, **folding) -> resources of one layer (`formula(p, board, calibration)` when the
    architecture is calibrated); flow: the flow that builds it (the board must list it);
    fold_keys: the folding options a layer may set; default_folding(p): fully parallel;
    foldings(p): the legal foldings `choose_folding` tries, in order; alloc_folding(la): what the
    allocation itself fixes (hls4ml's reuse factor); calibration: fitted coefficients per family;
    sequential: the layers run one after another (the interval is the sum of their cycles);
    top(params, board, calibration): what the design holds beyond its layers (stream, sequencer,
    output), added to the totals and the interval; notes: what every report of this architecture says."""

    name: str
    formula: Callable[..., dict[str, Any]]
    flow: str
    fold_keys: frozenset[str] = frozenset()
    default_folding: Callable[[LayerParams], dict[str, Any]] = _unfolded
    foldings: Callable[[LayerParams], list[dict[str, Any]]] = _single
    alloc_folding: Callable[[LayerAlloc], dict[str, Any]] = _unfolded
    calibration: Calibration | None = None
    sequential: bool = False
    top: Callable[..., dict[str, Any]] | None = None
    notes: tuple[str, ...] = ()


def _reuse_one(_: LayerParams) -> dict[str, Any]:
    return {"reuse_factor": 1}


def _pe_simd_full(p: LayerParams) -> dict[str, Any]:
    return {"pe": p.out_channels, "simd": p.fan_in}


_HLS4ML = dict(flow="hls4ml", fold_keys=frozenset({"reuse_factor"}), default_folding=_reuse_one,
               foldings=reuse_foldings, alloc_folding=alloc_reuse)
ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in (
    Architecture("hls4ml-latency", hls4ml_latency, **_HLS4ML),
    Architecture("hls4ml-resource", hls4ml_resource, **_HLS4ML, notes=(
        "hls4ml-resource stores and multiplies pruned weights like any other: sparsity saves nothing",)),
    Architecture("finn-mvau", finn_mvau, "finn",
                 fold_keys=frozenset({"pe", "simd", "mem_mode", "ram_style", "res_type", "acc_bits", "w_bits"}),
                 default_folding=_pe_simd_full, foldings=pe_simd_foldings, notes=(
                     "finn-mvau counts the MVAUs only (no sliding-window generators, pools, FIFOs or DMA); "
                     "weights are stored dense, so sparsity saves nothing",)),
    Architecture("rtl-da", rtl_da, "rtl", calibration=DA_CALIBRATION, top=rtl_da_top),
    Architecture("rtl-seq", rtl_seq, "rtl", calibration=SEQ_CALIBRATION, sequential=True, top=rtl_seq_top, notes=(
        "rtl-seq: the layers run one after another, so the interval is the sum of their cycles plus the "
        "top level's (input beats, logits out, each layer's pipeline drain)",)),
)}
ARCHS = tuple(ARCHITECTURES)
ARCH_FLOW = {name: a.flow for name, a in ARCHITECTURES.items()}


def architecture(name: str, board: Board | None = None) -> Architecture:
    """The architecture called `name`; with `board`, also check that the board supports its flow."""
    if name not in ARCHITECTURES:
        raise OpqError(f"unknown architecture {name!r}; choose one of {ARCHS}")
    arch = ARCHITECTURES[name]
    if board is not None and arch.flow not in board.flows:
        raise OpqError(f"board {board.name!r} does not support the {arch.flow} flow ({name}); "
                       f"its flows are {list(board.flows)}: choose another --arch or board")
    return arch


def default_folding(p: LayerParams, arch: str) -> dict[str, Any]:
    """Fully parallel: R = 1 (hls4ml), PE = MH and SIMD = MW (FINN), nothing to fold for rtl-da/rtl-seq."""
    return architecture(arch).default_folding(p)


def layer_cost(p: LayerParams, board: Board, arch: str, fold: Mapping[str, Any] | None = None,
               calibration: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Resource dict of one layer (arrays when p.nnz is an array)."""
    a = architecture(arch)
    fold = dict(fold or {})
    bad = set(fold) - a.fold_keys
    if bad:
        raise OpqError(f"layer {p.name!r}: folding keys {sorted(bad)} do not apply to {arch}; "
                       f"allowed: {sorted(a.fold_keys) or 'none'}")
    if a.calibration is not None:
        return a.formula(p, board, calibration, **fold)
    return a.formula(p, board, **fold)


def rtl_calibration(family: str, arch: str = "rtl-da") -> dict[str, Any]:
    """Fitted coefficients of an open-RTL architecture for a family from
    `board_configs/<arch>_calibration.yaml` (rtl_da_calibration.yaml, rtl_seq_calibration.yaml:
    `{family: {coefficients..., provenance: ...}}`, written by scripts/rtl_calibration.py), or the
    documented defaults when the file or the family is absent."""
    a = ARCHITECTURES.get(arch)
    if a is None or a.calibration is None:
        calibrated = sorted(n for n, x in ARCHITECTURES.items() if x.calibration is not None)
        raise OpqError(f"no calibration for architecture {arch!r}; calibrated: {calibrated}")
    return a.calibration.load(family)
