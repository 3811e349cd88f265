"""``medai segment INPUT... -o OUT``: segment one image or a batch (folders), with a report.

Exit status: 0 every case succeeded, 3 some failed (partial), 2 none succeeded or a usage error,
130 cancelled. Outputs are written atomically and never overwrite existing files without
``--overwrite``. ``--progress json`` prints one JSON line per event (the Slicer Logic's protocol):
progress, log, case_done, done, error.
"""

from __future__ import annotations

import csv
import json
import signal
import sys
import time
import warnings
from pathlib import Path

from MedAILib.core.atomic import atomic_output, full_suffix
from MedAILib.core.errors import Cancelled, InputError, MedAIError
from MedAILib.io import SUPPORTED_IMAGE_SUFFIXES
from MedAILib.core.progress import CancelToken, Progress, emit_json

FORMATS = {"seg.nrrd": ".seg.nrrd", "nii.gz": ".nii.gz"}
EXIT_OK, EXIT_ERROR, EXIT_PARTIAL, EXIT_CANCELLED = 0, 2, 3, 130


def register(sub) -> None:
    p = sub.add_parser("segment", help="segment images with a model (files, DICOM folders, or folders of files)")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image file, DICOM folder, or folder of image files (each file = one case)")
    p.add_argument("-o", "--output", required=True,
                   help="output file (one case) or folder (batch); file names follow the inputs")
    p.add_argument("--model", help="catalogue id or bundle folder (default: the catalogue's segmentation model)")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps")
    p.add_argument("--fast", action="store_true", help="coarser spacing, faster (models whose catalogue entry allows it)")
    p.add_argument("--structures", help="comma-separated label names to keep (default: all)")
    p.add_argument("--format", choices=sorted(FORMATS), default="seg.nrrd", help="output format (default seg.nrrd)")
    p.add_argument("--keep-largest", action="store_true", help="keep only the largest connected piece of each label")
    p.add_argument("--min-island-mm3", type=float, default=0.0, help="remove pieces smaller than this volume")
    p.add_argument("--preview", help="PNG preview path (batch: a folder, one PNG per case)")
    p.add_argument("--report", help="per-case report: .json or .csv")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--progress", choices=["bar", "json", "none"], default="bar",
                   help="json: one JSON line per event on stdout (for the Slicer module)")
    p.add_argument("--trust", action="append", default=[], metavar="PATH",
                   help="trust this bundle folder (its config can run code); remembered until its configs change")
    p.add_argument("--mirror", help="base URL of a model mirror (or set MEDAI_MIRROR)")
    p.add_argument("--assume-aligned", action="store_true",
                   help="multi-input models: inputs on different grids share one world space (one session, no "
                        "motion); resample them instead of registering")
    p.set_defaults(func=run)


def collect_cases(inputs, n_inputs: int) -> list:
    """[(case name, [paths])]: a folder of image files gives one case per file; a DICOM folder is one
    case; a multi-input model takes its inputs in order as one case."""
    paths = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith(".")
                           and full_suffix(f).lower() in SUPPORTED_IMAGE_SUFFIXES)
            paths += files if files else [p]
        else:
            paths.append(p)
    if n_inputs > 1:
        if len(paths) % n_inputs:
            raise InputError(f"the model needs {n_inputs} images per case but {len(paths)} were given",
                             "give the inputs of each case in the model's input order")
        return [(case_name(group[0]), group) for group in
                (paths[i:i + n_inputs] for i in range(0, len(paths), n_inputs))]
    return [(case_name(p), [p]) for p in paths]


def case_name(path: Path) -> str:
    suffix = full_suffix(path)
    return path.name[: len(path.name) - len(suffix)] if suffix and path.is_file() else path.name


def output_path(out: Path, name: str, fmt: str, batch: bool) -> Path:
    suffix = FORMATS[fmt]
    if not batch and full_suffix(out).lower() in (".seg.nrrd", ".nii.gz", ".nii", ".nrrd"):
        return out
    return out / f"{name}{suffix}"


