"""One-shot allocation: per-layer pruning ratio and bit width from the weights alone.

OPQ (Hu et al., AAAI 2021) minimises the pruning + quantization error of a Laplace weight model
under a size budget with a Lagrange multiplier. Our derivation (shared OPQ.md) per group g
(a layer, or a channel for the non-unified baseline), survivor fraction d = exp(-t/b):

    J_g(B, t) = a_g N_g [e_p(t) + d Delta(B)^2 / 12] + lam * cost_g(B, d N_g)

For a cost linear in survivors (bits: cost = B k) the stationary threshold is
t* = sqrt(Delta^2/12 + lam B / a_g); for any other cost (hardware mode) a grid over d is searched
as well. Stage 1 bisects lam on the total size with each group's best integer B; stage 2 keeps
those bit widths and bisects lam again, so that the continuous thresholds fill the budget
(integer bit widths otherwise leave a gap of up to one bit step). Survivors are then counted as
integers (k = round(d N)) and the real integer-bit size is checked against the budget.

For OPQ the group error a_g E_g(B, d) comes from one of three error models (`_lagrangian`):
the closed forms above on channel-normalised weights (the original derivation), the closed forms
re-derived for masks by raw |w| (pruning term: the layer's own Laplace fit of raw w; quantization
term: per channel, Delta^2 -> qf Delta^2), or the layer's exact error table from the real
quantizer (`quant.error_curves`, optionally up to one gain per layer; the default bounds that gain
to [1/2, 2] at the first and the last layer). With a table
the thresholds come from the grid alone, and the two grid points tied at the critical lam are
mixed so that the thresholds still fill the budget.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple

import numpy as np
import torch

from . import laplace
from .errors import OpqError
from .quant import MASK_ORDERS, compress_layer, error_curves, layer_mask_threshold, make_scales, mask_digest
from .spec import DEFAULTS, Allocation, LayerAlloc, LayerSpec

METHODS = ("opq", "uniform", "global-magnitude", "per-channel")
WEIGHTINGS = ("mean", "total", "relative")
ERROR_MODELS = ("exact-gain-inner", "exact-gain", "exact", "laplace")
# the layer gain an error model forgives (`quant.error_curves` max_gain): in the inner layers, and at the
# first and last layer (forward order); `exact-gain-inner` bounds the edges to one octave, [1/2, 2]
_MAX_GAIN = {"exact-gain-inner": (math.inf, 2.0), "exact-gain": (math.inf, math.inf)}
CostFn = Callable[[LayerSpec, int, "np.ndarray"], "np.ndarray"]

_GRID = 160
MAX_WEIGHT = 1e6  # largest |w| accepted: trained weights are O(1); beyond this pow2 scales and activations overflow
MIN_CHANNEL_MAX = 1e-6  # a channel's largest |w| (if not 0): its 16-bit scale stays above Brevitas's 2.5e-11 floor
_TABLE_SAMPLES = 1 << 14  # weights per layer (drawn with a fixed seed) that stand for it in the exact error table


@dataclass(frozen=True)
class LayerOptions:
    """Per-layer overrides, resolved exact name > glob pattern (longest first) > default."""

    skip: bool = False
    min_bits: int | None = None
    max_bits: int | None = None
    weight: float = 1.0  # multiplies a_i


class _Target(NamedTuple):
    """What the budget stands for, for the error messages: a compression target or a cost budget."""

    target_cr: float | None
    kind: str  # "cr_w", "cr_idx" or "cost"
    total_n: int  # weights of the model, skipped layers included
    fixed: float  # budget taken before the allocation (skipped layers, side information, bitmap)


class _Group(NamedTuple):
    """One group of the Lagrangian allocation: a layer, or a channel of the per-channel baseline."""

    name: str  # its layer
    channel: int | None
    n: int  # weights
    b: float  # Laplace scale
    a: float  # weight of its error in the objective
    bmin: int
    bmax: int
    kmin: int  # fewest survivors
    spec: LayerSpec
    qf: float  # mean squared channel scale of the survivors (1 on channel-normalised weights)
    table: tuple | None  # exact error model: (prune (m+1,), quant (nb, m+1)); None: Laplace


class _Candidate(NamedTuple):
    """A stage-2 solution: bit index and survivor fraction per group, and how it ranks."""

    short: bool  # leaves more than 1% of the budget unused
    error: float  # modelled a-weighted error
    lam: float
    bi: np.ndarray
    d: np.ndarray


@dataclass
class _Decision:
    """The allocation of one layer: per group (the layer, or each of its channels) bits, survivors,
    Laplace scale and threshold."""

    a: float
    normalisation: str
    per_channel: bool = False
    bits: list[int] = dataclasses.field(default_factory=list)
    k: list[int] = dataclasses.field(default_factory=list)
    b: list[float] = dataclasses.field(default_factory=list)
    t: list[float] = dataclasses.field(default_factory=list)


def resolve_overrides(names: list[str], overrides: Mapping[str, Mapping] | None) -> dict[str, LayerOptions]:
    from .validate import check_override

    if overrides is not None and not isinstance(overrides, Mapping):
        raise OpqError(f"overrides must map layer names or glob patterns to options, got {overrides!r:.80}")
    checked = {}
    for key, val in dict(overrides or {}).items():
        try:
            checked[key] = check_override(key, val)  # known keys, bits 2..16, weight finite > 0
        except ValueError as e:
            raise OpqError(str(e)) from None
    overrides = checked
    used: set[str] = set()
    out = {}
    for n in names:
        if n in overrides:
            key = n
        else:
            pats = sorted((p for p in overrides if fnmatch.fnmatchcase(n, p)), key=len, reverse=True)
            key = pats[0] if pats else None
        if key is not None:
            used.add(key)
        out[n] = LayerOptions(**overrides[key]) if key is not None else LayerOptions()
    unused = set(overrides) - used
    if unused:
        raise OpqError(f"overrides {sorted(unused)} match no layer; layers are {names}")
    return out


def side_bits(method: str, scale_mode: str, out_channels: int) -> int:
    """Side information of a layer: scales (32-bit float, or an 8-bit pow2 exponent) and bit widths (8 bits each)."""
    sb = 8 if scale_mode == "pow2" else 32
    if method == "global-magnitude":
        return sb + 8  # one layer-wise scale + bit width
    if method == "per-channel":
        return out_channels * (sb + 8)  # a scale and a bit width per channel
    return out_channels * sb + 8  # unified: per-channel scale, one layer bit width


def _check_weights(name: str, w: torch.Tensor) -> None:
    # one min/max pass (NaN and Inf propagate into it) instead of isfinite(w).all() and (w != 0).any()
    lo, hi = torch.aminmax(w.detach().reshape(-1)) if w.numel() else (torch.zeros(()), torch.zeros(()))
    if not (torch.isfinite(lo) and torch.isfinite(hi)):
        raise OpqError(f"layer {name!r} has NaN or Inf weights; fix the checkpoint (or skip the layer with an override)")
    if lo == 0 and hi == 0:
        raise OpqError(f"layer {name!r} has all-zero weights; nothing to compress: load trained weights or skip it")
    cmax = w.detach().reshape(w.shape[0], -1).abs().amax(dim=1)
    if float(cmax.max()) > MAX_WEIGHT:
        raise OpqError(f"layer {name!r} has weights up to {float(cmax.max()):.3g}, beyond {MAX_WEIGHT:g}: not a trained "
                       "network's weights (fixed-point scales and activations overflow); rescale or fix the checkpoint")
    tiny = torch.nonzero((cmax > 0) & (cmax < MIN_CHANNEL_MAX)).reshape(-1)
    if len(tiny):
        c = int(tiny[0])
        raise OpqError(f"layer {name!r}: channel {c} has weights of at most {float(cmax[c]):.3g} (below "
                       f"{MIN_CHANNEL_MAX:g}, whose quantization scales Brevitas cannot hold); rescale the layer's "
                       f"weights, zero that channel, or skip the layer with an override")


@dataclass
class _Groups:
    """Arrays over groups x bit widths x grid points (infeasible entries are +inf)."""

    names: list[str]  # layer of each group
    n: np.ndarray
    err: np.ndarray  # (g, nb, G) a N [e_p + d D^2/12]
    cost: np.ndarray  # (g, nb, G) variable cost
    d: np.ndarray  # (g, nb, G) survivor fraction
    a: np.ndarray
    b: np.ndarray
    bits: np.ndarray  # (nb,)
    lin: np.ndarray  # (g, nb) marginal cost per survivor
    qf: np.ndarray  # (g,) mean squared channel scale of the survivors (1 on channel-normalised weights)
    tables: list | None = None  # exact error model: per group (prune (m+1,), quant (nb, m+1)), else Laplace

    def error(self, bi: np.ndarray, d: np.ndarray) -> float:
        """Modelled a-weighted error of a choice (bit index, survivor fraction) per group."""
        if self.tables is not None:
            return float(sum(a * _table_error(tab, j, dj) for a, tab, j, dj in zip(self.a, self.tables, bi, d)))
        delta = laplace.step(self.bits[bi])
        t = -self.b * np.log(d)
        return float(np.sum(self.a * self.n * (laplace.prune_error(t, self.b) + d * self.qf * delta**2 / 12)))

    def solve(self, lam: float, fixed_bits: np.ndarray | None = None):
        """Best (bit index, d) per group for lam; closed form plus grid."""
        J = self.err + lam * self.cost
        if fixed_bits is not None:
            keep = np.zeros_like(J, dtype=bool)
            keep[np.arange(len(J)), fixed_bits, :] = True
            J = np.where(keep, J, np.inf)
        g, nb, G = J.shape
        flat = J.reshape(g, -1).argmin(axis=1)
        bi, gi = np.divmod(flat, G)
        best_d = self.d[np.arange(g), bi, gi]
        best_J = J[np.arange(g), bi, gi]
        if self.tables is not None:  # exact error table: the grid alone (no closed form)
            return bi, best_d, float(self.cost[np.arange(g), bi, gi].sum())
        # closed-form candidate per (group, bits): t* = sqrt(qf D^2/12 + lam m / a)
        delta2 = self.qf[:, None] * laplace.step(self.bits)[None, :] ** 2
        t = np.sqrt(delta2 / 12 + lam * self.lin / self.a[:, None])
        lo, hi = self.d[:, :, 0], self.d[:, :, -1]
        dstar = np.clip(np.exp(-t / self.b[:, None]), lo, hi)
        tt = -self.b[:, None] * np.log(dstar)
        errc = self.a[:, None] * self.n[:, None] * (laplace.prune_error(tt, self.b[:, None]) + dstar * delta2 / 12)
        costc = np.where(np.isfinite(self.err[:, :, 0]), _interp_rows(dstar, self.d, self.cost), np.inf)
        Jc = errc + lam * costc
        if fixed_bits is not None:
            Jc = np.where(np.arange(nb)[None, :] == fixed_bits[:, None], Jc, np.inf)
        cb = Jc.argmin(axis=1)
        cJ = Jc[np.arange(g), cb]
        use = cJ < best_J
        bi = np.where(use, cb, bi)
        best_d = np.where(use, dstar[np.arange(g), cb], best_d)
        size = np.where(use, costc[np.arange(g), cb], self.cost[np.arange(g), np.divmod(flat, G)[0], np.divmod(flat, G)[1]])
        return bi, best_d, float(size.sum())


def _table_error(tab, j: int, d: float) -> float:
    """Exact error table of a group at bit index j and survivor fraction d (linear between counts)."""
    prune, quant = tab
    x = d * (len(prune) - 1)
    xp = np.arange(len(prune))
    return float(np.interp(x, xp, prune) + np.interp(x, xp, quant[j]))


def _interp_rows(x: np.ndarray, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """`np.interp(x[r], xp[r], fp[r])` for every row r at once, with numpy's own interval search and
    arithmetic (compiled_base.c arr_interp), so the values are the same bit for bit."""
    G = xp.shape[-1]
    j = np.clip(np.count_nonzero(xp <= x[..., None], axis=-1) - 1, 0, G - 1)  # last xp[j] <= x
    j1 = np.minimum(j + 1, G - 1)

    def at(a, idx):
        return np.take_along_axis(a, idx[..., None], axis=-1)[..., 0]

    x0, x1, y0, y1 = at(xp, j), at(xp, j1), at(fp, j), at(fp, j1)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        slope = (y1 - y0) / (x1 - x0)
        res = slope * (x - x0) + y0
        alt = slope * (x - x1) + y1
    res = np.where(np.isnan(res), np.where(np.isnan(alt) & (y0 == y1), y0, alt), res)
    res = np.where((j == G - 1) | (x0 == x), y0, res)
    res = np.where(x < xp[..., 0], fp[..., 0], np.where(x > xp[..., -1], fp[..., -1], res))
    res = np.where(np.isnan(x), x, res)
    for r in np.argwhere(~np.all(np.diff(xp, axis=-1) >= 0, axis=-1)):  # unsorted row (rounding): numpy's own search
        r = tuple(r)
        res[r] = np.interp(x[r], xp[r], fp[r])
    return res


def _bisect(f, budget: float, lo: float = 1e-16, hi: float = 1e8, iters: int = 200):
    """Bisect lam (f's size decreasing in lam) for the smallest feasible lam (f(lam) <= budget).

    Returns (lam_feasible, f(lam_feasible), lam_infeasible or None), or None if even f(hi) > budget.
    """
    if f(hi)[-1] > budget:
        return None
    llo, lhi = math.log(lo), math.log(hi)
    if f(lo)[-1] <= budget:
        return lo, f(lo), None
    for _ in range(iters):
        mid = 0.5 * (llo + lhi)
        if f(math.exp(mid))[-1] <= budget:
            lhi = mid
        else:
            llo = mid
        if lhi - llo < 1e-9:
            break
    return math.exp(lhi), f(math.exp(lhi)), math.exp(llo)


def allocate(
    specs: list[LayerSpec],
    weights: Mapping[str, torch.Tensor],
    *,
    target_cr: float | None = None,
    target_kind: str = DEFAULTS.target_kind,
    cost_fn: CostFn | None = None,
    budget: float | None = None,
    method: str = DEFAULTS.method,
    scale_mode: str = DEFAULTS.scale_mode,
    weighting: str | None = None,
    mask_order: str = DEFAULTS.mask_order,
    error_model: str = DEFAULTS.error_model,
    min_bits: int = DEFAULTS.min_bits,
    max_bits: int = DEFAULTS.max_bits,
    uniform_bits: int | None = None,
    overrides: Mapping[str, Mapping] | None = None,
    sensitivity: Mapping[str, Any] | None = None,
) -> Allocation:
    """Allocate sparsity and bit width per layer for a target compression rate or a cost budget.

    target_cr: CR_w (`target_kind="cr_w"`, weights + side info) or CR_idx (`"cr_idx"`, plus a
      1-bit position bitmap) to meet. Alternatively `cost_fn(spec, bits, n_nonzero) -> cost`
      (additive over layers, vectorised over `n_nonzero`) with `budget` in the same unit.
    method: "opq" (unified channel-wise, Lagrangian), "uniform" (same bits and sparsity in every
      layer), "global-magnitude" (one global |w| threshold + layer-wise scale), "per-channel"
      (non-unified: each channel its own sparsity and bit width, side info counted).
    weighting: a_i in the objective: "mean" (a_i = 1/N_i: each layer's mean error counts
      equally), "total" (a_i = 1: total squared error) or "relative" (a_i = 1/sum w_i^2: each
      layer's relative error counts equally), the error in the units of the error model (raw w;
      channel-normalised u for the old `channel-normalised` + `laplace` pair); overrides may scale a_i.
      None: "relative" for opq, "mean" for the baselines (their behaviour before "relative" existed).
    mask_order (opq): "magnitude" (keep the largest raw |w| of the layer, the default) or
      "channel-normalised" (the largest |w| / max|w_c|, the criterion before this option existed).
    error_model (opq): "exact" (each layer's exact error table from `quant.error_curves`: the real
      quantizer with its per-channel scales, for every survivor count and bit width), "exact-gain"
      (the same up to one gain per layer, min_g |w - g w_hat|^2: the previous default),
      "exact-gain-inner" (the default: as exact-gain in the inner layers, the gain bounded to
      [1/2, 2] at the first and the last layer in forward order) or "laplace" (the closed forms of
      `laplace`, fitted to the weights in mask order's units).
      Why the bound: nothing rescales the biases, so every forgiven gain scales a layer's products
      against its bias, and the gains compound along the network. Unbounded, BasicMotions 40x put
      all four layers at 2 bits with gains 0.37-0.54 (their product 0.05): 75 % one-shot on the
      training samples; bounding the gain at the two edge layers gives 3/2/2/2 bits and 100 %
      (no gain there: 3/2/2/3, 100 %, but a 40x larger KL divergence from the float model), and
      changes no other allocation of the four benchmark models at 5x-40x
      (benchmarks/results/weighting_choice.json).
    The baselines keep their own criteria (uniform: channel-normalised, global-magnitude: raw |w|
    across layers, per-channel: |w| within a channel) and the Laplace model.
    sensitivity: None (data-free, the default) or a record of `sensitivity.measure` whose "layers"
      map every non-skipped layer to a multiplier s_i > 0 of a_i (its measured output change per unit
      relative error); recorded in the allocation. Or an `output-diag` record (`sensitivity.measure_inputs`)
      whose "columns" give each layer's input mean squares: opq's exact error tables weight each weight's
      error by its column's (the diagonal of the output-space error; needs an exact error model).
    """
    if method not in METHODS:
        raise OpqError(f"unknown method {method!r}; choose one of {METHODS}")
    if weighting is None:
        weighting = "relative" if method == "opq" else "mean"
    if weighting not in WEIGHTINGS:
        raise OpqError(f"unknown weighting {weighting!r}; choose one of {WEIGHTINGS}")
    if mask_order not in MASK_ORDERS:
        raise OpqError(f"unknown mask order {mask_order!r}; choose one of {MASK_ORDERS}")
    if error_model not in ERROR_MODELS:
        raise OpqError(f"unknown error model {error_model!r}; choose one of {ERROR_MODELS}")
    if method != "opq":  # the baselines keep their own criteria and the Laplace model
        mask_order, error_model = "channel-normalised", "laplace"
    if scale_mode not in ("float", "pow2"):
        raise OpqError(f"scale_mode must be 'float' or 'pow2', got {scale_mode!r}")
    if not 2 <= min_bits <= max_bits <= 16:
        raise OpqError(f"need 2 <= min_bits <= max_bits <= 16, got {min_bits}, {max_bits}")
    if uniform_bits is not None and (isinstance(uniform_bits, bool) or uniform_bits not in range(2, 17)):
        raise OpqError(f"uniform_bits must be an integer in 2..16, got {uniform_bits!r}")
    if (target_cr is None) == (cost_fn is None):
        raise OpqError("give either target_cr or cost_fn with budget")
    if cost_fn is not None and budget is None:
        raise OpqError("cost_fn needs a budget in the same unit")
    if target_cr is not None and target_kind not in ("cr_w", "cr_idx"):
        raise OpqError(f"target_kind must be 'cr_w' or 'cr_idx', got {target_kind!r}")
    if target_cr is not None and not target_cr > 0:
        raise OpqError(f"target compression rate must be > 0, got {target_cr}")
    if not specs:
        raise OpqError("the model has no Conv1d/Conv2d/Linear layer to compress")
    opts = resolve_overrides([s.name for s in specs], overrides)
    for s in specs:
        if s.name not in weights:
            raise OpqError(f"no weights for layer {s.name!r}")
        if not opts[s.name].skip:
            _check_weights(s.name, weights[s.name])

    active = [s for s in specs if not opts[s.name].skip]
    if not active:
        raise OpqError("every layer is skipped by the overrides; nothing to compress")
    columns = None
    if isinstance(sensitivity, Mapping) and sensitivity.get("source") == "output-diag":
        if method != "opq" or error_model not in ("exact", *_MAX_GAIN):
            raise OpqError(f"--sensitivity output-diag weights opq's exact error tables; it does not apply to method "
                           f"{method!r} with error model {error_model!r}: use method opq with an exact error model")
        columns = _check_columns(sensitivity, active, weights)
    elif sensitivity is not None:
        mult = _check_sensitivity(sensitivity, [s.name for s in active])
        opts = {n: dataclasses.replace(o, weight=o.weight * mult[n]) if n in mult else o for n, o in opts.items()}
    total_n = sum(s.n_weights for s in specs)
    fixed = 0.0  # a cost budget covers the allocated layers alone, in the cost's own unit
    if target_cr is not None:  # storage: skipped layers at 32 bits dense, and the side information
        fixed = sum(32 * s.n_weights for s in specs if opts[s.name].skip)
        fixed += sum(side_bits(method, scale_mode, s.out_channels) for s in active)
        if target_kind == "cr_idx":
            fixed += sum(s.n_weights for s in active)
        budget = 32.0 * total_n / target_cr

        def cost_fn(spec, bits, k):  # noqa: F811 - the storage cost of the survivors
            return bits * np.asarray(k, dtype=np.float64)

    var_budget = budget - fixed
    kind = target_kind if target_cr is not None else "cost"

    target = _Target(target_cr, kind, total_n, fixed)
    if method in ("opq", "per-channel"):
        decisions, lam = _lagrangian(active, weights, opts, cost_fn, var_budget, weighting, min_bits, max_bits,
                                     per_channel=method == "per-channel", target=target,
                                     mask_order=mask_order, error_model=error_model, scale_mode=scale_mode,
                                     edges=frozenset((specs[0].name, specs[-1].name)), columns=columns)
    else:
        decisions, lam = _uniform_like(active, weights, opts, cost_fn, var_budget, weighting, min_bits, max_bits,
                                       method, uniform_bits, target=target)
    alloc = _finish(specs, weights, opts, decisions, method, scale_mode, weighting, target_cr, kind, lam, cost_fn,
                    mask_order, error_model)
    if sensitivity is not None:
        alloc = dataclasses.replace(alloc, sensitivity=dict(sensitivity))
    achieved = alloc.cr_w if kind == "cr_w" else alloc.cr_idx
    if target_cr is not None and achieved > 1.01 * target_cr:
        raise OpqError(f"target {kind.upper()} {target_cr:g}x cannot be met: it is below the reachable range, whose "
                       f"least compression with these bit limits is {achieved:.3g}x; choose a target of at least that, "
                       f"or raise --max-bits")
    return alloc


def _check_sensitivity(sensitivity: Mapping[str, Any], names: list[str]) -> dict[str, float]:
    """The multipliers of a sensitivity record, one finite positive number per allocated layer."""
    layers = sensitivity.get("layers") if isinstance(sensitivity, Mapping) else None
    if not isinstance(layers, Mapping):
        raise OpqError(f"sensitivity must be a record with 'layers' mapping each layer to a multiplier (from "
                       f"opq_hw.sensitivity.measure), got {sensitivity!r:.80}")
    if set(layers) != set(names):
        raise OpqError(f"sensitivity covers layers {sorted(layers)} but the allocated layers are {names}; "
                       "measure it on this model with these overrides")
    out = {}
    for n, v in layers.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
            raise OpqError(f"sensitivity of layer {n!r} must be a finite number > 0, got {v!r:.40}")
        out[n] = float(v)
    return out


def _check_columns(sensitivity: Mapping[str, Any], active: list[LayerSpec], weights) -> dict[str, torch.Tensor]:
    """The per-column weights of an `output-diag` record: E[x_j^2] per column of each allocated layer
    (finite, >= 0), floored at 1e-6 of the layer's largest and rescaled so that the weighted energy
    of the layer's weights equals their energy (the `relative` weighting then reads a relative error)."""
    cols = sensitivity.get("columns")
    names = [s.name for s in active]
    if not isinstance(cols, Mapping) or set(cols) != set(names):
        raise OpqError(f"an output-diag sensitivity record needs 'columns' for exactly the allocated layers {names} "
                       "(from opq_hw.sensitivity.measure_inputs on this model with these overrides)")
    out = {}
    for n in names:
        w = weights[n].detach().double().reshape(weights[n].shape[0], -1)
        v = cols[n]
        ok = isinstance(v, (list, tuple)) and len(v) == w.shape[1] and all(
            isinstance(e, (int, float)) and not isinstance(e, bool) and math.isfinite(e) and e >= 0 for e in v)
        if not ok or not max(v) > 0:
            raise OpqError(f"output-diag sensitivity of layer {n!r}: need {w.shape[1]} finite numbers >= 0, not all 0 "
                           "(its inputs' mean squares per column); measure it on this model")
        c = torch.tensor(v, dtype=torch.float64)
        c = torch.clamp(c, min=1e-6 * float(c.max()))
        e = float((w * w * c).sum())
        out[n] = c * (float((w * w).sum()) / e) if e > 0 else torch.ones_like(c)
    return out


def _weight_of(spec: LayerSpec, weighting: str, opt: LayerOptions, sum_sq: float | None = None) -> float:
    """a_i: 1/N_i (mean), 1 (total) or 1/sum w^2 (relative; sum_sq in the error model's units)."""
    if weighting == "relative":
        return opt.weight / max(float(sum_sq), 1e-300)
    return (1.0 / spec.n_weights if weighting == "mean" else 1.0) * opt.weight


def _normalised(w: torch.Tensor, normalisation: str) -> np.ndarray:
    from .quant import normaliser

    return (w.detach().double().reshape(w.shape[0], -1) / normaliser(w, normalisation)[:, None]).numpy()


def _unreachable(target: _Target, lo_size, hi_size) -> OpqError:
    target_cr, kind, total_n, fixed = target
    if target_cr is None:
        return OpqError(f"the cost budget cannot be met: the smallest reachable cost is {lo_size + fixed:.4g} "
                        f"(all layers at min_bits with the fewest survivors); raise the budget or lower min_bits")
    lo_cr = 32.0 * total_n / (hi_size + fixed)
    hi_cr = 32.0 * total_n / (lo_size + fixed)
    return OpqError(f"target {kind.upper()} {target_cr:g}x cannot be met: the reachable range with these bit limits is "
                    f"{lo_cr:.3g}x to {hi_cr:.3g}x; choose a target in it, or widen --min-bits/--max-bits")


def _lagrangian(active, weights, opts, cost_fn, var_budget, weighting, min_bits, max_bits, per_channel, target,
                mask_order="channel-normalised", error_model="laplace", scale_mode="pow2", edges=frozenset(),
                columns=None):
    """The Lagrangian allocation over groups (layers; channels for the per-channel baseline).

    Error model of a layer, by mask order (derivation in the README, "OPQ as implemented"):
    - channel-normalised + laplace (the original derivation): u = w / max|w_c|, one Laplace fit
      b = mean|u| of the layer; e_p(t) and Delta^2/12 both in units of u.
    - magnitude + laplace: the mask keeps the largest raw |w| of the layer, so the pruning term is
      the layer's own Laplace fit of raw w (b = mean|w - median|): survivor fraction d = exp(-T/b)
      at a raw threshold T, pruning error N e_p(T; b). The survivors are quantized per channel with
      step max|w_c| Delta(B), so their error is d N qf Delta^2 / 12 with qf = the survivors' mean
      squared channel scale, estimated as sum_c max|w_c|^2 sum_j |w_cj| / sum |w| (large weights,
      the survivors, weigh in proportion to their magnitude). Stationarity in T then gives
      T* = sqrt(qf Delta^2/12 + lam m / a), the old closed form with Delta^2 -> qf Delta^2.
    - exact (either order): the layer's exact error table E(B, k) (`quant.error_curves`: the real
      quantizer, pow2 or float scales, clipping, survivors never rounded to zero), read at
      k = d N on the same grid of d; no closed form. Needed at 2-3 bits, where Delta^2/12 is far
      from the real rounding error (benchmarks/results/error_model.json).
    """
    bits = np.arange(2, 17)
    magnitude = mask_order == "magnitude"
    exact = error_model in ("exact", *_MAX_GAIN) and not per_channel
    rows: list[_Group] = []
    for s in active:
        o = opts[s.name]
        wt = weights[s.name].detach()
        # each array only where the error model needs it (one pass over the layer each)
        u = _normalised(wt, "channel") if (per_channel or not magnitude) else None
        raw = wt.double().reshape(wt.shape[0], -1).numpy() if (magnitude or exact) and not per_channel else None
        bmin = o.min_bits if o.min_bits is not None else min_bits
        bmax = o.max_bits if o.max_bits is not None else max(max_bits, bmin)
        if bmin > bmax:
            raise OpqError(f"layer {s.name!r}: min bits {bmin} > max bits {bmax}")
        if per_channel:
            a = _weight_of(s, weighting, o, float(np.sum(u * u)))
            for c in range(u.shape[0]):
                b, _ = laplace.fit_scale(u[c])
                rows.append(_Group(s.name, c, u.shape[1], max(b, 1e-12), a, bmin, bmax, 1, s, 1.0, None))
            continue
        x = raw if raw is not None else u  # the error model's units
        a = _weight_of(s, weighting, o, float(np.sum(x * x)) if weighting == "relative" else None)
        if magnitude:  # the centre selected on the float16/32 weights (the same median, `laplace.median`)
            small = wt.dtype in (torch.float16, torch.float32)
            b, _ = laplace.fit_scale(raw, centre=laplace.median(wt.reshape(-1).numpy()) if small else None)
        else:
            b, _ = laplace.fit_scale(u)
        qf = 1.0
        if magnitude and not exact:
            aw = np.abs(raw)
            qf = float(np.sum(aw.max(axis=1) ** 2 * aw.sum(axis=1)) / max(np.sum(aw), 1e-300))
        table = None
        if exact:
            bl = [int(B) for B in bits if bmin <= B <= bmax]
            _, prune, q = error_curves(weights[s.name], bl, normalisation="channel", mask_order=mask_order,
                                       scale_mode=scale_mode, max_samples=_TABLE_SAMPLES, gain=error_model in _MAX_GAIN,
                                       max_gain=_MAX_GAIN[error_model][s.name in edges] if error_model in _MAX_GAIN else math.inf,
                                       col_weight=None if columns is None else columns[s.name])
            quant = np.full((len(bits), len(prune)), np.inf)
            quant[[int(B) - 2 for B in bl]] = q
            table = (prune, quant)
        rows.append(_Group(s.name, None, s.n_weights, max(b, 1e-12), a, bmin, bmax, s.out_channels, s, qf, table))
    g, nb = len(rows), len(bits)
    err = np.full((g, nb, _GRID), np.inf)
    cost = np.full((g, nb, _GRID), np.inf)
    dd = np.ones((g, nb, _GRID))
    lin = np.zeros((g, nb))
    for i, r in enumerate(rows):
        n, b, a, qf, table = r.n, r.b, r.a, r.qf, r.table
        for j, B in enumerate(bits):
            delta = float(laplace.step(B))
            d_lo = min(1.0, r.kmin / n)
            # t >= Delta/2 (Laplace): no survivor rounds to zero; the exact table prices that case itself
            d_hi = 1.0 if table is not None else max(d_lo, math.exp(-delta * math.sqrt(qf) / 2 / b))
            d = np.geomspace(d_lo, d_hi, _GRID)
            dd[i, j] = d
            if not r.bmin <= B <= r.bmax:
                continue
            if table is not None:
                x = d * (table[0].size - 1)
                xp = np.arange(table[0].size)
                err[i, j] = a * (np.interp(x, xp, table[0]) + np.interp(x, xp, table[1][j]))
            else:
                t = -b * np.log(d)
                err[i, j] = a * n * (laplace.prune_error(t, b) + d * qf * delta**2 / 12)
            cost[i, j] = _call_cost(cost_fn, r.spec, int(B), d * n)
            lin[i, j] = (cost[i, j, -1] - cost[i, j, 0]) / max((d_hi - d_lo) * n, 1e-12)
    groups = _Groups([r.name for r in rows], np.array([r.n for r in rows], float), err, cost, dd,
                     np.array([r.a for r in rows]), np.array([r.b for r in rows]), bits, lin,
                     np.array([r.qf for r in rows]), [r.table for r in rows] if exact else None)
    f1 = lambda lam: groups.solve(lam)  # noqa: E731
    lo_size, hi_size = f1(1e8)[-1], f1(1e-16)[-1]
    res = _bisect(f1, var_budget)
    if res is None:
        raise _unreachable(target, lo_size, hi_size)
    lam1, (bi_hi, _, _), lam0 = res
    # Stage 2: integer bit widths jump, so fill the budget with the thresholds alone, from both
    # sides of the jump: the feasible bits (lam lowered) and the infeasible bits (lam raised).
    cands: list[_Candidate] = []
    for fixed, lo, hi in ((bi_hi, 1e-16, lam1), (None if lam0 is None else groups.solve(lam0)[0], lam0, 1e8)):
        if fixed is None:
            continue
        r = _bisect(lambda lam, fixed=fixed: groups.solve(lam, fixed_bits=fixed), var_budget, lo=lo, hi=hi)
        if r is not None:
            lam, (bi, d, size), lam_inf = r
            if exact and lam_inf is not None and size < var_budget:
                # grid points jump: at the critical lam the groups that change may take any point
                # between their two choices (the Lagrangian is tied there); mix to fill the budget
                _, d2, size2 = groups.solve(lam_inf, fixed_bits=fixed)
                if size2 > size:
                    alpha = (var_budget - size) / (size2 - size) * (1 - 1e-9)
                    d = d + alpha * (d2 - d)
                    size = size + alpha * (size2 - size)
            cands.append(_Candidate(size < 0.99 * var_budget, groups.error(bi, d), lam, bi, d))
    best = min(cands, key=lambda c: (c.short, c.error))
    lam, bi, d = best.lam, best.bi, best.d
    ks = np.maximum(np.rint(d * groups.n).astype(np.int64), np.array([r.kmin for r in rows]))
    ks = np.minimum(ks, groups.n.astype(np.int64))
    B = bits[bi]
    _trim_to_budget(rows, ks, B, cost_fn, var_budget)
    decisions: dict[str, _Decision] = {}
    for r, k, Bi, t in zip(rows, ks, B, -groups.b * np.log(d)):
        if magnitude and not per_channel:
            t = float("nan")  # set from the mask in _finish: the raw |w| of the weakest survivor
        dec = decisions.setdefault(r.name, _Decision(a=r.a, normalisation="channel", per_channel=r.channel is not None))
        dec.bits.append(int(Bi)); dec.k.append(int(k)); dec.b.append(float(r.b)); dec.t.append(float(t))
    return decisions, lam


def _call_cost(cost_fn, spec, bits, k):
    try:
        out = np.asarray(cost_fn(spec, bits, k), dtype=np.float64)
        if out.shape == np.shape(k):
            return out
    except (TypeError, ValueError):
        pass
    return np.array([float(cost_fn(spec, bits, float(x))) for x in np.ravel(k)])


def _group_cost(rows, ks, B, cost_fn):
    return float(sum(_call_cost(cost_fn, r.spec, int(b), np.array([float(k)]))[0] for r, k, b in zip(rows, ks, B)))


def _trim_to_budget(rows, ks, B, cost_fn, var_budget):
    """Integer survivor counts may round above the budget: drop survivors from the largest groups;
    where that does not lower a cost made of steps (block RAMs) in time, `_trim_steps` from the
    rounded counts."""
    kmin = np.array([r.kmin for r in rows])
    start = ks.copy()
    for _ in range(10 * len(rows) + 100):
        if _group_cost(rows, ks, B, cost_fn) <= var_budget + 1e-6:
            return
        i = int(np.argmax(np.where(ks > kmin, ks * B, -1)))
        if ks[i] <= kmin[i]:
            break
        ks[i] -= max(1, int(0.001 * ks[i]))
    if _group_cost(rows, ks, B, cost_fn) > var_budget + 1e-6:
        ks[:] = start
        _trim_steps(rows, ks, B, cost_fn, var_budget, kmin)


def _trim_steps(rows, ks, B, cost_fn, var_budget, kmin):
    """Lower a stepped cost to the budget one step at a time: each step cuts the group that gives up the
    fewest weight bits per unit of cost, down to the largest count below its current step (found by
    bisection; a resource cost never falls as survivors are added)."""
    def cost(i, k):
        return float(_call_cost(cost_fn, rows[i].spec, int(B[i]), np.array([float(k)]))[0])

    while _group_cost(rows, ks, B, cost_fn) > var_budget + 1e-6:
        best = None
        for i in range(len(rows)):
            c = cost(i, ks[i])
            if ks[i] <= kmin[i] or cost(i, kmin[i]) >= c:
                continue
            lo, hi = int(kmin[i]), int(ks[i])  # cost(lo) < c = cost(hi)
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if cost(i, mid) < c else (lo, mid)
            loss = (ks[i] - lo) * B[i] / (c - cost(i, lo))
            if best is None or loss < best[0]:
                best = (loss, i, lo)
        if best is None:
            raise OpqError("integer rounding could not meet the budget; raise the target budget slightly")
        ks[best[1]] = best[2]


def _largest_feasible(size, lo: float, hi: float, budget: float, iters: int = 100) -> float | None:
    """Largest x in [lo, hi] with size(x) <= budget, for size non-decreasing in x (None if none)."""
    if size(lo) > budget:
        return None
    if size(hi) <= budget:
        return hi
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if size(mid) <= budget else (lo, mid)
    return lo


def _uniform_like(active, weights, opts, cost_fn, var_budget, weighting, min_bits, max_bits, method, uniform_bits, target):
    """uniform: one bit width and one sparsity everywhere; global-magnitude: one |w| threshold, layer-wise scale.

    For each candidate bit width the sparsity (or threshold) is bisected to meet the budget; the bit
    width with the lowest measured (not modelled) a-weighted squared error on the normalised weights wins.
    """
    norm = "layer" if method == "global-magnitude" else "channel"
    data = []
    for s in active:
        u = np.abs(_normalised(weights[s.name], norm)).ravel()
        raw = np.abs(weights[s.name].detach().double().numpy()).ravel()
        key = raw if method == "global-magnitude" else u
        order = np.argsort(-key, kind="stable")
        data.append((s, np.sort(key)[::-1], np.cumsum((u[order] ** 2)[::-1])[::-1], u,
                     _weight_of(s, weighting, opts[s.name], float(np.sum(u * u)))))
    cands = [uniform_bits] if uniform_bits else list(range(min_bits, max_bits + 1))
    best = None
    for B in cands:
        def ks_for(x):
            if method == "global-magnitude":  # x = -(global threshold on |w|)
                return [max(1, int(np.searchsorted(-sk, x, side="right"))) for s, sk, *_ in data]
            return [max(s.out_channels, int(round(x * s.n_weights))) for s, *_ in data]  # x = survivor fraction

        def size(x):
            return sum(float(_call_cost(cost_fn, s, B, np.array([float(k)]))[0]) for (s, *_), k in zip(data, ks_for(x)))

        lo = -float(max(sk[0] for _, sk, *_ in data)) if method == "global-magnitude" else 0.0
        x = _largest_feasible(size, lo, 0.0 if method == "global-magnitude" else 1.0, var_budget)
        if x is None:
            continue
        ks = ks_for(x)
        delta = float(laplace.step(B))
        err = sum(a * ((tail[k] if k < len(tail) else 0.0) + k * delta**2 / 12) for (s, sk, tail, u, a), k in zip(data, ks))
        key = (size(x) < 0.99 * var_budget, err)  # prefer bit widths that use the budget, then the least error
        if best is None or key < best[0]:
            best = (key, B, ks)
    if best is None:
        sizes = []
        for B in (min_bits, max_bits):
            sizes.append(sum(float(_call_cost(cost_fn, s, B, np.array([float(k)]))[0])
                             for s, k in ((d[0], d[0].out_channels if B == min_bits else d[0].n_weights) for d in data)))
        raise _unreachable(target, sizes[0], sizes[1])
    _, B, ks = best
    return {s.name: _Decision(a=a, normalisation=norm, bits=[B], k=[k], b=[float(np.mean(u))], t=[0.0])
            for (s, sk, tail, u, a), k in zip(data, ks)}, 0.0


def _finish(specs, weights, opts, decisions, method, scale_mode, weighting, target_cr, kind, lam, cost_fn,
            mask_order="channel-normalised", error_model="laplace") -> Allocation:
    layers = []
    bits_w = bits_idx = 0
    notes = []
    for s in specs:
        w = weights[s.name]
        if opts[s.name].skip:
            layers.append(LayerAlloc(name=s.name, bits=32, n_weights=s.n_weights, n_nonzero=s.n_weights, sparsity=0.0,
                                     scales=(1.0,) * s.out_channels, skipped=True))
            bits_w += 32 * s.n_weights
            bits_idx += 32 * s.n_weights
            notes.append(f"{s.name}: skipped by override (32-bit dense)")
            continue
        dec = decisions[s.name]
        per_channel = dec.per_channel
        ch_bits = dec.bits if per_channel else dec.bits * s.out_channels
        scales = make_scales(w, ch_bits, dec.normalisation, scale_mode)
        nnz = int(sum(dec.k))
        side = side_bits(method, scale_mode, s.out_channels)
        la = LayerAlloc(
            name=s.name, bits=int(max(ch_bits)), n_weights=s.n_weights, n_nonzero=nnz,
            sparsity=1.0 - nnz / s.n_weights, scales=scales,
            threshold=float(np.mean(dec.t)), laplace_b=float(np.mean(dec.b)), weight=float(dec.a),
            channel_bits=tuple(ch_bits) if per_channel else None,
            channel_nonzero=tuple(dec.k) if per_channel else None,
            normalisation=dec.normalisation, side_bits=side, mask_order=mask_order)
        mask, kept_min = layer_mask_threshold(w, la)  # q is not needed here: the mask alone, without quantizing
        realised = int(mask.sum())
        assert realised == nnz, (s.name, realised, nnz)
        la = dataclasses.replace(la, mask_digest=mask_digest(mask))
        if math.isnan(la.threshold):  # magnitude order: the realised threshold, the weakest survivor's |w|
            if kept_min is None:  # all or none kept
                kept_min = float(w.detach().abs()[mask].min()) if nnz else 0.0
            la = dataclasses.replace(la, threshold=kept_min)
        layers.append(la)
        wbits = sum(k * b for k, b in zip(dec.k, dec.bits)) if per_channel else nnz * dec.bits[0]
        bits_w += wbits + side
        bits_idx += wbits + side + s.n_weights
    total = sum(s.n_weights for s in specs)
    return Allocation(layers=tuple(layers), method=method, scale_mode=scale_mode, weighting=weighting,
                      target=target_cr, target_kind=kind, cr_w=32.0 * total / bits_w, cr_idx=32.0 * total / bits_idx,
                      total_bits_w=int(bits_w), total_bits_idx=int(bits_idx), lam=float(lam), notes=tuple(notes),
                      mask_order=mask_order, error_model=error_model)


def compress(weights: Mapping[str, torch.Tensor], allocation: Allocation) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(q, scales, mask) per non-skipped layer; checks that the masks are the allocation's."""
    out = {}
    for la in allocation.layers:
        if la.skipped:
            continue
        q, s, m = compress_layer(weights[la.name], la)
        if mask_digest(m) != la.mask_digest:
            raise OpqError(f"layer {la.name!r}: these weights do not give the allocation's mask; "
                           "allocate again from these weights (an allocation belongs to the weights it was made from)")
        out[la.name] = (q, s, m)
    return out
