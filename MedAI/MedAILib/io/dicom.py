"""DICOM series and studies: list the series in a folder, group them by study, read one (sorted by
position, not file name).

Patient names and IDs are read only to tell patients apart (a one-way digest); they never reach a
message, a log or a report.
"""

from __future__ import annotations

import dataclasses
import hashlib
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
    # What a series choice reads (:mod:`MedAILib.tasks.segmentation.series_choice`); from the first file.
    study_uid: str = ""
    study_description: str = ""
    patient_key: str = ""          # digest of PatientID + PatientName: tells patients apart, shows nothing
    frame_of_reference: str = ""
    protocol: str = ""
    sequence_name: str = ""
    scanning_sequence: str = ""
    image_type: tuple = ()
    contrast_agent: str = ""
    slice_thickness: float = 0.0
    pixel_spacing: tuple = ()
    orientation: tuple = ()        # ImageOrientationPatient (row and column cosines, LPS)
    sop_class: str = ""

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


def patient_key(patient_id, patient_name) -> str:
    """A short digest telling patients apart without revealing who they are."""
    text = f"{str(patient_id or '').strip()}\0{str(patient_name or '').strip()}"
    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:12]


def _series_tags(filename: str) -> dict:
    """The tags a series choice and the patient check need (pydicom, header only)."""
    try:
        import pydicom

        ds = pydicom.dcmread(filename, stop_before_pixels=True)
    except Exception:  # not fatal: the series is still listed, it just cannot be chosen by its tags
        return {}

    def text(key):
        v = ds.get(key)
        return "" if v is None else str(v).strip()

    def floats(key):
        try:
            return tuple(float(x) for x in (ds.get(key) or ()))
        except (TypeError, ValueError):
            return ()

    try:
        thickness = float(ds.get("SliceThickness") or 0.0)
    except (TypeError, ValueError):
        thickness = 0.0
    image_type = ds.get("ImageType") or ()
    scanning = ds.get("ScanningSequence") or ""
    return {"study_uid": text("StudyInstanceUID"), "study_description": text("StudyDescription"),
            "patient_key": patient_key(ds.get("PatientID"), ds.get("PatientName")),
            "frame_of_reference": text("FrameOfReferenceUID"), "protocol": text("ProtocolName"),
            "sequence_name": text("SequenceName"),
            "scanning_sequence": "\\".join(scanning) if not isinstance(scanning, str) else scanning,
            "image_type": tuple(str(x).upper() for x in (image_type if not isinstance(image_type, str)
                                                          else image_type.split("\\"))),
            "contrast_agent": text("ContrastBolusAgent"), "slice_thickness": thickness,
            "pixel_spacing": floats("PixelSpacing"), "orientation": floats("ImageOrientationPatient"),
            "sop_class": text("SOPClassUID")}


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
    info.update(_series_tags(files[0]))
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
        seen = set()
        for root, dirs, files in os.walk(folder, followlinks=True):  # linked study folders count too
            real = os.path.realpath(root)
            if real in seen:  # a link loop: each folder once
                dirs[:] = []
                continue
            seen.add(real)
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


@dataclasses.dataclass
class DicomStudy:
    """The series of one StudyInstanceUID found under a folder (one case of ``medai segment``)."""

    uid: str
    series: list
    folder: str            # the deepest folder holding all its series
    description: str = ""
    patient_key: str = ""

    @property
    def name(self) -> str:
        """A case name for people: the study folder's name (UIDs are unreadable)."""
        return Path(self.folder).name or self.uid


def _common_folder(folders) -> str:
    return os.path.commonpath([str(Path(f).resolve()) for f in folders]) if folders else ""


def check_one_patient(series: list, where) -> None:
    """Refuse series of several patients taken as one input: a model would silently use one of
    them. The message names the folders, never the patients."""
    patients = {}
    for s in series:
        patients.setdefault(s.patient_key, []).append(s)
    patients.pop("", None)
    if len(patients) > 1:
        folders = [sorted({Path(s.folder).name for s in group}) for group in patients.values()]
        shown = "; ".join(f"patient {n + 1}: {', '.join(f[:3])}" for n, f in enumerate(folders))
        raise InputError(f"{where} holds DICOM series of {len(patients)} different patients ({shown}; "
                         "PatientID/PatientName differ, not shown)",
                         "give one folder per patient (or per study), or choose the series with --series UID")


