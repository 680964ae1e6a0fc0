"""Digit-serial inputs of the da4ml architecture (`--serial-bits D`, opq_hw.rtl.gen): hand-made
integer networks in Verilator against IntNet's integer reference, with input gaps."""
from __future__ import annotations

import re

import numpy as np
import pytest

from opq_hw.errors import OpqError
from opq_hw.rtl.geometry import digit_steps
from test_rtl_seq import case


def test_digit_steps():
    assert digit_steps(8, False, 1) == 8
    assert digit_steps(8, True, 1) == 8  # the sign bit, then 7 bits
    assert digit_steps(6, True, 4) == 3  # the sign bit, then 5 bits sign-extended to two 4-bit digits
    assert digit_steps(5, False, 2) == 3
    assert digit_steps(4, False, 4) == digit_steps(4, False, 0) == 1  # whole activations: no serial layer


def test_serial_bits_option_is_checked():
    from opq_hw.flows import RtlOptions

    with pytest.raises(OpqError, match="does not apply to --rtl-arch seq"):
        RtlOptions(rtl_arch="seq", serial_bits=1)
    with pytest.raises(OpqError, match="--serial-bits must be"):
        RtlOptions(rtl_arch="da4ml", serial_bits=-1)
    assert RtlOptions(rtl_arch="da4ml", serial_bits=2).serial_bits == 2


@pytest.mark.slow
@pytest.mark.tools
@pytest.mark.parametrize("which,digit,pipeline", [("2d", 1, 0.0), ("1d", 2, 1.0), ("2d", 3, 0.0)])
def test_serial_design_matches_integer_reference(tmp_path, which, digit, pipeline):
    """2d: a signed 6-bit input (the sign bit as its own step), zero padding, 2x2 pooling, a dense
    last layer, combinational kernels; 1d: 2-bit digits through pipelined kernels (the control
    bits delayed beside them), a 5-bit input (the top digit zero-extended), two dense layers, the
    last one over a one-pixel collector; 2d with 3-bit digits: the signed input's sign digit
    zero-extended and its rest sign-extended to two digits, the 4-bit inputs zero-extended to two.
    Every serial layer's kernel reads the window's digits as they are (no multiplexer per input)
    and each output has one adder (the bias folded into the accumulation, the first step without
    a multiplexer) whose last-step sum is registered before the requantizer, which has no adder
    (the rounding constant folded into the bias); the biases have nonzero low digits."""
    from opq_hw.flows.rtl_flow import _pixels
    from opq_hw.rtl.gen import generate, write_design
    from opq_hw.rtl.verilator import build_sim, run_sim, to_signed

    net, xi, ref = case(which)
    d = generate(net, pipeline=pipeline, serial_bits=digit)
    period = max(digit_steps(L.in_bits, L.in_signed, digit) for L in net.layers)
    assert period > 1 and all(m.get("serial_steps", 1) <= period for m in d.layer_modules)
    for L, m in zip(net.layers, d.layer_modules):
        if m.get("serial_steps", 1) > 1:
            text = d.files[f"{m['module']}.v"]
            adders = [ln.count(" + ") for ln in text.splitlines() if re.match(r"\s*wire \[\d+:0\] s\d+ = ", ln)]
            assert ".x(wd[" in text and adders == [1] * L.w.shape[0], m["module"]  # one adder per output
            assert re.search(r"a\d+ <= [^;]*\?", text) is None  # no multiplexer before the accumulator
            if m is not d.layer_modules[-1]:  # the requantizer reads the registered sum, not the adder,
                # and where it shifts right it has no incrementer: the rounding constant is in the sum
                rq: dict[str, str] = {}
                for o, e in re.findall(r"wire (?:signed )?\[\d+:0\] r(\d+)\w* = ([^;]*);", text):
                    rq[o] = rq.get(o, "") + e + ";"
                assert len(rq) == L.w.shape[0], m["module"]
                for o, e in rq.items():
                    assert re.search(rf"\bh{o}\b", e) or re.fullmatch(r"\d+'d0;", e), (m["module"], o, e)
                    assert not re.search(r"\bs\d+", e) and "+" not in e, (m["module"], o, e)
    assert any(int(L.b[o]) % (1 << digit) for L in net.layers for o in range(L.b.size))
    binary = build_sim(write_design(d, tmp_path / "src"), tmp_path / "sim")
    px = _pixels(net, xi * 2.0 ** net.in_exp, "da4ml")
    for gap in (0, 400):  # back to back, and with random holes in the input stream
        r = run_sim(binary, px, d.n_out, tmp_path / f"run{gap}", gap_permille=gap)
        np.testing.assert_array_equal(to_signed(r.words, d.out_w), ref)
        if gap == 0:  # one pixel every `period` cycles
            assert r.interval == period * px.shape[1]
