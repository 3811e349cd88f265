"""MedAIFusion Logic end to end on real MRML (slicer-core): nodes -> `medai register` / `medai fuse`
process -> transform node, resampled volume, checkerboard, colour overlay, ensemble nodes.

Slicer's own ``loadTransform`` (vtkSlicerTransformLogic) converts the engine's ITK file to a RAS
"from parent" matrix, so the direction convention of the engine's transform file is checked
against Slicer itself here.
"""

from pathlib import Path

import numpy as np
import pytest

from slicer_support.geometry import same_world_grid
from slicer_support.views import same_in_every_view


def _matrix(slicer, node):
    import vtk

    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return slicer.util.arrayFromVTKMatrix(m)


@pytest.fixture
def pair(slicer):
    from test_registration import phantom

    from MedAILib.tasks.registration import registration as R

    fixed, other = phantom(contrast="t1"), phantom(contrast="t2")
    truth = R.rigid_ras_matrix((3.0, -2.0, 5.0), (4.0, -3.0, 2.0))
    moving = R.move_frame(other, truth)
    n_fixed = slicer.util.addVolumeFromArray(fixed.array, fixed.ijk_to_ras, "T1 phantom")
    n_moving = slicer.util.addVolumeFromArray(moving.array, moving.ijk_to_ras, "T2 phantom")
    return n_fixed, n_moving, truth


def _logic():
    import MedAIFusion

    return MedAIFusion.MedAIFusionLogic()


def test_register_gives_transform_node_and_resampled_volume(slicer, pair):
    fixed, moving, truth = pair
    progress = []
    run = _logic().register(fixed, moving, "rigid", applyToMoving=True, wait=True,
                            progressCallback=lambda f, m, e: progress.append(f))
    assert run.status == "done", run.errorText
    assert progress and max(p for p in progress if p is not None) > 0.5
    # Slicer's view of the file: FROM-parent = fixed->moving in RAS; equals the known offset, not its inverse
    from_parent = slicer.util.arrayFromVTKMatrix(run.outputTransform.GetMatrixTransformFromParent())
    assert np.abs(from_parent[:3, 3] - truth[:3, 3]).max() < 0.5, from_parent
    assert np.abs(from_parent[:3, :3] - truth[:3, :3]).max() < 0.01
    np.testing.assert_allclose(from_parent, run.report["fixed_to_moving_ras"], atol=1e-4)
    # the moving volume is shown aligned: it sits under the new transform node
    assert moving.GetTransformNodeID() == run.outputTransform.GetID()
    # the resampled volume lies on the fixed grid
    out = run.outputVolume
    assert same_world_grid(out, fixed)
    assert slicer.util.arrayFromVolume(out).shape == slicer.util.arrayFromVolume(fixed).shape
    assert run.report["metric_after"] < run.report["metric_before"]
    assert "Mattes MI" in run.metricText
    assert not list(Path(slicer.app.temporaryPath).glob("MedAIFusionRegister*"))  # temp folder removed


def test_register_cancel_leaves_nothing(slicer, pair):
    import time

    fixed, moving, _ = pair
    run = _logic().register(fixed, moving, "affine", applyToMoving=True)
    t0 = time.monotonic()
    seen = []
    run.progressCallback = lambda f, m, e: seen.append(f)
    while run.poll() and not seen and time.monotonic() - t0 < 60:
        time.sleep(0.05)
    run.cancel()
    assert run.status == "cancelled"
    assert run.outputTransform is None and run.outputVolume is None
    assert moving.GetTransformNodeID() is None
    # Slicer's own slice views have hidden "Slice Transform" nodes: count only nodes a user sees
    transforms = slicer.util.getNodesByClass("vtkMRMLLinearTransformNode")
    assert [n.GetName() for n in transforms if not n.GetHideFromEditors()] == []


def test_register_refuses_bad_inputs(slicer, pair):
    fixed, moving, _ = pair
    with pytest.raises(ValueError, match="same volume"):
        _logic().register(fixed, fixed)
    with pytest.raises(ValueError, match="type"):
        _logic().register(fixed, moving, "elastic")


