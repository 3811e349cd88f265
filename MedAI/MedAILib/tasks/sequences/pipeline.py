"""Segment every frame of a :class:`~MedAILib.io.sequences.Sequence` with a segmentation bundle.

Frames go through the bundle exactly as ``medai segment`` sends one volume (its own preprocessing
into model space, its inferer, its post-processing back to the input grid), but several frames
share one network call (``frames_per_batch``) and progress is reported per frame.

Temporal smoothing (``temporal_sigma`` > 0, in frames): the class probabilities (softmax of the
network output, brought back to the input grid with MONAI's recorded inverse) are smoothed along
the frame axis with a Gaussian (``scipy.ndimage.gaussian_filter1d``; wrapped around for a cardiac
cycle, ``cyclic``), then the most likely label is kept. This damps frame-to-frame flicker of the
boundary without moving it systematically. Without smoothing the labels of each frame equal those
of ``medai segment`` on that frame.

Temporal models: a bundle that declares ``"medai": {"temporal_frames": K}`` (metadata.json or
configs/medai.json; K odd) gets, for frame t, the K frames t-K//2 .. t+K//2 as its K input channels
(through the bundle's own preprocessing, as a multi-input model gets its inputs; wrapped around for a
cardiac cycle, clamped at the ends otherwise); its output is frame t's labels.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Optional, Sequence as Seq

import numpy as np
import torch

from MedAILib.core.errors import InputError
from MedAILib.core.progress import Progress
from MedAILib.io.sequences import Sequence


@dataclasses.dataclass
class SequenceResult:
    labels: Sequence             # label frames on the input grid, with the label table
    volumes_ml: dict             # label name -> [volume per frame in mL]
    seconds: float
    device: str
    warnings: list


def label_volumes(labels: Sequence) -> dict:
    """{label name: [mL per frame]} of a label sequence."""
    voxel_ml = float(np.prod(labels.frames[0].spacing)) / 1000.0
    out = {}
    for info in labels.labels or []:
        out[info.name] = [float(np.count_nonzero(f.array == info.value)) * voxel_ml for f in labels.frames]
    return out


def temporal_frames(bundle) -> int:
    """K of a bundle declaring ``medai.temporal_frames`` (frames as channels), else 1."""
    import json

    cfg = dict(bundle.metadata.get("medai", {}) or {})
    f = bundle.path / "configs" / "medai.json"
    if f.exists():
        cfg.update(json.loads(f.read_text(encoding="utf-8")))
    k = cfg.get("temporal_frames", 1)
    if not isinstance(k, int) or isinstance(k, bool) or k < 1 or k % 2 == 0:
        raise InputError(f"model {bundle.name} declares temporal_frames {k!r}",
                         "it must be an odd whole number of frames (1, 3, 5 ...): fix the bundle's medai section")
    if k > 1 and len(bundle.input_names) != k:
        raise InputError(f"model {bundle.name} declares {k} temporal frames but its network takes "
                         f"{len(bundle.input_names)} input channel(s)", "fix the bundle's medai.temporal_frames")
    return k


def frame_window(t: int, n: int, k: int, cyclic: bool) -> list:
    """Frame indices fed to a temporal model for frame ``t`` of ``n`` (centre in the middle)."""
    offsets = range(-(k // 2), k // 2 + 1)
    return [(t + o) % n if cyclic else min(max(t + o, 0), n - 1) for o in offsets]


def segment_sequence(seq: Sequence, bundle, device: str = "auto", frames_per_batch: int = 4,
                     temporal_sigma: float = 0.0, cyclic: bool = True, structures: Optional[Seq[str]] = None,
                     keep_largest: bool = False, progress: Optional[Progress] = None) -> SequenceResult:
    """``keep_largest``: keep only the largest connected piece of each label in each frame (after
    smoothing), as ``medai segment --keep-largest`` does for one volume."""
    from MedAILib.runtime.device import choose_device
    from MedAILib.runtime.inferer import run_inferer
    from MedAILib.runtime.model_space import from_model_space, to_model_space
    from MedAILib.tasks.segmentation.pipeline import _postprocess, labels_to_volume, select_labels, validate_inputs

    if frames_per_batch < 1:
        raise InputError(f"frames per batch must be at least 1 (got {frames_per_batch})", "")
    if temporal_sigma < 0:
        raise InputError(f"temporal smoothing sigma must be >= 0 frames (got {temporal_sigma})", "")
    progress = progress or Progress()
    cancel = progress.cancel
    t0 = time.monotonic()
    k = temporal_frames(bundle)
    warnings = list(validate_inputs([seq.frames[0]] * k, bundle))  # the frames share one grid and kind
    for w in warnings:
        progress.log(f"warning: {w}")
    label_infos = select_labels(bundle, structures)
    keep = sorted(l.value for l in label_infos)
    dev = choose_device(device)
    n = seq.n_frames
    network = bundle.network
    frames_out = [None] * n
    probs = [None] * n
    for start in range(0, n, frames_per_batch):
        idx = list(range(start, min(n, start + frames_per_batch)))
        cancel.check()
        progress.stage(start / n, (idx[-1] + 0.5) / n).update(0.0, f"frames {idx[0] + 1}-{idx[-1] + 1} of {n}: "
                                                                   f"running {bundle.name} on {dev.type}")
        datas = [to_model_space([seq.frames[f] for f in frame_window(t, n, k, cyclic)], bundle) for t in idx]
        images = torch.stack([d["image"].as_tensor() for d in datas])
        logits = run_inferer(bundle.inferer, network, images, dev, progress, cancel)
        for b, t in enumerate(idx):
            cancel.check()
            if temporal_sigma > 0:
                p = torch.softmax(logits[b].float(), dim=0)
                probs[t] = from_model_space(p, datas[b], bundle).numpy().astype(np.float32)
            else:
                pred = _postprocess(bundle, datas[b], [logits[b]])
                frames_out[t] = labels_to_volume(pred, seq.frames[t], label_infos).array
            progress.stage(0.0, 1.0).update((t + 1) / n * (0.9 if temporal_sigma > 0 else 1.0),
                                            f"frame {t + 1}/{n} segmented")
        del logits, images, datas
    if temporal_sigma > 0:
        from scipy.ndimage import gaussian_filter1d

        progress.update(0.92, f"temporal smoothing (sigma {temporal_sigma:g} frames"
                              f"{', cyclic' if cyclic else ''})")
        p = np.stack(probs)  # (T, C, I, J, K)
        del probs
        p = gaussian_filter1d(p, temporal_sigma, axis=0, mode="wrap" if cyclic else "nearest")
        lab = np.argmax(p, axis=1).astype(np.uint8)  # (T, I, J, K)
        frames_out = [np.ascontiguousarray(l.transpose(2, 1, 0)) for l in lab]
    arrays = []
    for a in frames_out:
        a = np.asarray(a)
        a = a.astype(np.uint8) if a.max(initial=0) <= 255 else a.astype(np.int16)
        a[~np.isin(a, keep)] = 0
        if keep_largest:
            from MedAILib.tasks.segmentation.postprocess import keep_largest_component

            a = keep_largest_component(a, keep)
        arrays.append(a)
    labels = Sequence.from_array(np.stack(arrays), seq.ijk_to_ras, seq.index_values, labels=label_infos,
                                 index_name=seq.index_name, index_unit=seq.index_unit)
    labels.metadata.update(model=bundle.name, temporal_sigma=float(temporal_sigma), cyclic=bool(cyclic),
                           temporal_frames=k,
                           keep_largest=bool(keep_largest),
                           source=seq.metadata.get("source"))
    progress.stage(0.0, 1.0).update(1.0, "done")
    return SequenceResult(labels, label_volumes(labels), time.monotonic() - t0, dev.type, warnings)
