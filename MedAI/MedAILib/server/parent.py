"""End the engine when the process that started it ends (Slicer quit or crashed)."""

from __future__ import annotations

import os
import threading
import time
from typing import Callable


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if os.name == "posix":
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # exists, owned by someone else
            return True
        return True
    try:  # pragma: no cover - Windows
        import psutil

        return psutil.pid_exists(pid)
    except ImportError:  # pragma: no cover
        return True


def watch_parent(pid: int, on_gone: Callable[[], None], interval: float = 0.5) -> threading.Thread:
    """Call ``on_gone()`` once when process ``pid`` has ended (or this process was re-parented,
    which on POSIX means the same). Checks every ``interval`` s in a daemon thread."""
    original_ppid = os.getppid()

    def loop():
        while True:
            time.sleep(interval)
            reparented = os.name == "posix" and pid == original_ppid and os.getppid() != original_ppid
            if reparented or not pid_alive(pid):
                on_gone()
                return

    t = threading.Thread(target=loop, name="medai-parent-watch", daemon=True)
    t.start()
    return t
