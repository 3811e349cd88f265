"""Per-segment statistics of a labelmap: volume (mL), voxel count, mean/std intensity of each input
image on the labelmap's grid, and the bounding box (voxel indices and RAS millimetres).

The numbers go into ``medai segment``'s report and, through the Slicer Logic, into a table node;
they are computed here once so every caller reports the same values.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from scipy import ndimage

from MedAILib.core.volume import Volume

SLAB_VOXELS = 1 << 20  # voxels per slab of slices (its int64 labels, int32 copy and float64 weights)


def segment_statistics(labelmap: Volume, images: Optional[Sequence[Volume]] = None,
                       image_names: Optional[Sequence[str]] = None) -> list:
    """One dict per label of ``labelmap``'s table (plus values present but not in the table), in
    label-value order. ``images`` must be on the labelmap's grid (the pipeline's results are); an
    image on another grid is skipped, and its intensity fields say why."""
    arr = np.asarray(labelmap.array)
    table = labelmap.label_table()
    voxel_ml = float(np.prod(labelmap.spacing)) / 1000.0
    images = list(images or [])
    names = list(image_names or [f"input_{i + 1}" for i in range(len(images))])
    # find_objects gives every label's bounding box; bincount gives counts and sums. Both run over
    # slabs of slices: whole-volume int64/float64 copies were ~2 GB at CT size (issue 18).
    top = int(arr.max(initial=0))
    counts = np.zeros(top + 1, dtype=np.int64)
    boxes = [None] * top
    sums = [(np.zeros(top + 1), np.zeros(top + 1))
            if img.array.shape[:3] == arr.shape[:3] and img.same_grid(labelmap, atol=1e-3) else None for img in images]
    step = max(1, SLAB_VOXELS // max(1, int(np.prod(arr.shape[1:3]))))
    for k0 in range(0, arr.shape[0], step):
        part = arr[k0:k0 + step]
        flat = part.astype(np.int64, copy=False).ravel()
        counts += np.bincount(flat, minlength=top + 1)
        for v, sl in enumerate(ndimage.find_objects(part.astype(np.int32, copy=False), max_label=top) if top else []):
            if sl is not None:
                sl = (slice(sl[0].start + k0, sl[0].stop + k0),) + tuple(sl[1:3])
                old = boxes[v]
                boxes[v] = sl if old is None else tuple(slice(min(a.start, b.start), max(a.stop, b.stop))
                                                        for a, b in zip(old, sl))
        for img, s in zip(images, sums):
            if s is not None:
                x = np.asarray(img.array[k0:k0 + step], dtype=np.float64).ravel()
                s[0][:] += np.bincount(flat, weights=x, minlength=top + 1)
                s[1][:] += np.bincount(flat, weights=x * x, minlength=top + 1)
    values = sorted(set(table) | {int(v) for v in np.flatnonzero(counts) if v != 0})  # np.unique: a sorted copy
    rows = []
    for v in values:
        n = int(counts[v]) if 0 <= v <= top else 0
        info = table.get(v)
        row = {"value": int(v), "name": info.name if info else f"label_{v}", "voxels": n,
               "volume_ml": round(n * voxel_ml, 4)}
        if n and 0 < v <= top and boxes[v - 1] is not None:
            sl = boxes[v - 1]  # KJI slices
            lo_kji = np.array([s.start for s in sl]); hi_kji = np.array([s.stop - 1 for s in sl])
            lo_ijk, hi_ijk = lo_kji[::-1], hi_kji[::-1]
            corners = np.array([[i, j, k] for i in (lo_ijk[0], hi_ijk[0]) for j in (lo_ijk[1], hi_ijk[1])
                                for k in (lo_ijk[2], hi_ijk[2])], dtype=float)
            ras = labelmap.ijk_to_ras_points(corners)
            row["bbox_ijk"] = {"min": [int(x) for x in lo_ijk], "max": [int(x) for x in hi_ijk]}
            row["bbox_ras_mm"] = {"min": [round(float(x), 2) for x in ras.min(0)],
                                  "max": [round(float(x), 2) for x in ras.max(0)]}
        else:
            row["bbox_ijk"] = row["bbox_ras_mm"] = None
        intensity = {}
        for name, s in zip(names, sums):
            if s is None:
                intensity[name] = {"mean": None, "std": None, "note": "not on the segmentation's grid"}
            elif n == 0:
                intensity[name] = {"mean": None, "std": None}
            else:
                mean = s[0][v] / n
                var = max(s[1][v] / n - mean * mean, 0.0)
                intensity[name] = {"mean": round(float(mean), 4), "std": round(float(np.sqrt(var)), 4)}
        if intensity:
            row["intensity"] = intensity
        rows.append(row)
    return rows


def statistics_columns(rows_per_case: list) -> list:
    """(column name, getter of a report row) for a CSV report: volume and mean intensity per label
    and input, named ``<label>_voxels`` and ``<label>_<input>_mean``."""
    labels, inputs = [], []
    for r in rows_per_case:
        for s in r.get("statistics") or []:
            if s["name"] not in labels:
                labels.append(s["name"])
            for k in (s.get("intensity") or {}):
                if k not in inputs:
                    inputs.append(k)

    def get(label, key, image=None):
        def value(row):
            for s in row.get("statistics") or []:
                if s["name"] == label:
                    return s.get(key) if image is None else ((s.get("intensity") or {}).get(image) or {}).get(key)
            return None
        return value

    cols = []
    for label in labels:
        cols.append((f"{label}_voxels", get(label, "voxels")))
        for image in inputs:
            cols.append((f"{label}_{image}_mean", get(label, "mean", image)))
            cols.append((f"{label}_{image}_std", get(label, "std", image)))
    return cols
