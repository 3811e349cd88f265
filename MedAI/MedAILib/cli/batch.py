"""The one batch runner of every ``medai`` command that writes files.

A command describes its cases and what one case writes; this module decides, once for all of them:

- cases: each image file, each DICOM folder, each image file of a folder (multi-input models take
  their inputs in order); outputs of the command found in its own output folder and hidden files
  (``.NAME.partial-XXXX`` temporaries) are never taken as inputs;
- output names: ``<case><suffix>``; cases whose names would clash (``case.nii.gz``, ``case.nrrd``)
  get their input's suffix (``case_nii_gz``, ``case_nrrd``), then their folder's name
  (``a_case``), then a number (:func:`unique_names`);
- before the first case is read: no output or report may be an input (or inside an input DICOM
  folder), output folders must be writable, no existing file is replaced without ``--overwrite``
  (``--resume`` skips cases whose complete outputs exist), and a lock stops a second run writing
  the same outputs;
- while it runs: JSON events (:mod:`MedAILib.core.events`) or a line per case (``case i/N``, time
  left), the report (.json/.csv) rewritten after every case and marked running/partial/cancelled,
  SIGTERM/SIGINT stop the case in progress (atomic writers leave nothing) and the report says so;
- exit status: 0 every case done (or skipped), 3 some failed, 2 none done or a usage error,
  130 cancelled.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import json
import math
import os
import re
import signal
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from MedAILib.core import events
from MedAILib.core.atomic import atomic_output, full_suffix, is_complete
from MedAILib.core.errors import Cancelled, InputError, MedAIError, OutputError
from MedAILib.core.progress import CancelToken, Progress

EXIT_OK, EXIT_ERROR, EXIT_PARTIAL, EXIT_CANCELLED = 0, 2, 3, 130

DEVICE_HELP = "auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps"
_DEVICE = re.compile(r"(auto|cpu|mps|cuda(:\d+)?)", re.IGNORECASE)

# Image formats a folder of cases is searched for (io.images.SUPPORTED_IMAGE_SUFFIXES, without
# importing SimpleITK here).
IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".seg.nrrd")


# --- arguments ------------------------------------------------------------------------------------

def add_arguments(p, *, report: bool = True, resume: bool = True, device: bool = True,
                  progress=("bar", "json", "none"), progress_default: Optional[str] = "bar") -> None:
    """The options every file-writing command shares, with the same meaning everywhere."""
    p.add_argument("--overwrite", action="store_true", help="replace existing output files (and the report)")
    if resume:
        p.add_argument("--resume", action="store_true",
                       help="skip cases whose complete outputs already exist (after an interrupted batch)")
    if report:
        p.add_argument("--report", help="per-case report: .json or .csv (rewritten after every case)")
    if progress:
        p.add_argument("--progress", choices=list(progress), default=progress_default,
                       help="json: one JSON event per line on stdout (for the Slicer modules; docs/events.md)")
    if device:
        p.add_argument("--device", type=device_name, default="auto", help=DEVICE_HELP)


def device_name(text: str) -> str:
    """argparse type: a device name (checked for existence only when the model runs)."""
    if not _DEVICE.fullmatch(text.strip()):
        raise argparse.ArgumentTypeError(f"unknown device {text!r}: use {DEVICE_HELP}")
    return text.strip().lower()


def number(low: Optional[float] = None, high: Optional[float] = None, integer: bool = False):
    """argparse type: a finite number in [low, high] (``nan``/``inf`` are refused before anything runs)."""

    def parse(text: str):
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if integer else 'a number'}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if (low is not None and value < low) or (high is not None and value > high):
            span = f"between {low:g} and {high:g}" if low is not None and high is not None else \
                (f"at least {low:g}" if low is not None else f"at most {high:g}")
            raise argparse.ArgumentTypeError(f"{text} is out of range: give a value {span}")
        return value

    parse.__name__ = "integer" if integer else "number"  # argparse names the type in its messages
    return parse


def choose_device(name: str) -> str:
    """The torch device a run uses for ``--device`` (``auto``: CUDA, then MPS, then CPU)."""
    from MedAILib.runtime.device import choose_device as choose

    return str(choose(name))


# --- cases ----------------------------------------------------------------------------------------

@dataclass
class Case:
    index: int                     # 0-based position in the batch
    name: str                      # unique in the batch: outputs and report rows are named after it
    inputs: list                   # Paths, in the model's input order
    stem: str = ""                 # the first input's own name (masks and references are matched by it)
    outputs: dict = field(default_factory=dict)  # role -> Path, what the case writes
    skipped: bool = False          # --resume: its complete outputs exist


def input_stem(path: Path) -> str:
    """``scan.nii.gz`` -> ``scan``; a DICOM folder -> its name."""
    suffix = full_suffix(path)
    known = suffix.lower() in IMAGE_SUFFIXES or suffix.lower() == ".dcm"
    return path.name[: len(path.name) - len(suffix)] if suffix and known and not path.is_dir() else path.name


def unique_names(paths: list) -> list:
    """Case names from input paths, distinct within the batch and the same on every run: a clash
    is settled by the input's suffix (``case_nrrd``), else its folder (``a_case``), else both,
    else a number (``case_2``)."""
    names = [input_stem(p) for p in paths]

    def by_suffix(p, n):
        tag = full_suffix(p).lstrip(".").replace(".", "_") if not p.is_dir() else ""
        return f"{n}_{tag}" if tag else n

    def by_folder(p, n):
        return f"{p.resolve().parent.name}_{n}"

    groups = defaultdict(list)
    for i, n in enumerate(names):
        groups[n].append(i)
    for n, members in groups.items():
        if len(members) < 2:
            continue
        for rule in (by_suffix, by_folder, lambda p, n: by_suffix(p, by_folder(p, n))):
            tried = [rule(paths[i], n) for i in members]
            if len(set(tried)) == len(tried):
                break
        for i, t in zip(members, tried):
            names[i] = t
    seen, counts = Counter(), Counter(names)
    for i, n in enumerate(names):  # still the same (or clashing with another case's own name)
        if counts[n] > 1:
            seen[n] += 1
            if seen[n] > 1:
                k = seen[n]
                while f"{n}_{k}" in counts:
                    k += 1
                names[i] = f"{n}_{k}"
                counts[names[i]] += 1
    return names


def find_cases(inputs, n_inputs: int = 1, output_folders=(), output_suffixes=(), exclude=()) -> list:
    """The cases of a command: one per image file, DICOM folder, or image file of a folder.

    In a folder that is also an output folder of this run (``output_folders``), files ending with
    one of ``output_suffixes`` are outputs of this command, never inputs; ``exclude`` (the report,
    a single output file) is never an input either. Hidden files are skipped everywhere.
    """
    out_dirs = {_resolved(d) for d in output_folders}
    excluded = {_resolved(p) for p in exclude}
    suffixes = tuple(s.lower() for s in output_suffixes)
    paths, ignored = [], []
    for raw in inputs:
        p = Path(raw)
        if not p.is_dir():
            paths.append(p)
            continue
        in_output = _resolved(p) in out_dirs
        files, own = [], []
        for f in sorted(p.iterdir()):
            if not f.is_file() or f.name.startswith(".") or full_suffix(f).lower() not in IMAGE_SUFFIXES:
                continue
            if _resolved(f) in excluded or (in_output and suffixes and f.name.lower().endswith(suffixes)):
                own.append(f)
            else:
                files.append(f)
        ignored += own
        if files:
            paths += files
        elif not own:
            paths.append(p)  # no image files: a DICOM folder, one case
    if not paths:
        shown = ", ".join(str(f) for f in ignored[:3])
        raise InputError(f"no input images: {', '.join(map(str, inputs))} holds only outputs of this command "
                         f"({shown})", "give the folder of the original images")
    if n_inputs > 1:
        if len(paths) % n_inputs:
            raise InputError(f"the model needs {n_inputs} images per case but {len(paths)} were given",
                             "give the inputs of each case in the model's input order")
        groups = [paths[i:i + n_inputs] for i in range(0, len(paths), n_inputs)]
    else:
        groups = [[p] for p in paths]
    names = unique_names([g[0] for g in groups])
    return [Case(i, name, group, input_stem(group[0])) for i, (name, group) in enumerate(zip(names, groups))]


def place(base, case: Case, suffix: str, batch: bool, file_suffixes=()) -> Optional[Path]:
    """Where ``case`` writes an output given on the command line as ``base``: ``base`` itself for
    one case when it has a file suffix (``file_suffixes``, or ``suffix``'s), else
    ``base/<case name><suffix>``. None when ``base`` is None (an output that was not asked for)."""
    if base is None or base == "":
        return None
    base = Path(base)
    suffixes = tuple(s.lower() for s in (file_suffixes or (suffix,)))
    if not batch and full_suffix(base).lower() in suffixes and not base.is_dir():
        return base
    if batch and full_suffix(base).lower() in suffixes and not base.is_dir():
        raise InputError(f"{base} names one file but there are several cases", "give a folder for a batch")
    return base / f"{case.name}{suffix}"


def _resolved(p) -> Path:
    try:
        return Path(p).expanduser().resolve()
    except OSError:
        return Path(os.path.abspath(p))


# --- the runner -----------------------------------------------------------------------------------

class StopBatch(Exception):
    """Raised by a case function when the whole command cannot go on (e.g. the model cannot be
    loaded): unlike a bad case, it stops the batch; the report says so and the error is shown."""

    def __init__(self, error: MedAIError):
        super().__init__(str(error))
        self.error = error


class Batch:
    """One command's run: ``Batch(args, "segment").execute(body)``; ``body(batch)`` finds the cases,
    calls :meth:`plan` (all checks, nothing read yet) and returns :meth:`process` (run each case)."""

    def __init__(self, args, command: str, csv_columns: Optional[Callable] = None, row_fields: Optional[Callable] = None):
        self.args, self.command = args, command
        mode = getattr(args, "progress", None)
        self.json = mode == "json"
        self.quiet = mode == "none"
        self.overwrite = bool(getattr(args, "overwrite", False))
        self.resume = bool(getattr(args, "resume", False))
        report = getattr(args, "report", None)
        self.report = Path(report) if report else None
        self.csv_columns = csv_columns or default_csv_columns
        self.row_fields = row_fields  # case -> extra fields of its report row
        self.token = CancelToken()
        self.cases: list = []
        self.rows: dict = {}
        self.status = events.RUNNING
        self.error: Optional[str] = None
        self._bar = None
        self._locks: list = []
        self._planned = False
        self._started = time.time()
        self._t_first: Optional[float] = None
        self._ran = 0
        self._device: Optional[str] = None
        self.progress = Progress(callback=None if self.json else self._human_progress,
                                 json_stream=sys.stdout if self.json else None, cancel=self.token)

    # -- life cycle --
    def execute(self, body: Callable) -> int:
        """Run ``body(self)`` with signal handling; a cancel gives exit 130 and a report marked cancelled."""
        with _Signals(self.token):
            try:
                return int(body(self) or 0)
            except Cancelled as e:
                self._stop(events.CANCELLED, e.message)
                note = f"; the report {self.report} lists what was done" if self._planned and self.report else ""
                if self.json:
                    events.emit(events.ERROR, message=e.message, hint="no partial output was written" + note,
                                cancelled=True)
                self._print(f"medai: {e.message}; no partial output was written{note}", json_too=True)
                return EXIT_CANCELLED
            except StopBatch as e:
                self._stop(events.NOTHING_DONE, str(e.error))
                raise e.error from None
            except BaseException as e:
                self._stop(events.NOTHING_DONE, str(e) if isinstance(e, MedAIError) else f"{type(e).__name__}: {e}")
                raise
            finally:
                if self._bar is not None:
                    self._bar.close()
                for lock in self._locks:
                    lock.release()

    def device(self) -> str:
        if self._device is None:
            self._device = choose_device(getattr(self.args, "device", "auto"))
        return self._device

    def plan(self, cases: list, outputs: Callable) -> None:
        """Decide every case's outputs (``outputs(case) -> {role: path or None}``) and check them all
        before any input is read: not an input, writable, not existing (or --overwrite/--resume),
        not claimed by another run. Then write the first report and send ``start``."""
        self.cases = cases
        for case in cases:
            case.outputs = {role: Path(p) for role, p in outputs(case).items() if p is not None}
        self._check_paths()
        self._check_existing()
        for target in self._lock_targets():
            self._locks.append(_Lock.acquire(target))
        for case in cases:
            row = {"case": case.name, "inputs": [str(p) for p in case.inputs]}
            row.update(self.row_fields(case) if self.row_fields else {})
            row.update(status=events.PENDING, error=None, output=None)
            self.rows[case.name] = row
        self._planned = True
        self._write_report()
        if self.json:  # the run's first progress event says what the run is
            events.emit(events.PROGRESS, fraction=0.0, message=f"{self.command}: {len(cases)} case(s)", eta_s=None,
                        command=self.command, cases=len(cases), report=str(self.report) if self.report else None)
        skipped = sum(c.skipped for c in cases)
        if len(cases) > 1 and not self.json:
            self._print(f"medai: {self.command}: {len(cases)} cases" + (f", {skipped} already done (--resume)"
                                                                          if skipped else ""))
        if not self.json and not self.quiet and sys.stderr.isatty():  # a live bar for people, not for logs
            from tqdm import tqdm

            self._bar = tqdm(total=100, unit="%", file=sys.stderr, leave=False,
                             bar_format="{l_bar}{bar}| {n:.0f}% [{elapsed}<{remaining}] {postfix}")

    def process(self, run_case: Callable) -> int:
        """Run ``run_case(case, progress) -> row fields`` for each planned case; a failed case is
        reported and the others go on. Returns the exit status."""
        if getattr(self.args, "cluster", None):  # --cluster: the cases on Dask workers (cli/cluster.py)
            from MedAILib.cli.cluster import process_on_cluster

            return process_on_cluster(self)
        if getattr(self.args, "server", None):  # --server: each case runs there, the rest stays here
            from MedAILib.client.command import remote_case_runner

            run_case = remote_case_runner(self)
        total = len(self.cases)
        for case in self.cases:
            row = self.rows[case.name]
            if self.json:
                events.emit(events.CASE_START, case=case.name, index=case.index + 1, total=total,
                            inputs=row["inputs"])
            if case.skipped:
                written = [str(p) for p in case.outputs.values()]
                row.update(status=events.SKIPPED, error=None, output=written[0] if written else None,
                           outputs=written, reason="complete outputs already existed (--resume)")
                self._case_done(case, row)
                continue
            t0 = time.monotonic()
            self._t_first = self._t_first or t0
            try:
                row.update(run_case(case, self.progress.for_case(case.index, total, case.name)) or {})
                written = [str(p) for p in case.outputs.values() if p.is_file()]
                row.update(status=events.OK, error=None)
                row.setdefault("output", written[0] if written else None)
                row["outputs"] = written
            except (Cancelled, StopBatch):
                row.update(status=events.NOT_RUN, error="cancelled before this case finished")
                raise
            except MedAIError as e:
                row.update(status=events.FAILED, error=e.message, hint=e.hint, output=None, outputs=[])
            except Exception as e:  # noqa: BLE001 - one bad case must not stop the batch
                row.update(status=events.FAILED, error=f"{type(e).__name__}: {e}", hint="", output=None, outputs=[])
            row.setdefault("seconds", round(time.monotonic() - t0, 3))
            self._ran += 1
            self._case_done(case, row)
        return self._end()

    def warn(self, case: Case, message: str, kind: str = "input", **details) -> None:
        """A warning about one case: a ``warning`` event, or a line on stderr."""
        if self.json:
            events.emit(events.WARNING, kind=kind, case=case.name, message=message, **details)
        self._print(f"medai: WARNING: {case.name}: {message}", json_too=True)

    def say(self, text: str) -> None:
        """A result line for people (stdout); nothing in JSON mode (the events carry it)."""
        if not self.json:
            if self._bar is not None:
                self._bar.write(text, file=sys.stdout)
            else:
                print(text, flush=True)

    # -- checks --
    def _inputs(self) -> tuple:
        files, folders = set(), set()
        for case in self.cases:
            for p in case.inputs:
                (folders if p.is_dir() else files).add(_resolved(p))
        return files, folders

    def _check_paths(self) -> None:
        files, folders = self._inputs()
        planned = [(case, p) for case in self.cases for p in case.outputs.values()]
        named = [p for _, p in planned] + ([self.report] if self.report else [])
        seen = {}
        for p in named:
            r = _resolved(p)
            if r in files or any(_same_file(p, f) for f in files if p.exists()):
                what = "report" if p is self.report else "output"
                raise InputError(f"the {what} {p} is an input of this run: it would be replaced",
                                 f"choose another {'--report' if what == 'report' else '-o'} path")
            inside = next((d for d in folders if d in r.parents), None)
            if inside is not None:
                raise InputError(f"{p} would be written inside the input DICOM folder {inside}",
                                 "write outputs and reports outside the input folders")
            if r in seen:
                raise InputError(f"two outputs of this run would be written to {p}",
                                 "give each output (and the report) its own name")
            seen[r] = p
            _check_writable(p)
        if self.report is not None and full_suffix(self.report).lower() not in (".json", ".csv"):
            raise InputError(f"--report {self.report}: the report must be a .json or .csv file", "")

    def _check_existing(self) -> None:
        clashes = []
        for case in self.cases:
            present = [p for p in case.outputs.values() if os.path.lexists(p)]
            if not present or self.overwrite:
                continue
            if self.resume and len(present) == len(case.outputs) and all(is_complete(p) for p in present):
                case.skipped = True
                continue
            clashes += present
        if self.report is not None and os.path.lexists(self.report) and not self.overwrite:
            if not (self.resume and _is_medai_report(self.report)):
                clashes.append(self.report)
        if not clashes:
            return
        resume = "--resume to skip the cases already done, " if hasattr(self.args, "resume") and not self.resume else ""
        if len(clashes) == 1:
            damaged = self.resume and clashes[0] != self.report
            raise InputError(f"{clashes[0]} already exists" + (" but is incomplete or not from this command"
                                                                if damaged else ""),
                             f"use {resume}--overwrite to replace it, or another output path")
        shown = ", ".join(str(p) for p in clashes[:3]) + (", ..." if len(clashes) > 3 else "")
        raise InputError(f"{len(clashes)} outputs already exist ({shown}): nothing was replaced",
                         f"use {resume}--overwrite to replace them, or another output path")

    def _lock_targets(self) -> list:
        """What a concurrent run must not write at the same time: the output folder of a batch, the
        output file of a single case, and the report."""
        targets = set()
        for case in self.cases:
            for p in case.outputs.values():
                targets.add(_resolved(p.parent if len(self.cases) > 1 else p))
        if self.report is not None:
            targets.add(_resolved(self.report))
        return sorted(targets)

    # -- reporting --
    def _case_done(self, case: Case, row: dict) -> None:
        total = len(self.cases)
        if self.json:
            events.emit(events.CASE_DONE, **{"index": case.index + 1, "total": total,
                                             **{k: v for k, v in row.items() if k != "inputs"}})
        head = f"medai: case {case.index + 1}/{total} {case.name}"
        if row["status"] == events.FAILED:
            hint = f" — what to do: {row['hint']}" if row.get("hint") else ""
            self._print(f"{head} failed: {row['error']}{hint}", always=True)
        elif row["status"] == events.SKIPPED:
            self._print(f"{head}: skipped, its outputs already exist ({', '.join(row['outputs'])})")
        else:
            self._print(f"{head}: done in {row.get('seconds') or 0:.1f} s{self._time_left(case)}")
        self._write_report()

    def _time_left(self, case: Case) -> str:
        left = sum(1 for c in self.cases[case.index + 1:] if not c.skipped)
        if not left or not self._ran or self._t_first is None:
            return ""
        seconds = (time.monotonic() - self._t_first) / self._ran * left
        return f", about {seconds / 60:.0f} min left" if seconds >= 90 else f", about {seconds:.0f} s left"

    def _end(self) -> int:
        rows = list(self.rows.values())
        failed = [r["case"] for r in rows if r["status"] == events.FAILED]
        skipped = [r["case"] for r in rows if r["status"] == events.SKIPPED]
        done = len(rows) - len(failed)
        self.status = events.COMPLETE if not failed else (events.PARTIAL if done else events.NOTHING_DONE)
        self._write_report()
        if self.json:
            events.emit(events.DONE, status=self.status, outputs=[o for r in rows for o in r.get("outputs") or []],
                        failed=failed, skipped=skipped, report=str(self.report) if self.report else None)
        if len(rows) > 1 and not self.json:
            self._print(f"medai: {self.command}: {done} of {len(rows)} cases done"
                        + (f" ({len(skipped)} skipped)" if skipped else "")
                        + (f", {len(failed)} failed ({', '.join(failed)})" if failed else "")
                        + (f"; report {self.report}" if self.report else ""), always=True)
        if not failed:
            return EXIT_OK
        return EXIT_PARTIAL if done else EXIT_ERROR

    def _stop(self, status: str, error: str) -> None:
        """The command ends early (cancel, a model that cannot load): the report says so."""
        if not self._planned:
            return
        self.status, self.error = status, error
        for row in self.rows.values():
            if row["status"] == events.PENDING:
                row.update(status=events.NOT_RUN, error=None)
        with contextlib.suppress(Exception):  # the first error is the one to show
            self._write_report()

    def _write_report(self) -> None:
        if self.report is None:
            return
        from MedAILib.core.redact import redact_obj  # no credentials in any report (issue 14)

        rows = redact_obj(list(self.rows.values()))
        with atomic_output(self.report) as tmp:
            if full_suffix(self.report).lower() == ".csv":
                columns = self.csv_columns(rows)
                with open(tmp, "w", newline="") as f:
                    w = csv.writer(f)
                    w.writerow([name for name, _ in columns])
                    for r in rows:
                        w.writerow(["" if (v := get(r)) is None else v for _, get in columns])
            else:
                Path(tmp).write_text(json.dumps(
                    {"command": self.command, "status": self.status, "error": redact_obj(self.error),
                     "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self._started)),
                     "updated": time.strftime("%Y-%m-%dT%H:%M:%S"), "cases": rows},
                    indent=2, default=events._plain))

    # -- people --
    def _human_progress(self, fraction, message, eta):
        if fraction is None:
            if not self.quiet:
                self._print(f"medai: {message}")
        elif self._bar is not None:
            self._bar.n = round(100 * fraction, 1)
            self._bar.set_postfix_str(message[:60])
            self._bar.refresh()

    def _print(self, text: str, always: bool = False, json_too: bool = False) -> None:
        """A line for people on stderr; none in JSON mode (unless ``json_too``), only the
        important ones with ``--progress none`` (``always``)."""
        if (self.json and not json_too) or (self.quiet and not always and not json_too):
            return
        if self._bar is not None:
            self._bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)


def default_csv_columns(rows: list) -> list:
    """(column, value of a row) of a CSV report: the columns every command has."""
    return [("case", lambda r: r["case"]), ("inputs", lambda r: ";".join(r["inputs"])),
            ("status", lambda r: r["status"]), ("error", lambda r: r.get("error")),
            ("seconds", lambda r: r.get("seconds")), ("device", lambda r: r.get("device")),
            ("output", lambda r: r.get("output"))]


def _is_medai_report(path: Path) -> bool:
    """A report this runner wrote (so ``--resume`` may rewrite it): JSON with cases, or a CSV whose
    header starts with the case column."""
    try:
        text = path.read_text(errors="strict", encoding="utf-8")[:1 << 20]
    except (OSError, UnicodeDecodeError):
        return False
    if full_suffix(path).lower() == ".csv":
        return text.startswith("case,")
    try:
        data = json.loads(text)
    except ValueError:
        return False
    return isinstance(data, dict) and isinstance(data.get("cases"), list) and "command" in data


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _check_writable(path: Path) -> None:
    """``path`` can be created: it is not a folder, and its nearest existing folder is writable
    (nothing is created here)."""
    if path.is_dir():
        raise InputError(f"{path} is a folder, but a file of that name is to be written",
                         "give a file name, or another output folder")
    folder = path.parent
    while not os.path.lexists(folder) and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(f"cannot write {path}: {folder} is a file, not a folder", "choose another output path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {path}: no permission to write in {folder}",
                          "choose an output folder you can write to")


class _Signals:
    """SIGTERM/SIGINT cancel the command: the exception unwinds through the atomic writers (no
    partial output under a final name) to :meth:`Batch.execute`, which writes the report. Only the
    first signal raises, so the final report is not cut short by a second one."""

    def __init__(self, token: CancelToken):
        self.token, self.saved = token, {}

    def _handler(self, signum, frame):
        if self.token.cancelled:
            return
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


class _Lock:
    """An exclusive lock on one output path, held while the command runs. The lock file lives in
    the temporary folder (never among the outputs) and the operating system releases it when the
    process ends, even after SIGKILL, so a killed run never blocks the next."""

    def __init__(self, fd: int, path: Path):
        self.fd, self.path = fd, path

    @classmethod
    def acquire(cls, target: Path) -> "_Lock":
        folder = Path(tempfile.gettempdir()) / f"medai-locks-{os.getuid() if hasattr(os, 'getuid') else 0}"
        folder.mkdir(mode=0o700, exist_ok=True)
        path = folder / (hashlib.sha256(str(target).encode()).hexdigest()[:32] + ".lock")
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            if not _try_lock(fd):
                try:
                    owner = os.read(fd, 64).decode(errors="replace").strip() or "?"
                finally:
                    os.close(fd)
                raise OutputError(f"another medai run (process {owner}) is writing {target}",
                                  "wait for it to finish, or choose another output path")
            # the holder before us may have removed the file after we opened it: lock the file
            # that has the name, not a removed one
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, str(os.getpid()).encode())
                return cls(fd, path)
            os.close(fd)

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        with contextlib.suppress(OSError):
            os.close(self.fd)


def _try_lock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
