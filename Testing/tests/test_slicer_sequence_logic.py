"""MedAISegmentLogic.processSequence on real MRML (slicer-core, Testing/slicer_real): a Sequence of
volumes -> `.seq.nrrd` -> `medai segment-sequence` process -> a Sequence of segmentations
synchronized with the input in its sequence browser (proxies made by Slicer's Sequences logic).

Run as a script, this file is a scripted stand-in for `medai segment-sequence` (same arguments and
JSON-lines protocol): it reads the 4D input with the engine's reader, reports progress per frame,
writes a label sequence that depends on each frame's voxels AND on the frame number (so a frame
mix-up shows), copies its output to FAKE_COPY so the test compares the imported segmentations
with the engine's own file, frame by frame. FAKE_MODE=slow keeps it busy for Cancel.
The real engine runs once too, with a random-weights bundle (Testing/tests/bundle_factory.py).
"""

import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
LABELS = [{"value": 1, "name": "Blood pool", "color": [0.9, 0.1, 0.1]},
          {"value": 2, "name": "Marker", "color": [0.1, 0.8, 0.2]}]
INDEX_VALUES = ["0", "37.5", "75", "112.5"]


def fake_labels(frame_array, t):
    """Label 1: voxels above the frame's mean; label 2: column i == t + 1 (frame-dependent)."""
    lab = np.zeros(frame_array.shape, np.uint8)
    lab[frame_array > frame_array.mean()] = 1
    lab[:, :, t + 1] = 2
    return lab


def fake_engine(argv) -> int:
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("command")
    p.add_argument("input")
    p.add_argument("-o", "--output")
    p.add_argument("--report")
    a, _ = p.parse_known_args(argv)
    assert a.command == "segment-sequence", a.command

    def emit(**fields):
        print(json.dumps(fields), flush=True)

    if os.environ.get("FAKE_STARTED"):
        Path(os.environ["FAKE_STARTED"]).write_text(str(os.getpid()))
    if os.environ.get("FAKE_MODE") == "slow":
        for i in range(1200):
            emit(event="progress", fraction=i / 1200, message="working", eta_s=(1200 - i) / 10)
            time.sleep(0.1)
        return 0
    from MedAILib.io.sequences import Sequence, read_sequence, write_sequence

    seq = read_sequence(a.input)
    out = []
    for t, frame in enumerate(seq.frames):
        out.append(fake_labels(frame.array, t))
        emit(event="progress", fraction=(t + 1) / seq.n_frames, message=f"frame {t + 1}/{seq.n_frames}", eta_s=None)
    write_sequence(Sequence.from_array(np.stack(out), seq.ijk_to_ras, seq.index_values), a.output)
    if os.environ.get("FAKE_COPY"):
        shutil.copy(a.output, os.environ["FAKE_COPY"])
    Path(a.report).write_text(json.dumps({"cases": [{"label_volumes_ml": {l["name"]: [] for l in LABELS}}]}))
    emit(event="done", outputs=[a.output], failed=[])
    return 0


if __name__ == "__main__":
    sys.exit(fake_engine(sys.argv[1:]))


import pytest  # noqa: E402  (the script above needs none of the test imports)
from slicer_support.catalogue import fake_segmentation_entry  # noqa: E402
from slicer_support.geometry import ijk_to_ras, reference_geometry  # noqa: E402

ENGINE = [sys.executable, str(Path(__file__).resolve())]
MATRIX = np.array([[0.0, 0.0, -1.5, 10.0], [1.2, 0.1, 0.0, -5.0], [0.0, 2.0, 0.0, 3.0], [0, 0, 0, 1]])


@pytest.fixture
def catalogue(tmp_path):
    path = tmp_path / "catalogue.json"
    path.write_text(json.dumps({"version": 1, "models": [fake_segmentation_entry("fake_cine", LABELS)]}))
    return path


def frame_arrays():
    """Four different frames: a blob that moves and grows, plus a frame-specific offset."""
    k, j, i = np.mgrid[0:6, 0:10, 0:12]
    return [(100.0 * ((i - 3 - t) ** 2 + (j - 5) ** 2 + (k - 3) ** 2 < (2 + t) ** 2) + 7 * t + (i % 3)).astype(np.int16)
            for t in range(4)]


def make_sequence(slicer, withBrowser=True):
    seq = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSequenceNode", "cine")
    seq.SetIndexName("time")
    seq.SetIndexUnit("ms")
    for value, array in zip(INDEX_VALUES, frame_arrays()):
        frame = slicer.vtkMRMLScalarVolumeNode()
        slicer.util.updateVolumeFromArray(frame, array)
        frame.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(MATRIX))
        seq.SetDataNodeAtValue(frame, value)
    browser = None
    if withBrowser:
        browser = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", "cine browser")
        browser.SetAndObserveMasterSequenceNodeID(seq.GetID())
    return seq, browser


