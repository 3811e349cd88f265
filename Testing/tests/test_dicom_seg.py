"""DICOM SEG output (`medai segment --format dicom-seg`) from a real DICOM series, read back with
highdicom and pydicom: frames, referenced source instances, segment codes, algorithm identification,
and every segment's voxels equal the .seg.nrrd's at the same patient positions.

Input: the HippoCrop DICOM series of TCIA PGBM-003 (a hippocampus crop, see SOURCES.md) with the
shipped hippocampus model.
"""

from __future__ import annotations

import warnings

import numpy as np
import pydicom
import pytest

from MedAILib.cli import main
from MedAILib.core import geometry
from MedAILib.io import read_image, read_segmentation
from MedAILib.io.dicom_seg import read_dicom_seg_labelmap
from MedAILib.models.catalogue import load_catalogue

warnings.filterwarnings("ignore", module="monai")
CROP = "tcia-brain-tumor-progression-dicom/PGBM-003/11_HCropVolume"


@pytest.fixture(autouse=True)
def medai_home(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDAI_HOME", str(tmp_path / "medai_home"))


@pytest.fixture(scope="module")
def outputs(data_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("seg")
    common = ["--device", "cpu", "--progress", "none"]
    assert main(["segment", str(data_dir / CROP), "-o", str(tmp / "crop.dcm"), "--format", "dicom-seg", *common]) == 0
    assert main(["segment", str(data_dir / CROP), "-o", str(tmp / "crop.seg.nrrd"), *common]) == 0
    return tmp / "crop.dcm", tmp / "crop.seg.nrrd"


def test_dicom_seg_reads_back_with_highdicom_codes_and_algorithm(outputs, data_dir):
    import highdicom as hd

    dcm, nrrd = outputs
    seg = hd.seg.segread(str(dcm))
    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    entry = load_catalogue().get("hippocampus_unet")
    assert seg.get_segment_numbers() == [1, 2]
    for number, label in zip((1, 2), entry.label_infos):
        d = seg.get_segment_description(number)
        assert d.segment_label == label.name
        parts = label.terminology.split("~")
        cat_code, type_code = parts[1].split("^"), parts[2].split("^")
        assert (d.segmented_property_category.value, d.segmented_property_category.scheme_designator) == \
            (cat_code[1], cat_code[0])
        assert (d.segmented_property_type.value, d.segmented_property_type.scheme_designator) == \
            (type_code[1], type_code[0])
        algo = d.algorithm_identification[0]
        assert algo.AlgorithmName == "hippocampus_unet" and algo.AlgorithmVersion == entry.raw["version"]
    # the referenced series is the source series, every referenced instance is one of its files
    sources = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID: f
               for f in sorted((data_dir / CROP).iterdir())}
    src_series = pydicom.dcmread(next(iter(sources.values())), stop_before_pixels=True).SeriesInstanceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == src_series
    assert {i.ReferencedSOPInstanceUID for i in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence} \
        <= set(sources)
    # one frame per (slice, segment) where the segment is present, each at its source slice's position
    labels = read_segmentation(nrrd)
    expected_frames = sum(int(np.any(labels.array[k] == v)) for k in range(labels.shape[0]) for v in (1, 2))
    assert int(seg.NumberOfFrames) == expected_frames
    for frame in seg.PerFrameFunctionalGroupsSequence:
        ref_uid = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        src = pydicom.dcmread(sources[ref_uid], stop_before_pixels=True)
        np.testing.assert_allclose([float(x) for x in frame.PlanePositionSequence[0].ImagePositionPatient],
                                   [float(x) for x in src.ImagePositionPatient], atol=1e-3)


def test_every_segment_voxel_equals_the_seg_nrrd_at_the_same_position(outputs, data_dir):
    """Frames placed by their ImagePositionPatient (pydicom) on the source grid give back exactly the
    .seg.nrrd label map, and the .seg.nrrd's own positions are those of the DICOM series."""
    dcm, nrrd = outputs
    source = read_image(data_dir / CROP)
    labels = read_segmentation(nrrd)
    assert labels.same_grid(source)
    back = read_dicom_seg_labelmap(dcm, source)
    assert np.array_equal(back, labels.array.astype(back.dtype))
    assert set(np.unique(back)) == {0, 1, 2}
    # position check by hand with pydicom: voxel (0, 0) of every frame is its ImagePositionPatient
    ds = pydicom.dcmread(dcm)
    ijk_to_lps = geometry.ijk_to_lps_from_ijk_to_ras(labels.ijk_to_ras)
    for i, frame in enumerate(ds.PerFrameFunctionalGroupsSequence):
        ipp = np.array(frame.PlanePositionSequence[0].ImagePositionPatient, float)
        k = int(round((np.linalg.inv(ijk_to_lps) @ np.append(ipp, 1))[2]))
        number = frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        assert np.array_equal(ds.pixel_array[i] > 0, labels.array[k] == number)


def test_dicom_seg_refused_for_a_nifti_input_before_running(data_dir, tmp_path, capsys):
    img = data_dir / "msd-hippocampus/imagesTr/hippocampus_003.nii.gz"
    rc = main(["segment", str(img), "-o", str(tmp_path / "x.dcm"), "--format", "dicom-seg", "--progress", "none"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "needs DICOM inputs" in err and "hippocampus_003.nii.gz" in err
    assert not (tmp_path / "x.dcm").exists()
