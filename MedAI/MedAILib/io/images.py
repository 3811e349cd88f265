"""Scalar image I/O through SimpleITK: NIfTI, NRRD/NHDR, MHA/MHD, and DICOM folders."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import shutil
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from MedAILib.core import geometry
from MedAILib.core.atomic import atomic_output, full_suffix
from MedAILib.core.causes import error_from_memory, error_from_os
from MedAILib.core.errors import InputError, MedAIError
from MedAILib.core.volume import Volume
from MedAILib.io.diagnose import check_readable, diagnose_unreadable

SUPPORTED_IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".seg.nrrd")


def from_sitk(image: sitk.Image, **metadata) -> Volume:
    """SimpleITK image (LPS) -> Volume (RAS). 3D scalar images only (a 4D image with one frame is accepted)."""
    name = Path(metadata["source"]).name if metadata.get("source") else "image"
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = sitk.Extract(image, list(image.GetSize()[:3]) + [0], [0, 0, 0, 0])
    if image.GetDimension() == 4:
        raise InputError(
            f"{name} is 4D ({image.GetSize()[3]} frames, e.g. time points or b-values); MedAI works on 3D volumes",
            "segment every frame with `medai segment IMAGE -o OUT.nii.gz --format nii.gz` (or `medai "
            "segment-sequence`), or pick one frame and save it as its own 3D file (Slicer's Sequences module, fslsplit)",
        )
    if image.GetDimension() != 3:
        raise InputError(
            f"{name} is {image.GetDimension()}D (a single image, size {' x '.join(map(str, image.GetSize()))}); "
            "MedAI works on 3D volumes",
            "give a 3D volume: the whole series (DICOM folder) or a 3D image file",
        )
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{name} has {image.GetNumberOfComponentsPerPixel()} components per voxel (colour or vector image)",
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


@contextlib.contextmanager
def quiet_native_stderr():
    """Capture what C++ readers (MetaIO, GDCM) print straight to the process's stderr, so a person
    sees our one-line message only; the captured text goes to the debug log (``--debug``)."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real stderr (e.g. inside a GUI): nothing to hide
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as buf:
        os.dup2(buf.fileno(), fd)
        try:
            yield
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            buf.seek(0)
            text = buf.read().decode(errors="replace").strip()
            if text:
                logging.getLogger(__name__).debug("reader output: %s", text)


def itk_reason(error: Exception, limit: int = 160) -> str:
    """The informative line of an ITK exception (drops source paths and object addresses)."""
    lines = [l.strip() for l in str(error).strip().splitlines() if l.strip()]
    line = next((l for l in lines if l.startswith("ITK ERROR")), lines[-1] if lines else "")
    line = re.sub(r"^ITK ERROR:\s*\w+\(0x[0-9a-fA-F]+\):\s*", "", line)
    extra = next((l for l in lines if ("expected" in l or "got only" in l or "Reason" in l)
                  and "No such file or directory" not in l), "")  # errno left over from an earlier call
    if extra and extra != line:
        line = f"{line} {extra}"
    return line[:limit]


def _check_nifti_complete(path: Path) -> None:
    """Refuse truncated NIfTI files: ITK reads them silently and fills the missing voxels with zeros."""
    import gzip
    import zlib

    try:  # the header as ITK reads it (nibabel's import alone costs ~0.9 s of CPU at every start)
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        dims = [int(reader.GetMetaData(f"dim[{i}]")) for i in range(1, int(reader.GetMetaData("dim[0]")) + 1)]
        expected = int(float(reader.GetMetaData("vox_offset"))) + int(np.prod(dims)) * int(reader.GetMetaData("bitpix")) // 8
    except Exception:  # no NIfTI header fields: a damaged gzip stream is the cause, else the reader says
        if str(path).lower().endswith(".gz"):
            _check_gzip_stream(path, 1 << 30)
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
            raise InputError(f"{path.name} is truncated or damaged (its compressed data ends early or is corrupt)",
                             "the file was not copied or written completely; copy or export it again") from None
    else:
        got = path.stat().st_size
    if got < expected:
        raise InputError(
            f"{path.name} is truncated ({got} of {expected} bytes of image data)",
            "the file was not copied or written completely; copy or export it again",
        )


