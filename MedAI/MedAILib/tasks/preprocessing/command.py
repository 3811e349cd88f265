"""``medai preprocess INPUT... -o OUT [--n4] [--denoise ...] [--resample MM] [--crop-to-mask] [--normalize ...]``.

Runs classical pre-processing steps (SimpleITK and MONAI) on each case, in this order: N4
bias-field correction, denoising, resampling, cropping to the body/head mask (or ``--mask``),
intensity normalisation. Output: ``<case>_pre.nii.gz`` in the -o folder (or the -o file for one
case); ``--preview`` writes a PNG of the input and the result (and N4's bias field) on the same
axial slice; ``--bias-field`` also writes N4's field. Cases, overwrite/resume rules, signals,
report, JSON events and exit status are those of :mod:`MedAILib.cli.batch`.
"""

from __future__ import annotations

from pathlib import Path

from MedAILib.cli import batch
from MedAILib.core.atomic import full_suffix
from MedAILib.core.errors import InputError

SUFFIX = "_pre.nii.gz"
ONE_FILE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")


def register(sub) -> None:
    p = sub.add_parser("preprocess", help="classical pre-processing: N4, denoising, resampling, crop, normalisation",
                       description=__doc__.split("\n\n", 1)[1] if __doc__ else None)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image file, DICOM folder, or folder of image files")
    p.add_argument("-o", "--output", required=True, help="output file (one case) or folder (<case>_pre.nii.gz)")
    p.add_argument("--mask", help="mask (labelmap) for N4, z-score statistics and --crop-to-mask (one case)")
    p.add_argument("--preview", help="PNG: input and result side by side (batch: a folder, one PNG per case)")
    p.add_argument("--bias-field", help="N4's bias field as an image (batch: a folder)")
    from MedAILib.tasks.preprocessing.pipeline import add_arguments

    add_arguments(p)
    batch.add_arguments(p)
    p.add_argument("--trust", action="append", default=[], metavar="PATH",
                   help="trust this bundle folder (--denoise gan with a bundle that is not in the catalogue)")
    p.set_defaults(func=run)


def run(args) -> int:
    return batch.Batch(args, "preprocess").execute(lambda b: _run(args, b))


def _run(args, b: batch.Batch) -> int:
    from MedAILib.tasks.preprocessing.pipeline import options_from_args

    options = options_from_args(args)
    if not options.any:
        raise InputError("no pre-processing step was chosen",
                         "give at least one of --n4, --denoise, --resample, --crop-to-mask, --normalize")
    if args.bias_field and not options.n4:
        raise InputError("--bias-field needs --n4", "add --n4, or leave out --bias-field")
    out = Path(args.output)
    one_file = full_suffix(out).lower() in ONE_FILE_SUFFIXES and not out.is_dir()
    cases = batch.find_cases(args.inputs, 1, output_folders=[out.parent if one_file else out],
                             output_suffixes=[SUFFIX, "_bias.nii.gz"],
                             exclude=[out] + ([Path(args.mask)] if args.mask else []))
    if args.mask and len(cases) > 1:
        raise InputError("--mask applies to one case, but several inputs were given",
                         "run each case with its own mask, or leave --mask out (an automatic mask is used)")
    several = len(cases) > 1
    b.plan(cases, lambda case: {"output": batch.place(out, case, SUFFIX, several, ONE_FILE_SUFFIXES),
                                "preview": batch.place(args.preview, case, ".png", several),
                                "bias_field": batch.place(args.bias_field, case, "_bias.nii.gz", several,
                                                          ONE_FILE_SUFFIXES)})

    def one(case, progress):
        from MedAILib.io import read_image, write_image
        from MedAILib.tasks.preprocessing.pipeline import preprocess

        volume = read_image(case.inputs[0])
        mask = read_image(args.mask) if args.mask else None
        result = preprocess(volume, options, mask=mask, progress=progress)
        progress.cancel.check()
        write_image(result.volume, case.outputs["output"])
        if "bias_field" in case.outputs and result.bias_field is not None:
            write_image(result.bias_field, case.outputs["bias_field"])
        if "preview" in case.outputs:
            from MedAILib.tasks.preprocessing.figures import side_by_side_png

            panels, titles, cmaps = [volume, result.volume], ["input", " + ".join(options.describe())], ["gray", "gray"]
            if result.bias_field is not None:
                panels.append(result.bias_field)
                titles.append("N4 bias field (multiplicative)")
                cmaps.append("viridis")
            side_by_side_png(panels, titles, case.outputs["preview"], suptitle=case.name, cmaps=cmaps)
        v = result.volume
        b.say(f"{case.name}: {case.outputs['output']} ({' x '.join(map(str, v.size_ijk))} voxels, "
              f"{' x '.join(f'{s:.3g}' for s in v.spacing)} mm; {', '.join(options.describe())})")
        return {"steps": result.steps, "size_ijk": list(v.size_ijk), "spacing_mm": [float(s) for s in v.spacing]}

    return b.process(one)
