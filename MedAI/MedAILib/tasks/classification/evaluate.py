"""Classification accuracy of a model: AUC, accuracy, precision, recall, F1, confusion matrix.

    medai evaluate classification --model ID --data DATASET.npz [--split test]
    medai evaluate classification --model ID --images FOLDER --labels labels.csv [--masks FOLDER]

``--data``: a MedMNIST-style npz whose arrays are already in the model's space (the dataset the
model was trained on), fed to the network as they are (0/255 -> 0/1). ``--images`` + ``--labels``:
every image goes through ``medai classify``'s full preparation (mask recipe or the bundle's own
preprocessing); the CSV has columns ``case`` (file name without suffix) and ``label`` (class
index or name), optionally ``mask`` (a file name in ``--masks`` or a path).
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from pathlib import Path

import numpy as np


def add_arguments(p) -> None:
    p.add_argument("--model", help="catalogue id or bundle folder (default: the catalogue's classification model)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--data", help="MedMNIST-style .npz (<split>_images, <split>_labels) in the model's space")
    g.add_argument("--images", help="folder of image files (one case per file)")
    p.add_argument("--split", default="test", help="npz split: train, val or test (default test)")
    p.add_argument("--labels", help="CSV with columns case,label[,mask] (with --images)")
    p.add_argument("--masks", help="folder of masks named like the cases (with --images)")
    p.add_argument("--threshold", type=float, help="binary decision threshold (default: the bundle's, else 0.5)")
    p.add_argument("--limit", type=int, help="evaluate only the first N cases")
    p.add_argument("--trust", action="append", default=[], metavar="PATH", help="trust this bundle folder")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _npz_cases(path, split: str, limit=None):
    from MedAILib.core.errors import InputError

    path = Path(path)
    if not path.exists():
        raise InputError(f"dataset not found: {path}", "give the .npz file with --data")
    with np.load(path) as d:
        if f"{split}_images" not in d:
            raise InputError(f"{path.name} has no {split}_images", "use --split train, val or test")
        x = d[f"{split}_images"][:limit].astype(np.float32)
        y = d[f"{split}_labels"][:limit].reshape(-1).astype(int)
    if x.max(initial=0) > 1:
        x = x / 255.0  # MedMNIST stores 0/255
    return x[:, None], y


def _label_index(value: str, names: list) -> int:
    from MedAILib.core.errors import InputError

    value = value.strip()
    if value.lstrip("-").isdigit():
        return int(value)
    low = [n.lower() for n in names]
    if value.lower() in low:
        return low.index(value.lower())
    raise InputError(f"label {value!r} is neither a class index nor one of {names}", "fix the labels CSV")


def _folder_scores(bundle, args):
    from MedAILib.tasks.classification.pipeline import classify
    from MedAILib.tasks.segmentation.command import case_name
    from MedAILib.core.errors import InputError
    from MedAILib.io import read_image

    if not args.labels:
        raise InputError("--images needs --labels CSV (columns case,label)", "")
    with open(args.labels, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "case" not in rows[0] or "label" not in rows[0]:
        raise InputError(f"{args.labels} needs columns case and label", "")
    files = {case_name(p): p for p in Path(args.images).iterdir() if p.is_file()}
    scores, labels, names = [], [], None
    for r in rows[: args.limit]:
        if r["case"] not in files:
            raise InputError(f"no image for case {r['case']} in {args.images}", "")
        mask = None
        if r.get("mask") or args.masks:
            m = Path(r.get("mask") or r["case"])
            if not m.is_absolute() and args.masks:
                m = next((p for p in Path(args.masks).iterdir() if case_name(p) == case_name(m) or p.name == m.name), m)
            mask = read_image(m)
        res = classify(read_image(files[r["case"]]), bundle, mask=mask, device="cpu")
        names = res.class_names
        scores.append(res.probabilities)
        labels.append(_label_index(r["label"], names))
    return np.asarray(scores), np.asarray(labels), names


def run(args) -> int:
    from MedAILib.models import resolve_model
    from MedAILib.tasks.classification.pipeline import class_names, medai_config, predict_arrays
    from MedAILib.tasks.classification.metrics import classification_metrics, format_metrics

    warnings.filterwarnings("ignore", module="monai")
    bundle = resolve_model(args.model, task="classification", trust_paths=args.trust)
    if args.data:
        x, y = _npz_cases(args.data, args.split, args.limit)
        scores = predict_arrays(bundle, x)
        names = class_names(bundle, scores.shape[1])
        title = f"{bundle.name} on {Path(args.data).name} ({args.split} split)"
    else:
        scores, y, names = _folder_scores(bundle, args)
        title = f"{bundle.name} on {args.images}"
    threshold = args.threshold if args.threshold is not None else float(medai_config(bundle).get("decision_threshold", 0.5))
    m = classification_metrics(y, scores, threshold=threshold, class_names=names)
    if args.json:
        print(json.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in m.items()}))
    else:
        print(format_metrics(m, title=title))
    return 0