def _check_gzip_stream(path: Path, limit: int) -> None:
    """Refuse a .gz whose compressed stream is damaged or ends early (read up to ``limit`` bytes)."""
    import gzip
    import zlib

    with open(path, "rb") as f:
        if f.read(2) != b"\x1f\x8b":  # not gzip at all: a wrong format, which the reader's diagnosis names
            return
    got = 0
    try:
        with gzip.open(path, "rb") as f:
            while got < limit and (chunk := f.read(1 << 20)):
                got += len(chunk)
    except (EOFError, OSError, zlib.error):
        raise InputError(f"{path.name} is truncated or damaged (its compressed data ends early or is corrupt)",
                         "the file was not copied or written completely; copy or export it again") from None


def check_header_size(path: Path) -> None:
    """Read the header only (SimpleITK ``ReadImageInformation``) and refuse, before anything is
    allocated, an image over MedAI's size limits (:mod:`MedAILib.core.limits`) or this computer's RAM."""
    from MedAILib.core.limits import check_image_size, physical_memory_bytes

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        with quiet_native_stderr():
            reader.ReadImageInformation()
        bytes_per_voxel = sitk.Image([1] * 2, reader.GetPixelID()).GetSizeOfPixelComponent()
    except RuntimeError:
        return  # unreadable header: the full read below reports it
    size = reader.GetSize()
    check_image_size(path.name, size, reader.GetNumberOfComponents() * bytes_per_voxel)
    need = int(np.prod(size, dtype=np.float64)) * reader.GetNumberOfComponents() * bytes_per_voxel
    have = physical_memory_bytes()
    if have and need > have:
        raise InputError(
            f"{path.name} is too large: {' x '.join(map(str, size))} voxels need {need / 1024 ** 3:.1f} GB, "
            f"this computer has {have / 1024 ** 3:.1f} GB of memory",
            "crop or downsample the image on a bigger computer first (or check its header: the size may be wrong)",
        )


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise InputError(f"{path} does not exist", "check the path (and that the drive or share is mounted)")


# kept for callers of the old name
_check_fits_in_memory = check_header_size


def read_image(path, series_uid: str = None) -> Volume:
    """Read a 3D image file or a DICOM folder (largest series, or ``series_uid``) as a Volume.

    Every failure is one InputError naming the file and its cause: missing, permission denied,
    empty, too large (limits checked from the header before allocation), wrong format for its
    extension, truncated, or corrupt (:mod:`MedAILib.io.diagnose`)."""
    path = Path(path)
    _check_exists(path)
    check_readable(path)
    if path.is_dir():
        from MedAILib.io.dicom import read_dicom_series

        return read_dicom_series(path, series_uid)
    if full_suffix(path).lower() in (".seg.nrrd", ".seg.nhdr"):
        from MedAILib.io.segmentations import read_segmentation

        return read_segmentation(path)
    if path.stat().st_size == 0:
        raise InputError(f"{path.name} is empty (0 bytes)", "the file was not written completely; export it again")
    check_header_size(path)
    if full_suffix(path).lower() in (".nii", ".nii.gz"):
        _check_nifti_complete(path)
    try:
        with quiet_native_stderr():
            image = sitk.ReadImage(str(path))
        volume = from_sitk(image, source=str(path))
        if full_suffix(path).lower() in (".nii", ".nii.gz") and np.issubdtype(volume.array.dtype, np.floating):
            _restore_nifti_non_finite(path, volume)
    except MemoryError:
        raise error_from_memory(path.name) from None
    except RuntimeError as e:
        if _is_allocation_failure(e):
            raise error_from_memory(path.name, itk_reason(e)) from None
        if full_suffix(path).lower() not in SUPPORTED_IMAGE_SUFFIXES and path.suffix.lower() != ".dcm":
            wrong = diagnose_unreadable(path, e, itk_reason(e))
            if wrong is not None and "wrong format" in wrong.message:
                raise wrong from e
            raise InputError(
                f"{path.name}: unsupported or unrecognised image format",
                "use NIfTI (.nii/.nii.gz), NRRD (.nrrd/.nhdr), MetaImage (.mha/.mhd) or a DICOM folder",
            ) from e
        raise (diagnose_unreadable(path, e, itk_reason(e)) or InputError(
            f"{path.name} could not be read (corrupt or truncated file?)",
            f"re-export or copy the file again; reader said: {itk_reason(e)}")) from e
    except OSError as e:
        raise error_from_os(e, path, "read") from e
    return volume


def _is_allocation_failure(error: Exception) -> bool:
    text = str(error).lower()
    return any(k in text for k in ("bad_alloc", "failed to allocate", "memory allocation", "out of memory"))


