"""What a job prints goes to that job, not to the engine's own output.

The engine runs a job by calling the same ``medai`` command function the one-shot CLI runs, which
prints its JSON events and messages on ``sys.stdout``/``sys.stderr``. :class:`ThreadRouter` is
installed as both: a write from a job's thread goes to that job's :class:`LineSink`; any other
thread's write goes to the fallback stream (the engine's stderr, never its protocol channel).
"""

from __future__ import annotations

import contextlib
import io
import threading
from typing import Callable


class LineSink:
    """Collects text and hands over each complete line (without its newline)."""

    def __init__(self, on_line: Callable[[str], None]):
        self.on_line = on_line
        self._buffer = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            self._buffer += text
            *lines, self._buffer = self._buffer.split("\n")
        for line in lines:
            self.on_line(line.rstrip("\r"))
        return len(text)

    def flush(self) -> None:
        with self._lock:
            rest, self._buffer = self._buffer, ""
        if rest:
            self.on_line(rest.rstrip("\r"))


class ThreadRouter(io.TextIOBase):
    """A text stream whose writes go to the calling thread's sink (see :meth:`route`) or ``fallback``."""

    def __init__(self, fallback):
        super().__init__()
        self._fallback = fallback
        self._local = threading.local()

    @contextlib.contextmanager
    def route(self, sink: LineSink):
        previous = getattr(self._local, "sink", None)
        self._local.sink = sink
        try:
            yield sink
        finally:
            self._local.sink = previous
            sink.flush()

    def _target(self):
        return getattr(self._local, "sink", None) or self._fallback

    def write(self, text) -> int:
        return self._target().write(text)

    def flush(self) -> None:
        target = self._target()
        if target is not self._fallback:
            return  # a job's lines are delivered whole; a partial line waits for its newline
        target.flush()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self):
        return getattr(self._fallback, "encoding", "utf-8")

    def fileno(self) -> int:  # libraries that ask (faulthandler) get the fallback's descriptor
        return self._fallback.fileno()
