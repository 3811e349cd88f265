"""``medai classify INPUT... [--mask M | --roi ...] [--explain PATH]``: class probabilities of one
image or a batch, with an optional explanation heat-map, PNG preview and report.

Cases, overwrite/resume rules, signals, the report, JSON events (case_done carries class_names,
probabilities, predicted) and exit status (0/3/2/130) are those of :mod:`MedAILib.cli.batch`.
"""

from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path

from MedAILib.cli import batch
from MedAILib.core.atomic import full_suffix
from MedAILib.core.errors import InputError

HEAT_SUFFIXES = (".nii.gz", ".nii", ".nrrd")


def register(sub) -> None:
    p = sub.add_parser("classify", help="class probabilities of images (optionally inside a mask or ROI), "
                                        "with Grad-CAM/occlusion explanations")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image file, DICOM folder, or folder of image files (each file = one case)")
    p.add_argument("--model", help="catalogue id or bundle folder (default: the catalogue's classification model)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--mask", help="labelmap restricting the region (on the image's grid); batch: a folder with one "
                                  "file per case, named like the case")
    g.add_argument("--roi", help="ROI box in RAS mm: x0,y0,z0,x1,y1,z1")
    p.add_argument("--label", type=int, help="use only this label value of the mask (default: every non-zero voxel)")
    p.add_argument("--explain", metavar="PATH", help="write a heat-map volume (.nii.gz/.nrrd; batch: a folder)")
    p.add_argument("--explain-method", choices=["gradcam", "occlusion"], default="gradcam",
                   help="gradcam (fast) or occlusion sensitivity (slower)")
    p.add_argument("--explain-layer", help="Grad-CAM target layer (default: the bundle's, else the last spatial layer)")
    p.add_argument("--preview", help="PNG preview path (batch: a folder, one PNG per case)")
    p.add_argument("--clinical", metavar="NAME=VALUE,...",
                   help="clinical variables the model declares (e.g. age=63,sex=F; NA = unknown)")
    batch.add_arguments(p)
    p.add_argument("--trust", action="append", default=[], metavar="PATH",
                   help="trust this bundle folder (its config can run code); remembered until its configs change")
    p.set_defaults(func=run)


