"""``medai classify INPUT... [--mask M | --roi ...] [--explain PATH]``: class probabilities of one
image or a batch, with an optional explanation heat-map, PNG preview and report.

Exit status like ``medai segment``: 0 all cases ok, 3 some failed (partial), 2 none succeeded or a
usage error, 130 cancelled. ``--progress json`` prints JSON lines: progress, log, case_done (with
class_names, probabilities, predicted), done, error. Outputs are written atomically and never
replace existing files without ``--overwrite``.
"""

from __future__ import annotations

import csv
import json
import sys
import time
import warnings
from pathlib import Path

from MedAILib.core.atomic import atomic_output, full_suffix
from MedAILib.core.errors import Cancelled, InputError, MedAIError
from MedAILib.io import SUPPORTED_IMAGE_SUFFIXES
from MedAILib.core.progress import CancelToken, Progress, emit_json
from MedAILib.tasks.segmentation.command import EXIT_CANCELLED, EXIT_ERROR, EXIT_OK, EXIT_PARTIAL, _ScaledJsonProgress, _Signals, case_name, \
    collect_cases

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
    p.add_argument("--report", help="per-case report: .json or .csv")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps")
    p.add_argument("--progress", choices=["bar", "json", "none"], default="bar",
                   help="json: one JSON line per event on stdout (for the Slicer module)")
    p.add_argument("--trust", action="append", default=[], metavar="PATH",
                   help="trust this bundle folder (its config can run code); remembered until its configs change")
    p.set_defaults(func=run)


