"""MedAI "Detect lesions" Logic on real MRML (slicer-core): boxes from the engine become markups ROI
nodes (``vtkMRMLMarkupsROINode``) named with label and score, with their centre and size in RAS mm,
on a real LIDC CT slab loaded as a Slicer volume node.

1. The ROI nodes made from the readers' reference boxes sit on the nodule: the ROI centre, taken
   back through the Slicer volume node's own RAS->IJK matrix, is the centre voxel of the box.
2. End to end: ``MedAILogic().detect`` runs ``medai detect`` in its own process (a small RetinaNet
   bundle with random weights, trusted here) and the ROI nodes equal the boxes the engine wrote.
"""

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def slab(data_dir):
    from MedAILib.io import read_image
    from MedAILib.tasks.detection import lidc

    root = data_dir / "lidc-idri-subset"
    volume = read_image(lidc.series_dir(root, "LIDC-IDRI-0001"))
    return volume, lidc.reference_boxes(root, "LIDC-IDRI-0001", volume)


def _node(slicer, volume, name="LIDC-IDRI-0001"):
    return slicer.util.addVolumeFromArray(volume.array.astype(np.float32), volume.ijk_to_ras, name,
                                          "vtkMRMLScalarVolumeNode")


def _ras_to_ijk(slicer, node, point):
    import vtk

    m = vtk.vtkMatrix4x4()
    node.GetRASToIJKMatrix(m)
    return (slicer.util.arrayFromVTKMatrix(m) @ np.append(point, 1.0))[:3]


def test_reference_boxes_become_roi_nodes_on_the_nodule(slicer, slab):
    from MedAILib.tasks.detection.boxes import Box
    from MedAISlicerLib.tasks.detection import roi_nodes_from_boxes

    volume, refs = slab
    node = _node(slicer, volume)
    boxes = []
    for r, score in zip(refs, (0.9,)):
        centre = [(a + b) / 2 for a, b in zip(r["voxel_min"], r["voxel_max"])]
        boxes.append(Box("nodule", score, r["ras_min_mm"], r["ras_max_mm"], r["voxel_min"], r["voxel_max"],
                         centre).to_dict())
    boxes.append(dict(boxes[0], score=0.3, center_ras_mm=[0.0, 0.0, -110.0], size_ras_mm=[5.0, 6.0, 7.0]))
    rois = roi_nodes_from_boxes(boxes, node, "test-model")
    assert [r.GetClassName() for r in rois] == ["vtkMRMLMarkupsROINode"] * 2
    assert [r.GetName() for r in rois] == ["nodule 0.90", "nodule 0.30"]  # highest score first
    assert rois[0].GetAttribute("MedAI.detection.score") == "0.900000"
    assert rois[0].GetAttribute("MedAI.detection.model") == "test-model"
    c, size = [0.0] * 3, [0.0] * 3
    rois[0].GetCenter(c)
    size = list(rois[0].GetSize())
    np.testing.assert_allclose(c, boxes[0]["center_ras_mm"], atol=1e-3)
    np.testing.assert_allclose(size, boxes[0]["size_ras_mm"], atol=1e-3)
    # through Slicer's own matrix, the ROI centre is the centre voxel of the readers' box (a 32 mm nodule)
    ijk = _ras_to_ijk(slicer, node, c)
    np.testing.assert_allclose(ijk, boxes[0]["center_ijk"], atol=0.51)
    k, j, i = np.round(ijk[::-1]).astype(int)
    lung = float(np.median(volume.array[:, 100:140, 100:140]))
    assert slicer.util.arrayFromVolume(node)[k, j, i] > lung + 300  # soft tissue, not aerated lung
    rois[1].GetCenter(c)
    np.testing.assert_allclose(c, [0.0, 0.0, -110.0], atol=1e-3)
    np.testing.assert_allclose(rois[1].GetSize(), [5.0, 6.0, 7.0], atol=1e-3)


def test_logic_detect_makes_one_roi_per_engine_box(slicer, slab, tmp_path):
    import MedAI
    from MedAILib.core.volume import Volume
    from MedAILib.models.trust import trust
    from MedAILib.tasks.detection import trainer

    torch.manual_seed(0)
    bundle = trainer.write_bundle(tmp_path / "tiny_detector", trainer.build_detector().network.state_dict(),
                                  {"random_weights": True})
    trust(bundle)
    volume, _ = slab
    m = volume.ijk_to_ras.copy()  # a 96 x 96 crop around the nodule keeps the engine run short
    m[:3, 3] = volume.ijk_to_ras_points([[260, 300, 0]])[0]
    crop = Volume(volume.array[:, 300:396, 260:356].copy(), m)
    node = _node(slicer, crop, "crop")
    logic = MedAI.MedAILogic()
    with pytest.raises(ValueError, match="between 0 and 1"):
        logic.detect(node, str(bundle), minScore=2)
    with pytest.raises(ValueError, match="input volume"):
        logic.detect(None, str(bundle))
    progress = []
    run = logic.detect(node, str(bundle), minScore=0.0, maxBoxes=3, device="cpu", wait=True,
                       progressCallback=lambda f, msg, e: progress.append(f))
    assert run.status == "done", run.errorText
    written = run.boxes  # the engine's boxes.json (its temporary folder is gone after the run)
    assert 1 <= len(written) <= 3 and len(run.roiNodes) == len(written)
    rois = slicer.util.getNodesByClass("vtkMRMLMarkupsROINode")
    assert len(rois) == len(written)
    for roi, box in zip(run.roiNodes, written):
        c = [0.0] * 3
        roi.GetCenter(c)
        np.testing.assert_allclose(c, box["center_ras_mm"], atol=1e-3)
        np.testing.assert_allclose(roi.GetSize(), box["size_ras_mm"], atol=1e-3)
        assert roi.GetName() == f"{box['label']} {box['score']:.2f}"
        ijk = _ras_to_ijk(slicer, node, c)  # the centre lies in the volume, at the engine's voxel centre
        np.testing.assert_allclose(ijk, box["center_ijk"], atol=0.51)
    assert progress and max(p for p in progress if p is not None) > 0.9
