"""MedAISegment Logic ``train`` on real MRML (slicer-core, Testing/slicer_real): segmentation nodes in
the scene -> NIfTI files + MONAI datalist -> ``medai train --progress json segmentation`` in its own
process -> a bundle in the user catalogue -> ``process`` segments with it.

Real hippocampus MRI from MEDAI_DATA_DIR; the segments are drawn into the segmentation nodes from the
reference labels with ``slicer.util.updateSegmentBinaryLabelmapFromArray`` (as an editor would).
"""

import sys
from pathlib import Path

import numpy as np
import pytest

CASES = ("hippocampus_001", "hippocampus_004")


def _case(slicer, data_dir, case, order=("Anterior", "Posterior")):
    volume = slicer.util.loadVolume(str(data_dir / "msd-hippocampus" / "imagesTr" / f"{case}.nii.gz"))
    truth_node = slicer.util.loadLabelVolume(str(data_dir / "msd-hippocampus" / "labelsTr" / f"{case}.nii.gz"),
                                             {"show": False})
    truth = slicer.util.arrayFromVolume(truth_node).copy()
    slicer.mrmlScene.RemoveNode(truth_node)
    seg = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{case} labels")
    seg.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    for name in order:
        segment_id = seg.GetSegmentation().AddEmptySegment(name, name)
        slicer.util.updateSegmentBinaryLabelmapFromArray((truth == {"Anterior": 1, "Posterior": 2}[name]).astype(np.uint8),
                                                         seg, segment_id, volume)
    return volume, seg, truth


def _logic():
    import MedAISegment

    return MedAISegment.MedAISegmentLogic()


def test_scene_labels_keep_one_value_per_segment_name(slicer, data_dir):
    """Segments are matched by name across cases, whatever their order in each node, and exported
    on the volume's own grid."""
    from MedAISlicerLib.tasks.training import label_table, labelmap_from_segmentation

    v1, s1, t1 = _case(slicer, data_dir, CASES[0])
    v2, s2, t2 = _case(slicer, data_dir, CASES[1], order=("Posterior", "Anterior"))
    table = label_table([(v1, s1), (v2, s2)])
    assert table == {"Anterior": 1, "Posterior": 2}
    for v, s, t in ((v1, s1, t1), (v2, s2, t2)):
        lab = labelmap_from_segmentation(s, v, table)
        assert lab.array.shape == t.shape
        np.testing.assert_array_equal(lab.array, t)  # same voxels, same values as the reference file


def test_bad_training_input_refused_before_anything_runs(slicer, data_dir):
    v, s, _ = _case(slicer, data_dir, CASES[0])
    empty = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "nothing drawn")
    with pytest.raises(ValueError, match="'nothing drawn' has no segments"):
        _logic().train([(v, empty)], "my_model")
    with pytest.raises(ValueError, match="cannot be a model name"):
        _logic().train([(v, s)], "../evil")
    with pytest.raises(ValueError, match="at least one volume"):
        _logic().train([], "my_model")
    assert list(Path(slicer.app.temporaryPath).glob("MedAITrain*")) == []


@pytest.mark.slow
def test_train_from_two_segmentation_nodes_then_segment_with_it(slicer, data_dir):
    (v1, s1, _), (v2, s2, _) = (_case(slicer, data_dir, c) for c in CASES)
    progress, logs = [], []
    logic = _logic()
    # tiny: a few seconds of CPU; the point is the path, not the Dice
    run = logic.train([(v1, s1)], "scene_hippo_tiny", epochs=2, validationPairs=[(v2, s2)], wait=True, timeout=600,
                      extraArguments=["--base-filters", "4", "--max-patch", "16", "16", "16", "--steps-per-epoch", "1",
                                      "--batch-size", "1", "--val-interval", "1"],
                      progressCallback=lambda f, m, e: progress.append((f, m, e)), logCallback=logs.append)
    assert run.status == "done", run.errorText
    assert [round(f, 2) for f, _, _ in progress if f][-1] == 1.0 and any("val Dice" in m for _, m, _ in progress)
    assert [e for e, _ in run.validationCurve] == [1, 2] and all(0 <= d <= 1 for _, d in run.validationCurve)
    from MedAISlicerLib.models import find_model

    model = find_model("scene_hippo_tiny")
    assert [label.name for label in model.labels] == ["Anterior", "Posterior"]
    assert list(Path(slicer.app.temporaryPath).glob("MedAITrain*")) == []  # files only lived for the run
    seg_run = logic.process([v2], None, "scene_hippo_tiny", device="cpu", wait=True, timeout=300)
    out = seg_run.outputSegmentation.GetSegmentation()
    names = {out.GetNthSegment(i).GetName() for i in range(out.GetNumberOfSegments())}
    assert names <= {"Anterior", "Posterior"}, names  # the trained label set (a tiny model may miss one)


def test_cancel_stops_the_training_process_and_leaves_nothing(slicer, data_dir, monkeypatch, tmp_path):
    """Cancel kills the engine's process tree (the scripted stand-in: it works for 60 s); no model is
    added, the temporary files go, and the Logic returned at once (the GUI never waits)."""
    import time

    fake = Path(__file__).resolve().parent / "slicer_support" / "fake_engine.py"
    monkeypatch.setenv("FAKE_MODE", "slow")
    monkeypatch.setenv("FAKE_SECONDS", "60")
    monkeypatch.setenv("FAKE_STARTED", str(tmp_path / "started"))
    v, s, _ = _case(slicer, data_dir, CASES[0])
    logic = _logic()
    logic.enginePrefix = [sys.executable, str(fake)]
    t0 = time.monotonic()
    run = logic.train([(v, s)], "never_added", epochs=3)
    assert time.monotonic() - t0 < 5 and run.running
    while not (tmp_path / "started").exists() and time.monotonic() - t0 < 60:
        run.poll()
        time.sleep(0.05)
    run.cancel()
    assert run.status == "cancelled" and time.monotonic() - t0 < 60
    from MedAILib.models.catalogue import load_catalogue

    assert "never_added" not in load_catalogue()
    assert list(Path(slicer.app.temporaryPath).glob("MedAITrain*")) == []