def parse_roi(text: str) -> list:
    try:
        values = [float(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        values = []
    if len(values) != 6:
        raise InputError(f"--roi {text!r} is not 6 numbers", "give x0,y0,z0,x1,y1,z1 in RAS millimetres")
    return values


def find_mask(mask_arg: str, name: str, batch: bool) -> Path:
    m = Path(mask_arg)
    if not m.is_dir() or (not batch and not any(m.iterdir())):
        return m
    for f in sorted(m.iterdir()):
        if f.is_file() and full_suffix(f).lower() in SUPPORTED_IMAGE_SUFFIXES and case_name(f) == name:
            return f
    raise InputError(f"no mask for case {name} in {m}", f"name the mask file like the case ({name}.nii.gz)")


def case_output(base, name: str, batch: bool, suffix: str):
    if not base:
        return None
    base = Path(base)
    if batch or base.is_dir():
        return base / f"{name}{suffix}"
    return base


def run_case(path: Path, name: str, bundle, args, progress: Progress, batch: bool) -> dict:
    from MedAILib.tasks.classification.pipeline import classify
    from MedAILib.io import read_image, read_segmentation, write_image

    t0 = time.monotonic()
    heat_path = case_output(args.explain, name, batch, ".nii.gz")
    preview = case_output(args.preview, name, batch, ".png")
    for out in (heat_path, preview):
        if out is not None and out.exists() and not args.overwrite:
            raise InputError(f"{out} already exists", "use --overwrite to replace it")
    if heat_path is not None and not batch and not str(heat_path).lower().endswith(HEAT_SUFFIXES):
        raise InputError(f"--explain {heat_path}: use a .nii.gz or .nrrd file name", "")
    volume = read_image(path)
    mask = None
    if args.mask:
        mpath = find_mask(args.mask, name, batch)
        mask = read_segmentation(mpath) if str(mpath).lower().endswith(".seg.nrrd") else read_image(mpath)
    result = classify(volume, bundle, mask=mask, roi=parse_roi(args.roi) if args.roi else None, label=args.label,
                      explain_method=args.explain_method if (args.explain or args.preview) else None,
                      device=args.device, target_layer=args.explain_layer, progress=progress)
    progress.cancel.check()
    outputs = []
    if heat_path is not None:
        heat_path.parent.mkdir(parents=True, exist_ok=True)
        write_image(result.heatmap, heat_path)
        outputs.append(str(heat_path))
    if preview is not None:
        from MedAILib.io.preview import overlay_png

        preview.parent.mkdir(parents=True, exist_ok=True)
        shown = mask.with_array((mask.array != 0).astype("float32")) if mask is not None else volume
        overlay_png(shown, preview, heatmap=result.heatmap,
                    title=f"{name}: {result.predicted} {result.probabilities[result.predicted_index]:.2f} "
                          f"({bundle.name}, {args.explain_method})")
    return {"status": "ok", "error": None, "seconds": round(time.monotonic() - t0, 3), "device": result.device,
            **result.as_dict(), "explanation": str(heat_path) if heat_path else None,
            "preview": str(preview) if preview else None, "warnings": result.warnings, "outputs": outputs}


def write_report(path, rows: list) -> None:
    path = Path(path)
    with atomic_output(path) as tmp:
        if path.suffix.lower() == ".csv":
            names = []
            for r in rows:
                for n in r.get("class_names") or []:
                    if n not in names:
                        names.append(n)
            with open(tmp, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["case", "input", "status", "error", "predicted"] + [f"p_{n}" for n in names]
                           + ["seconds", "device", "explanation"])
                for r in rows:
                    p = dict(zip(r.get("class_names") or [], r.get("probabilities") or []))
                    w.writerow([r["case"], r["input"], r["status"], r.get("error") or "", r.get("predicted") or ""]
                               + [("%.6f" % p[n]) if n in p else "" for n in names]
                               + [r.get("seconds") or "", r.get("device") or "", r.get("explanation") or ""])
        else:
            Path(tmp).write_text(json.dumps({"cases": rows}, indent=2))


def run(args) -> int:
    from MedAILib.models import resolve_model

    json_mode = args.progress == "json"
    warnings.filterwarnings("ignore", module="monai")
    warnings.filterwarnings("ignore", message=".*non-tuple sequence for multidimensional indexing.*")
    token = CancelToken()
    progress = Progress(json_stream=sys.stdout if json_mode else None, cancel=token)
    rows, outputs, failed = [], [], []
    if args.report and Path(args.report).exists() and not args.overwrite:
        raise InputError(f"{args.report} already exists", "use --overwrite to replace it")
    try:
        with _Signals(token):
            bundle = resolve_model(args.model, task="classification", trust_paths=args.trust, progress=progress)
            task = bundle.entry.task if bundle.entry is not None else None
            if task not in (None, "classification"):
                raise InputError(f"{bundle.name} is a {task} model, not a classification model",
                                 "choose a classification model (`medai models list`)")
            cases = collect_cases(args.inputs, 1)
            batch = len(cases) > 1
            for n, (name, paths) in enumerate(cases):
                row = {"case": name, "input": str(paths[0])}
                try:
                    case_progress = (_ScaledJsonProgress(n, len(cases), token, name) if json_mode
                                     else Progress(cancel=token))
                    row.update(run_case(paths[0], name, bundle, args, case_progress, batch))
                    outputs += row.pop("outputs")
                except Cancelled:
                    raise
                except MedAIError as e:
                    row.update(status="failed", error=str(e))
                    failed.append(name)
                except Exception as e:  # noqa: BLE001 - one bad case must not stop the batch
                    row.update(status="failed", error=f"{type(e).__name__}: {e}")
                    failed.append(name)
                rows.append(row)
                if json_mode:
                    emit_json(event="case_done", **{k: row.get(k) for k in
                              ("case", "status", "error", "seconds", "device", "class_names", "probabilities",
                               "predicted", "predicted_index", "multi_label", "explanation", "warnings")})
                elif row["status"] == "ok":
                    probs = ", ".join(f"{c} {p:.3f}" for c, p in zip(row["class_names"], row["probabilities"]))
                    extra = f"; heat-map {row['explanation']}" if row.get("explanation") else ""
                    print(f"{name}: {row['predicted']} ({probs}){extra}")
                    for w in row.get("warnings") or []:
                        print(f"medai: {name}: warning: {w}", file=sys.stderr)
                else:
                    print(f"medai: case {name} failed: {row['error']}", file=sys.stderr)
    except Cancelled as e:
        if json_mode:
            emit_json(event="error", message=e.message, hint="no partial output was written", cancelled=True)
        print(f"medai: {e.message}; no partial output was written", file=sys.stderr)
        return EXIT_CANCELLED
    if args.report:
        write_report(args.report, rows)
    if json_mode:
        emit_json(event="done", outputs=outputs, failed=failed)
    if not failed:
        return EXIT_OK
    return EXIT_PARTIAL if len(failed) < len(rows) else EXIT_ERROR
