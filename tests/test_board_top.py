"""The board top (opq_hw.rtl.board): the accelerator behind the serial link with a board's pins,
simulated whole in Verilator (UART pins included) and driven by the host codec (opq_hw.hil): the
logits that come back over the wire equal the integer reference, for both RTL architectures,
with a fault in between."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from test_uart import CPB, _play  # the UART harness driver and its bit period

from opq_hw import hil
from opq_hw.errors import OpqError


def test_geometry_codec_and_baud_check():
    from opq_hw.rtl.board import LinkGeometry, clks_per_bit

    g = LinkGeometry(in_w=15, beats=3, out_w=12, n_out=2)
    assert (g.in_beat, g.in_len, g.out_beat, g.out_len) == (2, 6, 2, 4)
    assert g.encode(np.array([[1, 0x7FFF, 256]])) == [bytes([1, 0, 0xFF, 0x7F, 0, 1])]
    assert g.decode(bytes([0xFF, 0x0F, 5, 0])).tolist() == [-1, 5]  # 12-bit two's complement
    with pytest.raises(OpqError, match="unsigned 15-bit"):
        g.encode(np.array([[1, 1 << 15, 0]]))
    assert clks_per_bit(12.0, 115200) == 104 and clks_per_bit(25.0, 115200) == 217
    assert clks_per_bit(12.0, 3_000_000) == 4
    with pytest.raises(OpqError, match="6000000 baud at 12 MHz is 2.00 clocks per bit: fewer than 4"):
        clks_per_bit(12.0, 6_000_000)
    with pytest.raises(OpqError, match="more than 2% off"):
        clks_per_bit(12.0, 2_500_000)


def test_board_top_names_the_board_pins():
    from opq_hw.boards import load_board
    from opq_hw.rtl.board import LinkGeometry, board_top, twin_top

    g = LinkGeometry(in_w=6, beats=4, out_w=10, n_out=3)
    v = board_top(load_board("ulx3s-85f"), g, 217)
    assert "input clk_25mhz" in v and "input ftdi_txd" in v and "output ftdi_rxd" in v and "input btn_pwr_n" in v
    assert ".rx(ftdi_txd), .tx(ftdi_rxd)" in v and "|| !btn_pwr_n" in v and "assign led0 = (busy);" in v
    assert "parameter CLKS_PER_BIT = 217" in v and ".IN_LEN(4), .OUT_LEN(6)" in v
    t = twin_top(load_board("icebreaker"))
    assert ".clk(clk), .rx(rx), .tx(tx), .btn_n(!rst)" in t


def _build_twin(tmp_path, net, arch: str, board: str):
    from opq_hw.boards import load_board
    from opq_hw.flows.rtl_flow import _generate
    from opq_hw.rtl.board import LINK_HDL, board_top, geometry, twin_top
    from opq_hw.rtl.gen import HDL_DIR, write_design
    from opq_hw.rtl.verilator import build_sim, verilator_env

    try:
        verilator_env()
    except OpqError as e:
        pytest.fail(f"Verilator is required for the board-top tests: {e}")
    d = _generate(net, arch, 0.0)
    g = geometry(d)
    src = tmp_path / "src"
    files = write_design(d, src)
    b = load_board(board)
    (src / "opq_board.v").write_text(board_top(b, g, CPB))
    (src / "opq_twin.v").write_text(twin_top(b))
    for f in LINK_HDL:
        shutil.copyfile(HDL_DIR / f, src / f)
    files += [src / f for f in LINK_HDL] + [src / "opq_board.v", src / "opq_twin.v"]
    binary = build_sim(files, tmp_path / "sim", top="opq_twin", harness="tb_uart.cpp", prefix="Vtwin",
                       params={"CLKS_PER_BIT": CPB})
    return binary, d, g


@pytest.mark.slow
@pytest.mark.tools
@pytest.mark.parametrize("arch,board,which", [("seq", "icebreaker", "2d"), ("da4ml", "ulx3s-85f", "1d")])
def test_board_twin_is_bit_exact_over_the_uart(tmp_path, arch, board, which):
    from test_rtl_seq import _net_1d, _net_2d

    from opq_hw.flows.rtl_flow import _pixels

    rng = np.random.default_rng(3 if which == "2d" else 4)
    net = _net_2d(rng) if which == "2d" else _net_1d(rng)
    lo, hi = (-(2 ** (net.in_bits - 1)), 2 ** (net.in_bits - 1) - 1) if net.in_signed else (0, 2 ** net.in_bits - 1)
    xi = rng.integers(lo, hi + 1, size=(4,) + net.in_shape)
    xi[0] = hi
    ref = net.forward_int(xi)
    binary, d, g = _build_twin(tmp_path, net, arch, board)
    frames = [hil.encode(hil.INFER, p) for p in g.encode(_pixels(net, xi * 2.0 ** net.in_exp, arch))]
    gap = (len(frames[0]) + g.out_len + 20) * 10 * CPB + 4 * d.latency_stages + 2000
    bad = bytearray(frames[1])
    bad[7] ^= 0x01
    script = [hil.encode(hil.PING), gap, frames[0], gap, bytes(bad), gap] + [x for f in frames[1:] for x in (f, gap)]
    got, dec, framing = _play(binary, tmp_path / "play", script)
    assert dec.dropped == dec.bad == 0 and framing == []
    assert [f.name for f in got] == ["PONG", "RESULT", "ERROR", "RESULT", "RESULT", "RESULT"]
    assert got[0].payload == g.in_len.to_bytes(2, "little") + g.out_len.to_bytes(2, "little")
    assert got[2].error() == (0x01, 0)
    results = [f.result(g.out_len) for f in got if f.ftype == hil.RESULT]
    logits = np.stack([g.decode(out) for out, _ in results])
    np.testing.assert_array_equal(logits, ref)  # bit-exact over the wire
    cycles = [c for _, c in results]
    assert all(0 < c < gap for c in cycles)
    if arch == "seq":  # the sequential core's compute time does not depend on the data
        assert len(set(cycles)) == 1 and abs(cycles[0] - d.latency_stages) <= 8, (cycles, d.latency_stages)
    # the same twin as a serial port (the harness's interactive mode), request by request through hil.Link
    with hil.TwinPort(binary, CPB) as port:
        link = hil.Link(port, timeout=60, name="the twin")
        assert link.request(hil.PING).ftype == hil.PONG
        with pytest.raises(OpqError, match="answered ERROR 0x03: wrong payload length"):
            link.infer(b"\x00" * (g.in_len - 1), g.out_len)
        over = [link.infer(p, g.out_len) for p in g.encode(_pixels(net, xi * 2.0 ** net.in_exp, arch))]
    np.testing.assert_array_equal(np.stack([g.decode(out) for out, _ in over]), ref)
    assert [c for _, c in over] == cycles  # the same compute cycles as in the scripted run


STUB_TOP = """module opq_top (input clk, input rst, input s_valid, output s_ready, input [7:0] s_data,
    output m_valid, output [7:0] m_data, output m_last);
    reg [1:0] k;  // a stand-in accelerator: each input word is its logit, 4 per sample
    always @(posedge clk) if (rst) k <= 0; else if (s_valid) k <= k + 1;
    assign s_ready = 1'b1; assign m_valid = s_valid; assign m_data = s_data; assign m_last = s_valid && (k == 3);
