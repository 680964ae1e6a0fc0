"""Run directories never lose a user's files, never run code they name, and refuse tampered artifacts;
interrupts and kills leave either nothing or the previous complete run (issue 12, sections 1-3 and 5)."""
from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from opq_hw.errors import OpqError
from opq_hw.pipeline import CompressConfig, compress_run
from opq_hw.run import load_run

CHEAP = dict(model="digits-mlp", data="digits", target_cr=10, epochs=0)  # calibrated on digits, no finetuning


def _quiet(*_a):
    pass


def cheap_run(out, overwrite=False, log=_quiet, **kw):
    return compress_run(CompressConfig(**{**CHEAP, **kw}), out, overwrite=overwrite, progress=False, log=log)


def snapshot(d: Path) -> dict[str, str]:
    """Every file under `d` (hidden ones too) -> sha256 of its bytes."""
    return {p.relative_to(d).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


def tmp_siblings(out: Path) -> list[Path]:
    return [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.") and p.name.endswith(".tmp")]


def cli_env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env


def cli(*args, cwd=None, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "opq_hw.cli", *map(str, args)], cwd=cwd, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """A cheap complete run (digits-mlp, 10x, no finetuning); tests copy it before writing."""
    return cheap_run(tmp_path_factory.mktemp("base") / "run")


@pytest.fixture
def run(base_run, copy_run):
    return copy_run(base_run)


# ------------------------------------------------------------------------------------------------
# 1. output directories
# ------------------------------------------------------------------------------------------------
def test_overwrite_refuses_a_folder_with_foreign_files(run, tmp_path):
    (run / "src").mkdir()
    (run / "src" / "main.py").write_text("print('my project')\n")
    (run / "notes.txt").write_text("mine")
    before = snapshot(run)
    with pytest.raises(OpqError, match=r"2 other or changed file\(s\): notes.txt, src/main.py"):
        cheap_run(run, target_cr=12, overwrite=True)
    assert snapshot(run) == before and not tmp_siblings(run)


def test_overwrite_refuses_changed_artifacts_and_non_runs(run, tmp_path):
    m = json.loads((run / "metrics.json").read_text())
    m["cr_w"] = 99.0
    (run / "metrics.json").write_text(json.dumps(m))
    before = snapshot(run)
    with pytest.raises(OpqError, match=r"metrics.json \(changed\)"):
        cheap_run(run, target_cr=12, overwrite=True)
    assert snapshot(run) == before
    # a project folder that merely holds a manifest.json is not a run
    proj = tmp_path / "project"
    proj.mkdir()
    (proj / "manifest.json").write_text(json.dumps({"tool": "opq-hw", "config": {}}))
    (proj / "app.py").write_text("x = 1\n")
    before = snapshot(proj)
    with pytest.raises(OpqError, match="older opq-hw"):
        cheap_run(proj, overwrite=True)
    assert snapshot(proj) == before


def test_overwrite_replaces_a_verified_run(run):
    cheap_run(run, target_cr=12, overwrite=True)
    assert load_run(run).allocation.target == 12 and not tmp_siblings(run)


@pytest.mark.slow
def test_rerun_keeps_later_outputs(run, capsys):
    from opq_hw.cli import main
    from opq_hw.report import estimate_run

    estimate_run(run, "pynq-z2", "hls4ml-latency", boards_table=False)
    later = {k: v for k, v in snapshot(run).items() if k.startswith(("cost.json", "reports/"))}
    assert "cost.json" in later
    lines = []
    cheap_run(run, log=lines.append)  # the same configuration: nothing to do, nothing deleted
    assert "kept as is" in lines[0] and snapshot(run).items() >= later.items()
    lines.clear()
    compress_run(CompressConfig(**CHEAP), run, overwrite=True, progress=False, log=lines.append)
    assert any("still valid" in ln for ln in lines)  # recomputed: identical artifacts, so later outputs kept
    assert snapshot(run).items() >= later.items()
    assert main(["report", str(run)]) == 0  # cost.json still verifies
    # a different configuration without --overwrite is refused, and nothing changes
    before = snapshot(run)
    assert main(["compress", "--model", "digits-mlp", "--target-cr", "12", "--out", str(run)]) == 2
    assert "--overwrite" in capsys.readouterr().err and snapshot(run) == before


def test_concurrent_writer_fails_at_once(run, capsys):
    from opq_hw.cli import main

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom opq_hw.rundir import locked\n"
                               "with locked(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)\n", str(run)],
                              env=cli_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.time()
        assert main(["estimate", str(run), "--board", "pynq-z2"]) == 2
        err = capsys.readouterr().err
        assert f"another opq-hw command (pid {holder.pid}) is writing" in err and time.time() - t0 < 10
        with pytest.raises(OpqError, match="another opq-hw command"):
            cheap_run(run, target_cr=12, overwrite=True)
        assert not (run / "cost.json").exists() and load_run(run).allocation.target == 10
    finally:
        holder.kill()
        holder.wait()
    assert main(["estimate", str(run), "--board", "pynq-z2"]) == 0  # the lock died with its holder


def test_failed_rebuild_keeps_the_previous_build(run):
    from opq_hw.rundir import build_dir, read_manifest, verify

    with build_dir(run, "x") as b:
        (b.path / "top.bit").write_bytes(b"good bitstream")
    good = snapshot(run / "build" / "x")
    with pytest.raises(RuntimeError):
        with build_dir(run, "x") as b:
            (b.path / "top.bit").write_bytes(b"half")
            raise RuntimeError("tool crashed")
    assert snapshot(run / "build" / "x") == good and not tmp_siblings(run / "build" / "x")
    with build_dir(run, "x") as b:
        (b.path / "log.txt").write_text("synthesis failed")
        b.failed = "does not fit"
    assert snapshot(run / "build" / "x") == good
    assert (run / "build" / "x.failed" / "log.txt").is_file()
    verify(run, ["build/x/top.bit", "build/x.failed/log.txt"])
    with build_dir(run, "x") as b:
        (b.path / "top.bit").write_bytes(b"better bitstream")
    assert not (run / "build" / "x.failed").exists()
    assert not any(k.startswith("build/x.failed") for k in read_manifest(run)["artifacts"])
    (run / "build" / "x" / "top.bit").write_bytes(b"edited")
    with pytest.raises(OpqError, match="run `opq-hw build` again"):
        verify(run, ["build/x/top.bit"])


# ------------------------------------------------------------------------------------------------
# 2. no code from data
# ------------------------------------------------------------------------------------------------
def _set_model(run: Path, ref: str, **cfg) -> None:
    man = json.loads((run / "manifest.json").read_text())
    man["config"].update(model=ref, **cfg)
    (run / "manifest.json").write_text(json.dumps(man))


@pytest.mark.slow
def test_hostile_manifest_imports_nothing(run):
    (run / "evil.py").write_text("import pathlib\npathlib.Path('IMPORTED').write_text('x')\ndef f():\n    return None\n")
    for ref in ("evil:f", "os:abort"):
        _set_model(run, ref)
        for args in (["simulate", run, "--level", "qonnx"], ["build", run, "--flow", "hls4ml", "--board", "pynq-z2"]):
            p = cli(*args, cwd=run)
            out, err = p.communicate(timeout=300)
            assert p.returncode == 2, err
            assert f"--model {ref}" in err and "--trust-run" in err and "Traceback" not in err
            assert not (run / "IMPORTED").exists() and not (run / "build").exists()


def test_module_factory_given_again(run):
    from opq_hw.cli import main

    _set_model(run, "opq_hw.models:digits_mlp", data="digits")
    with pytest.raises(OpqError, match="does not import code"):
        load_run(run)
    assert main(["simulate", str(run), "--level", "qonnx", "--n", "20", "--model", "opq_hw.models:digits_mlp"]) == 0
    assert main(["simulate", str(run), "--level", "qonnx", "--n", "20", "--trust-run"]) == 0


# ------------------------------------------------------------------------------------------------
# 3. integrity
# ------------------------------------------------------------------------------------------------
def _tamper(p: Path) -> None:
    if p.suffix == ".json":
        d = json.loads(p.read_text())
        if isinstance(d, dict) and "layers" in d:
            d["layers"][0]["n_nonzero"] += 1
        elif isinstance(d, list):
            d[0]["n_weights"] += 1
        else:
            d["cr_w"] = 1.0
        p.write_text(json.dumps(d))
    else:
        b = bytearray(p.read_bytes())
        b[len(b) // 2] ^= 1
        p.write_bytes(bytes(b))


ARTIFACTS = ("allocation.json", "specs.json", "weights.pt", "model.qonnx.onnx", "golden_input.npy",
             "golden_output.npy", "metrics.json")


@pytest.mark.slow
def test_each_tampered_artifact_is_refused(base_run, tmp_path, capsys):
    import shutil

    from opq_hw.cli import main

    for name in ARTIFACTS:
        run = shutil.copytree(base_run, tmp_path / name)
        _tamper(run / name)
        for args in (["estimate", run, "--board", "pynq-z2"], ["simulate", run, "--level", "qonnx"],
                     ["build", run, "--flow", "hls4ml", "--board", "pynq-z2"]):
            assert main([str(a) for a in args]) == 2, (name, args)
            err = capsys.readouterr().err
            assert f"{name} changed since opq-hw wrote it: sha256 expected" in err and "actual" in err, err
            assert "re-create the run" in err
        assert not (run / "cost.json").exists() and not (run / "build").exists() and not (run / "reports").exists()
    run = shutil.copytree(base_run, tmp_path / "missing")
    (run / "weights.pt").unlink()
    assert main(["simulate", str(run), "--level", "qonnx"]) == 2
    assert "weights.pt is missing" in capsys.readouterr().err


def _forge(run: Path, name: str, edit) -> None:
    """Edit an artifact AND its recorded hash (a consistent forgery the hashes cannot see)."""
    from opq_hw.rundir import sha256_file

    edit(run / name)
    man = json.loads((run / "manifest.json").read_text())
    man["artifacts"][name] = sha256_file(run / name)
    (run / "manifest.json").write_text(json.dumps(man))


@pytest.mark.parametrize("field,value,match", [
    ("n_nonzero", lambda la: la["n_nonzero"] - 3, "n_nonzero"),
    ("mask_digest", lambda la: "0" * 64, "mask digest"),
    ("bits", lambda la: la["bits"] + 1, "bits"),
    ("scales", lambda la: [s * 2 for s in la["scales"]], "scales"),
])
def test_allocation_is_checked_against_the_weights(run, field, value, match):
    def edit(p):
        d = json.loads(p.read_text())
        d["layers"][1][field] = value(d["layers"][1])
        p.write_text(json.dumps(d))

    _forge(run, "allocation.json", edit)
    with pytest.raises(OpqError, match=f"weights.pt does not match allocation.json for layer .*{match}"):
        load_run(run)


def test_weights_of_another_run_are_refused(run, tmp_path):
    other = cheap_run(tmp_path / "other", target_cr=14)
    _forge(run, "weights.pt", lambda p: p.write_bytes((other / "weights.pt").read_bytes()))
    with pytest.raises(OpqError, match="does not match allocation.json"):
        load_run(run)


# ------------------------------------------------------------------------------------------------
# 5. interrupts, crashes, stale temporaries, kills
# ------------------------------------------------------------------------------------------------
FINETUNE = ["compress", "--model", "digits-mlp", "--data", "digits", "--target-cr", "12"]


@pytest.mark.slow
@pytest.mark.parametrize("sig,rc", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signals_clean_up(tmp_path, sig, rc):
    from opq_hw.pipeline import pretrained

    pretrained("digits-mlp")
    out = tmp_path / "r"
    p = cli(*FINETUNE, "--epochs", "200", "--out", out)
    t0 = time.time()
    while not tmp_siblings(out) and time.time() - t0 < 120 and p.poll() is None:
        time.sleep(0.05)
    assert tmp_siblings(out), "the run never reached its temporary directory"
    time.sleep(0.5)
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    assert p.returncode == rc and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists() and not tmp_siblings(out) and list(tmp_path.iterdir()) == []


def test_a_bug_prints_one_line_and_logs_the_traceback(monkeypatch, capsys):
    from opq_hw import cli as cli_mod

    def boom(args):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(cli_mod, "cmd_boards", boom)
    assert cli_mod.main(["boards"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "a bug in opq-hw" in err and "Traceback" not in err
    log = Path(err.split("the traceback is in ")[1].split(": please report")[0])
    assert "ZeroDivisionError: boom" in log.read_text() and "Traceback" in log.read_text()


def test_stale_temporary_of_another_configuration_is_removed(tmp_path):
    import io

    import torch

    from opq_hw.artifact import make_tmp_dir

    out = tmp_path / "r"
    stale = make_tmp_dir(out)
    buf = io.BytesIO()
    torch.save({"model": {}, "optim": {}, "epoch": 1, "history": [1.0], "tag": "another-config"}, buf)
    (stale / "finetune.ckpt").write_bytes(buf.getvalue())
    user = tmp_path / ".r.notours.tmp"  # not made by opq-hw: never touched
    user.mkdir()
    lines = []
    cheap_run(out, log=lines.append)
    assert any("removed" in ln and "another configuration" in ln for ln in lines), lines
    assert not stale.exists() and user.is_dir() and load_run(out)


def _moments(seed: int, n: int, duration: float) -> list[float]:
    rnd = random.Random(seed)
    return sorted(rnd.uniform(0.05, 0.95) * duration for _ in range(n))


def _run_to_end(args) -> tuple[float, str]:
    t0 = time.time()
    p = cli(*args)
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err
    return time.time() - t0, out + err


def _kill_at(args, after: float) -> str:
    p = cli(*args)
    try:
        p.wait(timeout=after)
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGKILL)
    out, err = p.communicate(timeout=60)
    return out + err


def _kill_when_checkpointed(args, out: Path) -> str:
    """SIGKILL the command as soon as its own temporary directory holds a finetune checkpoint."""
    from opq_hw.artifact import TMP_MARKER

    p = cli(*args)
    t0 = time.time()
    while p.poll() is None and time.time() - t0 < 300:
        mine = [s for s in tmp_siblings(out) if (s / "finetune.ckpt").is_file() and (s / TMP_MARKER).is_file()
                and json.loads((s / TMP_MARKER).read_text()).get("pid") == p.pid]
        if mine:
            p.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    out_, err = p.communicate(timeout=60)
    assert p.returncode == -signal.SIGKILL, "the command ended before writing a checkpoint"
    return out_ + err


@pytest.mark.slow
def test_sigkill_at_random_moments(tmp_path):
    """compress (5 moments) and build --flow hls4ml (5 moments) killed with SIGKILL: the destination
    is absent or the previous complete run, and the next identical command succeeds; a compress
    killed after a finetune checkpoint resumes from it and gives the weights of an uninterrupted run."""
    from opq_hw.pipeline import pretrained
    from opq_hw.rundir import read_manifest, verify

    pretrained("digits-mlp")
    ref = tmp_path / "ref"
    args = FINETUNE + ["--epochs", "6"]
    duration, _ = _run_to_end(args + ["--out", ref])
    out = tmp_path / "r"
    cheap_run(out)  # the previous complete run that a killed --overwrite must leave in place
    for t in _moments(12, 5, duration):
        log = _kill_at(args + ["--overwrite", "--out", out], t)
        assert "another configuration" not in log, log
        man = verify(out)  # the destination is always a complete run ...
        assert man["config"]["target_cr"] in (10, 12.0)  # ... the previous one or the new one
    _kill_when_checkpointed(args + ["--overwrite", "--out", out], out)
    assert verify(out)["config"]["target_cr"] in (10, 12.0)
    _, log = _run_to_end(args + ["--overwrite", "--out", out])
    assert "resuming the finetune from epoch" in log, log
    assert not tmp_siblings(out)
    assert (out / "weights.pt").read_bytes() == (ref / "weights.pt").read_bytes()

    build = ["build", out, "--flow", "hls4ml", "--board", "pynq-z2"]
    duration, _ = _run_to_end(build)
    prj = out / "build" / "hls4ml"
    good = snapshot(prj)
    for t in _moments(34, 5, duration):
        _kill_at(build, t)
        assert snapshot(prj) == good or (prj / "opq_hls4ml.json").is_file()
        verify(out)
    _run_to_end(build)
    assert not tmp_siblings(prj) and (prj / "opq_hls4ml.json").is_file()
    arts = read_manifest(out)["artifacts"]
    assert snapshot(prj) == {k[len("build/hls4ml/"):]: v for k, v in arts.items() if k.startswith("build/hls4ml/")}


def test_failed_rtl_rebuild_keeps_the_previous_build(run, monkeypatch):
    """A synthesis failure on rebuild leaves the previous build/rtl/ (its bitstream) in place."""
    from opq_hw.flows import rtl_flow
    from opq_hw.rtl import eda

    rtl_flow.build(run, board="ecp5-85f", sim=False, synth=False, log=None)
    prj = run / "build" / "rtl"
    (prj / "opq_top.bit").write_bytes(b"a bitstream")  # as if placed and routed
    from opq_hw.rundir import record

    record(run, "build/rtl")
    good = snapshot(prj)

    def broken(*a, **k):
        raise OpqError("yosys failed (test)")

    monkeypatch.setattr(eda, "synth", broken)
    monkeypatch.setattr(eda, "tool_versions", lambda family: {})
    with pytest.raises(OpqError, match=r"yosys failed \(test\) \(this build is in .*rtl.failed; the previous rtl/ was kept\)"):
        rtl_flow.build(run, board="ecp5-85f", sim=False, synth=True, log=None)
    assert snapshot(prj) == good
    assert json.loads((run / "build" / "rtl.failed" / "rtl_build.json").read_text())["synth_error"] == "yosys failed (test)"


def test_a_removal_killed_halfway_is_finished_by_the_next_command(tmp_path, monkeypatch):
    """A temporary directory is removed with its marker last, so one killed halfway through its
    removal is still ours for the next command; an empty one (killed between mkdtemp and the
    marker) is too; a user's directory of the same name pattern is never touched."""
    import pathlib
    import tempfile

    from opq_hw.artifact import TMP_MARKER, make_tmp_dir, remove_tmp_dir, stale_tmp_dirs

    target = tmp_path / "build" / "hls4ml"
    t = make_tmp_dir(target)
    (t / "firmware").mkdir()
    (t / "firmware" / "a.h").write_text("x")
    (t / "b.json").write_text("{}")
    order = []
    real_unlink = pathlib.Path.unlink
    monkeypatch.setattr(pathlib.Path, "unlink", lambda self, *a, **k: (order.append(self.name), real_unlink(self, *a, **k)))
    monkeypatch.setattr(pathlib.Path, "rmdir", lambda self: (_ for _ in ()).throw(OSError("killed")))
    remove_tmp_dir(t)  # "killed" before the final rmdir
    monkeypatch.undo()
    assert order[-1] == TMP_MARKER and "b.json" in order
    empty = pathlib.Path(tempfile.mkdtemp(dir=target.parent, prefix=".hls4ml.", suffix=".tmp"))
    user = pathlib.Path(tempfile.mkdtemp(dir=target.parent, prefix=".hls4ml.", suffix=".tmp"))
    (user / "mine.txt").write_text("keep")
    assert set(stale_tmp_dirs(target)) == {t, empty}
    for s in stale_tmp_dirs(target):
        remove_tmp_dir(s)
    assert not t.exists() and not empty.exists() and (user / "mine.txt").read_text() == "keep"
