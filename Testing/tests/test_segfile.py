"""Slicer .seg.nrrd: written by MedAILib, read back by slicerio and pynrrd (independent readers)."""

import numpy as np
import pytest

from MedAILib.io import read_image, read_segmentation, write_segmentation
from MedAILib.core.volume import LabelInfo, Volume

HIPPO_TERM = ("Segmentation category and type - 3D Slicer General Anatomy list~SCT^123037004^Anatomical Structure"
              "~SCT^5001000^Hippocampus~^^~Anatomic codes - DICOM master list~^^~^^")
LIVER_TERM = ("Segmentation category and type - 3D Slicer General Anatomy list~SCT^123037004^Anatomical Structure"
              "~SCT^10200004^Liver~^^~Anatomic codes - DICOM master list~^^~^^")


@pytest.fixture
def labelmap(oblique_volume):
    arr = np.zeros(oblique_volume.shape, np.uint8)
    arr[1:4, 2:6, 3:8] = 1
    arr[5:8, 1:9, 2:10] = 2
    arr[0, 0, 0] = 7  # a value without a label table entry
    labels = [LabelInfo(1, "anterior hippocampus", (0.9, 0.2, 0.1), HIPPO_TERM),
              LabelInfo(2, "liver", (0.1, 0.5, 0.9), LIVER_TERM)]
    return oblique_volume.with_array(arr, labels=labels)


def test_slicerio_reads_what_we_write(tmp_path, labelmap):
    import slicerio

    path = tmp_path / "seg.seg.nrrd"
    write_segmentation(labelmap, path)
    seg = slicerio.read_segmentation(str(path))
    segs = {s["labelValue"]: s for s in seg["segments"]}
    assert set(segs) == {1, 2, 7}
    assert segs[1]["name"] == "anterior hippocampus" and segs[2]["name"] == "liver"
    np.testing.assert_allclose(segs[1]["color"], (0.9, 0.2, 0.1), atol=1e-4)
    np.testing.assert_allclose(segs[2]["color"], (0.1, 0.5, 0.9), atol=1e-4)
    from slicerio.segmentation import terminology_entry_to_string

    assert terminology_entry_to_string(segs[1]["terminology"]) == HIPPO_TERM
    assert segs[2]["terminology"]["type"] == ["SCT", "10200004", "Liver"]
    assert segs[2]["terminology"]["category"] == ["SCT", "123037004", "Anatomical Structure"]
    assert segs[7]["name"] == "label_7"
    # voxels (IJK order in slicerio) and geometry (IJK->LPS)
    np.testing.assert_array_equal(np.asarray(seg["voxels"]).transpose(2, 1, 0), labelmap.array)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ labelmap.ijk_to_ras
    np.testing.assert_allclose(seg["ijkToLPS"], lps, atol=1e-6)
    # per-segment extraction by name works as it does in Slicer-side tools
    liver = slicerio.extract_segments(seg, [("liver", 1)])
    assert int(np.count_nonzero(liver["voxels"])) == int(np.count_nonzero(labelmap.array == 2))


def test_pynrrd_header_geometry(tmp_path, labelmap):
    import nrrd

    path = tmp_path / "seg.seg.nrrd"
    write_segmentation(labelmap, path)
    data, header = nrrd.read(str(path))
    assert header["space"] in ("left-posterior-superior", "LPS")
    np.testing.assert_allclose(np.asarray(header["space directions"]).T,
                               np.diag([-1, -1, 1]) @ labelmap.ijk_to_ras[:3, :3], atol=1e-6)
    np.testing.assert_allclose(header["space origin"], np.diag([-1, -1, 1]) @ labelmap.origin, atol=1e-6)
    assert header["Segment0_Name"] == "anterior hippocampus"
    assert header["Segment0_LabelValue"] == "1"
    assert "SCT^5001000^Hippocampus" in header["Segment0_Tags"]


