"""What test-time flip augmentation gives the shipped hippocampus model on its validation split.

For every validation case of ``resources/Models/hippocampus_unet/split.json`` (50 MSD Task04 cases,
the split the model card reports) the shipped bundle segments the image twice, with the ordinary
pipeline (:func:`MedAILib.tasks.segmentation.pipeline.segment`) and with test-time augmentation
(:func:`MedAILib.tasks.segmentation.tta.segment_with_tta`: the flips the catalogue allows, i.e.
left-right only, probabilities averaged), and both are scored against the manual labels (Dice per
label, per case, then averaged; MONAI's DiceMetric on one-hot maps). A paired bootstrap of the
per-case difference gives a 95 % interval. Nothing is tuned: this only measures.

Post-processing variants from the same predictions (a second approach towards Dice 0.90, issue 21):
``*_largest`` keeps the largest connected piece of each label, ``*_union`` keeps the largest piece
of the whole hippocampus (anterior + posterior together; each label keeps its voxels in it).

    .venv/bin/python Testing/Benchmarks/hippocampus_tta.py OUT_DIR [--limit N]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "MedAI"))

from MedAILib.core.paths import data_dir, resources_dir  # noqa: E402

VARIANTS = ("plain", "tta", "plain_largest", "tta_largest", "plain_union", "tta_union")


def largest_union(labels: np.ndarray) -> np.ndarray:
    """Labels inside the largest connected piece of the foreground (all labels together)."""
    from scipy import ndimage

    comp, n = ndimage.label(labels > 0)
    if n <= 1:
        return labels
    sizes = np.bincount(comp.ravel())
    sizes[0] = 0
    return np.where(comp == int(np.argmax(sizes)), labels, 0)


def dice_per_label(pred: np.ndarray, ref: np.ndarray, labels=(1, 2)) -> list:
    import torch
    from monai.metrics import DiceMetric
    from monai.networks.utils import one_hot

    n = max(labels) + 1
    p = one_hot(torch.as_tensor(pred.astype(np.int64))[None, None], n, dim=1)
    r = one_hot(torch.as_tensor(ref.astype(np.int64))[None, None], n, dim=1)
    d = DiceMetric(include_background=False, reduction="none")(p, r)[0].numpy()
    return [float(d[v - 1]) for v in labels]


def _paired_ci(diff, seed) -> list:
    diff = np.asarray(diff)
    rng = np.random.default_rng(seed)
    boot = [diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(2000)]
    return [float(diff.mean()), float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir")
    p.add_argument("--limit", type=int, default=None, help="first N validation cases only")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    args = p.parse_args(argv)

    import torch

    from MedAILib.io import read_image
    from MedAILib.models import resolve_model
    from MedAILib.tasks.segmentation.pipeline import segment
    from MedAILib.tasks.segmentation.postprocess import keep_largest_component
    from MedAILib.tasks.segmentation.tta import flip_axes, segment_with_tta

    torch.set_num_threads(1)
    split = json.loads((resources_dir() / "Models" / "hippocampus_unet" / "split.json").read_text())
    cases = split["validation"][: args.limit]
    root = data_dir() / "msd-hippocampus"
    bundle = resolve_model("hippocampus_unet", task="segmentation")
    axes = flip_axes(bundle)
    rows = []
    print(f"{len(cases)} validation cases; TTA flips (model axes): {axes}", flush=True)
    for n, case in enumerate(cases):
        image = read_image(root / "imagesTr" / f"{case}.nii.gz")
        ref = read_image(root / "labelsTr" / f"{case}.nii.gz").array
        t0 = time.time()
        plain = segment(image, bundle, device="cpu").labelmap.array
        t1 = time.time()
        tta = segment_with_tta(image, bundle, device="cpu")[0].labelmap.array
        t2 = time.time()
        row = {"case": case, "plain": dice_per_label(plain, ref), "tta": dice_per_label(tta, ref),
               "plain_largest": dice_per_label(keep_largest_component(plain), ref),
               "tta_largest": dice_per_label(keep_largest_component(tta), ref),
               "plain_union": dice_per_label(largest_union(plain), ref),
               "tta_union": dice_per_label(largest_union(tta), ref),
               "seconds_plain": round(t1 - t0, 2), "seconds_tta": round(t2 - t1, 2)}
        rows.append(row)
        print(f"{n + 1:>3} {case}: plain {np.mean(row['plain']):.4f}  tta {np.mean(row['tta']):.4f}", flush=True)
    plain = np.array([r["plain"] for r in rows])
    tta = np.array([r["tta"] for r in rows])
    diff = tta.mean(1) - plain.mean(1)
    rng = np.random.default_rng(args.seed)
    boot = [diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(2000)]
    summary = {
        "n_cases": len(rows), "tta_flip_axes": axes,
        "plain": {"anterior": float(plain[:, 0].mean()), "posterior": float(plain[:, 1].mean()),
                  "mean": float(plain.mean())},
        "tta": {"anterior": float(tta[:, 0].mean()), "posterior": float(tta[:, 1].mean()), "mean": float(tta.mean())},
        "mean_difference": float(diff.mean()), "difference_ci95": [float(np.percentile(boot, 2.5)),
                                                                     float(np.percentile(boot, 97.5))],
        "cases_better": int((diff > 0).sum()), "cases_worse": int((diff < 0).sum()),
        "variants_mean_dice": {v: float(np.mean([r[v] for r in rows])) for v in VARIANTS},
        "variants_vs_plain_ci95": {v: _paired_ci([np.mean(r[v]) - np.mean(r["plain"]) for r in rows], args.seed)
                                   for v in VARIANTS[1:]},
        "seconds_per_case_plain": float(np.mean([r["seconds_plain"] for r in rows])),
        "seconds_per_case_tta": float(np.mean([r["seconds_tta"] for r in rows])),
    }
    print(json.dumps(summary, indent=1))
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "hippocampus_tta.json").write_text(json.dumps({"summary": summary, "cases": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
