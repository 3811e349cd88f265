"""What ``medai segment`` adds for clinical studies, kept out of the command itself (which only calls
these): DICOM studies as cases with a logged series choice (``--series``), the domain check against
the model's training data, per-segment statistics in the report, DICOM SEG output (``--format
dicom-seg``), surfaces (``--surfaces DIR``) and test-time augmentation (``--tta``).
"""

from __future__ import annotations

from pathlib import Path

from MedAILib.core.errors import InputError


def add_arguments(p) -> None:
    p.add_argument("--series", action="append", default=[], metavar="[INPUT=]UID|PATTERN",
                   help="DICOM studies: the series feeding a model input, by SeriesInstanceUID or a "
                        "SeriesDescription pattern (repeat per input; default: chosen from the model's input "
                        "description, with the reason in the log and report)")
    p.add_argument("--surfaces", metavar="DIR",
                   help="also write one smoothed surface per segment into DIR (batch: DIR/<case>/)")
    p.add_argument("--surface-space", choices=("RAS", "LPS"), default="LPS",
                   help="coordinate system of the surface files (default LPS, as DICOM and Slicer's STL export)")
    p.add_argument("--surface-format", choices=("stl", "obj"), default="stl", help="surface file format")
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation (the flips the model's catalogue entry allows): an uncertainty "
                        "(entropy) volume <case>.uncertainty.nii.gz next to the output, per-segment confidence "
                        "in the report")
    if "--accept-input-warnings" not in p._option_string_actions:
        p.add_argument("--accept-input-warnings", action="store_true",
                       help="run on inputs unlike the model's training data (or otherwise suspicious) "
                            "with a warning instead of refusing them")


# --- cases -------------------------------------------------------------------------------------------

def find_cases(args, spec: dict, ordinary):
    """(cases, {case name: DicomStudy}) — study cases when an input folder holds several DICOM
    series, else ``ordinary()`` (the batch runner's rule) and no studies."""
    from MedAILib.cli.batch import IMAGE_SUFFIXES
    from MedAILib.tasks.segmentation.studies import find_studies, study_cases

    if args.format == "dicom-seg":  # checked before anything is read: it needs the source instances
        files = [p for p in args.inputs if not Path(p).is_dir()]
        if files:
            raise InputError(f"--format dicom-seg needs DICOM inputs, but {files[0]} is not a DICOM folder",
                             "a DICOM SEG references the series it was computed from: give the DICOM folder, "
                             "or use --format seg.nrrd / nii.gz")
    if getattr(args, "accept_input_warnings", False):
        spec["accept_input_warnings"] = True  # the same flag downgrades runtime.validation's sanity refusals
    studies = find_studies(args.inputs, IMAGE_SUFFIXES)
    if not studies:
        if args.series:
            raise InputError("--series chooses series of DICOM studies, but no input folder holds several series",
                             "give the study folder, or drop --series")
        return ordinary(), {}
    cases, n_patients = study_cases(studies)
    return cases, {c.name: st for c, st in zip(cases, studies)}


def model_inputs(spec: dict, entry=None) -> list:
    """The model's input descriptions (catalogue ``inputs``; for a bundle folder, its input names)."""
    raw = getattr(entry, "raw", None) or {}
    if raw.get("inputs"):
        return [dict(i) for i in raw["inputs"]]
    mods = spec.get("modalities") or []
    return [{"name": n, "modality": mods[k] if k < len(mods) else ""} for k, n in enumerate(spec["input_names"])]


def read_study_case(study, spec: dict, entry, args, log) -> tuple:
    """(volumes, report fields) of a study case: series chosen (or --series), read, pre-checked."""
    from MedAILib.runtime.validation import check_inputs
    from MedAILib.tasks.segmentation.domain import domain_profile
    from MedAILib.tasks.segmentation.series_choice import parse_overrides
    from MedAILib.tasks.segmentation.studies import read_study

    volumes, records = read_study(study, model_inputs(spec, entry), profile=domain_profile(entry),
                                  overrides=parse_overrides(args.series), log=log)
    check_inputs(volumes, dict(spec, aligned=False))
    return volumes, {"study_instance_uid": study.uid, "series": records}


def domain_warnings(volumes, spec: dict, entry, args) -> list:
    from MedAILib.tasks.segmentation.domain import check_domain

    return check_domain(volumes, entry, names=[v.metadata.get("source") for v in volumes],
                        accept=bool(getattr(args, "accept_input_warnings", False)))


# --- after a case ------------------------------------------------------------------------------------

def statistics(labelmap, volumes, spec: dict) -> list:
    from MedAILib.tasks.segmentation.statistics import segment_statistics

    names = spec.get("input_names") or [f"input_{i + 1}" for i in range(len(volumes))]
    return segment_statistics(labelmap, volumes, names)


