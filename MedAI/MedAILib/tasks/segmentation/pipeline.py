"""Segmentation: input Volume(s) -> the bundle's model space -> inference -> post-processing ->
labelmap on the input's exact grid, with the catalogue's label table.

Into the model's space and back: :mod:`MedAILib.runtime.model_space` (the bundle's own
preprocessing forward, MONAI's recorded inverse back).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from MedAILib.core.errors import InputError, ModelError
from MedAILib.core.progress import CancelToken, Progress
from MedAILib.core.volume import Volume
from MedAILib.runtime.memory import release_free_memory
from MedAILib.runtime.model_space import STREAM_KEY, as_model_output, labels_from_model_space, to_model_space

log = logging.getLogger(__name__)


@dataclasses.dataclass
class SegmentResult:
    labelmap: Volume
    seconds: float
    device: str
    warnings: list
    log: list


# --- the result on the input grid ----------------------------------------------------------------

def labels_to_volume(labels_ijk, reference: Volume, label_infos) -> Volume:
    """Labels (a (1,) I, J, K tensor, or already a KJI integer array from the streamed way back) as a
    labelmap Volume on ``reference``'s grid."""
    if isinstance(labels_ijk, np.ndarray):  # streamed: KJI, integer, on the input grid
        arr = labels_ijk
    else:
        arr = np.asarray(labels_ijk.detach().cpu())
        if arr.ndim == 4:
            arr = arr[0]
        arr = np.rint(arr).astype(np.int16 if arr.max(initial=0) > 255 else np.uint8)
        arr = np.ascontiguousarray(arr.transpose(2, 1, 0))  # IJK -> KJI
    if arr.shape != reference.array.shape[:3]:
        raise ModelError(f"the model's output grid {arr.shape} does not match the input {reference.array.shape}",
                         "the bundle's post-processing changes the grid; report this bundle")
    return reference.with_array(arr, labels=list(label_infos))


# --- the whole pipeline ------------------------------------------------------------------------

def _post_reads_image(bundle) -> bool:
    """Whether a post-processing step other than ``Invertd`` names the key "image" (its voxels may
    then be needed); Invertd reads only the image's metadata and transform trace."""
    from monai.transforms import Invertd

    post = bundle.postprocessing
    for t in (post.transforms if post is not None else []):
        if isinstance(t, Invertd):
            continue
        for value in vars(t).values():
            values = value if isinstance(value, (list, tuple)) else (value,)
            if any(isinstance(v, str) and v == "image" for v in values):
                return True
    return False


def release_image_voxels(data: dict, bundle) -> dict:
    """``data`` with the model-space image replaced by an empty MetaTensor carrying the same metadata
    and transform trace, so its voxels (one float per model-grid voxel and channel) are freed before
    post-processing, whose peak they would otherwise add to. Kept when the post-processing reads them."""
    from monai.data import MetaTensor

    image = data["image"]
    if _post_reads_image(bundle) or not isinstance(image, MetaTensor):
        return data
    # Same shape and dtype (some inverses read them) but no storage: one value broadcast (stride 0).
    empty = MetaTensor(torch.zeros(1, dtype=image.dtype).expand(image.shape), meta=image.meta,
                       applied_operations=image.applied_operations)
    return dict(data, image=empty)


