"""Error bands of the cost model (issue 17): the held-out error table, the bands in `estimate` and the
reports, the three-way fit verdict, and the margin `--fit` keeps. Fast, no tools."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import yaml

from opq_hw.boards import config_dir, load_board
from opq_hw.cost import CostReport, choose_folding, estimate, fits
from opq_hw.cost.accuracy import Band, accuracy, fmt
from opq_hw.cost.fit import FITS, NO_FIT, OPTIMISTIC
from opq_hw.errors import OpqError
from opq_hw.spec import Allocation, LayerSpec

GOLDEN = Path(__file__).parent / "golden"


def golden_inputs():
    specs = [LayerSpec.from_dict(d) for d in json.loads((GOLDEN / "demo_specs.json").read_text())]
    return specs, Allocation.from_dict(json.loads((GOLDEN / "demo_allocation.json").read_text()))


@pytest.fixture
def boards_copy(tmp_path, monkeypatch):
    """A copy of board_configs/ that the test may edit (OPQ_HW_BOARDS points at it)."""
    d = tmp_path / "boards"
    shutil.copytree(config_dir(), d)
    monkeypatch.setenv("OPQ_HW_BOARDS", str(d))
    return d


def _edit(d: Path, arch: str, family: str, heldout) -> None:
    p = d / f"{arch.replace('-', '_')}_calibration.yaml"
    data = yaml.safe_load(p.read_text())
    if heldout is None:
        data[family].pop("heldout_error", None)
    else:
        data[family]["heldout_error"] = heldout
    p.write_text(yaml.safe_dump(data))


# ---------------------------------------------------------------- the table
def test_loader_reads_the_heldout_table_and_says_what_is_uncalibrated():
    table = yaml.safe_load((config_dir() / "rtl_seq_calibration.yaml").read_text())["ecp5"]["heldout_error"]
    acc = accuracy("rtl-seq", "ecp5")
    lut = acc.band("LUT")
    assert lut.rel == table["lut"]["max"] and lut.mape == table["lut"]["mape"]  # the band is the held-out max
    assert lut.n == table["n"] and lut.scope == table["scope"] and lut.calibrated
    for fig, key in (("FF", "ff"), ("BRAM18", "bram"), ("DSP", "dsp"), ("cycles", "cycles")):
        assert acc.band(fig).rel == (table[key]["max"] if key in table else None), fig
    assert not acc.band("URAM").calibrated and "no held-out error" in acc.band("URAM").why
    for arch, why in (("hls4ml-latency", "no Vivado/Vitis"), ("hls4ml-resource", "no Vivado/Vitis"),
                      ("finn-mvau", "FINN's estimates against synthesis")):
        a = accuracy(arch, "zynq-us+")
        assert not a.calibrated and all(not a.band(f).calibrated and why in a.band(f).why for f in ("LUT", "cycles"))
    for arch, fam in (("rtl-da", "ecp5"), ("rtl-da", "ice40"), ("rtl-da", "xc7"), ("rtl-seq", "ecp5"), ("rtl-seq", "ice40"),
                      ("rtl-seq", "xc7")):
        assert accuracy(arch, fam).band("LUT").calibrated, (arch, fam)
    # rtl-seq xc7 (synth_xilinx whole designs): its band is its own held-out max, not ECP5's
    xc7 = yaml.safe_load((config_dir() / "rtl_seq_calibration.yaml").read_text())["xc7"]["heldout_error"]
    assert accuracy("rtl-seq", "xc7").band("LUT").rel == xc7["lut"]["max"] != table["lut"]["max"]
    with pytest.raises(OpqError, match="no error band for 'LUTs'"):
        acc.band("LUTs")


def test_loader_family_without_table_and_bad_tables(boards_copy):
    _edit(boards_copy, "rtl-da", "ice40", None)
    a = accuracy("rtl-da", "ice40")
    assert not a.calibrated and "has no heldout_error for ice40" in a.band("LUT").why
    assert accuracy("rtl-da", "ecp5").calibrated  # the other families keep theirs
    good = {"scope": "whole-design", "n": 6, "lut": {"mape": 0.05, "max": 0.09}}
    _edit(boards_copy, "rtl-da", "ice40", good)
    assert accuracy("rtl-da", "ice40").band("LUT") == Band(rel=0.09, mape=0.05, n=6, scope="whole-design",
                                                         why=accuracy("rtl-da", "ice40").band("LUT").why)
    for bad, msg in (({**good, "luts": {}}, "unknown keys"), ({**good, "scope": "layer"}, "scope must be"),
                     ({**good, "n": 0}, "n must be"), ({**good, "lut": {"mape": 0.1}}, r"lut must be \{mape"),
                     ({**good, "lut": {"mape": -0.1, "max": 0.1}}, "non-negative"),
                     ({**good, "lut": {"mape": 0.2, "max": 0.1}}, "exceeds the max"), ([1, 2], "must be a mapping")):
        _edit(boards_copy, "rtl-da", "ice40", bad)
        with pytest.raises(OpqError, match=rf"rtl_da_calibration.yaml \(ice40\).*{msg}"):
            accuracy("rtl-da", "ice40")


def test_band_labels_round_up():
    assert [Band(rel=r).label() for r in (0.09, 0.0901, 0.1818, 0.004, 0.0)] == ["± 9 %", "± 10 %", "± 19 %", "± 0.4 %", "exact"]
    assert Band().label() == "uncalibrated"
    assert fmt(1404, Band(rel=0.09)) == "1,404 ± 9 %" and fmt(4, Band(rel=0.0)) == "4 (exact)"
    assert fmt(32036, Band()) == "32,036 (uncalibrated)" and fmt(7, None) == "7"
    assert Band.from_dict(Band(rel=0.1, mape=0.05, n=3, scope="per-layer", why="w").to_dict()) == \
        Band(rel=0.1, mape=0.05, n=3, scope="per-layer", why="w")


# ---------------------------------------------------------------- three-way fit
def test_fits_three_ways_near_capacity():
    b = load_board("ecp5-85f")
    usable = b.limit("LUT")  # 0.85 x 83,640 = 71,094
    m = {"LUT": 0.10}
    assert fits(b, {"LUT": usable / 1.10}, m).verdict == FITS  # exactly at the limit at the pessimistic end
    near = fits(b, {"LUT": usable * 0.99}, m)  # fits at the estimate, not at +10 %
    assert near.verdict == OPTIMISTIC and not near and not near.over and "LUT" in near.over_high
    assert near.high["LUT"] == pytest.approx(usable * 0.99 * 1.1) and near.low["LUT"] == pytest.approx(usable * 0.99 * 0.9)
    over = fits(b, {"LUT": usable * 1.05}, m)  # over at the estimate, under at -10 %
    assert over.verdict == OPTIMISTIC and over.over and not over.over_low
    assert fits(b, {"LUT": usable / 0.9 * 1.001}, m).verdict == NO_FIT
    # uncalibrated resources are checked at the estimate and named
    u = fits(b, {"LUT": usable * 0.5, "DSP": 10, "FF": 0}, {"LUT": 0.1, "DSP": None, "FF": None})
    assert u.verdict == FITS and u.uncalibrated == ("DSP",) and u.label == "fits (uncalibrated DSP: no error band)"
    assert fits(b, {"LUT": usable}).verdict == FITS and fits(b, {"LUT": usable}).uncalibrated == ()  # a measurement
    with pytest.raises(OpqError, match="non-negative fractions"):
        fits(b, {"LUT": 1}, {"LUT": -0.1})
    with pytest.raises(OpqError, match="unknown resources"):
        fits(b, {"LUT": 1}, {"LUTs": 0.1})


def _near_board(name: str, arch: str, ratio: float):
    """`name` with its LUT capacity set so that the golden design's estimate uses `ratio` of the usable LUTs."""
    specs, alloc = golden_inputs()
    b = load_board(name)
    lut = estimate(specs, alloc, b, arch).totals["LUT"]
    cap = int((lut / ratio + b.shell["LUT"]) / b.utilisation_limits["LUT"])
    return specs, alloc, dataclasses.replace(b, capacity={**b.capacity, "LUT": cap})


