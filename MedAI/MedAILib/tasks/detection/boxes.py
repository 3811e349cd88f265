"""Boxes between the model's space and the input image, and as tables (JSON/CSV).

Convention (stated once, used everywhere): a box covers whole voxels. In the model's space MONAI
boxes are ``xyzxyz`` with ``[x1, x2)`` covering voxels ``x1 .. x2-1``, whose physical edges are at
continuous index ``x1 - 0.5`` and ``x2 - 0.5``. Those edges (all 8 corners) go through the
model-space affine to RAS; the output gives

- ``ras_min_mm`` / ``ras_max_mm``: the axis-aligned RAS extent (mm) and ``center_ras_mm``, ``size_ras_mm``;
- ``voxel_min`` / ``voxel_max``: the input image's voxel indices [i, j, k] covered, inclusive (numpy
  ``array[k0:k1+1, j0:j1+1, i0:i1+1]``), and ``center_ijk`` (continuous, the input's own grid).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from pathlib import Path

import numpy as np

from MedAILib.core.atomic import atomic_output, full_suffix
from MedAILib.core.volume import Volume


@dataclasses.dataclass
class Box:
    label: str
    score: float
    ras_min_mm: list
    ras_max_mm: list
    voxel_min: list
    voxel_max: list
    center_ijk: list

    @property
    def center_ras_mm(self) -> list:
        return [(a + b) / 2 for a, b in zip(self.ras_min_mm, self.ras_max_mm)]

    @property
    def size_ras_mm(self) -> list:
        return [b - a for a, b in zip(self.ras_min_mm, self.ras_max_mm)]

    def to_dict(self) -> dict:
        return {"label": self.label, "score": round(float(self.score), 6),
                "center_ras_mm": _r(self.center_ras_mm), "size_ras_mm": _r(self.size_ras_mm),
                "ras_min_mm": _r(self.ras_min_mm), "ras_max_mm": _r(self.ras_max_mm),
                "voxel_min": [int(v) for v in self.voxel_min], "voxel_max": [int(v) for v in self.voxel_max],
                "center_ijk": _r(self.center_ijk)}


def _r(v, n: int = 3) -> list:
    return [round(float(x), n) for x in v]


def _corners(lo, hi) -> np.ndarray:
    return np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])], float)


def model_boxes_to_input(boxes, scores, labels, model_affine, volume: Volume, label_names: dict) -> list:
    """Model-space MONAI boxes (N, 6) -> :class:`Box` on ``volume``'s grid (see the module docstring)."""
    boxes = np.asarray(boxes, float).reshape(-1, 6)
    affine = np.asarray(model_affine, float)
    out = []
    for b, s, l in zip(boxes, np.asarray(scores, float).reshape(-1), np.asarray(labels).reshape(-1)):
        edges = _corners(b[:3] - 0.5, b[3:] - 0.5)
        ras = edges @ affine[:3, :3].T + affine[:3, 3]
        ijk = volume.ras_to_ijk_points(ras)  # continuous indices of the edges on the input grid
        lo, hi = ijk.min(0), ijk.max(0)
        vmin = np.ceil(lo - 1e-6).astype(int)   # first voxel whose centre is inside the box
        vmax = np.floor(hi + 1e-6).astype(int)  # last voxel whose centre is inside the box
        size = np.array(volume.size_ijk)
        vmin, vmax = np.clip(vmin, 0, size - 1), np.clip(np.maximum(vmax, vmin), 0, size - 1)
        out.append(Box(label_names.get(int(l), f"class {int(l)}"), float(s), ras.min(0).tolist(), ras.max(0).tolist(),
                       vmin.tolist(), vmax.tolist(), ((lo + hi) / 2).tolist()))
    out.sort(key=lambda x: -x.score)
    return out


def voxel_box_to_ras(volume: Volume, vmin, vmax) -> tuple:
    """RAS extent of the inclusive voxel range ``vmin..vmax`` (edges half a voxel outside the centres)."""
    edges = _corners(np.asarray(vmin, float) - 0.5, np.asarray(vmax, float) + 0.5)
    ras = volume.ijk_to_ras_points(edges)
    return ras.min(0), ras.max(0)


CSV_COLUMNS = ["label", "score", "center_r", "center_a", "center_s", "size_r", "size_a", "size_s",
               "ras_min_r", "ras_min_a", "ras_min_s", "ras_max_r", "ras_max_a", "ras_max_s",
               "voxel_min_i", "voxel_min_j", "voxel_min_k", "voxel_max_i", "voxel_max_j", "voxel_max_k",
               "center_i", "center_j", "center_k"]


def write_boxes(path, boxes: list, info: dict) -> Path:
    """JSON (``info`` + ``boxes``) or CSV (one row per box, RAS mm and voxel indices), atomically."""
    path = Path(path)
    with atomic_output(path) as tmp:
        if full_suffix(path).lower() == ".csv":
            buf = io.StringIO()
            w = csv.writer(buf)
            w.writerow(CSV_COLUMNS)
            for b in boxes:
                d = b.to_dict()
                w.writerow([d["label"], d["score"], *d["center_ras_mm"], *d["size_ras_mm"], *d["ras_min_mm"],
                            *d["ras_max_mm"], *d["voxel_min"], *d["voxel_max"], *d["center_ijk"]])
            Path(tmp).write_text(buf.getvalue(), encoding="utf-8")
        else:
            Path(tmp).write_text(json.dumps(dict(info, coordinate_system="RAS", units="mm",
                                                 voxel_convention="inclusive voxel indices [i, j, k] of the input",
                                                 boxes=[b.to_dict() for b in boxes]), indent=2))
    return path


def read_boxes(path) -> list:
    """Boxes from a JSON written by :func:`write_boxes` (dicts)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))["boxes"]


def input_box_to_model(vmin, vmax, volume: Volume, model_affine) -> np.ndarray:
    """The inverse of :func:`model_boxes_to_input` for one inclusive voxel range of ``volume``: a
    MONAI ``xyzxyz`` box (``[x1, x2)`` in model-space voxels) covering the same physical extent."""
    edges = _corners(np.asarray(vmin, float) - 0.5, np.asarray(vmax, float) + 0.5)
    ras = volume.ijk_to_ras_points(edges)
    inv = np.linalg.inv(np.asarray(model_affine, float))
    idx = ras @ inv[:3, :3].T + inv[:3, 3]
    return np.concatenate([idx.min(0) + 0.5, idx.max(0) + 0.5])