def _postprocess(bundle, data: dict, logits, progress: Optional[Progress] = None):
    """The bundle's own post-processing (minus saving); nearest-neighbour inverse if it has no Invertd.

    ``logits`` may be handed over in a one-element list, which is emptied: the network output is
    then freed as soon as the first step has replaced it (one C x model-grid float buffer less at
    the peak; the steps run one at a time, as Compose runs them, so replaced inputs are dropped).
    """
    from monai.transforms import Invertd, apply_transform

    from MedAILib.runtime.argmax import FastArgmaxd, channel_argmax, is_plain_argmax
    from MedAILib.models.bundle import IO_TRANSFORMS

    post = bundle.postprocessing
    steps = [t for t in (post.transforms if post is not None else []) if type(t).__name__ not in IO_TRANSFORMS]
    steps = [FastArgmaxd(t) if is_plain_argmax(t) else t for t in steps]  # same labels, ~5x faster argmax
    inverted = any(isinstance(t, Invertd) for t in steps)
    if isinstance(logits, list):
        logits = logits.pop()
    n_classes = int(logits.shape[0])
    d = {"image": data["image"], "pred": as_model_output(logits, data["image"])}
    del logits
    plan = data.get(STREAM_KEY)
    fused = _streamed_inverse_at(steps, bundle) if plan is not None else None
    if fused is not None:  # Invertd + argmax slab by slab of the input grid (same labels, no dense grid)
        from MedAILib.runtime.streaming import Unsupported, invert_to_labels

        for t in steps[:fused]:
            d = apply_transform(t, d, map_items=True, unpack_items=False)
        steps = steps[fused:]
        try:
            labels = invert_to_labels(d["pred"], data, plan, nearest=bool(steps[0].nearest_interp[0]),
                                      progress=progress)
        except Unsupported as e:
            log.info("way back: MONAI's whole-volume path (%s)", e)
        else:
            if len(steps) == 2:  # nothing after the argmax
                return labels
            d["pred"], steps = _labels_as_pred(labels, data["image"]), steps[2:]
    for t in steps:
        d = apply_transform(t, d, map_items=True, unpack_items=False)
    pred = d["pred"]
    pred = pred.as_tensor() if hasattr(pred, "as_tensor") else torch.as_tensor(pred)
    if pred.shape[0] > 1:  # still one channel per class: argmax
        pred = channel_argmax(pred)
    if not inverted:
        pred = labels_from_model_space(pred, data, bundle, n_classes=n_classes)
    return pred


def _streamed_inverse_at(steps, bundle) -> Optional[int]:
    """Index of an ``Invertd`` of the whole preprocessing (key "pred" from "image") directly followed
    by a plain argmax, which :func:`MedAILib.runtime.streaming.invert_to_labels` computes together
    slab by slab; None when the post-processing has no such pair."""
    from monai.transforms import Invertd

    from MedAILib.runtime.argmax import FastArgmaxd

    for i, t in enumerate(steps[:-1]):
        if (isinstance(t, Invertd) and tuple(t.keys) == ("pred",) and tuple(t.orig_keys) == ("image",)
                and t.transform is bundle.preprocessing and isinstance(steps[i + 1], FastArgmaxd)
                and tuple(steps[i + 1].transform.keys) == ("pred",) and t.post_func[0] is None):
            return i
    return None


def _labels_as_pred(labels: np.ndarray, image):
    """Streamed labels (KJI) as the (1, I, J, K) float MetaTensor ``AsDiscreted`` would hand to the
    steps after it (e.g. a bundle's KeepLargestConnectedComponentd), on the input grid."""
    from monai.data import MetaTensor

    meta = {k: v for k, v in image.meta.items()}
    meta["affine"] = image.meta.get("original_affine", image.affine)
    return MetaTensor(torch.from_numpy(labels).permute(2, 1, 0)[None].float(), meta=meta)


