"""``medai segment INPUT... -o OUT``: segment one image or a batch (folders), with a report.

Cases, output names, overwrite/resume rules, signals, the report, JSON events and exit status
(0 all done, 3 partial, 2 none done or a usage error, 130 cancelled) are those of
:mod:`MedAILib.cli.batch`, like every command that writes files. Outputs are
``<case>.seg.nrrd`` (``--format nii.gz``: ``<case>.seg.nii.gz``) in the -o folder, or the -o file
for one case.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from MedAILib.cli import batch
from MedAILib.cli.batch import input_stem as case_name  # noqa: F401 - the case name rule, for evaluators
from MedAILib.core.atomic import full_suffix
from MedAILib.core.errors import InputError, MedAIError
from MedAILib.tasks.segmentation import clinical

# --format -> suffix of the outputs in a folder; the ".seg." part tells them from images, so a
# second run over the same folder never takes them as inputs.
FORMATS = {"seg.nrrd": ".seg.nrrd", "nii.gz": ".seg.nii.gz", "dicom-seg": ".seg.dcm"}  # dicom-seg: DICOM inputs
ONE_FILE_SUFFIXES = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".dcm")  # -o naming one output file


def register(sub) -> None:
    p = sub.add_parser("segment", help="segment images with a model (files, DICOM folders, or folders of files)")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image file, DICOM folder, or folder of image files (each file = one case)")
    p.add_argument("-o", "--output", required=True,
                   help="output file (one case) or folder (batch); file names follow the inputs")
    p.add_argument("--model", help="catalogue id or bundle folder (default: the catalogue's segmentation model)")
    p.add_argument("--fast", action="store_true", help="coarser spacing, faster (models whose catalogue entry allows it)")
    p.add_argument("--structures", help="comma-separated label names to keep (default: all)")
    p.add_argument("--format", choices=sorted(FORMATS), default="seg.nrrd", help="output format (default seg.nrrd)")
    p.add_argument("--keep-largest", action="store_true", help="keep only the largest connected piece of each label")
    p.add_argument("--min-island-mm3", type=batch.number(low=0), default=0.0,
                   help="remove pieces smaller than this volume")
    p.add_argument("--preview", help="PNG preview path (batch: a folder, one PNG per case)")
    batch.add_arguments(p)
    clinical.add_arguments(p)  # --series, --surfaces, --tta, --accept-input-warnings (tasks/segmentation/clinical.py)
    p.add_argument("--trust", action="append", default=[], metavar="PATH",
                   help="trust this bundle folder (its config can run code); remembered until its configs change")
    p.add_argument("--mirror", help="base URL of a model mirror (or set MEDAI_MIRROR)")
    p.add_argument("--assume-aligned", action="store_true",
                   help="multi-input models: inputs on different grids share one world space (one session, no "
                        "motion); resample them instead of registering")
    p.set_defaults(func=run)


def collect_cases(inputs, n_inputs: int) -> list:
    """[(case name, [paths])] of ``medai segment INPUT...`` (the batch runner's case rule)."""
    return [(c.name, c.inputs) for c in batch.find_cases(inputs, n_inputs)]


def run_case(paths, bundle, out_file: Path, args, progress, preview=None, volumes=None) -> dict:
    """Segment one case; ``volumes`` are the already-read (and pre-checked) inputs when given."""
    from MedAILib.io import read_image, write_segmentation
    from MedAILib.tasks.segmentation.postprocess import label_volumes_ml
    from MedAILib.tasks.segmentation.pipeline import segment

    if volumes is None:
        volumes = [read_image(p) for p in paths]
    result = segment(volumes, bundle, device=args.device, progress=progress,
                     structures=_structures(args), keep_largest=args.keep_largest,
                     min_island_mm3=args.min_island_mm3, assume_aligned=getattr(args, "assume_aligned", False))
    progress.cancel.check()
    write_segmentation(result.labelmap, out_file)
    if preview:
        from MedAILib.io.preview import overlay_png

        overlay_png(volumes[0], preview, labelmap=result.labelmap, title=f"{out_file.name} ({bundle.name})")
    return {"device": result.device, "output": str(out_file), "preview": str(preview) if preview else None,
            "label_volumes_ml": label_volumes_ml(result.labelmap), "warnings": result.warnings}


def csv_columns(rows: list) -> list:
    """The CSV report: the common columns, then one volume column per label."""
    labels = sorted({k for r in rows for k in (r.get("label_volumes_ml") or {})})
    return batch.default_csv_columns(rows) + [
        (f"{label}_ml", lambda r, label=label: (r.get("label_volumes_ml") or {}).get(label)) for label in labels
    ] + clinical.csv_columns(rows)


def run(args) -> int:
    if args.mirror:
        import os

        os.environ["MEDAI_MIRROR"] = args.mirror
    warnings.filterwarnings("ignore", module="monai")  # MONAI deprecation chatter is not for clinicians
    sequence_args = _as_sequence_run(args)
    if sequence_args is not None:  # 4D image files: every frame segmented (tasks/sequences)
        from MedAILib.tasks.sequences.command import run as run_sequence

        return run_sequence(sequence_args)
    return batch.Batch(args, "segment", csv_columns=csv_columns).execute(lambda b: _run(args, b))


# Options of `medai segment` that `segment-sequence` has too; the others keep its defaults.
_SEQUENCE_DEFAULTS = {"frames_per_batch": 4, "temporal_smoothing": 0.0, "not_cyclic": False, "ef_label": None}


def _frames(path) -> str:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        return str(reader.GetSize()[3]) if reader.GetDimension() == 4 else "several"
    except RuntimeError:
        return "several"


def _as_sequence_run(args):
    """``args`` for `medai segment-sequence` when every input is a 4D image file (more than one
    frame), else None. A 4D label file needs ``--format nii.gz`` (or an ``-o`` ending in .nii.gz or
    .seq.nrrd); 3D and 4D inputs in one call are refused. Folders stay `segment`'s (DICOM studies)."""
    import argparse

    from MedAILib.core.errors import InputError
    from MedAILib.io.sequences import is_sequence_file

    files = [Path(p) for p in args.inputs if Path(p).is_file()]
    four_d = [p for p in files if is_sequence_file(p)]
    if not four_d:
        return None
    if len(four_d) != len(args.inputs):
        raise InputError(f"{four_d[0]} is 4D (a sequence of frames) but other inputs are not",
                         "segment 4D images on their own: medai segment CINE.nii.gz -o OUT.nii.gz --format nii.gz")
    out = str(args.output).lower()
    fmt = "seq.nrrd" if out.endswith(".seq.nrrd") else "nii.gz" if (args.format == "nii.gz" or out.endswith(".nii.gz")) else None
    if fmt is None:
        raise InputError(f"{four_d[0]} is 4D ({_frames(four_d[0])} frames): its labels would be a 4D label file, "
                         f"which --format {args.format} cannot hold",
                         "add --format nii.gz (a 4D label file; or -o NAME.seq.nrrd for a Slicer sequence), "
                         "or use medai segment-sequence for its options (temporal smoothing, ejection fraction)")
    if (getattr(args, "tta", False) or getattr(args, "series", None) or getattr(args, "surfaces", None)
            or getattr(args, "min_island_mm3", 0) or getattr(args, "fast", False)):
        raise InputError(f"{four_d[0]} is 4D: --tta, --series, --surfaces, --min-island-mm3 and --fast apply to "
                         "3D images only",
                         "leave them out, or use medai segment-sequence")
    seq = argparse.Namespace(**{k: getattr(args, k, None) for k in (
        "inputs", "output", "model", "structures", "keep_largest", "preview", "overwrite", "resume", "report",
        "progress", "device", "trust")}, format=fmt, series=None, **_SEQUENCE_DEFAULTS)
    seq.trust = seq.trust or []
    return seq


def _run(args, b: batch.Batch) -> int:
    from MedAILib.models import resolve_model

    # Everything is checked before an input is read or the model is loaded (torch + MONAI cost
    # seconds): a bad argument or input is refused at once, and a batch of bad inputs never
    # loads a model. A bundle folder is loaded first: only its metadata says what it needs.
    bundle, spec, labels = None, *_catalogue_spec(args.model)
    if spec is None:
        bundle = resolve_model(args.model, fast=args.fast, trust_paths=args.trust, progress=b.progress)
        from MedAILib.tasks.segmentation.pipeline import input_spec

        spec, labels = input_spec(bundle), [l.name for l in bundle.labels]
    _check_structures(_structures(args), labels, spec["model"])
    out = Path(args.output)
    entry = clinical.catalogue_entry(args.model, bundle)
    cases, studies = clinical.find_cases(args, spec, lambda: batch.find_cases(
        args.inputs, spec["n_inputs"], output_folders=[out.parent if _one_file(out) else out],
        output_suffixes=[FORMATS[args.format]], exclude=[out]))
    several = len(cases) > 1
    b.plan(cases, lambda case: clinical.plan_outputs(args, case, several, FORMATS, ONE_FILE_SUFFIXES))

    def one(case, progress):
        nonlocal bundle
        extra = {}
        if case.name in studies:  # a DICOM study: series chosen per model input, reason logged and reported
            volumes, extra = clinical.read_study_case(studies[case.name], spec, entry, args, progress.log)
        else:
            volumes = _read_and_check(case.inputs, spec)
        extra["warnings"] = clinical.domain_warnings(volumes, spec, entry, args)
        for w in extra["warnings"]:
            b.warn(case, w, kind="domain")
        if bundle is None:
            try:
                bundle = resolve_model(args.model, fast=args.fast, trust_paths=args.trust, progress=progress)
            except MedAIError as e:
                raise batch.StopBatch(e) from e  # the model itself cannot run: one error for the command
        row = clinical.run_case(case, bundle, volumes, args, progress, spec, extra, _structures(args), several)
        vols = ", ".join(f"{k} {v:.2f} mL" for k, v in row["label_volumes_ml"].items())
        b.say(f"{case.name}: {row['output']} (on {row['device']}; {vols})")
        return row

    return b.process(one)


def _one_file(out: Path) -> bool:
    """-o names one output file (not a folder)."""
    return full_suffix(out).lower() in ONE_FILE_SUFFIXES and not out.is_dir()


def _structures(args):
    return [s.strip() for s in args.structures.split(",") if s.strip()] if args.structures else None


def _check_structures(asked, known, model) -> None:
    """--structures names the model knows (case-insensitive, as segment() matches them), checked
    before anything is read."""
    if not asked or not known:
        return
    unknown = [s for s in asked if s.lower() not in {k.lower() for k in known}]
    if unknown:
        raise InputError(f"model {model} has no structure(s) {', '.join(unknown)}",
                         f"choose from: {', '.join(known)}")


def _catalogue_spec(model):
    """(inputs spec, label names) of a catalogue model, read from the catalogue without loading
    torch; (None, None) for a bundle folder (or anything the catalogue does not know), which is
    then loaded first."""
    from MedAILib.models.catalogue import load_catalogue

    catalogue = load_catalogue()
    if model is not None and model not in catalogue:
        return None, None
    entry = catalogue.default_for("segmentation") if model is None else catalogue.get(model)
    return entry.input_spec(), [l.name for l in entry.label_infos]


def _read_and_check(paths, spec: dict) -> list:
    """Read a case's inputs and run the model-independent checks (validation runs again, fully,
    inside segment() after multi-input alignment)."""
    from MedAILib.io import read_image
    from MedAILib.runtime.validation import check_inputs

    volumes = [read_image(p) for p in paths]
    # Inputs on different grids are aligned later by the engine, so grids are not compared here.
    check_inputs(volumes, dict(spec, aligned=False))
    return volumes
