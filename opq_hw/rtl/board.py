"""The board top level of the open RTL flow: the accelerator (`opq_top`, either architecture)
behind the serial link (hls/rtl/opq_uart_link.v: UART, framed protocol, compute-cycle counter),
with the board's pins (board_configs/<board>.yaml, `pins:`).

    rx pin -> opq_uart_link -> byte packer -> opq_top -> (words, zero-extended to bytes) -> link -> tx pin

`LinkGeometry` is what host and device agree on: the INFER payload is the input stream's words,
each in `in_beat` bytes little-endian (the flow's stream order, `rtl_flow._pixels`); the RESULT
payload is the `n_out` logits as `out_beat`-byte little-endian two's-complement words of `out_w`
bits. `twin_top` wraps the board top with the ports sim/tb_uart.cpp drives (clk, rst, rx, tx).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import OpqError

LINK_HDL = ("opq_uart_rx.v", "opq_uart_tx.v", "opq_crc16.v", "opq_frame_rx.v", "opq_frame_tx.v", "opq_uart_link.v")
DEFAULT_BAUD = 115200
INTERNAL = {"clk_i", "rst_i", "por", "busy", "word", "got", "full", "s_valid", "s_ready", "s_data", "m_valid", "m_data",
            "m_last", "locked", "u_clock", "c_in_valid", "c_in_ready", "c_in_last", "c_in_data", "c_out_ready", "u_link", "u_top"}
MAX_BAUD_ERROR = 0.02  # 8N1 tolerates a few percent between the two ends; we allow 2%


@dataclass(frozen=True)
class LinkGeometry:
    in_w: int  # bits of one input word (opq_top s_data)
    beats: int  # input words per sample
    out_w: int  # bits of one logit word (opq_top m_data, signed)
    n_out: int

    @property
    def in_beat(self) -> int:
        return (self.in_w + 7) // 8

    @property
    def out_beat(self) -> int:
        return (self.out_w + 7) // 8

    @property
    def in_len(self) -> int:
        return self.beats * self.in_beat

    @property
    def out_len(self) -> int:
        return self.n_out * self.out_beat

    def encode(self, words: np.ndarray) -> list[bytes]:
        """INFER payloads of (N, beats) unsigned input words."""
        w = np.asarray(words, dtype=np.int64)
        if w.ndim != 2 or w.shape[1] != self.beats:
            raise OpqError(f"expected (N, {self.beats}) input words, got shape {w.shape}")
        if (w < 0).any() or (w >> self.in_w).any():
            raise OpqError(f"input words must be unsigned {self.in_w}-bit values")
        return [b"".join(int(v).to_bytes(self.in_beat, "little") for v in row) for row in w]

    def decode(self, payload: bytes) -> np.ndarray:
        """The n_out signed logit words of a RESULT's output bytes."""
        if len(payload) != self.out_len:
            raise OpqError(f"{len(payload)} output bytes, expected {self.out_len}")
        raw = [int.from_bytes(payload[i:i + self.out_beat], "little") & ((1 << self.out_w) - 1)
               for i in range(0, self.out_len, self.out_beat)]
        return np.array([r - (1 << self.out_w) if r >> (self.out_w - 1) else r for r in raw], dtype=np.int64)

    def to_dict(self) -> dict[str, int]:
        return {"in_w": self.in_w, "beats": self.beats, "out_w": self.out_w, "n_out": self.n_out,
                "in_len": self.in_len, "out_len": self.out_len}


def geometry(design) -> LinkGeometry:
    """The link geometry of a generated design (`rtl.gen.Design`, either architecture)."""
    return LinkGeometry(design.in_w, design.in_pixels, design.out_w, design.n_out)


def clks_per_bit(clock_mhz: float, baud: int) -> int:
    """Clock cycles per UART bit; an error if the nearest integer is more than 2% off the baud rate."""
    exact = clock_mhz * 1e6 / baud
    cpb = round(exact)
    if cpb < 4 or abs(cpb - exact) / exact > MAX_BAUD_ERROR:
        raise OpqError(f"{baud} baud at {clock_mhz:g} MHz is {exact:.2f} clocks per bit: "
                       f"{'fewer than 4' if cpb < 4 else f'{cpb} is more than 2% off'}; choose another --baud")
    return cpb


