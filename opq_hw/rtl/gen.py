"""Whole-network Verilog for an `IntNet`: da4ml constant-weight kernels, streamed convolutions.

Architecture (one frame = one sample; one pixel = all channels of one position):
- the top level `opq_top` takes one input pixel per cycle (`s_valid`, `s_data`; `s_ready` is
  always 1: every stage accepts one pixel per cycle and the pipeline never stalls) and sends the
  logits one per cycle (`m_valid`, `m_data` = the last layer's signed integer accumulator,
  `m_last`); logit = m_data * 2^w_exp[c] (from `IntNet`).
- conv layer: `opq_window` (line buffer + zero padding, hls/rtl) -> one da4ml kernel
  `x @ W + b` over the KH*KW*C window (the same kernel serves every output position) ->
  requantization (per-channel power-of-two shift, round half to even, clamp = fused ReLU).
- max pool: `opq_maxpool`; flatten: free (the dense weights are permuted to stream order).
- dense layer: `opq_collect` gathers the frame into one vector -> da4ml kernel -> requant.
- last layer: kernel -> `opq_serialize` (narrow output).
- digit-serial variant (`generate(..., serial_bits=D)`, `serial_layer_body`): each kernel takes
  D-bit digits of its inputs, one per cycle, and a shift-accumulator per output adds them up; the
  stream then carries one pixel every P cycles (P = the most digits a layer needs). The window /
  collector keeps its pixels as digits (`opq_digit_chain`): each pixel is cut into digits once, as
  it enters (`digit_pixel`), and every tap reads its current digit at a fixed place. The logic that
  does not depend on the weights is trimmed there: the fixed modules' counters sized to the frame
  (their parameter SIZED), the requantizer's rounding constant folded into the bias
  (`folded_requant`: no incrementer), the serializer reading the held last output (HOLD).
Each layer is its own module `opq_L<i>` (synthesized alone for per-layer resource counts).
"""
from __future__ import annotations

import math
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import OpqError
from .geometry import COLLECT_COUNTER_BITS, WINDOW_COUNTER_BITS, digit_steps, shift_chains, window_offsets
from .intnet import IntLayer, IntNet, Pool
from .kept_bits import C1, pipeline_kept_bits
from ..resources import hdl_dir

HDL_DIR = hdl_dir()
STATIC_HDL = ("opq_window.v", "opq_maxpool.v", "opq_collect.v", "opq_serialize.v", "opq_digit_chain.v")


def _da4ml():
    try:
        import da4ml  # noqa: F401
        from da4ml.trace import FixedVariableArrayInput, HWConfig, comb_trace, to_pipeline
        from da4ml.trace.ops import quantize
    except ImportError as e:
        raise OpqError("the Python package 'da4ml' is not installed; run `make rtl-tools`") from e
    return FixedVariableArrayInput, HWConfig, comb_trace, to_pipeline, quantize


@dataclass
class Kernel:
    """A da4ml constant-matrix kernel: `y = x @ M + b` over n_in inputs of `in_bits` bits."""

    module: str
    n_in: int
    n_out: int
    in_bits: int
    in_signed: bool
    acc_w: int  # uniform signed width of each output on the wrapper bus
    latency: int  # clock cycles from input to registered output of the da4ml module (0: combinational)
    cost: float  # da4ml's LUT estimate
    n_stages: int
    files: dict[str, str] = field(default_factory=dict)  # module name -> verilog
    wrapper: str = ""
    used_in: list[bool] = field(default_factory=list)  # input j enters the adder graph (a nonzero weight)
    out_widths: list[int] = field(default_factory=list)  # bits da4ml gives output o (0: a constant)
    out_fracs: list[int] = field(default_factory=list)  # fractional bits of output o (<= 0: -zero low bits)
    out_zeros: list[int] = field(default_factory=list)  # trailing zero bits all of output o's weights share (-1: none)
    pipeline: Any = None  # da4ml's pipelined solution (None: combinational)


def matrix_for(L: IntLayer) -> np.ndarray:
    """The constant matrix M (n_in, n_out) in the order the stream presents the inputs.

    conv: window tap t = kh*KW + kw, channel c -> row t*C + c. dense: pixel p = h*W + w, channel
    c -> row p*C + c (the torch flatten order is c*H*W + p)."""
    if L.kind == "conv":
        cout, cin, kh, kw = L.w.shape
        return L.w.transpose(2, 3, 1, 0).reshape(kh * kw * cin, cout)
    c, h, w = L.in_shape
    wt = L.w.reshape(L.w.shape[0], c, h * w)  # o, c, p
    return wt.transpose(2, 1, 0).reshape(h * w * c, L.w.shape[0])


