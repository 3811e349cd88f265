"""Faults (issue 9, item 2): a killed, signalled or crashed engine and a full disk never leave a file
that looks complete, and the Slicer Logic (stand-in) is usable again afterwards.

The real ``medai segment`` runs in a subprocess with a tiny random-weight bundle. A few lines of
wrapper code (``WRAPPER``) slow down or break one step so that a signal can land exactly there:
``slow_infer`` (inside inference), ``slow_write`` (the output is fully written under its temporary
name, not yet renamed), ``crash`` (the inferer raises). Everything else is the shipped code.

Covered elsewhere, not repeated: out-of-memory fall-back (test_segment.py::test_oom_fallback_on_cpu),
Cancel from the Logic kills the process tree (test_slicer_segment_logic.py), interrupted/corrupted
downloads and corrupt cache refetch against 127.0.0.1 (test_downloads.py).
"""

import contextlib
import errno
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bundle_factory import make_bundle
from MedAILib.cli import main
from MedAILib.core.errors import OutputError
from MedAILib.io import read_segmentation, write_image, write_segmentation
from MedAILib.core.volume import LabelInfo, Volume

WRAPPER = r'''
import os, sys, time
from MedAILib.cli import main
mode = os.environ.get("FAULT_MODE", "")
def say(text):
    print(text, flush=True)
if mode in ("slow_infer", "crash"):
    import MedAILib.runtime.inferer as inference
    real = inference.run_inferer
    def patched(*a, **k):
        if mode == "crash":
            raise RuntimeError("simulated engine crash inside the inferer")
        say("FAULT: inferring")
        time.sleep(120)
        return real(*a, **k)
    inference.run_inferer = patched
if mode == "slow_write":
    import slicerio
    real_write = slicerio.write_segmentation
    def slow_write(path, *a, **k):
        real_write(path, *a, **k)
        say("FAULT: written, not renamed " + str(path))
        time.sleep(120)
    slicerio.write_segmentation = slow_write
args = sys.argv[1:]
bundle = os.environ.get("FAULT_BUNDLE")
if bundle and "--model" in args:  # the Logic passes a catalogue id: run the test bundle instead
    args[args.index("--model") + 1] = bundle
    args += ["--trust", bundle]
sys.exit(main(args))
'''


@pytest.fixture
def bundle(tmp_path):
    return make_bundle(tmp_path / "bundle")


@pytest.fixture
def image(tmp_path):
    rng = np.random.default_rng(3)
    path = tmp_path / "case.nii.gz"
    write_image(Volume(rng.normal(50, 10, (14, 16, 18)).astype(np.float32), np.eye(4)), path)
    return path


def _start(mode, args, env, tmp_path):
    env = dict(env, MEDAI_HOME=str(tmp_path / "home"), FAULT_MODE=mode, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-c", WRAPPER, *map(str, args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(proc, prefix, timeout=180):
    """Read stdout lines until one starts with ``prefix``; returns the lines read."""
    lines, t0 = [], time.monotonic()
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if line.startswith(prefix):
            return lines
        assert time.monotonic() - t0 < timeout, f"no {prefix!r} line within {timeout} s"
    raise AssertionError(f"the engine ended (rc {proc.wait()}) before {prefix!r}: {lines[-5:]}\n{proc.stderr.read()[-3000:]}")


def _medai(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in args])
    return subprocess.CompletedProcess(args, rc, out.getvalue(), err.getvalue())


# --- signals to `medai segment` ----------------------------------------------------------------------

