"""Each hand-written Verilog block of the open RTL flow (hls/rtl/*.v) alone in Verilator, against numpy.

A small test top adapts the block to the harness interface of sim/tb_stream.cpp (s_valid/s_data in,
m_valid/m_data/m_last out), frames are streamed back to back and with random input gaps.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from opq_hw.rtl.gen import HDL_DIR, requant_expr
from opq_hw.rtl.intnet import rne_shift

pytestmark = [pytest.mark.slow, pytest.mark.tools]


def _need_tools():
    from opq_hw.errors import OpqError
    from opq_hw.rtl.verilator import verilator_env

    try:
        verilator_env()
    except OpqError as e:
        pytest.fail(f"Verilator is required for the RTL tests: {e}")


def _sim(tmp_path, top_text: str, blocks: list[str], pixels: np.ndarray, n_out: int, gap: int = 0, seed: int = 1):
    from opq_hw.rtl.verilator import build_sim, run_sim

    _need_tools()
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "opq_top.v").write_text(top_text)
    files = [src / "opq_top.v"]
    for b in blocks:
        shutil.copyfile(HDL_DIR / b, src / b)
        files.append(src / b)
    binary = build_sim(files, tmp_path / "sim")
    outs = []
    for g in ([0, gap] if gap else [0]):
        outs.append(run_sim(binary, pixels, n_out, tmp_path / f"run{g}", gap_permille=g, seed=seed))
    return outs


def _frame_counter_top(inner: str, n_per_frame: int, in_w: int, out_w: int) -> str:
    """A top: `inner` drives ov/od; m_last marks every n_per_frame-th output."""
    return f"""module opq_top (input clk, input rst, input s_valid, output s_ready, input [{in_w - 1}:0] s_data,
    output m_valid, output [{out_w - 1}:0] m_data, output m_last);
    assign s_ready = 1'b1;
    wire ov; wire [{out_w - 1}:0] od;
{inner}
    reg [15:0] k;
    always @(posedge clk) if (rst) k <= 0; else if (ov) k <= (k == {n_per_frame - 1}) ? 0 : k + 1;
    assign m_valid = ov; assign m_data = od; assign m_last = ov && (k == {n_per_frame - 1});
