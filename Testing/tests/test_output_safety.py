"""Never lose a user's work (issue 14, data-loss family): each example of the issue, through the real
`medai` commands with a tiny random-weight bundle. Every test here failed before the one batch runner
(MedAILib.cli.batch): the input or an unrelated file was replaced, outputs were taken as inputs, results
shared one name, two runs both claimed one output, a killed batch could not be resumed, a cancelled one
left a stale report, or a bad argument was found only after reading the inputs.
"""

import contextlib
import hashlib
import io
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from bundle_factory import make_bundle
from MedAILib.cli import main
from MedAILib.core.atomic import atomic_output
from MedAILib.core.errors import OutputError
from MedAILib.core.volume import Volume
from MedAILib.io import read_segmentation, write_image
from test_faults import _wait_for

WRAPPER = r'''
import os, sys, time
from MedAILib.cli import main
mode, calls = os.environ["FAULT_MODE"], []
if mode == "stall_second_write":  # the 2nd case is fully written under its temporary name, not renamed
    import slicerio
    real_write = slicerio.write_segmentation
    def write(path, *a, **k):
        real_write(path, *a, **k)
        calls.append(path)
        if len(calls) == 2:
            print("FAULT: second written, not renamed", flush=True)
            time.sleep(120)
    slicerio.write_segmentation = write
if mode == "stall_infer":
    import MedAILib.runtime.inferer as inferer
    real_infer = inferer.run_inferer
    def infer(*a, **k):
        print("FAULT: inferring", flush=True)
        time.sleep(float(os.environ.get("FAULT_SLEEP", "120")))
        return real_infer(*a, **k)
    inferer.run_inferer = infer
sys.exit(main(sys.argv[1:]))
'''


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDAI_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture
def bundle(tmp_path):
    return make_bundle(tmp_path / "bundle")


def medai(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in args])
    return subprocess.CompletedProcess(args, rc, out.getvalue(), err.getvalue())


def segment(bundle, *args):
    return medai("segment", *args, "--model", bundle, "--trust", bundle, "--progress", "none")


def image(path, seed=0, shape=(14, 16, 18)):
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(Volume(rng.normal(50, 10, shape).astype(np.float32), np.eye(4)), path)
    return path


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(folder):
    return {p.name: digest(p) for p in sorted(folder.iterdir()) if p.is_file()}


# --- outputs and reports never replace inputs or existing files ---------------------------------------

def test_report_or_output_that_is_an_input_is_refused_and_the_input_kept(tmp_path, home, bundle):
    scan = image(tmp_path / "scan.nrrd")
    before = digest(scan)
    r = segment(bundle, scan, "-o", tmp_path / "o.seg.nrrd", "--report", scan)
    assert r.returncode == 2 and "is an input of this run" in r.stderr and "--report" in r.stderr, r.stderr
    assert digest(scan) == before and not (tmp_path / "o.seg.nrrd").exists()
    nii = image(tmp_path / "scan.nii.gz")
    before = digest(nii)
    r = segment(bundle, nii, "-o", nii, "--format", "nii.gz", "--overwrite")  # even --overwrite never replaces an input
    assert r.returncode == 2 and "is an input of this run" in r.stderr, r.stderr
    assert digest(nii) == before
    link = tmp_path / "link.nii.gz"
    link.symlink_to(nii)
    r = segment(bundle, nii, "-o", tmp_path / "x.seg.nrrd", "--report", link.with_suffix("").with_suffix(".csv"))
    assert r.returncode == 0, r.stderr  # a report next to the input is fine
    r = segment(bundle, link, "-o", tmp_path / "y.seg.nrrd", "--report", nii, "--overwrite")
    assert r.returncode == 2 and "is an input" in r.stderr and digest(nii) == before  # through a symbolic link too


def test_an_existing_report_is_never_replaced_without_overwrite(tmp_path, home, bundle):
    scan = image(tmp_path / "scan.nii.gz")
    notes = tmp_path / "notes.json"
    notes.write_text('{"my": "own notes"}')
    for extra in ([], ["--resume"]):  # --resume rewrites only a report medai wrote
        r = segment(bundle, scan, "-o", tmp_path / "o.seg.nrrd", "--report", notes, *extra)
        assert r.returncode == 2 and f"{notes} already exists" in r.stderr, r.stderr
        assert notes.read_text() == '{"my": "own notes"}' and not (tmp_path / "o.seg.nrrd").exists()
    r = segment(bundle, scan, "-o", tmp_path / "o.seg.nrrd", "--report", notes, "--overwrite")
    assert r.returncode == 0 and json.loads(notes.read_text())["status"] == "complete"


