"""The pre-processing steps, one function each: Volume in, new Volume out (inputs never modified).

Filters are SimpleITK's (N4, recursive Gaussian, median, curvature anisotropic diffusion, Otsu,
resampling, region of interest) and MONAI's intensity transforms (NormalizeIntensity,
ScaleIntensityRangePercentiles, ScaleIntensityRange); nothing here is a hand-written filter.
Geometry goes through ``io.to_sitk``/``io.from_sitk`` (the one LPS<->RAS place).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import SimpleITK as sitk

from MedAILib.core.errors import InputError
from MedAILib.core.volume import Volume
from MedAILib.io import from_sitk, to_sitk

DENOISE_METHODS = ("gaussian", "median", "anisotropic", "gan")
NORMALIZE_METHODS = ("zscore", "percentile", "ct-window")
# CT windows (width, level) in HU: the usual radiology presets.
CT_WINDOWS = {"lung": (1500.0, -600.0), "mediastinum": (350.0, 50.0), "soft-tissue": (400.0, 40.0),
              "brain": (80.0, 40.0), "bone": (1800.0, 400.0)}


def _float_image(volume: Volume) -> sitk.Image:
    return to_sitk(volume.with_array(np.asarray(volume.array, dtype=np.float32)))


def _result(volume: Volume, image: sitk.Image, **metadata) -> Volume:
    """A filtered SimpleITK image back as a Volume on its own grid, the input's metadata kept."""
    out = from_sitk(image)
    meta = dict(volume.metadata)
    meta.update(metadata)
    return Volume(out.array, out.ijk_to_ras, None, meta)


def _name(volume: Volume) -> str:
    src = volume.metadata.get("source")
    return str(src).replace("\\", "/").rsplit("/", 1)[-1] if src else "image"


# --- masks -------------------------------------------------------------------------------------

