"""The real-MRML harness itself (Testing/slicer_real: slicer-core set up as the Slicer application
does): real classes, module logics, readers, subject hierarchy, the shims' parameter node, and
offscreen slice views drawn by Slicer's own displayable managers."""

from pathlib import Path

import numpy as np
import pytest

from slicer_support import real

REPO = Path(__file__).resolve().parents[2]
CASE = "hippocampus_001.nii.gz"
harness = real.harness()


@pytest.fixture(scope="module")
def hippocampus(data_dir):
    return data_dir / "msd-hippocampus" / "imagesTr" / CASE, data_dir / "msd-hippocampus" / "labelsTr" / CASE


def _ijk_to_ras(node):
    import vtk

    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def _segmentation_from_labels(slicer, labels, reference, names):
    """What MedAI's Slicer code does: one segment per label value, filled from a KJI array."""
    seg = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "fromArray")
    seg.CreateDefaultDisplayNodes()
    seg.SetReferenceImageGeometryParameterFromVolumeNode(reference)
    for value, name in names.items():
        segmentId = seg.GetSegmentation().AddEmptySegment(name, name)
        slicer.util.updateSegmentBinaryLabelmapFromArray((labels == value).astype(np.uint8), seg, segmentId, reference)
    return seg


def test_install_is_real_and_idempotent(slicer):
    h = harness.install()
    assert harness.install() is h
    assert slicer.mrmlScene is h.scene and slicer.mrmlScene.GetClassName() == "vtkMRMLScene"
    assert type(slicer.mrmlScene).__module__.startswith("slicer_core")  # Slicer's compiled class, not a Python model of it
    assert slicer.app.applicationLogic() is h.app_logic
    assert slicer.modules.segmentations.logic().GetClassName() == "vtkSlicerSegmentationsModuleLogic"
    assert slicer.modules.volumes.logic().GetClassName() == "vtkSlicerVolumesLogic"
    names = []
    slicer.modules.terminologies.logic().GetLoadedTerminologyNames(names)
    assert "Segmentation category and type - DICOM master list" in names
    assert {slicer.mrmlScene.GetNodeByID(f"vtkMRMLSliceNode{v}").GetOrientation() for v in ("Red", "Yellow", "Green")} \
        == {"Axial", "Sagittal", "Coronal"}
    assert slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode") == 3


def test_load_volume_and_subject_hierarchy(slicer, hippocampus):
    image, _ = hippocampus
    volume = slicer.util.loadVolume(str(image))
    assert volume.GetClassName() == "vtkMRMLScalarVolumeNode" and volume.GetName() == "hippocampus_001"
    assert slicer.util.arrayFromVolume(volume).shape == (35, 51, 35)  # KJI
    sh = slicer.mrmlScene.GetSubjectHierarchyNode()
    item = sh.GetItemByDataNode(volume)
    assert item and sh.GetItemParent(item) == sh.GetSceneItemID()
    # loading shows the volume, as Slicer's reader does (selection node + PropagateVolumeSelection)
    assert slicer.mrmlScene.GetNodeByID("vtkMRMLSliceCompositeNodeRed").GetBackgroundVolumeID() == volume.GetID()
    slicer.mrmlScene.RemoveNode(volume)
    assert not sh.GetItemByDataNode(volume)


def test_segmentation_from_labelmap_array(slicer, hippocampus):
    image, label = hippocampus
    volume = slicer.util.loadVolume(str(image))
    labels = slicer.util.arrayFromVolume(slicer.util.loadLabelVolume(str(label), {"show": False})).copy()
    seg = _segmentation_from_labels(slicer, labels, volume, {1: "anterior", 2: "posterior"})
    assert seg.GetSegmentation().GetSegmentIDs() == ("anterior", "posterior")  # a tuple in real Slicer
    for value, segmentId in ((1, "anterior"), (2, "posterior")):
        back = slicer.util.arrayFromSegmentBinaryLabelmap(seg, segmentId, volume)
        assert back.shape == labels.shape
        assert np.array_equal(back > 0, labels == value)


