"""The Slicer side of the warm engine (MedAISlicerLib.engine_client) through the MedAISegment Logic:
clicks go to one warm `medai serve` (results identical to the one-shot process), a dead engine is
restarted and the log says so, an engine dying mid-click fails that click clearly, Cancel stops the
job and the engine stays, and "Run on: server URL + token" gives the same result."""

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from serve_support import HIPPO, HttpServer, big_volume, big_volume_flags, engine_env

CASE = "hippocampus_003"


@pytest.fixture
def run_on(slicer):
    """Set engine_client.settings for a test; stop the warm engine and restore the settings after."""
    from MedAISlicerLib import engine_client

    saved = (engine_client.settings.runOn, engine_client.settings.tokenFile)

    def set_(where, token_file=None):
        engine_client.settings.runOn, engine_client.settings.tokenFile = where, token_file

    yield set_
    engine_client.shutdown_warm_engine()
    engine_client.settings.runOn, engine_client.settings.tokenFile = saved


def _logic():
    import MedAISegment

    return MedAISegment.MedAISegmentLogic()


def _segments(slicer, run, volume) -> dict:
    seg = run.outputSegmentation
    s = seg.GetSegmentation()
    out = {}
    for i in range(s.GetNumberOfSegments()):
        sid = s.GetNthSegmentID(i)
        out[s.GetSegment(sid).GetName()] = np.asarray(slicer.util.arrayFromSegmentBinaryLabelmap(seg, sid, volume)) > 0
    return out


def _temp_left(slicer):
    return list(Path(slicer.app.temporaryPath).glob("MedAISegment*"))


def _click(slicer, volume, **kw):
    return _logic().process([volume], None, HIPPO, device="cpu", **kw)


def test_warm_clicks_reuse_one_engine_and_match_the_one_shot_process(slicer, run_on, data_dir):
    from MedAISlicerLib import engine_client

    volume = slicer.util.loadVolume(str(data_dir / "msd-hippocampus" / "imagesTr" / f"{CASE}.nii.gz"))
    run_on("oneshot")
    reference = _segments(slicer, _click(slicer, volume, wait=True, timeout=300), volume)
    run_on("warm")
    logs = []
    first = _click(slicer, volume, logCallback=logs.append)
    assert first.poll(), "the click must return while the engine starts"
    first.wait(timeout=300)
    second = _click(slicer, volume, wait=True, timeout=300)
    assert first.status == second.status == "done", first.errorText + second.errorText
    assert isinstance(first.process, engine_client.WarmJob) and isinstance(second.process, engine_client.WarmJob)
    engine = engine_client._engine
    assert engine is not None and engine.alive and engine.starts == 1  # one engine served both clicks
    for run in (first, second):
        got = _segments(slicer, run, volume)
        assert sorted(got) == sorted(reference)
        for name in reference:
            np.testing.assert_array_equal(got[name], reference[name])
    assert _temp_left(slicer) == []


def test_a_dead_engine_is_restarted_by_the_next_click_which_says_so(slicer, run_on, data_dir):
    from MedAISlicerLib import engine_client

    run_on("warm")
    volume = slicer.util.loadVolume(str(data_dir / "msd-hippocampus" / "imagesTr" / f"{CASE}.nii.gz"))
    assert _click(slicer, volume, wait=True, timeout=300).status == "done"
    old = engine_client._engine.proc
    os.kill(old.pid, signal.SIGKILL)
    old.wait(timeout=30)
    logs = []
    run = _click(slicer, volume, wait=True, timeout=300, logCallback=logs.append)
    assert run.status == "done", run.errorText
    assert engine_client._engine.proc.pid != old.pid and engine_client._engine.starts == 2
    assert any("had stopped" in l and "SIGKILL" in l and "new one was started" in l for l in logs), logs


def test_engine_dying_mid_click_fails_that_click_clearly_and_cancel_keeps_the_engine(slicer, run_on, data_dir,
                                                                                    tmp_path, monkeypatch):
    from MedAISlicerLib import engine_client

    run_on("warm")
    from MedAISlicerLib.tasks.segmentation import SegmentationRun

    arguments = SegmentationRun._arguments
    monkeypatch.setattr(SegmentationRun, "_arguments",  # the tiled volume is far from the training crops
                        lambda self: (lambda a: (a[0] + big_volume_flags(), a[1]))(arguments(self)))
    big = slicer.util.loadVolume(str(big_volume(data_dir, tmp_path)))
    small = slicer.util.loadVolume(str(data_dir / "msd-hippocampus" / "imagesTr" / f"{CASE}.nii.gz"))

    def started(run):
        progress = []
        run.progressCallback = lambda f, m, e: progress.append(m)
        t0 = time.monotonic()
        while run.poll():
            if any("window batch 2/" in m for m in progress):
                return
            assert time.monotonic() - t0 < 300, progress[-3:]
            time.sleep(0.05)
        raise AssertionError(f"the run ended before its second window batch: {run.status} {run.errorText} {progress[-3:]}")

    # Cancel: the job stops, nothing is left, the same engine serves the next click.
    finished = []
    run = _click(slicer, big, completedCallback=finished.append)
    started(run)
    pid = engine_client._engine.proc.pid
    run.cancel()
    assert run.status == "cancelled" and finished == [run]
    assert not slicer.util.getNodesByClass("vtkMRMLSegmentationNode") and _temp_left(slicer) == []
    assert _click(slicer, small, wait=True, timeout=300).status == "done"
    assert engine_client._engine.proc.pid == pid
    # The engine killed while a click runs (as the OOM killer would): that click fails and says why.
    for node in slicer.util.getNodesByClass("vtkMRMLSegmentationNode"):
        slicer.mrmlScene.RemoveNode(node)
    run = _click(slicer, big)
    started(run)
    os.kill(engine_client._engine.proc.pid, signal.SIGKILL)
    run.wait(timeout=120)
    assert run.status == "failed" and "SIGKILL" in run.errorText, run.errorText
    assert not slicer.util.getNodesByClass("vtkMRMLSegmentationNode") and _temp_left(slicer) == []
    assert _click(slicer, small, wait=True, timeout=300).status == "done"


def test_run_on_a_server_gives_the_one_shot_result(slicer, run_on, data_dir, tmp_path):
    volume = slicer.util.loadVolume(str(data_dir / "msd-hippocampus" / "imagesTr" / f"{CASE}.nii.gz"))
    run_on("oneshot")
    reference = _segments(slicer, _click(slicer, volume, wait=True, timeout=300), volume)
    server = HttpServer(engine_env(tmp_path / "server-home"), tmp_path / "server")
    try:
        run_on(server.url, str(server.token_file))
        run = _click(slicer, volume, wait=True, timeout=300)
        assert run.status == "done", run.errorText
        got = _segments(slicer, run, volume)
        assert sorted(got) == sorted(reference)
        for name in reference:
            np.testing.assert_array_equal(got[name], reference[name])
        assert _temp_left(slicer) == []
        # a wrong token: the click fails with the server's message, nothing is created
        bad = tmp_path / "bad-token"
        bad.write_text("wrong\n")
        run_on(server.url, str(bad))
        n = len(slicer.util.getNodesByClass("vtkMRMLSegmentationNode"))
        run = _click(slicer, volume, wait=False)
        run.wait(timeout=120)
        assert run.status == "failed" and "refused the token" in run.errorText
        assert len(slicer.util.getNodesByClass("vtkMRMLSegmentationNode")) == n and _temp_left(slicer) == []
    finally:
        server.stop()
