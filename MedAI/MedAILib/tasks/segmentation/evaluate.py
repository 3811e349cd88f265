"""Segmentation overlap and distance against a reference: Dice, HD95, ASD, NSD, volume difference.

    medai evaluate segmentation PRED REF [--labels 1,2|names] [--tolerance MM] [--report FILE.json|csv]

PRED and REF are labelmap files (.seg.nrrd, .nii.gz, .nrrd, ...) or folders of them, matched by case
name (``case.seg.nrrd`` <-> ``case.nii.gz``). Every metric is MONAI's (``monai.metrics``): Dice,
95th-percentile symmetric Hausdorff distance, symmetric average surface distance and normalised
surface Dice at ``--tolerance`` mm, all in millimetres of the voxel grid; plus the volume difference.
Per label and case, the mean over cases per label, and the mean over labels.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Optional

import numpy as np

METRICS = ("dice", "hd95_mm", "asd_mm", "nsd", "volume_pred_ml", "volume_ref_ml", "volume_diff_ml")
LABEL_FILE_SUFFIXES = (".seg.nrrd", ".seg.nhdr", ".seg.nii.gz", ".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def add_arguments(p) -> None:
    p.add_argument("pred", help="predicted labelmap, or a folder of them")
    p.add_argument("ref", help="reference labelmap, or a folder of them (matched by case name)")
    p.add_argument("--labels", help="comma-separated label values or names to score (default: every label "
                                    "in the reference or prediction)")
    p.add_argument("--tolerance", type=float, default=1.0,
                   help="surface distance tolerance of the normalised surface Dice, in mm (default 1)")
    p.add_argument("--report", help="write the per-case results to FILE.json or FILE.csv")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


# --- matching --------------------------------------------------------------------------------------

def case_key(path: Path) -> str:
    """``hippocampus_001.seg.nrrd`` / ``hippocampus_001.nii.gz`` -> ``hippocampus_001``."""
    name = Path(path).name
    for s in LABEL_FILE_SUFFIXES:
        if name.lower().endswith(s):
            return name[: -len(s)]
    return Path(path).stem


def match_cases(pred, ref) -> tuple:
    """([(case, pred file, ref file)], unmatched predictions, unmatched references)."""
    from MedAILib.core.errors import InputError

    pred, ref = Path(pred), Path(ref)
    for p in (pred, ref):
        if not p.exists():
            raise InputError(f"{p} does not exist", "check the path")
    if pred.is_file() and ref.is_file():
        return [(case_key(pred), pred, ref)], [], []
    if pred.is_file() != ref.is_file():
        raise InputError(f"{pred} and {ref}: give two files or two folders", "")

    def files(folder):
        out = {}
        for f in sorted(folder.iterdir()):
            if f.is_file() and not f.name.startswith(".") and f.name.lower().endswith(LABEL_FILE_SUFFIXES):
                out.setdefault(case_key(f), f)
        return out

    pf, rf = files(pred), files(ref)
    both = sorted(set(pf) & set(rf))
    if not both:
        raise InputError(f"no case of {pred} has a reference of the same name in {ref}",
                         "name predictions after their references (case.seg.nrrd <-> case.nii.gz)")
    return [(c, pf[c], rf[c]) for c in both], sorted(set(pf) - set(rf)), sorted(set(rf) - set(pf))


# --- metrics -----------------------------------------------------------------------------------------

def _finite(x) -> Optional[float]:
    x = float(x)
    return round(x, 4) if math.isfinite(x) else None


def score_labels(pred, ref, values, tolerance_mm: float = 1.0) -> dict:
    """{value: metrics} of two labelmap Volumes on the same grid, with MONAI's metrics.

    A label absent from both gives no metric (``note``); absent from one gives Dice 0 and no
    distance (a surface distance to nothing is undefined)."""
    import torch
    from monai.metrics import (compute_average_surface_distance, compute_dice, compute_hausdorff_distance,
                               compute_surface_dice)

    p, r = np.asarray(pred.array), np.asarray(ref.array)
    spacing = [float(s) for s in pred.spacing[::-1]]  # array (KJI) order
    voxel_ml = float(np.prod(pred.spacing)) / 1000.0
    out = {}
    for v in values:
        pm, rm = p == v, r == v
        npred, nref = int(pm.sum()), int(rm.sum())
        row = {"volume_pred_ml": round(npred * voxel_ml, 4), "volume_ref_ml": round(nref * voxel_ml, 4),
               "volume_diff_ml": round((npred - nref) * voxel_ml, 4)}
        if npred == 0 and nref == 0:
            row.update(dice=None, hd95_mm=None, asd_mm=None, nsd=None, note="absent in both")
        elif npred == 0 or nref == 0:
            row.update(dice=0.0, hd95_mm=None, asd_mm=None, nsd=0.0,
                       note="absent in the prediction" if npred == 0 else "absent in the reference")
        else:
            # one-hot [batch, channel=background+label, K, J, I]; background excluded from every metric
            yp = torch.from_numpy(np.stack([~pm, pm])[None].astype(np.float32))
            yr = torch.from_numpy(np.stack([~rm, rm])[None].astype(np.float32))
            row["dice"] = _finite(compute_dice(yp, yr, include_background=False)[0, 0])
            row["hd95_mm"] = _finite(compute_hausdorff_distance(yp, yr, include_background=False, percentile=95,
                                                                spacing=spacing)[0, 0])
            row["asd_mm"] = _finite(compute_average_surface_distance(yp, yr, include_background=False,
                                                                     symmetric=True, spacing=spacing)[0, 0])
            row["nsd"] = _finite(compute_surface_dice(yp, yr, [float(tolerance_mm)], include_background=False,
                                                      spacing=spacing)[0, 0])
        out[int(v)] = row
    return out


def _on_pred_grid(ref, pred):
    """The reference on the prediction's grid: as it is when the grids agree, else resampled by
    world position (nearest neighbour) when they overlap."""
    from MedAILib.core.errors import InputError
    from MedAILib.runtime.resample import resample_to

    if ref.same_grid(pred, atol=1e-3):
        return ref
    moved = resample_to(ref, pred, interpolator="nearest")
    if not np.any(moved.array) and np.any(ref.array):
        raise InputError("the reference does not overlap the prediction in space",
                         "check that both come from the same image")
    moved.labels = ref.labels
    return moved


def resolve_labels(asked: Optional[str], pred, ref) -> list:
    """[(value, name)] to score: ``--labels`` values or names, else every label present or in the tables."""
    from MedAILib.core.errors import InputError

    names = {}
    for vol in (ref, pred):
        for l in vol.labels or []:
            if not names.get(l.value) or names[l.value].startswith("label_"):
                names[l.value] = l.name
    present = {int(v) for vol in (pred, ref) for v in np.unique(vol.array) if v != 0}
    known = sorted(set(names) | present)
    if not asked:
        return [(v, names.get(v, f"label_{v}")) for v in known]
    chosen = []
    by_name = {n.lower(): v for v, n in names.items()}
    for item in [s.strip() for s in asked.split(",") if s.strip()]:
        if item.lstrip("-").isdigit():
            chosen.append((int(item), names.get(int(item), f"label_{item}")))
        elif item.lower() in by_name:
            chosen.append((by_name[item.lower()], names[by_name[item.lower()]]))
        else:
            raise InputError(f"--labels: no label called {item!r}",
                             f"use values or names: {', '.join(f'{v}={n}' for v, n in sorted(names.items()))}")
    return chosen


def evaluate(pred, ref, labels: Optional[str] = None, tolerance_mm: float = 1.0) -> dict:
    """Score every matched case; returns {"cases": [...], "mean": {label: {metric: mean}},
    "mean_over_labels": {...}, "unmatched_predictions": [...], "unmatched_references": [...]}."""
    from MedAILib.io import read_segmentation

    matched, lone_pred, lone_ref = match_cases(pred, ref)
    cases = []
    for case, pf, rf in matched:
        p = read_segmentation(pf)
        r = _on_pred_grid(read_segmentation(rf), p)
        chosen = resolve_labels(labels, p, r)
        scores = score_labels(p, r, [v for v, _ in chosen], tolerance_mm)
        cases.append({"case": case, "pred": str(pf), "ref": str(rf),
                      "labels": {name: dict(value=v, **scores[v]) for v, name in chosen}})
    mean = {}
    for name in dict.fromkeys(n for c in cases for n in c["labels"]):
        mean[name] = {}
        for m in METRICS:
            vals = [c["labels"][name][m] for c in cases if name in c["labels"] and c["labels"][name][m] is not None]
            mean[name][m] = round(float(np.mean(vals)), 4) if vals else None
        mean[name]["cases"] = sum(1 for c in cases if name in c["labels"])
    over = {}
    for m in ("dice", "hd95_mm", "asd_mm", "nsd"):
        vals = [mean[n][m] for n in mean if mean[n][m] is not None]
        over[m] = round(float(np.mean(vals)), 4) if vals else None
    return {"tolerance_mm": tolerance_mm, "cases": cases, "mean": mean, "mean_over_labels": over,
            "unmatched_predictions": lone_pred, "unmatched_references": lone_ref}


# --- command -----------------------------------------------------------------------------------------

def write_report(result: dict, path: Path) -> None:
    from MedAILib.core.atomic import atomic_output, full_suffix

    with atomic_output(path) as tmp:
        if full_suffix(path).lower() == ".csv":
            with open(tmp, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["case", "label", "value", *METRICS, "note"])
                for c in result["cases"]:
                    for name, s in c["labels"].items():
                        w.writerow([c["case"], name, s["value"], *["" if s[m] is None else s[m] for m in METRICS],
                                    s.get("note", "")])
                for name, s in result["mean"].items():
                    w.writerow(["mean", name, "", *["" if s[m] is None else s[m] for m in METRICS], ""])
        else:
            Path(tmp).write_text(json.dumps(result, indent=2), encoding="utf-8")


def run(args) -> int:
    from MedAILib.core.errors import InputError
    from MedAILib.core.atomic import full_suffix

    report = Path(args.report) if args.report else None
    if not (args.tolerance > 0 and math.isfinite(args.tolerance)):
        raise InputError(f"--tolerance {args.tolerance}: give a positive number of millimetres", "")
    if report is not None:
        if full_suffix(report).lower() not in (".json", ".csv"):
            raise InputError(f"--report {report}: the report must be a .json or .csv file", "")
        if report.exists() and not args.overwrite:
            raise InputError(f"{report} already exists", "use --overwrite to replace it, or another --report path")
        inputs = {Path(args.pred).resolve(), Path(args.ref).resolve()}
        if report.resolve() in inputs or any(d in report.resolve().parents for d in inputs):
            raise InputError(f"the report {report} would be written over or inside an input", "choose another path")
    import warnings

    with warnings.catch_warnings():  # MONAI's deprecation chatter is not for the person reading the scores
        warnings.simplefilter("ignore", FutureWarning)
        result = evaluate(args.pred, args.ref, args.labels, args.tolerance)
    if report is not None:
        write_report(result, report)
    if args.json:
        print(json.dumps({k: result[k] for k in ("tolerance_mm", "mean", "mean_over_labels",
                                                  "unmatched_predictions", "unmatched_references")}, indent=2))
    else:
        n = len(result["cases"])
        print(f"{n} case(s); per label, mean over cases (NSD at {args.tolerance:g} mm):")
        for name, s in result["mean"].items():
            fmt = lambda v, p=4: "n/a" if v is None else f"{v:.{p}f}"  # noqa: E731
            print(f"  {name}: Dice {fmt(s['dice'])}  HD95 {fmt(s['hd95_mm'], 2)} mm  ASD {fmt(s['asd_mm'], 2)} mm  "
                  f"NSD {fmt(s['nsd'])}  volume diff {fmt(s['volume_diff_ml'], 3)} mL")
        o = result["mean_over_labels"]
        print(f"  mean over labels: Dice {o['dice']}  HD95 {o['hd95_mm']} mm")
        for what in ("unmatched_predictions", "unmatched_references"):
            if result[what]:
                print(f"  {len(result[what])} {what.replace('_', ' ')} (no partner): {', '.join(result[what][:5])}")
    return 0
