"""``medai register FIXED MOVING -o OUT_DIR``: align MOVING to FIXED and report how well.

Writes into OUT_DIR:
- ``transform.tfm`` (rigid/affine) or ``transform.h5`` (B-spline): ITK transform mapping FIXED
  physical points to MOVING points. In Slicer: load it, then put the MOVING volume under it.
- ``moving_resampled.nii.gz``: MOVING resampled onto FIXED's grid through the transform;
- ``checkerboard_before_after.png``: middle fixed slice, checkerboard with MOVING before
  (world coordinates only) and after registration;
- ``report.json``: metric before/after, transform, TRE (with --landmarks or --true-transform).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from MedAILib.core.atomic import atomic_output
from MedAILib.io import read_image, write_image
from MedAILib.core.progress import Progress, emit_json


def register(sub) -> None:
    p = sub.add_parser("register", help="register MOVING to FIXED (rigid, affine or B-spline; Mattes MI)",
                       description=__doc__.split("\n", 1)[1] if __doc__ else None,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("fixed", help="fixed (reference) image file or DICOM folder")
    p.add_argument("moving", help="moving image file or DICOM folder")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--type", dest="transform_type", default="rigid", choices=["rigid", "affine", "bspline"])
    p.add_argument("--init", default="auto", choices=["auto", "world", "geometry", "moments"],
                   help="start transform: scanner frame (world), image centres (geometry), intensity "
                        "centroids (moments), or auto (world when the images overlap)")
    p.add_argument("--fixed-mask", help="mask (labelmap) limiting the metric to a region of FIXED")
    p.add_argument("--moving-mask", help="mask (labelmap) limiting the metric to a region of MOVING")
    p.add_argument("--landmarks", nargs=2, metavar=("FIXED_POINTS", "MOVING_POINTS"),
                   help="corresponding points (Slicer .mrk.json/.fcsv or CSV x,y,z in RAS mm) for TRE")
    p.add_argument("--true-transform", help="known fixed->moving ITK transform (.tfm/.h5) for TRE over FIXED's foreground")
    p.add_argument("--shrink", type=int, nargs="+", help="shrink factor per level (default 4 2 1)")
    p.add_argument("--smoothing", type=float, nargs="+", help="Gaussian sigma in mm per level (default 2 1 0)")
    p.add_argument("--sampling", type=float, nargs="+", help="fraction of voxels sampled per level (default 0.1 0.1 0.2)")
    p.add_argument("--iterations", type=int, help="optimiser iterations per level (default 300)")
    p.add_argument("--learning-rate", type=float, help="first optimiser step in mm (default 2; try 0.25 for weak "
                                                        "multimodal pairs such as T2 vs DWI)")
    p.add_argument("--bspline-grid", type=float, help="B-spline control point spacing in mm (default 60)")
    p.add_argument("--progress", choices=["json"], help="print machine-readable progress lines (for Slicer)")
    p.set_defaults(func=run)


def _overrides(args) -> dict:
    o = {"init": args.init}
    if args.shrink:
        o["shrink_factors"] = tuple(args.shrink)
    if args.smoothing:
        o["smoothing_sigmas_mm"] = tuple(args.smoothing)
    if args.sampling:
        o["sampling_percentage"] = tuple(args.sampling)
    if args.iterations:
        o["iterations"] = args.iterations
    if args.learning_rate:
        o["learning_rate"] = args.learning_rate
    if args.bspline_grid:
        o["bspline_grid_mm"] = args.bspline_grid
    levels = len(o.get("shrink_factors", (4, 2, 1)))
    for key, default in (("smoothing_sigmas_mm", (2.0, 1.0, 0.0)), ("sampling_percentage", (0.1, 0.1, 0.2))):
        if key not in o and levels != 3:  # keep per-level lists consistent when only --shrink is given
            o[key] = (tuple(default[-levels:]) if levels < 3 else tuple(default) + (default[-1],) * (levels - 3))
    return o


def run(args) -> int:
    from MedAILib.tasks.registration import blend, registration

    json_mode = args.progress == "json"
    progress = Progress(json_stream=sys.stdout if json_mode else None,
                        callback=None if json_mode else _print_progress)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    fixed = read_image(args.fixed)
    moving = read_image(args.moving)
    fixed_mask = read_image(args.fixed_mask) if args.fixed_mask else None
    moving_mask = read_image(args.moving_mask) if args.moving_mask else None
    result = registration.register(fixed, moving, args.transform_type, fixed_mask=fixed_mask,
                                   moving_mask=moving_mask, progress=progress, **_overrides(args))

    tre = {}
    if args.landmarks:
        tre["landmarks"] = registration.tre_landmarks(result.transform, registration.read_landmarks(args.landmarks[0]),
                                                      registration.read_landmarks(args.landmarks[1]))
    if args.true_transform:
        import numpy as np

        truth = registration.read_transform(args.true_transform)
        mask = registration.foreground_mask(fixed)
        k, j, i = np.nonzero(mask.array)
        step = max(1, len(i) // 50000)
        pts = fixed.ijk_to_ras_points(np.stack([i, j, k], 1)[::step])
        tre["true_transform"] = registration.tre_against_transform(result.transform, truth, pts)
    result.tre_mm = tre or None

    suffix = ".tfm" if result.is_linear else ".h5"
    transform_path = result.save_transform(out / f"transform{suffix}")
    resampled_path = write_image(result.resampled, out / "moving_resampled.nii.gz")
    before = registration.resample_to(moving, fixed, "linear")
    png = blend.save_png([blend.checkerboard(fixed, before), blend.checkerboard(fixed, result.resampled)],
                         out / "checkerboard_before_after.png",
                         titles=["before (world coordinates)", f"after ({args.transform_type})"])
    report = {"fixed": str(args.fixed), "moving": str(args.moving), **result.summary(),
              "outputs": {"transform": str(transform_path), "moving_resampled": str(resampled_path),
                          "checkerboard_png": str(png)}}
    with atomic_output(out / "report.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    if json_mode:
        emit_json(event="done", outputs=[str(transform_path), str(resampled_path), str(out / "report.json")],
                  transform=str(transform_path), resampled=str(resampled_path),
                  report=str(out / "report.json"), metric_before=result.metric_before,
                  metric_after=result.metric_after)
    else:
        print(f"\nmetric (Mattes MI, lower is better): {result.metric_before:.4f} -> {result.metric_after:.4f}")
        if result.is_linear:
            print(f"rotation {report['rotation_deg']:.3f} deg, translation {report['translation_mm']:.3f} mm")
        for name, t in tre.items():
            print(f"TRE ({name}): mean {t['mean']:.3f} mm, max {t['max']:.3f} mm over {t['n_points']} points")
        print(f"transform:  {transform_path}  (fixed->moving; in Slicer put the MOVING volume under it)")
        print(f"resampled:  {resampled_path}")
        print(f"figure:     {png}")
    return 0


def _print_progress(fraction, message, eta):
    if fraction is None:
        print(message, file=sys.stderr)
        return
    print(f"\r[{fraction * 100:5.1f}%] {message[:70]:<70}", end="", file=sys.stderr, flush=True)
