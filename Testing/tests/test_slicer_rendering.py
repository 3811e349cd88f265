"""A slice view rendered by Slicer's own code (slice logic + segmentations displayable manager,
offscreen; Testing/slicer_real.harness.render_slice_png) shows MedAISegment's result on the
structure: the overlay's pixels are centred where the reference label is in that view.

Also what docs/images/slicer_*.png are made with (Testing/tools/render_slicer_views.py)."""

import json

import numpy as np

from slicer_support import real
from slicer_support.geometry import voxel_ras

harness = real.harness()


def _overlay_pixels(volume, seg, centre, view="Red"):
    """Pixels the segmentation changes in the rendered view (rendered with and without it)."""
    seg.GetDisplayNode().SetVisibility(True)
    shown = harness.render_slice_png(volume, seg, view=view, offset_ras=centre)
    seg.GetDisplayNode().SetVisibility(False)
    plain = harness.render_slice_png(volume, None, view=view, offset_ras=centre)
    changed = np.abs(shown.rgb.astype(int) - plain.rgb.astype(int)).sum(-1) > 30
    return np.argwhere(changed), shown


def test_rendered_result_sits_on_the_reference_structure(slicer, data_dir):
    import MedAISegment

    from MedAILib.core.paths import resources_dir

    case = json.loads((resources_dir() / "Models" / "hippocampus_unet" / "split.json").read_text())["validation"][0]
    folder = data_dir / "msd-hippocampus"
    volume = slicer.util.loadVolume(str(folder / "imagesTr" / f"{case}.nii.gz"))
    result = MedAISegment.MedAISegmentLogic().process([volume], None, "hippocampus_unet", device="cpu", wait=True,
                                                      timeout=300).outputSegmentation
    truth = slicer.util.loadLabelVolume(str(folder / "labelsTr" / f"{case}.nii.gz"), {"show": False})
    reference = slicer.util.loadSegmentation(str(folder / "labelsTr" / f"{case}.nii.gz"), {"name": "reference"})
    # Slicer gives segments read from a label file random colours: one close to the image's grey
    # barely changes the pixels it covers (the test was flaky). Saturated colours always show.
    segments = reference.GetSegmentation()
    for i, colour in zip(range(segments.GetNumberOfSegments()), [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)]):
        segments.GetNthSegment(i).SetColor(*colour)
    labels = slicer.util.arrayFromVolume(truth)
    centre = voxel_ras(truth, np.argwhere(labels > 0).mean(0))[0]

    result.GetDisplayNode().SetVisibility(False)
    ref_pixels, view = _overlay_pixels(volume, reference, centre)
    res_pixels, _ = _overlay_pixels(volume, result, centre)
    assert len(ref_pixels) > 200 and len(res_pixels) > 200, "no overlay drawn"

    # where the reference label's voxels in this axial slice project (Slicer's own XY<->RAS matrices)
    kji = np.argwhere(labels > 0)
    ras = voxel_ras(truth, kji)
    spacing = np.linalg.norm(voxel_ras(truth, [[1, 0, 0]]) - voxel_ras(truth, [[0, 0, 0]]))
    in_slice = ras[np.abs(ras[:, 2] - centre[2]) <= spacing / 2]
    expected = np.array([view.ras_to_pixel(*p) for p in in_slice]).mean(0)
    mm_per_pixel = np.linalg.norm(np.subtract(view.ras_to_pixel(*(centre + [10, 0, 0])), view.ras_to_pixel(*centre))) / 10
    mm_per_pixel = 1 / mm_per_pixel
    # the reference overlay is drawn where its voxels are (within 2 pixels) ...
    assert np.linalg.norm(ref_pixels.mean(0) - expected) < 2.0, (ref_pixels.mean(0), expected)
    # ... and MedAI's result is drawn on the same structure (centroids within 1.5 mm in the view)
    offset_mm = np.linalg.norm(res_pixels.mean(0) - expected) * mm_per_pixel
    assert offset_mm < 1.5, f"result overlay {offset_mm:.2f} mm from the reference structure"
    # and it overlaps it: most result pixels are reference pixels
    ref_set = {tuple(p) for p in ref_pixels}
    assert np.mean([tuple(p) in ref_set for p in res_pixels]) > 0.7
