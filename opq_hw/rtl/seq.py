"""Whole-network Verilog for an `IntNet`, sequential architecture ("seq"): one sparse MAC per layer.

The da4ml architecture (`gen.py`) spends logic on every nonzero weight (a constant-weight adder
graph per layer): fast, but the digits demo is ~34k LUT-equivalents, which the single-threaded
WebAssembly nextpnr-ecp5 does not route in minutes, and nothing fits an iCE40 UP5K. This
architecture stores the allocation instead of unrolling it:

- per layer a weight ROM (block RAM) holding only the nonzero weights, grouped by output
  channel, each entry `{offset, w}`: the B-bit integer of the layer's codebook and the address
  offset of its input inside the (padded) input buffer; a channel with no nonzero weight gets
  one `w = 0` entry. Pruning therefore saves cycles and ROM bits one for one.
- activations live in block RAM, channel-major (C, H + 2 PH, W + 2 PW) with the next layer's
  zero padding built in (pad cells are never written, so they stay 0);
- per layer one multiply-accumulate unit walks output position x output channel x pool offset x
  that channel's nonzero entries, one entry per cycle with no bubbles (ROM read -> activation
  read -> MAC -> requantize, registered stages); max pooling is fused: requantization (a
  per-channel power-of-two shift with round-half-to-even and the ReLU clamp) is monotone, so the
  max of the pool window is taken on the accumulators and requantized once. That equals
  Brevitas' max of the requantized values exactly.
- the top level: `s_valid/s_ready/s_data` takes one input value per beat in H, W, C order
  (s_ready is low while the network computes), the layers run one after another, and the
  logits leave one per cycle (`m_valid`, `m_data` = the last layer's signed accumulator,
  `m_last`), as in the da4ml architecture.

Cycles per sample = input beats + sum over layers of (pooled positions x pool window x
(nonzero weights + empty channels)) + a few cycles of pipeline drain per layer + n_out.
Each layer is its own module `opq_S<i>` (kept as hierarchy for per-layer resource counts).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import OpqError
from .gen import Design, bits_for, requant_expr
from .intnet import IntLayer, IntNet, Pool

# cycles per layer beyond its ROM walk (the cost model's rtl-seq latency reads the same figure)
from .geometry import LAYER_OVERHEAD_CYCLES  # noqa: E402


@dataclass(frozen=True)
class LayerPlan:
    """One seq layer module's geometry: its layer, the max pool fused into it, its input buffer
    (cin, hp, wp: padded for this layer) and its pooled output (cout, poh, pow) as written into the
    next layer's buffer (padded by nph, npw)."""

    layer: IntLayer
    pool: tuple[int, int]  # (rows, columns) of the fused max pool window; (1, 1): none
    cin: int
    hp: int
    wp: int
    cout: int
    poh: int
    pow: int
    nph: int
    npw: int

    @property
    def ohp(self) -> int:
        return self.poh + 2 * self.nph

    @property
    def owp(self) -> int:
        return self.pow + 2 * self.npw


