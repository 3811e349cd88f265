"""``medai segment-sequence INPUT... -o OUT --model ID``: segment every frame of 4D images or DICOM cine series.

Each input (a 4D NIfTI/NRRD/MHA file, a Slicer ``.seq.nrrd``, or a DICOM cine folder) is one case;
every frame is segmented with the model (several frames per network call, ``--frames-per-batch``),
progress is reported per frame, and the labels are written as one 4D label file: ``<case>_seg.nii.gz``
(``--format seq.nrrd``: a Slicer volume sequence, ``<case>_seg.seq.nrrd``), or the -o file for one
case. ``--temporal-smoothing SIGMA`` smooths the class probabilities along the frames (cyclic for a
cardiac cycle unless ``--not-cyclic``). The report gives each label's volume per frame and, with
``--ef-label``, the frames of largest and smallest volume and the ejection fraction
(max - min) / max. Cases, overwrite/resume rules, signals, report, events and exit status are those
of :mod:`MedAILib.cli.batch`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from MedAILib.cli import batch
from MedAILib.core.errors import InputError, MedAIError
from MedAILib.io.sequences import sequence_suffix

FORMATS = {"nii.gz": "_seg.nii.gz", "seq.nrrd": "_seg.seq.nrrd"}
ONE_FILE_SUFFIXES = (".nii.gz", ".nii", ".seq.nrrd", ".nrrd", ".mha")


def register(sub) -> None:
    p = sub.add_parser("segment-sequence", help="segment every frame of a 4D image or DICOM cine (4D label output)",
                       description=__doc__.split("\n\n", 1)[1] if __doc__ else None)
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="4D image file (.nii.gz, .seq.nrrd, ...), DICOM cine folder, or folder of 4D files")
    p.add_argument("-o", "--output", required=True, help="output 4D label file (one case) or folder")
    p.add_argument("--model", required=True, help="segmentation model: catalogue id or bundle folder")
    p.add_argument("--format", choices=sorted(FORMATS), default="nii.gz", help="output format (default nii.gz)")
    p.add_argument("--frames-per-batch", type=batch.number(low=1, high=256, integer=True), default=4,
                   help="frames sent to the network together (default 4; lower it if memory is short)")
    p.add_argument("--temporal-smoothing", type=batch.number(low=0, high=50), default=0.0, metavar="SIGMA",
                   help="Gaussian smoothing of the class probabilities along the frames, sigma in frames "
                        "(default 0: none)")
    p.add_argument("--not-cyclic", action="store_true",
                   help="the frames are not one periodic cycle (smoothing does not wrap around)")
    p.add_argument("--structures", help="comma-separated label names to keep (default: all)")
    p.add_argument("--keep-largest", action="store_true",
                   help="keep only the largest connected piece of each label in each frame")
    p.add_argument("--ef-label", metavar="NAME", help="label whose largest/smallest volume give the ejection "
                                                     "fraction (e.g. the LV blood pool)")
    p.add_argument("--series", help="DICOM: SeriesInstanceUID of the cine (default: the largest series)")
    p.add_argument("--preview", help="PNG of frames x slices with the contours (batch: a folder)")
    batch.add_arguments(p)
    p.add_argument("--trust", action="append", default=[], metavar="PATH",
                   help="trust this bundle folder (its config can run code)")
    p.set_defaults(func=run)


def run(args) -> int:
    warnings.filterwarnings("ignore", module="monai")
    return batch.Batch(args, "segment-sequence").execute(lambda b: _run(args, b))


def _structures(args):
    return [s.strip() for s in args.structures.split(",") if s.strip()] if args.structures else None


def ejection_fraction(volumes: list) -> dict:
    """Largest (end-diastolic) and smallest (end-systolic) volume of a curve and (EDV - ESV) / EDV."""
    edv, esv = max(volumes), min(volumes)
    return {"ed_frame": int(volumes.index(edv)) + 1, "es_frame": int(volumes.index(esv)) + 1,
            "edv_ml": edv, "esv_ml": esv, "ef_percent": 100.0 * (edv - esv) / edv if edv > 0 else None}


def _run(args, b: batch.Batch) -> int:
    from MedAILib.models import resolve_model

    out = Path(args.output)
    one_file = sequence_suffix(out) in ONE_FILE_SUFFIXES and not out.is_dir()
    suffix = FORMATS[args.format]
    cases = batch.find_cases(args.inputs, 1, output_folders=[out.parent if one_file else out],
                             output_suffixes=[suffix], exclude=[out])
    several = len(cases) > 1
    b.plan(cases, lambda case: {"output": batch.place(out, case, suffix, several, ONE_FILE_SUFFIXES),
                                "preview": batch.place(args.preview, case, ".png", several)})
    bundle = None

    def one(case, progress):
        nonlocal bundle
        from MedAILib.io.sequences import read_sequence, write_sequence
        from MedAILib.tasks.sequences.pipeline import segment_sequence

        seq = read_sequence(case.inputs[0], series_uid=args.series)
        if bundle is None:
            try:
                bundle = resolve_model(args.model, trust_paths=args.trust, progress=progress)
            except MedAIError as e:
                raise batch.StopBatch(e) from e
        if args.ef_label and args.ef_label.lower() not in {l.name.lower() for l in bundle.labels}:
            raise batch.StopBatch(InputError(f"model {bundle.name} has no label {args.ef_label}",
                                             f"choose from: {', '.join(l.name for l in bundle.labels)}"))
        progress.log(f"{seq.n_frames} frames of {' x '.join(map(str, seq.frames[0].size_ijk))} voxels")
        result = segment_sequence(seq, bundle, device=b.device(), frames_per_batch=args.frames_per_batch,
                                  temporal_sigma=args.temporal_smoothing, cyclic=not args.not_cyclic,
                                  structures=_structures(args), keep_largest=args.keep_largest, progress=progress)
        progress.cancel.check()
        write_sequence(result.labels, case.outputs["output"])
        row = {"device": result.device, "frames": seq.n_frames, "index_name": seq.index_name,
               "index_unit": seq.index_unit, "index_values": [float(v) for v in seq.index_values],
               "label_volumes_ml": result.volumes_ml, "warnings": result.warnings}
        line = f"{case.name}: {case.outputs['output']} ({seq.n_frames} frames, on {result.device})"
        if args.ef_label:
            name = next(l.name for l in bundle.labels if l.name.lower() == args.ef_label.lower())
            ef = ejection_fraction(result.volumes_ml[name])
            row["ejection"] = dict(ef, label=name)
            line += (f"; {name}: EDV {ef['edv_ml']:.1f} mL (frame {ef['ed_frame']}), ESV {ef['esv_ml']:.1f} mL "
                     f"(frame {ef['es_frame']}), EF {ef['ef_percent']:.1f}%")
        if "preview" in case.outputs:
            from MedAILib.tasks.sequences.figures import cine_contours_png

            cine_contours_png(seq, result.labels, case.outputs["preview"], title=f"{case.name} ({bundle.name})")
        b.say(line)
        return row

    return b.process(one)