def make_kernel(L: IntLayer, module: str, pipeline: float, digit_bits: int = 0) -> Kernel:
    """Trace `x @ M + b` with da4ml and generate its Verilog (pipelined if `pipeline` > 0:
    da4ml's latency cutoff per stage, in its adder-delay units). `digit_bits` D > 0: the
    digit-serial kernel `d @ M` over unsigned D-bit digits d of the inputs, without the bias."""
    FixedVariableArrayInput, HWConfig, comb_trace, to_pipeline, quantize = _da4ml()
    from da4ml.codegen.rtl.verilog import comb_logic_gen
    from da4ml.codegen.rtl.verilog.pipeline import pipeline_logic_gen
    from da4ml.types import minimal_kif

    M = matrix_for(L).astype(np.float64)
    n_in, n_out = M.shape
    in_bits, in_signed = (digit_bits, False) if digit_bits else (L.in_bits, L.in_signed)
    k = 1 if in_signed else 0
    inp = FixedVariableArrayInput((n_in,), hwconf=HWConfig(1, -1, -1))
    x = quantize(inp, k, in_bits - k, 0)
    y = x @ M if digit_bits else x @ M + L.b.astype(np.float64)
    comb = comb_trace(inp, y)
    if pipeline and pipeline > 0:
        sol = to_pipeline(comb, float(pipeline), verbose=False)
        files = pipeline_logic_gen(sol, module, print_latency=False, timescale=None)
        n_stages = len(sol.solutions)
        latency = n_stages + 1  # registered input of every stage + registered output
    else:
        sol = comb
        files = {module: comb_logic_gen(comb, module, print_latency=False, timescale=None)}
        n_stages, latency = 0, 0
    in_kifs = [minimal_kif(q) for q in sol.inp_qint]
    out_kifs = [minimal_kif(q) for q in sol.out_qint]
    for j, (kk, ii, ff) in enumerate(in_kifs):
        w = int(kk) + int(ii) + int(ff)
        if w not in (0, in_bits) or (w and int(ff) != 0):
            raise OpqError(f"layer {L.name!r}: da4ml gave input {j} the format k={kk} i={ii} f={ff}, expected "
                           f"{in_bits}-bit integers; report this as a bug")
    acc_w = 2
    for kk, ii, ff in out_kifs:
        if int(ff) > 0:
            raise OpqError(f"layer {L.name!r}: da4ml output with fractional bits (f={ff}); weights must be integers")
        if int(kk) + int(ii) + int(ff) > 0:
            acc_w = max(acc_w, int(ii) + 1)
    K = Kernel(module, n_in, n_out, in_bits, in_signed, acc_w, latency, float(sol.cost), n_stages, files,
               used_in=[sum(map(int, q)) > 0 for q in in_kifs], out_widths=[sum(map(int, q)) for q in out_kifs],
               out_fracs=[int(q[2]) for q in out_kifs], out_zeros=[_common_zeros(M[:, o]) for o in range(n_out)],
               pipeline=sol if latency else None)
    K.wrapper = _kernel_wrapper(K, in_kifs, out_kifs)
    return K


def _common_zeros(col: np.ndarray) -> int:
    """Trailing zero bits every nonzero integer in `col` has (-1: all are zero)."""
    nz = [int(v) for v in col if v]
    return min((v & -v).bit_length() - 1 for v in nz) if nz else -1


def _kernel_wrapper(K: Kernel, in_kifs, out_kifs) -> str:
    """Uniform buses around the da4ml module: n_in x in_bits in, n_out x acc_w signed out."""
    lines = []
    off = 0
    parts = []
    for j, (kk, ii, ff) in enumerate(in_kifs):
        w = int(kk) + int(ii) + int(ff)
        if w:
            parts.append(f"x[{j * K.in_bits + w - 1}:{j * K.in_bits}]")
            off += w
    in_w = max(off, 1)
    packed_in = "{" + ", ".join(reversed(parts)) + "}" if parts else "1'b0"
    out_total = sum(int(a) + int(b) + int(c) for a, b, c in out_kifs)
    out_wire = max(out_total, 1)
    off = 0
    for j, (kk, ii, ff) in enumerate(out_kifs):
        w = int(kk) + int(ii) + int(ff)
        dst = f"y[{(j + 1) * K.acc_w - 1}:{j * K.acc_w}]"
        if w == 0:
            lines.append(f"    assign {dst} = {K.acc_w}'d0;")
            continue
        s = -int(ff)
        pad = K.acc_w - w - s
        assert pad >= 0
        src = f"p[{off + w - 1}:{off}]"
        ext = f"{{{pad}{{p[{off + w - 1}]}}}}" if int(kk) else f"{{{pad}{{1'b0}}}}"
        pieces = ([ext] if pad else []) + [src] + ([f"{s}'d0"] if s else [])
        lines.append(f"    assign {dst} = {{{', '.join(pieces)}}};")
        off += w
    clk_port = ".clk(clk), " if K.latency else ""
    return f"""module {K.module}_w (
    input clk,
    input [{K.n_in * K.in_bits - 1}:0] x,
    output [{K.n_out * K.acc_w - 1}:0] y
);
    wire [{in_w - 1}:0] xp = {packed_in};
    wire [{out_wire - 1}:0] p;
    {K.module} u_k ({clk_port}.model_inp(xp), .model_out(p));
{chr(10).join(lines)}
endmodule
"""


def requant_is_zero(shift: int, acc_w: int) -> bool:
    """`requant_expr` drops every bit of an `acc_w`-bit accumulator: |acc| <= 2^(acc_w-1) <=
    2^(-shift-1), so the result rounds to the constant 0."""
    return -shift >= acc_w


