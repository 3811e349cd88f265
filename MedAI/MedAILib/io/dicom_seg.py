"""DICOM Segmentation (SEG) objects with highdicom: write a labelmap computed from a DICOM series,
read one back.

The SEG references the source series' instances (one frame per source slice that holds a segment),
names each segment with its label name and the SNOMED CT codes of its terminology (category, type
and type modifier, as Slicer's terminology strings hold them), and identifies the algorithm (model
id and version). Label values become segment numbers 1..N in value order; the original value is the
segment's TrackingID (``label value N``) so a reader can map back.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from MedAILib.core.atomic import atomic_output
from MedAILib.core.errors import InputError

log = logging.getLogger(__name__)

# Used when a label carries no terminology (coded as a generic tissue, and said so in the log).
FALLBACK_CATEGORY = ("91723000", "SCT", "Anatomical Structure")
FALLBACK_TYPE = ("85756007", "SCT", "Tissue")


def _codes_from_terminology(term: str):
    """(category, type, type modifier or None) as (value, scheme, meaning) tuples from a Slicer
    terminology string ``context~SCT^code^meaning~SCT^code^meaning~SCT^code^meaning~...``."""
    parts = (term or "").split("~")

    def code(text):
        fields = (text or "").split("^")
        if len(fields) >= 3 and fields[0] and fields[1]:
            return fields[1], fields[0], fields[2]
        return None

    if len(parts) < 3:
        return None, None, None
    return code(parts[1]), code(parts[2]), code(parts[3]) if len(parts) > 3 else None


def _coded(t):
    from highdicom.sr.coding import CodedConcept

    return CodedConcept(value=t[0], scheme_designator=t[1], meaning=t[2])


def write_dicom_seg(labelmap, source, path, model_id: str, model_version: str = "", series_number: int = 900):
    """Write ``labelmap`` (on the grid of ``source``, a Volume read from a DICOM series) as a DICOM
    SEG at ``path`` (atomic). Raises InputError when the source is not a DICOM series."""
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    files = list(source.metadata.get("dicom_files") or [])
    if not files:
        raise InputError("--format dicom-seg needs a DICOM input: a DICOM SEG references the source series' "
                         f"instances, and {source.metadata.get('source', 'this input')} is not a DICOM series",
                         "give the DICOM folder, or use --format seg.nrrd / nii.gz")
    if not labelmap.same_grid(source, atol=1e-3):
        raise InputError("the segmentation is not on the DICOM series' grid", "report this: it should not happen")
    datasets = [pydicom.dcmread(f) for f in files]
    for ds in datasets:  # in memory only: highdicom copies these Type 2 patient/study attributes (may be empty)
        for key in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                    "AccessionNumber", "ReferringPhysicianName", "StudyID"):
            if key not in ds:
                setattr(ds, key, "")
    arr = np.asarray(labelmap.array)
    if arr.shape[0] != len(datasets):
        raise InputError(f"the series has {len(datasets)} slices but the segmentation {arr.shape[0]}",
                         "re-read the series: it may have changed on disk")
    table = labelmap.label_table()
    values = sorted(set(table) | {int(v) for v in np.unique(arr) if v != 0})
    algorithm = hd.AlgorithmIdentificationSequence(name=str(model_id), version=str(model_version or "unknown"),
                                                   family=codes.cid7162.ArtificialIntelligence)
    descriptions, numbered = [], np.zeros(arr.shape, dtype=np.uint16)
    for number, value in enumerate(values, start=1):
        info = table.get(value)
        name = info.name if info else f"label_{value}"
        category, ptype, modifier = _codes_from_terminology(info.terminology if info else "")
        if category is None or ptype is None:
            log.warning("label %s (%s) has no terminology: coded as %s", value, name, FALLBACK_TYPE[2])
            category, ptype, modifier = FALLBACK_CATEGORY, FALLBACK_TYPE, None
        desc = hd.seg.SegmentDescription(
            segment_number=number, segment_label=name[:64], segmented_property_category=_coded(category),
            segmented_property_type=_coded(ptype), algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm, tracking_uid=hd.UID(), tracking_id=f"label value {value}")
        if modifier is not None:  # DICOM nests the modifier inside the type code item (PS3.3 C.8.20.4)
            desc.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [_coded(modifier)]
        descriptions.append(desc)
        numbered[arr == value] = number
    if not descriptions:
        raise InputError("the segmentation is empty: a DICOM SEG needs at least one segment",
                         "check the input, or write --format seg.nrrd (an empty segmentation is allowed there)")
    from MedAILib import __version__ as medai_version

    seg = hd.seg.Segmentation(
        source_images=datasets, pixel_array=numbered, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=series_number,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="MedAI",
        manufacturer_model_name=str(model_id)[:64], software_versions=str(medai_version),
        device_serial_number="none", series_description=f"MedAI {model_id}"[:64],
        content_description=f"{model_id} {model_version}".strip()[:64], content_label="MEDAI_SEG")
    path = Path(path)
    with atomic_output(path) as tmp:
        seg.save_as(str(tmp))
    return path


def read_dicom_seg_labelmap(path, reference):
    """A DICOM SEG back as a KJI label array on ``reference``'s grid (the source series' Volume):
    each frame goes to the slice at its ImagePositionPatient; segment numbers become the label
    values recorded in their TrackingID (``label value N``), else the segment numbers."""
    import highdicom as hd

    from MedAILib.core import geometry

    seg = hd.seg.segread(str(path))
    out = np.zeros(reference.array.shape, dtype=np.uint16)
    value_of = {}
    for n in seg.get_segment_numbers():
        d = seg.get_segment_description(n)
        tid = str(getattr(d, "TrackingID", "") or "")
        value_of[n] = int(tid.rsplit(" ", 1)[-1]) if tid.startswith("label value ") else n
    lps_to_ijk = np.linalg.inv(geometry.ijk_to_lps_from_ijk_to_ras(reference.ijk_to_ras))
    for i, frame in enumerate(seg.PerFrameFunctionalGroupsSequence):
        ipp_lps = np.array(frame.PlanePositionSequence[0].ImagePositionPatient, float)
        ijk = lps_to_ijk @ np.append(ipp_lps, 1.0)
        k = int(round(ijk[2]))
        if not (0 <= k < out.shape[0]) or abs(ijk[0]) > 1e-2 or abs(ijk[1]) > 1e-2:
            raise InputError(f"{path}: frame {i + 1} is not on a slice of the reference series", "")
        number = int(frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        pixels = seg.pixel_array[i] if seg.pixel_array.ndim == 3 else seg.pixel_array
        out[k][pixels > 0] = value_of[number]
    return out
