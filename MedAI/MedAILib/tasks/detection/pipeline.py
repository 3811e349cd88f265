"""Detect lesions in one Volume: the bundle's preprocessing into model space, the RetinaNet detector
(sliding window, anchors, box decoding, score threshold, NMS: ``monai.apps.detection``), then the
boxes back onto the input grid in RAS mm and voxel indices (:mod:`.boxes`)."""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Optional

import numpy as np
import torch

from MedAILib.core.progress import Progress
from MedAILib.core.volume import Volume
from MedAILib.tasks.detection.boxes import model_boxes_to_input


@dataclasses.dataclass
class DetectionResult:
    boxes: list          # [Box], highest score first
    seconds: float
    device: str
    model_shape: list    # spatial shape in model space
    warnings: list


def _window(detector, shape) -> None:
    """Keep the sliding window no larger than the image padded to the network's size divisor (a
    512x512x192 window on a 40-slice slab would only add padding and memory)."""
    inferer = getattr(detector, "inferer", None)
    if inferer is None:
        detector.set_sliding_window_inferer(roi_size=list(shape), sw_batch_size=1, overlap=0.25, mode="constant")
        inferer = detector.inferer
    div = detector.size_divisible
    div = [div] * len(shape) if isinstance(div, int) else list(div)
    padded = [int(math.ceil(s / d) * d) for s, d in zip(shape, div)]
    roi = inferer.roi_size if not isinstance(inferer.roi_size, int) else [inferer.roi_size] * len(shape)
    inferer.roi_size = [min(int(r), p) if int(r) > 0 else p for r, p in zip(roi, padded)]


def detect(volume: Volume, model, device: str = "auto", min_score: Optional[float] = None,
           max_boxes: Optional[int] = None, progress: Optional[Progress] = None) -> DetectionResult:
    from MedAILib.runtime.device import choose_device
    from MedAILib.runtime.inferer import count_windows
    from MedAILib.runtime.model_space import to_model_space
    from MedAILib.tasks.segmentation.pipeline import validate_inputs

    progress = progress or Progress()
    cancel = progress.cancel
    t0 = time.monotonic()
    warnings = list(validate_inputs([volume], model.bundle))
    for w in warnings:
        progress.log(f"warning: {w}")
    progress.stage(0.0, 0.1).update(0.0, "preparing the image (model space)")
    data = to_model_space([volume], model.bundle)
    image = data["image"]
    shape = list(image.shape[1:])
    detector = model.detector
    _window(detector, shape)
    dev = choose_device(device)
    detector.network.to(dev)
    if getattr(detector, "inferer", None) is not None:
        detector.inferer.sw_device, detector.inferer.device = dev, dev
    total = count_windows(detector.inferer, tuple(
        int(math.ceil(s / d) * d) for s, d in zip(shape, detector.size_divisible if not isinstance(
            detector.size_divisible, int) else [detector.size_divisible] * len(shape)))) or 1
    calls = [0]

    def on_window(module, args):
        cancel.check()
        calls[0] += 1
        progress.stage(0.1, 0.9).update(min(1.0, calls[0] / total), f"window {calls[0]}/{total}")

    hook = detector.network.register_forward_pre_hook(on_window)
    try:
        with torch.inference_mode():
            out = detector([image.as_tensor().to(dev)], use_inferer=True)[0]
    finally:
        hook.remove()
    cancel.check()
    progress.stage(0.9, 1.0).update(0.0, "boxes to the input grid")
    boxes = out[detector.target_box_key].detach().cpu().numpy()
    scores = out[detector.pred_score_key].detach().cpu().numpy()
    labels = out[detector.target_label_key].detach().cpu().numpy()
    keep = scores >= (model.score_threshold if min_score is None else float(min_score))
    result = model_boxes_to_input(boxes[keep], scores[keep], labels[keep], np.asarray(image.affine),
                                  volume, model.label_names)
    if max_boxes is not None:
        result = result[: int(max_boxes)]
    progress.update(1.0, f"{len(result)} box(es)")
    return DetectionResult(result, time.monotonic() - t0, dev.type, shape, warnings)
