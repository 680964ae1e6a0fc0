"""Unified channel-wise quantization and magnitude masks, in plain torch.

This is the reference for what a compressed layer computes: `q` integers on one shared
codebook per layer (or per channel for the non-unified baseline), per-output-channel scales,
and a top-k magnitude mask. The Brevitas carrier must reproduce it exactly.
"""
from __future__ import annotations

import hashlib
import math

import numpy as np
import torch

from .errors import OpqError
from .spec import DEFAULTS, LayerAlloc


def qmax(bits: int) -> int:
    """Largest code of a narrow-range signed integer of `bits` bits."""
    return 2 ** (bits - 1) - 1


def channel_max(w: torch.Tensor) -> torch.Tensor:
    """max |w| per output channel (dim 0)."""
    return w.detach().reshape(w.shape[0], -1).abs().amax(dim=1)


def normaliser(w: torch.Tensor, normalisation: str) -> torch.Tensor:
    """Per-output-channel divisor that maps the layer onto [-1, 1]: channel or layer max |w|."""
    m = channel_max(w).double()
    if normalisation == "layer":
        m = torch.full_like(m, float(m.max()))
    elif normalisation != "channel":
        raise OpqError(f"normalisation must be 'channel' or 'layer', got {normalisation!r}")
    return torch.where(m > 0, m, torch.ones_like(m))


def make_scales(w: torch.Tensor, bits_per_channel: list[int], normalisation: str, scale_mode: str) -> tuple[float, ...]:
    """Dequantisation scale per output channel: max |w| / K, rounded up to a power of two in pow2 mode."""
    return _scales_from_max(normaliser(w, normalisation), bits_per_channel, scale_mode)


def _scales_from_max(m: torch.Tensor, bits_per_channel: list[int], scale_mode: str) -> tuple[float, ...]:
    out = []
    for mc, b in zip(m.tolist(), bits_per_channel):
        s = mc / qmax(b)
        if scale_mode == "pow2":
            s = 2.0 ** math.ceil(math.log2(s))
        elif scale_mode != "float":
            raise OpqError(f"scale_mode must be 'float' or 'pow2', got {scale_mode!r}")
        out.append(s)
    return tuple(torch.tensor(out, dtype=torch.float64).to(torch.float32).tolist())  # one conversion, not one per channel


def _scales_vec(m: torch.Tensor, bits: int, scale_mode: str) -> torch.Tensor:
    """`make_scales` for one bit width, vectorised (float32): max / K, or rounded up to a power of two."""
    s = m.double().numpy() / qmax(bits)
    if scale_mode == "pow2":
        s = np.exp2(np.ceil(np.log2(s)))
    return torch.from_numpy(s).to(torch.float32)


def _top_k(score: torch.Tensor, k: int) -> torch.Tensor:
    """Mask of the k largest entries of a 1-D tensor, ties by lower index first: the same set as
    `argsort(-score, stable=True)[:k]`, found with one selection (O(n)) instead of a full sort."""
    return _top_k_value(score, k)[0]


def _top_k_value(score: torch.Tensor, k: int) -> tuple[torch.Tensor, float | None]:
    """`_top_k` and the smallest kept score (None when all or none are kept)."""
    n = score.numel()
    k = len(range(n)[:k])  # the slice's semantics, so any k selects what order[:k] would
    if k == 0 or k == n:
        return torch.full((n,), k == n, dtype=torch.bool), None
    # the k-th largest value: numpy's introselect with one kth (measured ~5-10x faster than
    # torch.kthvalue on CPU), the same order statistic
    v = float(np.partition(score.detach().cpu().numpy(), n - k)[n - k])
    mask = score > v
    need = k - int(mask.sum())
    if need > 0:  # fill with the first entries (by index) equal to it
        mask[torch.nonzero(score == v).reshape(-1)[:need]] = True
    return mask, v


MASK_ORDERS = ("magnitude", "channel-normalised")


def mask_score(w: torch.Tensor, normalisation: str, mask_order: str) -> torch.Tensor:
    """What a mask ranks, (out_channels, -1) float64: raw |w| ("magnitude") or |w| / normaliser
    ("channel-normalised", the criterion before mask orders existed).

    Why raw |w|: the per-channel normalisation belongs to the shared codebook, not to the pruning
    order. Dividing by the channel max makes every weight of a channel with one large outlier look
    unimportant, so the old order pruned large weights of such channels and kept small ones of
    others (measured in shared OPQ.md: relative weight error 0.32-0.36 vs 0.23-0.25 at the same k).
    """
    a = w.detach().reshape(w.shape[0], -1).abs().double()
    if mask_order == "magnitude":
        return a
    if mask_order != "channel-normalised":
        raise ValueError(f"mask_order must be one of {MASK_ORDERS}, got {mask_order!r}")
    return a / normaliser(w, normalisation)[:, None]