def run_case(paths, bundle, out_file: Path, args, progress: Progress, preview=None, volumes=None) -> dict:
    """Segment one case; ``volumes`` are the already-read (and pre-checked) inputs when given."""
    from MedAILib.io import read_image, write_segmentation
    from MedAILib.tasks.segmentation.postprocess import label_volumes_ml
    from MedAILib.tasks.segmentation.pipeline import segment

    t0 = time.monotonic()
    if volumes is None:
        volumes = [read_image(p) for p in paths]
    result = segment(volumes, bundle, device=args.device, progress=progress,
                     structures=[s.strip() for s in args.structures.split(",")] if args.structures else None,
                     keep_largest=args.keep_largest, min_island_mm3=args.min_island_mm3,
                     assume_aligned=getattr(args, "assume_aligned", False))
    progress.cancel.check()
    write_segmentation(result.labelmap, out_file)
    if preview:
        from MedAILib.io.preview import overlay_png

        overlay_png(volumes[0], preview, labelmap=result.labelmap, title=f"{out_file.name} ({bundle.name})")
    return {"status": "ok", "error": None, "seconds": round(time.monotonic() - t0, 3), "device": result.device,
            "output": str(out_file), "preview": str(preview) if preview else None,
            "label_volumes_ml": label_volumes_ml(result.labelmap), "warnings": result.warnings}


def write_report(path, rows: list) -> None:
    path = Path(path)
    with atomic_output(path) as tmp:
        if path.suffix.lower() == ".csv":
            labels = sorted({k for r in rows for k in (r.get("label_volumes_ml") or {})})
            with open(tmp, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["case", "inputs", "status", "error", "seconds", "device", "output"]
                           + [f"{l}_ml" for l in labels])
                for r in rows:
                    vols = r.get("label_volumes_ml") or {}
                    w.writerow([r["case"], ";".join(r["inputs"]), r["status"], r.get("error") or "", r.get("seconds"),
                                r.get("device") or "", r.get("output") or ""] + [vols.get(l, "") for l in labels])
        else:
            Path(tmp).write_text(json.dumps({"cases": rows}, indent=2))


class _Signals:
    """SIGTERM/SIGINT cancel the running case: the exception unwinds through atomic writers, so no
    partial output is left under a final name."""

    def __init__(self, token: CancelToken):
        self.token, self.saved = token, {}

    def _handler(self, signum, frame):
        self.token.cancel()
        raise Cancelled(f"cancelled by signal {signal.Signals(signum).name}")

    def __enter__(self):
        for s in (signal.SIGTERM, signal.SIGINT):
            try:
                self.saved[s] = signal.signal(s, self._handler)
            except ValueError:  # not the main thread (e.g. called from a test thread)
                pass
        return self

    def __exit__(self, *exc):
        for s, h in self.saved.items():
            signal.signal(s, h)