def segment(volumes, bundle, device: str = "auto", structures: Optional[Sequence[str]] = None,
            keep_largest: bool = False, min_island_mm3: float = 0.0, progress: Optional[Progress] = None,
            cancel: Optional[CancelToken] = None, assume_aligned: bool = False) -> SegmentResult:
    """Segment ``volumes`` (one per model input, in the bundle's input order) with ``bundle``.

    Inputs of a multi-input model on different grids are first aligned onto input 0
    (:func:`MedAILib.tasks.registration.align.align_inputs`: registered, or resampled by world coordinates when
    ``assume_aligned``); the labelmap is on input 0's grid.
    """
    from MedAILib.runtime.device import choose_device
    from MedAILib.runtime.inferer import run_inferer

    if isinstance(volumes, Volume):
        volumes = [volumes]
    volumes = list(volumes)
    t0 = time.monotonic()
    messages = []
    cancel = cancel or (progress.cancel if progress is not None else CancelToken())
    progress = progress or Progress(cancel=cancel)
    _orig_log = progress.log

    def _log(msg):
        messages.append(msg)
        _orig_log(msg)

    progress.log = _log
    if len(volumes) > 1:
        volumes = _align_inputs(volumes, assume_aligned, progress)
    warnings = validate_inputs(volumes, bundle)
    from MedAILib.tasks.ood import ood_warning  # autoencoder check, for models that carry one (issue 19)

    if (unlike := ood_warning(bundle, volumes[0])) is not None:
        warnings.append(unlike)
    for w in warnings:
        progress.log(f"warning: {w}")
    label_infos = select_labels(bundle, structures)
    dev = choose_device(device)
    run_options = _memory_check(bundle, volumes, dev, progress)
    progress.stage(0.0, 0.1).update(0.0, "preparing the image (model space)")
    cancel.check()
    data = to_model_space(volumes, bundle)
    release_free_memory()
    image = data["image"]
    progress.stage(0.1, 0.9).update(0.0, f"running {bundle.name} on {dev.type}")
    # Held in a list that _postprocess empties, so the logits can be freed mid post-processing.
    logits = [run_inferer(bundle.inferer, bundle.network, image.as_tensor()[None], dev, progress, cancel,
                          **run_options)[0]]
    del image
    data = release_image_voxels(data, bundle)
    release_free_memory()
    cancel.check()
    post_progress = progress.stage(0.9, 1.0)
    post_progress.update(0.0, "post-processing")
    pred = _postprocess(bundle, data, logits, post_progress)
    del data
    release_free_memory()
    labelmap = labels_to_volume(pred, volumes[0], label_infos)
    keep = {l.value for l in label_infos}
    arr = labelmap.array
    _zero_unless(arr, keep)
    if keep_largest:
        from MedAILib.tasks.segmentation.postprocess import keep_largest_component

        arr = keep_largest_component(arr, sorted(keep))
    if min_island_mm3 > 0:
        from MedAILib.tasks.segmentation.postprocess import remove_small_islands

        arr = remove_small_islands(arr, int(np.ceil(min_island_mm3 / float(np.prod(labelmap.spacing)))))
    labelmap.array = arr
    labelmap.metadata.update(model=bundle.name, fast=bool(getattr(bundle, "fast", False)))
    progress.update(1.0, "done")
    progress.log = _orig_log
    return SegmentResult(labelmap, time.monotonic() - t0, dev.type, warnings, messages)


def select_labels(bundle, structures: Optional[Sequence[str]] = None) -> list:
    """The bundle's labels, or those named in ``structures`` (case-insensitive, in the order given);
    unknown names are refused with the list to choose from."""
    label_infos = list(bundle.labels)
    if not structures:
        return label_infos
    by_name = {l.name.lower(): l for l in label_infos}
    unknown = [s for s in structures if s.lower() not in by_name]
    if unknown:
        raise InputError(f"model {bundle.name} has no structure(s) {', '.join(unknown)}",
                         f"choose from: {', '.join(l.name for l in label_infos)}")
    return [by_name[s.lower()] for s in structures]