def topk_mask(w: torch.Tensor, k_per_group: list[int], normalisation: str, per_channel: bool,
              mask_order: str = "channel-normalised") -> torch.Tensor:
    """Keep the k largest scores (`mask_score`) per layer, or per channel; ties by index (stable)."""
    if not per_channel:
        return _layer_top_k(w, k_per_group[0], normalisation, mask_order)[0]
    score = mask_score(w, normalisation, mask_order)
    mask = torch.zeros_like(score, dtype=torch.bool)
    for c, k in enumerate(k_per_group):
        mask[c] = _top_k(score[c], k)
    return mask.reshape(w.shape)


def _layer_top_k(w: torch.Tensor, k: int, normalisation: str, mask_order: str) -> tuple[torch.Tensor, float | None]:
    """A layer-wide `topk_mask` and its smallest kept score. Raw |w| of float16/32 weights is
    ranked in float32: `mask_score`'s float64 conversion keeps every value, so the order, the ties
    and the selected set are the same, at half the memory traffic."""
    if mask_order == "magnitude" and w.dtype in (torch.float16, torch.float32):
        score = w.detach().reshape(-1).abs().float()
    else:
        score = mask_score(w, normalisation, mask_order).reshape(-1)
    mask, v = _top_k_value(score, k)
    return mask.reshape(w.shape), v


def layer_mask_threshold(w: torch.Tensor, la: LayerAlloc) -> tuple[torch.Tensor, float | None]:
    """`layer_mask` and, for a layer-wide mask, its smallest kept score (raw magnitude order: the
    weakest survivor's |w|); None where the selection does not give it (per-channel masks, all or
    no weights kept)."""
    if la.channel_nonzero is not None:
        return layer_mask(w, la), None
    return _layer_top_k(w, la.n_nonzero, la.normalisation, la.mask_order)


def layer_mask(w: torch.Tensor, la: LayerAlloc) -> torch.Tensor:
    """The layer's top-k magnitude mask from its allocation (what `compress_layer` uses)."""
    per_channel = la.channel_nonzero is not None
    ks = list(la.channel_nonzero) if per_channel else [la.n_nonzero]
    return topk_mask(w, ks, la.normalisation, per_channel, la.mask_order)


def quantize(w: torch.Tensor, mask: torch.Tensor, scales: torch.Tensor, kmax: torch.Tensor) -> torch.Tensor:
    """Integer codes: round(w / s_c) clipped to +-K_c; survivors never round to zero (+-1); pruned = 0."""
    shape = (-1,) + (1,) * (w.dim() - 1)
    s = scales.reshape(shape).to(w.dtype)
    k = kmax.reshape(shape).to(w.dtype)
    q = torch.clamp(torch.round(w.detach() / s), -k, k)
    q = torch.where(mask & (q == 0) & (w != 0), torch.sign(w.detach()), q)
    return torch.where(mask, q, torch.zeros_like(q))


def mask_digest(mask: torch.Tensor) -> str:
    return hashlib.sha256(mask.to(torch.uint8).contiguous().numpy().tobytes()).hexdigest()


