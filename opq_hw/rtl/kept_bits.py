"""The flip-flops Yosys keeps of a pipelined da4ml kernel, counted from da4ml's solution.

da4ml's pipeline (`pipeline_logic_gen`) registers every stage's input bus and the output bus in
full; synthesis keeps fewer: flip-flops whose input is constant go, flip-flops with the same input
net merge into one (`opt_merge`) and flip-flops that feed nothing go (`opt_clean`). Which inputs are
the same net depends on how Yosys 0.23 builds the adders, so this module follows the generated
Verilog (da4ml.codegen.rtl.verilog.comb: `shift_adder`, `negative`, slices) bit by bit, each bit a
*signature*: a constant, or an atom that stands for one net.

- An adder's low bits, up to the first position where the carry stops being constant, are constants
  (both operands constant) or the other operand's net (one operand's bit constant and the constant
  plus the carry 0 or 2: `opt_expr` folds constant low bits; a - b passes a's bits likewise, -b
  does not); above, every bit is a new net.
- `alumacc` merges an adder into the one adder that reads it, unshifted and no wider, when nothing
  else reads it (alumacc.cc merge_macc: one user per bit): the merged $macc maps to its own
  compressor tree, so all its bits are new nets (low bits included).
- A negated output (`negative`): 0 - x folds constant low bits when x is such a mergeable adder;
  otherwise ($neg of a register or a shared value, a carry chain) every bit is a new net.
- Slices (da4ml's quantize) and input fields are wires: their bits are the source's nets; a sign
  extension repeats the top net.
- A register bit is kept when its net is not constant, it is the first bit with that net in its
  register, and some kept output bit depends on it (backwards through the stages: a new adder bit
  depends on the operands' bits from the first non-pass-through position up to its own; a bit of a
  merged $macc or a negation on the operands' bits up to its own).

Worked out register by register against Yosys 0.23 `synth_ecp5` netlists of the random layers of
scripts/rtl_calibration.py (seeds 0 to 3, latency cutoffs 1.5 to 8, 1 to 8 stages): the whole
layer module's count is exact on 188 of those 192 pipelined modules. What it misses: constants that
Yosys folds only inside ABC (left as one flip-flop per value) or folds through a subtraction or
negation the rules above call opaque, a few flip-flops per module; iCE40's soft carry logic lets
Yosys merge a few more (`scripts/rtl_calibration.py --ff-check` measures it on fresh layers).
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

Bit = tuple  # ("c", 0 | 1) constant, ("n", k) a net
C0, C1 = ("c", 0), ("c", 1)
_ADD = (0, 1, 4)  # da4ml opcodes emitted as a shift_adder: a +/- b << s, a +/- constant


class _Nets:
    """New nets and what each depends on."""

    def __init__(self) -> None:
        self._ids = itertools.count()
        self.deps: dict[Bit, list[Bit]] = {}

    def new(self, deps: Sequence[Bit] = ()) -> Bit:
        n = ("n", next(self._ids))
        d = [b for b in deps if b[0] == "n"]
        if d:
            self.deps[n] = d
        return n


def _kif(qint) -> tuple[int, int, int]:
    from da4ml.types import minimal_kif

    k, i, f = minimal_kif(qint)
    return int(k), int(i), int(f)


def _neg_qint(qint):
    from da4ml.types import QInterval

    return QInterval(-qint.max, -qint.min, qint.step)


def _bit(x: list[Bit], signed: bool, shift: int, j: int) -> Bit:
    """Bit j of x << shift, sign-extended if `signed`."""
    k = j - shift
    if k < 0:
        return C0
    if k < len(x):
        return x[k]
    return x[-1] if signed and x else C0


def _sum_bits(nets: _Nets, terms: list[tuple[list[Bit], bool, int]], width: int) -> list[Bit]:
    """New nets for the low `width` bits of a sum of (bits, signed, shift) terms: bit j reads the
    terms' bits at positions <= j."""
    return [nets.new([_bit(x, s, sh, t) for x, s, sh in terms for t in range(j + 1)]) for j in range(width)]


def _adder(nets: _Nets, a: list[Bit], b: list[Bit], a_ext: tuple[bool, int], b_ext: tuple[bool, int], width: int,
           sub: bool) -> list[Bit]:
    """Bits of (a << a_ext[1]) +/- (b << b_ext[1]), each sign-extended if a_ext[0] / b_ext[0], low `width` bits."""

    out: list[Bit] = []
    carry, start = 0, None  # constant carry (borrow) below the first non-pass-through position
    for j in range(width):
        x, y = _bit(a, *a_ext, j), _bit(b, *b_ext, j)
        if start is None:
            if x[0] == "c" and y[0] == "c":
                d = x[1] - y[1] - carry if sub else x[1] + y[1] + carry
                out.append(("c", d & 1))
                carry = int(d < 0) if sub else d >> 1
                continue
            # one operand constant: the other passes when constant + carry is 0 or 2 (the carry out is then constant)
            if y[0] == "c" and y[1] + carry in (0, 2):
                out.append(x)
                carry = (y[1] + carry) >> 1
                continue
            if x[0] == "c" and x[1] + carry in (0, 2) and not sub:
                out.append(y)
                carry = (x[1] + carry) >> 1
                continue
            start = j
        out.append(nets.new([_bit(a, *a_ext, t) for t in range(start, j + 1)] +
                            [_bit(b, *b_ext, t) for t in range(start, j + 1)]))
    return out


def _operands(op) -> list[int]:
    """The ops da4ml op `op` reads."""
    if op.opcode in (0, 1):
        return [op.id0, op.id1]
    if op.opcode in (3, -3, 4):
        return [op.id0]
    if op.opcode in (-1, 5):
        return []
    raise ValueError(f"da4ml opcode {op.opcode} is not one the kernels use")