def _zero_unless(arr: np.ndarray, keep) -> None:
    """Set to 0, in place, every label value not in ``keep``: a lookup table per slab of slices
    (``np.isin`` makes int64 copies of the whole labelmap: ~1.2 GB for a 512x512x300 CT)."""
    if arr.dtype.kind not in "ui" or arr.dtype.itemsize > 2 or not arr.flags.c_contiguous:
        arr[~np.isin(arr, list(keep))] = 0
        return
    view = arr.view(np.uint8 if arr.dtype.itemsize == 1 else np.uint16)  # int16 -1 reads as 65535
    size = 1 << (8 * arr.dtype.itemsize)
    lo, hi = (-(size // 2), size // 2) if arr.dtype.kind == "i" else (0, size)
    drop = np.ones(size, dtype=bool)
    drop[[int(v) & (size - 1) for v in keep if lo <= int(v) < hi]] = False
    step = max(1, (1 << 22) // max(1, int(np.prod(arr.shape[1:]))))
    for k0 in range(0, arr.shape[0], step):
        part = arr[k0:k0 + step]
        part[drop[view[k0:k0 + step]]] = 0


def _align_inputs(volumes, assume_aligned: bool, progress: Progress) -> list:
    from MedAILib.tasks.registration.align import align_inputs

    aligned, record = align_inputs(volumes, assume_aligned=assume_aligned)
    for r in record[1:]:
        if not str(r.get("action", "")).startswith("none"):
            progress.log(f"input {r['input']} ({r.get('source') or 'image'}) was on another grid: {r['action']}")
    return aligned


def _memory_check(bundle, volumes, dev, progress: Progress) -> dict:
    """Estimate the run's memory from the bundle and the inputs' header before any work; refuse with
    a clear message when it cannot fit (beyond the estimate's error, RAM + swap), warn when tight, and
    on a GPU too small for the sliding-window buffers switch to stitching on the CPU. Returns options
    for :func:`MedAILib.runtime.inferer.run_inferer`."""
    from MedAILib.runtime.memory import MB, check_run, clearly_fits, estimate_run

    volume = volumes[0]
    try:
        if clearly_fits(bundle, volume, device=str(dev)):
            return {}
        est = estimate_run(bundle, volume.size_ijk, volume.ijk_to_ras, volume.array.dtype, len(volumes),
                           device="cpu" if dev.type == "cpu" else str(dev))
    except Exception as e:  # noqa: BLE001 - an estimate must never break a segmentation
        log.debug("memory estimate unavailable: %s", e)
        return {}
    log.info("%s", est.summary())
    verdict, text = check_run(est, input_resident=True)
    name = Path(str(volume.metadata.get("source") or "the image")).name
    hint = ("crop the image to the region of interest" + (", use --fast" if getattr(getattr(bundle, "entry", None),
                                                                                       "fast_spacing", None) else "")
            + ", close other programs or use a machine with more RAM")
    if verdict == "refuse":
        raise InputError(f"{name}: not enough memory: {text}",
                         hint + " (MEDAI_MEMORY_CHECK=warn runs it anyway)")
    if verdict == "tight":
        progress.log(f"warning: {name}: {text}; it may run out of memory — {hint}")
    options = {}
    if (dev.type == "cuda" and est.device_bytes and est.available_device_bytes is not None
            and est.device_bytes > est.available_device_bytes):
        options["stitch_device"] = torch.device("cpu")
        progress.log(f"memory: windows on {dev} and stitching on the CPU (the sliding-window buffers need "
                     f"~{est.device_bytes / MB:,.0f} MB, {est.available_device_bytes / MB:,.0f} MB free on {dev})")
    return options


def input_spec(bundle) -> dict:
    """What the model expects, for input validation (:mod:`MedAILib.runtime.validation`)."""
    entry = getattr(bundle, "entry", None)
    spec = {"model": bundle.name, "input_names": bundle.input_names, "input_count": len(bundle.input_names),
            "n_inputs": len(bundle.input_names)}
    if entry is not None:
        spec.update(entry.input_spec(), model=bundle.name)
    else:
        ins = bundle.metadata.get("network_data_format", {}).get("inputs", {})
        mod = next(iter(ins.values()), {}).get("modality") if ins else None
        spec["modalities"] = [mod] * spec["input_count"] if mod else []
    return spec


def validate_inputs(volumes, bundle) -> list:
    """Run MedAILib.runtime.validation.check_inputs when it exists (raises InputError; returns warnings)."""
    spec = input_spec(bundle)
    if len(volumes) != spec["input_count"]:
        raise InputError(f"model {bundle.name} needs {spec['input_count']} input image(s) "
                         f"({', '.join(spec['input_names'])}), got {len(volumes)}",
                         "give one image per model input, in that order")
    try:
        from MedAILib.runtime.validation import check_inputs
    except ImportError:
        log.debug("MedAILib.runtime.validation not available; skipping detailed input checks")
        return []
    return list(check_inputs(volumes, spec) or [])
