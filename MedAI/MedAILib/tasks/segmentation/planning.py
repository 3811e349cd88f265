"""Training data for `medai train segmentation` on the user's own cases, and the plan made from it.

Two ways in: ``--images DIR --labels DIR`` (files paired by name) or a MONAI datalist JSON
(``training`` and optional ``validation`` lists of ``{"image": file or [channel files], "label": file}``,
optional ``channels`` names, ``labels`` value -> name, ``modality``).

The plan follows nnU-Net's rules in spirit (Isensee et al., Nature Methods 2021), read from the data:
- target spacing: the median voxel spacing; for strongly anisotropic data (max/min > 3) the coarse
  axis takes the 10th percentile, so thin structures are not smeared;
- intensity normalisation by modality: CT is clipped to the 0.5-99.5 percentiles of foreground
  intensities and z-scored with the foreground mean/std (HU are meaningful across scans); MR and
  others are z-scored per volume and channel, over non-zero voxels when the images have a large
  zero background (skull-stripped brains), else over all voxels;
- patch: the median image shape at the target spacing, shrunk along its longest axis until the
  activation memory estimate fits the budget; network depth from the patch (down-sample while
  every axis stays >= 8 voxels, at most 5 levels).
"""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path
from typing import Optional

import numpy as np

from MedAILib.core.errors import InputError

NII_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")


def _stem(p: Path) -> str:
    for s in NII_SUFFIXES:
        if p.name.endswith(s):
            return p.name[: -len(s)]
    return p.stem


def datalist_from_folders(images: str | os.PathLike, labels: str | os.PathLike) -> dict:
    """Pair images and labels by file name (``case.nii.gz`` with ``case.nii.gz`` or ``case_seg``/
    ``case-seg``/``case_label``); nnU-Net channel files ``case_0000``, ``case_0001`` become channels."""
    images, labels = Path(images), Path(labels)
    for d in (images, labels):
        if not d.is_dir():
            raise InputError(f"{d} is not a folder", "give --images and --labels as folders of image files")
    lab = {}
    for p in sorted(labels.iterdir()):
        if p.name.endswith(NII_SUFFIXES):
            s = _stem(p)
            for suf in ("_seg", "-seg", "_label", "-label", "_labels", "_mask", "_msk"):
                if s.endswith(suf):
                    s = s[: -len(suf)]
                    break
            lab[s] = p
    cases: dict = {}
    for p in sorted(images.iterdir()):
        if not p.name.endswith(NII_SUFFIXES):
            continue
        s = _stem(p)
        base = s[:-5] if len(s) > 5 and s[-5] == "_" and s[-4:].isdigit() and s[:-5] in lab else s
        cases.setdefault(base, []).append(p)
    items = []
    for case, files in sorted(cases.items()):
        if case in lab:
            items.append({"image": [str(f) for f in files] if len(files) > 1 else str(files[0]),
                          "label": str(lab[case]), "id": case})
    if not items:
        raise InputError(f"no image in {images} has a label file of the same name in {labels}",
                         "name labels like their images (case.nii.gz or case_seg.nii.gz)")
    return {"training": items}


def read_datalist(path: str | os.PathLike) -> dict:
    """A MONAI datalist JSON; relative paths are relative to the file's folder. Files are checked."""
    path = Path(path)
    try:
        dl = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read datalist {path}: {e}", "give a JSON file with a 'training' list") from None
    if not isinstance(dl, dict) or not isinstance(dl.get("training"), list) or not dl["training"]:
        raise InputError(f"datalist {path} has no 'training' list", "see docs/training.md for the layout")
    base = path.parent

    def fix(item, where):
        if not isinstance(item, dict) or "image" not in item or "label" not in item:
            raise InputError(f"datalist {path}: an entry of '{where}' lacks 'image' or 'label'",
                             "each entry is {\"image\": file or [files], \"label\": file}")
        out = dict(item)
        imgs = item["image"] if isinstance(item["image"], list) else [item["image"]]
        imgs = [str((base / f) if not Path(f).is_absolute() else Path(f)) for f in imgs]
        lab = str((base / item["label"]) if not Path(item["label"]).is_absolute() else Path(item["label"]))
        for f in imgs + [lab]:
            if not Path(f).is_file():
                raise InputError(f"datalist {path}: file {f} does not exist", "fix the path in the datalist")
        out["image"] = imgs if len(imgs) > 1 else imgs[0]
        out["label"] = lab
        out.setdefault("id", _stem(Path(imgs[0])))
        return out

    res = {k: v for k, v in dl.items() if k not in ("training", "validation")}
    res["training"] = [fix(i, "training") for i in dl["training"]]
    if dl.get("validation"):
        res["validation"] = [fix(i, "validation") for i in dl["validation"]]
    n = {len(i["image"]) if isinstance(i["image"], list) else 1 for i in res["training"] + res.get("validation", [])}
    if len(n) > 1:
        raise InputError(f"datalist {path}: cases have different numbers of channel files {sorted(n)}",
                         "every case needs the same channels in the same order")
    return res