endmodule
"""


def _windows(img: np.ndarray, kh: int, kw: int, ph: int, pw: int) -> np.ndarray:
    """(OH*OW, KH*KW*C) windows of img (C, H, W), tap t = kh*KW + kw, channel minor."""
    c, h, w = img.shape
    p = np.pad(img, ((0, 0), (ph, ph), (pw, pw)))
    oh, ow = h + 2 * ph - kh + 1, w + 2 * pw - kw + 1
    out = np.zeros((oh * ow, kh * kw * c), dtype=np.int64)
    for y in range(oh):
        for x in range(ow):
            out[y * ow + x] = p[:, y:y + kh, x:x + kw].transpose(1, 2, 0).reshape(-1)
    return out


def _pack(vals: np.ndarray, bw: int) -> np.ndarray:
    """Pack the last axis (LSB first) into words of len*bw bits."""
    vals = np.asarray(vals, dtype=np.int64) & ((1 << bw) - 1)
    words = np.zeros(vals.shape[:-1], dtype=np.int64)
    for i in range(vals.shape[-1]):
        words |= vals[..., i] << (i * bw)
    return words


@pytest.mark.parametrize("c,bw,h,w,kh,kw,ph,pw,sized", [
    (1, 3, 4, 5, 3, 3, 1, 1, 0),   # 2-D "same" padding (the digits CNN case)
    (1, 3, 5, 4, 3, 3, 0, 0, 0),   # 2-D "valid": no tail, discarded columns
    (2, 4, 1, 7, 1, 3, 0, 1, 1),   # 1-D, two channels; counters sized to the frame (digit-serial designs)
])
def test_window_matches_numpy(tmp_path, c, bw, h, w, kh, kw, ph, pw, sized):
    rng = np.random.default_rng(0)
    n = 7
    imgs = rng.integers(0, 2 ** bw, size=(n, c, h, w))
    oh, ow = h + 2 * ph - kh + 1, w + 2 * pw - kw + 1
    wbits = kh * kw * c * bw
    inner = (f"    opq_window #(.C({c}), .BW({bw}), .H({h}), .W({w}), .KH({kh}), .KW({kw}), .PH({ph}), .PW({pw}), "
             f".SIZED({sized})) "
             f"u (.clk(clk), .rst(rst), .in_valid(s_valid), .in_data(s_data), .out_valid(ov), .out_data(od));")
    top = _frame_counter_top(inner, oh * ow, c * bw, wbits)
    pixels = _pack(imgs.transpose(0, 2, 3, 1).reshape(n, h * w, c), bw)
    want = np.stack([_pack(_windows(im, kh, kw, ph, pw).reshape(oh * ow, kh * kw, c).reshape(oh * ow, -1), bw)
                     for im in imgs])
    for res in _sim(tmp_path, top, ["opq_window.v"], pixels, oh * ow, gap=400):
        np.testing.assert_array_equal(res.words, want)


@pytest.mark.parametrize("c,bw,h,w,kr,kc,signed,sized", [(2, 4, 5, 6, 2, 2, 0, 0),
                                                          (1, 6, 1, 9, 1, 2, 1, 1)])  # sized: W odd, oc reaches OW
def test_maxpool_matches_numpy(tmp_path, c, bw, h, w, kr, kc, signed, sized):
    rng = np.random.default_rng(1)
    n = 6
    lo, hi = (-(2 ** (bw - 1)), 2 ** (bw - 1)) if signed else (0, 2 ** bw)
    imgs = rng.integers(lo, hi, size=(n, c, h, w))
    oh, ow = h // kr, w // kc
    want_v = imgs[:, :, :oh * kr, :ow * kc].reshape(n, c, oh, kr, ow, kc).max(axis=(3, 5))
    want = _pack(want_v.transpose(0, 2, 3, 1).reshape(n, oh * ow, c), bw)
    inner = (f"    opq_maxpool #(.C({c}), .BW({bw}), .H({h}), .W({w}), .KR({kr}), .KC({kc}), .SIGNED({signed}), "
             f".SIZED({sized})) "
             f"u (.clk(clk), .rst(rst), .in_valid(s_valid), .in_data(s_data), .out_valid(ov), .out_data(od));")
    top = _frame_counter_top(inner, oh * ow, c * bw, c * bw)
    pixels = _pack(imgs.transpose(0, 2, 3, 1).reshape(n, h * w, c), bw)
    for res in _sim(tmp_path, top, ["opq_maxpool.v"], pixels, oh * ow, gap=300):
        np.testing.assert_array_equal(res.words, want)


@pytest.mark.parametrize("sized", [0, 1])
def test_collect_and_serialize(tmp_path, sized):
    """opq_collect gathers a frame of 12 pixels, opq_serialize sends them back one per cycle.
    sized: both with counters sized to the frame, the serializer reading a held copy (HOLD)."""
    rng = np.random.default_rng(2)
    n, npix, bw = 9, 12, 5
    px = rng.integers(0, 2 ** bw, size=(n, npix))
    # HOLD: the serializer reads a register that holds the vector from the cycle after in_valid
    # until the next one, as a digit-serial layer's output register does
    hold = (f"    reg [{npix * bw - 1}:0] hd;\n    always @(posedge clk) if (cv) hd <= cd;\n" if sized
            else f"    wire [{npix * bw - 1}:0] hd = cd;\n")
    top = f"""module opq_top (input clk, input rst, input s_valid, output s_ready, input [{bw - 1}:0] s_data,
    output m_valid, output [{bw - 1}:0] m_data, output m_last);
    assign s_ready = 1'b1;
    wire cv; wire [{npix * bw - 1}:0] cd;
    opq_collect #(.PIX({bw}), .N({npix}), .SIZED({sized})) c (.clk(clk), .rst(rst), .in_valid(s_valid), .in_data(s_data),
        .out_valid(cv), .out_data(cd));
{hold}    opq_serialize #(.AW({bw}), .N({npix}), .SIZED({sized}), .HOLD({sized})) s (.clk(clk), .rst(rst), .in_valid(cv),
        .in_data(hd), .m_valid(m_valid), .m_data(m_data), .m_last(m_last));
