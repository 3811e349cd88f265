"""Image similarity against a reference: MAE, PSNR, SSIM, optionally only inside a mask.

Built on MONAI's regression metrics (MAEMetric, PSNRMetric, SSIMMetric / compute_ssim_and_cs).
Masked voxels are gathered before MAE and PSNR; for SSIM the local SSIM map is averaged over the
mask. PSNR's peak and SSIM's dynamic range default to the reference's range inside the mask.
SSIM is computed per 2D slice (axis 0 of KJI arrays) by default, because clinical MR is often
acquired in thick, widely spaced slices where a 3D window would mix unrelated anatomy.
"""

from __future__ import annotations

import numpy as np
import torch


def _prep(pred, ref, mask):
    pred = np.asarray(pred, dtype=np.float32)
    ref = np.asarray(ref, dtype=np.float32)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    if mask is None:
        mask = np.ones(ref.shape, bool)
    mask = np.asarray(mask, bool)
    if mask.shape != ref.shape:
        raise ValueError(f"mask shape {mask.shape} differs from image shape {ref.shape}")
    if not mask.any():
        raise ValueError("the mask is empty")
    return pred, ref, mask


def data_range_of(ref, mask=None) -> float:
    ref = np.asarray(ref, np.float32)
    vals = ref[np.asarray(mask, bool)] if mask is not None else ref
    r = float(vals.max() - vals.min())
    return r if r > 0 else 1.0


def mae(pred, ref, mask=None) -> float:
    from monai.metrics import MAEMetric

    pred, ref, mask = _prep(pred, ref, mask)
    p = torch.from_numpy(pred[mask]).reshape(1, 1, -1)
    r = torch.from_numpy(ref[mask]).reshape(1, 1, -1)
    return float(MAEMetric(reduction="mean")(p, r).mean())


def psnr(pred, ref, mask=None, data_range: float = None) -> float:
    from monai.metrics import PSNRMetric

    pred, ref, mask = _prep(pred, ref, mask)
    data_range = data_range_of(ref, mask) if data_range is None else float(data_range)
    p = torch.from_numpy(pred[mask]).reshape(1, 1, -1)
    r = torch.from_numpy(ref[mask]).reshape(1, 1, -1)
    return float(PSNRMetric(max_val=data_range, reduction="mean")(p, r).mean())


def ssim(pred, ref, mask=None, data_range: float = None, per_slice: bool = True, kernel_size: int = 7,
         kernel_sigma: float = 1.5) -> float:
    """Mean SSIM over the mask (per 2D slice when ``per_slice``; otherwise 3D)."""
    from monai.metrics.regression import compute_ssim_and_cs

    pred, ref, mask = _prep(pred, ref, mask)
    data_range = data_range_of(ref, mask) if data_range is None else float(data_range)
    if per_slice:
        p = torch.from_numpy(pred)[:, None]  # slices as a batch of 2D images
        r = torch.from_numpy(ref)[:, None]
        dims, m = 2, mask
    else:
        p, r, dims, m = torch.from_numpy(pred)[None, None], torch.from_numpy(ref)[None, None], 3, mask[None]
    spatial = p.shape[2:]
    k = [min(kernel_size, s if s % 2 else s - 1) for s in spatial]
    if min(k) < 1:
        raise ValueError(f"image too small for SSIM: {spatial}")
    ssim_map, _ = compute_ssim_and_cs(p, r, dims, k, [kernel_sigma] * dims, data_range=data_range)
    # The map is 'valid' convolution output: align the mask by cropping half a kernel on each side.
    crop = tuple(slice(kk // 2, kk // 2 + ssim_map.shape[2 + i]) for i, kk in enumerate(k))
    mm = torch.from_numpy(m)[(slice(None),) + crop] if per_slice else torch.from_numpy(m[0])[crop][None]
    vals = ssim_map[:, 0][mm]
    if vals.numel() == 0:  # mask only at the borders: fall back to the whole map
        vals = ssim_map
    return float(vals.mean())


def image_metrics(pred, ref, mask=None, data_range: float = None) -> dict:
    """MAE, PSNR and SSIM in one dict (same mask and data range for all)."""
    pred, ref, mask = _prep(pred, ref, mask)
    data_range = data_range_of(ref, mask) if data_range is None else float(data_range)
    return {
        "mae": mae(pred, ref, mask),
        "psnr": psnr(pred, ref, mask, data_range),
        "ssim": ssim(pred, ref, mask, data_range),
        "data_range": data_range,
        "voxels": int(mask.sum()),
    }
