"""The one batch runner (MedAILib.cli.batch) and the one event protocol (MedAILib.core.events), without a
model: cases and their names, exit statuses 0/2/3/130, the report on every path out, the lock, the
events a reader sees, and the Slicer-side parser (MedAISlicerLib.process) reading the same names."""

import argparse
import contextlib
import io
import json
import signal
from pathlib import Path

import pytest

from MedAILib.cli import batch
from MedAILib.core import events
from MedAILib.core.errors import InputError, OutputError


def _args(**kw):
    base = dict(progress="json", overwrite=False, resume=False, report=None, device="cpu")
    return argparse.Namespace(**{**base, **kw})


def _run(tmp_path, inputs, work, **kw):
    """A fake command: one output ``<case>.out`` per case in tmp_path/out, written by ``work``."""
    out = tmp_path / "out"

    def body(b):
        cases = batch.find_cases(inputs, output_folders=[out], output_suffixes=[".out.nii"])
        b.plan(cases, lambda case: {"output": out / f"{case.name}.out.nii"})
        return b.process(lambda case, progress: work(case, progress))

    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        rc = batch.Batch(_args(**kw), "fake").execute(body)
    return rc, [events.parse_line(l) for l in stdout.getvalue().splitlines()], stderr.getvalue()


def _inputs(folder, names):
    folder.mkdir(exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"image " + n.encode())
    return folder


def _write(case, progress):
    progress.update(0.5, "half way")
    case.outputs["output"].parent.mkdir(exist_ok=True)
    case.outputs["output"].write_text(case.name)
    return {"device": "cpu"}


def test_names_are_distinct_and_the_same_on_every_run(tmp_path):
    folder = _inputs(tmp_path / "in", ["case.nii.gz", "case.nrrd", "case.mha", "other.nii"])
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    (tmp_path / "a" / "mr.nii.gz").write_bytes(b"x"), (tmp_path / "b" / "mr.nii.gz").write_bytes(b"y")
    names = [c.name for c in batch.find_cases([folder])]
    assert names == ["case_mha", "case_nii_gz", "case_nrrd", "other"]
    assert [c.name for c in batch.find_cases([folder])] == names
    assert [c.stem for c in batch.find_cases([folder])] == ["case", "case", "case", "other"]
    assert [c.name for c in batch.find_cases([tmp_path / "a" / "mr.nii.gz", tmp_path / "b" / "mr.nii.gz"])] \
        == ["a_mr", "b_mr"]
    assert batch.unique_names([Path("x/s.nii"), Path("y/s.nii"), Path("x/s_2.nii")])[2] == "s_2"
    assert len(set(batch.unique_names([Path("x/s.nii"), Path("x/s.nii"), Path("x/s_nii.nii")]))) == 3


def test_outputs_in_the_output_folder_and_hidden_files_are_never_inputs(tmp_path):
    folder = _inputs(tmp_path / "in", ["a.nii.gz", "b.nrrd", "a.seg.nrrd", ".a.partial-1234.seg.nrrd"])
    found = [c.inputs[0].name for c in batch.find_cases([folder], output_folders=[folder],
                                                        output_suffixes=[".seg.nrrd"])]
    assert found == ["a.nii.gz", "b.nrrd"]
    # elsewhere a .seg.nrrd is an input like any other (refusing label maps is the input checks' job)
    assert len(batch.find_cases([folder], output_folders=[tmp_path / "out"], output_suffixes=[".seg.nrrd"])) == 3
    only_outputs = _inputs(tmp_path / "done", ["a.seg.nrrd"])
    with pytest.raises(InputError, match="only outputs"):
        batch.find_cases([only_outputs], output_folders=[only_outputs], output_suffixes=[".seg.nrrd"])


def test_exit_status_events_and_report_for_ok_partial_and_nothing_done(tmp_path):
    folder = _inputs(tmp_path / "in", ["a.nii", "b.nii", "c.nii"])
    report = tmp_path / "r.json"
    rc, evs, err = _run(tmp_path, [folder], _write, report=str(report))
    assert rc == batch.EXIT_OK
    kinds = [e["event"] for e in evs]
    assert kinds[-1] == events.DONE
    assert evs[0]["event"] == events.PROGRESS and (evs[0]["command"], evs[0]["cases"]) == ("fake", 3)
    assert kinds.count(events.CASE_START) == kinds.count(events.CASE_DONE) == 3
    assert all(e["event"] in events.NAMES for e in evs)
    progress = [e for e in evs[1:] if e["event"] == events.PROGRESS]
    assert [e["case"] for e in progress] == ["a", "b", "c"]
    assert [round(e["fraction"], 2) for e in progress] == [0.17, 0.5, 0.83]  # each case is a third of the run
    done = [e for e in evs if e["event"] == events.CASE_DONE]
    assert [(e["index"], e["total"], e["status"]) for e in done] == [(1, 3, "ok"), (2, 3, "ok"), (3, 3, "ok")]
    assert json.loads(report.read_text())["status"] == events.COMPLETE

    def fail_b(case, progress):
        if case.name == "b":
            raise InputError(f"{case.name} is broken", "export it again")
        return _write(case, progress)

    rc, evs, err = _run(tmp_path, [folder], fail_b, overwrite=True, report=str(report))
    assert rc == batch.EXIT_PARTIAL
    failed = [e for e in evs if e["event"] == events.CASE_DONE and e["status"] == events.FAILED]
    assert failed[0]["error"] == "b is broken" and failed[0]["hint"] == "export it again"
    assert evs[-1]["failed"] == ["b"] and evs[-1]["status"] == events.PARTIAL
    rows = json.loads(report.read_text())
    assert rows["status"] == events.PARTIAL and [r["status"] for r in rows["cases"]] == ["ok", "failed", "ok"]

    def crash(case, progress):
        raise RuntimeError("boom")

    rc, evs, err = _run(tmp_path, [folder], crash, overwrite=True, progress="none")
    assert rc == batch.EXIT_ERROR and evs == []
    lines = [l for l in err.splitlines() if " failed: " in l]
    assert lines[0] == "medai: case 1/3 a failed: RuntimeError: boom" and len(lines) == 3


