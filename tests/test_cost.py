"""Cost model: hand-computed cases for every formula (exact integers), monotonicity properties,
estimate/choose_folding behaviour, JSON round trip, golden cost.json for the demo model, and the
hardware-aware allocation."""
from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opq_hw.boards import load_board
from opq_hw.cost import (CostReport, LayerParams, bram_blocks, choose_folding, csd_digits_mean, estimate,
                         finn_bram18, finn_mvau, hls4ml_latency, hls4ml_resource, network_params, rtl_da, rtl_seq,
                         rtl_seq_top, valid_reuse_factors, yosys_memory)
from opq_hw.cost.common import bram_aspects
from opq_hw.cost.rtl import (CMP_CARRY_LUT_PER_BIT, MUX_LUT_PER_BIT, board_top_features, cmp_on_carry, da_top_features,
                             link_geometry, lutram_mux_bits, pool_registers, rom_logic_luts, rtl_da_top,
                             seq_logits_memory)
from opq_hw.errors import OpqError
from opq_hw.spec import Allocation, LayerSpec

GOLDEN = Path(__file__).parent / "golden"
PYNQ = load_board("pynq-z2")
DEFAULT_CAL = {"da_coef": 1.0, "da_digit_exp": 1.0, "da_width_exp": 1.0, "lut_per_da": 1.0, "lut_per_requant_bit": 0.5,
               "lut_per_window_bit": 0.25, "lut_per_conv_layer": 100.0, "lut_per_layer": 10.0, "provenance": "test"}
SEQ_CAL = {"lut_per_layer": 100.0, "lut_per_acc_bit": 2.0, "lut_per_table_bit": 0.5, "lut_per_addr_bit": 1.0,
           "lut_per_rom_lut": 1.0, "lut_per_lutram_mux_bit": 0.5, "lut_per_buf_logic_bit": 0.5, "ff_scale": 1.0,
           "ff_per_layer": 50.0, "top_lut": 50.0, "top_lut_per_layer": 10.0, "top_lut_per_logit_bit": 0.5,
           "top_ff": 20.0, "top_ff_per_layer": 2.0, "provenance": "test"}


def lin(fan_in=16, out=4, nnz=40, w=4, a=8, signed=False, bias=True, pixels=1):
    return LayerParams(name="fc", kind="linear", fan_in=fan_in, out_channels=out, out_pixels=pixels, in_pixels=1,
                       in_channels=fan_in, kernel=(), in_width=1, n_weights=fan_in * out, nnz=nnz, w_bits=w, a_bits=a,
                       a_signed=signed, has_bias=bias)


def ints(res):
    return {k: int(round(float(v))) for k, v in res.items()}


# ---------------------------------------------------------------- hand-computed cases
def test_hls4ml_latency_hand_case():
    # acc = 4 + 8 + ceil(log2 16) = 16; c_cm*W*A = 0.5*32 = 16 LUT per multiply
    r = ints(hls4ml_latency(lin(), PYNQ, reuse_factor=1))
    # 40 mults * 16 + (36 tree adders + 4 bias adders) * 16 = 640 + 640
    assert r["LUT"] == 1280
    # 40 * (4 + 8) + 40 * 16
    assert r["FF"] == 1120
    assert (r["DSP"], r["BRAM18"], r["URAM"], r["mults"]) == (0, 0, 0, 40)
    assert (r["cycles"], r["ii"]) == (1, 1)
    assert r["latency"] == 1 + 4 + 2  # ceil(log2(40/4)) = 4, + pipeline_extra_cycles
    r2 = ints(hls4ml_latency(lin(), PYNQ, reuse_factor=2))
    # 20 mults * 16 + (ceil(36/2) + 4) * 16 = 320 + 352; FF 20*12 + 22*16
    assert (r2["LUT"], r2["FF"], r2["cycles"], r2["latency"]) == (672, 592, 2, 8)
    conv = dataclasses.replace(lin(), kind="conv2d", out_pixels=64)
    assert ints(hls4ml_latency(conv, PYNQ, reuse_factor=2))["cycles"] == 128


def test_hls4ml_latency_dsp_threshold():
    wide = lin(w=12, a=12)  # both operands >= 10 bits: DSPs, one 25x18 tile per 12x12 multiply
    r = ints(hls4ml_latency(wide, PYNQ))
    assert r["DSP"] == 40
    acc = 12 + 12 + 4
    assert r["LUT"] == 40 * acc  # adders only
    huge = lin(w=16, a=26)  # 26x16 needs ceil(26/25)*ceil(16/18) = 2 DSP48E1 tiles
    assert ints(hls4ml_latency(huge, PYNQ))["DSP"] == 80


def test_hls4ml_resource_hand_cases():
    # n = 64 weights, R = 8: BF = 8 multipliers, memory 32 bits x 8 deep = 256 bits < 1024 -> LUTRAM
    r = ints(hls4ml_resource(lin(), PYNQ, reuse_factor=8))
    # 8 * (1.0*4*8) + 8 * 16 (accumulators) + ceil(256/64)
    assert r["LUT"] == 256 + 128 + 4
    assert r["FF"] == 8 * 12 + 4 * 16
    assert (r["BRAM18"], r["DSP"], r["cycles"]) == (0, 0, 8)
    # 256 x 64 weights of 8 bits, R = 64: BF = 256, memory 2048 bits wide x 64 deep -> 512x36 BRAM18s: ceil(2048/36)
    big = lin(fan_in=256, out=64, nnz=100, w=8, a=8)
    assert ints(hls4ml_resource(big, PYNQ, reuse_factor=64))["BRAM18"] == 57
    # R = 1: fully partitioned into registers
    assert ints(hls4ml_resource(big, PYNQ, reuse_factor=1))["BRAM18"] == 0
    # pruning does not pay in the resource strategy
    assert ints(hls4ml_resource(lin(nnz=10), PYNQ, 8)) == ints(hls4ml_resource(lin(nnz=64), PYNQ, 8))


def test_bram_blocks_aspect_ratios():
    assert bram_blocks(36, 512, PYNQ) == 1
    assert bram_blocks(37, 512, PYNQ) == 2
    assert bram_blocks(1, 16384, PYNQ) == 1
    assert bram_blocks(18, 1025, PYNQ) == 2  # 1024x18 twice, or 2048x9 twice
    ice = load_board("ice40-up5k")
    assert bram_blocks(16, 256, ice) == 1
    assert bram_blocks(16, 512, ice) == 2