def surfaces_folder(args, case, several: bool):
    if not args.surfaces:
        return None
    return Path(args.surfaces) / case.name if several else Path(args.surfaces)


def catalogue_entry(model, bundle=None):
    """The catalogue entry of ``--model`` (None for a bundle folder outside the catalogue)."""
    if bundle is not None:
        return getattr(bundle, "entry", None)
    from MedAILib.models.catalogue import load_catalogue

    catalogue = load_catalogue()
    if model is None:
        return catalogue.default_for("segmentation")
    return catalogue.get(model) if model in catalogue else None


def run_case(case, bundle, volumes, args, progress, spec: dict, extra: dict, structures=None,
             several: bool = False) -> dict:
    """Segment one case (with ``--tta`` when asked) and write every output it asked for; the
    report row holds the series choice, warnings, per-segment statistics and confidence."""
    from MedAILib.io import write_segmentation
    from MedAILib.tasks.segmentation.postprocess import label_volumes_ml

    out_file = case.outputs["output"]
    options = dict(device=args.device, progress=progress, structures=structures, keep_largest=args.keep_largest,
                   min_island_mm3=args.min_island_mm3, assume_aligned=getattr(args, "assume_aligned", False))
    row = dict(extra)
    if getattr(args, "tta", False):
        from MedAILib.tasks.segmentation.tta import segment_with_tta

        result, uncertainty, confidence = segment_with_tta(volumes, bundle, **options)
        from MedAILib.io import write_image

        write_image(uncertainty, case.outputs["uncertainty"])
        row.update(uncertainty=str(case.outputs["uncertainty"]), segment_confidence=confidence)
    else:
        from MedAILib.tasks.segmentation.pipeline import segment

        result = segment(volumes, bundle, **options)
    progress.cancel.check()
    labelmap = result.labelmap
    if str(out_file).lower().endswith(".dcm"):
        from MedAILib.io.dicom_seg import write_dicom_seg

        write_dicom_seg(labelmap, volumes[0], out_file, model_id=bundle.name,
                        model_version=str(getattr(getattr(bundle, "entry", None), "raw", {}).get("version")
                                          or bundle.metadata.get("version", "")))
    else:
        write_segmentation(labelmap, out_file)
    if case.outputs.get("preview"):
        from MedAILib.io.preview import overlay_png

        overlay_png(volumes[0], case.outputs["preview"], labelmap=labelmap, title=f"{out_file.name} ({bundle.name})")
    folder = surfaces_folder(args, case, several)
    if folder is not None:
        from MedAILib.io.surfaces import write_surfaces

        row["surfaces"] = [str(p) for p in write_surfaces(labelmap, folder, space=args.surface_space,
                                                          fmt=args.surface_format, overwrite=args.overwrite)]
    row.update(device=result.device, output=str(out_file),
               preview=str(case.outputs["preview"]) if case.outputs.get("preview") else None,
               label_volumes_ml=label_volumes_ml(labelmap),
               warnings=list(extra.get("warnings") or []) + list(result.warnings),
               statistics=statistics(labelmap, volumes, spec))
    return row


def plan_outputs(args, case, several: bool, formats: dict, one_file_suffixes) -> dict:
    """Every file a case writes (the batch runner checks them all before anything runs)."""
    from MedAILib.cli import batch
    from MedAILib.core.atomic import full_suffix

    output = batch.place(Path(args.output), case, formats[args.format], several, one_file_suffixes)
    planned = {"output": output, "preview": batch.place(args.preview, case, ".png", several)}
    if getattr(args, "tta", False):
        stem = output.name[: len(output.name) - len(full_suffix(output))]
        stem = stem[:-4] if stem.endswith(".seg") else stem
        planned["uncertainty"] = output.parent / f"{stem}.uncertainty.nii.gz"
    return planned


def csv_columns(rows: list) -> list:
    """Extra CSV columns: series per input, statistics per label and input, confidence per label."""
    from MedAILib.tasks.segmentation.statistics import statistics_columns

    inputs = []
    for r in rows:
        for s in r.get("series") or []:
            if s["input"] not in inputs:
                inputs.append(s["input"])
    cols = []
    for name in inputs:
        def pick(row, name=name, key="series_instance_uid"):
            return next((s[key] for s in row.get("series") or [] if s["input"] == name), None)
        cols.append((f"series_{name}", pick))
        cols.append((f"series_{name}_description", lambda row, name=name: pick(row, name, "series_description")))
    labels = []
    for r in rows:
        for k in (r.get("segment_confidence") or {}):
            if k not in labels:
                labels.append(k)
    cols += [(f"{k}_confidence", lambda row, k=k: (row.get("segment_confidence") or {}).get(k)) for k in labels]
    return cols + statistics_columns(rows)
