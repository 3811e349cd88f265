"""4D images (sequences of 3D frames on one grid): read and write.

- 4D NIfTI / MHA / NRRD (SimpleITK): the fourth axis is the frame axis; its spacing is the frame
  interval (NIfTI: seconds in the file, given here in ms).
- Slicer volume sequences ``.seq.nrrd`` (pynrrd): a ``list`` axis first, then the three space
  axes, with ``axis 0 index values`` (what Slicer's Sequences module writes and reads).
- DICOM cine (a folder): one series whose images repeat at each slice position with different
  trigger times (e.g. short-axis cardiac cine). Slices are grouped by their position projected on
  the slice normal (ImagePositionPatient . normal, not SliceLocation or file names), the images of
  each slice sorted by TriggerTime (InstanceNumber when absent); frame t holds the t-th image of
  every slice.

Frames are :class:`~MedAILib.core.volume.Volume` objects (KJI array, IJK->RAS), so every 3D task
runs on one frame unchanged. A label sequence's frames carry the label table.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk

from MedAILib.core import geometry
from MedAILib.core.atomic import atomic_output, full_suffix
from MedAILib.core.errors import InputError
from MedAILib.core.volume import Volume

SEQUENCE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".seq.nrrd", ".seq.nhdr")
_NIFTI_TIME_TO_MS = {"sec": 1000.0, "msec": 1.0, "usec": 0.001}


def sequence_suffix(path) -> str:
    """The file's format suffix, knowing Slicer's ``.seq.nrrd`` (core.atomic knows only ``.seg.``)."""
    name = Path(path).name.lower()
    for s in (".seq.nrrd", ".seq.nhdr"):
        if name.endswith(s):
            return s
    return full_suffix(path).lower()


@dataclasses.dataclass
class Sequence:
    """Frames on one grid, with the value of the frame index for each (e.g. trigger time)."""

    frames: list
    index_values: list
    index_name: str = "time"
    index_unit: str = "ms"
    metadata: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if not self.frames:
            raise InputError("a sequence needs at least one frame", "")
        ref = self.frames[0]
        for n, f in enumerate(self.frames[1:], start=1):
            if not f.same_grid(ref):
                raise InputError(f"frame {n} of the sequence is not on frame 0's grid", "")
        if len(self.index_values) != len(self.frames):
            raise InputError(f"{len(self.index_values)} index values for {len(self.frames)} frames", "")

    @property
    def n_frames(self) -> int:
        return len(self.frames)

    @property
    def ijk_to_ras(self) -> np.ndarray:
        return self.frames[0].ijk_to_ras

    @property
    def labels(self):
        return self.frames[0].labels

    def array(self) -> np.ndarray:
        """All frames as one (T, K, J, I) array."""
        return np.stack([f.array for f in self.frames])

    @classmethod
    def from_array(cls, array4d: np.ndarray, ijk_to_ras, index_values=None, labels=None, **kw) -> "Sequence":
        values = list(range(array4d.shape[0])) if index_values is None else list(index_values)
        frames = [Volume(np.ascontiguousarray(a), np.array(ijk_to_ras, float), labels) for a in array4d]
        return cls(frames, values, **kw)

    def __repr__(self) -> str:
        return f"Sequence({self.n_frames} frames of {self.frames[0]!r}, {self.index_name} [{self.index_unit}])"


def is_sequence_file(path) -> bool:
    """True for a folder (DICOM) or a file whose header says 4D with more than one frame / a list axis."""
    path = Path(path)
    if path.is_dir():
        return True
    if sequence_suffix(path) in (".seq.nrrd", ".seq.nhdr"):
        return True
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return False
    return reader.GetDimension() == 4 and reader.GetSize()[3] > 1


# --- reading --------------------------------------------------------------------------------------

def read_sequence(path, series_uid: Optional[str] = None) -> Sequence:
    """A 4D image file, a Slicer ``.seq.nrrd`` or a DICOM cine folder as a :class:`Sequence`.
    Every failure is one InputError naming the file and the cause."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist", "check the path (and that the drive or share is mounted)")
    from MedAILib.io.diagnose import check_readable

    check_readable(path)
    if path.is_dir():
        return read_dicom_cine(path, series_uid)
    if path.stat().st_size == 0:
        raise InputError(f"{path.name} is empty (0 bytes)", "the file was not written completely; export it again")
    if sequence_suffix(path) in (".seq.nrrd", ".seq.nhdr"):
        return _read_seq_nrrd(path)
    return _read_4d_image(path)