def compress_layer(w: torch.Tensor, la: LayerAlloc) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(q, scales, mask) for a layer from its float weights and its allocation (the one-shot step)."""
    mask = layer_mask(w, la)
    bits = list(la.channel_bits) if la.channel_bits is not None else [la.bits] * w.shape[0]
    kmax = torch.tensor([qmax(b) for b in bits], dtype=torch.float32)
    scales = torch.tensor(la.scales, dtype=torch.float32)
    return quantize(w.float(), mask, scales, kmax), scales, mask


def dequantize(q: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    return q * scales.reshape((-1,) + (1,) * (q.dim() - 1))


def error_curves(w: torch.Tensor, bits: list[int], *, normalisation: str = "channel", mask_order: str = DEFAULTS.mask_order,
                 scale_mode: str = "float", max_samples: int | None = None, seed: int = 0, gain: bool = False,
                 max_gain: float = math.inf, col_weight: torch.Tensor | None = None):
    """Exact squared weight error of a layer for every survivor count and bit width at once.

    The layer's weights are put in mask order (largest score first); for each bit width the real
    quantizer (`make_scales` + `quantize`: per-channel scale, clipping, survivors never rounded to
    zero) gives every weight's rounding error, and cumulative sums along the order give, for the
    first k weights kept,  E(B, k) = quant[B][k] + prune[k]  with
    quant[B][k] = sum of the k kept weights' rounding errors, prune[k] = sum of the pruned w^2.
    With `max_samples` a random subset (seeded) of that many weights stands for the layer and the
    sums are scaled by N / samples (the value at survivor fraction d is then read at k = d * samples).

    gain=True: quant[B][k] = (energy of the k kept) - (w . w_hat)^2 / |w_hat|^2 over them, so that
    prune + quant = min_g |w - g w_hat|^2, the error up to one gain per layer (the `exact-gain`
    error model: a gain common to a layer only rescales its outputs, which the next activation
    quantizer, calibrated on the compressed model, largely takes up; per-channel gains are not
    forgiven). This is what lets 2-bit layers, whose max-based scale overshoots every survivor,
    be priced by their shape error instead of their scale error.
    max_gain (with gain=True): the forgiven gain g is limited to [1/max_gain, max_gain]; the error is
    then min over that range of |w - g w_hat|^2 = shape error + (g - g*)^2 |w_hat|^2 (g* the
    unbounded least-squares gain). Nothing scales the biases, so a gain the model does not absorb
    is error; math.inf: the unbounded `exact-gain`.

    col_weight: one factor >= 0 per column of w.reshape(C, -1) (per input, times kernel position) that
    multiplies each weight's squared error, and its products in the gain (`--sensitivity output-diag`:
    the mean square of the weight's input, so that the error is the diagonal of ||(W - W_hat) X||^2).

    Returns (n_points, prune (m+1,), quant (len(bits), m+1)), float64, in units of w^2.
    """
    w = w.detach()
    C = w.shape[0]
    flat = w.reshape(C, -1)
    n, per = flat.numel(), flat.shape[1]
    idx = None
    if max_samples is not None and n > max_samples:
        g = torch.Generator().manual_seed(seed)
        idx = torch.randint(n, (max_samples,), generator=g)  # with replacement: O(samples), not O(n)
    x = (flat.reshape(-1) if idx is None else flat.reshape(-1)[idx]).double()
    ch = torch.arange(n) // per if idx is None else idx // per
    cmax = normaliser(w, normalisation)  # once; make_scales' arithmetic per bit width below
    if mask_order == "magnitude":
        score = x.abs()
    elif mask_order == "channel-normalised":  # the same float64 division as mask_score
        score = x.abs() / cmax[ch]
    else:
        raise ValueError(f"mask_order must be one of {MASK_ORDERS}, got {mask_order!r}")
    m = x.numel()
    order = torch.argsort(-score, stable=True)
    x, ch = x[order], ch[order]
    f = n / m
    cw = None
    if col_weight is not None:
        col = torch.arange(n) % per if idx is None else idx % per
        cw = col_weight.double()[col[order]]
    x2 = x * x if cw is None else cw * x * x
    prune = torch.zeros(m + 1, dtype=torch.float64)
    prune[:m] = torch.flip(torch.cumsum(torch.flip(x2, (0,)), 0), (0,))
    quant = torch.zeros(len(bits), m + 1, dtype=torch.float64)
    # every bit width at once (rows): the same elementwise arithmetic, and cumsum along each row
    nb = len(bits)
    s = torch.stack([_scales_vec(cmax, int(B), scale_mode) for B in bits])[:, ch]  # (nb, m)
    kmax = torch.tensor([float(qmax(int(B))) for B in bits]).repeat_interleave(m)
    q = quantize(x.float().repeat(nb).reshape(-1, 1), torch.ones(nb * m, 1, dtype=torch.bool), s.reshape(-1, 1),
                 kmax).reshape(nb, m)
    wq = q.double() * s.double()
    xw = x if cw is None else cw * x
    if gain:  # error up to one gain per layer: kept energy - (w . w_hat)^2 / |w_hat|^2, per prefix
        c1, c2 = torch.cumsum(xw * wq, 1), torch.cumsum(wq * wq if cw is None else cw * wq * wq, 1)
        c2 = torch.clamp(c2, min=1e-300)
        if math.isinf(max_gain):
            quant[:, 1:] = (torch.cumsum(x2, 0) - c1 * c1 / c2).clamp(min=0)
        else:  # |w|^2 - 2 g w.w_hat + g^2 |w_hat|^2 at the gain nearest g* within the range
            g = torch.clamp(c1 / c2, 1 / max_gain, max_gain)
            quant[:, 1:] = (torch.cumsum(x2, 0) - 2 * g * c1 + g * g * c2).clamp(min=0)
    else:
        quant[:, 1:] = torch.cumsum((x - wq) ** 2 if cw is None else cw * (x - wq) ** 2, 1)
    return n, (prune * f).numpy(), (quant * f).numpy()
