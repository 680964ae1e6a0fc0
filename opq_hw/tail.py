"""A classifier head (final Softmax / Sigmoid) in hardware: `--tail hw`, and the tolerance it is compared with.

By default the front end cuts a model's final Softmax / LogSoftmax / Sigmoid off (`tail: softmax on the host`):
the hardware computes the pre-activation outputs, which are compared bit-exactly. With `--tail hw` a flow that
can computes the head itself; hls4ml does it with lookup tables (its `softmax` "stable" implementation and its
`sigmoid` table), which no float reference reproduces bit for bit. The head is then compared with the host's
float64 head of the bit-exact reference logits, within a tolerance stated before the comparison and computed
from the tables' sizes and types (`TailTables.tolerance`, derivation in its docstring); the simulation reports
the measured largest absolute error beside it and says `within tolerance T: yes|no`.

Flows without such tables (RTL, FINN) refuse `--tail hw` by name (`refuse_tail_hw`). numpy only.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .errors import OpqError

TAIL_CHOICES = ("host", "hw")
HW_OPS = ("softmax", "sigmoid")  # heads hls4ml computes (LogSoftmax: no hls4ml layer)
TABLE_BITS = 12  # 4096-entry tables (hls4ml's default is 1024)
NORM_INT = 3  # softmax: x_max - x_i saturates at 2^3 = 8 (exp(-8) = 3.4e-4)
OUT_FRAC = 16  # the head's result type: ufixed<17,1> (values in [0, 1])
TABLE_FRAC = 17  # table entries: ufixed<18,1> (values in [0, 1]), rounded to nearest


class TailNotInHardware(OpqError):
    """`--tail hw` asked of a flow or a run that cannot compute its head in hardware."""


def run_tail(run) -> str | None:
    """The head the front end cut off this run's model ("softmax", "log-softmax", "sigmoid"), or None."""
    return ((run.manifest or {}).get("frontend") or {}).get("tail")


def check_tail_option(tail: str | None) -> bool:
    """True for `--tail hw`; None / "host" is the default (the head on the host)."""
    if tail in (None, "host"):
        return False
    if tail != "hw":
        raise OpqError(f"unknown --tail {tail!r}; use 'host' (the default: the head on the host) or 'hw'")
    return True


def refuse_tail_hw(flow: str, tail: str | None, why: str) -> None:
    """The named refusal of a flow that cannot compute a classifier head in hardware."""
    if check_tail_option(tail):
        raise TailNotInHardware(f"--tail hw: the {flow} flow cannot compute a Softmax/Sigmoid head in hardware ({why}); "
                                f"build without --tail (the head stays on the host and the {flow} output is compared "
                                "bit-exactly before it), or use --flow hls4ml --tail hw")


def hw_head(run) -> str:
    """The head of a run that `--tail hw` puts in hardware; a named error when there is none or it has no table."""
    op = run_tail(run)
    if op is None:
        raise TailNotInHardware(f"--tail hw: run {run.path.name!r} has no Softmax/Sigmoid head (its model ends in "
                                "the layer whose outputs the hardware computes); build without --tail")
    if op not in HW_OPS:
        raise TailNotInHardware(f"--tail hw: the run's head is {op}, which hls4ml 1.3.0 has no layer for; build without "
                                "--tail (the head stays on the host)")
    return op


def host(op: str, logits: np.ndarray) -> np.ndarray:
    """The head on the host, float64: what the hardware head is compared with."""
    z = np.asarray(logits, dtype=np.float64)
    if op == "softmax":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    if op == "sigmoid":
        return 1.0 / (1.0 + np.exp(-z))
    raise OpqError(f"no host function for head {op!r}")


def _ufixed(width: int, integer: int, rounding: str = "TRN", saturation: str = "SAT") -> str:
    return f"ufixed<{width},{integer},{rounding},{saturation}>"


