"""MedAISegment Logic end to end on real MRML (slicer-core, Testing/slicer_real): node ->
`medai segment` process -> node, the result read with Slicer's own segmentation reader.

Real hippocampus MRI from MEDAI_DATA_DIR; the engine runs as a separate process exactly as inside
Slicer (PythonSlicer is replaced by this interpreter). Results are compared by world position:
reference labels are read by Slicer too and masks are taken on their grid.
"""

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from slicer_support.catalogue import fake_segmentation_entry
from slicer_support.geometry import dice, ijk_to_ras, reference_geometry


HERE = Path(__file__).resolve().parent
FAKE = HERE / "slicer_support" / "fake_engine.py"
TERM_ANT = ("Segmentation category and type - DICOM master list~SCT^123037004^Anatomical Structure"
            "~SCT^5366008^Hippocampus~^^~Anatomic codes - DICOM master list~^^~^^")
CASE = "hippocampus_001"


@pytest.fixture
def catalogue(tmp_path, monkeypatch):
    labels = [{"value": 1, "name": "Anterior", "color": [0.9, 0.2, 0.1], "terminology": TERM_ANT},
              {"value": 2, "name": "Posterior", "color": [0.1, 0.4, 0.9]}]
    path = tmp_path / "catalogue.json"
    path.write_text(json.dumps({"version": 1, "models": [fake_segmentation_entry("fake_hippo", labels)]}))
    monkeypatch.setenv("FAKE_CATALOGUE", str(path))  # the fake engine writes this label table, as the engine does
    return path


@pytest.fixture
def volume(slicer, data_dir):
    node = slicer.util.loadVolume(str(data_dir / "msd-hippocampus" / "imagesTr" / f"{CASE}.nii.gz"))
    # Give it an oblique, flipped geometry so "same geometry as the input" is a real check.
    from conftest import oblique_ijk_to_ras

    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(oblique_ijk_to_ras()))
    return node


def _logic(slicer, prefix=None):
    import MedAISegment

    logic = MedAISegment.MedAISegmentLogic()
    logic.enginePrefix = prefix
    return logic


def _geometry(slicer, node):
    return ijk_to_ras(node)


def _temp_leftovers(slicer):
    return list(Path(slicer.app.temporaryPath).glob("MedAISegment*"))


def test_fake_engine_run_imports_names_colours_terminology_geometry(slicer, volume, catalogue, monkeypatch):
    monkeypatch.setenv("FAKE_MODE", "ok")
    before = slicer.util.arrayFromVolume(volume).copy()
    geometry_before = _geometry(slicer, volume)
    progress, logs = [], []
    run = _logic(slicer, [sys.executable, str(FAKE)]).process(
        [volume], None, "fake_hippo", catalogue=catalogue, wait=True, timeout=120,
        progressCallback=lambda f, m, e: progress.append(f), logCallback=logs.append)
    seg = run.outputSegmentation
    segmentation = seg.GetSegmentation()
    assert run.status == "done" and segmentation.GetNumberOfSegments() == 2
    ant = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName("Anterior"))
    post = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName("Posterior"))
    assert ant.GetColor() == pytest.approx((0.9, 0.2, 0.1)) and post.GetColor() == pytest.approx((0.1, 0.4, 0.9))
    assert ant.GetTerminology() == TERM_ANT  # the engine's terminology, read by Slicer's reader
    assert "Hippocampus" not in post.GetTerminology()  # no entry in the file: Slicer's default ("Tissue")
    assert 0.5 in progress
    # geometry from the input; masks are the labels the engine wrote (on the input grid)
    assert seg.GetNodeReferenceID(seg.GetReferenceImageGeometryReferenceRole()) == volume.GetID()
    shape, matrix = reference_geometry(seg)
    assert shape == before.shape and np.allclose(matrix, geometry_before, atol=1e-4)
    mask = slicer.util.arrayFromSegmentBinaryLabelmap(seg, segmentation.GetSegmentIdBySegmentName("Posterior"), volume)
    half = before.shape[2] // 2
    expected = np.zeros(before.shape, bool)
    expected[:, :, half:] = before[:, :, half:] > np.median(before)
    np.testing.assert_array_equal(mask > 0, expected)
    # inputs unchanged, temp folder gone, new node named after the input and placed next to it
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(volume), before)
    assert np.allclose(_geometry(slicer, volume), geometry_before)
    assert _temp_leftovers(slicer) == []
    assert seg.GetName().startswith(volume.GetName())


