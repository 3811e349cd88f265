"""The one resampler: a Volume onto another Volume's grid, by world (physical) position.

Every task uses this: multi-input alignment, classification crops and heat-maps, synthesis output
back to the input grid, references for scoring, registration results, fusion. Geometry goes through
``io.to_sitk`` / ``io.from_sitk`` (which use ``core.geometry``, the one LPS<->RAS place).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import SimpleITK as sitk

from MedAILib.core import geometry
from MedAILib.core.errors import InputError
from MedAILib.core.volume import Volume
from MedAILib.io import from_sitk, to_sitk

INTERPOLATORS = {
    "linear": sitk.sitkLinear,
    "nearest": sitk.sitkNearestNeighbor,
    "bspline": sitk.sitkBSpline,
    "label": sitk.sitkNearestNeighbor,
}


def grid_image(reference: Volume) -> sitk.Image:
    """An empty image carrying only the reference grid (cheap to build; Resample reads geometry only)."""
    img = sitk.Image([int(s) for s in reference.size_ijk], sitk.sitkUInt8)
    spacing, origin, direction = geometry.lps_from_ijk_to_ras(reference.ijk_to_ras)
    img.SetSpacing([float(s) for s in spacing])
    img.SetOrigin([float(o) for o in origin])
    img.SetDirection([float(d) for d in direction.reshape(-1)])
    return img


def resample_to(volume: Volume, reference: Volume, interpolator: str = "linear",
                transform: Optional[sitk.Transform] = None, default_value: float = 0.0,
                float32: bool = False) -> Volume:
    """``volume`` resampled onto ``reference``'s grid.

    Without ``transform`` this aligns by world coordinates only. With one, ``transform`` maps
    reference (fixed) points to ``volume`` (moving) points, ITK's resampling direction (see
    ``tasks.registration``). Labelmaps use nearest neighbour and keep their label table.
    ``float32=True`` interpolates and returns float32 (model inputs, heat-maps); otherwise an
    integer input keeps its type, rounded.
    """
    if volume.is_labelmap and interpolator not in ("nearest", "label"):
        interpolator = "nearest"
    if interpolator not in INTERPOLATORS:
        raise InputError(f"unknown interpolator {interpolator!r}", f"use one of {', '.join(INTERPOLATORS)}")
    if float32 and volume.array.dtype != np.float32:
        volume = volume.with_array(volume.array.astype(np.float32))
    image = to_sitk(volume)
    # Interpolated values of an integer image are fractional: letting ITK cast them back to int16
    # truncates (off-by-one voxels), so interpolate in float32 and round to the input's type.
    exact = interpolator in ("nearest", "label") or np.issubdtype(volume.array.dtype, np.floating)
    pixel = image.GetPixelID() if exact else sitk.sitkFloat32
    out = sitk.Resample(image, grid_image(reference), transform or sitk.Transform(3, sitk.sitkIdentity),
                        INTERPOLATORS[interpolator], float(default_value), pixel)
    result = from_sitk(out)
    if not exact:
        info = np.iinfo(volume.array.dtype) if np.issubdtype(volume.array.dtype, np.integer) else None
        rounded = np.rint(result.array)
        if info is not None:
            rounded = np.clip(rounded, info.min, info.max)
        result.array = rounded.astype(volume.array.dtype)
    meta = dict(volume.metadata)
    meta["resampled_to"] = reference.metadata.get("source", "reference grid")
    return Volume(result.array, reference.ijk_to_ras.copy(), volume.labels, meta)


def resample_array(volume: Volume, reference: Volume, linear: bool = True, default_value: float = 0.0) -> np.ndarray:
    """The float32 KJI array of ``volume`` on ``reference``'s grid (a view shortcut for pipelines)."""
    if volume.same_grid(reference):
        return np.asarray(volume.array, np.float32)
    return resample_to(volume, reference, "linear" if linear else "nearest", default_value=default_value,
                       float32=True).array
