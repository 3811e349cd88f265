"""Is this input like the model's training data? A check before inference.

A catalogue entry may describe its training data under ``domain`` (measured, not guessed):
``extent_mm`` {min, max} (physical size of the training images per axis, mm) and
``background_fraction_max`` (largest share of near-empty voxels, <= 5 % of the 99th percentile, in a
training image). An input far outside these — a whole brain given to a model trained on hippocampus
crops — is refused, or with ``--accept-input-warnings`` (:mod:`MedAILib.runtime.validation`'s flag)
run with a warning. Modality (an MR model given a CT) and label maps given as images are refused
by :mod:`MedAILib.runtime.validation` itself; this module adds only what needs the training profile.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from MedAILib.core.errors import InputError

EXTENT_FACTOR = 2.0        # an axis more than 2x the largest (or under half the smallest) training extent
BACKGROUND_MARGIN = 0.2    # background share above the training maximum by more than this


def extent_mm(volume) -> np.ndarray:
    """Physical size along the volume's I, J, K axes (mm), sorted largest first."""
    return np.sort(np.asarray(volume.size_ijk, float) * np.asarray(volume.spacing, float))[::-1]


def background_fraction(array: np.ndarray) -> float:
    """Share of voxels at or below 5 % of the 99th percentile (air around a head, outside a crop)."""
    a = np.asarray(array)
    step = max(1, a.size // 2_000_000)
    s = a.reshape(-1)[::step].astype(np.float64)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return 0.0
    p99 = np.percentile(s, 99)
    return float(np.mean(s <= 0.05 * p99)) if p99 > 0 else 0.0


def domain_profile(entry) -> Optional[dict]:
    """The ``domain`` block of a catalogue entry (a CatalogueEntry, its raw dict, or None)."""
    raw = getattr(entry, "raw", entry)
    return (raw or {}).get("domain") if isinstance(raw, dict) else None


def domain_findings(volume, profile: Optional[dict]) -> list:
    """Plain-language reasons why ``volume`` is unlike the training data (empty: looks alike)."""
    if not profile:
        return []
    found = []
    ext = profile.get("extent_mm")
    if ext:
        got = extent_mm(volume)
        lo, hi = np.sort(ext["min"])[::-1], np.sort(ext["max"])[::-1]
        if np.any(got > EXTENT_FACTOR * hi) or np.any(got < lo / EXTENT_FACTOR):
            found.append(f"its field of view {' x '.join(f'{x:.0f}' for x in got)} mm is far from the training "
                         f"images' ({' x '.join(f'{x:.0f}' for x in lo)} to {' x '.join(f'{x:.0f}' for x in hi)} mm)")
    bg_max = profile.get("background_fraction_max")
    if bg_max is not None:
        bg = background_fraction(volume.array)
        if bg > bg_max + BACKGROUND_MARGIN:
            found.append(f"{bg:.0%} of it is empty background (training images: at most {bg_max:.0%})")
    return found


def check_domain(volumes, entry, names=None, accept: bool = False) -> list:
    """Refuse inputs unlike the model's training data, naming why; with ``accept`` (the
    ``--accept-input-warnings`` flag) return the same findings as warnings instead."""
    try:
        from MedAILib.runtime.validation import accepting_warnings
    except ImportError:  # older validation module: only the explicit flag counts
        def accepting_warnings():
            return False

    profile = domain_profile(entry)
    model = getattr(entry, "id", None) or (entry or {}).get("id", "the model") if entry is not None else "the model"
    what = (profile or {}).get("description", "its training data")
    warnings = []
    for i, v in enumerate(volumes):
        found = domain_findings(v, profile)
        if not found:
            continue
        name = (names[i] if names and i < len(names) else None) or v.metadata.get("source") or f"input {i + 1}"
        message = f"{name} does not look like what {model} was trained on ({what}): {'; '.join(found)}"
        if accept or accepting_warnings():
            warnings.append(message + " — run anyway (--accept-input-warnings); the result may be meaningless")
        else:
            raise InputError(message, "give an image like the training data (e.g. crop it first), or add "
                                      "--accept-input-warnings to run anyway")
    return warnings
