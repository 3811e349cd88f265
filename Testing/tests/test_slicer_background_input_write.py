"""The Slicer Logic writes the engine's input in a worker thread (docs/performance.md, round 2):
``start()`` returns before the file is written, a cancel during the write leaves no process and no
temporary files, a failing write is reported, and the raw NRRD writer used there reads back exactly
as the SimpleITK writer's file does."""

import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from slicer_support.catalogue import fake_segmentation_entry


HERE = Path(__file__).resolve().parent
FAKE = HERE / "slicer_support" / "fake_engine.py"


@pytest.fixture
def catalogue(tmp_path):
    import json

    entry = fake_segmentation_entry("fake_hippo", [{"value": 1, "name": "Anterior", "color": [0.9, 0.2, 0.1]},
                                                   {"value": 2, "name": "Posterior", "color": [0.1, 0.4, 0.9]}])
    path = tmp_path / "catalogue.json"
    path.write_text(json.dumps({"version": 1, "models": [entry]}))
    return path


@pytest.fixture
def volume(slicer):
    from conftest import oblique_ijk_to_ras

    arr = np.random.default_rng(3).normal(100, 30, (14, 18, 16)).astype(np.int16)
    return slicer.util.addVolumeFromArray(arr, oblique_ijk_to_ras(), "mr")


def _leftovers(slicer):
    return list(Path(slicer.app.temporaryPath).glob("MedAISegment*"))


def _logic():
    import MedAISegment

    logic = MedAISegment.MedAISegmentLogic()
    logic.enginePrefix = [sys.executable, str(FAKE)]
    return logic


def _blocked_writer(monkeypatch, fail=False):
    """Make nodes.write_volume wait for an event (a slow CT write), then write (or fail)."""
    from MedAISlicerLib import nodes

    release, entered = threading.Event(), threading.Event()
    real = nodes.write_volume

    def slow(volume, folder, stem):
        entered.set()
        assert release.wait(30)
        if fail:
            raise OSError(28, "No space left on device")
        return real(volume, folder, stem)

    monkeypatch.setattr(nodes, "write_volume", slow)
    return release, entered


def test_start_returns_before_the_input_is_written_then_runs(slicer, volume, catalogue, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_MODE", "ok")
    monkeypatch.setenv("FAKE_STARTED", str(tmp_path / "started"))
    release, entered = _blocked_writer(monkeypatch)
    run = _logic().process([volume], None, "fake_hippo", catalogue=catalogue)
    assert run.status == "running" and entered.wait(10)
    time.sleep(0.5)
    assert run.poll() and not (tmp_path / "started").exists(), "the engine must not start before its input is written"
    release.set()
    run.wait(timeout=120)
    assert run.status == "done", run.errorText
    assert _leftovers(slicer) == []


def test_cancel_while_writing_never_starts_the_engine_and_leaves_no_temp(slicer, volume, catalogue, monkeypatch,
                                                                         tmp_path):
    monkeypatch.setenv("FAKE_MODE", "slow")
    monkeypatch.setenv("FAKE_PIDFILE", str(tmp_path / "child.pid"))
    monkeypatch.setenv("FAKE_STARTED", str(tmp_path / "started"))
    release, entered = _blocked_writer(monkeypatch)
    finished = []
    run = _logic().process([volume], None, "fake_hippo", catalogue=catalogue, completedCallback=finished.append)
    assert entered.wait(10)
    t0 = time.perf_counter()
    run.cancel()
    assert time.perf_counter() - t0 < 0.5, "cancel must not wait for the write"
    assert finished == [run] and run.status == "cancelled" and not run.poll()
    release.set()  # the write completes after the cancel (and re-creates files in the folder)
    run.wait(timeout=30)  # joins the writer, which removes what it wrote
    time.sleep(0.5)
    assert not (tmp_path / "started").exists() and not (tmp_path / "child.pid").exists(), \
        "the engine was started after cancel"
    assert _leftovers(slicer) == []
    assert not slicer.util.getNodesByClass("vtkMRMLSegmentationNode")


def test_failed_write_is_reported_and_cleaned_up(slicer, volume, catalogue, monkeypatch):
    monkeypatch.setenv("FAKE_MODE", "ok")
    release, _ = _blocked_writer(monkeypatch, fail=True)
    run = _logic().process([volume], None, "fake_hippo", catalogue=catalogue)
    release.set()
    run.wait(timeout=30)
    assert run.status == "failed" and "No space left" in run.errorText
    assert _leftovers(slicer) == []


SYNTH_ENGINE = """
import json, os, sys
from MedAILib.io import read_image, write_image
open(os.environ["FAKE_STARTED"], "w").close()
args = sys.argv[1:]
source, out = args[1], args[args.index("-o") + 1]
write_image(read_image(source), out)  # the "conversion" is a copy: the test checks the engine saw the input
print(json.dumps({"event": "done", "outputs": [out], "failed": []}), flush=True)
"""


def test_synthesis_start_returns_before_its_input_is_written_and_the_engine_gets_it(slicer, volume, monkeypatch,
                                                                                    tmp_path):
    from MedAISlicerLib.tasks.synthesis import SynthesisRun

    engine = tmp_path / "synth_engine.py"
    engine.write_text(SYNTH_ENGINE)
    monkeypatch.setenv("FAKE_STARTED", str(tmp_path / "started"))
    release, entered = _blocked_writer(monkeypatch)
    run = SynthesisRun(volume, device="cpu", enginePrefix=[sys.executable, str(engine)]).start()
    assert run.status == "running" and entered.wait(10)
    source = Path(run.tempDir) / "input.nrrd"
    assert not source.exists(), "start() must return before the input file is written"
    time.sleep(0.5)
    assert run.poll() and not (tmp_path / "started").exists(), "the engine must not start before its input is written"
    release.set()
    run.wait(timeout=120)
    assert run.status == "done", run.errorText
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(run.outputVolume),
                                  slicer.util.arrayFromVolume(volume))
    assert not Path(run.tempDir).exists()


def test_worker_writes_the_node_voxels_and_geometry(slicer, volume, tmp_path):
    from MedAILib.io import read_image
    from MedAISlicerLib import nodes

    path = nodes.write_volume(nodes.volume_view_from_node(volume), tmp_path, "input0")
    back, ref = read_image(path), nodes.volume_from_node(volume)
    np.testing.assert_array_equal(back.array, ref.array)
    np.testing.assert_allclose(back.ijk_to_ras, ref.ijk_to_ras, atol=1e-9)


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.uint16, np.int32, np.float32, np.float64, np.bool_])
def test_raw_nrrd_reads_back_as_the_simpleitk_file(tmp_path, dtype):
    from conftest import oblique_ijk_to_ras
    from MedAILib.io import read_image, write_image
    from MedAILib.io.images import write_raw_nrrd
    from MedAILib.core.volume import Volume

    arr = np.random.default_rng(5).normal(50, 40, (7, 9, 11)).astype(dtype)
    vol = Volume(arr, oblique_ijk_to_ras())
    raw = write_raw_nrrd(vol, tmp_path / "raw.nrrd")
    ref = write_image(vol, tmp_path / "ref.nrrd", compress=False)
    a, b = read_image(raw), read_image(ref)
    assert a.array.dtype == b.array.dtype
    np.testing.assert_array_equal(a.array, b.array)
    np.testing.assert_array_equal(a.array, arr.astype(a.array.dtype))
    np.testing.assert_array_equal(a.ijk_to_ras, b.ijk_to_ras)
    assert not list(tmp_path.glob(".*partial*"))
