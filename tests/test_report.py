"""Estimate reports: cost.json + estimate.md + self-contained estimate.html (headless Chromium)."""
from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from opq_hw.cost import CostReport
from opq_hw.errors import OpqError
from opq_hw.report import estimate_run, report_run

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture
def run_dir(tmp_path):
    """A run directory's JSON records (what the estimate reads), from the golden demo allocation."""
    d = tmp_path / "run"
    d.mkdir()
    shutil.copyfile(GOLDEN / "demo_specs.json", d / "specs.json")
    shutil.copyfile(GOLDEN / "demo_allocation.json", d / "allocation.json")
    arts = {f: hashlib.sha256((d / f).read_bytes()).hexdigest() for f in ("specs.json", "allocation.json")}
    (d / "manifest.json").write_text(json.dumps({"tool": "opq-hw", "schema": 2, "artifacts": arts,
                                                 "config": {"act_bits": 8, "model": "digits-cnn"}}))
    return d


@pytest.mark.slow
def test_estimate_run_writes_cost_and_reports(run_dir):
    rep = estimate_run(run_dir, "pynq-z2", "hls4ml-latency")
    cost = json.loads((run_dir / "cost.json").read_text())
    assert CostReport.from_dict(cost) == rep
    # the fastest folding that fits is the golden one
    golden = json.loads((GOLDEN / "cost_pynq-z2_hls4ml-latency.json").read_text())
    assert cost == golden
    md = (run_dir / "reports" / "estimate.md").read_text()
    assert "| layer | bits |" in md and "## Across boards" in md
    for board in ("pynq-z2", "zcu104", "alveo-u250", "kv260"):
        assert f"| {board} |" in md
    assert "ecp5-85f" not in md.split("## Across boards")[1].split("## Notes")[0]  # no hls4ml flow there
    for png in ("allocation", "resources", "cycles"):
        assert (run_dir / "reports" / f"estimate_{png}.png").read_bytes().startswith(b"\x89PNG")
        assert f"estimate_{png}.png" in md


def test_html_is_self_contained(run_dir):
    estimate_run(run_dir, "zcu104", "finn-mvau")
    html = (run_dir / "reports" / "estimate.html").read_text()
    srcs = re.findall(r'src="([^"]+)"', html)
    assert len(srcs) == 3 and all(s.startswith("data:image/png;base64,") for s in srcs)
    for s in srcs:
        assert base64.b64decode(s.split(",", 1)[1]).startswith(b"\x89PNG")
    assert "href=" not in html and "<script" not in html
    assert "finn-mvau on zcu104" in html and "fits" in html


def test_not_fitting_is_reported(run_dir):
    rep = estimate_run(run_dir, "ice40-up5k", "rtl-da", boards_table=False)
    assert not rep.fits and "LUT" in rep.over
    md = (run_dir / "reports" / "estimate.md").read_text()
    assert "does not fit" in md and "Missing: LUT" in md


def test_errors_name_the_fix(tmp_path, run_dir):
    with pytest.raises(OpqError, match="not an opq-hw run"):
        estimate_run(tmp_path, "pynq-z2", "hls4ml-latency")
    with pytest.raises(OpqError, match="unknown board"):
        estimate_run(run_dir, "pynq-z3", "hls4ml-latency")
    with pytest.raises(OpqError, match="run `opq-hw estimate"):
        report_run(run_dir)


def test_report_run_compares_with_measurements(run_dir):
    rep = estimate_run(run_dir, "ecp5-85f", "rtl-da", boards_table=False)
    res = report_run(run_dir)
    assert res["flows"] == {}
    m = run_dir / "build" / "rtl" / "resources.json"
    m.parent.mkdir(parents=True)
    m.write_text(json.dumps({"LUT": rep.totals["LUT"] * 2, "FF": 100, "source": "yosys synth_ecp5 (test)"}))
    res = report_run(run_dir)
    lut = res["flows"]["rtl"]["totals"]["LUT"]
    assert lut["measured"] == rep.totals["LUT"] * 2 and lut["rel_error"] == pytest.approx(-0.5)
    assert lut["band"] == rep.band("LUT").rel > 0 and lut["within_band"] is False  # 2x is outside the band
    assert res["flows"]["rtl"]["totals"]["FF"]["within_band"] is (abs(rep.totals["FF"] - 100) <= 100 * 0
                                                                 + rep.totals["FF"] * rep.band("FF").rel)
    md = (run_dir / "reports" / "report.md").read_text()
    assert "yosys synth_ecp5 (test)" in md and f"{rep.totals['LUT']:,} {rep.band('LUT').label()}" in md
    assert "| within the band |" in md and res["fit"] == rep.fit_label and res["bands"] == rep.bands


