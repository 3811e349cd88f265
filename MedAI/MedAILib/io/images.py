"""Scalar image I/O through SimpleITK: NIfTI, NRRD/NHDR, MHA/MHD, and DICOM folders."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .. import geometry
from ..atomic import atomic_output, full_suffix
from ..errors import InputError
from ..volume import Volume

SUPPORTED_IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".seg.nrrd")


def from_sitk(image: sitk.Image, **metadata) -> Volume:
    """SimpleITK image (LPS) -> Volume (RAS). 3D scalar images only."""
    if image.GetDimension() != 3:
        raise InputError(
            f"image has {image.GetDimension()} dimensions; MedAI works on 3D volumes",
            "give a 3D volume (for a 4D series pick one frame first, e.g. with `medai info` to inspect it)",
        )
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"image has {image.GetNumberOfComponentsPerPixel()} components per voxel (colour or vector image)",
            "give a single-component (greyscale) volume",
        )
    array = sitk.GetArrayFromImage(image)  # KJI
    m = geometry.ijk_to_ras_from_lps(image.GetSpacing(), image.GetOrigin(), image.GetDirection())
    return Volume(array, m, metadata=dict(metadata))


def to_sitk(volume: Volume) -> sitk.Image:
    """Volume (RAS) -> SimpleITK image (LPS)."""
    array = np.ascontiguousarray(volume.array)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    image = sitk.GetImageFromArray(array, isVector=False)
    spacing, origin, direction = geometry.lps_from_ijk_to_ras(volume.ijk_to_ras)
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(o) for o in origin])
    image.SetDirection([float(d) for d in direction.reshape(-1)])
    return image


def itk_reason(error: Exception, limit: int = 160) -> str:
    """The informative line of an ITK exception (drops source paths and object addresses)."""
    lines = [l.strip() for l in str(error).strip().splitlines() if l.strip()]
    line = next((l for l in lines if l.startswith("ITK ERROR")), lines[-1] if lines else "")
    line = re.sub(r"^ITK ERROR:\s*\w+\(0x[0-9a-fA-F]+\):\s*", "", line)
    extra = next((l for l in lines if "expected" in l or "got only" in l or "Reason" in l), "")
    if extra and extra != line:
        line = f"{line} {extra}"
    return line[:limit]


def _check_nifti_complete(path: Path) -> None:
    """Refuse truncated NIfTI files: ITK reads them silently and fills the missing voxels with zeros."""
    import gzip
    import zlib

    import nibabel as nib

    try:
        header = nib.load(str(path)).header
        expected = int(header["vox_offset"]) + int(np.prod(header.get_data_shape())) * header.get_data_dtype().itemsize
    except Exception:  # nibabel cannot parse it: ITK could, so do not second-guess the reader
        return
    if str(path).lower().endswith(".gz"):
        got = 0
        try:
            with gzip.open(path, "rb") as f:
                while chunk := f.read(1 << 16):
                    got += len(chunk)
                    if got >= expected:
                        break
        except (EOFError, OSError, zlib.error):
            got = min(got, expected - 1)
    else:
        got = path.stat().st_size
    if got < expected:
        raise InputError(
            f"{path.name} is truncated ({got} of {expected} bytes of image data)",
            "the file was not copied or written completely; copy or export it again",
        )


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise InputError(f"{path} does not exist", "check the path (and that the drive or share is mounted)")


def read_image(path, series_uid: str = None) -> Volume:
    """Read a 3D image file or a DICOM folder (largest series, or ``series_uid``) as a Volume."""
    path = Path(path)
    _check_exists(path)
    if path.is_dir():
        from .dicom import read_dicom_series

        return read_dicom_series(path, series_uid)
    if full_suffix(path).lower() in (".seg.nrrd", ".seg.nhdr"):
        from .segmentations import read_segmentation

        return read_segmentation(path)
    if path.stat().st_size == 0:
        raise InputError(f"{path.name} is empty (0 bytes)", "the file was not written completely; export it again")
    if full_suffix(path).lower() in (".nii", ".nii.gz"):
        _check_nifti_complete(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as e:
        if full_suffix(path).lower() not in SUPPORTED_IMAGE_SUFFIXES and path.suffix.lower() != ".dcm":
            raise InputError(
                f"{path.name}: unsupported or unrecognised image format",
                "use NIfTI (.nii/.nii.gz), NRRD (.nrrd/.nhdr), MetaImage (.mha/.mhd) or a DICOM folder",
            ) from e
        raise InputError(
            f"{path.name} could not be read (corrupt or truncated file?)",
            f"re-export or copy the file again; reader said: {itk_reason(e)}",
        ) from e
    return from_sitk(image, source=str(path))


def write_image(volume: Volume, path, compress: bool = True) -> Path:
    """Write a Volume to NIfTI/NRRD/MHA (chosen by suffix); atomic, never leaves a partial file."""
    path = Path(path)
    suffix = full_suffix(path).lower()
    if suffix in (".seg.nrrd", ".seg.nhdr"):
        from .segmentations import write_segmentation

        return write_segmentation(volume, path)
    if suffix not in SUPPORTED_IMAGE_SUFFIXES:
        raise InputError(f"cannot write {path.name}: unknown format",
                         "use .nii.gz, .nii, .nrrd, .nhdr, .mha, .mhd or .seg.nrrd")
    image = to_sitk(volume)
    if suffix in (".nhdr", ".mhd"):
        # Header + separate data file named after the header: write both into a temporary folder
        # beside the target, then move the data file first and the header last, so a header under
        # the final name always points at complete data.
        path.parent.mkdir(parents=True, exist_ok=True)
        tmpdir = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
        try:
            sitk.WriteImage(image, str(tmpdir / path.name), useCompression=compress)
            for f in sorted(tmpdir.iterdir(), key=lambda f: f.name == path.name):
                os.replace(f, path.parent / f.name)
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)
        return path
    with atomic_output(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=compress)
    return path
