"""``medai synthesize INPUT... -o OUT --model ID``: convert images to another modality (GAN).

Each input is converted on its own grid; a failed case is reported and the others go on.
With ``--reference`` (one per input) MAE, PSNR and SSIM inside the head mask are printed.
When an input is unlike the model's training data an out-of-distribution WARNING is printed
(and sent as a JSON ``warning`` event with ``--progress json``); the conversion still runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

from MedAILib.core.atomic import full_suffix
from MedAILib.core.errors import InputError, MedAIError
from MedAILib.io import SUPPORTED_IMAGE_SUFFIXES, read_image, write_image
from MedAILib.core.progress import Progress, emit_json


def register(sub) -> None:
    p = sub.add_parser("synthesize", help="convert images to another modality with a GAN (e.g. T2 -> FLAIR)",
                       description=__doc__.split("\n")[0])
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or DICOM folders (source contrast)")
    p.add_argument("-o", "--output", required=True,
                   help="output file (one input, e.g. out.nii.gz) or folder (<input>_<target>.nii.gz per input)")
    p.add_argument("--model", default="t2_to_flair_gan", help="model id or bundle folder (default: t2_to_flair_gan)")
    p.add_argument("--reference", nargs="+", metavar="REF", help="real target images, one per input: print MAE/PSNR/SSIM")
    p.add_argument("--progress", choices=["text", "json"], default="text", help="json: one JSON event per line")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: CUDA when available")
    p.add_argument("--overlap", type=float, default=None, help="sliding-window overlap (default: the model's)")
    p.set_defaults(func=run)


def _case_name(path: str) -> str:
    p = Path(path)
    suffix = full_suffix(p)
    return p.name[: len(p.name) - len(suffix)] if suffix else p.name


def output_paths(inputs, output, target: str) -> list:
    out = Path(output)
    if len(inputs) == 1 and full_suffix(out).lower() in SUPPORTED_IMAGE_SUFFIXES:
        return [out]
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file but {len(inputs)} inputs were given", "give an output folder")
    names = [_case_name(i) for i in inputs]
    if len(set(names)) != len(names):  # same file names in different folders: add the parent folder name
        names = [f"{Path(i).resolve().parent.name}_{n}" for i, n in zip(inputs, names)]
    return [out / f"{n}_{target.lower()}.nii.gz" for n in names]


def run(args) -> int:
    from MedAILib.tasks.synthesis.bundle import find_bundle
    from MedAILib.tasks.synthesis.evaluate import score
    from MedAILib.tasks.synthesis.pipeline import synthesize

    as_json = args.progress == "json"
    if args.reference and len(args.reference) != len(args.inputs):
        raise InputError(f"{len(args.reference)} references for {len(args.inputs)} inputs",
                         "give exactly one --reference per input, in the same order")
    bundle = find_bundle(args.model)
    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    outputs = output_paths(args.inputs, args.output, bundle.target)
    bar = None
    if not as_json and sys.stderr.isatty():  # a live bar for people; nothing in logs and pipes
        from tqdm import tqdm

        bar = tqdm(total=100, unit="%", bar_format="{l_bar}{bar}| {n:.0f}% [{elapsed}<{remaining}] {postfix}",
                   file=sys.stderr, leave=False)

    def to_bar(fraction, message, eta):
        if bar is not None and fraction is not None:
            bar.n = round(100 * fraction, 1)
            bar.set_postfix_str(message[:60], refresh=True)

    outer = Progress(callback=to_bar, json_stream=sys.stdout if as_json else None)
    n, failed, written = len(args.inputs), [], []

    def say(text: str, **event) -> None:
        if as_json:
            emit_json(**event)
        else:
            print(text, flush=True)

    for i, (inp, out) in enumerate(zip(args.inputs, outputs)):
        name = _case_name(inp)

        def cb(fraction, message, eta, i=i, name=name):
            if fraction is None:
                outer.log(f"{name}: {message}")
            else:
                outer.update((i + fraction) / n, f"{name}: {message}")

        try:
            if out.exists() and not args.overwrite:
                raise InputError(f"{out} exists", "add --overwrite to replace it, or choose another output")
            volume = read_image(inp)
            result = synthesize(volume, bundle, Progress(callback=cb, cancel=outer.cancel), device=device,
                                overlap=args.overlap)
            if not result.ood.in_distribution:
                print(f"medai: WARNING: {name}: {result.ood.message()}", file=sys.stderr, flush=True)
                if as_json:
                    emit_json(event="warning", kind="out_of_distribution", input=inp, message=result.ood.message(),
                              details=result.ood.to_dict()["outside"])
            write_image(result.volume, out)  # atomic: temp file renamed into place
            written.append(str(out))
            say(f"{name}: wrote {out} ({bundle.target}, {result.volume.metadata['units']})",
                event="result", input=inp, output=str(out), units=result.volume.metadata["units"],
                in_distribution=result.ood.in_distribution)
            if args.reference:
                ref = read_image(args.reference[i])
                m = score(result.volume, ref, volume, bundle.cfg["target_norm"])
                say(f"{name}: MAE {m['mae']:.4f}  PSNR {m['psnr']:.2f} dB  SSIM {m['ssim']:.4f}  "
                    f"(inside the head mask, {m['voxels']} voxels)",
                    event="metrics", input=inp, reference=args.reference[i],
                    **{k: float(m[k]) for k in ("mae", "psnr", "ssim")}, voxels=m["voxels"])
        except MedAIError as e:
            if e.exit_code == 130:  # cancelled: stop the batch
                raise
            failed.append(inp)
            print(f"medai: error: {name}: {e.message}" + (f" — what to do: {e.hint}" if e.hint else ""),
                  file=sys.stderr, flush=True)
            if as_json:
                emit_json(event="case_error", input=inp, message=e.message, hint=e.hint)
        except Exception as e:  # noqa: BLE001 - one bad case must not stop the batch
            failed.append(inp)
            print(f"medai: error: {name}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            if as_json:
                emit_json(event="case_error", input=inp, message=f"{type(e).__name__}: {e}", hint="")
    if bar is not None:
        bar.close()
    if as_json:
        emit_json(event="done", outputs=written, failed=failed)  # same protocol as `medai segment`
    elif n > 1:
        print(f"{n - len(failed)} of {n} converted" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0
