"""Every error names the file and the right cause (issue 14): permission, disk full, read-only,
wrong format for its extension, truncated, a missing data file, corrupt, out of memory.
Through the CLI (unreadable files with root's override dropped, a full disk while unpacking, an
address-space limit, misnamed files ...): the "errors" scenarios of Testing/badinputs/cli_scenarios.py."""

import errno
import gzip
import shutil
import subprocess

import numpy as np
import pytest

from MedAILib.core.causes import describe_os_error, error_from_os
from MedAILib.core.errors import InputError, OutputError
from MedAILib.core.volume import Volume
from MedAILib.io import read_image, write_image, write_segmentation
from MedAILib.io.diagnose import sniff_format


@pytest.mark.parametrize("code,expected", [
    (errno.EACCES, "permission denied: cannot write /x/out.nrrd"), (errno.EPERM, "permission denied"),
    (errno.ENOSPC, "the disk is full: could not write /x/out.nrrd"), (errno.EDQUOT, "the disk is full"),
    (errno.EROFS, "read-only file system"), (errno.ENOENT, "/x/out.nrrd does not exist"),
    (errno.EISDIR, "is a folder, not a file"), (errno.ENOTDIR, "a part of that path is a file"),
    (errno.EIO, "input/output error")])
def test_os_errors_become_their_cause(code, expected):
    e = OSError(code, "text from the system")
    message, hint = describe_os_error(e, "/x/out.nrrd", "write")
    assert expected in message and hint
    assert isinstance(error_from_os(e, "/x/out.nrrd", "write"), OutputError)
    assert isinstance(error_from_os(e, "/x/in.nrrd", "read"), InputError)


def _img(shape=(12, 14, 16)):
    return Volume(np.random.default_rng(0).normal(100, 10, shape).astype(np.float32), np.eye(4))


def test_sniffing_tells_formats_apart(tmp_path):
    write_image(_img(), tmp_path / "a.nii.gz")
    write_image(_img(), tmp_path / "a.nrrd")
    write_image(_img(), tmp_path / "a.mha")
    (tmp_path / "r.pdf").write_bytes(b"%PDF-1.4\n")
    (tmp_path / "junk.bin").write_bytes(bytes(range(256)) * 4)
    assert [sniff_format(tmp_path / n) for n in ("a.nii.gz", "a.nrrd", "a.mha", "r.pdf", "junk.bin")] == \
        ["nifti", "nrrd", "meta", "pdf", None]


@pytest.mark.parametrize("make,name,expected", [
    (".nrrd", "x.nii.gz", "is a NRRD file, not NIfTI: wrong format for its extension .nii.gz"),
    (".nii.gz", "x.nrrd", "is a NIfTI file, not NRRD"),
    (".mha", "x.nrrd", "is a MetaImage file, not NRRD"),
    (".nii.gz", "x.dat", "is a NIfTI file: wrong format for its extension .dat"),
])
def test_misnamed_files_are_called_misnamed_not_corrupt(tmp_path, make, name, expected):
    src = write_image(_img(), tmp_path / f"src{make}")
    shutil.move(src, tmp_path / name)
    with pytest.raises(InputError, match=expected.replace("(", r"\(").replace(".", r"\.")) as e:
        read_image(tmp_path / name)
    assert "rename it" in e.value.hint and "corrupt" not in e.value.message


@pytest.mark.parametrize("suffix,compress", [(".nrrd", False), (".nrrd", True), (".mha", False), (".mha", True)])
def test_truncated_files_are_called_truncated(tmp_path, suffix, compress):
    import SimpleITK as sitk

    full = tmp_path / f"full{suffix}"
    sitk.WriteImage(sitk.GetImageFromArray(_img((20, 30, 30)).array), str(full), useCompression=compress)
    data = full.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(InputError, match=r"cut\S* is truncated \((the file|its compressed data) ends early"):
        read_image(cut)


def test_truly_unknown_damage_keeps_the_honest_generic_message(tmp_path):
    (tmp_path / "c.nrrd").write_bytes(b"NRRD0004\nthis is not a field\n\n" + bytes(300))
    with pytest.raises(InputError, match=r"could not be read \(corrupt or truncated file\?\)"):
        read_image(tmp_path / "c.nrrd")


def test_gzip_of_the_wrong_thing(tmp_path):
    (tmp_path / "notes.nii.gz").write_bytes(gzip.compress(b"just some text, not an image\n" * 20))
    with pytest.raises(InputError, match="does not start like a NIfTI file"):
        read_image(tmp_path / "notes.nii.gz")


@pytest.fixture
def immutable_folder(tmp_path):
    """A folder nobody (not even root) can create files in: chattr +i."""
    folder = tmp_path / "locked"
    folder.mkdir()
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)]).returncode != 0:
        pytest.skip("chattr +i not available here")
    yield folder
    subprocess.run(["chattr", "-i", str(folder)])


@pytest.mark.parametrize("name", ["sub/out.nii.gz", "out.seg.nrrd", "sub/x.mhd"])
def test_unwritable_output_says_permission(immutable_folder, name):
    vol = _img()
    vol.array = (vol.array > 100).astype(np.uint8)
    with pytest.raises(OutputError, match="permission denied|no permission") as e:
        (write_segmentation if name.endswith(".seg.nrrd") else write_image)(vol, immutable_folder / name)
    assert "locked" in e.value.message