def test_estimate_and_reports_show_bands_and_the_tri_state(tmp_path):
    from opq_hw.report import figures_line, one_line, render_html, render_markdown

    specs, alloc, b = _near_board("ecp5-85f", "rtl-seq", 0.97)  # fits at the estimate, not at + band
    rep = estimate(specs, alloc, b, "rtl-seq")
    band = accuracy("rtl-seq", "ecp5").band("LUT")
    assert rep.fit == OPTIMISTIC and not rep.fits and not rep.over
    assert rep.used_range["LUT"] == pytest.approx([rep.totals["LUT"] * (1 - band.rel), rep.totals["LUT"] * (1 + band.rel)],
                                                  abs=1e-3)
    assert CostReport.from_json(rep.to_json()) == rep  # the verdict, bands and range round-trip
    d = json.loads(rep.to_json())
    assert d["fit"] == OPTIMISTIC and d["bands"]["LUT"]["rel"] == band.rel and d["bands"]["LUT"]["mape"] == band.mape
    lut = f"LUT {rep.totals['LUT']:,} {band.label()}"
    assert lut in figures_line(rep) and "fits only at the optimistic end" in one_line(rep)
    md = render_markdown(rep, alloc, [rep], {}, specs)
    html = render_html(rep, alloc, [rep], {}, specs)
    for text in (md, html):
        assert lut in text and f"LUT ({band.label()})" in text and "held-out max relative error" in text
        assert "fits only at the optimistic end" in text
        # the figures the table does not cover say so (rtl-seq on ECP5 covers LUT, FF, BRAM, DSP, cycles)
        assert ("Uncalibrated" in text) == any(rep.bands[r].get("rel") is None for r in ("LUT", "FF", "BRAM18", "DSP")
                                                if r in rep.bands)
    assert '<span class="optimistic">' in html
    assert estimate(*_near_board("ecp5-85f", "rtl-seq", 0.5)[:3], "rtl-seq").fit == FITS
    assert estimate(*_near_board("ecp5-85f", "rtl-seq", 1.5)[:3], "rtl-seq").fit == NO_FIT
    # uncalibrated: hls4ml
    h = estimate(specs, alloc, "pynq-z2", "hls4ml-latency", folding=choose_folding(specs, alloc, "pynq-z2", "hls4ml-latency"))
    assert h.fit == FITS and h.fit_label.startswith("fits (uncalibrated LUT, FF")
    assert f"LUT {h.totals['LUT']:,} (uncalibrated)" in figures_line(h)
    assert "LUT (uncalibrated)" in render_markdown(h, alloc, [h], {}, specs)