def _read_4d_image(path: Path) -> Sequence:
    from MedAILib.io.images import check_header_size, itk_reason, quiet_native_stderr

    check_header_size(path)
    try:
        with quiet_native_stderr():
            image = sitk.ReadImage(str(path))
    except RuntimeError as e:
        from MedAILib.io.diagnose import diagnose_unreadable

        raise (diagnose_unreadable(path, e, itk_reason(e)) or InputError(
            f"{path.name} could not be read (corrupt or truncated file?)", f"reader said: {itk_reason(e)}")) from e
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{path.name} has {image.GetNumberOfComponentsPerPixel()} components per voxel",
                         "give a scalar 4D image (one value per voxel and frame)")
    if image.GetDimension() != 4:
        raise InputError(f"{path.name} is {image.GetDimension()}D, not a sequence of 3D frames",
                         "for a single 3D volume use `medai segment`; for a cine give the 4D file or DICOM folder")
    size = image.GetSize()
    d4 = np.array(image.GetDirection()).reshape(4, 4)
    if np.any(np.abs(d4[:3, 3]) > 1e-6) or np.any(np.abs(d4[3, :3]) > 1e-6):
        raise InputError(f"{path.name}: its fourth axis is tilted into space (direction matrix mixes time and "
                         "space)", "re-export the 4D image with an independent frame axis")
    m = geometry.ijk_to_ras_from_lps(image.GetSpacing()[:3], image.GetOrigin()[:3], d4[:3, :3])
    arr = sitk.GetArrayFromImage(image)  # (T, K, J, I)
    step, unit = image.GetSpacing()[3], ""
    if full_suffix(path).lower() in (".nii", ".nii.gz"):
        import nibabel as nib

        t_unit = nib.load(str(path)).header.get_xyzt_units()[1]
        if t_unit in _NIFTI_TIME_TO_MS:
            step, unit = step * _NIFTI_TIME_TO_MS[t_unit], "ms"
    start = image.GetOrigin()[3] * (_NIFTI_TIME_TO_MS.get("sec") if unit == "ms" and step != image.GetSpacing()[3]
                                    else 1.0)
    values = [float(start + t * step) for t in range(size[3])] if unit else list(range(size[3]))
    seq = Sequence.from_array(arr, m, values, index_name="time" if unit else "frame", index_unit=unit)
    for f in seq.frames:
        f.metadata["source"] = str(path)
    seq.metadata["source"] = str(path)
    return seq


def _read_seq_nrrd(path: Path) -> Sequence:
    import nrrd

    try:
        data, header = nrrd.read(str(path), index_order="C")  # C order: (K, J, I, list) reversed axes
    except Exception as e:  # noqa: BLE001 - pynrrd raises several types for bad files
        raise InputError(f"{path.name} is not a readable NRRD sequence ({str(e)[:160]})",
                         "re-save it from Slicer's Sequences module") from e
    kinds = [k.lower() for k in header.get("kinds", [])]
    if len(kinds) != 4 or kinds[0] != "list" or header.get("dimension") != 4:
        raise InputError(f"{path.name} is not a volume sequence (expected 4 axes, the first a 'list' axis; "
                         f"got kinds {kinds})", "give a .seq.nrrd saved by Slicer, or a 4D NIfTI")
    # index_order="C" reverses the axes: data is (K, J, I, T)
    arr = np.moveaxis(np.asarray(data), -1, 0)
    dirs = np.asarray(header["space directions"], dtype=object)
    axes = np.array([np.asarray(v, float) for v in dirs if v is not None and not (
        isinstance(v, np.ndarray) and np.isnan(np.asarray(v, float)).all())])
    if axes.shape != (3, 3):
        raise InputError(f"{path.name}: cannot read its space directions", "re-save it from Slicer")
    space = str(header.get("space", "left-posterior-superior")).lower()
    m_lps = np.eye(4)
    m_lps[:3, :3] = axes.T
    m_lps[:3, 3] = np.asarray(header.get("space origin", [0, 0, 0]), float)
    if space in ("right-anterior-superior", "ras"):
        m = m_lps
    else:
        m = geometry.ijk_to_ras_from_ijk_to_lps(m_lps)
    raw = str(header.get("axis 0 index values", "")).split()
    try:
        values = [float(v) for v in raw] if len(raw) == arr.shape[0] else list(range(arr.shape[0]))
    except ValueError:
        values = list(range(arr.shape[0]))
    seq = Sequence.from_array(arr, m, values, index_name=str(header.get("axis 0 quantity", "time")),
                              index_unit=str(header.get("axis 0 unit", "")))
    seq.metadata["source"] = str(path)
    return seq


