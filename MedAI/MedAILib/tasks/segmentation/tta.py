"""Test-time augmentation by flips: the averaged class probabilities give the labels (through the
bundle's own post-processing), their entropy an uncertainty volume, and its mean inside each segment
a per-segment confidence.

Only flips the model was trained to be invariant to are used: the catalogue entry lists them as
model-space axes (``tta_flip_axes``; the hippocampus model was trained with left-right flips only,
an anterior-posterior flip would swap its two labels). A model that lists none is refused.

The averaged probabilities p enter the post-processing as log(p) (softmax models: softmax(log p) = p)
or logit(p) (sigmoid models), so its Activations/Invertd/argmax or threshold steps give exactly the
labels of p. Uncertainty is the entropy of p normalised to [0, 1] (divided by log C; for sigmoid
channels the mean binary entropy), brought back to the input grid by MONAI's recorded inverse.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from MedAILib.core.errors import InputError


def flip_axes(bundle) -> list:
    entry = getattr(bundle, "entry", None)
    axes = (getattr(entry, "raw", None) or {}).get("tta_flip_axes")
    if not axes:
        raise InputError(f"model {bundle.name} declares no test-time flips (tta_flip_axes in its catalogue entry)",
                         "run without --tta: flips a model was not trained with (e.g. left-right for models with "
                         "left and right labels) would make its answer worse, not more honest")
    return [int(a) for a in axes]


def _is_sigmoid(bundle) -> bool:
    post = bundle.postprocessing
    return any(type(t).__name__ == "Activationsd" and bool(getattr(t, "sigmoid", [False])[0]
                                                             if isinstance(getattr(t, "sigmoid", False), (list, tuple))
                                                             else getattr(t, "sigmoid", False))
               for t in (post.transforms if post is not None else []))


def segment_with_tta(volumes, bundle, device: str = "auto", progress=None, structures=None, keep_largest=False,
                     min_island_mm3: float = 0.0, assume_aligned: bool = False):
    """(SegmentResult, uncertainty Volume (float32, input grid), {label name: confidence})."""
    import time

    from MedAILib.core.progress import Progress
    from MedAILib.core.volume import Volume
    from MedAILib.runtime.device import choose_device
    from MedAILib.runtime.inferer import run_inferer
    from MedAILib.runtime.model_space import from_model_space, to_model_space
    from MedAILib.tasks.segmentation import pipeline

    t0 = time.monotonic()
    axes = flip_axes(bundle)
    volumes = [volumes] if isinstance(volumes, Volume) else list(volumes)
    progress = progress or Progress()
    if len(volumes) > 1:
        from MedAILib.tasks.registration.align import align_inputs

        volumes, _ = align_inputs(volumes, assume_aligned=assume_aligned)
    warnings = pipeline.validate_inputs(volumes, bundle)
    dev = choose_device(device)
    data = to_model_space(volumes, bundle)
    x = data["image"].as_tensor()[None]
    sigmoid = _is_sigmoid(bundle)
    passes = [()] + [(2 + a,) for a in axes]  # batch and channel come first
    mean = None
    for n, dims in enumerate(passes):
        progress.update(n / len(passes), f"test-time augmentation {n + 1}/{len(passes)}"
                        + (f" (flip model axis {dims[0] - 2})" if dims else ""))
        xin = torch.flip(x, dims) if dims else x
        out = run_inferer(bundle.inferer, bundle.network, xin, dev, None, progress.cancel)
        out = torch.flip(out, dims) if dims else out
        p = torch.sigmoid(out[0].float()) if sigmoid else torch.softmax(out[0].float(), dim=0)
        mean = p if mean is None else mean + p
        progress.cancel.check()
    mean /= len(passes)
    eps = 1e-6
    pc = mean.clamp(eps, 1 - eps)
    if sigmoid:
        entropy = -(pc * pc.log() + (1 - pc) * (1 - pc).log()).mean(0) / math.log(2)
        logits = torch.log(pc) - torch.log1p(-pc)
    else:
        entropy = -(pc * pc.log()).sum(0) / math.log(mean.shape[0])
        logits = torch.log(pc)
    unc = from_model_space(entropy[None].float(), data, bundle, nearest=False)[0]
    pred = pipeline._postprocess(bundle, data, [logits])
    label_infos = bundle.labels
    if structures:
        by_name = {l.name.lower(): l for l in label_infos}
        label_infos = [by_name[s.lower()] for s in structures]
    labelmap = pipeline.labels_to_volume(pred, volumes[0], label_infos)
    arr = labelmap.array
    arr[~np.isin(arr, [l.value for l in label_infos])] = 0
    if keep_largest:
        from MedAILib.tasks.segmentation.postprocess import keep_largest_component

        arr = keep_largest_component(arr, sorted(l.value for l in label_infos))
    if min_island_mm3 > 0:
        from MedAILib.tasks.segmentation.postprocess import remove_small_islands

        arr = remove_small_islands(arr, int(np.ceil(min_island_mm3 / float(np.prod(labelmap.spacing)))))
    labelmap.array = arr
    labelmap.metadata.update(model=bundle.name, tta_flip_axes=axes)
    u = np.ascontiguousarray(np.asarray(unc.detach().cpu(), dtype=np.float32).transpose(2, 1, 0)).clip(0, 1)
    uncertainty = volumes[0].with_array(u, labels=None)
    uncertainty.metadata.pop("dicom_files", None)
    confidence = {}
    for l in label_infos:
        inside = arr == l.value
        confidence[l.name] = round(float(1.0 - u[inside].mean()), 4) if inside.any() else None
    progress.update(1.0, "done")
    result = pipeline.SegmentResult(labelmap, time.monotonic() - t0, dev.type, warnings, [])
    return result, uncertainty, confidence
