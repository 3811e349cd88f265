"""Progress reporting and cancellation shared by every long-running engine call."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Callable, Optional

from MedAILib.core import events
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

    ``callback(fraction, message, eta_s)`` receives every update (``fraction`` None for a log
    message). With ``json_stream`` set, each update is also printed as a ``progress`` (or ``log``)
    event of :mod:`MedAILib.core.events`, the protocol the Slicer Logic reads from the ``medai``
    subprocess. :meth:`for_case` gives the Progress of one case of a batch.
    """

    def __init__(self, callback: Optional[Callable] = None, json_stream=None, cancel: Optional[CancelToken] = None):
        self.callback = callback
        self.json_stream = json_stream
        self.cancel = cancel or CancelToken()
        self._t0 = time.monotonic()
        self._stage_start = 0.0
        self._stage_span = 1.0
        self._outer = (0.0, 1.0)  # the part of the whole command this Progress covers (a case of a batch)
        self._case: Optional[str] = None
        self._prefix = ""

    def for_case(self, index: int, total: int, name: str) -> "Progress":
        """The Progress of case ``index`` (0-based) of ``total``: its 0..1 is that case's share of the
        whole command, time left counts from this Progress's start, messages name the case in a batch."""
        case = Progress(self.callback, self.json_stream, self.cancel)
        case._t0, case._outer, case._case = self._t0, (index / total, 1.0 / total), name
        case._prefix = f"{name}: " if total > 1 else ""
        return case

    def stage(self, start: float, end: float) -> "Progress":
        """Map the next updates' 0..1 into [start, end] of this Progress."""
        self._stage_start, self._stage_span = start, end - start
        return self

    def update(self, fraction: float, message: str = "") -> None:
        self.cancel.check()
        local = min(1.0, max(0.0, self._stage_start + self._stage_span * float(fraction)))
        overall = self._outer[0] + self._outer[1] * local
        elapsed = time.monotonic() - self._t0
        eta = elapsed * (1.0 - overall) / overall if overall > 1e-3 else None
        message = self._prefix + message
        if self.callback is not None:
            self.callback(overall, message, eta)
        if self.json_stream is not None:
            fields = {"case": self._case} if self._case is not None else {}
            events.emit(events.PROGRESS, self.json_stream, fraction=round(overall, 4), message=message,
                        eta_s=None if eta is None else round(eta, 1), **fields)

    def log(self, message: str) -> None:
        """A message without a change of fraction (e.g. 'retrying on CPU')."""
        message = self._prefix + message
        if self.callback is not None:
            self.callback(None, message, None)
        if self.json_stream is not None:
            events.emit(events.LOG, self.json_stream, message=message)
