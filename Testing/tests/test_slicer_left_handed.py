"""Left-handed NIfTI files (qfac = -1) through Slicer's real reader: the result lands on the image.

Slicer's volume reader reads a left-handed file with its K axis flipped (another IJK->RAS and a
K-reversed array; the same world positions), while MedAILib's reader keeps the file's order
(../shared/slicer-api/real-mrml.md). So results are compared by world position, never by index
across the two readers; these tests would fail if anything compared them by index, or if Slicer's
reader were not the one used.

1. A real left-handed file: an ISLES 2022 diffusion image and its lesion mask. An engine script (the
   engine's own reader and resampler) puts the lesion mask onto the grid of the volume the Logic
   hands over, as ``medai segment`` puts its result; the imported segment must cover the lesion as
   Slicer reads the mask file.
2. The real engine on a real hippocampus case stored left-handed (same voxels and world positions as
   the right-handed original): the segments land on the reference label (Dice as on the original).
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from slicer_support.geometry import dice, ijk_to_ras, voxel_ras

ISLES = "isles22-stroke/sub-strokecase0009/sub-strokecase0009_ses-0001_{}.nii.gz"
MASK_ENGINE = """
import json, os, sys
from MedAILib.core.volume import LabelInfo
from MedAILib.io import read_image, write_segmentation
from MedAILib.runtime.resample import resample_to
args = sys.argv[1:]
image, out = read_image(args[1]), args[args.index("-o") + 1]
mask = read_image(os.environ["LESION_MASK"])  # the engine's reader: the file's own index order
on_input = resample_to(mask, image, "nearest")  # by world position onto the grid it was given
labels = [LabelInfo(1, "lesion", (1.0, 0.8, 0.0))]
write_segmentation(on_input.with_array((on_input.array > 0).astype("uint8"), labels=labels), out)
print(json.dumps({"event": "done", "outputs": [out], "failed": []}), flush=True)
"""


def _left_handed(path) -> bool:
    import nibabel

    return float(nibabel.load(str(path)).header["pixdim"][0]) < 0


def _check_slicer_reads_k_flipped(slicer, node, path):
    """What Slicer's reader does with a left-handed file, against MedAILib's reader."""
    from MedAILib.io import read_image

    engine = read_image(path)
    ours = slicer.util.arrayFromVolume(node)
    assert ours.shape == engine.array.shape
    assert not np.array_equal(ours, engine.array), "index for index equal: not read as Slicer reads left-handed files"
    np.testing.assert_array_equal(ours, engine.array[::-1])  # K reversed
    assert np.linalg.det(ijk_to_ras(node)[:3, :3]) > 0 > np.linalg.det(engine.ijk_to_ras[:3, :3])
    kji = np.array([[0, 0, 0], [3, 5, 7], [engine.array.shape[0] - 1, 2, 1]])
    flipped = kji.copy()
    flipped[:, 0] = engine.array.shape[0] - 1 - kji[:, 0]
    engine_ras = (engine.ijk_to_ras @ np.c_[flipped[:, ::-1], np.ones(3)].T).T[:, :3]
    np.testing.assert_allclose(voxel_ras(node, kji), engine_ras, atol=1e-3)  # same voxel, same world position


def test_real_left_handed_nifti_the_segment_lands_on_the_lesion(slicer, data_dir, tmp_path, monkeypatch):
    import MedAISegment

    image_path, mask_path = data_dir / ISLES.format("dwi"), data_dir / ISLES.format("msk")
    assert _left_handed(image_path) and _left_handed(mask_path)
    volume = slicer.util.loadVolume(str(image_path))
    _check_slicer_reads_k_flipped(slicer, volume, image_path)

    engine = tmp_path / "mask_engine.py"
    engine.write_text(MASK_ENGINE)
    monkeypatch.setenv("LESION_MASK", str(mask_path))
    catalogue = tmp_path / "catalogue.json"
    from slicer_support.catalogue import fake_segmentation_entry

    entry = fake_segmentation_entry("lesion_copy", [{"value": 1, "name": "lesion", "color": [1.0, 0.8, 0.0]}])
    catalogue.write_text(json.dumps({"version": 1, "models": [entry]}))
    logic = MedAISegment.MedAISegmentLogic()
    logic.enginePrefix = [sys.executable, str(engine)]
    run = logic.process([volume], None, "lesion_copy", catalogue=catalogue, wait=True, timeout=120)
    seg = run.outputSegmentation
    segment_id = seg.GetSegmentation().GetSegmentIdBySegmentName("lesion")

    truth_node = slicer.util.loadLabelVolume(str(mask_path), {"show": False})  # Slicer's reader again
    truth = slicer.util.arrayFromVolume(truth_node) > 0
    assert truth.sum() == 523
    on_truth_grid = slicer.util.arrayFromSegmentBinaryLabelmap(seg, segment_id, truth_node) > 0
    assert dice(on_truth_grid, truth) == 1.0
    # the segment's centre is the lesion's centre in the world
    centre = voxel_ras(truth_node, np.argwhere(truth).mean(0))
    mask_on_volume = slicer.util.arrayFromSegmentBinaryLabelmap(seg, segment_id, volume) > 0
    np.testing.assert_allclose(voxel_ras(volume, np.argwhere(mask_on_volume).mean(0)), centre, atol=0.5)


def _write_left_handed(source, target):
    """``source`` (a right-handed NIfTI) stored left-handed: K reversed, affine adjusted so every
    voxel keeps its world position, qform/sform with qfac = -1."""
    import nibabel

    img = nibabel.load(str(source))
    data = np.asarray(img.dataobj)[:, :, ::-1]
    affine = img.affine.copy()
    affine[:3, 3] = (img.affine @ [0, 0, img.shape[2] - 1, 1])[:3]
    affine[:3, 2] = -img.affine[:3, 2]
    out = nibabel.Nifti1Image(data, affine, header=img.header)
    out.set_qform(affine, code=1)
    out.set_sform(affine, code=1)
    nibabel.save(out, str(target))
    assert _left_handed(target)
    return target


def test_real_engine_on_a_left_handed_hippocampus_lands_on_the_reference(slicer, data_dir, tmp_path):
    import MedAISegment
    from MedAISlicerLib.models import find_model

    case = "hippocampus_001"
    folder = data_dir / "msd-hippocampus"
    image = _write_left_handed(folder / "imagesTr" / f"{case}.nii.gz", tmp_path / "image.nii.gz")
    label = _write_left_handed(folder / "labelsTr" / f"{case}.nii.gz", tmp_path / "label.nii.gz")
    volume = slicer.util.loadVolume(str(image))
    _check_slicer_reads_k_flipped(slicer, volume, image)
    original = slicer.util.loadVolume(str(folder / "imagesTr" / f"{case}.nii.gz"), {"show": False})
    np.testing.assert_allclose(ijk_to_ras(volume), ijk_to_ras(original), atol=1e-4)  # Slicer: the same grid

    run = MedAISegment.MedAISegmentLogic().process([volume], None, "hippocampus_unet", device="cpu", wait=True,
                                                   timeout=300)
    seg = run.outputSegmentation
    truth_node = slicer.util.loadLabelVolume(str(label), {"show": False})
    truth = slicer.util.arrayFromVolume(truth_node)
    for lab in find_model("hippocampus_unet").labels:
        segment_id = seg.GetSegmentation().GetSegmentIdBySegmentName(lab.name)
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(seg, segment_id, truth_node)
        assert dice(mask, truth == lab.value) > 0.6, f"{lab.name}: Dice {dice(mask, truth == lab.value):.3f}"