def test_kill_term_int_leave_no_output_under_a_final_name(tmp_path, bundle, image, medai_env, monkeypatch):
    """Three engines at once (imports dominate their run time): SIGKILL while the output is written,
    SIGTERM during inference, SIGINT while the output is written."""
    common = ["segment", image, "--model", bundle, "--trust", bundle, "--progress", "json"]
    outs = {k: tmp_path / f"out_{k}" for k in ("kill", "term", "int")}
    procs = {
        "kill": _start("slow_write", common[:2] + ["-o", outs["kill"] / "case.seg.nrrd"] + common[2:], medai_env, tmp_path),
        "term": _start("slow_infer", common[:2] + ["-o", outs["term"] / "case.seg.nrrd"] + common[2:], medai_env, tmp_path),
        "int": _start("slow_write", common[:2] + ["-o", outs["int"] / "case.seg.nrrd"] + common[2:], medai_env, tmp_path),
    }
    try:
        lines = {}
        for key, marker, sig in (("kill", "FAULT: written", signal.SIGKILL), ("term", "FAULT: inferring", signal.SIGTERM),
                                 ("int", "FAULT: written", signal.SIGINT)):
            lines[key] = _wait_for(procs[key], marker)
            procs[key].send_signal(sig)
        results = {k: (p.wait(timeout=60), lines[k] + p.stdout.read().splitlines(), p.stderr.read())
                   for k, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
    # SIGKILL: nothing can clean up, but the only file is the hidden temporary one, never the final name
    rc, out, err = results["kill"]
    assert rc == -signal.SIGKILL
    left = sorted(p.name for p in outs["kill"].iterdir())
    assert "case.seg.nrrd" not in left and left and all(n.startswith(".case.partial-") for n in left), left
    assert all(n.startswith(".") for n in left)  # hidden: batch inputs and file browsers skip it
    from MedAILib.tasks.segmentation.command import collect_cases

    assert collect_cases([outs["kill"]], 1) == [("out_kill", [outs["kill"]])]  # not taken as an image
    # SIGTERM / SIGINT: cancelled, exit 130, nothing at all left (the atomic writer removed its temp file)
    for key in ("term", "int"):
        rc, out, err = results[key]
        assert rc == 130, (key, rc, err[-2000:])
        assert list(outs[key].iterdir()) == [] if outs[key].exists() else True, list(outs[key].iterdir())
        events = [json.loads(l) for l in out if l.startswith("{")]
        assert events[-1]["event"] == "error" and events[-1]["cancelled"], events[-1]
        assert "SIG" in events[-1]["message"] and "no partial output" in err and "Traceback" not in err
    # after the kill the same command works and is not blocked by the leftover temporary file
    monkeypatch.setenv("MEDAI_HOME", str(tmp_path / "home"))
    r = _medai("segment", image, "-o", outs["kill"] / "case.seg.nrrd", "--model", bundle, "--progress", "none")
    assert r.returncode == 0, r.stderr
    assert read_segmentation(outs["kill"] / "case.seg.nrrd").array.shape == (14, 16, 18)


# --- the Slicer Logic after a killed and a crashed engine ---------------------------------------------

def test_logic_reports_killed_and_crashed_engine_then_works_again(tmp_path, monkeypatch, bundle, data_dir):
    from slicer_support import real  # real MRML (slicer-core)

    monkeypatch.setenv("MEDAI_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("FAULT_BUNDLE", str(bundle))
    slicer = real.activate()
    try:
        import MedAISegment

        catalogue = tmp_path / "catalogue.json"
        labels = [{"value": 1, "name": "anterior", "color": [1, 0, 0]}, {"value": 2, "name": "posterior", "color": [0, 0, 1]}]
        catalogue.write_text(json.dumps({"version": 1, "models": [{
            "id": "fault_model", "title": "Fault test", "task": "segmentation", "version": "0.1",
            "inputs": [{"name": "image", "modality": "MR"}], "input_count": 1, "labels": labels,
            "spatial": {"spacing": [1, 1, 1], "orientation": "RAS"}, "source": {"location": "Models/none"},
            "sha256": "0" * 64, "size_bytes": 1000, "licence": "CC-BY-SA-4.0", "citation": "test",
            "memory_mb": 10, "verified": False}]}))
        volume = slicer.util.loadVolume(str(data_dir / "msd-hippocampus" / "imagesTr" / "hippocampus_001.nii.gz"))
        before = slicer.util.arrayFromVolume(volume).copy()
        logic = MedAISegment.MedAISegmentLogic()
        logic.enginePrefix = [sys.executable, "-c", WRAPPER]
        logs, finished = {"kill": [], "crash": []}, []

        def start(key, mode):
            monkeypatch.setenv("FAULT_MODE", mode)
            return logic.process([volume], None, "fault_model", catalogue=catalogue, device="cpu",
                                 logCallback=logs[key].append, completedCallback=finished.append)

        killed, crashed = start("kill", "slow_infer"), start("crash", "crash")  # both engines start together
        t0 = time.monotonic()
        while not any(l.startswith("FAULT: inferring") for l in logs["kill"]):
            assert time.monotonic() - t0 < 180 and killed.poll(), logs["kill"][-5:]
            crashed.poll()
            time.sleep(0.05)
        os.kill(killed.process._proc.pid, signal.SIGKILL)  # as the kernel's OOM killer would
        killed.wait(timeout=60)
        crashed.wait(timeout=180)
        assert killed.status == "failed" and "SIGKILL" in killed.errorText and "memory" in killed.errorText
        assert crashed.status == "failed" and "simulated engine crash" in crashed.errorText, crashed.errorText
        assert "Traceback" not in crashed.errorText
        assert sorted(map(id, finished)) == sorted([id(killed), id(crashed)])  # each reported once, via the callback
        assert not slicer.util.getNodesByClass("vtkMRMLSegmentationNode")
        assert list(Path(slicer.app.temporaryPath).glob("MedAISegment*")) == []
        # the module is usable again: the next run (no fault) fills a segmentation
        monkeypatch.setenv("FAULT_MODE", "")
        run = logic.process([volume], None, "fault_model", catalogue=catalogue, device="cpu", wait=True, timeout=180)
        assert run.status == "done" and run.outputSegmentation.GetSegmentation().GetNumberOfSegments() >= 1
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(volume), before)
        assert list(Path(slicer.app.temporaryPath).glob("MedAISegment*")) == []
    finally:
        real.reset()


# --- disk full -------------------------------------------------------------------------------------------

def _labelmap():
    rng = np.random.default_rng(0)
    arr = (rng.random((30, 30, 30)) * 3).astype(np.uint8)
    return Volume(arr, np.eye(4), labels=[LabelInfo(1, "a", (1, 0, 0)), LabelInfo(2, "b", (0, 1, 0))])


def test_disk_full_mid_write_leaves_nothing_and_says_what_to_do(tmp_path, monkeypatch, bundle, image):
    """The writer fills part of the file and then the disk is full (ENOSPC), as on a real full disk."""
    import slicerio

    real = slicerio.write_segmentation

    def full_disk(path, *a, **k):
        real(path, *a, **k)
        with open(path, "r+b") as f:  # the first half made it to disk, then the device ran out of space
            f.truncate(os.path.getsize(path) // 2)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    monkeypatch.setattr(slicerio, "write_segmentation", full_disk)
    with pytest.raises(OutputError) as e:
        write_segmentation(_labelmap(), tmp_path / "seg" / "x.seg.nrrd")
    assert "disk is full" in e.value.message and "free some space" in e.value.hint and "-o" in e.value.hint
    assert list((tmp_path / "seg").iterdir()) == []
    # through the CLI: one line, no traceback, the reason in the report, nothing under the output name
    monkeypatch.setenv("MEDAI_HOME", str(tmp_path / "home"))
    out = tmp_path / "out"
    r = _medai("segment", image, "-o", out / "case.seg.nrrd", "--model", bundle, "--trust", bundle,
               "--progress", "none", "--report", tmp_path / "report.json")
    assert r.returncode == 2 and "disk is full" in r.stderr and "free some space" in r.stderr
    assert "Traceback" not in r.stderr
    assert list(out.iterdir()) == [] if out.exists() else True
    row = json.loads((tmp_path / "report.json").read_text())["cases"][0]
    assert row["status"] == "failed" and "disk is full" in row["error"]


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 64 kB tmpfs (needs root and mount rights, e.g. a CI container); skipped otherwise."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tiny tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


@pytest.mark.parametrize("name", ["img.nii.gz", "img.nii", "img.nrrd", "img.mha", "seg.seg.nrrd", "seg.nii.gz"])
def test_real_full_disk_never_leaves_a_complete_looking_file(tiny_disk, name):
    """On a real full disk ITK's NIfTI writer only prints "NWAD: wrote only 0 of N bytes" and returns:
    without the completeness check in atomic_output a cut-off file got the final name."""
    rng = np.random.default_rng(1)
    volume = Volume(rng.normal(size=(40, 40, 40)).astype(np.float32), np.eye(4))
    with pytest.raises(OutputError, match="disk is full"):
        if name.startswith("seg"):
            labels = (rng.random((60, 60, 60)) * 250).astype(np.uint8)
            write_segmentation(Volume(labels, np.eye(4), labels=[LabelInfo(1, "a", (1, 0, 0))]), tiny_disk / name)
        else:
            write_image(volume, tiny_disk / name)
    assert list(tiny_disk.iterdir()) == []
    small = Volume(np.ones((4, 4, 4), np.float32), np.eye(4))  # what fits is still written normally
    write_image(small, tiny_disk / "small.nii.gz")
    assert (tiny_disk / "small.nii.gz").exists()
