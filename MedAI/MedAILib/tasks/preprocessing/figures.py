"""PNG figures for a person: the same axial slice of several volumes side by side.

Each volume is reoriented with SimpleITK's ``DICOMOrient`` to LPS, so ``array[k]`` is an axial
slice shown the radiological way (anterior up, patient right on the image left); the slice shown
is the one nearest to one world position in every volume, so cropped or resampled results line up
with their input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import SimpleITK as sitk

from MedAILib.core.volume import Volume
from MedAILib.io import to_sitk
from MedAILib.io.preview import save_figure


def axial_slice(volume: Volume, point_ras: Optional[np.ndarray] = None) -> tuple:
    """(2D array, (row mm, column mm)) of the axial slice nearest ``point_ras`` (default: the centre)."""
    image = sitk.DICOMOrient(to_sitk(volume.with_array(np.asarray(volume.array, np.float32))), "LPS")
    arr = sitk.GetArrayViewFromImage(image)
    if point_ras is None:
        k = arr.shape[0] // 2
    else:
        lps = [-point_ras[0], -point_ras[1], point_ras[2]]
        idx = image.TransformPhysicalPointToContinuousIndex([float(x) for x in lps])
        k = int(np.clip(round(idx[2]), 0, arr.shape[0] - 1))
    sp = image.GetSpacing()
    return np.array(arr[k]), (sp[1], sp[0])


def centre_ras(volume: Volume) -> np.ndarray:
    return volume.ijk_to_ras_points((np.array(volume.size_ijk) - 1) / 2.0)[0]


def side_by_side_png(volumes: Sequence[Volume], titles: Sequence[str], path, suptitle: Optional[str] = None,
                     point_ras=None, cmaps: Optional[Sequence[str]] = None, windows=None) -> Path:
    """One row of axial slices (same world position) with their titles; each panel its own 1-99%
    grey window unless ``windows`` gives (low, high) per panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    point = centre_ras(volumes[0]) if point_ras is None else np.asarray(point_ras, float)
    fig, axes = plt.subplots(1, len(volumes), figsize=(3.6 * len(volumes), 4.0), squeeze=False)
    for n, (v, t) in enumerate(zip(volumes, titles)):
        sl, (rmm, cmm) = axial_slice(v, point)
        ax = axes[0][n]
        lo, hi = (windows[n] if windows and windows[n] is not None else np.percentile(sl, [1, 99]))
        im = ax.imshow(sl, cmap=(cmaps[n] if cmaps else "gray"), vmin=lo, vmax=hi, aspect=rmm / cmm,
                       interpolation="nearest")
        if cmaps and cmaps[n] != "gray":
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
        ax.set_title(t, fontsize=9)
        ax.axis("off")
    return save_figure(fig, path, suptitle, dpi=90, title_size=10)