# --- DICOM cine -----------------------------------------------------------------------------------

def _dicom_files(folder: Path) -> list:
    import pydicom

    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            p = Path(root) / name
            try:
                ds = pydicom.dcmread(p, stop_before_pixels=True)
            except Exception:  # noqa: BLE001 - not DICOM (a README, a DICOMDIR viewer file): skip it
                continue
            if "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds and "PixelSpacing" in ds:
                found.append((p, ds))
    return found


def read_dicom_cine(folder, series_uid: Optional[str] = None) -> Sequence:
    """A DICOM cine series (several images per slice position, one per trigger time) as a Sequence."""
    import logging
    import warnings

    import pydicom  # noqa: F401 - imported first: its config sets the "pydicom" logger's level on import

    # pydicom warns and logs each invalid UID (leading zeros are common in old cine data): not for a person
    log = logging.getLogger("pydicom")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return _read_dicom_cine(Path(folder), series_uid)
    finally:
        log.setLevel(level)


def _read_dicom_cine(folder: Path, series_uid: Optional[str]) -> Sequence:
    import warnings

    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid UIDs (leading zeros) are common in old cine data
        files = _dicom_files(folder)
    if not files:
        raise InputError(f"no DICOM images with position and orientation found in {folder}",
                         "give the folder of the cine series (the files may be in a sub-folder or zipped)")
    by_series = {}
    for p, ds in files:
        by_series.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append((p, ds))
    if series_uid:
        if series_uid not in by_series:
            raise InputError(f"series {series_uid} is not in {folder}", "run `medai info FOLDER` to list the series")
        chosen = by_series[series_uid]
    else:
        series_uid, chosen = max(by_series.items(), key=lambda kv: len(kv[1]))
    iop = np.array(chosen[0][1].ImageOrientationPatient, float)
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    rows, cols = int(chosen[0][1].Rows), int(chosen[0][1].Columns)
    slices = {}
    for p, ds in chosen:
        if not np.allclose(np.array(ds.ImageOrientationPatient, float), iop, atol=1e-3):
            raise InputError(f"{p.name}: its orientation differs from the rest of series {series_uid}",
                             "a cine must have one orientation; export the series again or pick another")
        if (int(ds.Rows), int(ds.Columns)) != (rows, cols):
            raise InputError(f"{p.name}: {ds.Rows}x{ds.Columns} pixels, other images are {rows}x{cols}", "")
        pos = float(np.dot(normal, np.array(ds.ImagePositionPatient, float)))
        t = ds.get("TriggerTime")
        t = float(t) if t not in (None, "") else float(ds.get("InstanceNumber", 0))
        slices.setdefault(round(pos, 2), []).append((t, int(ds.get("InstanceNumber", 0)), p, ds))
    positions = sorted(slices)
    counts = {len(v) for v in slices.values()}
    if len(counts) != 1:
        detail = ", ".join(f"{pos:.1f} mm: {len(slices[pos])}" for pos in positions[:6])
        raise InputError(f"the slices of series {series_uid} in {folder} have different numbers of frames ({detail})",
                         "the cine is incomplete; copy or export the whole series again")
    n_frames = counts.pop()
    if n_frames < 2:
        raise InputError(f"series {series_uid} in {folder} has one image per slice position: it is a 3D volume, "
                         "not a cine", "use `medai segment` for a 3D series")
    steps = np.diff(positions)
    spacing_k = float(np.median(steps)) if len(positions) > 1 else float(chosen[0][1].get("SliceThickness", 1.0))
    if len(positions) > 2 and np.max(np.abs(steps - spacing_k)) > max(0.1 * spacing_k, 0.01):
        raise InputError(f"the slices of series {series_uid} are unevenly spaced ({steps.min():.3g} to "
                         f"{steps.max():.3g} mm along the slice normal)",
                         "the series is incomplete or mixes stacks; export the whole series again")
    for pos in positions:
        slices[pos].sort(key=lambda x: (x[0], x[1]))
    first = slices[positions[0]][0][3]
    ps = [float(x) for x in first.PixelSpacing]  # (row spacing = along columns' direction, column spacing)
    direction = np.stack([row_dir, col_dir, normal], axis=1)
    m = geometry.ijk_to_ras_from_lps([ps[1], ps[0], spacing_k], np.array(first.ImagePositionPatient, float), direction)
    slope = float(first.get("RescaleSlope", 1) or 1)
    intercept = float(first.get("RescaleIntercept", 0) or 0)
    dtype = np.int16 if slope == 1 and intercept == int(intercept) else np.float32
    arr = np.empty((n_frames, len(positions), rows, cols), dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k, pos in enumerate(positions):
            for t, (_, _, p, _) in enumerate(slices[pos]):
                try:
                    ds = pydicom.dcmread(p)
                    px = ds.pixel_array.astype(np.float32) * float(ds.get("RescaleSlope", 1) or 1) \
                        + float(ds.get("RescaleIntercept", 0) or 0)
                except Exception as e:  # noqa: BLE001
                    raise InputError(f"{p.name} in {folder}: its pixel data could not be read ({str(e)[:120]})",
                                     "the file may be corrupt or use an unsupported compression") from e
                arr[t, k] = px.astype(dtype) if dtype != np.float32 else px
    times = [float(np.mean([slices[pos][t][0] for pos in positions])) for t in range(n_frames)]
    seq = Sequence.from_array(arr, m, times, index_name="trigger time", index_unit="ms")
    seq.metadata.update(source=str(folder), series_uid=series_uid, modality=str(first.get("Modality", "")),
                        slice_positions_mm=[float(p) for p in positions],
                        files=[[str(slices[pos][t][2]) for pos in positions] for t in range(n_frames)])
    for f in seq.frames:
        f.metadata.update(source=str(folder), modality=str(first.get("Modality", "")))
    return seq


# --- writing --------------------------------------------------------------------------------------

def write_sequence(seq: Sequence, path) -> Path:
    """Write a Sequence: 4D NIfTI (``.nii.gz``/``.nii``; frame interval in seconds as NIfTI wants),
    MHA/NRRD 4D, or Slicer ``.seq.nrrd``. Atomic: a partial file never has the final name."""
    path = Path(path)
    suffix = sequence_suffix(path)
    if suffix not in SEQUENCE_SUFFIXES or suffix.endswith("nhdr") or suffix == ".mhd":
        raise InputError(f"cannot write the sequence {path.name}: unknown or detached-header format",
                         "use .nii.gz, .nii, .mha, .nrrd or .seq.nrrd")
    if suffix == ".seq.nrrd":
        return _write_seq_nrrd(seq, path)
    from MedAILib.io.images import to_sitk

    values = np.asarray(seq.index_values, float)
    step = float(np.median(np.diff(values))) if len(values) > 1 else 1.0
    start = float(values[0]) if len(values) else 0.0
    if seq.index_unit == "ms" and suffix in (".nii", ".nii.gz"):
        step, start = step / 1000.0, start / 1000.0  # NIfTI's time unit (ITK writes seconds)
    frames = [to_sitk(f) for f in seq.frames]
    image = sitk.JoinSeries(frames, start, step if step > 0 else 1.0)
    with atomic_output(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=True)
    return path


def _write_seq_nrrd(seq: Sequence, path: Path) -> Path:
    import nrrd

    m_lps = geometry.ijk_to_lps_from_ijk_to_ras(seq.ijk_to_ras)
    arr = seq.array()  # (T, K, J, I)
    header = {
        "type": {"uint8": "uint8", "int8": "int8", "int16": "int16", "uint16": "uint16", "int32": "int32",
                 "uint32": "uint32", "float32": "float", "float64": "double"}[arr.dtype.name],
        "dimension": 4,
        "space": "left-posterior-superior",
        "kinds": ["list", "domain", "domain", "domain"],
        "space directions": np.vstack([np.full(3, np.nan), m_lps[:3, :3].T]),
        "space origin": m_lps[:3, 3],
        "encoding": "gzip",
        "axis 0 index type": "numeric",
        "axis 0 index values": " ".join(f"{v:g}" for v in seq.index_values),
        "axis 0 quantity": seq.index_name,
        "axis 0 unit": seq.index_unit,
    }
    # pynrrd's C order takes the axes reversed: (K, J, I, T) in memory = NRRD axes (T, I, J, K)
    with atomic_output(path) as tmp:
        nrrd.write(str(tmp), np.ascontiguousarray(np.moveaxis(arr, 0, -1)), header, index_order="C")
    return path