endmodule
"""


@pytest.mark.slow
@pytest.mark.tools
def test_board_top_places_at_the_board_pins(tmp_path):
    """Yosys + nextpnr-ice40 on the iCEBreaker board top (the link around a stand-in accelerator:
    pins are the board top's business) with a PLL to 20 MHz (icepll): the generated .pcf pins every
    port of the board YAML, nextpnr places exactly those, each at the package pin the YAML names
    (read back from the placed netlist and IceStorm's pin table), the PLL's clock is what timing is
    checked against, and a bitstream comes out."""
    import re

    from opq_hw.boards import load_board, pin_file
    from opq_hw.flows import FLOWS
    from opq_hw.flows.rtl_flow import _check_placement, _timing, nextpnr_device
    from opq_hw.rtl import clock, eda
    from opq_hw.rtl.board import LINK_HDL, LinkGeometry, board_top, clks_per_bit
    from opq_hw.rtl.gen import HDL_DIR

    b = load_board("icebreaker")
    plan = clock.plan(b, 20.0)
    assert plan.source == "pll" and plan.achieved_mhz == pytest.approx(19.875)
    src = tmp_path / "src"
    src.mkdir()
    (src / "opq_top.v").write_text(STUB_TOP)
    (src / "opq_board.v").write_text(board_top(b, LinkGeometry(8, 4, 8, 4), clks_per_bit(plan.achieved_mhz, 115200), plan))
    (src / "opq_clock.v").write_text(plan.verilog())
    for f in LINK_HDL:
        shutil.copyfile(HDL_DIR / f, src / f)
    files = [src / f for f in ("opq_top.v", "opq_clock.v", "opq_board.v", *LINK_HDL)]
    name, text = pin_file(b)
    (tmp_path / name).write_text(text)
    work = tmp_path / "synth"
    eda.synth(files, "opq_board", "ice40", work)
    dev, pkg = nextpnr_device("ice40", b.part)
    p = eda.pnr(work, "opq_board", "ice40", dev, pkg, plan.achieved_mhz, constraints=tmp_path / name)
    assert (work / p["bitstream"]).stat().st_size > 0
    log = (work / "opq_board.pnr.log").read_text()
    placed = set(re.findall(r"constrained '(\w+)' to bel", log))
    assert placed == set(b.pins)  # every board pin, and nothing nextpnr chose by itself
    assert "constrained PLL 'u_clock.u_pll.uut' to X12/Y31/pll_3" in log  # the UP5K's PLL, fed by its pad (pin 35)
    assert "constraining clock net 'clk' to 12.00 MHz" in log
    assert "Derived frequency constraint of 19.9 MHz for net clk_i" in log  # the PLL's output, from icepll's dividers
    assert list(p["fmax_by_clock"]) == ["clk_i_$glb_clk"]  # the one clock timing is checked on: the PLL's
    # where each port sits, from the placed netlist: the YAML's package pins
    sites = eda.placed_sites(work / "opq_board.routed.json", "ice40", dev, pkg, b.part)
    assert {n: s["site"] for n, s in sites.items()} == {n: q["site"] for n, q in b.pins.items()}
    chk = _check_placement(b, sites)
    assert chk["ok"] and chk["pins"]["clk"] == {"site": "35", "placed": "35", "bel": "X12/Y31/io1"}
    moved = {**sites, "tx": {"bel": "X13/Y0/io1", "site": "6"}}  # a port placed elsewhere is caught
    assert "tx at 6 (board file: 9)" in _check_placement(b, moved)["error"]
    t = _timing(p, b, FLOWS["rtl"].options())
    assert t["met"] == (p["fmax_mhz"] >= 19.875) and t["target_mhz"] == 19.875


def test_dev_boards_add_the_board_step_and_check_the_baud():
    from opq_hw.flows import FLOWS, rtl_flow

    names = [s.name for s in rtl_flow.build_steps(FLOWS["rtl"].options(), "ice40", dev_board=True)]
    assert names[:3] == ["intnet", "rtl", "board"]
    assert "board" not in [s.name for s in rtl_flow.build_steps(FLOWS["rtl"].options(), "ice40")]
    assert FLOWS["rtl"].options(baud=3_000_000).baud == 3_000_000
    with pytest.raises(OpqError, match="--baud must be a whole number"):
        FLOWS["rtl"].options(baud=9600.5)


def test_timing_verdict_and_the_build_failure():
    """Fmax below the board clock fails the build with the numbers and the hints, unless
    --timing-allow-fail; a port placed off its site fails it too."""
    from opq_hw.boards import load_board
    from opq_hw.flows import FLOWS
    from opq_hw.flows.rtl_flow import _failure, _timing

    b = load_board("icebreaker")
    t = _timing({"fmax_mhz": 17.3, "target_mhz": 19.875}, b, FLOWS["rtl"].options())
    assert not t["met"]
    assert t["message"] == ("timing not met on icebreaker: Fmax 17.3 MHz < target 19.88 MHz; lower the clock (--freq 17 "
                            "or less; the oscillator is 12 MHz), compress harder, or pass --timing-allow-fail to keep "
                            "the bitstream anyway")
    assert _failure({"pnr": {"timing": t}}, False, False) == t["message"]
    allowed = _timing({"fmax_mhz": 17.3, "target_mhz": 19.875}, b, FLOWS["rtl"].options(timing_allow_fail=True))
    assert _failure({"pnr": {"timing": allowed}}, False, False) is None
    assert _timing({"fmax_mhz": 24.2, "target_mhz": 12.0}, b, FLOWS["rtl"].options())["met"]
    da = _timing({"fmax_mhz": 9.0, "target_mhz": 12.0}, b, FLOWS["rtl"].options(rtl_arch="da4ml"))["message"]
    assert "(--freq 9 or less; the oscillator is 12 MHz), use --rtl-arch seq or compress harder," in da
    bad = {"ok": False, "error": "nextpnr placed tx at 6 (board file: 9)"}
    assert "tx at 6" in _failure({"pnr": {"placement": bad, "timing": {"met": True}}}, False, False)
    from opq_hw.cli import parser

    assert parser().parse_args(["build", "r", "--flow", "rtl", "--board", "icebreaker", "--freq", "20",
                                "--timing-allow-fail"]).timing_allow_fail is True


@pytest.mark.tools
def test_clock_plans_from_the_pll_tools(tmp_path):
    """--freq: the oscillator when omitted or equal; else icepll (iCE40, the PLL pad) / ecppll (ECP5),
    the achieved frequency computed from the dividers the tool chose; the wrapper is a
    pass-through under Verilator (lint-clean), the board top holds the core in reset until lock."""
    import subprocess

    from opq_hw.boards import load_board
    from opq_hw.rtl import clock
    from opq_hw.rtl.board import LinkGeometry, board_top
    from opq_hw.rtl.verilator import verilator_env

    ib, ul = load_board("icebreaker"), load_board("ulx3s-85f")
    assert clock.plan(ib, None).source == "oscillator" and clock.plan(ib, 12.0).to_dict() == {
        "osc_mhz": 12.0, "requested_mhz": 12.0, "achieved_mhz": 12.0, "source": "oscillator"}
    p = clock.plan(ib, 20.0)
    assert p.params == {"DIVR": 0, "DIVF": 52, "DIVQ": 5, "FILTER_RANGE": 1, "vco_mhz": 636.0}
    assert p.achieved_mhz == 12.0 * 53 / 32 and "SB_PLL40_PAD" in p.verilog()
    e = clock.plan(ul, 50.0)
    assert e.achieved_mhz == 50.0 and e.params["CLKFB_DIV"] / e.params["CLKI_DIV"] == 2
    assert 400 <= e.params["vco_mhz"] <= 800 and "EHXPLLL" in e.verilog()
    with pytest.raises(OpqError, match="icepll finds no PLL setting for 900 MHz"):
        clock.plan(ib, 900.0)
    with pytest.raises(OpqError, match=r"icepll gives 15.94 MHz .* outside the ice40 PLL's range \(16..275 MHz out\)"):
        clock.plan(ib, 16.0)  # icepll's nearest is below its own stated minimum
    with pytest.raises(OpqError, match=r"ecppll gives 450 MHz .*\(10..400 MHz out, 400..800 MHz VCO\)"):
        clock.plan(ul, 450.0)  # ecppll only warns
    top = board_top(ul, LinkGeometry(8, 4, 8, 4), 434, e)
    assert "opq_clock u_clock (.clk_in(clk_25mhz), .clk_out(clk_i), .locked(locked));" in top
    assert "if (!locked) por <= 4'd0;" in top
    assert "opq_clock" not in board_top(ul, LinkGeometry(8, 4, 8, 4), 217, clock.plan(ul, None))
    exe, env = verilator_env()
    for plan in (p, e):
        (tmp_path / "opq_clock.v").write_text(plan.verilog())
        r = subprocess.run([exe, "--lint-only", "-Wall", "--top-module", "opq_clock", "opq_clock.v"],
                           cwd=tmp_path, capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr
