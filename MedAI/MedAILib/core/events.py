"""The JSON event protocol of ``medai ... --progress json``: one JSON object per line on stdout.

The one place that names the events and their fields. The engine writes them with :func:`emit`;
the Slicer side (``MedAISlicerLib.process``) and scripts read them with :func:`parse_line`.
docs/events.md describes each event with an example.

Order for every command that writes files (``MedAILib.cli.batch``)::

    progress (fraction 0, with command, cases, report), then per case: case_start,
    progress/log/warning..., case_done; then done (or error, last, when the whole command stops:
    a model that cannot load, a cancel)

This module imports nothing from MedAILib, Slicer or Qt: the Slicer side imports it as it is.
"""

from __future__ import annotations

import json
import sys
from pathlib import PurePath

# --- event names (the "event" field) -------------------------------------------------------------
PROGRESS = "progress"      # fraction (0..1, whole command), message, eta_s (seconds left or null), case;
#                            the first one of a run (fraction 0) also has command, cases (count), report
LOG = "log"                # message: something to show in a log, no change of fraction
WARNING = "warning"        # message, kind, case (and task details, e.g. synthesis: input, details)
CASE_START = "case_start"  # case, index (1-based), total, inputs
CASE_DONE = "case_done"    # case, index, total, status, error, hint, seconds, device, output, outputs + task fields
RESULT = "result"          # synthesize, after a converted case: input, output, units, in_distribution
METRICS = "metrics"        # synthesize --reference: input, reference, mae, psnr, ssim, voxels
DONE = "done"              # status (run status), outputs, failed, skipped, report
ERROR = "error"            # message, hint; cancelled: true when a signal or the user stopped the command

NAMES = (PROGRESS, LOG, WARNING, CASE_START, CASE_DONE, RESULT, METRICS, DONE, ERROR)

# --- case_done "status" --------------------------------------------------------------------------
OK = "ok"                  # the case ran and its outputs were written
FAILED = "failed"          # the case failed: "error" (and "hint") say why; the batch went on
SKIPPED = "skipped"        # --resume: its complete outputs already existed; nothing was run
CASE_STATUSES = (OK, FAILED, SKIPPED)
# Report rows only (never in a case_done event): cases the command did not reach.
PENDING = "pending"        # the run is still going (or was killed before the case)
NOT_RUN = "not run"        # the run was cancelled or stopped before the case

# --- run status ("done" event and the report's "status") ----------------------------------------
COMPLETE = "complete"      # every case ok or skipped
PARTIAL = "partial"        # some cases failed, some ok
NOTHING_DONE = "failed"    # no case ok or skipped
RUNNING = "running"        # the report of a run that has not ended (a killed run's report stays so)
CANCELLED = "cancelled"    # a signal or the user stopped it: the report lists what was done


def _plain(value):
    """json.dumps fallback: numpy scalars/arrays and paths as plain JSON."""
    if isinstance(value, PurePath):
        return str(value)
    for attr in ("item", "tolist"):  # numpy scalar / array
        if hasattr(value, attr):
            return getattr(value, attr)()
    return str(value)


def encode(event: str, **fields) -> str:
    """One protocol line (no newline)."""
    if event not in NAMES:
        raise ValueError(f"unknown event {event!r}: add it to MedAILib.core.events")
    from MedAILib.core.redact import redact_obj  # no credentials in any event (issue 14)

    return json.dumps(redact_obj({"event": event, **fields}), default=_plain)


def emit(event: str, stream=None, **fields) -> None:
    """Print one event line and flush it (the reader is another process)."""
    stream = stream or sys.stdout
    stream.write(encode(event, **fields) + "\n")
    stream.flush()


def json_object(line: str):
    """The JSON object on one line, or None for anything else (a log line, broken JSON)."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def parse_line(line: str):
    """The event dict of one output line, or None for anything else."""
    event = json_object(line)
    return event if event is not None and "event" in event else None


def case_failure(event: dict):
    """``(message, hint)`` of a case_done event of a failed case, else None."""
    if event.get("event") != CASE_DONE or event.get("status") != FAILED:
        return None
    return f"{event.get('case', 'case')} failed: {event.get('error') or 'unknown error'}", event.get("hint") or ""