def test_fused_display_checkerboard_and_colour_overlay(slicer, pair):
    fixed, moving, _ = pair
    logic = _logic()
    logic.showFused(fixed, moving, 0.3)
    layers = same_in_every_view()
    assert layers["background"] == fixed.GetID() and layers["foreground"] == moving.GetID()
    assert layers["foregroundOpacity"] == pytest.approx(0.3)
    logic.setForegroundOpacity(0.8)
    assert same_in_every_view()["foregroundOpacity"] == pytest.approx(0.8)
    logic.showColourOverlay(fixed, moving, 0.6, "Rainbow")
    colour = moving.GetDisplayNode().GetColorNode()
    assert colour is not None and colour.GetTypeAsString() == "Rainbow"
    run = logic.checkerboard(fixed, moving, squares=(4, 4, 1), wait=True)
    assert run.status == "done", run.errorText
    assert same_world_grid(run.outputVolume, fixed)
    assert same_in_every_view()["background"] == run.outputVolume.GetID()
    cb = slicer.util.arrayFromVolume(run.outputVolume)
    assert 0.0 <= cb.min() and cb.max() <= 1.0 and len(np.unique(cb)) > 10


def test_ensemble_makes_labels_and_uncertainty_on_input_grid(slicer, pair):
    fixed, _, _ = pair
    base = slicer.util.arrayFromVolume(fixed)
    m = _matrix(slicer, fixed)
    maps = [slicer.util.addVolumeFromArray((base > t).astype(np.uint8), m, f"model {t}", "vtkMRMLLabelMapVolumeNode")
            for t in (150, 160, 170)]
    run = _logic().ensemble(maps, "vote", uncertainty="disagreement", wait=True)
    assert run.status == "done", run.errorText
    labels = slicer.util.arrayFromVolume(run.outputLabels)
    assert np.allclose(_matrix(slicer, run.outputLabels), m)  # the same grid, index for index (right-handed)
    np.testing.assert_array_equal(labels, (base > 160).astype(labels.dtype))
    assert run.outputLabels.IsA("vtkMRMLLabelMapVolumeNode")
    unc = slicer.util.arrayFromVolume(run.outputUncertainty)
    assert unc.shape == base.shape and same_world_grid(run.outputUncertainty, fixed)
    assert unc.max() == pytest.approx(1 / 3, abs=1e-5)
    with pytest.raises(ValueError, match="one weight per input"):
        _logic().ensemble(maps, "weighted", weights=[1, 2])


def test_ensemble_of_segmentations_keeps_names_colours_and_terminology(slicer, data_dir, tmp_path):
    """Segmentations (as MedAISegment makes them) in, a segmentation out: Slicer's own writer hands
    them to the engine with their label values, names, colours and terminology, and the fused
    segments come back with the first input's (read with Slicer's own reader)."""
    from MedAILib.io import read_segmentation, write_segmentation
    from MedAISlicerLib.models import find_model
    from slicer_support.geometry import dice

    labels = find_model("hippocampus_unet").labels
    truth = read_segmentation(data_dir / "msd-hippocampus" / "labelsTr" / "hippocampus_001.nii.gz")
    arrays = [truth.array.copy() for _ in range(3)]
    arrays[1][:, :, :12] = 0  # two members that each miss a different part
    arrays[2][:, :, -12:] = 0
    segs = []
    for n, a in enumerate(arrays):
        path = write_segmentation(truth.with_array(a.astype(np.uint8), labels=labels), tmp_path / f"m{n}.seg.nrrd")
        segs.append(slicer.util.loadSegmentation(str(path), {"name": f"member {n}"}))
    run = _logic().ensemble(segs, "vote", uncertainty="disagreement", wait=True)
    assert run.status == "done", run.errorText
    assert run.outputLabels is None and run.outputSegmentation.IsA("vtkMRMLSegmentationNode")
    fused = run.outputSegmentation.GetSegmentation()
    names = [fused.GetNthSegment(i).GetName() for i in range(fused.GetNumberOfSegments())]
    assert names == [l.name for l in labels]
    reference = slicer.util.loadLabelVolume(str(data_dir / "msd-hippocampus" / "labelsTr" / "hippocampus_001.nii.gz"),
                                            {"show": False})
    ref = slicer.util.arrayFromVolume(reference)
    for label in labels:
        segment = fused.GetSegment(fused.GetSegmentIdBySegmentName(label.name))
        assert segment.GetTerminology() == label.terminology and "SCT^5366008^Hippocampus" in label.terminology
        assert segment.GetColor() == pytest.approx(label.color, abs=1e-3)
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(run.outputSegmentation, fused.GetSegmentIdBySegmentName(label.name),
                                                          reference)
        assert dice(mask, ref == label.value) > 0.99  # the vote restores what one member missed
    unc = slicer.util.arrayFromVolume(run.outputUncertainty)
    assert unc.max() == pytest.approx(1 / 3, abs=1e-5)
    with pytest.raises(ValueError, match="not both"):
        _logic().ensemble([segs[0], reference], "vote")