def test_board_top_row_has_its_own_band_and_the_totals_add_it(boards_copy):
    """On a dev board the board top (UART glue) row carries its own leave-one-out band
    (rtl_board_top_calibration.yaml), and the totals' band adds its absolute error to opq_top's, so a
    design that fits at opq_top's band alone fits only at the optimistic end with the board top's."""
    from opq_hw.cost.accuracy import board_top_accuracy, combine
    from opq_hw.cost.network import BOARD_TOP
    from opq_hw.report import accuracy_lines, layer_rows

    # combine: absolute errors added; an unused part adds nothing; a used part without a band: uncalibrated
    a, g = Band(rel=0.1, mape=0.05, n=8, scope="whole-design"), Band(rel=0.3, mape=0.1, n=5, scope="leave-one-out")
    c = combine([(a, 900.0), (g, 100.0)])
    assert c.rel == pytest.approx(0.12) and c.mape == pytest.approx(0.055) and (c.n, c.scope) == (8, "whole-design")
    assert combine([(a, 900.0), (g, 0.0)]) == a and not combine([(a, 900.0), (Band(why="x"), 1.0)]).calibrated
    table = yaml.safe_load((boards_copy / "rtl_board_top_calibration.yaml").read_text())["ecp5"]["heldout_error"]
    specs, alloc = golden_inputs()
    rep = estimate(specs, alloc, "ulx3s-85f", "rtl-seq")
    glue, bt = rep.parts[BOARD_TOP]["LUT"], rep.part_band(BOARD_TOP, "LUT")
    a0 = accuracy("rtl-seq", "ecp5").band("LUT").rel
    assert bt.rel == table["lut"]["max"] == board_top_accuracy("ecp5").band("LUT").rel and bt.scope == "leave-one-out"
    total = rep.band("LUT").rel
    assert total == pytest.approx((a0 * (rep.totals["LUT"] - glue) + bt.rel * glue) / rep.totals["LUT"])
    assert a0 < total < bt.rel and rep.band("BRAM18").rel == 0 and rep.part_band("rtl-seq top level", "LUT") is None
    assert rep.used_range["LUT"] == pytest.approx([rep.totals["LUT"] * (1 - total), rep.totals["LUT"] * (1 + total)], abs=1e-3)
    assert CostReport.from_json(rep.to_json()) == rep
    row = next(r for r in layer_rows(rep, alloc)[1] if r[0] == BOARD_TOP)
    assert row[5] == f"{glue:,} {bt.label()}"
    assert any(f"row has its own band (LUT {bt.label()}" in ln for ln in accuracy_lines(rep))
    # between the two: fits at opq_top's band alone, only at the optimistic end with the board top's added
    b = load_board("ulx3s-85f")
    usable = rep.totals["LUT"] * (1 + (a0 + total) / 2)
    tight = dataclasses.replace(b, capacity={**b.capacity, "LUT": int((usable + b.shell["LUT"]) / b.utilisation_limits["LUT"])})
    assert fits(tight, rep.totals, {"LUT": a0}).ok and estimate(specs, alloc, tight, "rtl-seq").fit == OPTIMISTIC
    # no board-top table for the family: the totals' LUT and FF are uncalibrated, the fit says so
    data = yaml.safe_load((boards_copy / "rtl_board_top_calibration.yaml").read_text())
    data["ecp5"].pop("heldout_error")
    (boards_copy / "rtl_board_top_calibration.yaml").write_text(yaml.safe_dump(data))
    u = estimate(specs, alloc, "ulx3s-85f", "rtl-seq")
    assert not u.band("LUT").calibrated and "LUT" in u.uncalibrated and u.band("BRAM18").rel == 0