def test_existing_segments_are_not_overwritten_unless_allowed(slicer, volume, catalogue, monkeypatch):
    monkeypatch.setenv("FAKE_MODE", "ok")
    out = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "mine")
    out.GetSegmentation().AddEmptySegment("keep", "keep me", (1, 1, 0))
    logic = _logic(slicer, [sys.executable, str(FAKE)])
    with pytest.raises(ValueError, match="already has segments"):
        logic.process([volume], out, "fake_hippo", catalogue=catalogue, wait=True)
    assert out.GetSegmentation().GetNumberOfSegments() == 1 and _temp_leftovers(slicer) == []
    run = logic.process([volume], out, "fake_hippo", catalogue=catalogue, overwrite=True, wait=True, timeout=120)
    assert run.outputSegmentation is out
    names = sorted(out.GetSegmentation().GetNthSegment(i).GetName() for i in range(2))
    assert out.GetSegmentation().GetNumberOfSegments() == 2 and names == ["Anterior", "Posterior"]


def test_wrong_inputs_are_refused_before_anything_runs(slicer, volume, catalogue, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_STARTED", str(tmp_path / "started"))
    logic = _logic(slicer, [sys.executable, str(FAKE)])
    # the count: the catalogue's input spec, the engine's words (MedAILib.runtime.validation)
    with pytest.raises(ValueError, match=r"fake_hippo needs 1 input image \(image\), but 2 were given"):
        logic.process([volume, volume], None, "fake_hippo", catalogue=catalogue)
    with pytest.raises(ValueError, match="no input image was given"):
        logic.process([None], None, "fake_hippo", catalogue=catalogue)
    # the device: the engine's own rule for --device
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        logic.process([volume], None, "fake_hippo", catalogue=catalogue, device="tpu")
    assert not (tmp_path / "started").exists(), "an engine was started"
    assert _temp_leftovers(slicer) == [] and not slicer.util.getNodesByClass("vtkMRMLSegmentationNode")


def test_engine_failure_reports_message_and_hint_and_leaves_nothing(slicer, volume, catalogue, monkeypatch):
    monkeypatch.setenv("FAKE_MODE", "fail")
    with pytest.raises(RuntimeError, match="(?s)could not be loaded.*re-download"):
        _logic(slicer, [sys.executable, str(FAKE)]).process([volume], None, "fake_hippo", catalogue=catalogue,
                                                             wait=True, timeout=60)
    assert not slicer.util.getNodesByClass("vtkMRMLSegmentationNode") and _temp_leftovers(slicer) == []


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[1].split()[0] == "Z")