def split_validation(dl: dict, fraction: float = 0.2, seed: int = 0) -> tuple:
    """(training, validation, note). A seeded 20% hold-out when the datalist has no validation list;
    with a single case there is nothing to hold out, and the note says validation = training."""
    if dl.get("validation"):
        return dl["training"], dl["validation"], "validation list from the datalist"
    items = list(dl["training"])
    if len(items) == 1:
        return items, items, ("ONE labelled case: validated on its own training case (not an independent "
                              "estimate; it shows only that training fits)")
    random.Random(seed).shuffle(items)
    n_val = max(1, int(round(fraction * len(items))))
    return items[n_val:], items[:n_val], f"seeded hold-out of {n_val} of {len(items)} cases (seed {seed})"


# ---------------------------------------------------------------- reading facts from the data


def _load(path: str):
    import nibabel as nib

    img = nib.load(path)
    ornt = nib.orientations.io_orientation(img.affine)
    data = np.asarray(img.dataobj)
    # Spacing and shape in RAS axis order, as Orientationd("RAS") will give them.
    zooms = np.asarray(img.header.get_zooms()[:3], dtype=float)
    perm = ornt[:, 0].astype(int)
    sp = np.empty(3)
    shp = np.empty(3, int)
    sp[perm] = zooms
    shp[perm] = data.shape[:3]
    return data, sp, shp


def data_facts(items: list, max_cases: int = 40, seed: int = 0) -> dict:
    """Spacing, shape, label values, foreground size and intensity statistics of (up to 40) cases."""
    sample = list(items)
    if len(sample) > max_cases:
        sample = random.Random(seed).sample(sample, max_cases)
    spacings, shapes, fg_mm, values = [], [], [], set()
    fg_int: list = []
    zero_frac = []
    n_ch = None
    for it in sample:
        lab, sp, shp = _load(it["label"])
        spacings.append(sp)
        shapes.append(shp)
        lab = np.rint(lab).astype(np.int64)
        values |= set(np.unique(lab).tolist())
        fg = lab > 0
        if fg.any():
            idx = np.argwhere(fg)
            ext = idx.max(0) - idx.min(0) + 1
            import nibabel as nib

            z = np.asarray(nib.load(it["label"]).header.get_zooms()[:3])
            fg_mm.append(float(np.prod(ext * z)) ** (1 / 3))
        files = it["image"] if isinstance(it["image"], list) else [it["image"]]
        n_ch = len(files)
        chans = []
        for k, f in enumerate(files):
            im, _, _ = _load(f)
            if im.shape[:3] != lab.shape[:3]:
                raise InputError(f"image {f} has shape {im.shape[:3]} but its label {it['label']} has {lab.shape[:3]}",
                                 "image and label must be on the same voxel grid")
            im = np.asarray(im, dtype=np.float32)
            zero_frac.append(float((im == 0).mean()))
            vals = im[fg] if fg.any() else im.ravel()
            rng = np.random.default_rng(seed)
            chans.append(rng.choice(vals, size=min(vals.size, 10000), replace=False))
        fg_int.append(chans)
    per_channel = [np.concatenate([c[k] for c in fg_int]) for k in range(n_ch)]
    return {
        "n_cases_read": len(sample), "n_channels": n_ch,
        "spacings": np.asarray(spacings), "shapes": np.asarray(shapes), "label_values": sorted(values),
        "foreground_size_mm": float(np.median(fg_mm)) if fg_mm else None,
        "zero_fraction": float(np.median(zero_frac)),
        "fg_intensity": [{"p005": float(np.percentile(v, 0.5)), "p995": float(np.percentile(v, 99.5)),
                          "mean": float(v.mean()), "std": float(v.std() + 1e-8), "min": float(v.min())}
                         for v in per_channel],
    }