def looks_like_ct(volume: Volume) -> bool:
    """Values in Hounsfield units: air around -1000 present and nothing far below -1100 dominating."""
    a = np.asarray(volume.array)
    sample = a.reshape(-1)[:: max(1, a.size // 200_000)].astype(np.float32)
    return bool(np.mean(sample < -500) > 0.05 and np.percentile(sample, 99) < 4000)


def foreground_mask(volume: Volume) -> Volume:
    """Body (CT: above -500 HU) or head/brain (MR: Otsu threshold) mask: the largest connected
    piece, closed and with holes filled. A uint8 labelmap on the volume's grid."""
    image = _float_image(volume)
    if looks_like_ct(volume):
        fg = sitk.BinaryThreshold(image, -500.0, 1e9, 1, 0)
    else:
        fg = sitk.OtsuThreshold(image, 0, 1, 200)
    radius = [max(1, int(round(2.0 / s))) for s in image.GetSpacing()]  # about 2 mm
    fg = sitk.BinaryMorphologicalOpening(fg, radius)
    cc = sitk.RelabelComponent(sitk.ConnectedComponent(fg), sortByObjectSize=True)
    largest = sitk.BinaryThreshold(cc, 1, 1, 1, 0)
    largest = sitk.BinaryMorphologicalClosing(largest, radius)
    largest = sitk.BinaryFillhole(largest)
    out = from_sitk(sitk.Cast(largest, sitk.sitkUInt8))
    from MedAILib.core.volume import LabelInfo

    return Volume(out.array, out.ijk_to_ras, [LabelInfo(1, "foreground", (1.0, 1.0, 0.0))],
                  {"source": "foreground mask"})


def _mask_on_grid(mask: Volume, volume: Volume) -> Volume:
    if mask.same_grid(volume):
        return mask
    from MedAILib.runtime.resample import resample_to

    return resample_to(mask, volume, "nearest")


# --- N4 ----------------------------------------------------------------------------------------

def n4(volume: Volume, mask: Optional[Volume] = None, shrink: int = 4, iterations: Sequence[int] = (50, 50, 30),
       fitting_levels: Optional[int] = None) -> tuple:
    """N4 bias-field correction (Tustison 2010, SimpleITK). Fitted on a ``shrink``-times smaller
    image (N4's usual speed-up), the bias field is then evaluated on the full grid and divided out.

    Returns ``(corrected Volume, bias field Volume)``; the bias field is multiplicative (corrected =
    input / field inside the mask's support). Intensities must be non-negative (MR magnitude)."""
    a = np.asarray(volume.array)
    if np.nanmin(a) < 0 and looks_like_ct(volume):
        raise InputError(f"{_name(volume)} looks like CT (Hounsfield units): N4 bias-field correction is for MR",
                         "leave out --n4 for CT images")
    image = _float_image(volume)
    shift = 0.0
    if float(np.nanmin(a)) <= 0:  # N4 works on log intensities: keep them positive
        shift = 1.0 - float(np.nanmin(a))
        image = image + shift
    mask_img = sitk.Cast(to_sitk(_mask_on_grid(mask, volume)), sitk.sitkUInt8) if mask is not None else \
        sitk.OtsuThreshold(image, 0, 1, 200)
    shrink = max(1, int(shrink))
    small = sitk.Shrink(image, [shrink] * 3) if shrink > 1 else image
    small_mask = sitk.Shrink(mask_img, [shrink] * 3) if shrink > 1 else mask_img
    f = sitk.N4BiasFieldCorrectionImageFilter()
    levels = fitting_levels or len(iterations)
    f.SetMaximumNumberOfIterations([int(i) for i in iterations][:levels])
    f.Execute(small, small_mask)
    log_field = f.GetLogBiasFieldAsImage(image)  # evaluated on the full-resolution grid
    field = sitk.Exp(log_field)
    corrected = sitk.Divide(image, field)
    if shift:
        corrected = corrected - shift
    return (_result(volume, corrected, preprocessing_n4=True),
            _result(volume, field, source="N4 bias field"))


# --- denoising ---------------------------------------------------------------------------------

def denoise(volume: Volume, method: str, sigma_mm: float = 1.0, radius: int = 1, iterations: int = 5,
            conductance: float = 1.0, model: Optional[str] = None, device: str = "auto", progress=None,
            trust_paths=()) -> Volume:
    """Denoise with ``method``: gaussian (recursive Gaussian, ``sigma_mm``), median (``radius`` voxels),
    anisotropic (curvature anisotropic diffusion, Perona-Malik family: smooths within regions, not
    across edges) or gan (a denoising GAN bundle, :mod:`MedAILib.tasks.denoising`)."""
    if method not in DENOISE_METHODS:
        raise InputError(f"unknown denoising method {method!r}", f"use one of {', '.join(DENOISE_METHODS)}")
    if method == "gan":
        from MedAILib.tasks.denoising.pipeline import denoise_volume

        return denoise_volume(volume, model, device=device, progress=progress, trust_paths=trust_paths)
    image = _float_image(volume)
    if method == "gaussian":
        out = sitk.SmoothingRecursiveGaussian(image, float(sigma_mm))
    elif method == "median":
        out = sitk.Median(image, [int(radius)] * 3)
    else:
        # ITK's stability limit for the explicit scheme: time step <= min spacing / 2^(N+1), N = 3.
        step = 0.95 * min(image.GetSpacing()) / 16.0
        out = sitk.CurvatureAnisotropicDiffusion(image, timeStep=step, conductanceParameter=float(conductance),
                                                 conductanceScalingUpdateInterval=1,
                                                 numberOfIterations=int(iterations))
    return _result(volume, out, preprocessing_denoise=method)


# --- intensity ---------------------------------------------------------------------------------

def normalize(volume: Volume, method: str, mask: Optional[Volume] = None, lower: float = 1.0, upper: float = 99.0,
              window: Optional[tuple] = None) -> Volume:
    """Intensity normalisation with MONAI's transforms.

    - ``zscore``: (x - mean) / std, statistics inside ``mask`` when given (else the whole volume);
    - ``percentile``: the ``lower``..``upper`` percentiles map to 0..1 (clipped);
    - ``ct-window``: window ``(width, level)`` in HU (default the soft-tissue window) maps to 0..1 (clipped).
    """
    import torch
    from monai.transforms import NormalizeIntensity, ScaleIntensityRange, ScaleIntensityRangePercentiles

    if method not in NORMALIZE_METHODS:
        raise InputError(f"unknown normalisation {method!r}", f"use one of {', '.join(NORMALIZE_METHODS)}")
    a = torch.as_tensor(np.asarray(volume.array, dtype=np.float32))
    if method == "zscore":
        if mask is not None:
            m = _mask_on_grid(mask, volume).array > 0
            if not m.any():
                raise InputError("the mask for z-score normalisation is empty", "check the mask file")
            vals = np.asarray(volume.array, dtype=np.float64)[m]
            mean, std = float(vals.mean()), float(vals.std())
            out = NormalizeIntensity(subtrahend=mean, divisor=std if std > 0 else 1.0)(a)
        else:
            out = NormalizeIntensity()(a)
        info = {"preprocessing_normalize": "zscore"}
    elif method == "percentile":
        if not 0 <= lower < upper <= 100:
            raise InputError(f"percentiles {lower}..{upper} are not increasing values in 0..100",
                             "give e.g. --percentiles 1 99")
        out = ScaleIntensityRangePercentiles(lower=lower, upper=upper, b_min=0.0, b_max=1.0, clip=True)(a)
        info = {"preprocessing_normalize": f"percentile {lower:g}-{upper:g}"}
    else:
        if not looks_like_ct(volume):
            raise InputError(f"{_name(volume)} does not look like CT in Hounsfield units (no air near -1000 HU)",
                             "use --normalize zscore or percentile for MR; ct-window is for CT")
        width, level = window or CT_WINDOWS["soft-tissue"]
        if width <= 0:
            raise InputError(f"CT window width {width} must be positive", "give e.g. --window 400 40")
        out = ScaleIntensityRange(a_min=level - width / 2, a_max=level + width / 2, b_min=0.0, b_max=1.0,
                                  clip=True)(a)
        info = {"preprocessing_normalize": f"ct-window W{width:g} L{level:g}"}
    out = np.asarray(out.as_tensor() if hasattr(out, "as_tensor") else out, dtype=np.float32)
    meta = dict(volume.metadata)
    meta.update(info)
    return Volume(out, volume.ijk_to_ras.copy(), None, meta)


# --- geometry ----------------------------------------------------------------------------------

def resample_spacing(volume: Volume, spacing_mm, interpolator: str = "linear") -> Volume:
    """Resample onto a grid with voxel size ``spacing_mm`` (one value = isotropic) covering the same
    physical extent, same direction and first-voxel corner (SimpleITK via runtime.resample)."""
    from MedAILib.runtime.resample import resample_to

    new = np.broadcast_to(np.asarray(spacing_mm, dtype=np.float64), (3,)).copy()
    if np.any(new <= 0) or not np.all(np.isfinite(new)):
        raise InputError(f"resampling spacing {spacing_mm} must be positive", "give e.g. --resample 1.0")
    old = volume.spacing
    size = np.asarray(volume.size_ijk, dtype=np.float64)
    new_size = np.maximum(1, np.round(size * old / new)).astype(int)
    m = volume.ijk_to_ras.copy()
    direction = volume.direction
    # Keep the corner of the first voxel (not its centre) where it was: the extent is preserved.
    corner = m[:3, 3] - direction @ (old / 2)
    m[:3, :3] = direction @ np.diag(new)
    m[:3, 3] = corner + direction @ (new / 2)
    grid = Volume(np.broadcast_to(np.uint8(0), tuple(new_size[::-1])), m)
    interp = "nearest" if volume.is_labelmap else interpolator
    out = resample_to(volume, grid, interp, float32=not volume.is_labelmap
                      and not np.issubdtype(volume.array.dtype, np.integer))
    out.array = np.ascontiguousarray(out.array)
    out.metadata["preprocessing_resample_mm"] = [float(x) for x in new]
    return out


def crop_to_mask(volume: Volume, mask: Optional[Volume] = None, margin_mm: float = 5.0) -> tuple:
    """Crop to the bounding box of ``mask`` (default :func:`foreground_mask`) plus ``margin_mm``,
    with SimpleITK's RegionOfInterest (world positions of the kept voxels are unchanged).
    Returns ``(cropped Volume, the mask cropped the same way)``."""
    mask = foreground_mask(volume) if mask is None else _mask_on_grid(mask, volume)
    m = np.asarray(mask.array) > 0
    if not m.any():
        raise InputError(f"the mask for cropping {_name(volume)} is empty", "check the mask, or crop without it")
    k, j, i = (np.nonzero(np.any(m, axis=tuple(x for x in range(3) if x != ax)))[0] for ax in range(3))
    lo = np.array([i.min(), j.min(), k.min()])
    hi = np.array([i.max(), j.max(), k.max()])
    pad = np.ceil(margin_mm / volume.spacing).astype(int)
    lo = np.maximum(0, lo - pad)
    hi = np.minimum(np.array(volume.size_ijk) - 1, hi + pad)
    size = (hi - lo + 1).astype(int)
    image = to_sitk(volume)
    roi = sitk.RegionOfInterest(image, [int(s) for s in size], [int(x) for x in lo])
    out = _result(volume, roi, preprocessing_crop_ijk=[[int(x) for x in lo], [int(x) for x in hi]])
    if volume.is_labelmap:
        out.labels = volume.labels
    mroi = from_sitk(sitk.RegionOfInterest(to_sitk(mask), [int(s) for s in size], [int(x) for x in lo]))
    return out, Volume(mroi.array, mroi.ijk_to_ras, mask.labels, dict(mask.metadata))