def test_finn_mvau_hand_case():
    # MW=64, MH=32, PE=4, SIMD=8, W=4, A=8 unsigned (FINN-R formulas, FINN MVAU_hls.lut_estimation)
    p = lin(fan_in=64, out=32, nnz=100, w=4, a=8)
    r = ints(finn_mvau(p, PYNQ, pe=4, simd=8))
    # mult = 8*(2*ceil(12/6)-1)*12 = 288; addertree = 12*15 = 180;
    # alpha = log2(64)+4+8-1-0 = 17 -> acc = ceil(17 + log2(1+2^-17) + 1) = 19
    # LUT = int(300 + 1.1*4*(288+180+19)) = int(2442.8)
    assert r["LUT"] == 2442
    # omega = 64*32/32 = 64 words of 4*8*4 = 128 bits: ceil(64/512)*ceil(128/36)
    assert r["BRAM18"] == 4
    assert (r["DSP"], r["URAM"]) == (0, 0)
    assert r["cycles"] == (32 // 4) * (64 // 8)
    assert r["FF"] == 4 * (8 * 12 + 19)
    rd = ints(finn_mvau(p, PYNQ, pe=4, simd=8, res_type="dsp"))
    assert rd["DSP"] == 4 * 8 * 1 and rd["LUT"] == int(300 + 1.1 * 4 * (180 + 19))
    conv = dataclasses.replace(p, kind="conv2d", out_pixels=16)
    assert ints(finn_mvau(conv, PYNQ, pe=4, simd=8))["cycles"] == 64 * 16
    # signed input (first layer) narrows FINN's accumulator bound by one bit: alpha = 16 -> 18
    assert ints(finn_mvau(dataclasses.replace(p, a_signed=True), PYNQ, pe=4, simd=8))["LUT"] == int(300 + 1.1 * 4 * (288 + 180 + 18))


def test_finn_bram_branches():
    # width 8 <= 9: ceil(omega/2048)*ceil(8/9); omega = 64*32/2 = 1024
    assert finn_bram18(1, 2, 4, 64, 32) == 1
    assert finn_bram18(1, 1, 1, 16384 * 2, 1) == 2  # width 1: ceil(32768/16384)
    assert finn_bram18(1, 1, 2, 8192, 2) == 2  # width 2: ceil(16384/8192)
    assert finn_bram18(1, 4, 1, 4096 * 4, 1) == 1  # width 4: ceil(4096/4096)*1
    assert finn_bram18(1, 4, 4, 64, 32, ram_style="distributed") == 0
    assert finn_bram18(4, 4, 4, 64, 32, mem_mode="internal_embedded") == 0  # WMEM = 64*32/16 = 128 <= 128
    assert finn_bram18(1, 4, 4, 64, 32, mem_mode="internal_embedded") == 1  # WMEM = 512: ceil(512/1024)*ceil(16/18)
    assert finn_bram18(2, 4, 4, 64, 32, mem_mode="external") == 0


def test_finn_folding_must_divide():
    with pytest.raises(OpqError, match="SIMD | MW"):
        finn_mvau(lin(fan_in=64, out=32), PYNQ, pe=3, simd=8)


def test_csd_digits_exact():
    assert csd_digits_mean(2) == 1.0  # {1}
    assert csd_digits_mean(3) == pytest.approx(4 / 3)  # 1, 2, 3 = 4-1
    assert csd_digits_mean(4) == pytest.approx(11 / 7)  # 1..7: 1,1,2,1,2,2,2


def test_csd_digits_expected_laplace():
    """OPQ layers: small magnitudes dominate, so fewer digits than uniform; total digits fall with sparsity."""
    from opq_hw.cost import csd_digits_expected

    base = lin(fan_in=64, out=16, nnz=512, w=5)
    assert float(csd_digits_expected(base)) == pytest.approx(csd_digits_mean(5))  # no Laplace scale: uniform
    tight = dataclasses.replace(base, laplace_b=0.01, nnz=1000)  # mass all in the lowest surviving bin
    assert float(csd_digits_expected(tight)) == pytest.approx(1.0, abs=1e-4)
    mid = dataclasses.replace(base, laplace_b=0.25)
    assert 1.0 < float(csd_digits_expected(mid)) < csd_digits_mean(5)
    ks = np.array([50.0, 200.0, 500.0, 900.0])
    total = ks * csd_digits_expected(dataclasses.replace(mid, nnz=ks))
    assert np.all(np.diff(total) > 0)


def test_rtl_da_hand_case():
    p = lin(fan_in=16, out=4, nnz=30, w=3, a=8)
    r = ints(rtl_da(p, load_board("ecp5-85f"), DEFAULT_CAL))
    # digits = 30 * 4/3 = 40, width 3+8+2 = 13 -> da 520; requant 4 x acc (3+8+4 = 15) = 60 bits
    assert r["LUT"] == 520 + 0.5 * 60 + 10
    # collector 16*8 + its counter 16 + valid 1; valid delay 1; requantized outputs 4*8
    assert r["FF"] == 16 * 8 + 16 + 1 + 1 + 4 * 8
    assert (r["DSP"], r["BRAM18"], r["cycles"]) == (0, 0, 1)
    # with what the generator records of da4ml's solution, its cost and register count replace the model's
    kernel = {"da4ml_cost": 300, "registers": 777, "chains": [[5, 8], [3, 8], [40, 2]], "latency": 2}
    rk = ints(rtl_da(p, load_board("ecp5-85f"), DEFAULT_CAL, kernel=kernel))
    extra = load_board("ecp5-85f").coeff("pipeline_extra_cycles")
    assert (rk["LUT"], rk["FF"], rk["latency"]) == (300 + 30 + 10, 777, 1 + 2 + 1 + extra)
    # xc7: runs of >= 4 shift-register flip-flops become SRLC32Es (32 deep), counted as LUTs
    rx = ints(rtl_da(p, load_board("arty-a7-100t"), DEFAULT_CAL, kernel=kernel))
    assert (rx["FF"], rx["LUT"]) == (777 - 5 * 8 - 40 * 2, 340 + 8 + 2 * 2)
    conv = LayerParams(name="c", kind="conv2d", fan_in=9 * 16, out_channels=8, out_pixels=64, in_pixels=64,
                       in_channels=16, kernel=(3, 3), in_width=8, n_weights=9 * 16 * 8, nnz=90, w_bits=2, a_bits=8,
                       a_signed=False, has_bias=False)
    rc = ints(rtl_da(conv, load_board("ecp5-85f"), DEFAULT_CAL))
    # digits 90, width 12; requant 8 x (2+8+8) bits; window multiplexers 9*16*8 bits
    assert rc["LUT"] == 90 * 12 + 0.5 * 8 * 18 + 0.25 * 9 * 16 * 8 + 100 + 10
    # shift register of (3-1)*8 + 3 pixels of 16*8 bits, window counters 96 + valid 1, delay 1, outputs 8*8
    assert rc["FF"] == 16 * 8 * 19 + 96 + 1 + 1 + 8 * 8
    assert (rc["BRAM18"], rc["cycles"]) == (0, 64)
    # xc7: the window reads offsets 0-2, 8-10, 16-18; the runs 3-8 and 11-16 (6 each) become SRLs
    rcx = ints(rtl_da(conv, load_board("arty-a7-100t"), DEFAULT_CAL))
    assert rcx["FF"] == rc["FF"] - 2 * 6 * 16 * 8
    # the window's `orow * W` takes a DSP on xc7 when W is not a power of two (W = 8: a shift)
    w10 = dataclasses.replace(conv, in_width=10)
    assert (rcx["DSP"], ints(rtl_da(w10, load_board("arty-a7-100t"), DEFAULT_CAL))["DSP"], rc["DSP"]) == (0, 1, 0)
    # 4-bit outputs (out_bits): the requantized output registers are 4 x 4; the last layer has no
    # requantizer (its accumulators, 4 x 15 bits, are the registered logits)
    assert ints(rtl_da(dataclasses.replace(p, out_bits=4), load_board("ecp5-85f"), DEFAULT_CAL))["FF"] == r["FF"] - 4 * 4
    rl = ints(rtl_da(dataclasses.replace(p, last=True), load_board("ecp5-85f"), DEFAULT_CAL))
    assert (rl["LUT"], rl["FF"]) == (520 + 10, r["FF"] - 4 * 8 + 4 * 15)
    # ... and its own LUTs per unit of da4ml cost on top of lut_per_da (lut_per_last_da): 520 x 1.25 + 10
    cal_l = {**DEFAULT_CAL, "lut_per_last_da": 0.25}
    assert ints(rtl_da(dataclasses.replace(p, last=True), load_board("ecp5-85f"), cal_l))["LUT"] == 650 + 10
    assert ints(rtl_da(p, load_board("ecp5-85f"), cal_l))["LUT"] == r["LUT"]
    # the law's input-width term: da x A^da_act_exp (8^0.5)
    ra = rtl_da(p, load_board("ecp5-85f"), {**DEFAULT_CAL, "da_act_exp": 0.5})
    assert float(ra["LUT"]) == np.ceil(520 * 8 ** 0.5 + 30 + 10)
    # the LUTs per unit of da4ml cost move with the input width A (lut_per_da_act_bit, 0 at A = 8): at A = 4
    # with da4ml's cost 300 given, (1 - 4 x 0.025) x 300 = 270, requant 4 x (3+4+4) bits
    assert ints(rtl_da(p, load_board("ecp5-85f"), {**DEFAULT_CAL, "lut_per_da_act_bit": 0.025}, kernel=kernel))["LUT"] == rk["LUT"]
    p4 = dataclasses.replace(p, a_bits=4)
    r4 = ints(rtl_da(p4, load_board("ecp5-85f"), {**DEFAULT_CAL, "lut_per_da_act_bit": 0.025}, kernel=kernel))
    assert r4["LUT"] == 270 + 0.5 * 4 * 11 + 10

    # a pool between two layers (conv 8 x 8 x 8 at 4-bit outputs -> 2 x 2 pool -> dense 128): its row of OW = 4
    # partial maxima of 8 x 4 bits is a memory read asynchronously. Measured (corpus-cnn-8, rtl-da whole designs):
    # 8 TRELLIS_DPR16X4 on ECP5, 6 LUT RAM cells on xc7, flip-flops on iCE40 (no LUT RAM; block RAM reads
    # synchronously only): 128 FFs and a 4:1 read mux per bit, at 1 LUT4 per 2:1 mux bit
    c8 = dataclasses.replace(conv, in_channels=1, fan_in=9, out_channels=8, out_bits=4)
    fc = dataclasses.replace(lin(fan_in=128, out=10, a=4), last=True)
    feats = {fam: da_top_features([c8, fc], fam) for fam in ("ecp5", "xc7", "ice40")}
    assert [feats[f]["pool_lutram"] for f in ("ecp5", "xc7", "ice40")] == [8, 6, 0]
    assert (feats["ice40"]["pool_row_ff"], feats["ice40"]["pool_mux_bits"], feats["ecp5"]["pool_row_ff"]) == (128, 32 * 3, 0)
    assert (feats["ice40"]["pools"], feats["ice40"]["pool_bits"]) == (1, 32)
    cal = {"top_logit_width_ratio": 0.8, "top_lut": 0.0}
    ice_top, ecp_top = (rtl_da_top([c8, fc], load_board(b), cal) for b in ("ice40-up5k", "ecp5-85f"))
    # flip-flops counted off the RTL: the pool's five 16-bit counters and out_valid, its output pixel (32), the row in
    # logic (128) and its 2-bit read address register (in LUT RAM the address register only): opq_maxpool alone
    # (C = 8, BW = 4, 8 x 8, 2 x 2) synthesizes to 243 FFs on iCE40, 115 on ECP5 and xc7 (Yosys 0.23). The
    # serializer: its counter (16) and 10 logits at 0.8 x the weight-agnostic bound (4 + 4 + 7 = 15 bits)
    assert [pool_registers(32, 4, f) for f in ("ice40", "ecp5", "xc7")] == [243, 115, 115]
    assert (ice_top["FF"], ecp_top["FF"], ice_top["LUT"]) == (243 + 16 + 120, 115 + 16 + 120, 96)
    # with the run's weights known, the logits at their width (13 bits)
    assert rtl_da_top([c8, dataclasses.replace(fc, logit_bits=13)], load_board("ecp5-85f"), cal)["FF"] == 115 + 16 + 130
    # at 8-bit activations xc7 puts the pool's comparators on CARRY4 (cmp2lcu: ceil(8 / 3) = 3 chunks > 2):
    # CMP_CARRY_LUT_PER_BIT per pixel bit on xc7 only; at 6 bits (2 chunks) they stay in LUTs
    c8x, fcx = dataclasses.replace(c8, out_bits=8), dataclasses.replace(fc, a_bits=8)
    assert (cmp_on_carry(6, "xc7"), cmp_on_carry(7, "xc7"), cmp_on_carry(8, "ecp5")) == (False, True, False)
    assert [da_top_features([c8x, fcx], f)["pool_carry_bits"] for f in ("xc7", "ecp5")] == [64, 0]
    lut = {f: rtl_da_top([c8x, fcx], load_board(b), cal)["LUT"] for f, b in (("xc7", "arty-a7-100t"), ("ecp5", "ecp5-85f"))}
    assert lut["xc7"] == np.ceil(CMP_CARRY_LUT_PER_BIT["xc7"] * 64 + MUX_LUT_PER_BIT["xc7"] * da_top_features(
        [c8x, fcx], "xc7")["pool_mux_bits"] - 1e-9) and lut["ecp5"] < lut["xc7"]
    # mnist1d-cnn's first pool (32 channels x 4 bits, a row of OW = 20): the row is read at the registered
    # column counter (a synchronous read port): 8 RAM4Ks on iCE40 (measured: 3 such pools, 24), LUT RAM on xc7;
    # the window's `orow * 40` takes a DSP on iCE40 too (measured: one SB_MAC16 per conv layer)
    c1d = LayerParams(name="c", kind="conv1d", fan_in=96, out_channels=32, out_pixels=40, in_pixels=40, in_channels=32,
                      kernel=(3,), in_width=40, n_weights=3072, nnz=900, w_bits=4, a_bits=4, a_signed=False,
                      has_bias=True, out_bits=4)
    fc640 = dataclasses.replace(lin(fan_in=640, out=10, a=4), last=True)
    ice_f, x_f = da_top_features([c1d, fc640], "ice40"), da_top_features([c1d, fc640], "xc7")
    assert (ice_f["pool_bram"], ice_f["pool_row_ff"], x_f["pool_lutram"] > 0, x_f["pool_bram"]) == (8, 0, True, 0)
    assert rtl_da_top([c1d, fc640], load_board("ice40-up5k"), cal)["BRAM18"] == 8
    # its flip-flops (measured on the pool alone: 338 on iCE40, 214 on xc7): in block RAM the written pixel and a
    # match flag beside the block (129), in LUT RAM the 5-bit read address register
    assert (pool_registers(128, 20, "ice40"), pool_registers(128, 20, "xc7")) == (81 + 128 + 129, 81 + 128 + 5)
    assert int(rtl_da(c1d, load_board("ice40-up5k"), DEFAULT_CAL)["DSP"]) == 1


def test_rtl_seq_hand_case():
    ice, ecp5 = load_board("ice40-up5k"), load_board("ecp5-85f")
    conv = LayerParams(name="c", kind="conv2d", fan_in=9 * 16, out_channels=32, out_pixels=16, in_pixels=16,
                       in_channels=16, kernel=(3, 3), in_width=4, n_weights=9 * 16 * 32, nnz=1918, w_bits=3, a_bits=8,
                       a_signed=False, has_bias=True, in_words=16 * 6 * 6)
    r = rtl_seq(conv, ice, SEQ_CAL)
    # one ROM entry per nonzero weight, walked at every output position (an earlier demo allocation's layer 3)
    assert int(r["cycles"]) == 16 * 1918 and int(r["DSP"]) == 1
    # ROM 1918 x (3 + 10 address bits): 2048x2 EBRs -> 7; buffer 576 x 8: 512x8 EBRs -> 2 (9 in all)
    assert int(r["BRAM18"]) == 7 + 2
    # ECP5 (18 Kb): ROM 1918 x 13 as four 512-word chunks side by side, 52 bits of 36-bit rows -> 2;
    # buffer 576 x 8: one block
    # (memory_libmap: LUT RAM would cost 4 x 72 cells > 128)
    assert int(rtl_seq(conv, ecp5, SEQ_CAL)["BRAM18"]) == 3
    acc = 3 + 8 + 8 + 1
    assert int(r["LUT"]) == int(np.ceil(100 + 2 * acc + 0.5 * 32 * (acc + 2 * 11 + 2) + 1.0 * 10))  # all memories in blocks
    small = rtl_seq(lin(fan_in=16, out=4, nnz=10, w=4, a=8), ice, SEQ_CAL)  # ROM 10 x 8 bits: logic, not EBR
    # ... but its 16 x 8 input buffer is a RAM: iCE40 has no LUT RAM, so anything over 64 bits takes a RAM4K
    assert int(small["BRAM18"]) == 1 and int(small["cycles"]) == 10
    assert int(small["LUT"]) == int(np.ceil(100 + 2 * (4 + 8 + 4 + 1) + 0.5 * 4 * (17 + 2 * 4 + 2) + 4 + 1.0 * 8))  # ROM 10 x 8 in logic: a LUT4 per bit (rom_logic_luts)
    assert yosys_memory(8, 16, "ecp5", rom=False, aspects=bram_aspects(ecp5)) == ("lutram", 2)  # 2 x TRELLIS_DPR16X4
    assert yosys_memory(8, 16, "ice40", rom=True, aspects=bram_aspects(ice)) == ("logic", 0)
    # measured with Yosys 0.23 (benchmarks/rtl_whole_design.py): 512-word chunks of the ROM side by side in 36-bit rows
    assert yosys_memory(10, 1083, "ecp5", rom=True, aspects=bram_aspects(ecp5)) == ("block", 1)  # 3 x 10 <= 36
    assert yosys_memory(12, 1398, "ecp5", rom=True, aspects=bram_aspects(ecp5)) == ("block", 1)  # 3 x 12 <= 36
    assert yosys_memory(13, 1238, "ecp5", rom=True, aspects=bram_aspects(ecp5)) == ("block", 2)  # 3 x 13 > 36
    # memory_libmap adds FACTOR_EMU (2) for the ROM's read port with no write port beside it, and
    # truncates the logic cost to an int; ties stay logic. Boundaries measured with Yosys 0.23 on random ROMs:
    # iCE40 97 x 11 (66.7 -> 66 vs 64 + 2) in SB_LUT4s, 98 x 11 (67) in one SB_RAM40_4K; xc7 1170 x 7
    # (127) in LUTs, 1210 x 7 (132 vs 129 + 2) in one RAMB18E1; and in the whole designs: xc7 929 x 9
    # (130.6, `debug memory_libmap`: block 131) and 1200 x 7 (131, the tie) stay in logic
    xc7 = bram_aspects(load_board("arty-a7-100t"))
    for width, depth, fam, aspects, kind in [(11, 95, "ice40", bram_aspects(ice), "logic"), (11, 97, "ice40", bram_aspects(ice), "logic"),
                                             (11, 98, "ice40", bram_aspects(ice), "block"), (7, 1170, "xc7", xc7, "logic"),
                                             (7, 1200, "xc7", xc7, "logic"), (9, 929, "xc7", xc7, "logic"),
                                             (7, 1210, "xc7", xc7, "block")]:
        assert yosys_memory(width, depth, fam, rom=True, aspects=aspects)[0] == kind, (width, depth, fam)
    # a ROM in logic: a LUT tree per output bit (measured alone, benchmarks/results/rtl_rom_logic.json):
    # ECP5 81 x 8 -> 64 LUT4 (LUT7 = 8 LUT4s), xc7 242 x 10 -> 40 (LUT8 = 4 LUT6s), iCE40 95 x 11 -> 121
    assert [rom_logic_luts(81, 8, "ecp5"), rom_logic_luts(242, 10, "xc7"), rom_logic_luts(95, 11, "ice40")] == [64, 40, 121]
    # a 288 x 4 buffer in ECP5 LUT RAM: 18 TRELLIS_DPR16X4 deep, a 17-deep 2:1 read mux per bit
    assert lutram_mux_bits(4, 288, "ecp5") == 17 * 4 and lutram_mux_bits(4, 288, "ice40") == 0
    # a channel with no nonzero weight still costs an entry: never fewer entries than channels
    assert int(rtl_seq(lin(fan_in=16, out=4, nnz=2), ice, SEQ_CAL)["cycles"]) == 4
    # the network's interval is the sum over layers (one layer at a time), not the slowest layer
    specs, alloc = golden_inputs()
    rep = estimate(specs, alloc, "ecp5-85f", "rtl-seq")
    # golden demo allocation: 134, 1859, 762 nonzeros at 64, 16, 1 output positions; the top level adds
    # the 64 input beats, the 10 logits and each layer's 6-cycle pipeline drain (seq.py)
    assert sum(lc.cycles for lc in rep.layers) == 64 * 134 + 16 * 1859 + 762
    top = rtl_seq_top(network_params(specs, alloc), load_board("ecp5-85f"))
    assert int(top["cycles"]) == 64 + 10 + 3 * 6 and rep.ii_cycles == 64 * 134 + 16 * 1859 + 762 + 64 + 10 + 18
    assert rep.totals["LUT"] == sum(lc.LUT for lc in rep.layers) + int(top["LUT"])
    # on a dev board the build wraps opq_top in the board top (serial link, frame buffers): its own row, in the totals
    dev = estimate(specs, alloc, "ulx3s-85f", "rtl-seq")  # the same part as ecp5-85f, with pins
    glue = dev.parts["board top (UART link, frame buffers)"]
    assert "board top (UART link, frame buffers)" not in rep.parts and rep.parts["rtl-seq top level"]["LUT"] == int(top["LUT"])
    assert glue["LUT"] > 0 and all(dev.totals[r] == rep.totals[r] + glue[r] for r in ("LUT", "FF", "BRAM18", "DSP"))
    assert CostReport.from_json(dev.to_json()) == dev
    from opq_hw.report import layer_rows

    names = [row[0] for row in layer_rows(dev, alloc)[1]]  # the estimate report's rows: each part, then the total
    assert names[-3:] == ["rtl-seq top level", "board top (UART link, frame buffers)", "total"]
    # the link's buffers as Yosys 0.23 mapped them in the measured board tops (benchmarks/results/rtl_board_top.json):
    # the 64-byte INFER buffer in 8 TRELLIS_DPR16X4 on ECP5 (4 deep: 3 mux levels of 8 bits) and one RAM4K on
    # iCE40, 600 bytes in one DP16KD; the RESULT buffer (written a beat of out_beat bytes at once) in flip-flops
    assert board_top_features(64, 30, 1, "ecp5") == {"mux_bits": 8 * 3 + 8 * 29, "logic_bits": 8 * 30, "lutram": 8,
                                                     "bram": 0, "packer_bits": 0}
    ice = board_top_features(64, 30, 6, "ice40")
    assert (ice["bram"], ice["lutram"], ice["logic_bits"], ice["packer_bits"]) == (1, 0, 8 * 30, 48)
    assert board_top_features(600, 8, 1, "ecp5")["bram"] == 1
    # the logits memory at the RTL's width when the actual weights are known (iCE40 mnist1d-cnn v0 in
    # benchmarks/results/rtl_whole_design.json: 10 logits of 15 bits, one RAM4K; weight-agnostic 6 + 4 + 8 + 1 = 19
    # bits, wider than a RAM4K's 16, two)
    ice40 = load_board("ice40-up5k")
    logits = dataclasses.replace(lin(fan_in=160, out=10, w=6, a=4), last=True)
    assert seq_logits_memory(logits, ice40) == ("block", 2)
    actual = dataclasses.replace(logits, logit_bits=15)
    assert seq_logits_memory(actual, ice40) == ("block", 1)
    assert rtl_seq_top([actual], ice40)["BRAM18"] == rtl_seq_top([logits], ice40)["BRAM18"] - 1
    assert link_geometry([actual], "rtl-seq")[1] == 10 * 2 and link_geometry([logits], "rtl-seq")[1] == 10 * 3
    # estimate(logit_bits=): the run's IntNet width reaches the last layer, and the note says so
    lb = estimate(specs, alloc, "ice40-up5k", "rtl-seq", logit_bits=16)
    assert lb.parts["rtl-seq top level"]["BRAM18"] == estimate(specs, alloc, "ice40-up5k", "rtl-seq").parts["rtl-seq top level"]["BRAM18"] - 1
    assert any("16-bit accumulators" in n for n in lb.notes)


def test_valid_reuse_factors():
    assert valid_reuse_factors(4, 2) == [1, 2, 4, 8]
    v = valid_reuse_factors(144, 32)
    assert 1 in v and 144 * 32 in v and all((144 * 32) % r == 0 or r >= 144 for r in v)


# ---------------------------------------------------------------- monotonicity
shapes = st.tuples(st.integers(1, 300), st.integers(1, 64))


@settings(max_examples=60, deadline=None)
@given(shape=shapes, w=st.integers(2, 7), frac=st.floats(0.01, 1.0), drop=st.floats(0.0, 1.0),
       r=st.sampled_from([1, 2, 4, 8]), first=st.booleans())
def test_more_sparsity_or_fewer_bits_never_costs_more(shape, w, frac, drop, r, first):
    fan_in, out = shape
    n = fan_in * out
    k = max(out, int(frac * n))
    k2 = max(out, int(k * (1 - drop)))  # fewer survivors
    base = lin(fan_in=fan_in, out=out, nnz=k, w=w, a=8, signed=first)
    ecp5 = load_board("ecp5-85f")
    fns = [lambda p: hls4ml_latency(p, PYNQ, reuse_factor=r), lambda p: hls4ml_resource(p, PYNQ, reuse_factor=r),
           lambda p: rtl_da(p, ecp5, DEFAULT_CAL), lambda p: finn_mvau(p, PYNQ, pe=1, simd=1)]
    for f in fns:
        a, sparser, narrower = f(base), f(dataclasses.replace(base, nnz=k2)), f(dataclasses.replace(base, w_bits=w - 1 if w > 2 else w))
        for res in ("LUT", "FF", "DSP", "BRAM18", "URAM"):
            assert float(sparser[res]) <= float(a[res]) + 1e-9, (res, f)
            assert float(narrower[res]) <= float(a[res]) + 1e-9, (res, f)
    # rtl-seq: a ROM that Yosys moves from block RAM into logic costs LUTs and its entry register, so LUTs
    # and FFs may grow exactly when block RAMs drop; cycles and block RAMs never grow
    f = lambda p: rtl_seq(p, ecp5, SEQ_CAL)  # noqa: E731
    a = f(base)
    for other in (f(dataclasses.replace(base, nnz=k2)), f(dataclasses.replace(base, w_bits=w - 1 if w > 2 else w))):
        for res in ("cycles", "BRAM18", "DSP"):
            assert float(other[res]) <= float(a[res]) + 1e-9, res
        for res in ("LUT", "FF"):
            assert float(other[res]) <= float(a[res]) + 1e-9 or float(other["BRAM18"]) < float(a["BRAM18"]), res


def test_vectorised_over_nnz_matches_scalar():
    ks = np.array([4.0, 10.0, 33.0, 64.0])
    for f in (lambda p: hls4ml_latency(p, PYNQ, 2), lambda p: rtl_da(p, load_board("ecp5-85f"), DEFAULT_CAL),
              lambda p: rtl_seq(p, load_board("ice40-up5k"), SEQ_CAL),
              lambda p: finn_mvau(p, PYNQ, 2, 4), lambda p: hls4ml_resource(p, PYNQ, 4)):
        vec = f(lin(nnz=ks))
        for i, k in enumerate(ks):
            sc = f(lin(nnz=float(k)))
            for res in ("LUT", "FF", "DSP", "BRAM18"):
                assert float(np.broadcast_to(vec[res], ks.shape)[i]) == pytest.approx(float(sc[res]))


# ---------------------------------------------------------------- estimate on the demo model (golden)
def golden_inputs():
    specs = [LayerSpec.from_dict(d) for d in json.loads((GOLDEN / "demo_specs.json").read_text())]
    alloc = Allocation.from_dict(json.loads((GOLDEN / "demo_allocation.json").read_text()))
    return specs, alloc


GOLDEN_CASES = [("pynq-z2", "hls4ml-latency"), ("zcu104", "finn-mvau")]


@pytest.mark.parametrize("board,arch", GOLDEN_CASES)
def test_golden_cost_json(board, arch):
    specs, alloc = golden_inputs()
    want = json.loads((GOLDEN / f"cost_{board}_{arch}.json").read_text())
    folding = {lc["name"]: lc["folding"] for lc in want["layers"]}
    assert choose_folding(specs, alloc, board, arch) == folding
    got = estimate(specs, alloc, board, arch, folding=folding).to_dict()
    assert got == want


def test_estimate_totals_fit_and_round_trip():
    specs, alloc = golden_inputs()
    rep = estimate(specs, alloc, "pynq-z2", "hls4ml-latency")  # fully parallel
    for r in ("LUT", "FF", "DSP", "BRAM18", "URAM"):
        assert rep.totals[r] == sum(getattr(lc, r) for lc in rep.layers)
    assert rep.ii_cycles == max(lc.cycles for lc in rep.layers)
    assert rep.bottleneck == max(rep.layers, key=lambda lc: lc.cycles).name
    assert rep.latency_cycles == sum(lc.latency_cycles for lc in rep.layers)
    assert rep.throughput_fps == pytest.approx(100e6 / rep.ii_cycles)
    assert rep.fits == (not rep.over)
    assert CostReport.from_json(rep.to_json()) == rep
    assert rep.mem_bits_dense == sum(la.n_weights * la.bits for la in alloc.layers)
    assert rep.mem_bits_sparse == sum(la.n_nonzero * la.bits + la.n_weights for la in alloc.layers)


def test_fits_counts_the_shell_and_names_what_is_over():
    from opq_hw.cost import fits

    b = dataclasses.replace(PYNQ, shell={**PYNQ.shell, "LUT": 1000})
    lut = b.utilisation_limits["LUT"] * b.capacity["LUT"]  # 42,560 usable with the shell
    f = fits(b, {"LUT": lut - 1000, "URAM": 0})  # exactly at the limit; the board has no URAM, none used
    assert f and f.over == {} and f.pressure == {"LUT": 1.0, "URAM": 0.0} and f.binding == "LUT"
    assert f.used["LUT"] == lut and f.utilisation["LUT"] == pytest.approx(0.8)
    g = fits(b, {"LUT": lut - 999, "DSP": 10, "URAM": 1})
    assert not g and g.over == {"LUT": 1.0, "URAM": 1.0} and g.utilisation["URAM"] == float("inf")
    assert g.binding == "URAM"
    with pytest.raises(OpqError, match="unknown resources"):
        fits(b, {"LUTs": 1})
    rep = estimate(*golden_inputs(), "pynq-z2", "hls4ml-latency")
    assert (rep.fits, rep.binding, rep.over) == (bool(fits(PYNQ, rep.totals)), fits(PYNQ, rep.totals).binding, rep.over)


def test_architecture_registry():
    from opq_hw.cost import ARCHITECTURES, architecture, rtl_calibration
    from opq_hw.rtl import gen, geometry, seq

    p = lin(fan_in=12, out=6)
    for name, a in ARCHITECTURES.items():
        assert a.name == name and a.formula.__doc__ and "Source" in a.formula.__doc__  # every formula cites its source
        legal = a.foldings(p)
        assert a.default_folding(p) in legal  # fully parallel is a legal folding
        assert all(set(f) <= a.fold_keys for f in legal)
    with pytest.raises(OpqError, match="unknown architecture 'x'"):
        architecture("x")
    with pytest.raises(OpqError, match="does not support the rtl flow"):
        architecture("rtl-da", load_board("alveo-u250"))
    with pytest.raises(OpqError, match=r"calibrated: \['rtl-da', 'rtl-seq'\]"):
        rtl_calibration("xc7", "finn-mvau")
    # the generators and the cost model read one geometry (compared by where each is defined, not by
    # identity: test_hostile_inputs re-imports opq_hw.rtl while it hides a tool package)
    for f in ("window_offsets", "shift_chains"):
        assert getattr(gen, f).__module__ == geometry.__name__ and f in vars(geometry)
    assert seq.LAYER_OVERHEAD_CYCLES == geometry.LAYER_OVERHEAD_CYCLES and "LAYER_OVERHEAD_CYCLES =" not in inspect.getsource(seq)


def test_choose_folding_is_fastest_that_fits():
    specs, alloc = golden_inputs()
    big = choose_folding(specs, alloc, "alveo-u250", "hls4ml-latency")
    full = estimate(specs, alloc, "alveo-u250", "hls4ml-latency")  # fully parallel
    chosen = estimate(specs, alloc, "alveo-u250", "hls4ml-latency", folding=big)
    # the big board reaches the fully parallel interval; layers faster than the bottleneck are
    # folded down to it (same throughput, fewer LUTs)
    assert chosen.ii_cycles == full.ii_cycles and chosen.totals["LUT"] <= full.totals["LUT"]
    assert big[full.bottleneck] == {"reuse_factor": 1}
    small_board = dataclasses.replace(load_board("pynq-z2"), capacity={**load_board("pynq-z2").capacity, "LUT": 4000})
    fold = choose_folding(specs, alloc, small_board, "hls4ml-latency")
    rep = estimate(specs, alloc, small_board, "hls4ml-latency", folding=fold)
    assert rep.fits and rep.ii_cycles > estimate(specs, alloc, "alveo-u250", "hls4ml-latency").ii_cycles
    finn = choose_folding(specs, alloc, "pynq-z2", "finn-mvau")
    for s in specs:
        mw, mh = s.n_weights // s.out_channels, s.out_channels
        assert mw % finn[s.name]["simd"] == 0 and mh % finn[s.name]["pe"] == 0
    assert estimate(specs, alloc, "pynq-z2", "finn-mvau", folding=finn).fits


def test_choose_folding_target_fps_and_errors():
    specs, alloc = golden_inputs()
    fast = estimate(specs, alloc, "zcu104", "finn-mvau", folding=choose_folding(specs, alloc, "zcu104", "finn-mvau"))
    slow_fold = choose_folding(specs, alloc, "zcu104", "finn-mvau", target_fps=fast.throughput_fps / 10)
    slow = estimate(specs, alloc, "zcu104", "finn-mvau", folding=slow_fold)
    assert slow.throughput_fps >= fast.throughput_fps / 10 and slow.totals["LUT"] < fast.totals["LUT"]
    with pytest.raises(OpqError, match="lower --target-fps"):
        choose_folding(specs, alloc, "zcu104", "finn-mvau", target_fps=1e12)
    tiny = dataclasses.replace(load_board("ice40-up5k"), capacity={"LUT": 100, "FF": 100, "BRAM18": 1, "URAM": 0, "DSP": 0})
    with pytest.raises(OpqError, match="missing"):
        choose_folding(specs, alloc, tiny, "rtl-da")
    with pytest.raises(OpqError, match="does not support the hls4ml flow"):
        estimate(specs, alloc, "ice40-up5k", "hls4ml-latency")
    with pytest.raises(OpqError, match="unknown architecture"):
        estimate(specs, alloc, "pynq-z2", "vta")
    with pytest.raises(OpqError, match="do not apply"):
        estimate(specs, alloc, "pynq-z2", "hls4ml-latency", folding={specs[0].name: {"pe": 2}})


# ---------------------------------------------------------------- hardware-aware OPQ
@pytest.mark.parametrize("board,arch", [("pynq-z2", "hls4ml-latency"), ("ice40-up5k", "rtl-seq"), ("pynq-z2", "finn-mvau")])
def test_fit_allocation_fits_and_reports_binding(cnn, board, arch):
    from opq_hw.hwaware import fit_allocation

    specs, weights = cnn
    alloc, info = fit_allocation(specs, weights, board, arch)
    rep = estimate(specs, alloc, board, arch, folding=info["folding"])
    assert rep.fits == info["fits"] and not rep.over  # fits at the estimate
    # with the margin of the error band, unless even the smallest allocation cannot keep it (iCE40)
    assert rep.fits or (info["margin_dropped"] and rep.fit == "fits only at the optimistic end")
    assert info["binding"] in ("LUT", "FF", "BRAM18", "URAM", "DSP")
    assert rep.totals == info["usage"]
    assert any("binding resource" in n for n in alloc.notes)
    # the dense 8-bit design does not fit fully parallel on these boards: the fit had to compress
    assert any(info["dense_max_bits_usage"][r] > info["budget"][r] for r in info["budget"])


def test_fit_allocation_uses_the_budget(cnn):
    """A larger board leaves room for more weights/bits than a smaller one."""
    from opq_hw.hwaware import fit_allocation

    specs, weights = cnn
    small, _ = fit_allocation(specs, weights, "pynq-z2", "hls4ml-latency")
    large, _ = fit_allocation(specs, weights, "zcu104", "hls4ml-latency")
    size = lambda a: sum(la.n_nonzero * la.bits for la in a.layers)  # noqa: E731
    assert size(large) > size(small)


def test_fit_allocation_says_what_is_missing(cnn):
    from opq_hw.hwaware import fit_allocation

    specs, weights = cnn
    b = load_board("ice40-up5k")
    tiny = dataclasses.replace(b, capacity={**b.capacity, "LUT": 200})
    with pytest.raises(OpqError, match=r"nothing fits .* LUT: at least \d+ needed, 180 usable"):
        fit_allocation(specs, weights, tiny, "rtl-da")
    # the layers alone would fit the UP5K at their smallest, not with the top level (its pools' rows, in
    # flip-flops on iCE40, and the comparators of 8-bit activations): said once the first estimate knows it
    with pytest.raises(OpqError, match=r"nothing fits ice40-up5k with rtl-da: .* LUT: at least \d+ needed \(\d+ of them "
                                       r"beyond the layers: the architecture's top level\), 4752 usable"):
        fit_allocation(specs, weights, b, "rtl-da")


# ---------------------------------------------------------------- against FINN's own code
FINN_PY = Path(__file__).resolve().parents[1] / ".venv-finn" / "bin" / "python"


@pytest.mark.slow
@pytest.mark.tools
def test_finn_mvau_equals_finns_own_estimates():
    """finn-mvau reproduces FINN's MVAU_hls estimates exactly (LUT, BRAM18, URAM, DSP, cycles)."""
    import subprocess

    if not FINN_PY.is_file():
        pytest.skip("no FINN environment (.venv-finn): run the FINN flow's install script")
    specs, alloc = golden_inputs()
    from opq_hw.cost import layer_params

    cases, cfgs = [], []
    for i, s in enumerate(specs):
        p = layer_params(s, alloc.layer(s.name), i, 8)
        for pe, simd in ((1, 1), (p.out_channels, p.fan_in), (2, 3 if p.fan_in % 3 == 0 else 2)):
            for rt, rs, mm in (("auto", "auto", "internal_decoupled"), ("dsp", "distributed", "internal_decoupled"),
                               ("auto", "auto", "internal_embedded"), ("auto", "ultra", "internal_decoupled")):
                cases.append((p, pe, simd, rt, rs, mm))
                cfgs.append({"MW": p.fan_in, "MH": p.out_channels, "PE": pe, "SIMD": simd,
                             "idt": ("INT" if p.a_signed else "UINT") + str(p.a_bits), "wdt": f"INT{p.w_bits}",
                             "vecs": [1, p.out_pixels], "res_type": rt, "ram_style": rs, "mem_mode": mm})
    proc = subprocess.run([str(FINN_PY), str(Path(__file__).resolve().parents[1] / "benchmarks" / "finn_reference.py")],
                          input=json.dumps(cfgs), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for (p, pe, simd, rt, rs, mm), ref in zip(cases, json.loads(proc.stdout)):
        ours = ints(finn_mvau(p, PYNQ, pe=pe, simd=simd, res_type=rt, ram_style=rs, mem_mode=mm))
        assert {k: ours[k] for k in ref} == ref, (p.name, pe, simd, rt, rs, mm)


def test_hls4ml_affine_hand_case():
    """A BatchNorm kept as a channel affine: 8 channels x 8 pixels, a 8 bits, x 8 bits, b 16 bits."""
    from opq_hw.cost.hls4ml import hls4ml_affine

    r = ints(hls4ml_affine(64, 8, 8, 16, PYNQ))
    # 64 constant multipliers * ceil(0.5 * 8 * 8) + 64 adders * 17 bits (max(8 + 8, 16) + 1)
    assert r["LUT"] == 64 * 32 + 64 * 17
    assert r["FF"] == 64 * 16 + 64 * 17
    assert (r["DSP"], r["BRAM18"], r["URAM"], r["mults"], r["cycles"], r["latency"]) == (0, 0, 0, 64, 1, 3)
    specs, alloc = golden_inputs()
    rec = {"bn": "bn0", "channels": 8, "in_shape": [8, 8], "in_bits": 8, "a_bits": 8, "b_bits": 16}
    base = estimate(specs, alloc, "pynq-z2", "hls4ml-latency")
    rep = estimate(specs, alloc, "pynq-z2", "hls4ml-latency", affines=[rec])
    aff = [lc for lc in rep.layers if lc.kind == "affine"]
    assert [lc.name for lc in aff] == ["bn0"] and aff[0].LUT == r["LUT"]
    assert rep.totals["LUT"] == base.totals["LUT"] + r["LUT"]
    finn = estimate(specs, alloc, "pynq-z2", "finn-mvau", affines=[rec])
    assert not any(lc.kind == "affine" for lc in finn.layers)
    assert any("BatchNorm 'bn0' kept as a per-channel affine: not costed, the finn flow refuses it" in n for n in finn.notes)


def test_rtl_seq_wide_tables_go_to_block_ram_on_ice40(monkeypatch):
    """A 128-channel layer's bias and channel start/end tables are ROMs to Yosys: on iCE40 they take RAM4Ks
    (as synth_ice40 maps them) and leave the LUT term; elsewhere they stay in logic (measured)."""
    import opq_hw.cost.rtl as rtl

    ice = load_board("ice40-up5k")
    wide = lin(fan_in=64, out=128, nnz=4106, w=2, a=8)  # acc 2 + 8 + 6 + 1 = 17 bits, ROM pointer 13 bits
    with_tables = rtl_seq(wide, ice, SEQ_CAL)
    monkeypatch.setattr(rtl, "TABLE_ROM_FAMILIES", ())
    in_logic = rtl_seq(wide, ice, SEQ_CAL)
    # bias 128 x 17: two 256 x 16 RAM4Ks; start and end 128 x 13: one each
    assert int(with_tables["BRAM18"]) - int(in_logic["BRAM18"]) == 2 + 1 + 1
    assert int(in_logic["LUT"]) - int(with_tables["LUT"]) == int(0.5 * 128 * (17 + 2 * 13))
    assert yosys_memory(17, 128, "ice40", rom=True, aspects=bram_aspects(ice)) == ("block", 2)
    assert "ecp5" not in rtl.TABLE_ROM_FAMILIES and "xc7" not in rtl.TABLE_ROM_FAMILIES