def board_top(board, geo: LinkGeometry, cpb: int, clock=None) -> str:
    """Verilog of `opq_board`: the board's pins (port names from the YAML), a power-on reset (and
    the reset button if the board has one), the link and the accelerator. LEDs show: the first one
    lit while a frame is being computed, the others off. `clock` (`opq_hw.rtl.clock.ClockPlan`):
    with a PLL the core runs on `opq_clock`'s output (opq_clock.v, in reset until the PLL locks);
    None or the oscillator: the clock pin directly."""
    clk, _ = board.pin("clock")
    rx, _ = board.pin("uart_rx")
    tx, _ = board.pin("uart_tx")
    ports = [f"    input {clk}", f"    input {rx}", f"    output {tx}"]
    resets = board.pins_with_role("reset")
    btn = ""
    if resets:
        name, p = resets[0]
        ports.append(f"    input {name}")
        btn = f" || {'!' if p['active'] == 'low' else ''}{name}"
    leds = board.pins_with_role("led")
    led_lines = []
    for i, (name, p) in enumerate(leds):
        ports.append(f"    output {name}")
        on = "busy" if i == 0 else "1'b0"
        led_lines.append(f"    assign {name} = {'!' if p['active'] == 'low' else ''}({on});")
    clash = sorted(set(board.pins) & INTERNAL)
    if clash:
        raise OpqError(f"board {board.name!r}: pin names {clash} are names the board top uses inside; rename them "
                       f"in {board.name}.yaml")
    pack = _packer(geo)
    pll = clock is not None and clock.source == "pll"
    if pll:
        clk_lines = (f"    wire clk_i, locked;  // {clock.achieved_mhz:.6g} MHz from the PLL (opq_clock.v)\n"
                     f"    opq_clock u_clock (.clk_in({clk}), .clk_out(clk_i), .locked(locked));")
        por = "if (!locked) por <= 4'd0; else if (!por[3]) por <= por + 4'd1;"
    else:
        clk_lines, por = f"    wire clk_i = {clk};", "if (!por[3]) por <= por + 4'd1;"
    return f"""// opq_board: generated by opq-hw for {board.name} ({board.part}) from board_configs/{board.name}.yaml.
// UART {cpb} clocks per bit; INFER payload {geo.in_len} bytes ({geo.beats} words x {geo.in_beat} bytes),
// RESULT {geo.out_len} bytes ({geo.n_out} logits x {geo.out_beat} bytes) + 4 cycle-count bytes.
module opq_board #(
    parameter CLKS_PER_BIT = {cpb}
) (
{(","+chr(10)).join(ports)}
);
{clk_lines}
    reg [3:0] por = 4'd0;  // power-on reset: 15 cycles{" after the PLL locks" if pll else ""}
    always @(posedge clk_i) {por}
    reg rst_i = 1'b1;
    always @(posedge clk_i) rst_i <= !por[3]{btn};
    wire c_in_valid, c_in_ready, c_in_last, c_out_ready;
    wire [7:0] c_in_data;
    wire s_valid, s_ready, m_valid, m_last;
    wire [{geo.in_w - 1}:0] s_data;
    wire [{geo.out_w - 1}:0] m_data;
    opq_uart_link #(.CLKS_PER_BIT(CLKS_PER_BIT), .IN_LEN({geo.in_len}), .OUT_LEN({geo.out_len}),
        .OUT_BEAT({geo.out_beat})) u_link (.clk(clk_i), .rst(rst_i), .rx({rx}), .tx({tx}), .c_in_valid(c_in_valid),
        .c_in_data(c_in_data), .c_in_last(c_in_last), .c_in_ready(c_in_ready), .c_out_valid(m_valid),
        .c_out_data({{{{{geo.out_beat * 8 - geo.out_w}{{1'b0}}}}, m_data}}), .c_out_ready(c_out_ready));
{pack}
    opq_top u_top (.clk(clk_i), .rst(rst_i), .s_valid(s_valid), .s_ready(s_ready), .s_data(s_data),
        .m_valid(m_valid), .m_data(m_data), .m_last(m_last));
    reg busy = 1'b0;  // from the first input byte to the last logit
    always @(posedge clk_i)
        if (rst_i) busy <= 1'b0;
        else if (c_in_valid && c_in_ready) busy <= 1'b1;
        else if (m_valid && m_last) busy <= 1'b0;
{chr(10).join(led_lines)}
endmodule
""".replace("{{0{1'b0}}, m_data}", "m_data")


def _packer(geo: LinkGeometry) -> str:
    """Bytes of the link -> input words of opq_top (in_beat bytes, little-endian)."""
    if geo.in_beat == 1:
        return (f"    assign s_valid = c_in_valid;\n    assign s_data = c_in_data[{geo.in_w - 1}:0];\n"
                "    assign c_in_ready = s_ready;")
    n = geo.in_beat
    return f"""    reg [{8 * n - 1}:0] word;
    reg [3:0] got = 4'd0;
    reg full = 1'b0;
    assign c_in_ready = !full;
    assign s_valid = full;
    assign s_data = word[{geo.in_w - 1}:0];
    always @(posedge clk_i)
        if (rst_i) begin
            got <= 0;
            full <= 1'b0;
        end else begin
            if (c_in_valid && c_in_ready) begin
                word <= {{c_in_data, word[{8 * n - 1}:8]}};
                got <= (got == {n - 1}) ? 4'd0 : got + 4'd1;
                if (got == {n - 1}) full <= 1'b1;
            end
            if (s_valid && s_ready) full <= 1'b0;
        end"""


def twin_top(board) -> str:
    """`opq_twin`: the board top with the ports sim/tb_uart.cpp drives (clk, rst, rx, tx)."""
    clk, _ = board.pin("clock")
    rx, _ = board.pin("uart_rx")
    tx, _ = board.pin("uart_tx")
    conns = [f".{clk}(clk)", f".{rx}(rx)", f".{tx}(tx)"]
    resets = board.pins_with_role("reset")
    if resets:
        name, p = resets[0]
        conns.append(f".{name}({'!' if p['active'] == 'low' else ''}rst)")
    conns += [f".{name}()" for name, _ in board.pins_with_role("led")]
    return f"""// opq_twin: the board top of {board.name} with the simulation harness's ports (generated by opq-hw).
module opq_twin #(
    parameter CLKS_PER_BIT = 8
) (
    input clk,
    input rst,
    input rx,
    output tx
);
    opq_board #(.CLKS_PER_BIT(CLKS_PER_BIT)) u_board ({", ".join(conns)});
endmodule
"""