def test_load_seg_nrrd_written_by_slicerio(slicer, hippocampus, tmp_path):
    import slicerio
    image, label = hippocampus
    volume = slicer.util.loadVolume(str(image))
    labels = slicer.util.arrayFromVolume(slicer.util.loadLabelVolume(str(label), {"show": False})).copy()
    ijkToLPS = np.diag([-1.0, -1.0, 1.0, 1.0]) @ _ijk_to_ras(volume)
    path = tmp_path / "hippo.seg.nrrd"
    slicerio.write_segmentation(str(path), {
        "voxels": labels.transpose(2, 1, 0), "ijkToLPS": ijkToLPS,  # slicerio wants IJK order, LPS
        "segments": [{"id": "Segment_1", "labelValue": 1, "layer": 0, "name": "anterior", "color": [1.0, 0.0, 0.0]},
                     {"id": "Segment_2", "labelValue": 2, "layer": 0, "name": "posterior", "color": [0.0, 0.0, 1.0]}]})
    assert slicer.app.coreIOManager().fileType(str(path)) == "SegmentationFile"
    seg = slicer.util.loadSegmentation(str(path))
    assert seg.GetClassName() == "vtkMRMLSegmentationNode"
    segmentation = seg.GetSegmentation()
    assert [segmentation.GetSegment(s).GetName() for s in segmentation.GetSegmentIDs()] == ["anterior", "posterior"]
    assert segmentation.GetSegment("Segment_1").GetColor() == pytest.approx((1.0, 0.0, 0.0))
    assert np.array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(seg, "Segment_2", volume) > 0, labels == 2)
    assert slicer.mrmlScene.GetSubjectHierarchyNode().GetItemByDataNode(seg)


@pytest.mark.parametrize("view", ["Red", "Yellow", "Green"])
def test_rendered_overlay_sits_on_the_label(slicer, hippocampus, tmp_path, view):
    image, label = hippocampus
    volume = slicer.util.loadVolume(str(image))
    labels = slicer.util.arrayFromVolume(slicer.util.loadLabelVolume(str(label), {"show": False})).copy()
    seg = _segmentation_from_labels(slicer, labels, volume, {1: "anterior"})
    seg.GetSegmentation().GetSegment("anterior").SetColor(1.0, 0.0, 0.0)
    k, j, i = np.argwhere(labels == 1).mean(axis=0)
    centroid = (_ijk_to_ras(volume) @ [i, j, k, 1.0])[:3]

    out = harness.render_slice_png(volume, seg, view=view, path=tmp_path / f"{view}.png", offset_ras=centroid)
    assert Path(out.path).stat().st_size > 0
    rgb = out.rgb.astype(int)
    reddish = (rgb[..., 0] - np.maximum(rgb[..., 1], rgb[..., 2])) > 40  # the red segment over grey MRI
    row, col = out.ras_to_pixel(*centroid)
    assert reddish[max(row - 6, 0):row + 7, max(col - 6, 0):col + 7].any(), f"no overlay near the centroid in {view}"
    rows, cols = np.nonzero(reddish)
    assert abs(rows.mean() - row) < 12 and abs(cols.mean() - col) < 12  # the overlay is around the label

    seg.GetDisplayNode().SetVisibility(False)  # without the overlay the same view has no red pixels
    plain = harness.render_slice_png(volume, None, view=view, offset_ras=centroid).rgb.astype(int)
    assert not ((plain[..., 0] - np.maximum(plain[..., 1], plain[..., 2])) > 40).any()


def test_project_modules_load_with_the_shims(slicer):
    """MedAI's three module files import and their Logic works on real MRML."""
    import sys

    modules = {}
    for name in ("MedAI", "MedAISegment", "MedAIFusion"):  # loaded by the fixture as Slicer's loader does
        modules[name] = sys.modules[name]
        assert slicer.modules.__dict__[name.lower()].title == getattr(slicer.modules, f"{name}Instance").parent.title
        assert name in slicer.selfTests
    logic = modules["MedAISegment"].MedAISegmentLogic()
    params = logic.getParameterNode()
    raw = params.parameterNode
    assert raw.GetClassName() == "vtkMRMLScriptedModuleNode" and raw.GetAttribute("ModuleName") == "MedAISegment"
    assert logic.getParameterNode().parameterNode is raw  # singleton parameter node
    assert raw.GetParameter("fast") == "False"  # defaults written as Slicer's serializers write them
    params.fast = True
    assert raw.GetParameter("fast") == "True" and params.fast is True
    with pytest.raises(TypeError):
        params.modelId = 3
    volume = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    params.inputVolume0 = volume
    assert raw.GetNodeReferenceID("inputVolume0") == volume.GetID() and params.inputVolume0 is volume
    with pytest.raises(AttributeError):  # widgets exist only as the .ui doubles (slicer_real.widgets)
        import qt

        qt.QPushButton
