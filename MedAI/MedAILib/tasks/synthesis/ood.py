"""Out-of-distribution check: is this input like the images the model was trained on?

A GAN asked to convert an image unlike its training data still produces a plausible-looking
image, which is the dangerous failure. So every inference compares a few cheap statistics of the
input with the ranges seen in training (stored in the bundle as ``configs/training_stats.json``)
and *warns* (never fails) when one falls outside. Features, all computed in the model's space:

- ``pixel_mm`` / ``slice_mm``: in-plane pixel size and slice spacing of the input (geometry);
- ``negative_fraction``: fraction of foreground voxels below zero in the raw input (MR magnitude
  images are non-negative; CT is not);
- ``q05`` ... ``q95``: quantiles of the normalised source intensity inside the foreground mask
  (histogram shape after normalisation);
- ``foreground_fraction``: share of the field of view inside the foreground mask;
- ``roughness``: mean absolute in-plane Laplacian of the normalised image inside the mask
  (high for noise, low for smooth anatomy).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

QUANTILES = (5, 25, 50, 75, 95)

# How far outside the training range a feature may go before we warn.
# "ratio": allowed factor around [min, max]; "abs": allowed additive margin.
TOLERANCE = {
    "pixel_mm": ("ratio", 3.0),
    "slice_mm": ("ratio", 10.0),
    "negative_fraction": ("abs", 0.02),
    **{f"q{q:02d}": ("abs", 0.6) for q in QUANTILES},
    "foreground_fraction": ("ratio", 2.0),
    "roughness": ("ratio", 2.0),
}

DESCRIPTION = {
    "pixel_mm": "in-plane pixel size (mm)",
    "slice_mm": "slice spacing (mm)",
    "negative_fraction": "fraction of foreground voxels below 0 (MR magnitude images have none)",
    "foreground_fraction": "share of the image inside the foreground mask",
    "roughness": "mean |Laplacian| of the normalised image (noise is rough)",
    **{f"q{q:02d}": f"{q}th percentile of the normalised intensity in the foreground" for q in QUANTILES},
}


def features(raw: np.ndarray, normalised: np.ndarray, mask: np.ndarray, pixel_mm: float, slice_mm: float) -> dict:
    """OOD features of one input in model space (arrays ZYX, mask from the source)."""
    m = mask if mask.any() else np.ones_like(mask, bool)
    vals = normalised[m]
    lap = np.stack([ndimage.laplace(s.astype(np.float32)) for s in normalised])
    inner = np.stack([ndimage.binary_erosion(s, iterations=2) for s in m])
    inner = inner if inner.any() else m
    f = {
        "pixel_mm": float(pixel_mm),
        "slice_mm": float(slice_mm),
        "negative_fraction": float((raw[m] < 0).mean()),
        "foreground_fraction": float(m.mean()),
        "roughness": float(np.abs(lap[inner]).mean()),
    }
    for q, v in zip(QUANTILES, np.percentile(vals, QUANTILES)):
        f[f"q{q:02d}"] = float(v)
    return f


def training_stats(per_case: list, cases: list = None) -> dict:
    """Ranges of the features over the training cases, with the tolerance used at inference."""
    out = {"description": "Input statistics of the training cases (model space) for the out-of-distribution "
                          "check; see MedAILib/synthesis/ood.py", "cases": list(cases or []), "features": {}}
    for name in per_case[0]:
        values = [float(c[name]) for c in per_case]
        kind, tol = TOLERANCE.get(name, ("abs", 0.0))
        lo, hi = min(values), max(values)
        if kind == "ratio":
            low, high = lo / tol, hi * tol
        else:
            low, high = lo - tol, hi + tol
        out["features"][name] = {"train_min": lo, "train_max": hi, "low": low, "high": high,
                                 "description": DESCRIPTION.get(name, name)}
    return out


@dataclasses.dataclass
class OODReport:
    features: dict
    outside: list  # [(name, value, low, high, description)]

    @property
    def in_distribution(self) -> bool:
        return not self.outside

    def message(self) -> str:
        if not self.outside:
            return "input statistics are within the range of the training data"
        parts = [f"{d} = {v:.3g} (training range {lo:.3g}..{hi:.3g})" for _, v, lo, hi, d in self.outside]
        return ("INPUT UNLIKE THE TRAINING DATA — the converted image may look plausible but be wrong: "
                + "; ".join(parts))

    def to_dict(self) -> dict:
        return {"in_distribution": self.in_distribution, "message": self.message(),
                "outside": [{"feature": n, "value": v, "low": lo, "high": hi} for n, v, lo, hi, _ in self.outside],
                "features": self.features}


def check(feats: dict, stats: dict) -> OODReport:
    outside = []
    for name, rng in (stats or {}).get("features", {}).items():
        if name not in feats:
            continue
        v = feats[name]
        if not (rng["low"] <= v <= rng["high"]):
            outside.append((name, v, rng["low"], rng["high"], rng.get("description", name)))
    return OODReport(feats, outside)
