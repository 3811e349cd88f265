"""``medai detect INPUT... --model ID -o boxes.json``: detect lesions, boxes with scores in RAS mm and voxel indices.

Each input (image file or DICOM folder) is one case. Output: a JSON (``-o boxes.json``) or CSV
(``-o boxes.csv``) table per case, or ``<case>_boxes.json|csv`` in the -o folder: label, score, RAS
centre/size/extent in mm, inclusive voxel index range and centre on the input's own grid.
``--min-score`` and ``--max-boxes`` filter the table (default: the model's own score threshold);
``--preview`` draws the top boxes on the slices through their centres; ``--reference`` (JSON with
``boxes`` holding ``voxel_min``/``voxel_max``, one per case) draws reference boxes dashed. Cases,
overwrite/resume rules, signals, report, events and exit status are those of :mod:`MedAILib.cli.batch`.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from MedAILib.cli import batch
from MedAILib.core.atomic import full_suffix
from MedAILib.core.errors import InputError, MedAIError

FORMATS = {"json": "_boxes.json", "csv": "_boxes.csv"}


def register(sub) -> None:
    p = sub.add_parser("detect", help="detect lesions (RetinaNet): boxes with scores in RAS mm and voxel indices",
                       description=__doc__.split("\n\n", 1)[1] if __doc__ else None)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image file, DICOM folder, or folder of image files")
    p.add_argument("-o", "--output", required=True, help="boxes.json / boxes.csv (one case) or a folder")
    p.add_argument("--model", required=True, help="detection model: catalogue id or bundle folder")
    p.add_argument("--format", choices=sorted(FORMATS), help="table format in a folder (default json; a -o file "
                                                              "name decides by its suffix)")
    p.add_argument("--min-score", type=batch.number(low=0, high=1), help="keep boxes scoring at least this "
                                                                          "(default: the model's threshold)")
    p.add_argument("--max-boxes", type=batch.number(low=1, integer=True), help="keep at most this many boxes")
    p.add_argument("--preview", help="PNG of the top boxes (batch: a folder)")
    p.add_argument("--reference", nargs="+", metavar="REF", help="reference boxes (JSON), one per case, drawn dashed")
    batch.add_arguments(p)
    p.add_argument("--trust", action="append", default=[], metavar="PATH", help="trust this bundle folder")
    p.set_defaults(func=run)


def run(args) -> int:
    warnings.filterwarnings("ignore", module="monai")
    return batch.Batch(args, "detect").execute(lambda b: _run(args, b))


def _run(args, b: batch.Batch) -> int:
    from MedAILib.tasks.detection.model import load_detection_model

    out = Path(args.output)
    one_file = full_suffix(out).lower() in (".json", ".csv") and not out.is_dir()
    if one_file and args.format and full_suffix(out).lower() != "." + args.format:
        raise InputError(f"-o {out.name} and --format {args.format} disagree", "give one of them")
    suffix = FORMATS[args.format or (full_suffix(out).lower().lstrip(".") if one_file else "json")]
    cases = batch.find_cases(args.inputs, 1, output_folders=[out.parent if one_file else out],
                             output_suffixes=[suffix], exclude=[out])
    if args.reference and len(args.reference) != len(cases):
        raise InputError(f"{len(args.reference)} reference files for {len(cases)} cases",
                         "give one --reference per case, in case order")
    several = len(cases) > 1
    b.plan(cases, lambda case: {"output": batch.place(out, case, suffix, several, (".json", ".csv")),
                                "preview": batch.place(args.preview, case, ".png", several)})
    model = None

    def one(case, progress):
        nonlocal model
        from MedAILib.io import read_image
        from MedAILib.tasks.detection.boxes import write_boxes
        from MedAILib.tasks.detection.pipeline import detect

        volume = read_image(case.inputs[0])
        if model is None:
            try:
                model = load_detection_model(args.model, trust_paths=args.trust, progress=progress)
            except MedAIError as e:
                raise batch.StopBatch(e) from e
        result = detect(volume, model, device=b.device(), min_score=args.min_score, max_boxes=args.max_boxes,
                        progress=progress)
        write_boxes(case.outputs["output"], result.boxes,
                    {"image": str(case.inputs[0]), "model": model.name, "device": result.device,
                     "min_score": model.score_threshold if args.min_score is None else args.min_score})
        if "preview" in case.outputs:
            from MedAILib.tasks.detection.figures import boxes_png

            refs = json.loads(Path(args.reference[case.index]).read_text(encoding="utf-8"))["boxes"] if args.reference else None
            boxes_png(volume, result.boxes, case.outputs["preview"], references=refs,
                      title=f"{case.name}: {len(result.boxes)} box(es) ({model.name})")
        top = ", ".join(f"{x.label} {x.score:.2f}" for x in result.boxes[:3])
        b.say(f"{case.name}: {case.outputs['output']} ({len(result.boxes)} box(es){': ' + top if top else ''})")
        return {"device": result.device, "boxes": len(result.boxes),
                "top_score": result.boxes[0].score if result.boxes else None}

    return b.process(one)
