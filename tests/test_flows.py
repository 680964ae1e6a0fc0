"""The flow registry (one contract, options from one dataclass per flow) and steps as data (one
loop, step records in the manifest, resume after the last completed step)."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from opq_hw.errors import OpqError
from opq_hw.flows import FLOWS, Flow, FlowOptions, cli_options, get_flow, option

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def test_registry_lists_flows_and_their_levels():
    import opq_hw.simulate as sim

    assert list(FLOWS) == ["hls4ml", "finn", "rtl"]
    assert dict(FLOWS["hls4ml"].levels) == {"csim": "opq_hw.flows.hls4ml_flow:simulate_csim"}
    assert dict(FLOWS["rtl"].levels) == {"rtl": "opq_hw.flows.rtl_flow:simulate_rtl"}
    assert dict(FLOWS["finn"].levels) == {}
    # simulate's levels: qonnx, then exactly the flows' levels
    assert sim.LEVELS == {"qonnx": "opq_hw.simulate:_run_qonnx", "csim": FLOWS["hls4ml"].levels["csim"],
                          "rtl": FLOWS["rtl"].levels["rtl"]}
    for f in FLOWS.values():
        assert issubclass(f.options, FlowOptions) and f.options()  # the defaults are valid options
        for ref in f.levels.values():
            mod, fn = ref.split(":")
            assert mod == f.module  # a flow's levels live in its module
    with pytest.raises(OpqError, match=r"unknown flow 'magic'; choose one of \['finn', 'hls4ml', 'rtl'\]"):
        get_flow("magic")
    from opq_hw import boards, inspection

    assert set(boards.FLOWS) == set(FLOWS) and inspection.FLOWS == tuple(FLOWS)  # the boards' vocabulary


def test_registry_imports_no_flow_module():
    """`import opq_hw`, the registry and the CLI parser (`--help`) load no flow module and no heavy library."""
    code = ("import sys, opq_hw, opq_hw.flows, opq_hw.simulate, opq_hw.report; from opq_hw.cli import parser; "
            "parser().format_help(); "
            "bad = [m for m in sys.modules if m.startswith(('opq_hw.flows.', 'hls4ml', 'finn', 'torch', 'brevitas'))]; "
            "print(bad); sys.exit(1 if bad else 0)")
    p = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr


def _build_help() -> str:
    from opq_hw.cli import parser

    sub = next(a for a in parser()._actions if a.dest == "cmd")
    return sub.choices["build"].format_help()


def test_build_flags_help_and_errors_come_from_the_options_dataclasses(monkeypatch):
    flat = " ".join(_build_help().split())
    for fl in FLOWS.values():
        for f in dataclasses.fields(fl.options):
            flag = f.metadata["flag"]
            if flag:  # every flagged option is on the CLI with its own help, under its flow's name
                assert flag in flat and f"{fl.title}: {' '.join(f.metadata['help'].split())}" in flat, (fl.name, f.name)
    # a flow's unknown option: the error lists the dataclass' fields
    with pytest.raises(OpqError) as e:
        FLOWS["hls4ml"].parse_options({"freq": 100.0})
    assert str(e.value) == ("options ['freq'] do not apply to the hls4ml flow; its options are "
                            + ", ".join(f.name for f in dataclasses.fields(FLOWS["hls4ml"].options)))
    with pytest.raises(OpqError, match=r"^--data applies to --flow rtl \(its own Verilator check\); the finn build"):
        FLOWS["finn"].parse_options({"data": "digits"})
    with pytest.raises(OpqError, match="positive number of frames"):
        FLOWS["finn"].parse_options({"target_fps": -1.0})
    assert FLOWS["rtl"].parse_options({"sim": None, "freq": 90.0}).sim is True  # None: not given

    # a new flow's option appears in --help and in the errors without any other edit
    @dataclasses.dataclass(frozen=True)
    class FakeOptions(FlowOptions):
        gizmo: int = option(3, flag="--gizmo", argtype=lambda: int, help="how many gizmos, the fake flow's own option")

    monkeypatch.setitem(FLOWS, "fake", Flow("fake", "fake", "tests_fake_flow", FakeOptions, "a flow for tests"))
    assert "fake: how many gizmos" in " ".join(_build_help().split())
    assert cli_options()["--gizmo"]["dest"] == "gizmo"
    with pytest.raises(OpqError, match=r"options \['gizmo'\] do not apply to the rtl flow"):
        FLOWS["rtl"].parse_options({"gizmo": 5})
    assert FLOWS["fake"].parse_options({"gizmo": 5}).gizmo == 5


def test_cli_build_option_of_another_flow_exits_2(tmp_path, capsys):
    from opq_hw.cli import main

    assert main(["build", str(tmp_path), "--flow", "hls4ml", "--board", "pynq-z2", "--no-pnr"]) == 2
    err = capsys.readouterr().err
    assert "options ['pnr'] do not apply to the hls4ml flow" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------------
# steps
# ------------------------------------------------------------------------------------------------
def test_run_steps_times_and_records_each_step():
    from types import SimpleNamespace

    from opq_hw.steps import Step, run_steps, timings

    seen = []
    steps = [Step("a", lambda c: seen.append("a")), Step("b", lambda c: "skipped"),
             Step("c", lambda c: seen.append("c"), when=lambda c: False), Step("d", lambda c: seen.append("d"))]
    recs = run_steps(steps, SimpleNamespace(state={}), announce=lambda s: seen.append("start " + s.name))
    assert seen == ["start a", "a", "start b", "start d", "d"]
    assert [(r["name"], r["status"]) for r in recs] == [("a", "done"), ("b", "skipped"), ("c", "skipped"), ("d", "done")]
    assert all(isinstance(r["seconds"], float) and r["seconds"] >= 0 for r in recs)
    assert list(timings(recs)) == ["a", "d"]
    with pytest.raises(ValueError, match="rerun must come first"):
        run_steps([Step("a", lambda c: None), Step("b", lambda c: None, rerun=True)], SimpleNamespace(state={}))


def _fake_run(path: Path) -> Path:
    """The least a run directory needs for a build directory: a manifest (no artifacts)."""
    path.mkdir(parents=True)
    (path / "manifest.json").write_text(json.dumps({"tool": "opq-hw", "schema": 2, "artifacts": {}, "config": {}}))
    return path


FAKE_BUILD = textwrap.dedent("""
    import json, os, signal, sys
    from pathlib import Path
    from types import SimpleNamespace
    from opq_hw.steps import Step, run_build

    run, kill_at, trace, key = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), sys.argv[4]

    def step(name, **kw):
        def fn(c):
            with open(trace, "a") as f:
                f.write(name + "\\n")
            (c.out / (name + ".txt")).write_text(name)
            c.state[name] = len(c.state)
            if name == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)  # as a crash or power cut: nothing cleans up
        return Step(name, fn, **kw)

    steps = [step("prepare", rerun=True), step("a", resumable=True), step("b", resumable=True),
             step("c", resumable=True), step("d")]
    c = SimpleNamespace(state={})
    run_build(run, "fake", steps, c, key=key, log=print,
              after=lambda c: (c.out / "state.json").write_text(json.dumps(c.state)))