def _logic(prefix=ENGINE):
    import MedAISegment

    logic = MedAISegment.MedAISegmentLogic()
    logic.enginePrefix = prefix
    return logic


def _temp_leftovers(slicer):
    return list(Path(slicer.app.temporaryPath).glob("MedAISegmentSequence*"))


def _snapshot(seq):
    import slicer

    return [(seq.GetNthIndexValue(n), slicer.util.arrayFromVolume(seq.GetNthDataNode(n)).copy(),
             ijk_to_ras(seq.GetNthDataNode(n))) for n in range(seq.GetNumberOfDataNodes())]


def _segment_mask(slicer, segNode, name, referenceNode):
    segmentation = segNode.GetSegmentation()
    segmentId = segmentation.GetSegmentIdBySegmentName(name)
    assert segmentId, f"no segment {name}"
    return slicer.util.arrayFromSegmentBinaryLabelmap(segNode, segmentId, referenceNode) > 0


def _reference_volume(slicer, seq, n):
    """A scene volume node with frame n's voxels and geometry (masks are exported onto its grid)."""
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", f"ref{n}")
    slicer.util.updateVolumeFromArray(node, slicer.util.arrayFromVolume(seq.GetNthDataNode(n)).copy())
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(ijk_to_ras(seq.GetNthDataNode(n))))
    return node


@pytest.mark.parametrize("giveBrowser", [True, False], ids=["browser-given", "sequence-only"])
def test_every_frame_segmented_and_synchronized_with_the_input(slicer, catalogue, tmp_path, monkeypatch, giveBrowser):
    from MedAILib.io.sequences import read_sequence

    monkeypatch.setenv("FAKE_COPY", str(tmp_path / "engine.seq.nrrd"))
    seq, browser = make_sequence(slicer)
    before = _snapshot(seq)
    progress = []
    run = _logic().processSequence(browser if giveBrowser else seq, "fake_cine", catalogue=catalogue, wait=True,
                                   timeout=120, progressCallback=lambda f, m, e: progress.append(f))
    assert run.status == "done"
    engine = read_sequence(tmp_path / "engine.seq.nrrd")  # the engine's own file
    assert engine.n_frames == 4 and [float(v) for v in INDEX_VALUES] == pytest.approx(engine.index_values)
    assert progress[-1] == pytest.approx(1.0) and len(progress) >= 4  # per frame
    out = run.outputSequence
    assert out.GetNumberOfDataNodes() == 4 and out.GetDataNodeClassName() == "vtkMRMLSegmentationNode"
    assert [out.GetNthIndexValue(n) for n in range(4)] == INDEX_VALUES
    assert out.GetIndexName() == "time" and out.GetIndexUnit() == "ms"
    # one browser, the input's: the output is synchronized in it
    assert run.browserNode is browser
    assert len(slicer.util.getNodesByClass("vtkMRMLSequenceBrowserNode")) == 1
    assert browser.IsSynchronizedSequenceNodeID(out.GetID(), False)
    for n in range(4):
        segNode = out.GetNthDataNode(n)
        assert segNode.GetSegmentation().GetNumberOfSegments() == 2
        shape, matrix = reference_geometry(segNode)  # on its frame's grid
        assert shape == before[n][1].shape and np.allclose(matrix, before[n][2], atol=1e-4)
        ref = _reference_volume(slicer, seq, n)
        for label in LABELS:
            mask = _segment_mask(slicer, segNode, label["name"], ref)
            np.testing.assert_array_equal(mask, engine.frames[n].array == label["value"])
            np.testing.assert_array_equal(mask, fake_labels(before[n][1], n) == label["value"])
        slicer.mrmlScene.RemoveNode(ref)
    # browsing the input shows the same frame's segmentation (the browser's proxies)
    proxy, volumeProxy = run.proxySegmentation, browser.GetProxyNode(seq)
    assert proxy is browser.GetProxyNode(out) and proxy.IsA("vtkMRMLSegmentationNode")
    for n in (2, 0, 3, 1):
        browser.SetSelectedItemNumber(n)
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(volumeProxy), before[n][1])
        ref = _reference_volume(slicer, seq, n)
        np.testing.assert_array_equal(_segment_mask(slicer, proxy, "Marker", ref), engine.frames[n].array == 2)
        slicer.mrmlScene.RemoveNode(ref)
    segment = proxy.GetSegmentation().GetSegment(proxy.GetSegmentation().GetSegmentIdBySegmentName("Blood pool"))
    assert segment.GetColor() == pytest.approx((0.9, 0.1, 0.1))
    # inputs unchanged, temporary folder gone
    after = _snapshot(seq)
    for (v0, a0, m0), (v1, a1, m1) in zip(before, after):
        assert v0 == v1 and np.array_equal(a0, a1) and np.allclose(m0, m1)
    assert _temp_leftovers(slicer) == []


