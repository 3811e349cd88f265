"""DICOM series: list the series in a folder, read one (sorted by position, not file name)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import SimpleITK as sitk

from MedAILib.core.errors import InputError
from MedAILib.io.images import from_sitk, quiet_native_stderr

# Tags shown to a person. Patient name/ID are deliberately not read: they must never reach logs.
_TAGS = {"0020|000e": "series_instance_uid", "0008|0060": "modality", "0008|103e": "description", "0020|0011": "series_number",
         "0008|0021": "series_date"}


@dataclasses.dataclass
class DicomSeries:
    uid: str
    folder: str
    files: list
    modality: str = ""
    description: str = ""
    series_number: str = ""
    series_date: str = ""
    transfer_syntax: str = ""
    rows: int = 0
    columns: int = 0

    @property
    def n_files(self) -> int:
        return len(self.files)

    @property
    def n_voxels(self) -> int:
        """Voxels in the series (rows x columns x files); "largest" means this, not the file count,
        so a 40-slice scout or crop does not win over a 22-slice full-resolution series."""
        return max(self.rows, 1) * max(self.columns, 1) * self.n_files


def _transfer_syntax(filename: str) -> str:
    """TransferSyntaxUID from the file meta header (SimpleITK does not expose group 0002)."""
    try:
        import pydicom

        meta = pydicom.filereader.read_file_meta_info(filename)
        return str(meta.get("TransferSyntaxUID", ""))
    except Exception:  # not fatal: the field is informative only
        return ""


def _describe(uid: str, folder: Path, files: list) -> DicomSeries:
    info = {}
    reader = sitk.ImageFileReader()
    reader.SetFileName(files[0])
    try:
        reader.ReadImageInformation()
        for tag, key in _TAGS.items():
            if reader.HasMetaDataKey(tag):
                info[key] = reader.GetMetaData(tag).strip()
        size = reader.GetSize()
        info["columns"], info["rows"] = int(size[0]), int(size[1])
    except RuntimeError:
        pass
    info["transfer_syntax"] = _transfer_syntax(files[0])
    # GDCM's series id is normally the SeriesInstanceUID; fall back to the tag when it is empty.
    uid = uid or info.get("series_instance_uid", "")
    info.pop("series_instance_uid", None)
    return DicomSeries(uid=uid, folder=str(folder), files=list(files), **info)


def list_dicom_series(folder) -> list:
    """All DICOM series under ``folder`` (recursively), largest (most voxels) first."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder", "give the folder that holds the DICOM files")
    found = []
    # ITK prints "No Series were found" for every non-DICOM folder; that is noise for a person.
    warn = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        for root, dirs, files in os.walk(folder):
            dirs.sort()
            if not files:
                continue
            for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(root) or ():
                # GDCM's file list is sorted by image position along the slice normal, not by file name.
                names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(root, uid)
                if names:
                    found.append(_describe(uid, Path(root), names))
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warn)
    found.sort(key=lambda s: (-s.n_voxels, -s.n_files, s.uid))
    return found


def _check_slice_spacing(series: DicomSeries) -> None:
    """Refuse a series with missing or unevenly spaced slices: ITK only warns and then builds a
    volume with one spacing, which puts every slice after the gap at the wrong position."""
    if series.n_files < 3:
        return
    import numpy as np
    import pydicom

    positions, normal = [], None
    for f in series.files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True,
                                 specific_tags=["ImagePositionPatient", "ImageOrientationPatient"])
            ipp = np.array(ds.ImagePositionPatient, dtype=float)
            if normal is None:
                iop = np.array(ds.ImageOrientationPatient, dtype=float)
                normal = np.cross(iop[:3], iop[3:])
        except Exception:  # no position tags (or unreadable): leave it to the reader
            return
        positions.append(float(np.dot(normal, ipp)))
    steps = np.diff(np.sort(positions))
    if steps.size == 0:
        return
    typical = float(np.median(steps))
    if typical <= 0 or np.max(np.abs(steps - typical)) > max(0.1 * typical, 0.01):
        raise InputError(
            f"DICOM series {series.uid} has missing or unevenly spaced slices "
            f"(gaps from {steps.min():.3g} to {steps.max():.3g} mm; typical {typical:.3g} mm)",
            "the series is incomplete or mixes several acquisitions: copy or export the whole series again",
        )


def read_dicom_series(folder, series_uid: str = None):
    """Read one series from a folder as a Volume: ``series_uid``, or the largest series."""
    series = list_dicom_series(folder)
    if not series:
        raise InputError(f"no DICOM series found in {folder}",
                         "check that the folder holds DICOM files (they may be in a sub-folder or zipped)")
    if series_uid:
        match = [s for s in series if s.uid == series_uid.strip()]
        if not match:
            raise InputError(f"series {series_uid} is not in {folder}",
                             "run `medai info FOLDER` to list the series UIDs there")
        chosen = match[0]
    else:
        chosen = series[0]
    _check_slice_spacing(chosen)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(chosen.files)
    try:
        with quiet_native_stderr():
            image = reader.Execute()
    except RuntimeError as e:
        raise InputError(f"DICOM series {chosen.uid} in {folder} could not be read",
                         "the files may be corrupt or use an unsupported compression; re-export as uncompressed") from e
    if image.GetDimension() == 3 and image.GetSize()[2] == 1:
        pass  # single-slice series stay 3D with one slice; validation decides whether a model accepts it
    return from_sitk(image, source=str(folder), series_uid=chosen.uid, modality=chosen.modality,
                     description=chosen.description)