def layer_plan(net: IntNet) -> list[LayerPlan]:
    """Per layer: its input buffer's geometry, the fused pool, the output buffer's padding.
    Raises OpqError for a network the seq architecture cannot build."""
    layers: list[IntLayer] = []
    pools: dict[int, tuple[int, int]] = {}  # layer index -> the window of the pool fused into it
    for st in net.stages:
        if isinstance(st, IntLayer):
            layers.append(st)
        elif isinstance(st, Pool):
            if not layers or pools.get(len(layers) - 1, (1, 1)) != (1, 1):
                raise OpqError("the seq RTL architecture fuses max pooling into the layer before it; a pool that does "
                               "not follow a conv layer directly is not supported (use --rtl-arch da4ml)")
            pools[len(layers) - 1] = st.window(layers[-1].out_shape[1])
    if not layers:
        raise OpqError("the network has no conv/linear layer")
    plan: list[LayerPlan] = []
    for i, L in enumerate(layers):
        kr, kc = pools.get(i, (1, 1))
        c, h, w = L.in_shape
        ph, pw = L.padding if L.kind == "conv" else (0, 0)
        if L.kind == "conv":
            cout, poh, pow_ = L.out_shape[0], L.out_shape[1] // kr, L.out_shape[2] // kc
        else:
            cout, poh, pow_ = L.w.shape[0], 1, 1
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        nph, npw = (nxt.padding if nxt is not None and nxt.kind == "conv" else (0, 0))
        if nxt is not None:
            expect = (cout, poh, pow_)
            got = tuple(nxt.in_shape)
            if nxt.kind == "conv" and got != expect or nxt.kind == "linear" and int(np.prod(got)) != int(np.prod(expect)):
                raise OpqError(f"layer {nxt.name!r} expects input {got}, the previous layer gives {expect}")
        plan.append(LayerPlan(L, (kr, kc), c, h + 2 * ph, w + 2 * pw, cout, poh, pow_, nph, npw))
    return plan


def _entries(p: LayerPlan) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """ROM entries (offset, w) grouped by output channel, and each channel's first/last entry index."""
    L = p.layer
    ents: list[tuple[int, int]] = []
    start, end = [], []
    for co in range(p.cout):
        start.append(len(ents))
        if L.kind == "conv":
            wc = L.w[co]  # (cin, kh, kw)
            for ci, ky, kx in zip(*np.nonzero(wc)):
                ents.append((int(ci) * p.hp * p.wp + int(ky) * p.wp + int(kx), int(wc[ci, ky, kx])))
        else:
            for j in np.nonzero(L.w[co])[0]:
                ents.append((int(j), int(L.w[co, j])))
        if len(ents) == start[-1]:
            ents.append((0, 0))  # an empty channel still produces its bias
        end.append(len(ents) - 1)
    return ents, start, end


def _signed_bits(lo: int, hi: int) -> int:
    """Bits of a signed two's-complement value holding [lo, hi]."""
    return max(int(hi).bit_length(), int(-lo - 1).bit_length() if lo < 0 else 0) + 1


def _acc_bits(L: IntLayer, in_bits: int, in_signed: bool) -> int:
    amax = 2 ** (in_bits - 1) if in_signed else 2 ** in_bits - 1
    w = np.abs(L.w.reshape(L.w.shape[0], -1)).sum(axis=1) * amax
    hi = int((w + np.abs(L.b)).max())
    return _signed_bits(-hi, hi)


def _case(values: list[int], width: int, signed: bool, name: str) -> list[str]:
    """A small constant table as a Verilog function `name(s)` (synthesizes to LUTs)."""
    sw = bits_for(len(values))
    typ = f"signed [{width - 1}:0]" if signed else f"[{width - 1}:0]"
    lines = [f"    function automatic {typ} {name};", f"        input [{sw - 1}:0] s;", "        case (s)"]
    for i, v in enumerate(values):
        lit = f"-{width}'sd{-v}" if v < 0 else (f"{width}'sd{v}" if signed else f"{width}'d{v}")
        lines.append(f"            {sw}'d{i}: {name} = {lit};")
    lines += [f"            default: {name} = {width}'d0;", "        endcase", "    endfunction"]
    return lines


