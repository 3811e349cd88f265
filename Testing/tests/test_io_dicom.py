"""DICOM input on real series: geometry checked against pydicom, slice order, several series, JPEG 2000."""

import random
import shutil

import numpy as np
import pytest

from MedAILib.core.errors import InputError
from MedAILib.io import list_dicom_series, read_image, write_image

LPS = np.diag([-1.0, -1.0, 1.0])


@pytest.fixture(scope="module")
def pgbm(data_dir):
    folder = data_dir / "tcia-brain-tumor-progression-dicom" / "PGBM-003"
    if not folder.is_dir():
        pytest.skip(f"{folder} missing")
    return folder


@pytest.fixture(scope="module")
def t2_series(pgbm):
    series = list_dicom_series(pgbm)
    t2 = [s for s in series if s.description == "T2_reg"]
    assert len(t2) == 1, [(s.uid, s.description) for s in series]
    return t2[0]


def _pydicom_stack(files):
    """Independent reference: pydicom datasets sorted by position along the slice normal."""
    import pydicom

    ds = [pydicom.dcmread(f) for f in files]
    iop = np.array(ds[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    ds.sort(key=lambda d: float(np.dot(normal, np.array(d.ImagePositionPatient, dtype=float))))
    arr = np.stack([pydicom.pixels.apply_modality_lut(d.pixel_array, d) for d in ds])
    return ds, arr, iop


def test_t2_series_matches_pydicom(t2_series, pgbm):
    vol = read_image(pgbm, series_uid=t2_series.uid)
    assert vol.metadata["series_uid"] == t2_series.uid
    assert vol.size_ijk == (280, 320, 22)
    ds, ref, iop = _pydicom_stack(t2_series.files)
    np.testing.assert_array_equal(vol.array, ref.astype(vol.array.dtype))
    # every slice's ImagePositionPatient (LPS) is the RAS position of voxel (0, 0, k), flipped
    for k, d in enumerate(ds):
        ras = vol.ijk_to_ras_points([[0, 0, k]])[0]
        np.testing.assert_allclose(LPS @ ras, np.array(d.ImagePositionPatient, float), atol=1e-3)
    # I runs along the row direction with the column spacing, J along the column direction
    row_spacing, col_spacing = (float(x) for x in ds[0].PixelSpacing)
    np.testing.assert_allclose(LPS @ vol.ijk_to_ras[:3, 0], iop[:3] * col_spacing, atol=1e-5)
    np.testing.assert_allclose(LPS @ vol.ijk_to_ras[:3, 1], iop[3:] * row_spacing, atol=1e-5)
    assert vol.spacing[2] == pytest.approx(6.5, abs=0.01)  # 5 mm slices, 6.5 mm apart (SOURCES.md)


def test_dicom_to_nifti_round_trip(t2_series, pgbm, tmp_path):
    vol = read_image(pgbm, series_uid=t2_series.uid)
    write_image(vol, tmp_path / "t2.nii.gz")
    back = read_image(tmp_path / "t2.nii.gz")
    np.testing.assert_array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.ijk_to_ras, vol.ijk_to_ras, atol=1e-5)
    import nibabel as nib

    np.testing.assert_allclose(nib.load(str(tmp_path / "t2.nii.gz")).affine, vol.ijk_to_ras, atol=1e-4)


def test_slices_sorted_by_position_not_name(t2_series, pgbm, tmp_path):
    ref = read_image(pgbm, series_uid=t2_series.uid)
    files = list(t2_series.files)
    names = [f"img{n:03d}.dcm" for n in range(len(files))]
    random.Random(3).shuffle(names)
    for src, name in zip(files, names):
        shutil.copy(src, tmp_path / name)
    shuffled = read_image(tmp_path)
    np.testing.assert_array_equal(shuffled.array, ref.array)
    np.testing.assert_allclose(shuffled.ijk_to_ras, ref.ijk_to_ras, atol=1e-6)
    # reversed names too (a name-sorted reader would flip the volume)
    rev = tmp_path / "rev"
    rev.mkdir()
    for n, src in enumerate(reversed(files)):
        shutil.copy(src, rev / f"{n:03d}")
    np.testing.assert_array_equal(read_image(rev).array, ref.array)


def test_several_series_in_one_folder(pgbm, t2_series, tmp_path):
    crop = next(s for s in list_dicom_series(pgbm) if s.description == "HippoCrop")
    for s, prefix in ((t2_series, "t2"), (crop, "crop")):
        for n, f in enumerate(s.files):
            shutil.copy(f, tmp_path / f"{prefix}_{n:03d}.dcm")
    series = list_dicom_series(tmp_path)
    assert {s.uid for s in series} == {t2_series.uid, crop.uid}
    assert {s.uid: s.n_files for s in series} == {t2_series.uid: 22, crop.uid: 40}
    # "largest" = most voxels: the 320x280x22 T2 beats the 40-slice crop
    assert series[0].uid == t2_series.uid
    default = read_image(tmp_path)
    assert default.metadata["series_uid"] == t2_series.uid
    picked = read_image(tmp_path, series_uid=crop.uid)
    assert picked.metadata["series_uid"] == crop.uid and picked.shape[0] == 40
    with pytest.raises(InputError, match="is not in"):
        read_image(tmp_path, series_uid="1.2.3.4")


def test_study_folder_lists_all_series(pgbm):
    series = list_dicom_series(pgbm)
    assert sorted(s.description for s in series) == ["FLAIR_reg", "HippoCrop", "T1post", "T1pre_reg", "T2_reg"]
    assert all(s.modality == "MR" and s.transfer_syntax == "1.2.840.10008.1.2.1" for s in series)


def test_jpeg2000_ct_series(data_dir):
    folder = data_dir / "totalsegmentator-example" / "example_ct_dicom"
    if not folder.is_dir():
        pytest.skip(f"{folder} missing")
    (series,) = list_dicom_series(folder)
    assert series.transfer_syntax == "1.2.840.10008.1.2.4.90"  # JPEG 2000 lossless
    vol = read_image(folder)
    assert vol.shape == (20, 512, 512)
    np.testing.assert_allclose(vol.spacing, (0.9765625, 0.9765625, 2.0), atol=1e-4)
    assert (int(vol.array.min()), int(vol.array.max())) == (-1024, 1839)
    # pixel values agree with pydicom + pylibjpeg's decoder on two slices
    ds, ref, _ = _pydicom_stack(series.files)
    for k in (0, 13):
        np.testing.assert_array_equal(vol.array[k], ref[k].astype(vol.array.dtype))
    # TotalSegmentator's prediction for this series (written by another tool) covers the same box
    seg = read_image(data_dir / "totalsegmentator-example" / "example_seg_dicom.nii.gz")
    corners = np.array([[i, j, k] for i in (0, 511) for j in (0, 511) for k in (0, 19)], float)
    a = np.sort(vol.ijk_to_ras_points(corners), axis=0)
    b = np.sort(seg.ijk_to_ras_points(corners), axis=0)
    np.testing.assert_allclose(a, b, atol=1e-3)
    # and, mapped voxel by voxel through RAS, its organ labels sit on tissue, not air
    lab = np.argwhere(seg.array > 0)[::50]
    ijk_ct = np.rint(vol.ras_to_ijk_points(seg.ijk_to_ras_points(lab[:, ::-1]))).astype(int)
    hu = vol.array[ijk_ct[:, 2], ijk_ct[:, 1], ijk_ct[:, 0]]
    assert np.mean(hu > -300) > 0.95


def test_hippocampus_pairs_share_grid(data_dir):
    """All 250 MSD hippocampus image/label pairs share one grid (headers only: fast)."""
    import SimpleITK as sitk

    root = data_dir / "msd-hippocampus"
    images = sorted((root / "imagesTr").glob("*.nii.gz"))
    if not images:
        pytest.skip(f"{root} missing")
    assert len(images) == 250

    def header(p):
        r = sitk.ImageFileReader()
        r.SetFileName(str(p))
        r.ReadImageInformation()
        return r.GetSize(), np.array(r.GetSpacing()), np.array(r.GetOrigin()), np.array(r.GetDirection())

    bad = []
    for img in images:
        a, b = header(img), header(root / "labelsTr" / img.name)
        if a[0] != b[0] or not all(np.allclose(x, y, atol=1e-5) for x, y in zip(a[1:], b[1:])):
            bad.append(img.name)
    assert not bad