def run(args) -> int:
    from MedAILib.models import resolve_model

    json_mode = args.progress == "json"
    if args.mirror:
        import os

        os.environ["MEDAI_MIRROR"] = args.mirror
    warnings.filterwarnings("ignore", module="monai")  # MONAI deprecation chatter is not for clinicians
    token = CancelToken()
    bar = None
    if args.progress == "bar":
        from tqdm import tqdm

        bar = tqdm(total=100, unit="%", bar_format="{l_bar}{bar}| {n:.0f}% [{elapsed}<{remaining}] {postfix}",
                   file=sys.stderr)

        def cb(fraction, message, eta):
            if fraction is None:
                bar.write(f"medai: {message}")
                return
            bar.n = round(100 * fraction, 1)
            bar.set_postfix_str(message[:60])
            bar.refresh()
    else:
        cb = None
    progress = Progress(callback=cb, json_stream=sys.stdout if json_mode else None, cancel=token)
    rows, outputs, failed = [], [], []
    try:
        with _Signals(token):
            # Inputs are read and checked before the model is loaded (torch + MONAI cost seconds), so
            # a bad input is refused at once and a batch of bad inputs never loads a model.
            bundle, spec = None, _catalogue_spec(args.model)
            if spec is None:  # a bundle folder: its metadata decides what it needs
                bundle = resolve_model(args.model, fast=args.fast, trust_paths=args.trust, progress=progress)
                from MedAILib.tasks.segmentation.pipeline import input_spec

                spec = input_spec(bundle)
            cases = collect_cases(args.inputs, spec["n_inputs"])
            out = Path(args.output)
            batch = len(cases) > 1
            if batch and full_suffix(out).lower() in (".seg.nrrd", ".nii.gz"):
                raise InputError(f"{len(cases)} cases but the output {out} is one file",
                                 "give an output folder for a batch")
            for n, (name, paths) in enumerate(cases):
                out_file = output_path(out, name, args.format, batch)
                preview = None
                if args.preview:
                    preview = Path(args.preview) / f"{name}.png" if batch else Path(args.preview)
                row = {"case": name, "inputs": [str(p) for p in paths]}
                progress.stage(n / len(cases), (n + 1) / len(cases))
                try:
                    if out_file.exists() and not args.overwrite:
                        raise InputError(f"{out_file} already exists", "use --overwrite to replace it, or another -o")
                    if preview is not None and preview.exists() and not args.overwrite:
                        raise InputError(f"{preview} already exists", "use --overwrite to replace it")
                    volumes = _read_and_check(paths, spec)
                    if bundle is None:
                        try:
                            bundle = resolve_model(args.model, fast=args.fast, trust_paths=args.trust,
                                                   progress=progress)
                        except MedAIError as e:
                            raise _ModelUnavailable(e) from e
                    case_progress = Progress(
                        callback=(lambda f, m, e, n=n: cb(None if f is None else (n + f) / len(cases), m, e)) if cb else None,
                        json_stream=None, cancel=token)
                    if json_mode:
                        case_progress = _ScaledJsonProgress(n, len(cases), token, name)
                    row.update(run_case(paths, bundle, out_file, args, case_progress, preview, volumes=volumes))
                    outputs.append(str(out_file))
                except (Cancelled, _ModelUnavailable):
                    raise
                except MedAIError as e:
                    row.update(status="failed", error=str(e), seconds=None, device=None, output=None)
                    failed.append(name)
                except Exception as e:  # noqa: BLE001 - one bad case must not stop the batch
                    row.update(status="failed", error=f"{type(e).__name__}: {e}", seconds=None, device=None, output=None)
                    failed.append(name)
                rows.append(row)
                if json_mode:
                    emit_json(event="case_done", **{k: row.get(k) for k in
                              ("case", "status", "error", "seconds", "device", "output", "label_volumes_ml")})
                elif row["status"] != "ok":
                    print(f"medai: case {name} failed: {row['error']}", file=sys.stderr)
    except _ModelUnavailable as e:
        raise e.error from None  # the model itself cannot run: one error for the whole command
    except Cancelled as e:
        if json_mode:
            emit_json(event="error", message=e.message, hint="no partial output was written", cancelled=True)
        print(f"medai: {e.message}; no partial output was written", file=sys.stderr)
        return EXIT_CANCELLED
    finally:
        if bar is not None:
            bar.close()
    if args.report:
        write_report(args.report, rows)
    if json_mode:
        emit_json(event="done", outputs=outputs, failed=failed)
    else:
        for r in rows:
            if r["status"] == "ok":
                vols = ", ".join(f"{k} {v:.2f} mL" for k, v in r["label_volumes_ml"].items())
                print(f"{r['case']}: {r['output']} ({r['seconds']:.1f} s on {r['device']}; {vols})")
    if not failed:
        return EXIT_OK
    return EXIT_PARTIAL if outputs else EXIT_ERROR


class _ModelUnavailable(Exception):
    """The model could not be loaded (untrusted, missing, corrupt): stops the batch, unlike a bad case."""

    def __init__(self, error: MedAIError):
        super().__init__(str(error))
        self.error = error


def _catalogue_spec(model):
    """The inputs a catalogue model needs, read from the catalogue without loading torch; None for a
    bundle folder (or anything the catalogue does not know), which is then loaded first."""
    from MedAILib.models.catalogue import load_catalogue

    catalogue = load_catalogue()
    if model is not None and model not in catalogue:
        return None
    entry = catalogue.default_for("segmentation") if model is None else catalogue.get(model)
    return entry.input_spec()


def _read_and_check(paths, spec: dict) -> list:
    """Read a case's inputs and run the model-independent checks (validation runs again, fully,
    inside segment() after multi-input alignment)."""
    from MedAILib.io import read_image
    from MedAILib.runtime.validation import check_inputs

    volumes = [read_image(p) for p in paths]
    # Inputs on different grids are aligned later by the engine, so grids are not compared here.
    check_inputs(volumes, dict(spec, aligned=False))
    return volumes


class _ScaledJsonProgress(Progress):
    """JSON progress for one case of a batch: fraction over the whole batch, case name in the message."""

    def __init__(self, index, total, token, name):
        super().__init__(json_stream=sys.stdout, cancel=token)
        self._index, self._total, self._name = index, total, name

    def update(self, fraction, message=""):
        self.cancel.check()
        local = min(1.0, max(0.0, self._stage_start + self._stage_span * float(fraction)))
        overall = (self._index + local) / self._total
        elapsed = time.monotonic() - self._t0
        eta = elapsed * (1.0 - local) / local if local > 1e-3 else None
        emit_json(self.json_stream, event="progress", fraction=round(overall, 4), message=f"{self._name}: {message}",
                  eta_s=None if eta is None else round(eta, 1), case=self._name)
