"""Score a synthesised volume against the real target, the way the model card reports it."""

from __future__ import annotations

import numpy as np

from MedAILib.tasks.synthesis.metrics import image_metrics
from MedAILib.core.volume import Volume
from MedAILib.runtime.resample import resample_array
from MedAILib.tasks.synthesis.preprocess import mask_for, normalise


def reference_on_grid(reference: Volume, grid: Volume) -> np.ndarray:
    """The reference's array on ``grid`` (resampled by physical position when the grids differ)."""
    return resample_array(reference, grid)


def score(pred: Volume, reference: Volume, source: Volume, target_norm: dict, mask: np.ndarray = None) -> dict:
    """MAE/PSNR/SSIM of ``pred`` against ``reference`` inside the source's mask.

    The reference is brought into the prediction's units with the same normalisation the model was
    trained with, in the mask that normalisation uses (z-score in the source's head mask, or
    1st-99th percentile in its brain mask, for MR; unchanged HU for CT).
    """
    mask = mask_for(source.array, target_norm) if mask is None else mask
    ref = reference_on_grid(reference, pred)
    ref_n = normalise(ref, mask, target_norm) if target_norm.get("type", "zscore_mask") != "linear" else ref
    return image_metrics(pred.array, ref_n, mask)
