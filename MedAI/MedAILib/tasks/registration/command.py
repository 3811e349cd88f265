"""``medai register FIXED MOVING -o OUT_DIR``: align MOVING to FIXED and report how well.

Writes into OUT_DIR:
- ``transform.tfm`` (rigid/affine) or ``transform.h5`` (B-spline): ITK transform mapping FIXED
  physical points to MOVING points. In Slicer: load it, then put the MOVING volume under it.
- ``moving_resampled.nii.gz``: MOVING resampled onto FIXED's grid through the transform;
- ``checkerboard_before_after.png``: middle fixed slice, checkerboard with MOVING before
  (world coordinates only) and after registration;
- ``report.json``: metric before/after, transform, TRE (with --landmarks or --true-transform).

Existing outputs are never replaced without ``--overwrite``; signals, JSON events and exit status
are those of :mod:`MedAILib.cli.batch` (one case: FIXED + MOVING).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from MedAILib.cli import batch
from MedAILib.core.atomic import atomic_output
from MedAILib.io import read_image, write_image


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
    p.add_argument("--shrink", type=batch.number(low=1, integer=True), nargs="+",
                   help="shrink factor per level (default 4 2 1)")
    p.add_argument("--smoothing", type=batch.number(low=0), nargs="+", help="Gaussian sigma in mm per level (default 2 1 0)")
    p.add_argument("--sampling", type=batch.number(low=1e-6, high=1), nargs="+",
                   help="fraction of voxels sampled per level (default 0.1 0.1 0.2)")
    p.add_argument("--iterations", type=batch.number(low=1, integer=True),
                   help="optimiser iterations per level (default 300)")
    p.add_argument("--learning-rate", type=batch.number(low=1e-6), help="first optimiser step in mm (default 2; try "
                                                                          "0.25 for weak multimodal pairs such as T2 vs DWI)")
    p.add_argument("--bspline-grid", type=batch.number(low=1e-3), help="B-spline control point spacing in mm (default 60)")
    batch.add_arguments(p, report=False, resume=False, device=False, progress=("json",), progress_default=None)
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
    return batch.Batch(args, "register").execute(lambda b: _run(args, b))


def _run(args, b: batch.Batch) -> int:
    out = Path(args.output)
    inputs = [Path(p) for p in (args.fixed, args.moving, args.fixed_mask, args.moving_mask) if p]
    case = batch.Case(0, batch.input_stem(Path(args.moving)), inputs, batch.input_stem(Path(args.moving)))
    suffix = ".h5" if args.transform_type == "bspline" else ".tfm"
    b.plan([case], lambda case: {"transform": out / f"transform{suffix}", "moving_resampled": out / "moving_resampled.nii.gz",
                                 "checkerboard_png": out / "checkerboard_before_after.png",
                                 "report": out / "report.json"})
    return b.process(lambda case, progress: _register(args, case, progress, b))


def _register(args, case, progress, b: batch.Batch) -> dict:
    from MedAILib.tasks.registration import blend, registration

    paths = case.outputs
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

    transform_path = result.save_transform(paths["transform"])
    resampled_path = write_image(result.resampled, paths["moving_resampled"])
    before = registration.resample_to(moving, fixed, "linear")
    after = result.transform_type + ("" if result.transform_type == args.transform_type
                                     else f"; {args.transform_type} FELL BACK to {result.transform_type}")
    after += "; UNRELIABLE" if result.reliability.get("reliable") is False else ""
    png = blend.save_png([blend.checkerboard(fixed, before), blend.checkerboard(fixed, result.resampled)],
                         paths["checkerboard_png"],
                         titles=["before (world coordinates)", f"after ({after})"])
    report = {"fixed": str(args.fixed), "moving": str(args.moving), **result.summary(),
              "outputs": {"transform": str(transform_path), "moving_resampled": str(resampled_path),
                          "checkerboard_png": str(png)}}
    with atomic_output(paths["report"]) as tmp:
        tmp.write_text(json.dumps(report, indent=2), encoding="utf-8")
    for w in result.warnings:  # fall-backs and reliability doubts: never only in the JSON
        b.warn(case, w, kind="registration")
    b.say(f"\nmetric (Mattes MI, lower is better): {result.metric_before:.4f} -> {result.metric_after:.4f}")
    if "forward_inverse_mm" in result.reliability:
        b.say(f"forward/backward runs agree within {result.reliability['forward_inverse_mm']:.3f} mm (mean); "
              f"{'reliable' if result.reliability.get('reliable') else 'NOT reliable'}")
    if result.is_linear:
        b.say(f"rotation {report['rotation_deg']:.3f} deg, translation {report['translation_mm']:.3f} mm")
    for name, t in tre.items():
        b.say(f"TRE ({name}): mean {t['mean']:.3f} mm, max {t['max']:.3f} mm over {t['n_points']} points")
    b.say(f"transform:  {transform_path}  (fixed->moving; in Slicer put the MOVING volume under it)")
    b.say(f"resampled:  {resampled_path}")
    b.say(f"figure:     {png}")
    return {"output": str(transform_path), "transform": str(transform_path), "resampled": str(resampled_path),
            "metric_before": result.metric_before, "metric_after": result.metric_after, "tre_mm": result.tre_mm,
            "transform_type": result.transform_type, "reliable": result.reliability.get("reliable"),
            "warnings": list(result.warnings)}