def guess_modality(stats: dict) -> str:
    """CT when intensities look like Hounsfield units (air near -1000), else MR."""
    return "CT" if stats["min"] <= -500 else "MR"


# ---------------------------------------------------------------- the plan


def estimate_bytes(patch, filters, batch: int) -> float:
    """Rough training activation memory: every level keeps ~10 float tensors (forward, residual units,
    gradients) of its resolution x channels."""
    vox = float(np.prod(patch))
    total = sum(vox / (8**i) * f for i, f in enumerate(filters))
    return total * 10 * 4 * batch * 2  # encoder + decoder


def make_plan(facts: dict, modality: Optional[list] = None, memory_gb: float = 2.0, base_filters: int = 16,
              batch_size: int = 2, spacing: Optional[list] = None, max_patch: Optional[list] = None) -> dict:
    sp = facts["spacings"]
    med = np.median(sp, 0)
    if spacing:
        target = np.asarray(spacing, float)
        why = "given with --spacing"
    else:
        target = med.copy()
        why = "median spacing"
        if med.max() / med.min() > 3:
            ax = int(np.argmax(med))
            target[ax] = np.percentile(sp[:, ax], 10)
            why = f"median spacing, axis {ax} at its 10th percentile (anisotropic data)"
    shape = np.median(facts["shapes"] * sp / target, 0)
    patch = np.maximum(np.round(shape).astype(int), 8)
    if max_patch:
        patch = np.minimum(patch, np.asarray(max_patch))
    # depth: down-sample while every axis stays >= 8 voxels
    def levels_for(p):
        return int(max(2, min(5, 1 + math.floor(math.log2(max(8, p.min()) / 8 * 2)))))

    budget = memory_gb * 1024**3
    while True:
        n_lev = levels_for(patch)
        div = 2 ** (n_lev - 1)
        patch = np.maximum(div, (np.ceil(patch / div) * div).astype(int))
        filters = [min(base_filters * 2**i, 320) for i in range(n_lev)]
        if estimate_bytes(patch, filters, batch_size) <= budget or patch.max() <= div:
            break
        ax = int(np.argmax(patch))
        patch[ax] = max(div, int(patch[ax] * 0.85) // div * div)
    n_ch = facts["n_channels"]
    mods = list(modality) if modality else [guess_modality(s) for s in facts["fg_intensity"]]
    if len(mods) == 1 and n_ch > 1:
        mods = mods * n_ch
    if len(mods) != n_ch:
        raise InputError(f"{len(mods)} modalities given for {n_ch} image channels", "give one --modality per channel")
    if "CT" in mods and set(mods) != {"CT"}:
        raise InputError("mixed CT and non-CT channels are not supported by the planner",
                         "train CT and MR channels as separate models, or give --modality MR for all")
    norm = {"kind": "ct", "window": None}
    if mods[0] == "CT":
        s = facts["fg_intensity"][0]
        norm = {"kind": "ct", "a_min": s["p005"], "a_max": s["p995"], "mean": s["mean"], "std": s["std"]}
    else:
        # nnU-Net: normalise inside the non-zero mask when the zero background is large
        norm = {"kind": "zscore", "nonzero": bool(facts["zero_fraction"] > 0.25)}
    return {
        "spacing": [round(float(x), 4) for x in target], "spacing_reason": why,
        "median_spacing": [round(float(x), 4) for x in med],
        "median_shape_at_spacing": [int(round(x)) for x in shape],
        "patch": [int(x) for x in patch], "filters": filters, "levels": len(filters),
        "modalities": mods, "normalisation": norm, "batch_size": batch_size, "memory_gb": memory_gb,
        "estimated_training_memory_gb": round(estimate_bytes(patch, filters, batch_size) / 1024**3, 2),
        "foreground_size_mm": facts["foreground_size_mm"], "zero_fraction": round(facts["zero_fraction"], 3),
        "label_values": facts["label_values"], "n_channels": n_ch,
    }