def _layer_module(i: int, p: LayerPlan, in_bits: int, in_signed: bool, last: bool) -> tuple[str, dict[str, Any]]:
    L = p.layer
    ents, start, end = _entries(p)
    wb = max(2, _signed_bits(min(w for _, w in ents), max(w for _, w in ents)))
    in_words = p.cin * p.hp * p.wp
    ab_in = bits_for(in_words)
    ob = bits_for(max(o for o, _ in ents) + 1)
    ew = ob + wb
    ne = len(ents)
    pb = bits_for(ne)
    aw = _acc_bits(L, in_bits, in_signed)
    cout = p.cout
    kr, kc = p.pool
    out_words = cout if last else cout * p.ohp * p.owp
    ab_out = bits_for(out_words)
    obits = aw if last else L.out_bits
    cb, yb, xb, dyb, dxb = (bits_for(cout), bits_for(p.poh), bits_for(p.pow), bits_for(kr), bits_for(kc))
    mod = f"opq_S{i}"
    rom = [f"        rom[{k}] = {ew}'h{((off << wb) | (w & ((1 << wb) - 1))):x};" for k, (off, w) in enumerate(ents)]
    act = "$signed(rd_data)" if in_signed else f"$signed({{1'b0, rd_data}})"
    v = [f"// {mod}: layer {L.name!r} ({L.kind}), {ne} ROM entries ({int(np.count_nonzero(L.w))} nonzero weights of "
         f"{L.w.size}), {wb}-bit weights, {aw}-bit accumulator; pool {kr}x{kc}. Generated by opq_hw.rtl.seq.",
         "(* keep_hierarchy *)",
         f"module {mod} (",
         "    input clk,", "    input rst,", "    input start,", "    output busy,",
         f"    output [{ab_in - 1}:0] rd_addr,", f"    input [{in_bits - 1}:0] rd_data,",
         "    output reg wr_en,", f"    output reg [{ab_out - 1}:0] wr_addr,", f"    output reg [{obits - 1}:0] wr_data", ");"]
    v += [f"    reg [{ew - 1}:0] rom [0:{ne - 1}];", "    initial begin"] + rom + ["    end"]
    v += _case(start, pb, False, "ch_start") + _case(end, pb, False, "ch_end")
    v += _case([int(b) for b in L.b], aw, True, "bias")
    v += [f"    reg run;", f"    reg [{pb - 1}:0] ptr;", f"    reg [{cb - 1}:0] co;", f"    reg [{yb - 1}:0] py;",
          f"    reg [{xb - 1}:0] px;", f"    reg [{dyb - 1}:0] dy;", f"    reg [{dxb - 1}:0] dx;",
          "    wire last_e = (ptr == ch_end(co));",
          f"    wire last_s = (dy == {dyb}'d{kr - 1}) && (dx == {dxb}'d{kc - 1});",
          f"    wire last_c = (co == {cb}'d{cout - 1});",
          f"    wire last_x = (px == {xb}'d{p.pow - 1});",
          f"    wire last_y = (py == {yb}'d{p.poh - 1});",
          "    always @(posedge clk) begin",
          "        if (rst) begin",
          "            run <= 1'b0;",
          "        end else if (start) begin",
          "            run <= 1'b1; ptr <= 0; co <= 0; py <= 0; px <= 0; dy <= 0; dx <= 0;",
          "        end else if (run) begin",
          "            if (!last_e) ptr <= ptr + 1'b1;",
          "            else if (!last_s) begin",
          "                ptr <= ch_start(co);",
          f"                if (dx == {dxb}'d{kc - 1}) begin dx <= 0; dy <= dy + 1'b1; end else dx <= dx + 1'b1;",
          "            end else begin",
          "                dy <= 0; dx <= 0;",
          "                if (!last_c) begin co <= co + 1'b1; ptr <= ptr + 1'b1; end",
          "                else begin",
          "                    co <= 0; ptr <= 0;",
          "                    if (!last_x) px <= px + 1'b1;",
          "                    else begin px <= 0; if (!last_y) py <= py + 1'b1; else run <= 1'b0; end",
          "                end",
          "            end",
          "        end",
          "    end"]
    # addresses from small tables and additions (no multiplier): input row bases, output offsets
    if L.kind == "conv":
        rows = [(y * kr + d) * p.wp if d < kr else 0 for y in range(p.poh) for d in range(2 ** dyb)]
        v += _case(rows, ab_in, False, "row_base")  # indexed by {py, dy}
        v += _case([x * kc for x in range(p.pow)], ab_in, False, "col_base")
        base = "row_base({py, dy}) + col_base(px) + dx"
    else:
        base = "0"
    if last:
        oaddr = "co"
    else:
        v += _case([c * p.ohp * p.owp for c in range(cout)], ab_out, False, "ch_base")
        v += _case([(y + p.nph) * p.owp + p.npw for y in range(p.poh)], ab_out, False, "out_row")
        oaddr = "ch_base(co) + out_row(py) + px"
    v += [f"    wire [{ab_in - 1}:0] base0 = {base};",
          f"    wire [{ab_out - 1}:0] oaddr0 = {oaddr};",
          "    // stage 1: ROM entry read",
          f"    reg [{ew - 1}:0] e1;", "    reg v1, fe1, le1, fs1, ls1;", f"    reg [{cb - 1}:0] c1;",
          f"    reg [{ab_in - 1}:0] b1;", f"    reg [{ab_out - 1}:0] o1;",
          "    always @(posedge clk) begin",
          "        e1 <= rom[ptr];",
          "        v1 <= run && !start && !rst;",
          "        fe1 <= (ptr == ch_start(co)); le1 <= last_e; fs1 <= (dy == 0) && (dx == 0); ls1 <= last_s;",
          "        c1 <= co; b1 <= base0; o1 <= oaddr0;",
          "    end",
          f"    assign rd_addr = b1 + e1[{ew - 1}:{wb}];",
          "    // stage 2: activation read (the buffer's registered read port)",
          f"    reg signed [{wb - 1}:0] w2;", "    reg v2, fe2, le2, fs2, ls2;", f"    reg [{cb - 1}:0] c2;",
          f"    reg [{ab_out - 1}:0] o2;",
          "    always @(posedge clk) begin",
          f"        w2 <= e1[{wb - 1}:0]; v2 <= v1 && !rst; fe2 <= fe1; le2 <= le1; fs2 <= fs1; ls2 <= ls1;",
          "        c2 <= c1; o2 <= o1;",
          "    end",
          "    // stage 3: multiply-accumulate; the pool's max on the finished accumulators",
          f"    reg signed [{aw - 1}:0] acc, mx;",
          f"    wire signed [{aw - 1}:0] prod = w2 * {act};",
          f"    wire signed [{aw - 1}:0] acc_n = (fe2 ? bias(c2) : acc) + prod;",
          f"    wire signed [{aw - 1}:0] mx_n = (fs2 || acc_n > mx) ? acc_n : mx;",
          "    reg v3;", f"    reg [{cb - 1}:0] c3;", f"    reg [{ab_out - 1}:0] o3;", f"    reg signed [{aw - 1}:0] r3;",
          "    always @(posedge clk) begin",
          "        if (v2) acc <= acc_n;",
          "        if (v2 && le2) mx <= mx_n;",
          "        v3 <= v2 && le2 && ls2 && !rst; c3 <= c2; o3 <= o2; r3 <= mx_n;",
          "    end"]
    if last:
        v += ["    // stage 4: the logits (signed accumulators) go out as they are",
              "    always @(posedge clk) begin", "        wr_en <= v3 && !rst; wr_addr <= o3; wr_data <= r3;", "    end"]
    else:
        shifts = sorted(set(int(s) for s in L.out_shift))
        for j, s in enumerate(shifts):
            v += ["    " + ln for ln in requant_expr("r3", aw, s, L.out_bits, f"q{j}")]
        sel = _case([shifts.index(int(s)) for s in L.out_shift], bits_for(len(shifts)), False, "shift_id")
        v += sel + [f"    reg [{L.out_bits - 1}:0] q;", "    always @* begin", "        case (shift_id(c3))"]
        v += [f"            {bits_for(len(shifts))}'d{j}: q = q{j};" for j in range(len(shifts))]
        v += [f"            default: q = {L.out_bits}'d0;", "        endcase", "    end",
              "    // stage 4: requantize (per-channel pow2 shift, round half to even, ReLU clamp) and write",
              "    always @(posedge clk) begin", "        wr_en <= v3 && !rst; wr_addr <= o3; wr_data <= q;", "    end"]
    v += ["    assign busy = run | v1 | v2 | v3 | wr_en;", "endmodule", ""]
    info = {"name": L.name, "module": mod, "kind": L.kind, "arch": "seq", "rom_entries": ne, "rom_bits": ne * ew,
            "entry_bits": ew, "w_bits": wb, "acc_w": aw, "in_bits": in_bits, "n_nonzero": int(np.count_nonzero(L.w)),
            "n_weights": int(L.w.size), "n_out": cout, "buffer_words": in_words,
            "cycles": int(p.poh * p.pow * kr * kc * ne)}
    return "\n".join(v), info