def _stage(nets: _Nets, sol, inp: list[Bit]) -> list[Bit]:
    """The output bus bits of one combinational stage (a da4ml CombLogic) given its input bus bits."""
    ops = sol.ops
    kifs = [_kif(op.qint) for op in ops]
    widths = [sum(k) for k in kifs]
    in_w = [sum(_kif(q)) for q in sol.inp_qint]
    in_off = [0, *itertools.accumulate(in_w)]
    read = [i for i, q in zip(sol.out_idxs, sol.out_qint) if i >= 0 and sum(_kif(q))]  # outputs of width 0 are not wired
    live = [False] * len(ops)  # what the Verilog keeps after opt_clean: ops the outputs read
    stack = list(read)
    while stack:
        i = stack.pop()
        if not live[i]:
            live[i] = True
            stack += _operands(ops[i])
    users = [0] * len(ops)
    for i in [j for i, op in enumerate(ops) if live[i] for j in _operands(op)] + read:
        users[i] += 1

    def mergeable(x: int) -> bool:
        return ops[x].opcode in _ADD and users[x] == 1

    def merges(i: int, x: int, shifted: bool) -> bool:
        return mergeable(x) and not shifted and widths[i] <= widths[x]

    V: list[list[Bit]] = [[] for _ in ops]
    negs: dict[int, tuple[list[Bit], tuple[int, int, int]]] = {}

    def neg(x: int):
        if x not in negs:
            kn = _kif(_neg_qint(ops[x].qint))
            if mergeable(x):
                negs[x] = (_adder(nets, [], V[x], (False, 0), (bool(kifs[x][0]), 0), sum(kn), True), kn)
            else:
                negs[x] = (_sum_bits(nets, [(V[x], bool(kifs[x][0]), 0)], sum(kn)), kn)
        return negs[x]

    for i, op in enumerate(ops):
        w = widths[i]
        if not live[i] or w == 0:
            continue
        oc = op.opcode
        if oc == -1:
            j = op.id0
            V[i] = [inp[in_off[j] + b] if b < in_w[j] else C0 for b in range(w)]
        elif oc in (0, 1):
            (s0, _, f0), (s1, _, f1) = kifs[op.id0], kifs[op.id1]
            sh = int(op.data) + f0 - f1  # shift_adder's SHIFT1
            if merges(i, op.id0, sh < 0) or merges(i, op.id1, sh > 0):
                V[i] = _sum_bits(nets, [(V[op.id0], bool(s0), max(-sh, 0)), (V[op.id1], bool(s1), max(sh, 0))], w)
            else:
                V[i] = _adder(nets, V[op.id0], V[op.id1], (bool(s0), max(-sh, 0)), (bool(s1), max(sh, 0)), w, oc == 1)
        elif oc in (3, -3):
            x, (s0, _, f0) = neg(op.id0) if oc == -3 else (V[op.id0], kifs[op.id0])
            lsb = f0 - kifs[i][2]
            V[i] = [x[j + lsb] if j + lsb < len(x) else (x[-1] if s0 else C0) for j in range(w)]
        elif oc == 4:
            num = int(op.data)
            mag = abs(num)
            sh = kifs[op.id0][2] - kifs[i][2]
            if merges(i, op.id0, sh < 0):
                V[i] = _sum_bits(nets, [(V[op.id0], bool(kifs[op.id0][0]), max(-sh, 0))], w)
            else:
                const = [C1 if (mag >> k) & 1 else C0 for k in range(max(mag.bit_length(), 1))]
                V[i] = _adder(nets, V[op.id0], const, (bool(kifs[op.id0][0]), max(-sh, 0)), (False, max(sh, 0)), w,
                              num < 0)
        else:  # 5: a constant
            v = int(op.data) % (1 << w)
            V[i] = [C1 if (v >> k) & 1 else C0 for k in range(w)]
    out: list[Bit] = []
    for j, i in enumerate(sol.out_idxs):
        w = sum(_kif(sol.out_qint[j]))
        if i < 0:  # not driven (da4ml's output_gen skips it): no flip-flop
            out += [C0] * w
            continue
        x = neg(i)[0] if sol.out_negs[j] else V[i]
        out += [x[b] if b < len(x) else C0 for b in range(w)]
    return out


def pipeline_kept_bits(pipe: Any, output_live: Callable[[int, list[Bit]], list[bool]]) -> int:
    """Flip-flops Yosys keeps of da4ml pipeline `pipe` (its stage input registers and its output
    register). `output_live(o, bits)`: which bits of output o (LSB first; constants are `C0`/`C1`)
    the logic after the kernel reads."""
    nets = _Nets()
    sols = pipe.solutions
    bus = [nets.new() for _ in range(sum(sum(_kif(q)) for q in sols[0].inp_qint))]
    regs: list[dict[Bit, Bit]] = []  # per register: D net -> Q net
    for sol in sols:
        q_of: dict[Bit, Bit] = {}
        bus = [b if b[0] == "c" else q_of.setdefault(b, nets.new()) for b in bus]
        regs.append(q_of)
        bus = _stage(nets, sol, bus)
    live: set[Bit] = set()
    off = 0
    for o, q in enumerate(pipe.out_qint):
        w = sum(_kif(q))
        bits = bus[off:off + w]
        live |= {b for b, keep in zip(bits, output_live(o, bits)) if keep and b[0] == "n"}
        off += w
    kept = len(live)
    for q_of in reversed(regs):
        seen, stack = set(live), list(live)
        while stack:
            for d in nets.deps.get(stack.pop(), ()):
                if d not in seen:
                    seen.add(d)
                    stack.append(d)
        live = {d for d, q in q_of.items() if q in seen}
        kept += len(live)
    return kept