def test_cli_estimate(run_dir, capsys):
    from opq_hw.cli import main

    assert main(["estimate", str(run_dir), "--board", "kv260", "--arch", "hls4ml-resource"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("estimate: hls4ml-resource on kv260: fits (uncalibrated LUT, FF")
    assert "cost.json" in out[0] and "II " in out[0]
    assert out[1].startswith("figures: LUT ") and "(uncalibrated)" in out[1]  # every figure with its band
    assert out[2].startswith("Uncalibrated LUT, FF, DSP, BRAM18, URAM, cycles: no Vivado/Vitis")
    assert json.loads((run_dir / "cost.json").read_text())["board"] == "kv260"
    assert main(["estimate", str(run_dir), "--board", "ice40-up5k", "--arch", "finn-mvau"]) == 2  # clear error
    assert main(["estimate", str(run_dir), "--board", "ecp5-85f", "--arch", "rtl-da"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"figures: LUT [\d,]+ ± \d+ %, FF [\d,]+ ± \d+ %", out) and "held-out max relative error" in out


@pytest.mark.slow
def test_estimate_on_a_real_run(demo_run):
    rep = estimate_run(demo_run, "pynq-z2", "hls4ml-latency")
    assert rep.fits and (Path(demo_run) / "reports" / "estimate.html").is_file()
    assert [lc.name for lc in rep.layers] == ["0", "3", "7"]


def _browser():
    for b in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(b):
            return shutil.which(b)
    return None


@pytest.mark.slow
@pytest.mark.tools
def test_html_renders_in_headless_chromium(run_dir, tmp_path):
    browser = _browser()
    if browser is None:
        pytest.skip("no Chromium on PATH: run scripts/install_browser.sh")
    import numpy as np
    from matplotlib import image

    estimate_run(run_dir, "ecp5-85f", "rtl-seq")  # a calibrated architecture: the page shows error bands
    page = (run_dir / "reports" / "estimate.html").read_text()
    # rtl-seq carries a whole-design held-out error for every figure (LUT, FF, BRAM, DSP, cycles) on ECP5
    assert re.search(r"LUT [\d,]+ ± \d+ %", page) and "held-out max relative error" in page
    shot = tmp_path / "shot.png"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--screenshot={shot}",
           "--window-size=1200,1600", (run_dir / "reports" / "estimate.html").resolve().as_uri()]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120, cwd=tmp_path)
    img = image.imread(shot)[..., :3]
    assert img.shape[0] >= 1000 and img.shape[1] >= 1000
    dark = (img.mean(axis=2) < 0.5).mean()  # text, bars, axes
    assert 0.005 < dark < 0.6, dark
    colours = np.unique((img * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 50  # figures rendered, not a blank page


def test_report_notes_and_layer_shapes(run_dir):
    m = json.loads((run_dir / "manifest.json").read_text())
    m["notes"] = ["a note of the run"]
    (run_dir / "manifest.json").write_text(json.dumps(m))
    estimate_run(run_dir, "pynq-z2", "hls4ml-latency", boards_table=False)
    md = (run_dir / "reports" / "estimate.md").read_text()
    notes = md.split("## Notes")[1].split("## Provenance")[0]
    assert "- folding: the fastest that fits pynq-z2" in notes and "- activations: 8-bit" in notes
    assert "- run: a note of the run" in notes
    assert "| 0 (conv2d 1x8x8 -> 16x8x8) |" in md and "| 7 (linear 128 -> 10) |" in md
    html = (run_dir / "reports" / "estimate.html").read_text()
    assert "<li>run: a note of the run</li>" in html and "3 (conv2d 16x4x4 -&gt; 32x4x4)" in html


def _demo_intnet(names=("0", "3", "7")):
    """An integer network of the demo's shapes (conv 1->16, pool, conv 16->32, pool, linear 128->10), the
    last layer with a few +-1 weights: its accumulator needs far fewer bits than the weight-agnostic width."""
    import numpy as np

    from opq_hw.rtl.intnet import Flatten, IntLayer, IntNet, Pool

    rng = np.random.default_rng(0)
    w0, w1 = rng.integers(-3, 4, (16, 1, 3, 3)), rng.integers(-3, 4, (32, 16, 3, 3))
    w2 = np.zeros((10, 128), dtype=np.int64)
    w2[:, :3] = 1
    z = np.zeros
    return IntNet((1, 8, 8), 8, True, -4, [
        IntLayer(names[0], "conv", w0, z(16, dtype=np.int64), 8, True, (1, 8, 8), (16, 8, 8), (1, 1), (-10,) * 16, (-6,) * 16, 4, -4),
        Pool(2), IntLayer(names[1], "conv", w1, z(32, dtype=np.int64), 4, False, (16, 4, 4), (32, 4, 4), (1, 1), (-10,) * 32,
                          (-6,) * 32, 4, -4),
        Pool(2), Flatten(), IntLayer(names[2], "linear", w2, z(10, dtype=np.int64), 4, False, (128, 1, 1), (10, 1, 1),
                                     (0, 0), (-10,) * 10, None, None, None)], (1, 8, 8))


def test_estimate_sizes_the_logits_from_the_runs_integer_network(run_dir):
    """After `build --flow rtl` (build/rtl/intnet.json) the rtl-seq estimate sizes the logits as seq.py does,
    from the actual weights: 3 x (+1) x 15 needs 7 bits, not the weight-agnostic 20, so the iCE40 logits take
    one RAM4K instead of two; a build of other layers (stale) is not used."""
    from opq_hw.report import run_logit_bits

    spec_names = ["0", "3", "7"]
    before = estimate_run(run_dir, "ice40-up5k", "rtl-seq", boards_table=False)
    (run_dir / "build" / "rtl").mkdir(parents=True)
    (run_dir / "build" / "rtl" / "intnet.json").write_text(json.dumps(_demo_intnet().to_dict()))
    from opq_hw.spec import read_records

    assert run_logit_bits(run_dir, read_records(run_dir)[0]) == 7 and [lc.name for lc in before.layers] == spec_names
    after = estimate_run(run_dir, "ice40-up5k", "rtl-seq", boards_table=False)
    assert after.totals["BRAM18"] == before.totals["BRAM18"] - 1
    assert any("sized from the actual weights (7-bit" in n for n in after.notes)
    assert not any("actual weights" in n for n in before.notes)
    (run_dir / "build" / "rtl" / "intnet.json").write_text(json.dumps(_demo_intnet(("a", "b", "c")).to_dict()))
    assert estimate_run(run_dir, "ice40-up5k", "rtl-seq", boards_table=False).totals == before.totals


def test_rtl_da_serializer_sized_from_the_da4ml_build(run_dir):
    """After `build --flow rtl --rtl-arch da4ml` (build/rtl/rtl_build.json) the rtl-da top level's serializer
    holds the 10 logits at the width da4ml gave the last layer's accumulators (`acc_w`, here 9 bits), beside
    the pools' counted registers; a build of other layers, or of the seq architecture, is not used."""
    from opq_hw.cost.rtl import SERIALIZER_COUNTER_FF
    from opq_hw.report import run_logit_bits
    from opq_hw.spec import read_records

    specs = read_records(run_dir)[0]
    top = "rtl-da top level"
    before = estimate_run(run_dir, "ecp5-85f", "rtl-da", boards_table=False)
    out = run_dir / "build" / "rtl"
    out.mkdir(parents=True)
    rec = {"arch": "da4ml", "serial_bits": 0, "layers": [{"name": n, "acc_w": 9} for n in ("0", "3", "7")]}
    (out / "rtl_build.json").write_text(json.dumps(rec))
    assert run_logit_bits(run_dir, specs, "rtl-da") == 9 and run_logit_bits(run_dir, specs) is None
    after = estimate_run(run_dir, "ecp5-85f", "rtl-da", boards_table=False)
    # the digits-cnn shapes: 2 pools in LUT RAM (16 x 8 bits, OW = 4; 32 x 8 bits, OW = 2), 81 + pixel + read address
    assert after.parts[top]["FF"] == (81 + 128 + 2) + (81 + 256 + 1) + SERIALIZER_COUNTER_FF + 10 * 9
    assert before.parts[top]["FF"] > after.parts[top]["FF"] and any("serializer sized" in n for n in after.notes)
    assert after.totals["FF"] - before.totals["FF"] == after.parts[top]["FF"] - before.parts[top]["FF"]
    for stale in ({**rec, "arch": "seq"}, {**rec, "layers": rec["layers"][:2]}):
        (out / "rtl_build.json").write_text(json.dumps(stale))
        assert estimate_run(run_dir, "ecp5-85f", "rtl-da", boards_table=False).parts[top] == before.parts[top]


def test_report_compares_only_the_design_the_estimate_prices(run_dir):
    """A build of another architecture, FPGA family or an unpriced variant (digit-serial, pipelined) is shown
    but never set against the estimate; builds that do not say what they are compare as before."""
    rep = estimate_run(run_dir, "ecp5-85f", "rtl-seq", boards_table=False)
    m = run_dir / "build" / "rtl" / "resources.json"
    m.parent.mkdir(parents=True)
    base = {"LUT": rep.totals["LUT"], "FF": rep.totals["FF"], "source": "Yosys synthesis (test)"}
    for extra, why in [({"arch": "rtl-da", "family": "ecp5"}, "--arch rtl-da"),
                       ({"arch": "rtl-seq", "family": "xc7"}, "for a xc7 board"),
                       ({"arch": "rtl-seq", "family": "ecp5", "variant": "2-bit digit-serial inputs"},
                        "does not price")]:
        m.write_text(json.dumps({**base, **extra}))
        res = report_run(run_dir)["flows"]["rtl"]
        assert "totals" not in res and why in res["not_compared"] and res["measured"]["LUT"] == rep.totals["LUT"]
        assert "Not compared with the estimate" in (run_dir / "reports" / "report.md").read_text()
    f = run_dir / "build" / "hls4ml" / "resources.json"  # another flow's build
    f.parent.mkdir()
    f.write_text(json.dumps(base))
    assert "prices the rtl flow's" in report_run(run_dir)["flows"]["hls4ml"]["not_compared"]
    f.unlink()
    for extra in ({"arch": "rtl-seq", "family": "ecp5", "variant": None}, {}):
        m.write_text(json.dumps({**base, **extra}))
        assert report_run(run_dir)["flows"]["rtl"]["totals"]["LUT"]["rel_error"] == 0
    m.write_text(json.dumps({**base, "arch": 3}))
    with pytest.raises(OpqError, match="must be strings"):
        report_run(run_dir)


def test_rtl_build_says_what_it_measures():
    """The rtl flow's resources.json names the architecture, family and unpriced variant of the design."""
    from opq_hw.flows import RtlOptions
    from opq_hw.flows.rtl_flow import resources_record

    s = {"synth": {"lut": 90, "lut_equiv": 100, "ff": 50, "dsp": 1, "bram18": 2, "bram36": 1}}
    m = resources_record(s, RtlOptions(rtl_arch="seq"), "ice40")
    assert (m["LUT"], m["BRAM18"], m["arch"], m["family"], m["variant"]) == (100, 4, "rtl-seq", "ice40", None)
    m = resources_record({**s, "pnr": {"fmax_mhz": 40.0}}, RtlOptions(rtl_arch="da4ml", serial_bits=2, pipeline=3),
                           "ecp5")
    assert m["arch"] == "rtl-da" and m["variant"] == "2-bit digit-serial inputs, pipelined kernels (--pipeline 3)"
    assert m["source"] == "Yosys synthesis for ecp5, placed and routed"
