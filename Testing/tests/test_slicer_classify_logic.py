"""MedAI "Classify" Logic end to end on real MRML (slicer-core): volume node + segment (or ROI) ->
`medai classify` process -> table node (class, probability), result text and Grad-CAM heat-map
volume (read with Slicer's own reader) shown as a colour overlay in the slice views.

The engine runs as a separate process as inside Slicer, with the shipped adrenal_classifier bundle on
real AdrenalMNIST3D test masks.
"""

import numpy as np
import pytest

from conftest import oblique_ijk_to_ras
from slicer_support.geometry import same_world_grid
from slicer_support.views import same_in_every_view


@pytest.fixture(scope="module")
def gland(data_dir):
    with np.load(data_dir / "medmnist3d" / "adrenalmnist3d.npz") as d:
        return d["test_images"][5] > 0  # a real test-split gland mask (28^3)


def _scene_case(slicer, gland):
    """A CT-like volume (40 x 36 x 34 voxels, oblique grid at the dataset's 2.286 mm) with the gland
    drawn as a segment on it; returns (volume node, segmentation node, segment id, mask array)."""
    rng = np.random.default_rng(1)
    mask = np.zeros((34, 36, 40), np.uint8)
    mask[3:31, 5:33, 7:35] = gland
    image = rng.normal(40, 10, mask.shape).astype(np.float32) + 60 * mask  # intensities must not matter
    m = oblique_ijk_to_ras(spacing=(64 / 28,) * 3, flip=(False, True, False))
    vol = slicer.util.addVolumeFromArray(image, m, "abdomen CT", "vtkMRMLScalarVolumeNode")
    seg = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "glands")
    sid = seg.GetSegmentation().AddEmptySegment("left_adrenal", "left adrenal", (0.9, 0.6, 0.2))
    slicer.util.updateSegmentBinaryLabelmapFromArray(mask, seg, sid, referenceVolumeNode=vol)
    return vol, seg, sid, mask, m


def test_classify_segment_gives_table_text_and_heatmap_overlay(slicer, gland):
    import MedAI
    from MedAILib.models import resolve_model
    from MedAILib.tasks.classification.pipeline import classify
    from MedAILib.core.volume import Volume

    vol, seg, sid, mask, m = _scene_case(slicer, gland)
    progress = []
    run = MedAI.MedAILogic().classify(vol, "adrenal_classifier", seg, sid, explain="gradcam", device="cpu",
                                      wait=True, progressCallback=lambda f, msg, e: progress.append(f))
    assert run.status == "done", run.errorText
    # the engine on the same mask, in this process, gives the same probabilities
    direct = classify(Volume(mask, m), resolve_model("adrenal_classifier"), device="cpu")
    assert run.classNames == ["normal", "hyperplasia"]
    np.testing.assert_allclose(run.probabilities, direct.probabilities, atol=1e-5)
    table = run.tableNode
    assert table.GetNumberOfRows() == 2 and table.GetColumnName(0) == "class" and table.GetColumnName(1) == "probability"
    assert [table.GetCellText(r, 0) for r in range(2)] == ["normal", "hyperplasia"]
    assert [float(table.GetCellText(r, 1)) for r in range(2)] == pytest.approx(direct.probabilities, abs=1e-4)
    assert run.predicted == direct.predicted and run.predicted in run.resultText
    # heat-map: a volume on the input's grid (compared by world position: this grid is left-handed, and
    # Slicer's reader reads a left-handed file with its K axis flipped), shown in colour over the input
    heat = run.heatmapVolume
    assert np.linalg.det(m[:3, :3]) < 0 and slicer.util.arrayFromVolume(heat).shape == mask.shape
    assert same_world_grid(heat, vol)
    shown = same_in_every_view()
    assert shown["foreground"] == heat.GetID() and shown["background"] == vol.GetID()
    assert shown["foregroundOpacity"] == pytest.approx(0.4)
    assert heat.GetDisplayNode().GetColorNodeID() is not None
    # near-zero attribution is not drawn (Slicer's display threshold), so the view is not tinted all over
    assert heat.GetDisplayNode().GetApplyThreshold() == 1 and heat.GetDisplayNode().GetLowerThreshold() == 0.05
    assert progress and max(progress) > 0.9


def test_roi_and_bad_requests(slicer, gland):
    import MedAI

    vol, seg, sid, mask, m = _scene_case(slicer, gland)
    logic = MedAI.MedAILogic()
    with pytest.raises(ValueError, match="segment"):
        logic.classify(vol, "adrenal_classifier", seg, None)
    roi = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "R")
    with pytest.raises(ValueError, match="not both"):
        logic.classify(vol, "adrenal_classifier", seg, sid, roiNode=roi)
    empty = seg.GetSegmentation().AddEmptySegment("empty", "empty", (0.1, 0.1, 0.1))
    slicer.util.updateSegmentBinaryLabelmapFromArray(np.zeros_like(mask), seg, empty, referenceVolumeNode=vol)
    with pytest.raises(ValueError, match="empty"):
        logic.classify(vol, "adrenal_classifier", seg, empty)
    # A binary image (the mask itself as the input volume) restricted by an ROI around the gland
    # gives the segment's result (an ROI away from it: test_classify.py checks the engine's error).
    from MedAILib.models import resolve_model
    from MedAILib.tasks.classification.pipeline import classify
    from MedAILib.core.volume import Volume

    binary = slicer.util.addVolumeFromArray(mask.astype(np.float32), m, "gland mask", "vtkMRMLScalarVolumeNode")
    centre = Volume(mask, m).ijk_to_ras_points(np.argwhere(mask).mean(0)[::-1][None])[0]
    roi.SetXYZ(*centre)
    roi.SetRadiusXYZ(45.0, 45.0, 45.0)
    run = logic.classify(binary, "adrenal_classifier", roiNode=roi, explain=None, device="cpu", wait=True)
    assert run.status == "done", run.errorText
    direct = classify(Volume(mask, m), resolve_model("adrenal_classifier"), device="cpu")
    np.testing.assert_allclose(run.probabilities, direct.probabilities, atol=1e-5)
    assert run.heatmapVolume is None and run.tableNode.GetNumberOfRows() == 2
