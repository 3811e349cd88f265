"""Sunnybrook cardiac cine (CC0; ../shared/data/sunnybrook-cine): images with their manual left-ventricle
endocardial contours rasterised onto the DICOM frames they were drawn on.

Contour files ``IM-0001-NNNN-icontour-manual.txt`` hold one closed polygon in pixel coordinates
(``x`` = column, ``y`` = row) of ``NNNN.dcm`` (leading zeros dropped; SOURCES.md section 8). The
frame and slice of that file in the cine are looked up from the reader's own sorting
(:func:`MedAILib.io.sequences.read_dicom_cine` records each file's place), not from the file
number, so the labels land where the reader put the image. The polygon is filled with
``skimage.draw.polygon2mask`` (pixels whose centre lies inside).

Only i-contours (blood pool) are used: one patient's o-contours are a wrong upstream copy.
"""

from __future__ import annotations

import csv
import dataclasses
import re
from pathlib import Path

import numpy as np

from MedAILib.core.errors import InputError
from MedAILib.io.sequences import Sequence, read_dicom_cine

LABEL_NAME = "left ventricle blood pool"
_CONTOUR = re.compile(r"IM-\d+-(\d+)-icontour-manual\.txt$")


@dataclasses.dataclass
class LabelledCine:
    patient: str            # DICOM PatientID folder, e.g. SCD0000101
    case: str               # Sunnybrook case name, e.g. SC-HF-I-1
    sequence: Sequence
    masks: dict             # (frame t, slice k) -> 2D bool mask (rows, columns) of the blood pool

    @property
    def contoured_slices(self) -> list:
        return sorted({k for _, k in self.masks})

    @property
    def phases(self) -> dict:
        """{"ED": t, "ES": t}: the contours are drawn at two frames; end-diastole is the one with the
        larger blood pool summed over the slices (per slice the order can flip at the base, where
        the valve plane moves through the slice)."""
        total = {}
        for (t, _), m in self.masks.items():
            total[t] = total.get(t, 0) + int(m.sum())
        if len(total) != 2:
            raise InputError(f"{self.case}: contours at {len(total)} frames, expected ED and ES", "")
        ed = max(total, key=total.get)
        return {"ED": ed, "ES": min(total, key=total.get)}


def patients(root) -> dict:
    """{DICOM patient folder: Sunnybrook case name} from link.csv."""
    root = Path(root)
    with open(root / "link.csv", newline="") as f:
        return {r["patient_id"]: r["original_id"] for r in csv.DictReader(f)}


def read_contour(path) -> np.ndarray:
    pts = np.loadtxt(path, dtype=np.float64, ndmin=2)
    if pts.shape[1] != 2 or len(pts) < 3:
        raise InputError(f"{Path(path).name} is not a contour (expected lines of 'x y', at least 3 points)", "")
    return pts


def rasterise(points: np.ndarray, shape) -> np.ndarray:
    from skimage.draw import polygon2mask

    return polygon2mask(tuple(shape), np.stack([points[:, 1], points[:, 0]], axis=1))  # (row, col)


def load_case(root, patient: str) -> LabelledCine:
    root = Path(root)
    case = patients(root)[patient]
    seq = read_dicom_cine(root / "dicoms" / patient)
    where = {}
    for t, files in enumerate(seq.metadata["files"]):
        for k, f in enumerate(files):
            where[Path(f).name] = (t, k)
    shape = seq.frames[0].array.shape[1:]
    masks = {}
    for p in sorted((root / "contourfiles" / case / "i-contours").glob("*.txt")):
        m = _CONTOUR.search(p.name)
        if not m:
            continue
        name = f"{int(m.group(1))}.dcm"
        if name not in where:
            raise InputError(f"{p.name}: its image {name} is not in {patient}'s cine", "")
        masks[where[name]] = rasterise(read_contour(p), shape)
    return LabelledCine(patient, case, seq, masks)