def test_human_lines_name_the_case_its_number_and_time_left(tmp_path):
    folder = _inputs(tmp_path / "in", ["a.nii", "b.nii", "c.nii"])
    rc, evs, err = _run(tmp_path, [folder], _write, progress="bar")
    assert rc == 0 and evs == []
    lines = err.splitlines()
    assert lines[0] == "medai: fake: 3 cases"
    assert lines[1].startswith("medai: case 1/3 a: done in ") and "s left" in lines[1]
    assert lines[3].startswith("medai: case 3/3 c: done in ") and "left" not in lines[3]
    assert lines[-1] == "medai: fake: 3 of 3 cases done"


def test_cancel_by_signal_exits_130_and_the_report_says_what_was_done(tmp_path):
    folder = _inputs(tmp_path / "in", ["a.nii", "b.nii", "c.nii"])
    report = tmp_path / "r.csv"

    def term_in_b(case, progress):
        if case.name == "b":
            signal.raise_signal(signal.SIGTERM)
        return _write(case, progress)

    rc, evs, err = _run(tmp_path, [folder], term_in_b, report=str(report))
    assert rc == batch.EXIT_CANCELLED
    assert evs[-1]["event"] == events.ERROR and evs[-1]["cancelled"] and "SIGTERM" in evs[-1]["message"]
    lines = report.read_text().splitlines()
    assert lines[0].startswith("case,inputs,status")
    assert [l.split(",")[2] for l in lines[1:]] == ["ok", "not run", "not run"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.out.nii"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored


def test_a_command_that_cannot_go_on_stops_and_its_report_says_why(tmp_path):
    folder = _inputs(tmp_path / "in", ["a.nii", "b.nii"])
    report = tmp_path / "r.json"

    def no_model(case, progress):
        raise batch.StopBatch(InputError("the model is not trusted", "use --trust"))

    with pytest.raises(InputError, match="not trusted"):
        _run(tmp_path, [folder], no_model, report=str(report))
    data = json.loads(report.read_text())
    assert data["status"] == events.NOTHING_DONE and "not trusted" in data["error"]
    assert [r["status"] for r in data["cases"]] == ["not run", "not run"]


def test_a_second_run_on_the_same_outputs_is_refused_while_the_first_holds_them(tmp_path):
    target = (tmp_path / "out").resolve()
    first = batch._Lock.acquire(target)
    try:
        with pytest.raises(OutputError, match="another medai run"):
            batch._Lock.acquire(target)
    finally:
        first.release()
    batch._Lock.acquire(target).release()  # free again once the first run ended


def test_argument_types_refuse_non_finite_numbers_and_unknown_devices():
    assert batch.number(low=0)("2.5") == 2.5
    for bad in ("nan", "inf", "-1", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            batch.number(low=0)(bad)
    assert batch.device_name("CUDA:1") == "cuda:1"
    with pytest.raises(argparse.ArgumentTypeError):
        batch.device_name("tpu")


def test_slicer_side_reads_the_same_vocabulary():
    from MedAISlicerLib.process import EngineProcess

    proc = EngineProcess(["true"])
    lines = [events.encode(events.PROGRESS, fraction=0.5, message="half", eta_s=1.0, case="a"),
             events.encode(events.CASE_DONE, case="a", index=1, total=2, status=events.SKIPPED, error=None),
             events.encode(events.CASE_DONE, case="b", index=2, total=2, status=events.FAILED,
                           error="b.nii is empty", hint="export it again"),
             events.encode(events.DONE, status=events.PARTIAL, outputs=["a.seg.nrrd"], failed=["b"], skipped=["a"]),
             "a plain log line", "{broken json"]
    seen = []
    proc.on_progress = lambda f, m, e: seen.append((f, m))
    for line in lines:
        proc._handle_line(line)
    assert seen == [(0.5, "half")]
    assert proc.result.outputs == ["a.seg.nrrd"] and proc.result.failed == ["b"]
    assert proc.result.error == {"message": "b failed: b.nii is empty", "hint": "export it again"}
    assert proc.result.log[-2:] == ["a plain log line", "{broken json"]
    with pytest.raises(ValueError, match="unknown event"):
        events.encode("case_error", message="x")
