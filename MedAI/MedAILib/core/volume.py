"""The one interchange type: :class:`Volume` = KJI numpy array + 4x4 IJK->RAS matrix.

KJI (slice, row, column) is what ``slicer.util.arrayFromVolume`` and
``SimpleITK.GetArrayFromImage`` return, so arrays move between Slicer, SimpleITK and MedAI
without transposes. Labelmaps are Volumes with an integer array and a label table.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from MedAILib.core import geometry


@dataclasses.dataclass
class LabelInfo:
    """One label of a labelmap: value, name, RGB colour (0..1) and optional terminology.

    ``terminology`` follows Slicer's segment terminology string layout when given, e.g.
    ``"Segmentation category and type - 3D Slicer General Anatomy list~SCT^123037004^Anatomical
    Structure~SCT^5001000^Hippocampus~^^~Anatomic codes - DICOM master list~^^~^^"``.
    """

    value: int
    name: str
    color: tuple = (1.0, 0.0, 0.0)
    terminology: Optional[str] = None

    def to_dict(self) -> dict:
        d = {"value": int(self.value), "name": self.name, "color": [float(c) for c in self.color]}
        if self.terminology:
            d["terminology"] = self.terminology
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "LabelInfo":
        color = d.get("color", (1.0, 0.0, 0.0))
        if max(color) > 1.0:  # accept 0..255 colours from catalogues
            color = [c / 255.0 for c in color]
        return cls(int(d["value"]), str(d["name"]), tuple(float(c) for c in color), d.get("terminology"))


@dataclasses.dataclass
class Volume:
    """A 3D image: ``array`` in KJI order and ``ijk_to_ras`` (4x4, float64).

    ``labels`` is set for labelmaps (value -> name, colour, terminology); ``metadata`` carries
    free-form facts (source path, modality, DICOM series UID) that never affect geometry.
    """

    array: np.ndarray
    ijk_to_ras: np.ndarray
    labels: Optional[list] = None
    metadata: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        self.ijk_to_ras = np.asarray(self.ijk_to_ras, dtype=np.float64).reshape(4, 4)

    # --- geometry --------------------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        """Array shape in KJI order."""
        return tuple(self.array.shape)

    @property
    def size_ijk(self) -> tuple:
        """Image size along I, J, K (what ITK and Slicer's Volumes module show)."""
        return tuple(int(s) for s in self.array.shape[:3][::-1])

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size along I, J, K in mm."""
        return geometry.spacing_of(self.ijk_to_ras)

    @property
    def origin(self) -> np.ndarray:
        """RAS position of voxel (0, 0, 0) in mm."""
        return self.ijk_to_ras[:3, 3].copy()

    @property
    def direction(self) -> np.ndarray:
        """3x3 RAS direction cosines; columns are the I, J, K axes."""
        return geometry.direction_of(self.ijk_to_ras)

    @property
    def axis_codes(self) -> str:
        return geometry.axis_codes(self.ijk_to_ras)

    @property
    def is_labelmap(self) -> bool:
        return self.labels is not None

    def ijk_to_ras_points(self, ijk) -> np.ndarray:
        return geometry.ijk_to_ras_points(self.ijk_to_ras, ijk)

    def ras_to_ijk_points(self, ras) -> np.ndarray:
        return geometry.ras_to_ijk_points(self.ijk_to_ras, ras)

    def same_grid(self, other: "Volume", atol: float = 1e-4) -> bool:
        """True when both volumes have the same voxel grid (shape and IJK->RAS)."""
        return self.array.shape[:3] == other.array.shape[:3] and bool(
            np.allclose(self.ijk_to_ras, other.ijk_to_ras, atol=atol)
        )

    # --- construction helpers --------------------------------------------------------------
    def with_array(self, array: np.ndarray, labels=None, **metadata) -> "Volume":
        """A new Volume on this grid holding ``array`` (geometry copied, metadata merged)."""
        if array.shape[:3] != self.array.shape[:3]:
            raise ValueError(f"array shape {array.shape} does not match grid {self.array.shape}")
        meta = dict(self.metadata)
        meta.update(metadata)
        return Volume(array, self.ijk_to_ras.copy(), labels, meta)

    def copy(self) -> "Volume":
        labels = None if self.labels is None else [dataclasses.replace(l) for l in self.labels]
        return Volume(self.array.copy(), self.ijk_to_ras.copy(), labels, dict(self.metadata))

    def label_table(self) -> dict:
        """``{value: LabelInfo}`` for labelmaps, empty otherwise."""
        return {l.value: l for l in (self.labels or [])}

    def __repr__(self) -> str:
        sp = ", ".join(f"{s:.4g}" for s in self.spacing)
        kind = f", {len(self.labels)} labels" if self.labels is not None else ""
        return f"Volume(size_ijk={self.size_ijk}, spacing=({sp}), {self.axis_codes}, {self.array.dtype}{kind})"
