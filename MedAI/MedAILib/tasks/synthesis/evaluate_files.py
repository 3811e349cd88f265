"""Image similarity of a result to a reference: MAE, PSNR, SSIM (optionally inside a mask).

    medai evaluate image RESULT REFERENCE [--mask MASK | --source SOURCE] [--zscore-reference] [--json]

The reference is resampled onto the result's grid when the grids differ. ``--source`` uses the head
mask of the source image (how synthesis models are scored); ``--zscore-reference`` z-scores the
reference inside the mask first (for results in z-score units, e.g. t2_to_flair_gan).
"""

from __future__ import annotations

import json

import numpy as np


def add_arguments(p) -> None:
    p.add_argument("result", help="image to score (file or DICOM folder)")
    p.add_argument("reference", help="reference image (resampled onto the result's grid if needed)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--mask", help="score only where this image is non-zero")
    g.add_argument("--source", help="score inside the head/body mask of this image (on the result's grid)")
    p.add_argument("--zscore-reference", action="store_true",
                   help="z-score the reference inside the mask first (results in z-score units)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def run(args) -> int:
    from MedAILib.core.errors import InputError
    from MedAILib.io import read_image
    from MedAILib.tasks.synthesis.evaluate import reference_on_grid
    from MedAILib.tasks.synthesis.preprocess import head_mask, normalise
    from MedAILib.tasks.synthesis.metrics import image_metrics

    result = read_image(args.result)
    ref = reference_on_grid(read_image(args.reference), result)
    if args.mask:
        mask = reference_on_grid(read_image(args.mask), result) > 0.5
    elif args.source:
        src = read_image(args.source)
        mask = head_mask(src) if src.same_grid(result) else head_mask(result.with_array(reference_on_grid(src, result)))
    else:
        mask = np.ones(result.shape[:3], bool)
    if not mask.any():
        raise InputError("the mask is empty on the result's grid", "check that the mask overlaps the result")
    if args.zscore_reference:
        ref = normalise(ref, mask, {"type": "zscore_mask"})
    m = image_metrics(result.array, ref, mask)
    if args.json:
        print(json.dumps({k: (float(v) if k != "voxels" else int(v)) for k, v in m.items()}))
    else:
        print(f"MAE {m['mae']:.4f}  PSNR {m['psnr']:.2f} dB  SSIM {m['ssim']:.4f}  "
              f"({m['voxels']} voxels, data range {m['data_range']:.4g})")
    return 0
