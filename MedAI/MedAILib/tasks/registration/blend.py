"""Visual fusion of two aligned volumes: alpha blend, checkerboard, colour overlay, and PNG snapshots.

All functions take two Volumes; when their grids differ the second is resampled onto the first by
world coordinates (:func:`MedAILib.runtime.resample.resample_to`), so register first if the frames differ.
Intensities are windowed to [0, 1] per volume (1st..99th percentile) so that contrasts with very
different units (T2 vs DWI, MR vs CT) blend visibly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import SimpleITK as sitk

from MedAILib.core.atomic import atomic_output
from MedAILib.core.errors import InputError
from MedAILib.io import from_sitk, to_sitk
from MedAILib.core.volume import Volume
from MedAILib.runtime.resample import resample_to

# Colour maps for overlays: value 0..1 -> RGB 0..1 (small, dependency-free ramps).
_COLORMAPS = {
    "hot": lambda v: np.stack([np.clip(3 * v, 0, 1), np.clip(3 * v - 1, 0, 1), np.clip(3 * v - 2, 0, 1)], -1),
    "green": lambda v: np.stack([np.zeros_like(v), v, np.zeros_like(v)], -1),
    "magenta": lambda v: np.stack([v, np.zeros_like(v), v], -1),
    "jet": lambda v: np.stack([np.clip(1.5 - abs(4 * v - 3), 0, 1), np.clip(1.5 - abs(4 * v - 2), 0, 1),
                               np.clip(1.5 - abs(4 * v - 1), 0, 1)], -1),
}


def normalise(array: np.ndarray, percentiles=(1.0, 99.0)) -> np.ndarray:
    """Window to [0, 1] between two intensity percentiles of the non-zero voxels (float32)."""
    a = np.asarray(array, dtype=np.float32)
    vals = a[np.isfinite(a) & (a != 0)]
    if vals.size == 0:
        return np.zeros_like(a)
    lo, hi = np.percentile(vals, percentiles)
    if hi <= lo:
        hi = lo + 1.0
    return np.clip((np.nan_to_num(a) - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def _pair(base: Volume, other: Volume) -> Volume:
    if base.array.ndim != 3 or other.array.ndim != 3:
        raise InputError("visual fusion needs two 3D scalar volumes", "give single-component 3D images")
    return other if other.same_grid(base) else resample_to(other, base, "linear")


def alpha_blend(base: Volume, other: Volume, alpha: float = 0.5) -> Volume:
    """(1 - alpha) * base + alpha * other, both windowed to [0, 1]; on ``base``'s grid."""
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"opacity {alpha} is outside 0..1", "give an opacity between 0 and 1")
    other = _pair(base, other)
    out = (1.0 - alpha) * normalise(base.array) + alpha * normalise(other.array)
    return base.with_array(out.astype(np.float32), fusion="blend", alpha=alpha)


def checkerboard(base: Volume, other: Volume, squares: Sequence[int] = (8, 8, 1)) -> Volume:
    """Alternating boxes of ``base`` and ``other`` (windowed to [0, 1]); ``squares`` per I, J, K axis.

    Edges that continue straight across box borders show good alignment.
    """
    other = _pair(base, other)
    a = to_sitk(base.with_array(normalise(base.array)))
    b = to_sitk(base.with_array(normalise(other.array)))  # same grid as base by construction
    pattern = [max(1, min(int(n), int(s))) for n, s in zip(squares, base.size_ijk)]
    out = from_sitk(sitk.CheckerBoard(a, b, pattern))
    return base.with_array(out.array.astype(np.float32), fusion="checkerboard", squares=list(pattern))


def colour_overlay(base: Volume, overlay: Volume, alpha: float = 0.5, colormap: str = "hot",
                   threshold: float = 0.05) -> np.ndarray:
    """RGB uint8 array (K, J, I, 3): grey ``base`` with ``overlay`` in colour where it exceeds ``threshold``.

    Labelmaps are drawn with their own label colours. Use :func:`write_rgb` to save it as a volume.
    """
    overlay = _pair(base, overlay)
    grey = normalise(base.array)[..., None].repeat(3, axis=-1)
    if overlay.is_labelmap:
        colours = np.zeros(grey.shape, dtype=np.float32)
        table = overlay.label_table()
        mask = overlay.array > 0
        for value in np.unique(overlay.array[mask]):
            info = table.get(int(value))
            colour = info.color if info is not None else _COLORMAPS["jet"](np.array(min(1.0, value / 10.0)))
            colours[overlay.array == value] = colour
    else:
        if colormap not in _COLORMAPS:
            raise InputError(f"unknown colour map {colormap!r}", f"use one of {', '.join(_COLORMAPS)}")
        v = normalise(overlay.array)
        colours = _COLORMAPS[colormap](v).astype(np.float32)
        mask = v > threshold
    out = grey.copy()
    out[mask] = (1.0 - alpha) * grey[mask] + alpha * colours[mask]
    return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)


def write_rgb(rgb_kji3: np.ndarray, reference: Volume, path) -> Path:
    """Write an RGB (K, J, I, 3) uint8 array as a colour volume on ``reference``'s grid (.nrrd/.nii.gz/.mha)."""
    img = sitk.GetImageFromArray(np.ascontiguousarray(rgb_kji3), isVector=True)
    img.CopyInformation(to_sitk(reference.with_array(np.zeros(reference.array.shape[:3], np.uint8))))
    path = Path(path)
    with atomic_output(path) as tmp:
        sitk.WriteImage(img, str(tmp), useCompression=True)
    return path


# ------------------------------------------------------------------------------------------------
# PNG snapshots (axial slice through the array's K axis)
# ------------------------------------------------------------------------------------------------
def _slice_rgb(array: np.ndarray, k: Optional[int]) -> np.ndarray:
    k = array.shape[0] // 2 if k is None else int(k)
    s = array[k]
    if s.ndim == 2:
        s = (normalise(s) * 255).round().astype(np.uint8) if s.dtype != np.uint8 else s
        s = np.repeat(s[..., None], 3, axis=-1)
    return s  # row 0 (J = 0) at the top: the image's own storage order, no reorientation


def save_png(images: Sequence, path, titles: Optional[Sequence[str]] = None, k: Optional[int] = None) -> Path:
    """Save one PNG with the slice ``k`` (default: middle) of each array/Volume side by side, with titles."""
    from PIL import Image, ImageDraw

    tiles = []
    for item in images:
        arr = item.array if isinstance(item, Volume) else np.asarray(item)
        if arr.ndim == 3 and arr.dtype == np.float32 and arr.max() <= 1.0 + 1e-6 and arr.min() >= 0.0:
            arr = (arr * 255).round().astype(np.uint8)  # already windowed (blend/checkerboard output)
        tiles.append(_slice_rgb(arr, k))
    h = max(t.shape[0] for t in tiles)
    pad = 18 if titles else 0
    canvas = Image.new("RGB", (sum(t.shape[1] for t in tiles) + 4 * (len(tiles) - 1), h + pad), "black")
    draw = ImageDraw.Draw(canvas)
    x = 0
    for i, t in enumerate(tiles):
        canvas.paste(Image.fromarray(np.ascontiguousarray(t)), (x, pad))
        if titles:
            draw.text((x + 4, 3), str(titles[i]), fill="white")
        x += t.shape[1] + 4
    path = Path(path)
    with atomic_output(path) as tmp:
        canvas.save(tmp, format="PNG")
    return path
