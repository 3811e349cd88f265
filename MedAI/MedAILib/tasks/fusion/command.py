"""``medai fuse``: visual fusion of two aligned images, or decision-level fusion of several model outputs.

  medai fuse blend BASE OTHER -o fused.nii.gz [--alpha 0.5] [--png fig.png]
  medai fuse checkerboard BASE OTHER -o cb.nii.gz [--squares 8 8 1] [--png fig.png]
  medai fuse overlay BASE OVERLAY -o overlay.nrrd [--alpha 0.5] [--colormap hot] [--png fig.png]
  medai fuse ensemble MAP1 MAP2 ... --method mean|weighted|vote|staple [--weights ...] -o labels.nii.gz
             [--uncertainty U.nii.gz] [--probabilities P.nii.gz]

OTHER/OVERLAY are resampled onto BASE's grid by world coordinates: register them first
(``medai register``) if the images are not already aligned. Existing outputs are never replaced
without ``--overwrite``; signals, JSON events and exit status are those of :mod:`MedAILib.cli.batch`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from MedAILib.cli import batch
from MedAILib.core.errors import InputError
from MedAILib.io import read_image, write_image

COMMON = dict(report=False, resume=False, device=False, progress=("json",), progress_default=None)


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
        m.add_argument("--slice", type=batch.number(low=0, integer=True),
                       help="slice (K index) for the PNG (default: middle)")
        batch.add_arguments(m, **COMMON)
        if mode in ("blend", "overlay"):
            m.add_argument("--alpha", type=batch.number(0, 1), default=0.5, help="opacity of the second image (0..1)")
        if mode == "checkerboard":
            m.add_argument("--squares", type=batch.number(low=1, integer=True), nargs=3, default=[8, 8, 1],
                           metavar=("I", "J", "K"), help="number of boxes along I, J, K")
        if mode == "overlay":
            m.add_argument("--colormap", default="hot", choices=["hot", "green", "magenta", "jet"])
            m.add_argument("--threshold", type=batch.number(0, 1), default=0.05,
                           help="hide overlay values below this (0..1 of its window)")
        m.set_defaults(func=run)
    e = modes.add_parser("ensemble", help="combine probability or label maps (mean, weighted, vote, STAPLE)")
    e.add_argument("inputs", nargs="+", help="probability maps (float) or label maps (integer), same task")
    e.add_argument("--method", default="mean", choices=["mean", "weighted", "vote", "staple"])
    e.add_argument("--weights", type=batch.number(low=0), nargs="+", help="one weight per input (method weighted)")
    e.add_argument("-o", "--output", required=True, help="fused label map (.nii.gz, .nrrd or .seg.nrrd)")
    e.add_argument("--uncertainty", help="write the per-voxel uncertainty volume here (.nii.gz)")
    e.add_argument("--uncertainty-kind", default="entropy", choices=["entropy", "disagreement"])
    e.add_argument("--probabilities", help="write the fused class probabilities here (4D .nii.gz, channels last)")
    batch.add_arguments(e, **COMMON)
    e.set_defaults(func=run_ensemble)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _one_case(args, inputs, outputs: dict, work) -> int:
    """Run ``work(case) -> row fields`` as the one case of a fuse command (checks, signals, events)."""
    paths = [Path(p) for p in inputs]

    def body(b):
        case = batch.Case(0, batch.input_stem(paths[0]), paths, batch.input_stem(paths[0]))
        b.plan([case], lambda case: outputs)
        return b.process(lambda case, progress: work(case, b))

    return batch.Batch(args, "fuse").execute(body)


def run(args) -> int:
    def work(case, b):
        from MedAILib.tasks.registration import blend

        out = case.outputs
        base, other = read_image(args.base), read_image(args.other)
        if args.mode == "blend":
            shown = blend.alpha_blend(base, other, args.alpha)
            write_image(shown, out["output"])
        elif args.mode == "checkerboard":
            shown = blend.checkerboard(base, other, args.squares)
            write_image(shown, out["output"])
        else:
            shown = blend.colour_overlay(base, other, args.alpha, args.colormap, args.threshold)
            blend.write_rgb(shown, base, out["output"])
        if "png" in out:
            blend.save_png([shown], out["png"], k=args.slice)
        b.say(f"wrote {args.output}" + (f" and {args.png}" if args.png else ""))
        return {}

    return _one_case(args, [args.base, args.other], {"output": args.output, "png": args.png}, work)


def run_ensemble(args) -> int:
    if len(args.inputs) < 2:
        raise InputError("an ensemble needs at least two inputs", "give two or more probability or label maps")

    def work(case, b):
        from MedAILib.core.volume import Volume
        from MedAILib.tasks.fusion import ensemble

        out = case.outputs
        volumes = [read_image(path) for path in args.inputs]
        result = ensemble.combine(volumes, args.method, args.weights, args.uncertainty_kind)
        write_image(result.labels, out["output"])
        if "uncertainty" in out:
            write_image(result.uncertainty, out["uncertainty"])
        if "probabilities" in out and result.probabilities is not None:
            import SimpleITK as sitk

            from MedAILib.core.atomic import atomic_output
            from MedAILib.io import to_sitk

            # 4D (vector) image: one component per class, on the label grid
            img = sitk.GetImageFromArray(result.probabilities.array, isVector=True)
            img.CopyInformation(to_sitk(Volume(result.labels.array, result.labels.ijk_to_ras)))
            with atomic_output(out["probabilities"]) as tmp:
                sitk.WriteImage(img, str(tmp), useCompression=True)
        summary = {"method": result.method, "uncertainty": result.uncertainty_kind, **result.details,
                   "labels_present": [int(x) for x in np.unique(result.labels.array)]}
        b.say(json.dumps(summary, indent=2))
        if not b.json:
            print(f"wrote {args.output}" + (f" and {args.uncertainty}" if args.uncertainty else ""), file=sys.stderr)
        return summary

    return _one_case(args, args.inputs, {"output": args.output, "uncertainty": args.uncertainty,
                                         "probabilities": args.probabilities}, work)