def test_our_reader_round_trip(tmp_path, labelmap):
    path = tmp_path / "seg.seg.nrrd"
    write_segmentation(labelmap, path)
    back = read_segmentation(path)
    np.testing.assert_array_equal(back.array, labelmap.array)
    np.testing.assert_allclose(back.ijk_to_ras, labelmap.ijk_to_ras, atol=1e-6)
    table = back.label_table()
    assert table[1].name == "anterior hippocampus" and table[1].terminology == HIPPO_TERM
    assert table[2].name == "liver"
    np.testing.assert_allclose(table[2].color, (0.1, 0.5, 0.9), atol=1e-4)
    assert read_image(path).label_table()[2].name == "liver"  # read_image dispatches on .seg.nrrd
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg.seg.nrrd"]


def test_overlapping_layers(tmp_path, oblique_volume):
    """A .seg.nrrd with two layers (overlapping segments, as Slicer writes them) reads as one labelmap."""
    import slicerio

    shape_ijk = oblique_volume.size_ijk
    voxels = np.zeros((2, *shape_ijk), np.uint8)
    voxels[0, 2:8, 2:6, 1:4] = 1   # layer 0: segment A (label 1)
    voxels[0, 9:12, 0:3, 0:2] = 2  # layer 0: segment B (label 2)
    voxels[1, 5:10, 4:9, 2:6] = 1  # layer 1: segment C overlaps A
    segments = [
        {"id": "A", "name": "tumour", "labelValue": 1, "layer": 0, "color": [1, 0, 0]},
        {"id": "B", "name": "oedema", "labelValue": 2, "layer": 0, "color": [0, 1, 0]},
        {"id": "C", "name": "vessel", "labelValue": 1, "layer": 1, "color": [0, 0, 1]},
    ]
    path = tmp_path / "layers.seg.nrrd"
    slicerio.write_segmentation(str(path), {
        "voxels": voxels, "ijkToLPS": np.diag([-1.0, -1.0, 1.0, 1.0]) @ oblique_volume.ijk_to_ras,
        "segments": segments, "containedRepresentationNames": ["Binary labelmap"],
        "masterRepresentation": "Binary labelmap"})
    vol = read_segmentation(path)
    assert vol.shape == oblique_volume.shape
    np.testing.assert_allclose(vol.ijk_to_ras, oblique_volume.ijk_to_ras, atol=1e-6)
    names = {l.name: l.value for l in vol.labels}
    assert set(names) == {"tumour", "oedema", "vessel"}
    assert len(set(names.values())) == 3  # distinct values although A and C share labelValue 1
    kji = lambda v: v.transpose(2, 1, 0)  # noqa: E731
    assert np.all(vol.array[kji(voxels[0] == 2)] == names["oedema"])
    assert np.all(vol.array[kji(voxels[1] == 1)] == names["vessel"])  # overlap goes to the later segment
    only_a = (voxels[0] == 1) & (voxels[1] == 0)
    assert np.all(vol.array[kji(only_a)] == names["tumour"])
    assert np.count_nonzero(vol.array) == np.count_nonzero(voxels.any(axis=0))


def test_labels_from_real_labelmap(tmp_path, data_dir):
    """A real hippocampus label file -> .seg.nrrd -> slicerio keeps every voxel and the grid."""
    import slicerio

    src = data_dir / "msd-hippocampus" / "labelsTr" / "hippocampus_001.nii.gz"
    if not src.exists():
        pytest.skip(f"{src} missing")
    lab = read_segmentation(src)
    assert [l.value for l in lab.labels] == [1, 2]
    lab.labels = [LabelInfo(1, "Anterior", (1, 0, 0), HIPPO_TERM), LabelInfo(2, "Posterior", (0, 0, 1), HIPPO_TERM)]
    write_segmentation(lab, tmp_path / "h.seg.nrrd")
    seg = slicerio.read_segmentation(str(tmp_path / "h.seg.nrrd"))
    np.testing.assert_array_equal(np.asarray(seg["voxels"]).transpose(2, 1, 0), lab.array)
    assert [s["name"] for s in seg["segments"]] == ["Anterior", "Posterior"]
    np.testing.assert_allclose(np.diag([-1, -1, 1, 1]) @ seg["ijkToLPS"], lab.ijk_to_ras, atol=1e-5)