def test_cancel_kills_process_tree_and_leaves_no_output_or_temp(slicer, volume, catalogue, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_MODE", "slow")
    monkeypatch.setenv("FAKE_PIDFILE", str(tmp_path / "child.pid"))
    finished = []
    run = _logic(slicer, [sys.executable, str(FAKE)]).process(
        [volume], None, "fake_hippo", catalogue=catalogue, completedCallback=finished.append)
    t0 = time.monotonic()
    while not (tmp_path / "child.pid").exists():
        assert time.monotonic() - t0 < 60, "the fake engine did not start"
        run.poll()
        time.sleep(0.05)
    child = int((tmp_path / "child.pid").read_text())
    assert run.poll() and _alive(child)
    run.cancel()
    assert finished == [run] and run.status == "cancelled"
    time.sleep(0.2)
    assert not _alive(child), "the engine's own child process survived Cancel"
    assert not slicer.util.getNodesByClass("vtkMRMLSegmentationNode") and _temp_leftovers(slicer) == []


# --- the real engine: `python -m MedAILib.cli segment` with the shipped hippocampus model -------------
REPO = HERE.parents[1]
BUNDLE = REPO / "MedAI" / "MedAILib" / "resources" / "Models" / "hippocampus_unet"


def _validation_case():
    split = json.loads((BUNDLE / "split.json").read_text())
    return split["validation"][0]


@pytest.fixture
def shipped_model():
    assert (BUNDLE / "models" / "model.pt").is_file(), "the shipped hippocampus_unet weights are missing"
    return BUNDLE


def test_real_engine_segments_hippocampus_into_the_node(slicer, data_dir, shipped_model):
    case = _validation_case()
    volume = slicer.util.loadVolume(str(data_dir / "msd-hippocampus" / "imagesTr" / f"{case}.nii.gz"))
    before, geometry_before = slicer.util.arrayFromVolume(volume).copy(), _geometry(slicer, volume)
    progress = []
    run = _logic(slicer).process([volume], None, "hippocampus_unet", device="cpu", wait=True, timeout=300,
                                 progressCallback=lambda f, m, e: progress.append((f, e)))
    seg = run.outputSegmentation
    segmentation = seg.GetSegmentation()
    from MedAISlicerLib.models import find_model

    labels = find_model("hippocampus_unet").labels
    assert segmentation.GetNumberOfSegments() == len(labels) == 2
    assert progress and progress[-1][0] > 0.9
    # the reference label read by Slicer as well; masks on ITS grid: compared by world position
    truth_node = slicer.util.loadLabelVolume(str(data_dir / "msd-hippocampus" / "labelsTr" / f"{case}.nii.gz"),
                                             {"show": False})
    truth = slicer.util.arrayFromVolume(truth_node)
    for label in labels:
        segment_id = segmentation.GetSegmentIdBySegmentName(label.name)
        segment = segmentation.GetSegment(segment_id)
        assert segment.GetColor() == pytest.approx(label.color, abs=1e-3)
        assert segment.GetTerminology() == label.terminology and "SCT^5366008^Hippocampus" in label.terminology
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(seg, segment_id, truth_node)
        assert dice(mask, truth == label.value) > 0.6, f"{label.name}: Dice {dice(mask, truth == label.value):.3f}"
    shape, matrix = reference_geometry(seg)
    assert shape == before.shape and np.allclose(matrix, geometry_before, atol=1e-4)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(volume), before)
    assert _temp_leftovers(slicer) == []


def test_structures_are_matched_by_the_engine_rule(slicer, data_dir, shipped_model):
    """Structure names go to the engine as given: it matches them case-insensitively (as
    `medai segment --structures` does) and refuses unknown ones with its own message."""
    volume = slicer.util.loadVolume(str(data_dir / "msd-hippocampus" / "imagesTr" / f"{_validation_case()}.nii.gz"))
    run = _logic(slicer).process([volume], None, "hippocampus_unet", structures=["ANTERIOR"], device="cpu",
                                 wait=True, timeout=300)
    segmentation = run.outputSegmentation.GetSegmentation()
    assert [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())] == ["anterior"]
    with pytest.raises(RuntimeError, match=r"(?s)has no structure\(s\) Liver.*choose from: anterior, posterior"):
        _logic(slicer).process([volume], None, "hippocampus_unet", structures=["Liver"], device="cpu", wait=True,
                               timeout=300)
    assert len(slicer.util.getNodesByClass("vtkMRMLSegmentationNode")) == 1 and _temp_leftovers(slicer) == []


def test_real_engine_cancel_leaves_no_output_and_no_temp(slicer, data_dir, shipped_model):
    volume = slicer.util.loadVolume(str(data_dir / "msd-hippocampus" / "imagesTr" / f"{_validation_case()}.nii.gz"))
    finished = []
    run = _logic(slicer).process([volume], None, "hippocampus_unet", device="cpu", completedCallback=finished.append)
    t0 = time.monotonic()
    while run.poll() and not run.process.result.log:  # the first line means the engine is up
        assert time.monotonic() - t0 < 120
        time.sleep(0.02)
    run.cancel()
    assert finished == [run] and run.status in ("cancelled", "done")
    if run.status == "cancelled":
        assert not slicer.util.getNodesByClass("vtkMRMLSegmentationNode")
    assert _temp_leftovers(slicer) == []
