"""Segment statistics and uncertainty in Slicer (issue 16): the real engine on a real hippocampus
case through MedAISegmentLogic gives a table node with one row per segment whose volumes agree with
the imported segments, and (test-time augmentation) an uncertainty volume on the input's grid shown
in colour over the input, with a per-segment confidence in the table."""

import json

import numpy as np

from MedAILib.core.paths import resources_dir


def _case():
    split = json.loads((resources_dir() / "Models" / "hippocampus_unet" / "split.json").read_text())
    return split["validation"][0]


def _column(table, title):
    t = table.GetTable()
    a = t.GetColumnByName(title)
    assert a is not None, f"no column {title!r}"
    return [a.GetValue(i) for i in range(t.GetNumberOfRows())]


def test_statistics_table_and_uncertainty_overlay(slicer, data_dir):
    import MedAISegment

    volume = slicer.util.loadVolume(str(data_dir / "msd-hippocampus" / "imagesTr" / f"{_case()}.nii.gz"))
    before = slicer.util.arrayFromVolume(volume).copy()
    run = MedAISegment.MedAISegmentLogic().process([volume], None, "hippocampus_unet", device="cpu", wait=True,
                                                   timeout=300, uncertainty=True)
    seg, table = run.outputSegmentation, run.statisticsTable
    assert table is not None and table.IsA("vtkMRMLTableNode") and table.GetScene() is slicer.mrmlScene
    names = _column(table, "Segment")
    assert sorted(names) == ["anterior", "posterior"]
    spacing = np.prod(volume.GetSpacing())
    segmentation = seg.GetSegmentation()
    for name, voxels, ml in zip(names, _column(table, "Voxels"), _column(table, "Volume (mL)")):
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(seg, segmentation.GetSegmentIdBySegmentName(name), volume)
        assert int(mask.sum()) == voxels > 50
        assert abs(ml - voxels * spacing / 1000) < 1e-3
    confidence = _column(table, "Confidence")
    assert all(0.0 < c <= 1.0 for c in confidence), confidence
    t = table.GetTable()
    means = [t.GetColumnName(i) for i in range(t.GetNumberOfColumns()) if t.GetColumnName(i).endswith(" mean")]
    assert len(means) == 1 and all(np.isfinite(_column(table, means[0]))), means  # one model input

    unc = run.uncertaintyVolume
    assert unc is not None and unc.GetImageData().GetDimensions() == volume.GetImageData().GetDimensions()
    u = slicer.util.arrayFromVolume(unc)
    assert np.isfinite(u).all() and u.min() >= 0 and u.max() > 0
    composites = slicer.util.getNodesByClass("vtkMRMLSliceCompositeNode")
    assert composites and all(c.GetForegroundVolumeID() == unc.GetID() for c in composites)
    assert all(c.GetBackgroundVolumeID() == volume.GetID() for c in composites)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(volume), before)


def test_no_table_when_not_asked(slicer, data_dir):
    import MedAISegment

    volume = slicer.util.loadVolume(str(data_dir / "msd-hippocampus" / "imagesTr" / f"{_case()}.nii.gz"))
    run = MedAISegment.MedAISegmentLogic().process([volume], None, "hippocampus_unet", device="cpu", wait=True,
                                                   timeout=300, statistics=False)
    assert run.statisticsTable is None and run.uncertaintyVolume is None
    assert not slicer.util.getNodesByClass("vtkMRMLTableNode")