def parse_roi(text: str) -> list:
    try:
        values = [float(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        values = []
    if len(values) != 6 or not all(math.isfinite(v) for v in values):
        raise InputError(f"--roi {text!r} is not 6 numbers", "give x0,y0,z0,x1,y1,z1 in RAS millimetres")
    return values


def find_mask(mask_arg: str, name: str, several: bool) -> Path:
    m = Path(mask_arg)
    if not m.is_dir() or (not several and not any(m.iterdir())):
        return m
    for f in sorted(m.iterdir()):
        if f.is_file() and full_suffix(f).lower() in batch.IMAGE_SUFFIXES and batch.input_stem(f) == name:
            return f
    raise InputError(f"no mask for case {name} in {m}", f"name the mask file like the case ({name}.nii.gz)")


def run_case(case: batch.Case, bundle, args, progress, several: bool) -> dict:
    from MedAILib.tasks.classification.clinical import parse_clinical_arg
    from MedAILib.tasks.classification.pipeline import classify
    from MedAILib.io import read_image, read_segmentation, write_image

    heat_path, preview = case.outputs.get("explanation"), case.outputs.get("preview")
    volume = read_image(case.inputs[0])
    mask = None
    if args.mask:
        mpath = find_mask(args.mask, case.stem, several)
        mask = read_segmentation(mpath) if str(mpath).lower().endswith(".seg.nrrd") else read_image(mpath)
    result = classify(volume, bundle, mask=mask, roi=parse_roi(args.roi) if args.roi else None, label=args.label,
                      explain_method=args.explain_method if (args.explain or args.preview) else None,
                      device=args.device, target_layer=args.explain_layer, progress=progress,
                      clinical=parse_clinical_arg(args.clinical) if getattr(args, "clinical", None) else None)
    progress.cancel.check()
    if heat_path is not None:
        write_image(result.heatmap, heat_path)
    if preview is not None:
        from MedAILib.io.preview import overlay_png

        shown = mask.with_array((mask.array != 0).astype("float32")) if mask is not None else volume
        overlay_png(shown, preview, heatmap=result.heatmap,
                    title=f"{case.name}: {result.predicted} {result.probabilities[result.predicted_index]:.2f} "
                          f"({bundle.name}, {args.explain_method})")
    return {"device": result.device, **result.as_dict(), "explanation": str(heat_path) if heat_path else None,
            "preview": str(preview) if preview else None, "warnings": result.warnings}


def csv_columns(rows: list) -> list:
    """The CSV report: case, input, status, error, predicted, one probability column per class, ..."""
    names = []
    for r in rows:
        for n in r.get("class_names") or []:
            if n not in names:
                names.append(n)

    def probability(r, n):
        p = dict(zip(r.get("class_names") or [], r.get("probabilities") or []))
        return "%.6f" % p[n] if n in p else None

    return ([("case", lambda r: r["case"]), ("input", lambda r: r["input"]), ("status", lambda r: r["status"]),
             ("error", lambda r: r.get("error")), ("predicted", lambda r: r.get("predicted")),
             ("decision_threshold", lambda r: r.get("decision_threshold"))]
            + [(f"p_{n}", lambda r, n=n: probability(r, n)) for n in names]
            + [("seconds", lambda r: r.get("seconds")), ("device", lambda r: r.get("device")),
               ("explanation", lambda r: r.get("explanation"))])


def run(args) -> int:
    warnings.filterwarnings("ignore", module="monai")
    warnings.filterwarnings("ignore", message=".*non-tuple sequence for multidimensional indexing.*")
    return batch.Batch(args, "classify", csv_columns=csv_columns,
                       row_fields=lambda case: {"input": str(case.inputs[0])}).execute(lambda b: _run(args, b))


def _run(args, b: batch.Batch) -> int:
    from MedAILib.models import resolve_model

    if args.roi:
        parse_roi(args.roi)  # a bad --roi is refused before anything is read
    cases = batch.find_cases(args.inputs, 1, output_folders=[p for p in (args.explain, args.preview) if p],
                             output_suffixes=[".png"])
    several = len(cases) > 1
    explain = args.explain
    if explain and not several and not Path(explain).is_dir() and full_suffix(Path(explain)) \
            and not str(explain).lower().endswith(HEAT_SUFFIXES):
        raise InputError(f"--explain {explain}: use a .nii.gz or .nrrd file name", "")
    b.plan(cases, lambda case: {"explanation": batch.place(explain, case, ".nii.gz", several, HEAT_SUFFIXES),
                                "preview": batch.place(args.preview, case, ".png", several)})
    bundle = resolve_model(args.model, task="classification", trust_paths=args.trust, progress=b.progress)
    task = bundle.entry.task if bundle.entry is not None else None
    if task not in (None, "classification"):
        raise InputError(f"{bundle.name} is a {task} model, not a classification model",
                         "choose a classification model (`medai models list`)")

    def one(case, progress):
        row = run_case(case, bundle, args, progress, several)
        probs = ", ".join(f"{c} {p:.3f}" for c, p in zip(row["class_names"], row["probabilities"]))
        if row.get("decision_threshold") is not None:  # the bundle's operating point decides, not arg-max
            probs += f"; {row['class_names'][1]} when p >= {row['decision_threshold']:.3f}"
        extra = f"; heat-map {row['explanation']}" if row.get("explanation") else ""
        b.say(f"{case.name}: {row['predicted']} ({probs}){extra}")
        if not b.json:
            for w in row.get("warnings") or []:
                print(f"medai: {case.name}: warning: {w}", file=sys.stderr)
        return row

    return b.process(one)