def test_a_browser_is_made_when_the_input_has_none(slicer, catalogue):
    seq, _ = make_sequence(slicer, withBrowser=False)
    run = _logic().processSequence(seq, "fake_cine", catalogue=catalogue, wait=True, timeout=120)
    browser = run.browserNode
    assert browser is not None and browser.GetMasterSequenceNode() is seq
    assert browser.IsSynchronizedSequenceNodeID(run.outputSequence.GetID(), False)
    browser.SetSelectedItemNumber(3)
    ref = _reference_volume(slicer, seq, 3)
    np.testing.assert_array_equal(_segment_mask(slicer, browser.GetProxyNode(run.outputSequence), "Marker", ref),
                                  fake_labels(slicer.util.arrayFromVolume(seq.GetNthDataNode(3)), 3) == 2)


def test_wrong_inputs_are_refused_before_anything_runs(slicer, catalogue, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_STARTED", str(tmp_path / "started"))
    logic = _logic()
    volume = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "plain")
    with pytest.raises(ValueError, match="'plain' is not a sequence"):
        logic.processSequence(volume, "fake_cine", catalogue=catalogue)
    empty = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSequenceNode", "empty")
    with pytest.raises(ValueError, match="has no frames"):
        logic.processSequence(empty, "fake_cine", catalogue=catalogue)
    seq, _ = make_sequence(slicer, withBrowser=False)
    odd = slicer.vtkMRMLScalarVolumeNode()
    slicer.util.updateVolumeFromArray(odd, np.zeros((6, 10, 13), np.int16))
    seq.SetDataNodeAtValue(odd, "150")
    with pytest.raises(ValueError, match="Frame 5 of 'cine' is not on frame 1's grid"):
        logic.processSequence(seq, "fake_cine", catalogue=catalogue)
    rgb = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSequenceNode", "rgb")
    colour = slicer.vtkMRMLVectorVolumeNode()
    slicer.util.updateVolumeFromArray(colour, np.zeros((2, 4, 4, 3), np.uint8))
    rgb.SetDataNodeAtValue(colour, "0")
    with pytest.raises(ValueError, match="Frame 1 of 'rgb' has 3 components per voxel"):
        logic.processSequence(rgb, "fake_cine", catalogue=catalogue)
    # frames shown under a transform (on the browser's proxy volume): harden it first, as for one volume
    moved, browser = make_sequence(slicer)
    transform = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift")
    browser.GetProxyNode(moved).SetAndObserveTransformNodeID(transform.GetID())
    with pytest.raises(ValueError, match="is under a transform. Harden"):
        logic.processSequence(browser, "fake_cine", catalogue=catalogue)
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        logic.processSequence(empty, "fake_cine", catalogue=catalogue, device="tpu")
    assert not (tmp_path / "started").exists(), "an engine was started"
    assert _temp_leftovers(slicer) == [] and not slicer.util.getNodesByClass("vtkMRMLSegmentationNode")


def test_cancel_leaves_no_nodes_and_no_temp(slicer, catalogue, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_MODE", "slow")
    monkeypatch.setenv("FAKE_STARTED", str(tmp_path / "started"))
    seq, browser = make_sequence(slicer)
    classes = ("vtkMRMLSequenceNode", "vtkMRMLSequenceBrowserNode", "vtkMRMLSegmentationNode")
    counts = {c: len(slicer.util.getNodesByClass(c)) for c in classes}
    finished = []
    run = _logic().processSequence(seq, "fake_cine", catalogue=catalogue, completedCallback=finished.append)
    t0 = time.monotonic()
    while not (tmp_path / "started").exists():
        assert time.monotonic() - t0 < 60, "the fake engine did not start"
        run.poll()
        time.sleep(0.05)
    assert run.poll()
    run.cancel()
    assert finished == [run] and run.status == "cancelled" and run.outputSequence is None
    assert {c: len(slicer.util.getNodesByClass(c)) for c in classes} == counts
    assert browser.GetNumberOfSynchronizedSequenceNodes(False) == 0
    assert _temp_leftovers(slicer) == []


def test_failed_import_removes_what_it_made(slicer, catalogue, monkeypatch):
    """A failure at the very end of the import (after the output sequence, the browser and the
    proxies were made) leaves no new node and no synchronization behind."""
    from MedAISlicerLib import nodes

    seq, _ = make_sequence(slicer, withBrowser=False)
    scene = slicer.mrmlScene
    ids_before = {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}

    def fail(node, reference):
        raise OSError("subject hierarchy unavailable")

    monkeypatch.setattr(nodes, "place_next_to", fail)
    with pytest.raises(RuntimeError, match="Could not load the result: subject hierarchy unavailable"):
        _logic().processSequence(seq, "fake_cine", catalogue=catalogue, wait=True, timeout=120)
    new = [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())
           if scene.GetNthNode(i).GetID() not in ids_before]
    kinds = {"vtkMRMLSequenceNode", "vtkMRMLSequenceBrowserNode", "vtkMRMLSegmentationNode", "vtkMRMLScalarVolumeNode"}
    assert [n.GetClassName() for n in new if n.GetClassName() in kinds] == []
    assert _temp_leftovers(slicer) == []


