"""Whole-volume modality conversion with a synthesis bundle.

Every slice of the input is converted (2.5D: the slice and its neighbours as channels, edge
slices repeated), in-plane by MONAI's sliding-window inferer with Gaussian blending, so there is
no seam and no single-slice limit. The result is a new Volume on the input's exact grid.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import SimpleITK as sitk
import torch

from MedAILib.core.errors import InputError
from MedAILib.core.progress import Progress
from MedAILib.core.volume import Volume
from MedAILib.tasks.synthesis import ood
from MedAILib.tasks.synthesis.bundle import SynthesisBundle
from MedAILib.tasks.synthesis.preprocess import denormalise, from_model_grid, model_space_arrays, slice_stacks

log = logging.getLogger(__name__)


@dataclasses.dataclass
class SynthesisResult:
    volume: Volume
    ood: ood.OODReport


def ood_features(volume: Volume, img: sitk.Image, normalised: np.ndarray, mask: np.ndarray) -> dict:
    """OOD features; geometry from the input itself (the slice axis is the one closest to S)."""
    sp = volume.spacing
    k_axis = int(np.argmax(np.abs(volume.direction[2, :])))
    pixel = float(np.mean([sp[i] for i in range(3) if i != k_axis]))
    return ood.features(sitk.GetArrayFromImage(img), normalised, mask, pixel, float(sp[k_axis]))


def predict_slices(net: torch.nn.Module, stacks: np.ndarray, roi_size=None, overlap: float = 0.5,
                   sw_batch_size: int = 8, device="cpu", progress: Progress = None, chunk: int = 4,
                   multiple: int = 8) -> np.ndarray:
    """(Z, k, Y, X) normalised stacks -> (Z, Y, X) prediction.

    ``roi_size=None`` runs each whole slice at once; otherwise MONAI's SlidingWindowInferer tiles
    the slice with Gaussian-weighted overlap. Why the padding: a network that downsamples by
    ``multiple`` is only shift-equivariant for shifts by multiples of it, so the slice is padded
    (at its end) to a multiple and windows are kept on that lattice; otherwise neighbouring windows
    would see the image at different phases and disagree (seams).
    """
    from monai.inferers import SlidingWindowInferer

    z, h, w = stacks.shape[0], stacks.shape[2], stacks.shape[3]
    ph, pw = (-h) % multiple, (-w) % multiple
    out = np.zeros((z, h, w), np.float32)
    inferer = None
    if roi_size is not None:
        # A window larger than the (padded) slice would be padded symmetrically by MONAI: clip it instead.
        roi = [min(int(r), s) for r, s in zip(roi_size, (h + ph, w + pw))]
        # Keep window starts on the lattice: the step roi*(1-overlap) must be a multiple too.
        step = [max(multiple, int(r * (1 - overlap)) // multiple * multiple) for r in roi]
        ov = [1.0 - st / r if r > st else 0.0 for st, r in zip(step, roi)]
        inferer = SlidingWindowInferer(roi_size=roi, sw_batch_size=sw_batch_size, overlap=ov,
                                       mode="gaussian", padding_mode="replicate")
    with torch.no_grad():
        for start in range(0, z, chunk):
            x = torch.from_numpy(np.ascontiguousarray(stacks[start:start + chunk])).to(device)
            x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode="replicate")
            y = inferer(x, net) if inferer is not None else net(x)
            out[start:start + chunk] = y[:, 0, :h, :w].float().cpu().numpy()
            if progress is not None:
                progress.update(min(z, start + chunk) / z, f"converted slice {min(z, start + chunk)}/{z}")
    return out


def network_multiple(network_def: dict) -> int:
    """The factor by which the generator downsamples (product of its strides)."""
    m = 1
    for s in network_def.get("strides", [2, 2, 2]):
        m *= int(s) if not isinstance(s, (list, tuple)) else int(max(s))
    return max(1, m)


def synthesize(volume: Volume, bundle: SynthesisBundle, progress: Progress = None, device="cpu",
               roi_size="bundle", overlap: float = None) -> SynthesisResult:
    """Convert ``volume`` (source contrast) into the bundle's target contrast, on the input's grid."""
    if volume.is_labelmap:
        raise InputError("the input is a segmentation, not an image", "give a scalar image volume")
    if min(volume.shape[:3]) < 1 or volume.array.ndim != 3:
        raise InputError(f"input has shape {volume.shape}", "give a 3D scalar volume")
    progress = progress or Progress()
    cfg = bundle.cfg
    progress.stage(0.0, 0.1).update(0.0, "preparing the input")
    img, src, mask = model_space_arrays(volume, cfg)
    report = ood.check(ood_features(volume, img, src, mask), bundle.training_stats)
    if not report.in_distribution:
        log.info(report.message())
    inf = bundle.inferer_args()
    if roi_size == "bundle":
        roi_size = inf.get("roi_size")
    overlap = inf.get("overlap", 0.5) if overlap is None else overlap
    net = bundle.network(device)
    stacks = slice_stacks(src, int(cfg.get("slices", 1)))
    pred = predict_slices(net, stacks, roi_size, overlap, int(inf.get("sw_batch_size", 8)), device,
                          progress.stage(0.1, 0.95), multiple=network_multiple(bundle.inference["network_def"]))
    pred = denormalise(pred, cfg["target_norm"])
    progress.stage(0.95, 1.0).update(0.0, "resampling to the input grid")
    out_img = sitk.GetImageFromArray(pred)
    out_img.CopyInformation(img)
    background = float(np.median(pred[~mask])) if (~mask).any() else float(pred.min())
    array = from_model_grid(out_img, volume, default_value=background)
    meta = {
        "modality": cfg.get("target_modality", "MR"),
        "description": f"{cfg['target']} synthesised from {cfg['source']} by {bundle.name}",
        "synthesised": True,
        "model": bundle.name,
        "units": cfg.get("output_units", ""),
        "source": volume.metadata.get("source", ""),
        "ood_warning": "" if report.in_distribution else report.message(),
    }
    result = Volume(array.astype(np.float32), volume.ijk_to_ras.copy(), None, meta)
    progress.update(1.0, "done")
    return SynthesisResult(result, report)