def group_studies(series: list) -> list:
    """Series grouped by StudyInstanceUID (series without one form a study of their own folder),
    in a stable order (folder name)."""
    groups = {}
    for s in series:
        key = s.study_uid or f"folder:{s.folder}"
        groups.setdefault(key, []).append(s)
    studies = []
    for key, members in groups.items():
        folder = _common_folder({s.folder for s in members})
        studies.append(DicomStudy(uid=members[0].study_uid or "", series=members, folder=folder,
                                  description=members[0].study_description, patient_key=members[0].patient_key))
    studies.sort(key=lambda st: (st.folder, st.uid))
    return studies


def list_dicom_studies(folder) -> list:
    """The DICOM studies under ``folder`` (each: its series, largest first). A study whose series
    belong to several patients (same StudyInstanceUID, different PatientID) is refused."""
    studies = group_studies(list_dicom_series(folder))
    for st in studies:
        check_one_patient(st.series, f"study {st.name} ({st.uid or 'no StudyInstanceUID'})")
    return studies


def _check_slice_spacing(series: DicomSeries) -> None:
    """Refuse a series with missing or unevenly spaced slices: ITK only warns and then builds a
    volume with one spacing, which puts every slice after the gap at the wrong position."""
    if series.n_files < 3:
        return
    import numpy as np
    import pydicom

    positions, normal, patients = [], None, set()
    for f in series.files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True,
                                 specific_tags=["ImagePositionPatient", "ImageOrientationPatient", "PatientID",
                                                "PatientName"])
            patients.add(patient_key(ds.get("PatientID"), ds.get("PatientName")))
            if len(patients) > 1:
                raise InputError(f"DICOM series {series.uid} in {series.folder} mixes files of different patients "
                                 "(PatientID/PatientName differ, not shown)",
                                 "the files were copied together by mistake: export the series again")
            ipp = np.array(ds.ImagePositionPatient, dtype=float)
            if normal is None:
                iop = np.array(ds.ImageOrientationPatient, dtype=float)
                normal = np.cross(iop[:3], iop[3:])
        except InputError:
            raise
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
        check_one_patient(series, folder)  # never silently one patient of several (issue 14)
        chosen = series[0]
    return read_series(chosen, folder)


def _check_series_size(chosen: DicomSeries, folder) -> None:
    """The image size limits (MEDAI_MAX_IMAGE_VOXELS/_BYTES) for a series, from its first header:
    columns x rows x files at BitsAllocated x SamplesPerPixel, before any pixel is read."""
    from MedAILib.core.limits import check_image_size

    if not (chosen.columns and chosen.rows and chosen.files):
        return
    bits, samples = 16, 1
    reader = sitk.ImageFileReader()
    reader.SetFileName(chosen.files[0])
    try:
        reader.ReadImageInformation()
        if reader.HasMetaDataKey("0028|0100"):
            bits = int(reader.GetMetaData("0028|0100").strip() or 16)
        if reader.HasMetaDataKey("0028|0002"):
            samples = int(reader.GetMetaData("0028|0002").strip() or 1)
    except (RuntimeError, ValueError):
        pass  # unreadable header: the reader below names the problem
    name = f"DICOM series {chosen.description or chosen.uid} in {folder}"
    check_image_size(name, (chosen.columns, chosen.rows, len(chosen.files)), max(1, bits // 8) * max(1, samples))


def read_series(chosen: DicomSeries, folder=None):
    """Read one listed DicomSeries as a Volume (slices sorted by position, spacing checked)."""
    folder = folder or chosen.folder
    _check_slice_spacing(chosen)
    _check_series_size(chosen, folder)
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
    # dicom_files: the slices in position order, for writers that reference them (DICOM SEG)
    return from_sitk(image, source=str(folder), series_uid=chosen.uid, modality=chosen.modality,
                     description=chosen.description, dicom_files=list(chosen.files))