endmodule
"""
    for res in _sim(tmp_path, top, ["opq_collect.v", "opq_serialize.v"], px, npix, gap=500):
        np.testing.assert_array_equal(res.words, px)


def _requant_top(aw: int, ob: int, n: int, body: list[str]) -> str:
    """A top: `body` computes r0..r{n-1} (ob bits each) from the aw-bit s_data; all registered out."""
    cat = ", ".join(f"r{i}" for i in reversed(range(n)))
    return f"""module opq_top (input clk, input rst, input s_valid, output s_ready, input [{aw - 1}:0] s_data,
    output m_valid, output [{ob * n - 1}:0] m_data, output m_last);
    assign s_ready = 1'b1;
{chr(10).join(body)}
    reg v; reg [{ob * n - 1}:0] q;
    always @(posedge clk) begin v <= s_valid & ~rst; q <= {{{cat}}}; end
    assign m_valid = v; assign m_data = q; assign m_last = v;
endmodule
"""


def test_requant_round_half_even(tmp_path):
    """The generated requantizer equals rne_shift + clamp (what Brevitas' QuantReLU computes), and
    synthesis sees no undefined bit in it (-8, -9: the shifted value is narrower than the output)."""
    aw, ob, shifts = 12, 5, [-3, -1, 0, 2, -12, -5, -8, -9]
    body = []
    for i, s in enumerate(shifts):
        body += ["    " + ln for ln in requant_expr("s_data", aw, s, ob, f"r{i}")]
    top = _requant_top(aw, ob, len(shifts), body)
    # every 12-bit value, including every tie
    acc = np.arange(-(2 ** (aw - 1)), 2 ** (aw - 1), dtype=np.int64)
    want = np.stack([np.clip(rne_shift(acc, s), 0, 2 ** ob - 1) for s in shifts], axis=1)
    res = _sim(tmp_path, top, [], (acc & ((1 << aw) - 1)).reshape(-1, 1), 1)[0]
    np.testing.assert_array_equal(res.words.reshape(-1), _pack(want, ob))
    import subprocess

    lint = subprocess.run(["yosys", "-p", "read_verilog src/opq_top.v; proc; opt", "-q"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert lint.returncode == 0, lint.stderr
    assert "out of bounds" not in lint.stdout + lint.stderr


def test_folded_requant_round_half_even(tmp_path):
    """The digit-serial layers' requantizer (`folded_capture` + `folded_requant`: the rounding
    constant 2^(k-1) added to the sum, q and the tie flag registered, no incrementer, the clamp from
    q's sign and high bits) equals rne_shift + clamp on every accumulator value, ties included; a
    shift that leaves q narrower than the output (-8), and one leaving its sign alone (-11)."""
    from opq_hw.rtl.gen import folded_capture, folded_requant

    aw, ob, shifts = 12, 5, [-1, -3, -4, -6, -8, -11]
    body, acc = [], np.arange(-(2 ** (aw - 1)), 2 ** (aw - 1) - (1 << 10), dtype=np.int64)  # acc + 2^(k-1) fits
    for i, s in enumerate(shifts):
        hw, cap = folded_capture(f"s{i}", aw, s)
        body += [f"    wire [{aw - 1}:0] s{i} = s_data + {aw}'d{1 << (-s - 1)};",
                 f"    wire [{hw - 1}:0] h{i} = {cap};"] + ["    " + ln for ln in folded_requant(f"h{i}", aw, s, ob, f"r{i}")]
    top = _requant_top(aw, ob, len(shifts), body)
    want = np.stack([np.clip(rne_shift(acc, s), 0, 2 ** ob - 1) for s in shifts], axis=1)
    res = _sim(tmp_path, top, [], (acc & ((1 << aw) - 1)).reshape(-1, 1), 1)[0]
    np.testing.assert_array_equal(res.words.reshape(-1), _pack(want, ob))