def requant_live_bits(width: int, frac: int, shift: int, out_bits: int, acc_w: int) -> int:
    """Flip-flops synthesis keeps of a registered requantized output clamp(rne(acc * 2^shift), 0,
    2^out_bits - 1) (`requant_expr`), the accumulator `width` bits wide with its sign, its low
    -frac bits zero (width 0: a constant), on an `acc_w`-bit bus. Rules from Yosys 0.23 netlists
    (a sweep over width, zero low bits, shift and out_bits, and the random layers of
    scripts/rtl_calibration.py):
    - rounding (bits dropped that are not all zero): the result is at most 2^hi, hi = the top bit
      + shift; hi + 2 flip-flops stay (the rounding carry into bit hi + 1 is not proven zero), at
      least 3;
    - no rounding (z = zero low bits + shift >= 0 zero bits at the bottom, the sign at bit top): the
      width - 1 value bits, plus one for the clamp of the bits above them and one for the z low bits
      (a shared net) while top < out_bits; exactly the value bits when top == out_bits (nothing can
      overflow); when top > out_bits the out_bits - z value bits that fit, plus the low bits' net.
    benchmarks/requant_ff_sweep.py: exact on 784/784 signed accumulators; an unsigned one (all
    weights and the bias >= 0, rare) is counted as if signed: 605/784 exact, at most 3 off."""
    lo, k = max(-frac, 0), -shift
    if width == 0 or requant_is_zero(shift, acc_w):
        return 0
    if k > lo:
        return min(out_bits, max(width - 1 + lo + shift + 2, 3))
    z = lo + shift
    top = width - 1 + z
    if top < out_bits:
        return min(out_bits, width + (z >= 1))
    if top == out_bits:
        return width - 1
    return max(out_bits - z, 0) + (z >= 1)


def acc_varying_bits(width: int, frac: int, zeros: int) -> int:
    """Bits of a kernel output (the accumulator x @ M[:, o] + b, `width` bits from bit -frac up, all
    weights multiples of 2^zeros) that are not constant: bits [-frac, zeros) are the bias's."""
    if width == 0 or zeros < 0:
        return 0  # a constant: no weights
    lo = max(-frac, 0)
    return lo + width - max(zeros, lo)


def module_registers(L: IntLayer, K: Kernel, c: int, h: int, w: int, bw: int, is_last: bool) -> dict[str, Any]:
    """Flip-flops of layer module `L` (input c x h x w of bw bits) that synthesis keeps: the
    registers `generate` declares less those that never change or feed nothing: the oldest
    positions of the window's / collector's shift register that no used input reads, outputs that
    are constant or narrower than their register (sign copies merge into one flip-flop), and of
    a pipelined kernel's registers what `kept_bits.pipeline_kept_bits` finds constant, duplicate
    or unread.
    `chains`: [run length, bit lanes] of the shift registers' runs between read positions, which
    a shift-register LUT can absorb (xc7 SRLs); the window's newest position is not in a run (its
    zero-on-idle input makes it a flip-flop with a synchronous reset)."""
    used = np.asarray(K.used_in, dtype=bool)
    chains: list[list[int]] = []
    chain_bits = 0
    if L.kind == "conv":
        _, _, kh, kw = L.w.shape
        taps = window_offsets(kh, kw, w, *L.padding)
        for ch in range(c):
            offs = [o for t, o in enumerate(taps) if used[t * c + ch]]
            if offs:
                chain_bits += (max(offs) + 1) * bw
                chains += [[n, bw] for n in shift_chains([o for o in offs if o >= 1], 1)]
        regs = chain_bits + WINDOW_COUNTER_BITS + 1  # + out_valid
    else:
        n = h * w
        for ch in range(c):  # opq_collect: pixel p sits at position p; data enters at n-1 and moves towards 0
            ps = [p for p in range(n) if used[p * c + ch]]
            if ps:
                chain_bits += (n - min(ps)) * bw
                chains += [[m, bw] for m in shift_chains([n - 1 - p for p in ps], 0)]
        regs = chain_bits + COLLECT_COUNTER_BITS + 1  # + out_valid
    regs += K.latency + 1  # valid delay line
    dead = [not is_last and requant_is_zero(int(L.out_shift[o]), K.acc_w) for o in range(K.n_out)]
    if K.pipeline is not None:
        def read(o: int, bits: list) -> list[bool]:
            """The accumulator bits the requantizer reads: none when dead; bits below the rounding
            bit only enter the sticky OR, which a constant 1 among them makes constant."""
            if is_last:
                return [True] * len(bits)
            if dead[o]:
                return [False] * len(bits)
            sticky = -int(L.out_shift[o]) - 1 + K.out_fracs[o]  # sticky bits among `bits` (LSB first)
            const_one = any(b == C1 for b in bits[:max(sticky, 0)])
            return [not (const_one and j < sticky) for j in range(len(bits))]

        regs += pipeline_kept_bits(K.pipeline, read)
    if is_last:
        regs += sum(acc_varying_bits(wd, fr, z) for wd, fr, z in zip(K.out_widths, K.out_fracs, K.out_zeros))
    else:
        regs += sum(0 if z < 0 else requant_live_bits(wd, fr, int(L.out_shift[o]), L.out_bits, K.acc_w)
                    for o, (wd, fr, z) in enumerate(zip(K.out_widths, K.out_fracs, K.out_zeros)))
    return {"registers": int(regs), "chains": chains}


def requant_expr(acc: str, aw: int, shift: int, out_bits: int, name: str) -> list[str]:
    """Verilog lines computing `name` = clamp(rne(acc * 2^shift), 0, 2^out_bits - 1).

    Round half to even on the dropped bits (what torch.round does in Brevitas' QuantReLU)."""
    mx = 2 ** out_bits - 1
    a = f"{name}_a"
    head = [f"wire [{aw - 1}:0] {a} = {acc};"]
    # the clamped value is read off the low out_bits of `t`: `t` is at least out_bits + 1 wide (a
    # narrower `t` would leave the top bits of that select undefined, which synthesis may set to 1)
    clamp = (f"wire [{out_bits - 1}:0] {name} = ({name}_t < 0) ? {out_bits}'d0 : "
             f"({name}_t > {mx}) ? {out_bits}'d{mx} : {name}_t[{out_bits - 1}:0];")
    if shift >= 0:
        tw = max(aw + shift + 1, out_bits + 1)
        return head + [f"wire signed [{tw - 1}:0] {name}_t = $signed({a}) <<< {shift};", clamp]
    if requant_is_zero(shift, aw):
        return [f"wire [{out_bits - 1}:0] {name} = {out_bits}'d0;"]
    k = -shift
    qw = aw - k
    tw = max(qw + 1, out_bits + 1)
    lo = f"(|{a}[{k - 2}:0])" if k >= 2 else "1'b0"
    return head + [f"wire signed [{qw - 1}:0] {name}_q = $signed({a}) >>> {k};",
                   f"wire {name}_up = {a}[{k - 1}] & ({lo} | {name}_q[0]);",
                   f"wire signed [{tw - 1}:0] {name}_t = $signed({{{{{tw - qw}{{{name}_q[{qw - 1}]}}}}, {name}_q}}) + "
                   f"$signed({{{tw - 1}'d0, {name}_up}});",
                   clamp]


def serial_acc_width(L: IntLayer, kernel_w: int, rnd: list[int] | None = None) -> int:
    """Signed bits of a digit-serial layer's accumulator: every Horner partial sum is x' @ M / 2^j
    for an input x' in the input range (its low digits zeroed), so the range of x @ M and of
    x @ M + b over the inputs bounds them all; at least the kernel output's width. `rnd`: a
    constant per output added to the bias (`serial_round_half`)."""
    M = matrix_for(L).astype(np.int64).astype(object)
    lo_x, hi_x = ((-(1 << (L.in_bits - 1)), (1 << (L.in_bits - 1)) - 1) if L.in_signed else (0, (1 << L.in_bits) - 1))
    pos = np.where(M > 0, M, 0).sum(axis=0)
    neg = np.where(M < 0, M, 0).sum(axis=0)
    w = kernel_w
    for o in range(M.shape[1]):
        hi, lo, b = pos[o] * hi_x + neg[o] * lo_x, pos[o] * lo_x + neg[o] * hi_x, int(L.b[o]) + (rnd[o] if rnd else 0)
        top = max(hi, hi + b, -min(lo, lo + b) - 1, 0)
        w = max(w, int(top).bit_length() + 1)
    return w


def serial_round_half(L: IntLayer, aw: int, is_last: bool) -> list[int]:
    """Per output, the constant a digit-serial layer adds to its bias so that its requantizer need
    not round: 2^(k-1) for a right shift by k >= 1 that keeps some bit of the `aw`-bit sum
    (`folded_requant`), else 0 (the last layer, a left shift, or a result that is always 0)."""
    if is_last:
        return [0] * int(L.b.size)
    return [0 if s >= 0 or requant_is_zero(s, aw) else 1 << (-s - 1) for s in map(int, L.out_shift)]


def folded_capture(s: str, aw: int, shift: int) -> tuple[int, str]:
    """(width, Verilog) of what `folded_requant` needs of the sum `s` = acc + 2^(k-1), k = -shift:
    its bits k and up (the rounded-up quotient q), and below them the tie flag (bits k-1..0 of s all
    zero, i.e. acc was exactly halfway)."""
    k = -shift
    return aw - k + 1, f"{{{s}[{aw - 1}:{k}], ~|{s}[{k - 1}:0]}}"


def folded_requant(h: str, aw: int, shift: int, out_bits: int, name: str) -> list[str]:
    """Verilog lines computing `name` = clamp(rne(acc * 2^shift), 0, 2^out_bits - 1) from `h` =
    `folded_capture` of s = acc + 2^(k-1): q = s >> k is acc / 2^k rounded half up, and round half
    to even differs only at a tie, where it is q with its lowest bit cleared; clearing that bit
    moves no value across 0 or 2^out_bits - 1 (q = 2^out_bits is even), so the clamp reads q's sign
    and the OR of its bits above out_bits: no adder, no comparator."""
    qw = aw + shift  # bits of q, its sign at the top
    mx = (1 << out_bits) - 1
    sign, tie = f"{h}[{qw}]", f"{h}[0]"
    vb = min(qw - 1, out_bits)  # value bits of q that reach the output
    if vb == 0:  # q is -1 or 0
        return [f"wire [{out_bits - 1}:0] {name} = {out_bits}'d0;"]
    lsb = f"{h}[1] & ~{tie}"
    val = f"{h}[{vb}:2], {lsb}" if vb >= 2 else lsb
    if vb < out_bits:
        val = f"{out_bits - vb}'d0, {val}"
    ovf = f"(|{h}[{qw - 1}:{out_bits + 1}])" if qw - 1 > out_bits else "1'b0"
    return [f"wire [{out_bits - 1}:0] {name} = {sign} ? {out_bits}'d0 : {ovf} ? {out_bits}'d{mx} : {{{val}}};"]


def digit_pixel(src: str, c: int, bw: int, signed: bool, D: int, S: int) -> str:
    """Verilog concatenation of a pixel `src` (c channels of bw bits) as opq_digit_chain's digits:
    per channel S digits of D bits, MSB first; a signed channel's first digit is its sign bit
    alone (weight -2^(D*(S-1))), the rest its value sign-extended to D*(S-1) bits; an unsigned
    channel is zero-extended to D*S bits."""
    parts = []
    for ch in reversed(range(c)):
        v = f"{src}[{ch * bw + bw - 1}:{ch * bw}]"
        if signed:
            sb = f"{src}[{ch * bw + bw - 1}]"
            ext = D * (S - 1) - (bw - 1)
            low = f"{src}[{ch * bw + bw - 2}:{ch * bw}]" if bw > 1 else None
            parts += ([f"{D - 1}'d0"] if D > 1 else []) + [sb] + ([f"{{{ext}{{{sb}}}}}"] if ext else []) + \
                     ([low] if low else [])
        else:
            parts += ([f"{D * S - bw}'d0"] if D * S > bw else []) + [v]
    return "{" + ", ".join(parts) + "}"


