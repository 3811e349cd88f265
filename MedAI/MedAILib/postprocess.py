"""Label clean-up after a model ran: keep the largest component per label, remove small islands
(MONAI transforms), and per-label volumes."""

from __future__ import annotations

import numpy as np
import torch


def keep_largest_component(labels: np.ndarray, values=None) -> np.ndarray:
    """Keep only the largest connected component of each label value (others become background)."""
    from monai.transforms import KeepLargestConnectedComponent

    values = [int(v) for v in (values if values is not None else np.unique(labels)) if int(v) != 0]
    if not values:
        return labels
    t = KeepLargestConnectedComponent(applied_labels=values, is_onehot=False, independent=True, connectivity=1)
    out = t(torch.as_tensor(labels[None].astype(np.int32)))
    return np.asarray(out[0]).astype(labels.dtype)


def remove_small_islands(labels: np.ndarray, min_voxels: int) -> np.ndarray:
    """Remove connected pieces smaller than ``min_voxels`` of every label (to background)."""
    from monai.transforms import RemoveSmallObjects

    if min_voxels <= 1:
        return labels
    t = RemoveSmallObjects(min_size=int(min_voxels), connectivity=1, independent_channels=True)
    out = labels.copy()
    for v in [int(v) for v in np.unique(labels) if v != 0]:
        mask = torch.as_tensor((labels == v)[None])
        kept = np.asarray(t(mask)[0]).astype(bool)
        out[(labels == v) & ~kept] = 0
    return out


def label_volumes_ml(volume) -> dict:
    """{label name: volume in mL} of a labelmap Volume."""
    voxel_ml = float(np.prod(volume.spacing)) / 1000.0
    counts = dict(zip(*np.unique(volume.array, return_counts=True)))
    return {l.name: round(float(counts.get(l.value, 0)) * voxel_ml, 4) for l in (volume.labels or [])}
