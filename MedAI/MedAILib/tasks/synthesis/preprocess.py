"""Going into the synthesis model's space and back (one pair of functions).

Model space = the input reoriented to the nearest LPS axes (a pure permutation/flip, so axial
slices are array axis 0) and resampled **in-plane only** to the model's pixel size. Slices are kept
where they are, so the way back is an in-plane resampling by physical position onto the input's
own grid. Intensities are normalised within a mask computed from the source image: z-score in the
head/body mask (older bundles, CT) or percentile scaling in the brain mask (``percentile_brain``).
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from MedAILib.io import from_sitk, to_sitk
from MedAILib.core.volume import Volume
from MedAILib.runtime.resample import resample_to


def to_model_grid(volume: Volume, pixel_mm: float) -> sitk.Image:
    """The input as a float32 SimpleITK image, LPS-oriented, in-plane pixel size ``pixel_mm``.

    Downsampling is preceded by an in-plane Gaussian (anti-aliasing); slices are not touched.
    """
    img = sitk.DICOMOrient(sitk.Cast(to_sitk(volume), sitk.sitkFloat32), "LPS")
    sp = np.array(img.GetSpacing(), dtype=float)
    size = np.array(img.GetSize(), dtype=int)
    new_sp = np.array([pixel_mm, pixel_mm, sp[2]])
    if np.allclose(new_sp, sp, rtol=1e-4):
        return img
    # Anti-aliasing: variance that brings the old pixel blur up to the new pixel size (in-plane only).
    var = [max(0.0, (0.4 * (pixel_mm ** 2 - s ** 2) ** 0.5) ** 2) if pixel_mm > s else 0.0 for s in sp[:2]] + [0.0]
    if max(var) > 0:
        img = sitk.DiscreteGaussian(img, variance=var, maximumKernelWidth=64, useImageSpacing=True)
    new_size = [max(1, int(round(size[i] * sp[i] / new_sp[i]))) for i in range(2)] + [int(size[2])]
    # Keep the field of view centred: the first voxel centre moves by half the size change.
    direction = np.array(img.GetDirection()).reshape(3, 3)
    extent_old = size * sp
    extent_new = np.array(new_size) * new_sp
    shift = (extent_old - extent_new) / 2.0 + (new_sp - sp) / 2.0
    shift[2] = 0.0
    origin = np.array(img.GetOrigin()) + direction @ shift
    return sitk.Resample(img, new_size, sitk.Transform(), sitk.sitkLinear, origin.tolist(), new_sp.tolist(),
                         img.GetDirection(), 0.0, sitk.sitkFloat32)


def from_model_grid(image: sitk.Image, reference: Volume, default_value: float = 0.0) -> np.ndarray:
    """A model-space image on ``reference``'s grid (KJI float32 array), through the one resampler."""
    return resample_to(from_sitk(image), reference, "linear", default_value=default_value, float32=True).array


def head_mask_array(array: np.ndarray) -> np.ndarray:
    """Foreground (head/body) mask of a KJI array: Otsu threshold, largest component, holes filled per slice.

    Why Otsu and not >0: MR backgrounds hold noise and CT backgrounds are air at -1000, so a data-driven
    threshold works for both.
    """
    img = sitk.GetImageFromArray(np.asarray(array, dtype=np.float32))
    if float(np.ptp(array)) == 0.0:
        return np.ones(array.shape, bool)
    fg = sitk.OtsuThreshold(img, 0, 1, 200)
    cc = sitk.ConnectedComponent(fg)
    cc = sitk.RelabelComponent(cc, sortByObjectSize=True)
    largest = sitk.GetArrayFromImage(cc) == 1
    if largest.sum() < 0.05 * (sitk.GetArrayFromImage(fg) > 0).sum():  # fragmented (noise): keep all foreground
        largest = sitk.GetArrayFromImage(fg) > 0
    out = np.zeros_like(largest)
    for k in range(largest.shape[0]):  # 2D hole filling: slices are thick and far apart
        s = sitk.GetImageFromArray(largest[k].astype(np.uint8))
        out[k] = sitk.GetArrayFromImage(sitk.BinaryFillhole(s)) > 0
    return out


def head_mask(volume: Volume) -> np.ndarray:
    """Foreground mask on the volume's own grid (used for normalisation and for metrics)."""
    return head_mask_array(volume.array)


def brain_mask_array(array: np.ndarray) -> np.ndarray:
    """Brain mask of a KJI MR array where one can be had without a skull-stripping model.

    A skull-stripped image (BraTS, ``*_bet``) has a constant background that covers most of the field
    of view (>= 30 % of the voxels equal to the minimum): the brain is everything else (holes filled
    per slice). Otherwise (a whole head, e.g. TCIA) this is the Otsu head mask of
    :func:`head_mask_array` -- it includes scalp and skull, which callers must say when they report it.
    """
    a = np.asarray(array, dtype=np.float32)
    if a.size and float(np.mean(a == a.min())) >= 0.30:
        fg = a > a.min()
        out = np.zeros_like(fg)
        for k in range(fg.shape[0]):
            out[k] = sitk.GetArrayFromImage(sitk.BinaryFillhole(sitk.GetImageFromArray(fg[k].astype(np.uint8)))) > 0
        if out.any():
            return out
    return head_mask_array(a)