def test_folding_choice_keeps_the_margin(monkeypatch):
    """choose_folding takes the fastest folding that fits at the pessimistic end of the band: with a
    band, a design that fits only at the estimate is folded further."""
    from opq_hw.cost import folding
    from opq_hw.cost.accuracy import Accuracy

    specs, alloc = golden_inputs()
    b = load_board("pynq-z2")
    fast = choose_folding(specs, alloc, b, "hls4ml-latency")
    lut = estimate(specs, alloc, b, "hls4ml-latency", folding=fast).totals["LUT"]
    tight = dataclasses.replace(b, capacity={**b.capacity, "LUT": int(lut * 1.02 / b.utilisation_limits["LUT"]) + 1})
    assert choose_folding(specs, alloc, tight, "hls4ml-latency") == fast  # uncalibrated: no margin
    monkeypatch.setattr(folding, "accuracy", lambda arch, fam: Accuracy(arch, fam, {"LUT": Band(rel=0.2, n=1)}))
    slow = choose_folding(specs, alloc, tight, "hls4ml-latency")
    rs, rf = (estimate(specs, alloc, tight, "hls4ml-latency", folding=f) for f in (slow, fast))
    assert rs.ii_cycles > rf.ii_cycles and rs.totals["LUT"] * 1.2 <= tight.limit("LUT")