def test_outputs_of_an_earlier_run_in_the_input_folder_are_not_taken_as_inputs(tmp_path, home, bundle):
    folder = tmp_path / "cases"
    image(folder / "a.nii.gz", 1), image(folder / "b.nrrd", 2)
    r = segment(bundle, folder, "-o", folder, "--report", tmp_path / "r1.json")
    assert r.returncode == 0, r.stderr
    first = {n: read_segmentation(folder / f"{n}.seg.nrrd").array.copy() for n in ("a", "b")}
    r = segment(bundle, folder, "-o", folder, "--overwrite", "--report", tmp_path / "r2.json")
    assert r.returncode == 0, r.stderr
    rows = json.loads((tmp_path / "r2.json").read_text())["cases"]
    assert [(row["case"], [os.path.basename(i) for i in row["inputs"]]) for row in rows] == \
        [("a", ["a.nii.gz"]), ("b", ["b.nrrd"])]  # the two images, not their segmentations
    assert sorted(p.name for p in folder.iterdir()) == ["a.nii.gz", "a.seg.nrrd", "b.nrrd", "b.seg.nrrd"]
    for n in ("a", "b"):  # the same segmentations again, not segmentations of segmentations
        np.testing.assert_array_equal(read_segmentation(folder / f"{n}.seg.nrrd").array, first[n])


def test_inputs_sharing_a_name_get_distinct_outputs(tmp_path, home, bundle):
    folder = tmp_path / "cases"
    for n, name in enumerate(("case.nii.gz", "case.nrrd", "case.mha")):
        image(folder / name, n)
    r = segment(bundle, folder, "-o", tmp_path / "out", "--overwrite")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == \
        ["case_mha.seg.nrrd", "case_nii_gz.seg.nrrd", "case_nrrd.seg.nrrd"]


def test_register_refuses_an_existing_output_folder_and_a_file_as_folder(tmp_path, home):
    fixed, moving = image(tmp_path / "fixed.nii.gz", 1, (20, 20, 20)), image(tmp_path / "moving.nii.gz", 2, (20, 20, 20))
    out = tmp_path / "out"
    out.mkdir()
    (out / "transform.tfm").write_text("earlier result")
    (out / "report.json").write_text("{}")
    r = medai("register", fixed, moving, "-o", out, "--iterations", "5")
    assert r.returncode == 2 and "2 outputs already exist" in r.stderr and "--overwrite" in r.stderr, r.stderr
    assert (out / "transform.tfm").read_text() == "earlier result" and (out / "report.json").read_text() == "{}"
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "transform.tfm"]
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    r = medai("register", fixed, moving, "-o", a_file)
    assert r.returncode == 2 and f"{a_file} is a file, not a folder" in r.stderr, r.stderr
    assert "internal error" not in r.stderr and "Traceback" not in r.stderr and a_file.read_text() == "not a folder"


def test_a_file_that_appears_while_an_output_is_written_is_not_replaced(tmp_path):
    import gzip

    target = tmp_path / "result.nii.gz"
    with pytest.raises(OutputError, match="created by another program"):
        with atomic_output(target) as tmp:
            tmp.write_bytes(gzip.compress(b"ours"))
            target.write_text("the other run's result")  # e.g. a second medai run finished first
    assert target.read_text() == "the other run's result"
    assert [p.name for p in tmp_path.iterdir()] == ["result.nii.gz"]  # no temporary file left


# --- argument checks come before anything is read or loaded --------------------------------------------

def test_bad_arguments_are_refused_before_any_input_is_read_or_model_loaded(tmp_path, home, bundle, monkeypatch):
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(b"\x1f\x8b not an image")
    import MedAILib.models as models

    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(models, "resolve_model", no_load)
    r = medai("segment", corrupt, "-o", tmp_path / "o.seg.nrrd", "--model", "hippocampus_unet",
              "--structures", "anterior,nope", "--progress", "none")
    assert r.returncode == 2 and "has no structure(s) nope" in r.stderr and "corrupt" not in r.stderr, r.stderr
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    r = medai("segment", corrupt, "-o", a_file / "o.seg.nrrd", "--model", "hippocampus_unet", "--progress", "none")
    assert r.returncode == 2 and "is a file, not a folder" in r.stderr and "corrupt" not in r.stderr, r.stderr
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        r = medai("segment", corrupt, "-o", locked / "o.seg.nrrd", "--model", "hippocampus_unet", "--progress", "none")
        assert r.returncode == 2 and "no permission to write" in r.stderr, r.stderr
    for bad in ("nan", "inf", "-1"):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as stop:
            main(["segment", str(corrupt), "-o", str(tmp_path / "o.seg.nrrd"), "--min-island-mm3", bad])
        assert stop.value.code == 2 and "--min-island-mm3" in err.getvalue()
    assert not (tmp_path / "o.seg.nrrd").exists()


# --- kill, resume, cancel, concurrent runs (real processes) --------------------------------------------

