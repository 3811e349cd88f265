"""``medai fuse``: visual fusion of two aligned images, or decision-level fusion of several model outputs.

  medai fuse blend BASE OTHER -o fused.nii.gz [--alpha 0.5] [--png fig.png]
  medai fuse checkerboard BASE OTHER -o cb.nii.gz [--squares 8 8 1] [--png fig.png]
  medai fuse overlay BASE OVERLAY -o overlay.nrrd [--alpha 0.5] [--colormap hot] [--png fig.png]
  medai fuse ensemble MAP1 MAP2 ... --method mean|weighted|vote|staple [--weights ...] -o labels.nii.gz
             [--uncertainty U.nii.gz] [--probabilities P.nii.gz]

OTHER/OVERLAY are resampled onto BASE's grid by world coordinates: register them first
(``medai register``) if the images are not already aligned.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from MedAILib.core.errors import InputError
from MedAILib.io import read_image, write_image


def register(sub) -> None:
    p = sub.add_parser("fuse", help="blend / checkerboard / colour overlay of two images, or ensemble of model outputs",
                       description=__doc__.split("\n", 1)[1],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    modes = p.add_subparsers(dest="mode", metavar="MODE")
    for mode, help_text in (("blend", "alpha blend of two images"),
                            ("checkerboard", "checkerboard of two images"),
                            ("overlay", "colour overlay of a map or labelmap on a grey image")):
        m = modes.add_parser(mode, help=help_text)
        m.add_argument("base", help="base (background) image; the output is on its grid")
        m.add_argument("other", help="second image (foreground / overlay)")
        m.add_argument("-o", "--output", required=True, help="output volume (.nii.gz/.nrrd; overlay: RGB .nrrd/.mha)")
        m.add_argument("--png", help="also save a PNG of the middle slice")
        m.add_argument("--slice", type=int, help="slice (K index) for the PNG (default: middle)")
        m.add_argument("--progress", choices=["json"], help="print a machine-readable result line")
        if mode in ("blend", "overlay"):
            m.add_argument("--alpha", type=float, default=0.5, help="opacity of the second image (0..1)")
        if mode == "checkerboard":
            m.add_argument("--squares", type=int, nargs=3, default=[8, 8, 1], metavar=("I", "J", "K"),
                           help="number of boxes along I, J, K")
        if mode == "overlay":
            m.add_argument("--colormap", default="hot", choices=["hot", "green", "magenta", "jet"])
            m.add_argument("--threshold", type=float, default=0.05, help="hide overlay values below this (0..1 of its window)")
        m.set_defaults(func=run)
    e = modes.add_parser("ensemble", help="combine probability or label maps (mean, weighted, vote, STAPLE)")
    e.add_argument("inputs", nargs="+", help="probability maps (float) or label maps (integer), same task")
    e.add_argument("--method", default="mean", choices=["mean", "weighted", "vote", "staple"])
    e.add_argument("--weights", type=float, nargs="+", help="one weight per input (method weighted)")
    e.add_argument("-o", "--output", required=True, help="fused label map (.nii.gz, .nrrd or .seg.nrrd)")
    e.add_argument("--uncertainty", help="write the per-voxel uncertainty volume here (.nii.gz)")
    e.add_argument("--uncertainty-kind", default="entropy", choices=["entropy", "disagreement"])
    e.add_argument("--probabilities", help="write the fused class probabilities here (4D .nii.gz, channels last)")
    e.add_argument("--progress", choices=["json"], help="print machine-readable result line")
    e.set_defaults(func=run_ensemble)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def run(args) -> int:
    from MedAILib.tasks.registration import blend

    base, other = read_image(args.base), read_image(args.other)
    if args.mode == "blend":
        fused = blend.alpha_blend(base, other, args.alpha)
        write_image(fused, args.output)
        shown = fused
    elif args.mode == "checkerboard":
        fused = blend.checkerboard(base, other, args.squares)
        write_image(fused, args.output)
        shown = fused
    else:
        shown = blend.colour_overlay(base, other, args.alpha, args.colormap, args.threshold)
        blend.write_rgb(shown, base, args.output)
    if args.png:
        blend.save_png([shown], args.png, k=args.slice)
    if args.progress == "json":
        print(json.dumps({"event": "done", "outputs": [args.output] + ([args.png] if args.png else [])}))
    else:
        print(f"wrote {args.output}" + (f" and {args.png}" if args.png else ""))
    return 0


def run_ensemble(args) -> int:
    from MedAILib.tasks.fusion import ensemble
    from MedAILib.core.volume import Volume

    if len(args.inputs) < 2:
        raise InputError("an ensemble needs at least two inputs", "give two or more probability or label maps")
    volumes = []
    for path in args.inputs:
        v = read_image(path)
        volumes.append(v)
    result = ensemble.combine(volumes, args.method, args.weights, args.uncertainty_kind)
    write_image(result.labels, args.output)
    if args.uncertainty:
        write_image(result.uncertainty, args.uncertainty)
    if args.probabilities and result.probabilities is not None:
        import SimpleITK as sitk

        from MedAILib.core.atomic import atomic_output
        from MedAILib.io import to_sitk

        # 4D (vector) image: one component per class, on the label grid
        img = sitk.GetImageFromArray(result.probabilities.array, isVector=True)
        img.CopyInformation(to_sitk(Volume(result.labels.array, result.labels.ijk_to_ras)))
        with atomic_output(args.probabilities) as tmp:
            sitk.WriteImage(img, str(tmp), useCompression=True)
    summary = {"method": result.method, "uncertainty": result.uncertainty_kind, **result.details,
               "labels_present": [int(x) for x in np.unique(result.labels.array)]}
    if getattr(args, "progress", None) == "json":
        outputs = [args.output] + ([args.uncertainty] if args.uncertainty else [])
        print(json.dumps({"event": "done", "outputs": outputs, **summary}))
    else:
        print(json.dumps(summary, indent=2))
        print(f"wrote {args.output}" + (f" and {args.uncertainty}" if args.uncertainty else ""), file=sys.stderr)
    return 0
