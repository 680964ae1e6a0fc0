"""`opq-hw sweep`: points in parallel, resumed, the records and the plot; bad input refused."""
from __future__ import annotations

import csv
import json
import shutil
import sys

import pytest

from opq_hw.cli import main

BOARDS = ("pynq-z2", "ultra96-v2")
TARGETS = (5.0, 20.0)
PNG = b"\x89PNG\r\n\x1a\n"


def _args(out, *extra):
    return ["sweep", "--model", "digits-cnn", "--data", "digits", "--targets", ",".join(f"{t:g}" for t in TARGETS),
            "--boards", ",".join(BOARDS), "--epochs", "0", "--out", str(out), *extra]


def _stamp(p):
    st = p.stat()
    return st.st_ino, st.st_mtime_ns


def _check_records(out):
    """sweep.json, sweep.csv, pareto.png and sweep.html agree, and every fit verdict is cost.fits's."""
    from opq_hw.boards import RESOURCES, load_board
    from opq_hw.cost import fits

    rec = json.loads((out / "sweep.json").read_text())
    assert rec["tool"] == "opq-hw" and rec["kind"] == "sweep" and rec["complete"] is True
    rows = rec["rows"]
    assert sorted((r["target"], r["board"]) for r in rows) == sorted((t, b) for t in TARGETS for b in BOARDS)
    for r in rows:
        # hls4ml-latency has no error bands: the verdict is the estimate's, uncalibrated where used
        f = fits(load_board(r["board"]), {k: r[k] for k in RESOURCES}, margin={})
        assert r["fits"] is f.ok and r["fit"] == f.verdict and r["uncalibrated"] == ", ".join(f.uncalibrated) != ""
        assert 0.5 < r["accuracy"] <= 1 and r["cr_w"] == pytest.approx(r["target"], rel=0.05)
        assert r["share_LUT"] > 0 and r["arch"] == "hls4ml-latency"
    for b in BOARDS:  # the same point on each board: the same accuracy; the lower rate the more accurate here
        lo, hi = (next(r for r in rows if r["board"] == b and r["target"] == t) for t in TARGETS)
        assert lo["accuracy"] > hi["accuracy"] and lo["cr_w"] < hi["cr_w"]
    assert len({(r["target"], r["accuracy"]) for r in rows}) == len(TARGETS)
    from opq_hw.sweep import SweepRow

    assert [SweepRow.from_dict(r).to_dict() for r in rows] == rows  # JSON round-trip
    with open(out / "sweep.csv", newline="") as f:
        got = list(csv.DictReader(f))
    assert [(float(c["target"]), c["board"], c["fits"], int(c["LUT"])) for c in got] == \
        [(r["target"], r["board"], str(r["fits"]), r["LUT"]) for r in rows]
    png = (out / "pareto.png").read_bytes()
    assert png.startswith(PNG)
    import matplotlib.image

    h, w = matplotlib.image.imread(out / "pareto.png").shape[:2]
    assert h > 200 and w > 400
    page = (out / "sweep.html").read_text()
    assert "data:image/png;base64," in page and " src=\"http" not in page and "href=" not in page
    assert all(b in page for b in BOARDS)
    return rec


@pytest.mark.slow
def test_sweep_parallel_then_resumed(tmp_path):
    """Two targets x two boards with a pool of 2; then one point is left half-written (what a killed
    compress leaves) and the other finished: the second run keeps the finished one untouched and
    computes the other again."""
    from opq_hw.artifact import TMP_MARKER

    out = tmp_path / "sw"
    assert main(_args(out, "--jobs", "2")) == 0
    rec = _check_records(out)
    assert [p["status"] for p in rec["points"]] == ["compressed", "compressed"]
    kept = out / "points" / "cr5" / "manifest.json"
    before = _stamp(kept)
    half = out / "points" / ".cr20.abcdefgh.tmp"
    (out / "points" / "cr20").rename(half)
    (half / TMP_MARKER).write_text("{}")
    (half / "weights.pt").unlink()

    assert main(_args(out, "--jobs", "1")) == 0
    rec2 = _check_records(out)
    assert {p["target"]: p["status"] for p in rec2["points"]} == {5.0: "reused", 20.0: "compressed"}
    assert _stamp(kept) == before  # not recompressed: the same manifest file
    assert not half.exists()
    assert [{k: v for k, v in r.items() if k != "status"} for r in rec2["rows"]] == \
        [{k: v for k, v in r.items() if k != "status"} for r in rec["rows"]]  # deterministic

    # the same folder through a Dask cluster (the optional extra; `make setup` installs it), estimated
    # fully parallel instead: every point reused, never fewer LUTs nor a longer interval than the fastest fit
    import distributed

    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cl:
        from opq_hw.sweep import SweepConfig, sweep

        cfg = SweepConfig(model="digits-cnn", data="digits", targets=TARGETS, boards=BOARDS, folding="parallel")
        with distributed.Client(cl) as client:
            rec3 = sweep(cfg, out, scheduler=client, log=lambda *_: None)
    assert rec3["engine"] == "dask" and [p["status"] for p in rec3["points"]] == ["reused", "reused"]
    for fast, par in zip(rec["rows"], rec3["rows"]):
        assert (par["target"], par["board"]) == (fast["target"], fast["board"])
        assert par["LUT"] >= fast["LUT"] and par["ii_cycles"] <= fast["ii_cycles"]
    assert any(par["LUT"] > fast["LUT"] for fast, par in zip(rec["rows"], rec3["rows"]))
    assert _stamp(kept) == before