@dataclass(frozen=True)
class TailTables:
    """hls4ml's table implementation of a head with every type stated (none left to hls4ml's defaults)."""

    op: str  # softmax | sigmoid
    n: int  # outputs (the softmax slice)
    table_bits: int = TABLE_BITS

    @property
    def table_size(self) -> int:
        return 2 ** self.table_bits

    def types(self) -> dict[str, str]:
        """hls4ml type name (key_t) -> precision string; all unsigned, truncating, saturating unless noted."""
        res = {"result_t": _ufixed(OUT_FRAC + 1, 1)}
        if self.op == "sigmoid":
            return {**res, "table_t": _ufixed(TABLE_FRAC + 1, 1, "RND")}
        k = max(1, math.ceil(math.log2(self.n + 1)))  # integer bits of a sum of n values in [0, 1]
        return {**res,
                "exp_table_t": _ufixed(TABLE_FRAC + 1, 1, "RND"),
                "inv_table_t": _ufixed(TABLE_FRAC + 1, 1, "RND"),
                "accum_t": _ufixed(TABLE_FRAC + 1 + k, 1 + k),  # the exact sum of the n table values
                "inv_inp_t": _ufixed(self.table_bits, k),  # the sum, truncated to the inverse table's index
                "inp_norm_t": _ufixed(self.table_bits, NORM_INT)}  # x_max - x_i, truncated to the exp table's index

    def config(self) -> dict[str, Any]:
        """The layer's entry in hls4ml's `LayerName` config (the result type under Precision, the table types as
        `_t` keys: each becomes its own typedef)."""
        types = self.types()
        cfg: dict[str, Any] = {"table_size": self.table_size, "Precision": {"result": types.pop("result_t")}, **types}
        if self.op == "softmax":
            cfg["implementation"] = "stable"
        return cfg

    def tolerance(self) -> float:
        """Largest absolute error of the hardware head against the float64 head of the same (exact) logits.

        softmax ("stable": d_i = x_max - x_i in inp_norm_t, exp table indexed by its top bits, sum s, inverse table
        indexed by the sum's top bits, p_i = exp_i * inv): with h_e = 2^(NORM_INT - B) the exp-index step,
        r_e = e^h_e - 1 (truncating d_i makes exp(-d_i) at most r_e relatively too large), s_e = e^-(8 - h_e)
        (d_i >= 8 saturates), e_t / e_v the exp / inverse table LSBs, h_i the inverse index step and e_o the
        result LSB, and using e_i <= 1 <= s (the max's entry is exp(0) = 1):
            |p_hw - p| <= (r_e + s_e + e_t)(1 + e_v) + e_v + h_i + r_e + n (s_e + e_t) + e_o.
        sigmoid (table over [-8, 8) with step h = 16 / 2^B, index off by less than two steps, slope <= 1/4):
            |y_hw - y| <= 2h/4 + sigmoid(-(8 - h)) + e_t + e_o."""
        e_o, e_t = 2.0 ** -OUT_FRAC, 2.0 ** -TABLE_FRAC
        if self.op == "sigmoid":
            h = 16.0 / self.table_size
            return 2 * h / 4 + 1.0 / (1.0 + math.exp(8 - h)) + e_t + e_o
        k = max(1, math.ceil(math.log2(self.n + 1)))
        h_e, h_i, e_v = 2.0 ** (NORM_INT - self.table_bits), 2.0 ** (k - self.table_bits), e_t
        r_e, s_e = math.expm1(h_e), math.exp(-(2 ** NORM_INT - h_e))
        return (r_e + s_e + e_t) * (1 + e_v) + e_v + h_i + r_e + self.n * (s_e + e_t) + e_o

    def record(self) -> dict[str, Any]:
        return {**asdict(self), "where": "hardware", "implementation": "hls4ml " + (
            "softmax stable (exp and inverse tables)" if self.op == "softmax" else "sigmoid table"),
                "table_size": self.table_size, "types": self.types(), "tolerance": self.tolerance(),
                "compared_with": f"float64 {self.op} of the bit-exact reference outputs"}


def compare_tail(ref_logits: np.ndarray, out: np.ndarray, tail: dict[str, Any]) -> dict[str, Any]:
    """The hardware head `out` against the host head of the reference logits, within the stated tolerance."""
    ref = host(tail["op"], ref_logits)
    if out.shape != ref.shape:
        raise OpqError(f"head output shape {out.shape} differs from the reference {ref.shape}")
    diff = np.abs(out.astype(np.float64) - ref)
    tol = float(tail["tolerance"])
    ok = bool(np.all(np.isfinite(out))) and bool(diff.size == 0 or diff.max() <= tol)
    return {"n": int(len(ref)), "tail": tail, "tolerance": tol, "within_tolerance": ok, "bit_exact": False,
            "within_samples": int(np.sum(np.all(diff <= tol, axis=1))),
            "max_abs_diff": float(diff.max()) if diff.size else 0.0,
            "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
            "argmax_agreement": float(np.mean(out.argmax(1) == ref.argmax(1))) if len(ref) else 1.0,
            "max_diff_lsb": None}