def generate_seq(net: IntNet) -> Design:
    """Verilog for the whole network, sequential architecture (see the module docstring)."""
    plan = layer_plan(net)
    files: dict[str, str] = {}
    mods: list[dict[str, Any]] = []
    bits, signed = net.in_bits, net.in_signed
    for i, p in enumerate(plan):
        last = i == len(plan) - 1
        text, info = _layer_module(i, p, bits, signed, last)
        files[f"opq_S{i}.v"] = text
        mods.append(info)
        if not last:
            bits, signed = p.layer.out_bits, False
    out_w = mods[-1]["acc_w"]
    if out_w > 32:
        raise OpqError(f"the last layer's accumulators need {out_w} bits; the streaming output takes at most 32")
    n_out = plan[-1].cout
    c, h, w = net.in_shape
    p0 = plan[0]
    ph0 = (p0.hp - h) // 2
    pw0 = (p0.wp - w) // 2
    beats = c * h * w
    nl = len(plan)
    sb = bits_for(nl + 2)
    top = [f"// opq_top (seq architecture): generated by opq_hw.rtl.seq. One input value per beat in H, W, C order",
           f"// ({beats} beats per sample; s_ready is low while the layers compute), logits out one per cycle as",
           f"// signed {out_w}-bit accumulators (m_last marks the last of a sample).",
           "module opq_top (", "    input clk,", "    input rst,", "    input s_valid,", "    output s_ready,",
           f"    input [{net.in_bits - 1}:0] s_data,", "    output m_valid,", f"    output [{out_w - 1}:0] m_data,",
           "    output m_last", ");",
           f"    localparam LOAD = {sb}'d0, OUT = {sb}'d{nl + 1};  // layer i runs in state i + 1",
           f"    reg [{sb - 1}:0] state;", "    reg go;"]
    # buffers: buf<i> is the input of layer i (written by the loader or layer i - 1)
    for i, p in enumerate(plan):
        bw_i = net.in_bits if i == 0 else plan[i - 1].layer.out_bits
        words = p.cin * p.hp * p.wp
        ab = bits_for(words)
        top += [f"    // buffer {i}: input of layer {p.layer.name!r}, ({p.cin}, {p.hp}, {p.wp}) with zero padding",
                f"    reg [{bw_i - 1}:0] buf{i} [0:{words - 1}];", "    integer k" + str(i) + ";",
                f"    initial for (k{i} = 0; k{i} < {words}; k{i} = k{i} + 1) buf{i}[k{i}] = 0;",
                f"    wire [{ab - 1}:0] ra{i}; reg [{bw_i - 1}:0] rd{i};",
                f"    wire we{i}; wire [{ab - 1}:0] wa{i}; wire [{bw_i - 1}:0] wd{i};",
                f"    always @(posedge clk) begin rd{i} <= buf{i}[ra{i}]; if (we{i}) buf{i}[wa{i}] <= wd{i}; end"]
    # the loader: beat (y, x, ch) -> buf0[ch][y + ph][x + pw]
    yb, xb, chb = bits_for(h), bits_for(w), bits_for(c)
    ab0 = bits_for(p0.cin * p0.hp * p0.wp)
    top += _case([ch * p0.hp * p0.wp for ch in range(c)], ab0, False, "ld_ch")
    top += _case([(y + ph0) * p0.wp + pw0 for y in range(h)], ab0, False, "ld_row")
    top += [f"    reg [{yb - 1}:0] ly; reg [{xb - 1}:0] lx; reg [{chb - 1}:0] lc;",
            "    assign s_ready = (state == LOAD) && !rst;",
            "    wire take = s_valid && s_ready;",
            "    assign we0 = take;",
            f"    assign wa0 = ld_ch(lc) + ld_row(ly) + lx;",
            "    assign wd0 = s_data;",
            f"    wire load_done = take && (ly == {yb}'d{h - 1}) && (lx == {xb}'d{w - 1}) && (lc == {chb}'d{c - 1});"]
    onb = bits_for(n_out)
    top += [f"    reg [{out_w - 1}:0] logits [0:{n_out - 1}];", f"    reg [{onb - 1}:0] oc;"]
    for i, p in enumerate(plan):
        last = i == nl - 1
        top += [f"    wire busy{i};",
                f"    wire st{i} = go && (state == {sb}'d{i + 1});"]
        if last:
            top += [f"    wire lwe; wire [{onb - 1}:0] lwa; wire [{out_w - 1}:0] lwd;",
                    f"    {mods[i]['module']} u_s{i} (.clk(clk), .rst(rst), .start(st{i}), .busy(busy{i}), .rd_addr(ra{i}), "
                    f".rd_data(rd{i}), .wr_en(lwe), .wr_addr(lwa), .wr_data(lwd));",
                    "    always @(posedge clk) if (lwe) logits[lwa] <= lwd;"]
        else:
            top += [f"    {mods[i]['module']} u_s{i} (.clk(clk), .rst(rst), .start(st{i}), .busy(busy{i}), .rd_addr(ra{i}), "
                    f".rd_data(rd{i}), .wr_en(we{i + 1}), .wr_addr(wa{i + 1}), .wr_data(wd{i + 1}));"]
    busy_any = " | ".join(f"(state == {sb}'d{i + 1} && busy{i})" for i in range(nl))
    top += ["    // sequencing: load -> layer 0 -> ... -> layer n-1 -> stream the logits out",
            "    always @(posedge clk) begin",
            "        if (rst) begin",
            "            state <= LOAD; go <= 1'b0; ly <= 0; lx <= 0; lc <= 0; oc <= 0;",
            "        end else begin",
            "            go <= 1'b0;",
            "            if (state == LOAD) begin",
            "                if (take) begin",
            f"                    if (lc != {chb}'d{c - 1}) lc <= lc + 1'b1;",
            f"                    else begin lc <= 0; if (lx != {xb}'d{w - 1}) lx <= lx + 1'b1; else begin lx <= 0; "
            f"ly <= (ly == {yb}'d{h - 1}) ? {yb}'d0 : ly + 1'b1; end end",
            "                end",
            f"                if (load_done) begin state <= {sb}'d1; go <= 1'b1; end",
            "            end else if (state == OUT) begin",
            f"                if (oc == {onb}'d{n_out - 1}) begin oc <= 0; state <= LOAD; end else oc <= oc + 1'b1;",
            f"            end else if (!go && !({busy_any})) begin",
            "                state <= state + 1'b1;",
            f"                go <= (state != {sb}'d{nl});",
            "            end",
            "        end",
            "    end",
            "    assign m_valid = (state == OUT);",
            "    assign m_data = logits[oc];",
            f"    assign m_last = (state == OUT) && (oc == {onb}'d{n_out - 1});",
            "endmodule", ""]
    files["opq_top.v"] = "\n".join(top)
    lat = beats + sum(m["cycles"] + LAYER_OVERHEAD_CYCLES for m in mods) + n_out
    return Design(files, "opq_top", mods, net.in_bits, beats, out_w, n_out, lat)
