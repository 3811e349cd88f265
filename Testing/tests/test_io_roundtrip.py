"""Every writable format keeps array and IJK->RAS of an oblique, anisotropic, flipped volume."""

import numpy as np
import pytest

from MedAILib.io import read_image, write_image, write_segmentation, read_segmentation
from MedAILib.core.volume import Volume

FORMATS = [".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd"]
MARK_IJK = (4, 3, 2)  # the conftest oblique_volume marks I=4, J=3, K=2 with 1000


def _marked_ras(vol):
    k, j, i = np.argwhere(vol.array == vol.array.max())[0]
    assert (i, j, k) == MARK_IJK
    return vol.ijk_to_ras_points([[i, j, k]])[0]


@pytest.mark.parametrize("suffix", FORMATS)
def test_round_trip(tmp_path, oblique_volume, suffix):
    path = tmp_path / f"vol{suffix}"
    write_image(oblique_volume, path)
    back = read_image(path)
    assert back.array.dtype == oblique_volume.array.dtype
    np.testing.assert_array_equal(back.array, oblique_volume.array)
    np.testing.assert_allclose(back.ijk_to_ras, oblique_volume.ijk_to_ras, atol=1e-5)
    assert back.axis_codes == oblique_volume.axis_codes
    np.testing.assert_allclose(_marked_ras(back), _marked_ras(oblique_volume), atol=1e-5)
    # nothing but the file (and its data file for detached headers) is left in the folder
    names = sorted(p.name for p in tmp_path.iterdir())
    assert not [n for n in names if "partial" in n], names
    assert len(names) == (2 if suffix in (".nhdr", ".mhd") else 1), names


def test_marked_voxel_same_ras_in_every_format(tmp_path, oblique_volume):
    positions = {}
    for suffix in FORMATS:
        path = tmp_path / f"v{suffix}"
        write_image(oblique_volume, path)
        positions[suffix] = _marked_ras(read_image(path))
    ref = positions[".nrrd"]
    for suffix, p in positions.items():
        np.testing.assert_allclose(p, ref, atol=1e-4, err_msg=suffix)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_affine_matches_nibabel(tmp_path, oblique_volume, suffix):
    """nibabel (independent reader, RAS affine) sees the same geometry and the same voxel values."""
    import nibabel as nib

    path = tmp_path / f"v{suffix}"
    write_image(oblique_volume, path)
    img = nib.load(str(path))
    np.testing.assert_allclose(img.affine, oblique_volume.ijk_to_ras, atol=1e-5)
    data = np.asarray(img.dataobj)  # nibabel: IJK order
    np.testing.assert_array_equal(data.transpose(2, 1, 0), oblique_volume.array)
    assert "".join(nib.aff2axcodes(img.affine)) == oblique_volume.axis_codes


def test_nibabel_written_file_reads_with_same_geometry(tmp_path, oblique_volume):
    """The other direction: a NIfTI written by nibabel from a RAS affine reads back to that affine."""
    import nibabel as nib

    path = tmp_path / "nib.nii.gz"
    img = nib.Nifti1Image(oblique_volume.array.transpose(2, 1, 0), oblique_volume.ijk_to_ras)
    img.set_qform(oblique_volume.ijk_to_ras, code=1)
    img.set_sform(oblique_volume.ijk_to_ras, code=1)
    nib.save(img, str(path))
    back = read_image(path)
    np.testing.assert_array_equal(back.array, oblique_volume.array)
    np.testing.assert_allclose(back.ijk_to_ras, oblique_volume.ijk_to_ras, atol=1e-5)


def test_nrrd_header_matches_pynrrd(tmp_path, oblique_volume):
    """pynrrd (independent) reads an LPS space and space directions equal to the RAS matrix flipped."""
    import nrrd

    path = tmp_path / "v.nrrd"
    write_image(oblique_volume, path)
    data, header = nrrd.read(str(path))
    assert header["space"] in ("left-posterior-superior", "LPS")
    lps = np.diag([-1, -1, 1]) @ oblique_volume.ijk_to_ras[:3, :3]
    np.testing.assert_allclose(np.asarray(header["space directions"]).T, lps, atol=1e-9)
    np.testing.assert_allclose(header["space origin"], np.diag([-1, -1, 1]) @ oblique_volume.origin, atol=1e-9)
    np.testing.assert_array_equal(data.transpose(2, 1, 0), oblique_volume.array)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16, np.int32, np.float64])
def test_dtypes_survive(tmp_path, oblique_volume, dtype):
    vol = oblique_volume.with_array((oblique_volume.array % 200).astype(dtype))
    for suffix in (".nii.gz", ".nrrd"):
        write_image(vol, tmp_path / f"d{suffix}")
        back = read_image(tmp_path / f"d{suffix}")
        assert back.array.dtype == dtype
        np.testing.assert_array_equal(back.array, vol.array)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_labelmap_image_round_trip(tmp_path, oblique_volume, suffix):
    arr = np.zeros(oblique_volume.shape, np.uint8)
    arr[1:4, 2:5, 3:7] = 1
    arr[5:8, 2:5, 3:7] = 3
    lab = oblique_volume.with_array(arr)
    write_segmentation(lab, tmp_path / f"lab{suffix}")
    back = read_segmentation(tmp_path / f"lab{suffix}")
    np.testing.assert_array_equal(back.array, arr)
    np.testing.assert_allclose(back.ijk_to_ras, lab.ijk_to_ras, atol=1e-5)
    assert [l.value for l in back.labels] == [1, 3]


def test_write_unknown_format_refused(tmp_path, oblique_volume):
    from MedAILib.core.errors import InputError

    with pytest.raises(InputError, match="unknown format"):
        write_image(oblique_volume, tmp_path / "v.png")
    assert not list(tmp_path.iterdir())


def test_failed_write_leaves_nothing(tmp_path, oblique_volume, monkeypatch):
    """A writer that dies mid-way leaves neither a partial file nor a temp file (atomic_output)."""
    import SimpleITK as sitk

    def broken(image, name, *a, **k):
        with open(name, "wb") as f:
            f.write(b"half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(sitk, "WriteImage", broken)
    for suffix in (".nii.gz", ".nhdr", ".mhd"):
        with pytest.raises(RuntimeError):
            write_image(oblique_volume, tmp_path / f"v{suffix}")
    assert not list(tmp_path.iterdir()), list(tmp_path.iterdir())
