"""Model space: the one pair of functions that move data into a bundle's space and back.

``to_model_space`` applies the bundle's own preprocessing (orientation, spacing, intensity,
crop/pad: everything but file loading) to a MONAI ``MetaTensor`` built from the input Volume(s);
``from_model_space`` undoes its geometric part with MONAI's recorded inverse (``Invertd``), so the
way back is exact and identical to MONAI's own bundle runner. Every task that runs a bundle
(segmentation, classification heat-maps, ...) uses these.

Geometry note: MONAI/nibabel affines map the *IJK* index to RAS, while Volume arrays are KJI, so
arrays are transposed to IJK on the way in and back to KJI on the way out (no axis flips: the
affine is the Volume's own IJK->RAS).
"""

from __future__ import annotations

import copy
import logging
from typing import Optional, Sequence

import numpy as np
import torch

from MedAILib.core.volume import Volume

log = logging.getLogger(__name__)


def loader_free(compose):
    """The bundle's preprocessing Compose without file loading (MedAI hands over arrays itself)."""
    from monai.transforms import Compose

    from MedAILib.models.bundle import IO_TRANSFORMS

    return Compose([t for t in compose.transforms if type(t).__name__ not in IO_TRANSFORMS])


def volume_meta(volumes: Sequence[Volume], shape_ijk) -> dict:
    """The metadata ``LoadImaged`` gives the input(s): affine = IJK->RAS, spatial shape, channel info."""
    ref = volumes[0]
    affine = torch.as_tensor(ref.ijk_to_ras, dtype=torch.float64)
    return {"affine": affine.clone(), "original_affine": affine.clone(), "space": "RAS",
            "spatial_shape": np.asarray(shape_ijk), "filename_or_obj": str(ref.metadata.get("source", "volume")),
            "original_channel_dim": "no_channel" if len(volumes) == 1 else 0}


def metatensor_from_volumes(volumes: Sequence[Volume]):
    """A MONAI MetaTensor as ``LoadImaged`` would give it: IJK order, affine = IJK->RAS, channel info."""
    from monai.data import MetaTensor

    arrays = [np.ascontiguousarray(v.array.transpose(2, 1, 0), dtype=np.float32) for v in volumes]  # KJI -> IJK
    data = arrays[0] if len(arrays) == 1 else np.stack(arrays)
    return MetaTensor(torch.from_numpy(data), meta=volume_meta(volumes, arrays[0].shape))


def as_model_output(pred, image):
    """Wrap a network output as a MetaTensor carrying the model-space image's meta and transform trace
    (what MONAI's own workflow hands to the post-processing), so Invertd can undo the preprocessing."""
    from monai.data import MetaTensor

    pred = pred.as_tensor() if isinstance(pred, MetaTensor) else torch.as_tensor(pred)
    return MetaTensor(pred, meta=copy.deepcopy(image.meta), applied_operations=copy.deepcopy(image.applied_operations))


STREAM_KEY = "_medai_stream"  # data[STREAM_KEY]: the slab-by-slab plan, when the forward was streamed


def streaming_enabled() -> bool:
    """Slab-by-slab model space (default); ``MEDAI_STREAMING=0`` forces MONAI's whole-volume path
    (same labels; for comparisons and as a way out should a bundle misbehave)."""
    import os

    return os.environ.get("MEDAI_STREAMING", "1").strip().lower() not in ("0", "false", "no", "off")


def to_model_space(volumes: Sequence[Volume], bundle, streaming: Optional[bool] = None) -> dict:
    """Apply the bundle's preprocessing (minus loading) -> ``{"image": MetaTensor (C, *spatial)}``.

    Streamed (:mod:`MedAILib.runtime.streaming`: same values, trace and metadata, without a float64
    copy of the input or a dense grid) when the bundle's preprocessing allows it; then
    ``data[STREAM_KEY]`` holds the plan the way back uses."""
    volumes = list(volumes)
    for i, v in enumerate(volumes[1:], start=1):
        if not v.same_grid(volumes[0]):
            log.info("input %d is on a different grid; resampling it onto input 0", i)
            from MedAILib.runtime.resample import resample_to

            volumes[i] = resample_to(v, volumes[0], "linear", float32=True)
    if streaming_enabled() if streaming is None else streaming:
        from MedAILib.runtime import streaming as st

        try:
            data, plan = st.forward(volumes, bundle, volume_meta)
            data[STREAM_KEY] = plan
            return data
        except st.Unsupported as e:
            log.info("model space: MONAI's whole-volume path (%s)", e)
    pre = loader_free(bundle.preprocessing)
    data = pre({"image": metatensor_from_volumes(volumes)})
    return data


def from_model_space(pred, data: dict, bundle, nearest: bool = False) -> torch.Tensor:
    """Undo the preprocessing's geometry on ``pred`` (C, *model spatial) -> (C, *input IJK) tensor.

    Uses MONAI's recorded inverse of exactly the transforms that were applied (``Invertd``).
    ``nearest`` for label values; interpolation (the transforms' own mode) for probabilities.
    """
    from monai.transforms import Invertd

    inv = Invertd(keys="pred", transform=bundle.preprocessing, orig_keys="image", nearest_interp=nearest,
                  to_tensor=True)
    out = inv({"image": data["image"], "pred": as_model_output(pred, data["image"])})["pred"]
    return out.as_tensor() if hasattr(out, "as_tensor") else torch.as_tensor(out)


# One-hot inversion holds one float per class and voxel; above this, label values go back by nearest.
ONEHOT_LIMIT_BYTES = 1 << 30


def labels_from_model_space(labels, data: dict, bundle, n_classes: Optional[int] = None):
    """Label values (1, *model spatial) -> (1, *input IJK) label values (a KJI integer array when the
    forward was streamed: see :func:`MedAILib.tasks.segmentation.pipeline.labels_to_volume`).

    Each label's one-hot mask is resampled with the preprocessing's interpolation and the most
    likely label is kept (how Model Zoo bundles return to the input grid: Invertd before argmax);
    this keeps shapes far better than nearest neighbour. Very many classes fall back to nearest.
    """
    labels = torch.as_tensor(labels.as_tensor() if hasattr(labels, "as_tensor") else labels).long()
    n = int(n_classes or int(labels.max()) + 1)
    plan = data.get(STREAM_KEY)
    if plan is not None:  # slab by slab: only the model-space one-hot is held, never at input size
        from MedAILib.runtime import streaming as st

        try:
            if n * int(np.prod(labels.shape[1:])) * 4 > ONEHOT_LIMIT_BYTES:
                return st.invert_to_labels(labels.to(torch.float32), data, plan, nearest=True, argmaxed=True)
            onehot = torch.nn.functional.one_hot(labels[0], n).permute(3, 0, 1, 2).float()
            return st.invert_to_labels(onehot, data, plan, nearest=False)
        except st.Unsupported as e:
            log.info("way back: MONAI's whole-volume path (%s)", e)
    orig_voxels = int(np.prod(data["image"].meta.get("spatial_shape", labels.shape[1:])))
    if n * max(orig_voxels, int(np.prod(labels.shape[1:]))) * 4 > ONEHOT_LIMIT_BYTES:
        return from_model_space(labels.float(), data, bundle, nearest=True).round().long()
    onehot = torch.nn.functional.one_hot(labels[0], n).permute(3, 0, 1, 2).float()
    from MedAILib.runtime.argmax import channel_argmax

    return channel_argmax(from_model_space(onehot, data, bundle, nearest=False))