def serial_layer_body(L: IntLayer, K: Kernel, n_in: int, steps: int, aw: int, is_last: bool,
                      rnd: list[int] | None = None) -> list[str]:
    """Verilog of a digit-serial layer between its window/collector (`wv`; `wd`: digit k of every
    input on the k-th cycle from `wv`, k < `steps` = S, MSB first) and its output register: per
    cycle one D-bit digit of every input into the kernel `y = d @ M`, and per output one adder,
    s = ((a << D) | c_k) + y: Horner accumulation with the bias folded in; at the last step s is
    registered (`h`) and requantized into `yq` on the next cycle, so the adder and the requantizer
    are not on one path (the last layer registers s as its output) (a signed input's first digit,
    its sign, enters as ~y with the +1 in the bias).
    b' = b (+ 2^(D(S-1)) for a signed input) = P * 2^(DS) + sum_k c_k 2^(D(S-1-k)), c_k D-bit:
    the accumulator `a` starts from the constant P (a synchronous set/reset of its flip-flops, at
    reset and at each vector's last step), and step k fills the D zero bits a << D leaves with
    c_k (a function of the step counter); so no adder for the bias and no multiplexer for the
    first step, and after step S-1, s = x @ M + b exactly (two's complement, `aw` bits).
    `rnd` (`serial_round_half`): per output a rounding constant 2^(k-1) folded into b the same way,
    so the requantizer of a right shift by k needs no incrementer (`folded_requant`): `h` keeps
    s's bits from k up and the tie flag, not the whole sum."""
    D, S, LK = K.in_bits, steps, K.latency
    cout = K.n_out
    sw = bits_for(S)
    b = [f"    // digit-serial: {S} digits of {D} bit(s) per input vector, MSB first",
         f"    reg run; reg [{sw - 1}:0] step;",
         f"    wire [{sw - 1}:0] k = wv ? {sw}'d0 : step;",
         "    wire go = wv | run;",
         "    always @(posedge clk) begin",
         "        if (rst) begin run <= 1'b0; step <= 0; end",
         f"        else if (wv) begin run <= 1'b1; step <= {sw}'d1; end",
         f"        else if (run) begin step <= step + 1'b1; if (step == {sw}'d{S - 1}) run <= 1'b0; end",
         "    end",
         f"    wire [{cout * K.acc_w - 1}:0] y;",
         f"    {K.module}_w u_k (.clk(clk), .x(wd[{n_in * D - 1}:0]), .y(y));"]
    if LK:  # the digit's control travels beside the pipelined kernel
        b += [f"    reg [{LK - 1}:0] cv; reg [{LK * sw - 1}:0] ck;",
              "    always @(posedge clk) begin",
              f"        if (rst) cv <= {LK}'d0; else cv <= {{cv, go}};" if LK > 1 else "        if (rst) cv <= 1'b0; else cv <= go;",
              f"        ck <= {{ck, k}};" if LK > 1 else "        ck <= k;",
              "    end",
              f"    wire v_d = cv[{LK - 1}]; wire [{sw - 1}:0] k_d = ck[{LK * sw - 1}:{(LK - 1) * sw}];"]
    else:
        b += [f"    wire v_d = go; wire [{sw - 1}:0] k_d = k;"]
    b += [f"    wire f_d = (k_d == {sw}'d0), done = v_d && (k_d == {sw}'d{S - 1});",
          "    reg ov;",
          "    assign out_valid = ov;",
          "    wire load = rst | done;  // the accumulators restart from their constant"]
    if is_last:
        b += ["    always @(posedge clk) ov <= !rst && done;"]
    else:  # the sums are registered (`h`) before the requantizer: one cycle more, same interval
        b += ["    reg hv;",
              "    always @(posedge clk) begin hv <= !rst && done; ov <= !rst && hv; end"]
    kw = K.acc_w
    mask = (1 << aw) - 1
    rnd = rnd or [0] * cout
    for o in range(cout):
        bo = int(L.b[o]) + rnd[o] + ((1 << (D * (S - 1))) if L.in_signed else 0)
        P, low = bo >> (D * S), bo & ((1 << (D * S)) - 1)  # b' = P * 2^(DS) + low, low = digits c_0..c_{S-1}
        yo = f"y[{(o + 1) * kw - 1}:{o * kw}]"
        ye = f"{{{{{aw - kw}{{y[{(o + 1) * kw - 1}]}}}}, {yo}}}" if aw > kw else yo
        shifted = f"(a{o} <<< {D})"
        if low:  # digit c_k of b' at step k: entry k of a constant table
            tab = sum(((low >> (D * (S - 1 - j))) & ((1 << D) - 1)) << (j * D) for j in range(S))
            b += [f"    wire [{S * D - 1}:0] bt{o} = {S * D}'d{tab};"]
            shifted = f"({shifted} | bt{o}[k_d * {D} +: {D}])"
        yy = f"(y{o} ^ {{{aw}{{f_d}}}})" if L.in_signed else f"y{o}"
        b += [f"    wire signed [{aw - 1}:0] y{o} = {ye};",
              f"    reg signed [{aw - 1}:0] a{o};",
              f"    wire [{aw - 1}:0] s{o} = {shifted} + {yy};",
              f"    always @(posedge clk) if (load) a{o} <= {aw}'d{P & mask}; else if (v_d) a{o} <= s{o};"]
    if is_last:
        cat = ", ".join(f"s{o}" for o in reversed(range(cout)))
        b += [f"    reg [{cout * aw - 1}:0] yq;", f"    always @(posedge clk) if (done) yq <= {{{cat}}};",
              "    assign out_data = yq;"]
        return b
    ob = L.out_bits
    for o in range(cout):
        sh = int(L.out_shift[o])
        if rnd[o]:  # the rounding constant is in the sum: keep q and the tie flag
            hw, cap = folded_capture(f"s{o}", aw, sh)
            b += [f"    reg [{hw - 1}:0] h{o};", f"    always @(posedge clk) if (done) h{o} <= {cap};"]
            b += ["    " + t for t in folded_requant(f"h{o}", aw, sh, ob, f"r{o}")]
        else:
            b += [f"    reg [{aw - 1}:0] h{o};", f"    always @(posedge clk) if (done) h{o} <= s{o};"]
            b += ["    " + t for t in requant_expr(f"h{o}", aw, sh, ob, f"r{o}")]
    cat = ", ".join(f"r{o}" for o in reversed(range(cout)))
    return b + [f"    reg [{cout * ob - 1}:0] yq;", f"    always @(posedge clk) if (hv) yq <= {{{cat}}};",
                "    assign out_data = yq;"]


@dataclass
class Design:
    """The generated design: files, per-layer modules and the stream facts the harness needs."""

    files: dict[str, str]  # file name -> verilog text
    top: str
    layer_modules: list[dict[str, Any]]  # name, module, kind, da4ml cost, kernel latency, n_in, n_out
    in_w: int  # s_data width
    in_pixels: int  # input pixels per frame
    out_w: int  # m_data width (signed accumulator)
    n_out: int
    latency_stages: int  # sum of fixed per-stage latencies (cycles), excluding the window lag
    static_files: list[str] = field(default_factory=list)

    def meta(self) -> dict[str, Any]:
        return {"top": self.top, "layers": self.layer_modules, "in_w": self.in_w, "in_pixels": self.in_pixels,
                "out_w": self.out_w, "n_out": self.n_out}