""")


def _fake_build(tmp_path, run, kill_at, key) -> tuple[int, list[str], str]:
    script = tmp_path / "fake_build.py"
    script.write_text(FAKE_BUILD)
    trace = tmp_path / f"trace-{len(list(tmp_path.glob('trace-*')))}.txt"
    p = subprocess.run([sys.executable, str(script), str(run), kill_at, str(trace), key], env=_env(),
                       capture_output=True, text=True, timeout=120)
    return p.returncode, trace.read_text().split(), p.stdout + p.stderr


def test_a_killed_build_resumes_after_its_last_completed_step(tmp_path):
    from opq_hw.rundir import read_manifest, verify

    ref = _fake_run(tmp_path / "ref")
    rc, ran, _ = _fake_build(tmp_path, ref, "-", "k1")
    assert rc == 0 and ran == ["prepare", "a", "b", "c", "d"]
    want = json.loads((ref / "build" / "fake" / "state.json").read_text())
    assert [(r["name"], r["status"]) for r in read_manifest(ref)["steps"]["build/fake"]] == [
        (n, "done") for n in ("prepare", "a", "b", "c", "d")]

    run = _fake_run(tmp_path / "run")
    rc, ran, _ = _fake_build(tmp_path, run, "c", "k1")  # killed inside step c
    assert rc == -9 and ran == ["prepare", "a", "b", "c"] and not (run / "build" / "fake").exists()
    rc, ran, out = _fake_build(tmp_path, run, "-", "k1")  # the same build again: prepare re-runs, a and b resume
    assert rc == 0, out
    assert ran == ["prepare", "c", "d"] and "resuming the interrupted fake build" in out
    prj = run / "build" / "fake"
    assert json.loads((prj / "state.json").read_text()) == want  # as if never interrupted
    assert sorted(p.name for p in prj.iterdir()) == sorted(p.name for p in (ref / "build" / "fake").iterdir())
    assert [(r["name"], r["status"]) for r in read_manifest(run)["steps"]["build/fake"]] == [
        ("prepare", "done"), ("a", "resumed"), ("b", "resumed"), ("c", "done"), ("d", "done")]
    verify(run, [f"build/fake/{p.name}" for p in prj.iterdir()])  # every file recorded; no journal left
    assert not list((run / "build").glob(".fake.*.tmp"))

    rc, ran, _ = _fake_build(tmp_path, run, "b", "k1")
    rc, ran, out = _fake_build(tmp_path, run, "-", "k2")  # other inputs (another key): nothing is reused
    assert rc == 0 and ran == ["prepare", "a", "b", "c", "d"] and "removed" in out


def test_a_journal_that_does_not_match_is_not_resumed(tmp_path):
    from opq_hw.steps import JOURNAL, read_journal

    (tmp_path / JOURNAL).write_text(json.dumps({"key": "k", "done": ["a"], "state": {}}))
    assert read_journal(tmp_path, "k")["done"] == ["a"]
    assert read_journal(tmp_path, "other") is None
    for bad in ("[]", "{", json.dumps({"key": "k", "done": "a", "state": {}}),
                json.dumps({"key": "k", "done": [1], "state": {}}), json.dumps({"key": "k", "done": [], "state": []})):
        (tmp_path / JOURNAL).write_text(bad)
        assert read_journal(tmp_path, "k") is None


def test_compress_steps_in_the_manifest_and_old_manifests_still_read(mlp_run, tmp_path):
    from opq_hw.pipeline import COMPRESS_STEPS
    from opq_hw.rundir import read_manifest
    from opq_hw.steps import record_steps

    man = read_manifest(mlp_run)
    recs = man["steps"]["compress"]
    assert [r["name"] for r in recs] == [s.name for s in COMPRESS_STEPS]
    assert all(r["status"] == "done" and r["seconds"] >= 0 for r in recs)
    assert man["timings_s"] == {r["name"]: r["seconds"] for r in recs}
    # a manifest written before steps were recorded (or with a garbled entry) still reads and takes new records
    run = _fake_run(tmp_path / "old")
    assert "steps" not in read_manifest(run)
    m = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**m, "steps": "garbage"}))
    read_manifest(run)
    record_steps(run, "build/x", [{"name": "a", "seconds": 0.1, "status": "done"}])
    assert read_manifest(run)["steps"] == {"build/x": [{"name": "a", "seconds": 0.1, "status": "done"}]}


def test_rtl_build_steps_recorded(mlp_run, copy_run):
    from opq_hw.flows import rtl_flow
    from opq_hw.rundir import read_manifest

    run = copy_run(mlp_run)
    s = rtl_flow.build(run, board="ecp5-85f", sim=False, synth=False, log=None)
    assert [(r["name"], r["status"]) for r in read_manifest(run)["steps"]["build/rtl"]] == [
        ("intnet", "done"), ("rtl", "done")]
    assert set(s["seconds"]) == {"intnet", "rtl", "total"}
    assert [st.name for st in rtl_flow.build_steps(FLOWS["rtl"].options(), "ecp5")] == [
        "intnet", "rtl", "verilator", "simulate", "synth", "pnr"]
    assert [st.name for st in rtl_flow.build_steps(FLOWS["rtl"].options(pnr=False), "ecp5")][-1] == "synth"
    assert "pnr" not in [st.name for st in rtl_flow.build_steps(FLOWS["rtl"].options(), "xc7")]
