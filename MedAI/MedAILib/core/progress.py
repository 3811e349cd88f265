"""Progress reporting and cancellation shared by every long-running engine call."""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from typing import Callable, Optional

from MedAILib.core.errors import Cancelled


_job = threading.local()  # the warm engine's job scope (see job_cancel_scope)


class CancelToken:
    """Cooperative cancellation: the GUI (or a signal handler) calls ``cancel()``; workers call ``check()``."""

    def __init__(self):
        self._event = getattr(_job, "cancel_event", None) or threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled()


@contextlib.contextmanager
def job_cancel_scope(event: threading.Event):
    """Every CancelToken created in this thread inside the block shares ``event``: the warm engine
    (MedAILib.server) cancels a job it runs through the command's own code this way."""
    previous = getattr(_job, "cancel_event", None)
    _job.cancel_event = event
    try:
        yield
    finally:
        _job.cancel_event = previous


class Progress:
    """Reports fraction done, a message and time left.

    ``callback(fraction, message, eta_s)`` receives every update. With ``json_stream`` set, each
    update is also printed as one JSON line (``{"event": "progress", ...}``) — the protocol the
    Slicer Logic reads from the ``medai`` subprocess.
    """

    def __init__(self, callback: Optional[Callable] = None, json_stream=None, cancel: Optional[CancelToken] = None):
        self.callback = callback
        self.json_stream = json_stream
        self.cancel = cancel or CancelToken()
        self._t0 = time.monotonic()
        self._stage_start = 0.0
        self._stage_span = 1.0

    def stage(self, start: float, end: float) -> "Progress":
        """Map the next updates' 0..1 into [start, end] of the overall progress."""
        self._stage_start, self._stage_span = start, end - start
        return self

    def update(self, fraction: float, message: str = "") -> None:
        self.cancel.check()
        overall = min(1.0, max(0.0, self._stage_start + self._stage_span * float(fraction)))
        elapsed = time.monotonic() - self._t0
        eta = elapsed * (1.0 - overall) / overall if overall > 1e-3 else None
        if self.callback is not None:
            self.callback(overall, message, eta)
        if self.json_stream is not None:
            emit_json(self.json_stream, event="progress", fraction=round(overall, 4), message=message,
                      eta_s=None if eta is None else round(eta, 1))

    def log(self, message: str) -> None:
        """A message without a change of fraction (e.g. 'retrying on CPU')."""
        if self.callback is not None:
            self.callback(None, message, None)
        if self.json_stream is not None:
            emit_json(self.json_stream, event="log", message=message)


def emit_json(stream=None, **fields) -> None:
    """Print one machine-readable line and flush (the reader is another process)."""
    stream = stream or sys.stdout
    stream.write(json.dumps(fields) + "\n")
    stream.flush()