def generate(net: IntNet, pipeline: float = 0.0, serial_bits: int = 0) -> Design:
    """Verilog for the whole network (see the module docstring). `serial_bits` D > 0: digit-serial
    layers (`serial_layer_body`): each layer takes its inputs D bits per cycle, so the stream
    carries one pixel every P cycles, P = the most digits any layer needs (`digit_steps`);
    s_ready is high one cycle in P."""
    if serial_bits < 0:
        raise OpqError(f"serial bits must be >= 0 (0: whole activations per cycle), got {serial_bits}")
    steps = {id(L): digit_steps(L.in_bits, L.in_signed, serial_bits) for L in net.layers}
    period = max(steps.values())
    # digit-serial designs: the fixed modules' counters sized to the frame (16 bits in the
    # whole-activation designs, which the rtl-da cost model is calibrated on)
    sized = ", .SIZED(1)" if period > 1 else ""
    c, h, w = net.in_shape
    bw, signed = net.in_bits, net.in_signed
    in_w = c * bw
    if in_w > 32:
        raise OpqError(f"input pixel of {c} channels x {bw} bits = {in_w} bits; the streaming top level takes at "
                       f"most 32 bits per pixel")
    files: dict[str, str] = {}
    mods: list[dict[str, Any]] = []
    inst: list[str] = ["    wire v0 = s_valid;", f"    wire [{in_w - 1}:0] d0 = s_data;"]
    cur = 0
    layers = net.layers
    last = layers[-1]
    out_w = None
    n_out = None
    lat_total = 0
    for si, st in enumerate(net.stages):
        if isinstance(st, IntLayer):
            L = st
            li = layers.index(L)
            mod = f"opq_L{li}"
            S = steps[id(L)]
            K = make_kernel(L, f"opq_k{li}", pipeline, serial_bits if S > 1 else 0)
            for name, text in K.files.items():
                files[f"{name}.v"] = text
            files[f"{K.module}_w.v"] = K.wrapper
            is_last = L is last
            pix_in = c * bw
            body = []
            # digit-serial: the window / collector stores the pixels as S digits of D bits per channel
            sbw, wbits, ds = (S * serial_bits, serial_bits, f", .DS({S}), .DB({serial_bits})") if S > 1 else (bw, bw, "")
            ds += sized
            if S > 1:
                body += [f"    wire [{c * sbw - 1}:0] din = {digit_pixel('in_data', c, bw, L.in_signed, serial_bits, S)};"]
            din = "din" if S > 1 else "in_data"
            if L.kind == "conv":
                cout, _, kh, kw = L.w.shape
                ph, pw = L.padding
                body += [f"    wire wv; wire [{kh * kw * c * wbits - 1}:0] wd;",
                         f"    opq_window #(.C({c}), .BW({sbw}), .H({h}), .W({w}), .KH({kh}), .KW({kw}), "
                         f".PH({ph}), .PW({pw}){f', .GAP({period})' if period > 1 else ''}{ds}) u_win (.clk(clk), "
                         f".rst(rst), .in_valid(in_valid), "
                         f".in_data({din}), .out_valid(wv), .out_data(wd));"]
                oshape = L.out_shape
                stage_lat = 1
            else:
                cout = L.w.shape[0]
                body += [f"    wire wv; wire [{h * w * c * wbits - 1}:0] wd;",
                         f"    opq_collect #(.PIX({c * sbw}), .N({h * w}){ds}) u_col (.clk(clk), .rst(rst), "
                         f".in_valid(in_valid), .in_data({din}), .out_valid(wv), .out_data(wd));"]
                oshape = L.out_shape
                stage_lat = 1
            aw = K.acc_w
            n_in = len(K.used_in)
            if S > 1:
                rnd = serial_round_half(L, serial_acc_width(L, K.acc_w), is_last)
                aw = serial_acc_width(L, K.acc_w, rnd)
                body += serial_layer_body(L, K, n_in, S, aw, is_last, rnd)
                lat = S + K.latency + (0 if is_last else 1)  # + the sums' register before the requantizer
                obits = cout * (aw if is_last else L.out_bits)
                if is_last:
                    out_w, n_out = aw, cout
            else:
                body += [f"    wire [{cout * aw - 1}:0] acc;",
                         f"    {K.module}_w u_k (.clk(clk), .x(wd), .y(acc));"]
                lat = K.latency + 1
                body += [f"    reg [{lat - 1}:0] vd;",
                         "    always @(posedge clk) begin",
                         f"        if (rst) vd <= {lat}'d0;",
                         f"        else vd <= {{vd[{lat - 2}:0], wv}};" if lat > 1 else "        else vd <= wv;",
                         "    end",
                         f"    assign out_valid = vd[{lat - 1}];"]
                if is_last:
                    obits = cout * aw
                    body += [f"    reg [{obits - 1}:0] yq;", "    always @(posedge clk) yq <= acc;",
                             "    assign out_data = yq;"]
                    out_w, n_out = aw, cout
                else:
                    ob = L.out_bits
                    obits = cout * ob
                    for o in range(cout):
                        body += ["    " + s for s in requant_expr(f"acc[{(o + 1) * aw - 1}:{o * aw}]", aw,
                                                                 L.out_shift[o], ob, f"r{o}")]
                    cat = ", ".join(f"r{o}" for o in reversed(range(cout)))
                    body += [f"    reg [{obits - 1}:0] yq;", f"    always @(posedge clk) yq <= {{{cat}}};",
                             "    assign out_data = yq;"]
            files[f"{mod}.v"] = (f"(* keep_hierarchy *)\nmodule {mod} (\n    input clk,\n    input rst,\n    input in_valid,\n"
                                 f"    input [{pix_in - 1}:0] in_data,\n    output out_valid,\n"
                                 f"    output [{obits - 1}:0] out_data\n);\n" + "\n".join(body) + "\nendmodule\n")
            inst += [f"    wire v{cur + 1}; wire [{obits - 1}:0] d{cur + 1};",
                     f"    {mod} u_{mod} (.clk(clk), .rst(rst), .in_valid(v{cur}), .in_data(d{cur}), "
                     f".out_valid(v{cur + 1}), .out_data(d{cur + 1}));"]
            # the registers synthesis keeps are modelled for whole-activation kernels only
            regs = module_registers(L, K, c, h, w, bw, is_last) if S == 1 else {"serial_steps": S,
                                                                                  "digit_bits": serial_bits}
            mods.append({"name": L.name, "module": mod, "kind": L.kind, "da4ml_cost": K.cost,
                         "kernel_latency": K.latency, "kernel_stages": K.n_stages, "n_in": K.n_in, "n_out": K.n_out,
                         **regs,
                         "acc_w": aw, "in_bits": L.in_bits, "w_bits": int(np.abs(L.w).max()).bit_length() + 1, "n_nonzero": int(np.count_nonzero(L.w)),
                         "n_weights": int(L.w.size)})
            lat_total += stage_lat + lat
            cur += 1
            c, h, w = oshape
            if not is_last:
                bw, signed = L.out_bits, False
        elif isinstance(st, Pool):
            kr, kc = st.window(h)
            _, oh, ow = st.out_shape((c, h, w))
            inst += [f"    wire v{cur + 1}; wire [{c * bw - 1}:0] d{cur + 1};",
                     f"    opq_maxpool #(.C({c}), .BW({bw}), .H({h}), .W({w}), .KR({kr}), .KC({kc}), "
                     f".SIGNED({int(signed)}){sized}) u_pool{si} (.clk(clk), .rst(rst), .in_valid(v{cur}), "
                     f".in_data(d{cur}), .out_valid(v{cur + 1}), .out_data(d{cur + 1}));"]
            lat_total += 1
            cur += 1
            h, w = oh, ow
    in_pixels = net.in_shape[1] * net.in_shape[2]
    if in_pixels < n_out:
        raise OpqError(f"{n_out} outputs per frame but only {in_pixels} input pixels: the output serializer would "
                       f"overrun; this model is not supported by the streaming top level")
    # a digit-serial last layer holds its output register until its next vector: no copy to shift out
    hold = ", .HOLD(1)" if steps[id(last)] > 1 else ""
    if period > 1:
        pw_ = bits_for(period)
        ready = "\n".join([f"    reg [{pw_ - 1}:0] ph;  // digit-serial: one pixel every {period} cycles",
                            f"    always @(posedge clk) ph <= (rst || ph == {pw_}'d{period - 1}) ? {pw_}'d0 : ph + 1'b1;",
                            f"    assign s_ready = (ph == {pw_}'d0);"])
        inst[0] = "    wire v0 = s_valid & s_ready;"
        rate = f"One input pixel every {period} cycles (s_ready high one cycle in {period}; digit-serial layers)"
    else:
        ready = "    assign s_ready = 1'b1;"
        rate = "One input pixel per cycle (s_ready is always 1)"
    top = f"""// opq_top: generated by opq_hw.rtl.gen. {rate},
// logits out one per cycle as signed {out_w}-bit accumulators (m_last marks the last of a frame).
module opq_top (
    input clk,
    input rst,
    input s_valid,
    output s_ready,
    input [{in_w - 1}:0] s_data,
    output m_valid,
    output [{out_w - 1}:0] m_data,
    output m_last
);
{ready}
{chr(10).join(inst)}
    opq_serialize #(.AW({out_w}), .N({n_out}){sized}{hold}) u_ser (.clk(clk), .rst(rst), .in_valid(v{cur}), .in_data(d{cur}),
        .m_valid(m_valid), .m_data(m_data), .m_last(m_last));
endmodule
"""
    files["opq_top.v"] = top
    if out_w > 32:
        raise OpqError(f"the last layer's accumulators need {out_w} bits; the streaming output takes at most 32")
    return Design(files, "opq_top", mods, in_w, in_pixels, out_w, n_out, lat_total)


def da4ml_static_sources() -> list[Path]:
    """The da4ml Verilog primitives its generated kernels instantiate (shift_adder, negative, ...)."""
    import da4ml.codegen.rtl as rtl

    return sorted((Path(rtl.__file__).parent / "verilog" / "source").glob("*.v"))


def write_design(design: Design, src_dir: Path) -> list[Path]:
    """Write the design, our hls/rtl modules and da4ml's primitives into `src_dir`; returns all files."""
    src_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for name, text in design.files.items():
        p = src_dir / name
        p.write_text(text)
        out.append(p)
    for name in STATIC_HDL:
        p = src_dir / name
        shutil.copyfile(HDL_DIR / name, p)
        out.append(p)
    text = "\n".join(design.files.values())
    for s in da4ml_static_sources():
        if re.search(rf"\b{re.escape(s.stem)}\b", text) is None:
            continue  # only the primitives the kernels instantiate (lookup_table needs .mem files)
        p = src_dir / s.name
        shutil.copyfile(s, p)
        out.append(p)
    design.static_files = [p.name for p in out]
    return out


def bits_for(n: int) -> int:
    return max(1, math.ceil(math.log2(max(n, 2))))