@pytest.mark.parametrize("change, words", [
    (("--boards", "pynq-z2,no-such-board"), "unknown board 'no-such-board'"),
    (("--boards", "ice40-up5k"), "does not support the hls4ml flow"),
    (("--arch", "no-such-arch"), "unknown architecture"),
    (("--model", "no-such-model"), "unknown model 'no-such-model'"),
    (("--targets", ""), "--targets is empty"),
    (("--targets", "5,5"), "more than once"),
    (("--targets", "0.5"), "must be > 1"),
    (("--data", "no-such-data"), "no-such-data"),
])
def test_sweep_bad_input(tmp_path, capsys, change, words):
    args = _args(tmp_path / "sw")
    if change[0] in args:
        args[args.index(change[0]) + 1] = change[1]
    else:
        args += change
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and words in err and "Traceback" not in err
    assert not (tmp_path / "sw").exists()


def test_sweep_refuses_foreign_folders(tmp_path, capsys, monkeypatch):
    """A folder opq-hw did not make is never written into (--overwrite or not); a file is no folder;
    --scheduler without the Dask extra names the extra."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "sweep.csv").write_text("my own numbers\n")
    for extra in ((), ("--overwrite",)):
        assert main(_args(mine, *extra)) == 2
        assert "not an opq-hw sweep" in capsys.readouterr().err
    assert sorted(p.name for p in mine.iterdir()) == ["sweep.csv"]
    assert (mine / "sweep.csv").read_text() == "my own numbers\n"
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(SystemExit) as e:  # argparse's --out check
        main(_args(f))
    assert e.value.code == 2 and "not a directory" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    assert main(_args(tmp_path / "new", "--scheduler", "tcp://127.0.0.1:1")) == 2
    assert "opq-hw[dask]" in capsys.readouterr().err and not (tmp_path / "new").exists()


def test_sweep_refuses_another_sweeps_folder(tmp_path, capsys):
    """A sweep folder of another model or data is replaced only with --overwrite (other targets,
    boards or arch add to it)."""
    from opq_hw.artifact import write_json
    from opq_hw.sweep import SCHEMA, SweepConfig

    out = tmp_path / "sw"
    other = SweepConfig(model="digits-mlp", data="digits", targets=(5.0,), boards=("pynq-z2",))
    write_json(out / "sweep.json", {"tool": "opq-hw", "kind": "sweep", "schema": SCHEMA, "config": other.to_dict(),
                                    "points": [], "rows": []})
    assert main(_args(out)) == 2
    err = capsys.readouterr().err
    assert "another configuration" in err and "digits-mlp" in err and "--overwrite" in err
    shutil.rmtree(out)


def test_sweep_recipe_options(tmp_path, capsys):
    """The finetune recipe reaches every point's config; a record made before the recipe options
    existed reads as the default recipe; a sweep folder of another recipe needs --overwrite."""
    from opq_hw.artifact import write_json
    from opq_hw.sweep import SCHEMA, SweepConfig

    cfg = SweepConfig(model="digits-cnn", data="digits", targets=TARGETS, boards=BOARDS, lr_schedule="cosine",
                      distill_weight=0.5, distill_temperature=4.0)
    pc = cfg.point_config(5.0)
    assert (pc.lr_schedule, pc.distill_weight, pc.distill_temperature) == ("cosine", 0.5, 4.0)
    assert SweepConfig.from_dict(cfg.to_dict()) == cfg
    old = {k: v for k, v in SweepConfig(model="digits-cnn", data="digits", targets=TARGETS, boards=BOARDS,
                                        epochs=0).to_dict().items()
           if k not in ("lr_schedule", "distill_weight", "distill_temperature")}
    assert SweepConfig.from_dict(old).point_config(5.0).lr_schedule == "constant"
    out = tmp_path / "sw"
    write_json(out / "sweep.json", {"tool": "opq-hw", "kind": "sweep", "schema": SCHEMA, "config": old,
                                    "points": [], "rows": []})
    assert main(_args(out, "--lr-schedule", "cosine")) == 2
    err = capsys.readouterr().err
    assert "another configuration" in err and "lr_schedule" in err and "'cosine'" in err
    with pytest.raises(SystemExit) as e:
        main(_args(tmp_path / "bad", "--distill-weight", "2"))
    assert e.value.code == 2 and "--distill-weight" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
