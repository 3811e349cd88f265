"""Apply a denoising bundle to a whole volume, slice by slice (the slices of the volume's K axis,
usually the acquisition slices), each slice by MONAI's sliding window, in batches, with progress and cancel.

Bundle layout: ``configs/inference.json`` holds ``network_def`` (the generator) and
``medai_denoising``: ``{"modality": "MR"|"CT", "noise": ..., "intensity": {"type": "percentile",
"value": 99.5} | {"type": "linear", "offset": o, "scale": s}}`` (how intensities map to the
network's range and back); ``models/model.pt`` the generator's weights.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from MedAILib.core.errors import InputError, ModelError
from MedAILib.core.progress import Progress
from MedAILib.core.volume import Volume


def denoising_settings(bundle) -> dict:
    cfg = bundle.parser.get("medai_denoising")
    if not isinstance(cfg, dict):
        raise ModelError(f"model {bundle.name} is not a denoising model (no medai_denoising section)",
                         "give a bundle written by `python -m MedAILib.tasks.denoising.trainer`")
    return cfg


def intensity_scale(array: np.ndarray, spec: dict) -> tuple:
    """(offset, scale): network input = (x - offset) / scale."""
    if spec.get("type") == "linear":
        return float(spec["offset"]), float(spec["scale"])
    fg = array[array > 0]
    s = float(np.percentile(fg if fg.size else array, float(spec.get("value", 99.5))))
    return 0.0, (s if s > 0 else 1.0)


ROI = (128, 128)  # sliding-window tile (in-plane); a multiple of 8 as the U-Net halves the size three times


def denoise_array(net: torch.nn.Module, array: np.ndarray, offset: float, scale: float, device="cpu",
                  batch: int = 8, progress: Optional[Progress] = None, roi=ROI) -> np.ndarray:
    """KJI float array -> denoised KJI array: each K slice goes through the 2D generator by MONAI's
    sliding window (``roi`` tiles, 25 % overlap, Gaussian blending, replicate padding), so memory is
    bounded whatever the in-plane size; slices are processed ``batch`` at a time with progress and
    cancel (``progress.cancel``)."""
    from monai.inferers import SlidingWindowInferer

    if np.asarray(array).ndim != 3:
        raise InputError(f"denoising needs a 3D volume, got an array of shape {np.shape(array)}",
                         "pick one frame of a 4D image first")
    inferer = SlidingWindowInferer(roi_size=tuple(roi), sw_batch_size=batch, overlap=0.25, mode="gaussian",
                                   padding_mode="replicate", progress=False)
    x = torch.from_numpy(((np.asarray(array, np.float32) - offset) / scale)[:, None])  # (K, 1, J, I)
    out = np.empty(np.shape(array), np.float32)
    net = net.to(device).eval()
    n = x.shape[0]
    with torch.inference_mode():
        for s in range(0, n, batch):
            if progress is not None:
                progress.update(s / n, f"slices {s + 1}-{min(n, s + batch)} of {n}")
                cancel = getattr(progress, "cancel", None)
                if cancel is not None:
                    cancel.check()
            out[s:s + batch] = inferer(x[s:s + batch].to(device), net)[:, 0].float().cpu().numpy()
    return out * scale + offset


def denoise_volume(volume: Volume, model, device: str = "auto", progress: Optional[Progress] = None,
                   trust_paths=()) -> Volume:
    from MedAILib.models import resolve_model
    from MedAILib.runtime.device import choose_device

    if model is None:
        raise InputError("GAN denoising needs a model (--denoise-model)", "give a denoising bundle folder")
    bundle = model if hasattr(model, "parser") else resolve_model(str(model), task="denoising", trust_paths=trust_paths)
    settings = denoising_settings(bundle)
    offset, scale = intensity_scale(np.asarray(volume.array), settings.get("intensity", {}))
    arr = denoise_array(bundle.network, volume.array, offset, scale, device=choose_device(device), progress=progress)
    if settings.get("intensity", {}).get("type") != "linear":
        arr = np.maximum(arr, 0.0)  # MR magnitude is never negative
    meta = dict(volume.metadata, preprocessing_denoise="gan", denoise_model=bundle.name)
    return Volume(arr.astype(np.float32), volume.ijk_to_ras.copy(), None, meta)
