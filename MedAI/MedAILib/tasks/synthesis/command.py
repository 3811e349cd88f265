"""``medai synthesize INPUT... -o OUT --model ID``: convert images to another modality (GAN).

Each input is converted on its own grid, to ``<case>_<target>.nii.gz`` (or the -o file for one
input). With ``--reference`` (one per case) MAE, PSNR and SSIM inside the model's mask are printed.
Next to each output a preview PNG ``<output name>_preview.png`` shows a few axial slices of the
input, the output and (with ``--reference``) the real target; ``--no-preview`` skips it.
When an input is unlike the model's training data an out-of-distribution WARNING is printed
(and sent as a JSON ``warning`` event with ``--progress json``); the conversion still runs.
Cases, overwrite/resume rules, signals, report, events and exit status are those of
:mod:`MedAILib.cli.batch`.
"""

from __future__ import annotations

from pathlib import Path

from MedAILib.cli import batch
from MedAILib.core import events
from MedAILib.core.atomic import full_suffix
from MedAILib.core.errors import InputError

ONE_FILE_SUFFIXES = batch.IMAGE_SUFFIXES  # -o naming one output file (one input)


def register(sub) -> None:
    p = sub.add_parser("synthesize", help="convert images to another modality with a GAN (e.g. T2 -> FLAIR)",
                       description=__doc__.split("\n")[0])
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files, DICOM folders or folders of image files (source contrast)")
    p.add_argument("-o", "--output", required=True,
                   help="output file (one input, e.g. out.nii.gz) or folder (<case>_<target>.nii.gz per case)")
    p.add_argument("--model", default="t2_to_flair_gan", help="model id or bundle folder (default: t2_to_flair_gan)")
    p.add_argument("--reference", nargs="+", metavar="REF",
                   help="real target images, one per case in case order: print MAE/PSNR/SSIM")
    p.add_argument("--no-preview", action="store_true",
                   help="do not write <output>_preview.png (input / output / real target slices)")
    p.add_argument("--overlap", type=batch.number(low=0, high=0.95), default=None,
                   help="sliding-window overlap (default: the model's)")
    # "text" is the older name of "bar" (a bar on a terminal, one line per case otherwise)
    batch.add_arguments(p, progress=("bar", "text", "json", "none"))
    p.set_defaults(func=run)


def run(args) -> int:
    return batch.Batch(args, "synthesize").execute(lambda b: _run(args, b))


def _run(args, b: batch.Batch) -> int:
    from MedAILib.io import read_image, write_image
    from MedAILib.tasks.synthesis.bundle import find_bundle
    from MedAILib.tasks.synthesis.evaluate import score
    from MedAILib.tasks.synthesis.pipeline import synthesize
    from MedAILib.tasks.synthesis.preprocess import mask_for
    from MedAILib.tasks.synthesis.preview import preview_path, write_conversion_preview

    bundle = find_bundle(args.model)  # configs only: the network is built when the first case runs
    suffix = f"_{bundle.target.lower()}.nii.gz"
    out = Path(args.output)
    one_file = full_suffix(out).lower() in ONE_FILE_SUFFIXES and not out.is_dir()
    cases = batch.find_cases(args.inputs, 1, output_folders=[out.parent if one_file else out],
                             output_suffixes=[suffix], exclude=[out])
    if args.reference and len(args.reference) != len(cases):
        raise InputError(f"{len(args.reference)} references for {len(cases)} inputs",
                         "give exactly one --reference per input, in the same order")
    several = len(cases) > 1
    def outputs(case):
        target = batch.place(out, case, suffix, several, ONE_FILE_SUFFIXES)
        return {"output": target, "preview": None if args.no_preview else preview_path(target)}

    b.plan(cases, outputs)

    def one(case, progress):
        inp, target = str(case.inputs[0]), case.outputs["output"]
        volume = read_image(inp)
        result = synthesize(volume, bundle, progress, device=b.device(), overlap=args.overlap)
        if not result.ood.in_distribution:
            b.warn(case, result.ood.message(), kind="out_of_distribution", input=inp,
                   details=result.ood.to_dict()["outside"])
        write_image(result.volume, target)  # atomic: temp file renamed into place
        units = result.volume.metadata["units"]
        row = {"device": b.device(), "units": units, "in_distribution": result.ood.in_distribution}
        if b.json:
            events.emit(events.RESULT, case=case.name, input=inp, output=str(target), units=units,
                        in_distribution=result.ood.in_distribution)
        b.say(f"{case.name}: wrote {target} ({bundle.target}, {units})")
        reference = read_image(args.reference[case.index]) if args.reference else None
        if "preview" in case.outputs:
            write_conversion_preview(volume, result.volume, case.outputs["preview"], reference,
                                     mask_for(volume.array, bundle.cfg["source_norm"]), bundle.source, bundle.target)
            row["preview"] = str(case.outputs["preview"])
            b.say(f"{case.name}: preview {case.outputs['preview']}")
        if args.reference:
            ref_path = args.reference[case.index]
            m = score(result.volume, reference, volume, bundle.cfg["target_norm"])
            row["metrics"] = {k: float(m[k]) for k in ("mae", "psnr", "ssim")}
            if b.json:
                events.emit(events.METRICS, case=case.name, input=inp, reference=ref_path, **row["metrics"],
                            voxels=m["voxels"])
            b.say(f"{case.name}: MAE {m['mae']:.4f}  PSNR {m['psnr']:.2f} dB  SSIM {m['ssim']:.4f}  "
                  f"(inside the mask, {m['voxels']} voxels)")
        return row

    return b.process(one)
