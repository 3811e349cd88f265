"""Validation of the shipped T2 -> FLAIR GAN on the held-out TCIA patient, against two baselines.

    .venv/bin/python Testing/Benchmarks/synthesis_eval.py [--model t2_to_flair_gan] [--png OUT.png] [--json OUT.json]

Compared inside the validation patient's head mask (from its T2), all in FLAIR z-score units
(FLAIR z-scored in the same mask, as in training):

- model:     the GAN's output (whole volume, every slice);
- identity:  the T2 itself, z-scored in the mask (what you get with no conversion);
- histmatch: the T2 histogram-matched (SimpleITK HistogramMatching) to the *training* patient's
             FLAIR, then z-scored in the mask (a simple intensity-only baseline).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "MedAI"))

from MedAILib.core.paths import data_dir  # noqa: E402
from MedAILib.io import from_sitk, to_sitk  # noqa: E402
from MedAILib.tasks.synthesis.bundle import find_bundle  # noqa: E402
from MedAILib.tasks.synthesis.evaluate import reference_on_grid, score  # noqa: E402
from MedAILib.tasks.synthesis.pipeline import synthesize  # noqa: E402
from MedAILib.tasks.synthesis.pairs import find_pairs  # noqa: E402
from MedAILib.tasks.synthesis.preprocess import head_mask, normalise  # noqa: E402
from MedAILib.tasks.synthesis.trainer import save_sample_grid  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    p.add_argument("--model", default="t2_to_flair_gan")
    p.add_argument("--val-case", default=None, help="default: the bundle's validation case")
    p.add_argument("--train-case", default=None, help="FLAIR used as histogram-matching template (default: bundle's)")
    p.add_argument("--png", default=None, help="write input | generated | real (| histmatch) slices here")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)

    bundle = find_bundle(args.model)
    training = bundle.metadata.get("training", {})
    if not (args.val_case or training.get("val_cases")):
        sys.exit(f"{bundle.name} was trained on every subject ({training.get('train_cases')}): it has no held-out "
                 "case. Its validation is leave-one-subject-out: Testing/Benchmarks/synthesis_loso.py")
    val_case = args.val_case or training["val_cases"][0]
    train_case = args.train_case or training["train_cases"][0]
    pairs = {pp.case: pp for pp in find_pairs(data_dir() / "tcia-brain-tumor-progression-dicom", bundle.source,
                                              bundle.target)}
    t2, flair, _ = pairs[val_case].load()
    _, train_flair, _ = pairs[train_case].load()
    norm = bundle.cfg["target_norm"]
    mask = head_mask(t2)

    result = synthesize(t2, bundle)
    rows = {"model": score(result.volume, flair, t2, norm, mask)}
    ident = t2.with_array(normalise(t2.array, mask, norm))
    rows["identity"] = score(ident, flair, t2, norm, mask)
    matched = sitk.HistogramMatching(sitk.Cast(to_sitk(t2), sitk.sitkFloat32),
                                     sitk.Cast(to_sitk(train_flair), sitk.sitkFloat32),
                                     numberOfHistogramLevels=256, numberOfMatchPoints=15,
                                     thresholdAtMeanIntensity=True)
    hm = t2.with_array(normalise(sitk.GetArrayFromImage(matched), mask, norm))
    rows["histmatch"] = score(hm, flair, t2, norm, mask)

    print(f"validation patient {val_case} ({t2.shape[0]} slices), model trained on {training.get('train_cases')}; "
          f"inside the head mask ({rows['model']['voxels']} voxels), FLAIR z-score units")
    print(f"OOD check on the validation input: {'in distribution' if result.ood.in_distribution else 'WARNING'}")
    print("| method | MAE | PSNR (dB) | SSIM |")
    print("| --- | --- | --- | --- |")
    for name, m in rows.items():
        print(f"| {name} | {m['mae']:.4f} | {m['psnr']:.2f} | {m['ssim']:.4f} |")

    if args.png:
        ref_n = normalise(reference_on_grid(flair, t2), mask, norm)
        src_n = ident.array
        z_all = np.nonzero(mask.reshape(mask.shape[0], -1).any(1))[0]
        picks = [int(z_all[int(len(z_all) * f)]) for f in (0.3, 0.5, 0.7)]
        save_sample_grid(args.png, [[src_n[z], result.volume.array[z], ref_n[z], hm.array[z]] for z in picks])
        print(f"wrote {args.png} (columns: T2 input | generated FLAIR | real FLAIR | histogram-matched T2; "
              f"slices {picks})")
    if args.json:
        Path(args.json).write_text(json.dumps({"val_case": val_case, "train_case": train_case,
                                               "metrics": rows, "ood": result.ood.to_dict()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