def _start(mode, args, env, tmp_path, **extra):
    env = dict(env, MEDAI_HOME=str(tmp_path / "home"), FAULT_MODE=mode, OMP_NUM_THREADS="1", **extra)
    return subprocess.Popen([sys.executable, "-c", WRAPPER, *map(str, args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_killed_batch_resumes_cancelled_batch_reports_and_concurrent_run_is_refused(tmp_path, bundle, medai_env,
                                                                                 monkeypatch):
    """Three engines at once (their imports dominate): SIGKILL while case 2 of 3 is written, SIGTERM
    during inference with a stale report in place, and a run holding an output a second run asks for."""
    cases = tmp_path / "cases"
    for n in range(3):
        image(cases / f"case{n}.nii.gz", n)
    inputs = snapshot(cases)
    common = ["--model", bundle, "--trust", bundle, "--progress", "json"]
    kill_out, kill_report = tmp_path / "kill_out", tmp_path / "kill_report.json"
    term_out, term_report = tmp_path / "term_out", tmp_path / "term_report.json"
    term_report.write_text(json.dumps({"cases": [{"case": "case0", "status": "ok"}]}))  # from an earlier run
    held = tmp_path / "held" / "one.seg.nrrd"
    procs = {
        "kill": _start("stall_second_write", ["segment", cases, "-o", kill_out, "--report", kill_report, *common],
                       medai_env, tmp_path),
        "term": _start("stall_infer", ["segment", cases, "-o", term_out, "--report", term_report, "--overwrite",
                                       *common], medai_env, tmp_path),
        "hold": _start("stall_infer", ["segment", cases / "case0.nii.gz", "-o", held, *common], medai_env, tmp_path,
                       FAULT_SLEEP="6"),
    }
    monkeypatch.setenv("MEDAI_HOME", str(tmp_path / "home"))
    try:
        _wait_for(procs["hold"], "FAULT: inferring")
        # a second run asking for the output the first one is writing fails at once and clearly
        second = segment(bundle, cases / "case1.nii.gz", "-o", held)
        first_rc = procs["hold"].wait(timeout=120)
        _wait_for(procs["kill"], "FAULT: second written")
        procs["kill"].send_signal(signal.SIGKILL)
        _wait_for(procs["term"], "FAULT: inferring")
        procs["term"].send_signal(signal.SIGTERM)
        results = {k: (p.wait(timeout=120), p.stdout.read(), p.stderr.read()) for k, p in procs.items()
                   if k != "hold"}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
    assert second.returncode == 2 and "another medai run" in second.stderr, second.stderr
    assert first_rc == 0 and read_segmentation(held).array.shape == (14, 16, 18)

    # SIGKILL: case0 complete, case1 only as a hidden temporary, the report says the run never ended
    assert results["kill"][0] == -signal.SIGKILL
    left = sorted(p.name for p in kill_out.iterdir())
    assert left[0].startswith(".case1.partial-") and left[1:] == ["case0.seg.nrrd"], left
    report = json.loads(kill_report.read_text())
    assert report["status"] == "running" and [r["status"] for r in report["cases"]] == ["ok", "pending", "pending"]
    done_before = digest(kill_out / "case0.seg.nrrd")
    # a plain rerun neither fails the finished case nor replaces it: it says how to go on
    r = segment(bundle, cases, "-o", kill_out, "--report", kill_report)
    assert r.returncode == 2 and "2 outputs already exist" in r.stderr and "case0.seg.nrrd" in r.stderr, r.stderr
    assert "--resume" in r.stderr and "nothing was replaced" in r.stderr
    r = medai("segment", cases, "-o", kill_out, "--report", kill_report, "--resume", *common)
    assert r.returncode == 0, r.stderr
    done = [json.loads(l) for l in r.stdout.splitlines() if '"case_done"' in l]
    assert [(e["case"], e["status"]) for e in done] == [("case0", "skipped"), ("case1", "ok"), ("case2", "ok")]
    report = json.loads(kill_report.read_text())
    assert report["status"] == "complete" and [r_["status"] for r_ in report["cases"]] == ["skipped", "ok", "ok"]
    assert digest(kill_out / "case0.seg.nrrd") == done_before
    assert sorted(p.name for p in kill_out.iterdir() if not p.name.startswith(".")) == \
        ["case0.seg.nrrd", "case1.seg.nrrd", "case2.seg.nrrd"]

    # SIGTERM: exit 130, no output, and the stale report was replaced by one that says "cancelled"
    rc, out, err = results["term"]
    assert rc == 130, err[-2000:]
    assert "no partial output" in err and "Traceback" not in err
    report = json.loads(term_report.read_text())
    assert report["status"] == "cancelled" and "SIGTERM" in report["error"]
    assert [r["status"] for r in report["cases"]] == ["not run"] * 3
    assert not term_out.exists() or list(term_out.iterdir()) == []
    assert snapshot(cases) == inputs  # inputs untouched throughout