# --- the real engine: `medai segment-sequence` with a random-weights bundle on the real cine ---------
REAL_ID = "cine_random_unet"


def _real_cine(data_dir):
    """5 frames of the Sunnybrook short-axis cine (SCD0000101), 4 slices, cropped around the heart."""
    from MedAILib.core.volume import Volume
    from MedAILib.io.sequences import Sequence, read_dicom_cine

    cine = read_dicom_cine(data_dir / "sunnybrook-cine" / "dicoms" / "SCD0000101")
    frames = []
    for f in cine.frames[::4][:5]:
        m = f.ijk_to_ras.copy()
        m[:3, 3] = f.ijk_to_ras_points([[70, 60, 4]])[0]
        frames.append(Volume(f.array[4:8, 60:100, 70:110].copy(), m))
    return Sequence(frames, cine.index_values[::4][:5], cine.index_name, cine.index_unit)


def test_real_engine_segments_each_frame_of_a_real_cine(slicer, data_dir, tmp_path, monkeypatch):
    from bundle_factory import make_bundle
    from MedAILib.io.sequences import read_sequence
    from MedAILib.models import modelzoo
    from MedAISlicerLib.models import find_model
    from MedAISlicerLib.tasks.sequences import SequenceSegmentationRun

    engine_file = tmp_path / "engine.seq.nrrd"
    original_import = SequenceSegmentationRun._import

    def keep_engine_file(self, result):  # the engine's own 4D label file, before the import reads it
        shutil.copy(result.outputs[0], engine_file)
        return original_import(self, result)

    monkeypatch.setattr(SequenceSegmentationRun, "_import", keep_engine_file)

    bundle = make_bundle(tmp_path / "bundle", labels=("background", "blood", "wall"), roi_size=(32, 32, 16),
                         pixdim=(1.5, 1.5, 10.0))
    modelzoo.add_bundle(str(bundle), assume_yes=True, say=lambda s: None, model_id=REAL_ID)
    cine = _real_cine(data_dir)
    seq = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSequenceNode", "SCD0000101 cine")
    seq.SetIndexName(cine.index_name)
    seq.SetIndexUnit(cine.index_unit)
    for value, frame in zip(cine.index_values, cine.frames):
        node = slicer.vtkMRMLScalarVolumeNode()
        slicer.util.updateVolumeFromArray(node, frame.array)
        node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(frame.ijk_to_ras))
        seq.SetDataNodeAtValue(node, f"{value:g}")
    before = _snapshot(seq)
    progress = []
    run = _logic(None).processSequence(seq, REAL_ID, device="cpu", framesPerBatch=2, wait=True, timeout=300,
                                       progressCallback=lambda f, m, e: progress.append(f))
    out = run.outputSequence
    assert out.GetNumberOfDataNodes() == 5 and progress and max(progress) > 0.9
    assert run.browserNode.IsSynchronizedSequenceNodeID(out.GetID(), False)
    # the imported segmentations equal the engine's 4D label file, frame by frame
    labels = find_model(REAL_ID).labels
    reference = read_sequence(engine_file)
    assert reference.n_frames == 5 and np.allclose(reference.ijk_to_ras, before[0][2], atol=1e-3)
    assert any(np.any(f.array > 0) for f in reference.frames), "the random model labelled nothing: weak test"
    for n in range(5):
        segNode = out.GetNthDataNode(n)
        shape, matrix = reference_geometry(segNode)
        assert shape == before[n][1].shape and np.allclose(matrix, before[n][2], atol=1e-4)
        ref = _reference_volume(slicer, seq, n)
        for label in labels:
            mask = _segment_mask(slicer, segNode, label.name, ref)
            np.testing.assert_array_equal(mask, reference.frames[n].array == label.value)
        slicer.mrmlScene.RemoveNode(ref)
    for (_, a0, m0), (_, a1, m1) in zip(before, _snapshot(seq)):
        assert np.array_equal(a0, a1) and np.allclose(m0, m1)
    assert _temp_leftovers(slicer) == []