def _restore_nifti_non_finite(path: Path, volume: Volume) -> None:
    """ITK's NIfTI reader turns NaN voxels into 0 without a word; put them back (from nibabel) so
    that validation sees and reports them instead of a model silently reading zeros."""
    if not np.issubdtype(volume.array.dtype, np.floating):
        return  # integer voxels hold no NaN (and nibabel's import costs a second at start-up)
    import nibabel as nib

    try:
        raw = np.asanyarray(nib.load(str(path)).dataobj)
    except Exception:  # nibabel cannot read it: keep ITK's reading
        return
    raw = raw.reshape(raw.shape[:3]).T if raw.size == volume.array.size else None
    if raw is None or raw.shape != volume.array.shape or not np.issubdtype(raw.dtype, np.floating):
        return
    bad = ~np.isfinite(raw)
    if bad.any():
        volume.array[bad] = raw[bad]


def write_image(volume: Volume, path, compress: bool = True) -> Path:
    """Write a Volume to NIfTI/NRRD/MHA (chosen by suffix); atomic, never leaves a partial file."""
    path = Path(path)
    suffix = full_suffix(path).lower()
    if suffix in (".seg.nrrd", ".seg.nhdr"):
        from MedAILib.io.segmentations import write_segmentation

        return write_segmentation(volume, path)
    if suffix not in SUPPORTED_IMAGE_SUFFIXES:
        raise InputError(f"cannot write {path.name}: unknown format",
                         "use .nii.gz, .nii, .nrrd, .nhdr, .mha, .mhd or .seg.nrrd")
    try:
        return _write_image(volume, path, suffix, compress)
    except MedAIError:
        raise
    except OSError as e:
        raise error_from_os(e, path, "write") from e
    except MemoryError:
        from MedAILib.core.errors import OutputError

        raise OutputError(f"cannot write {path.name}: this computer ran out of memory",
                          "close other programs and run the command again") from None


def _write_image(volume: Volume, path: Path, suffix: str, compress: bool) -> Path:
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


# numpy dtype -> NRRD type name, for :func:`write_raw_nrrd`.
_NRRD_TYPES = {"int8": "int8", "uint8": "uint8", "int16": "int16", "uint16": "uint16", "int32": "int32",
               "uint32": "uint32", "int64": "int64", "uint64": "uint64", "float32": "float", "float64": "double"}


def write_raw_nrrd(volume: Volume, path) -> Path:
    """Write a 3D scalar Volume as an uncompressed ``.nrrd`` (attached header), readable by
    :func:`read_image` exactly as :func:`write_image` (``compress=False``) would have written it.

    Why not SimpleITK here: ``GetImageFromArray`` copies the whole array while holding Python's GIL
    (~40-60 ms for a 512x512x300 int16 CT), so a background writer still freezes Slicer's main
    thread. Here the voxels go to disk with ``ndarray.tofile`` straight from the (C-contiguous)
    array: no copy, and numpy releases the GIL during the write. Other arrays fall back to
    :func:`write_image`.
    """
    path = Path(path)
    try:
        return _write_raw_nrrd(volume, path)
    except MedAIError:
        raise
    except OSError as e:
        raise error_from_os(e, path, "write") from e


def _write_raw_nrrd(volume: Volume, path: Path) -> Path:
    arr = volume.array
    kind = _NRRD_TYPES.get(arr.dtype.name)
    if (arr.ndim != 3 or kind is None or not arr.flags.c_contiguous or not arr.dtype.isnative
            or sys.byteorder != "little" or full_suffix(path).lower() != ".nrrd"):
        return write_image(volume, path, compress=False)
    spacing, origin, direction = geometry.lps_from_ijk_to_ras(volume.ijk_to_ras)
    k, j, i = arr.shape
    axes = [direction[:, n] * spacing[n] for n in range(3)]  # NRRD space directions: one vector per I, J, K

    def vec(v):
        return "(" + ",".join(repr(float(x)) for x in v) + ")"

    header = ("NRRD0004\n"
              f"type: {kind}\n"
              "dimension: 3\n"
              "space: left-posterior-superior\n"
              f"sizes: {i} {j} {k}\n"
              f"space directions: {' '.join(vec(a) for a in axes)}\n"
              "kinds: domain domain domain\n"
              + ("endian: little\n" if arr.dtype.itemsize > 1 else "")
              + "encoding: raw\n"
              f"space origin: {vec(origin)}\n\n")
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(header.encode("ascii"))
            arr.tofile(fh)  # KJI C order = NRRD's fastest-I order; GIL released during fwrite
    return path
