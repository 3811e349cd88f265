"""Decision-level fusion: combine several models' (or test-time augmentations') outputs.

Inputs are Volumes on one grid (others are resampled onto the first: linear for probabilities,
nearest for labels):

- probability maps: float arrays, either (K, J, I) foreground probability (binary task) or
  (K, J, I, C) with one channel per class (channels last, summing to 1);
- label maps: integer arrays (K, J, I).

Methods: ``mean``, ``weighted`` (weighted mean of probabilities; label maps are one-hot encoded
first), ``vote`` (majority vote, SimpleITK LabelVoting) and ``staple`` (SimpleITK STAPLE for one
foreground label, MultiLabelSTAPLE otherwise). Every result comes with a per-voxel uncertainty
Volume on the input grid: normalised entropy of the fused class distribution (0 = certain,
1 = uniform) or disagreement (fraction of inputs that differ from the fused label).
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np
import SimpleITK as sitk

from MedAILib.core.errors import InputError
from MedAILib.io import to_sitk
from MedAILib.core.volume import Volume
from MedAILib.runtime.resample import resample_to

METHODS = ("mean", "weighted", "vote", "staple")
UNCERTAINTIES = ("entropy", "disagreement")


@dataclasses.dataclass
class EnsembleResult:
    labels: Volume                 # fused label map (int16), input grid
    probabilities: Optional[Volume]  # fused class probabilities (K, J, I, C) float32, or None for vote
    uncertainty: Volume            # float32 (K, J, I), input grid
    method: str
    uncertainty_kind: str
    details: dict


def _is_label_map(v: Volume) -> bool:
    return v.is_labelmap or (v.array.ndim == 3 and np.issubdtype(v.array.dtype, np.integer))


def _on_first_grid(volumes: Sequence[Volume]) -> list:
    if not volumes:
        raise InputError("no inputs to combine", "give at least two probability or label maps")
    ref = volumes[0]
    out = [ref]
    for v in volumes[1:]:
        if v.same_grid(ref):
            out.append(v)
        elif v.array.ndim == 3:
            out.append(resample_to(v, ref, "nearest" if _is_label_map(v) else "linear"))
        else:  # channels-last probabilities: resample channel by channel
            chans = [resample_to(Volume(v.array[..., c], v.ijk_to_ras), ref).array for c in range(v.array.shape[-1])]
            out.append(Volume(np.stack(chans, -1), ref.ijk_to_ras.copy()))
    return out


def _class_probabilities(volumes: Sequence[Volume], n_classes: Optional[int]) -> np.ndarray:
    """(N, K, J, I, C) class probabilities from probability maps or one-hot label maps."""
    if all(_is_label_map(v) for v in volumes):
        n = n_classes or int(max(int(v.array.max()) for v in volumes)) + 1
        return np.stack([np.eye(n, dtype=np.float32)[np.clip(v.array.astype(np.int64), 0, n - 1)] for v in volumes])
    if any(_is_label_map(v) for v in volumes):
        raise InputError("inputs mix label maps and probability maps",
                         "give either all probability maps (float) or all label maps (integer)")
    probs = []
    for v in volumes:
        a = v.array.astype(np.float32)
        if a.ndim == 3:  # binary foreground probability
            a = np.stack([1.0 - a, a], -1)
        probs.append(a)
    shapes = {p.shape for p in probs}
    if len(shapes) != 1:
        raise InputError(f"probability maps have different numbers of classes: {sorted(s[-1] for s in shapes)}",
                         "combine outputs of models that predict the same classes")
    return np.stack(probs)


def _labels_volume(ref: Volume, labels: np.ndarray, label_infos) -> Volume:
    return Volume(labels.astype(np.int16), ref.ijk_to_ras.copy(), label_infos if label_infos is not None else [],
                  {"fusion": "ensemble"})


def entropy(probabilities: np.ndarray) -> np.ndarray:
    """Normalised Shannon entropy over the last axis: 0 (one class certain) .. 1 (uniform)."""
    p = np.clip(probabilities, 1e-12, 1.0)
    n = probabilities.shape[-1]
    return (-(p * np.log(p)).sum(-1) / np.log(max(n, 2))).astype(np.float32)


def disagreement(member_labels: np.ndarray, fused: np.ndarray) -> np.ndarray:
    """Fraction of ensemble members whose label differs from the fused label (0 .. 1)."""
    return (member_labels != fused[None]).mean(0).astype(np.float32)


def combine(volumes: Sequence[Volume], method: str = "mean", weights: Optional[Sequence[float]] = None,
            uncertainty: str = "entropy", n_classes: Optional[int] = None, undecided_label: int = 0) -> EnsembleResult:
    """Fuse several probability or label maps; see the module docstring."""
    if method not in METHODS:
        raise InputError(f"unknown ensemble method {method!r}", f"use one of {', '.join(METHODS)}")
    if uncertainty not in UNCERTAINTIES:
        raise InputError(f"unknown uncertainty {uncertainty!r}", f"use one of {', '.join(UNCERTAINTIES)}")
    if len(volumes) < 2:
        raise InputError(f"an ensemble needs at least two inputs, got {len(volumes)}", "give two or more maps")
    volumes = _on_first_grid(list(volumes))
    ref = volumes[0]
    label_infos = next((v.labels for v in volumes if v.labels), None)
    details = {"n_inputs": len(volumes)}

    if method in ("mean", "weighted"):
        probs = _class_probabilities(volumes, n_classes)  # (N, K, J, I, C)
        if method == "weighted":
            if weights is None or len(weights) != len(volumes):
                raise InputError(f"weighted mean needs one weight per input ({len(volumes)})",
                                 "give --weights with as many numbers as inputs")
            w = np.asarray(weights, dtype=np.float32)
            if np.any(w < 0) or w.sum() <= 0:
                raise InputError("weights must be non-negative and not all zero", "e.g. --weights 2 1 1")
            details["weights"] = (w / w.sum()).round(6).tolist()
        else:
            w = np.ones(len(volumes), dtype=np.float32)
        fused_p = np.tensordot(w / w.sum(), probs, axes=1)  # (K, J, I, C)
        fused = fused_p.argmax(-1)
        members = probs.argmax(-1)
        unc = entropy(fused_p) if uncertainty == "entropy" else disagreement(members, fused)
        return EnsembleResult(_labels_volume(ref, fused, label_infos), Volume(fused_p.astype(np.float32), ref.ijk_to_ras.copy()),
                              ref.with_array(unc, labels=None), method, uncertainty, details)

    # vote / staple work on label maps; probabilities are turned into their argmax labels first
    if all(_is_label_map(v) for v in volumes):
        member_labels = np.stack([v.array.astype(np.int64) for v in volumes])
    else:
        member_labels = _class_probabilities(volumes, n_classes).argmax(-1)
    images = [to_sitk(ref.with_array(m.astype(np.uint16))) for m in member_labels]
    n = n_classes or int(member_labels.max()) + 1

    if method == "vote":
        # LabelVoting marks ties with a dedicated value; we give ties to ``undecided_label``.
        tie = int(member_labels.max()) + 1
        fused = sitk.GetArrayFromImage(sitk.LabelVoting(images, tie)).astype(np.int64)
        details["ties"] = int((fused == tie).sum())
        fused[fused == tie] = undecided_label
        counts = np.stack([(member_labels == c).sum(0) for c in range(n)], -1).astype(np.float32)
        vote_p = counts / len(volumes)
        unc = entropy(vote_p) if uncertainty == "entropy" else disagreement(member_labels, fused)
        return EnsembleResult(_labels_volume(ref, fused, label_infos), Volume(vote_p, ref.ijk_to_ras.copy()),
                              ref.with_array(unc, labels=None), method, uncertainty, details)

    # STAPLE: expectation-maximisation estimate of the true segmentation and each rater's quality
    present = sorted(int(c) for c in np.unique(member_labels) if c != 0)
    if len(present) <= 1:
        fg = present[0] if present else 1
        binary = [to_sitk(ref.with_array((m == fg).astype(np.uint8))) for m in member_labels]
        f = sitk.STAPLEImageFilter()
        f.SetForegroundValue(1)
        p_fg = sitk.GetArrayFromImage(f.Execute(binary)).astype(np.float32)
        fused = np.where(p_fg > 0.5, fg, 0)
        fused_p = np.stack([1.0 - p_fg, p_fg], -1)
        details.update(sensitivity=[round(x, 4) for x in f.GetSensitivity()],
                       specificity=[round(x, 4) for x in f.GetSpecificity()], foreground_label=fg)
    else:
        f = sitk.MultiLabelSTAPLEImageFilter()
        tie = int(member_labels.max()) + 1
        f.SetLabelForUndecidedPixels(tie)
        fused = sitk.GetArrayFromImage(f.Execute(images)).astype(np.int64)
        details["ties"] = int((fused == tie).sum())
        fused[fused == tie] = undecided_label
        # per-class posterior is not exposed by SimpleITK; use the member vote fractions for entropy
        fused_p = np.stack([(member_labels == c).mean(0) for c in range(n)], -1).astype(np.float32)
    unc = entropy(fused_p) if uncertainty == "entropy" else disagreement(member_labels, fused)
    return EnsembleResult(_labels_volume(ref, fused, label_infos), Volume(fused_p, ref.ijk_to_ras.copy()),
                          ref.with_array(unc, labels=None), method, uncertainty, details)