def is_skull_stripped(array: np.ndarray) -> bool:
    a = np.asarray(array)
    return bool(a.size and float(np.mean(a == a.min())) >= 0.30)


def brain_mask(volume: Volume) -> np.ndarray:
    return brain_mask_array(volume.array)


def mask_for(array: np.ndarray, norm: dict) -> np.ndarray:
    """The mask a normalisation is computed in: brain mask for ``percentile_brain``, head mask otherwise."""
    if norm.get("type") == "percentile_brain":
        return brain_mask_array(array)
    return head_mask_array(array)


def zscore_stats(array: np.ndarray, mask: np.ndarray) -> tuple:
    vals = np.asarray(array, dtype=np.float64)[mask]
    if vals.size < 10:
        vals = np.asarray(array, dtype=np.float64).ravel()
    mean, std = float(vals.mean()), float(vals.std())
    return mean, (std if std > 1e-6 else 1.0)


def normalise(array: np.ndarray, mask: np.ndarray, norm: dict) -> np.ndarray:
    """Apply an intensity normalisation described in the bundle config.

    ``{"type": "zscore_mask"}``: (x - mean) / sd within the foreground mask (MR, arbitrary units).
    ``{"type": "percentile_brain", "low": 1, "high": 99}``: (x - p_low) / (p_high - p_low) with the
    percentiles taken inside the (brain) mask, so 0 = the mask's 1st and 1 = its 99th percentile;
    the background of a skull-stripped image (its constant minimum) is set to 0.
    ``{"type": "linear", "offset": o, "scale": s, "clip": [lo, hi]}``: (clip(x) - o) / s (CT in HU).
    """
    a = np.asarray(array, dtype=np.float32)
    kind = norm.get("type", "zscore_mask")
    if kind == "zscore_mask":
        mean, std = zscore_stats(a, mask)
        return ((a - mean) / std).astype(np.float32)
    if kind == "percentile_brain":
        vals = a[mask] if np.count_nonzero(mask) >= 10 else a.ravel()
        lo, hi = np.percentile(vals, [norm.get("low", 1.0), norm.get("high", 99.0)])
        scale = float(hi - lo) if hi > lo else 1.0
        out = (a - float(lo)) / scale
        out[~mask & (a <= a.min())] = 0.0  # constant background of a stripped image (not the head's air)
        return out.astype(np.float32)
    lo, hi = norm.get("clip", [-np.inf, np.inf])
    return ((np.clip(a, lo, hi) - norm.get("offset", 0.0)) / norm.get("scale", 1.0)).astype(np.float32)


def denormalise(array: np.ndarray, norm: dict) -> np.ndarray:
    """Model output -> target units. z-score targets stay in z-score units (no absolute MR scale exists)."""
    if norm.get("type", "zscore_mask") in ("zscore_mask", "percentile_brain"):
        return np.asarray(array, np.float32)
    return (np.asarray(array, np.float32) * norm.get("scale", 1.0) + norm.get("offset", 0.0)).astype(np.float32)


def slice_stacks(array: np.ndarray, k: int) -> np.ndarray:
    """(Z, Y, X) -> (Z, k, Y, X): each slice with its k-1 neighbours as channels, edge slices repeated."""
    half = k // 2
    padded = np.pad(array, ((half, half), (0, 0), (0, 0)), mode="edge")
    return np.stack([padded[z: z + k] for z in range(array.shape[0])], axis=0)


def model_space_arrays(volume: Volume, cfg: dict) -> tuple:
    """(model-grid image, normalised source array ZYX, mask ZYX) for a source volume."""
    img = to_model_grid(volume, cfg["pixel_mm"])
    raw = sitk.GetArrayFromImage(img)
    mask = mask_for(raw, cfg["source_norm"])
    return img, normalise(raw, mask, cfg["source_norm"]), mask


def target_to_model_space(target: Volume, source_img: sitk.Image, source_mask: np.ndarray, cfg: dict) -> np.ndarray:
    """A paired target resampled onto the source's model grid, normalised (mask from the source)."""
    t = sitk.Resample(sitk.Cast(to_sitk(target), sitk.sitkFloat32), source_img, sitk.Transform(), sitk.sitkLinear,
                      0.0, sitk.sitkFloat32)
    return normalise(sitk.GetArrayFromImage(t), source_mask, cfg["target_norm"])


def volume_from_model(image_like: sitk.Image, array: np.ndarray) -> Volume:
    out = sitk.GetImageFromArray(array.astype(np.float32))
    out.CopyInformation(image_like)
    return from_sitk(out)
