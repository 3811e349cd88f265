"""Label clean-up after a model ran: keep the largest component per label, remove small islands
(MONAI transforms), and per-label volumes."""

from __future__ import annotations

import numpy as np


# MONAI's KeepLargestConnectedComponent / RemoveSmallObjects need scikit-image, which is not a
# dependency; scipy.ndimage.label (face connectivity, as MONAI's connectivity=1) does the same job.

def keep_largest_component(labels: np.ndarray, values=None) -> np.ndarray:
    """Keep only the largest connected component of each label value (others become background)."""
    from scipy import ndimage

    out = labels.copy()
    values = [int(v) for v in (values if values is not None else np.unique(labels)) if int(v) != 0]
    for v in values:
        comp, n = ndimage.label(labels == v)
        if n > 1:
            sizes = np.bincount(comp.ravel())
            sizes[0] = 0
            out[(comp != 0) & (comp != int(np.argmax(sizes)))] = 0
    return out


def remove_small_islands(labels: np.ndarray, min_voxels: int) -> np.ndarray:
    """Remove connected pieces smaller than ``min_voxels`` of every label (to background)."""
    from scipy import ndimage

    if min_voxels <= 1:
        return labels
    out = labels.copy()
    for v in [int(v) for v in np.unique(labels) if v != 0]:
        comp, n = ndimage.label(labels == v)
        sizes = np.bincount(comp.ravel())
        small = np.nonzero(sizes < min_voxels)[0]
        small = small[small != 0]
        if small.size:
            out[np.isin(comp, small)] = 0
    return out


def label_volumes_ml(volume) -> dict:
    """{label name: volume in mL} of a labelmap Volume."""
    voxel_ml = float(np.prod(volume.spacing)) / 1000.0
    counts = dict(zip(*np.unique(volume.array, return_counts=True)))
    return {l.name: round(float(counts.get(l.value, 0)) * voxel_ml, 4) for l in (volume.labels or [])}