# ---------------------------------------------------------------- --fit keeps the margin
def test_fit_allocation_targets_the_budget_minus_the_band(cnn, boards_copy):
    from opq_hw.hwaware import fit_allocation

    specs, weights = cnn
    b = load_board("ecp5-85f")
    b = dataclasses.replace(b, capacity={**b.capacity, "LUT": 16_000})  # the dense design does not fit
    usable = b.limit("LUT")
    # a band wide enough to move the allocation (the committed one may be narrower): the mechanism, not the table
    table = yaml.safe_load((boards_copy / "rtl_da_calibration.yaml").read_text())["ecp5"]["heldout_error"]
    _edit(boards_copy, "rtl-da", "ecp5", {**table, "lut": {"mape": 0.1, "max": 0.1818}})
    band = accuracy("rtl-da", "ecp5").band("LUT").rel
    assert band == 0.1818
    alloc, info = fit_allocation(specs, weights, b, "rtl-da")
    # the top level's LUTs (outside the per-layer cost function) leave the second budget: 2 allocations,
    # not a 0.95-step walk down to the target (9 before)
    assert len(info["iterations"]) == 2
    assert info["margin"]["LUT"] == band and info["target"]["LUT"] == pytest.approx(usable / (1 + band))
    assert info["usage"]["LUT"] <= info["target"]["LUT"] and info["verdict"] == "fits" and info["margin_dropped"] == []
    note = [n for n in alloc.notes if n.startswith("hardware-aware")][-1]
    assert f"LUT ± {100 * band:.1f} % (targeted {usable / (1 + band):,.0f} of {usable:,.0f} usable)" in note
    _edit(boards_copy, "rtl-da", "ecp5", None)  # the same, without the table: no margin
    alloc0, info0 = fit_allocation(specs, weights, b, "rtl-da")
    assert info0["margin"]["LUT"] is None and info0["target"]["LUT"] == usable and "no error margin" in alloc0.notes[-1]
    assert info["target"]["LUT"] < info0["target"]["LUT"] and info["usage"]["LUT"] < info0["usage"]["LUT"]
    assert info0["usage"]["LUT"] > info["target"]["LUT"]  # the margin changed the allocation


def test_fit_allocation_says_when_the_margin_cannot_be_kept(cnn, boards_copy):
    """An ECP5-85F cut to 12,000 LUTs with a 60 % LUT band: even the smallest digits-cnn allocation under
    rtl-da, with its top level, is within the LUTs only at the optimistic end of the band; the fit targets
    all usable LUTs and says so."""
    from opq_hw.hwaware import fit_allocation

    specs, weights = cnn
    table = yaml.safe_load((boards_copy / "rtl_da_calibration.yaml").read_text())["ecp5"]["heldout_error"]
    _edit(boards_copy, "rtl-da", "ecp5", {**table, "lut": {"mape": 0.3, "max": 0.6}})
    b = load_board("ecp5-85f")
    b = dataclasses.replace(b, capacity={**b.capacity, "LUT": 12_000})
    alloc, info = fit_allocation(specs, weights, b, "rtl-da")
    rep = estimate(specs, alloc, b, "rtl-da", folding=info["folding"])
    assert info["margin_dropped"] == ["LUT"] and rep.fit == OPTIMISTIC and not rep.over
    assert info["verdict"].startswith(OPTIMISTIC) and "LUT ± " in alloc.notes[-1] and "NOT kept" in alloc.notes[-1]


def test_fit_allocation_keeps_the_board_tops_band(cnn):
    """On a dev board the fit checks the totals at their band with the board top's added: on a ULX3S with
    3,740 usable LUTs the max-bits digits-cnn (rtl-seq) fits at opq_top's band alone but not with the board
    top's, so it is allocated down until usage x (1 + the totals' band) fits, in 2 allocations."""
    from opq_hw.hwaware import fit_allocation

    specs, weights = cnn
    b = load_board("ulx3s-85f")
    b = dataclasses.replace(b, capacity={**b.capacity, "LUT": 4400})
    alloc, info = fit_allocation(specs, weights, b, "rtl-seq")
    rep = estimate(specs, alloc, b, "rtl-seq")
    from opq_hw.cost.network import BOARD_TOP

    dense = info["dense_max_bits_usage"]["LUT"] + rep.totals["LUT"] - sum(lc.LUT for lc in rep.layers)  # + top, board top
    band, total = info["margin"]["LUT"], info["margin_totals"]["LUT"]
    assert band == accuracy("rtl-seq", "ecp5").band("LUT").rel < total == rep.band("LUT").rel
    assert dense * (1 + band) <= b.limit("LUT") < dense * (1 + total)  # the board top's band is what moved it
    assert info["usage"]["LUT"] * (1 + total) <= b.limit("LUT") and rep.fit == FITS and len(info["iterations"]) == 2
    assert f"board top (its own band): LUT {rep.part_band(BOARD_TOP, 'LUT').label()}" in alloc.notes[-1] and f"totals checked at LUT ± {100 * total:.1f} %" in alloc.notes[-1]
