"""Run the ``medai`` engine in a separate process and follow its JSON progress lines.

Why a separate process: the GUI stays live, Cancel can kill the work, and GPU memory is released
when it ends (DESIGN.md). The child is Slicer's own Python (``PythonSlicer``), or ``sys.executable``
outside Slicer, running ``-m MedAILib.cli``. A reader thread puts lines on a queue; ``poll()``
hands them to the callbacks on the caller's thread (the GUI drives it from a QTimer, batch code
through ``wait()``), so MRML is only touched on the main thread.

No ``slicer`` import here: the module is usable, and tested, without Slicer.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Optional

from MedAILib.core import events

ENGINE_ROOT = Path(__file__).resolve().parents[1]  # the folder holding MedAILib/


def python_executable() -> str:
    """Slicer's Python launcher inside Slicer, else this interpreter."""
    return shutil.which("PythonSlicer") or sys.executable


def engine_command(subcommand: str, args: list, prefix: Optional[list] = None) -> list:
    """``[PythonSlicer, -m, MedAILib.cli, subcommand, *args]``; ``prefix`` replaces the first three
    (tests point it at a scripted fake engine)."""
    prefix = list(prefix) if prefix else [python_executable(), "-m", "MedAILib.cli"]
    return prefix + [subcommand] + [str(a) for a in args]


def engine_environment(base: Optional[dict] = None, extra: Optional[dict] = None) -> dict:
    """``base`` (Slicer's startup environment inside Slicer) + MedAILib's folder on PYTHONPATH."""
    env = dict(os.environ if base is None else base)
    paths = [str(ENGINE_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["PYTHONUNBUFFERED"] = "1"  # progress lines must arrive as they are printed
    env.update(extra or {})
    return env


class ProcessResult:
    """What a finished run reported."""

    def __init__(self):
        self.returncode: Optional[int] = None
        self.cancelled = False
        self.outputs: list = []
        self.failed: list = []
        self.error: Optional[dict] = None  # {"message", "hint"} from an "error" event
        self.log: list = []  # every non-JSON line and log message, for the collapsible log

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.cancelled and self.error is None

    def error_text(self) -> str:
        if self.cancelled:
            return "Cancelled."
        if self.error:
            hint = self.error.get("hint")
            return self.error.get("message", "failed") + (f"\nWhat to do: {hint}" if hint else "")
        tail = "\n".join(self.log[-15:])
        if self.returncode is not None and self.returncode < 0:  # killed from outside (OOM killer, kill -9)
            try:
                name = signal.Signals(-self.returncode).name
            except ValueError:
                name = f"signal {-self.returncode}"
            return (f"The MedAI engine was stopped by {name} before it finished (if nobody stopped it, the "
                    "computer probably ran out of memory).\nWhat to do: close other programs or choose a "
                    f"smaller model or the CPU, then run again. Nothing was imported.\n{tail}")
        return f"The MedAI engine stopped with exit code {self.returncode}.\n{tail}"


class EngineJob:
    """One engine run seen from Slicer, however it reaches the engine: a one-shot process
    (:class:`EngineProcess`), the warm local engine or a server (:mod:`.engine_client`). Subclasses
    start the work (``_launch``), stop it (``_stop_work``) and feed the lines the command prints
    into ``self._lines`` (``None`` at the end); everything else is shared.

    Callbacks (all called from ``poll()``, i.e. the caller's thread):
    ``on_progress(fraction, message, eta_s)``, ``on_log(text)``, ``on_event(dict)`` for every JSON
    event, ``on_finished(ProcessResult)`` once at the end. ``cleanup_dirs`` are removed when the run
    ends, whatever the outcome.

    ``prepare`` (optional) runs in a worker thread before the work starts, e.g. writing the
    input files: a CT-sized write would otherwise block Slicer's main thread for up to seconds.
    ``start()`` then returns at once; ``poll()`` reports the run as going while it prepares; a
    ``cancel()`` meanwhile finishes the run as cancelled at once, the work is never started and
    the worker removes ``cleanup_dirs`` again when its write ends (``wait()`` waits for that).
    """

    def __init__(self, command: list, on_progress: Optional[Callable] = None, on_log: Optional[Callable] = None,
                 on_event: Optional[Callable] = None, on_finished: Optional[Callable] = None,
                 cleanup_dirs=(), prepare: Optional[Callable[[], None]] = None):
        self.command = [str(c) for c in command]
        self.on_progress, self.on_log, self.on_event, self.on_finished = on_progress, on_log, on_event, on_finished
        self.cleanup_dirs = [Path(d) for d in cleanup_dirs]
        self.result = ProcessResult()
        self._lines: "queue.Queue" = queue.Queue()
        self._launched = False
        self._finished = False
        self.prepare = prepare
        self._preparer: Optional[threading.Thread] = None
        self._prepare_error: Optional[BaseException] = None
        self._lock = threading.Lock()  # orders "cancelled?" against "start the work" across threads

    # --- to implement --------------------------------------------------------------------------
    def _launch(self) -> None:  # start the work; its lines go to self._lines, then None
        raise NotImplementedError

    def _stop_work(self) -> None:  # stop started work; its output must still end with None
        raise NotImplementedError

    def _returncode(self) -> Optional[int]:
        return None

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self) -> "EngineJob":
        if self.prepare is None:
            self._launch()
            self._launched = True
        else:
            self._preparer = threading.Thread(target=self._prepare_then_launch, name="medai-input-writer",
                                              daemon=True)
            self._preparer.start()
        return self

    def _prepare_then_launch(self):
        """Worker thread: run ``prepare`` then start the work, unless cancelled meanwhile."""
        try:
            self.prepare()
            with self._lock:
                if not self.result.cancelled:
                    self._launch()
                    self._launched = True
                    return
        except BaseException as e:  # noqa: BLE001 - reported to the caller's thread by poll()
            self._prepare_error = e
        # cancelled or failed: no work; remove what the write left (it may have re-created the folder)
        self._remove_temporary()
        self._lines.put(None)

    @property
    def running(self) -> bool:
        return (self._launched or self._preparer is not None) and not self._finished

    def poll(self, block_s: float = 0.0) -> bool:
        """Deliver pending lines to the callbacks (waiting up to ``block_s`` for the first one).
        Returns True while the run is still going."""
        if self._finished:
            return False
        ended = False
        first = True
        while True:
            try:
                line = self._lines.get(timeout=block_s) if first and block_s > 0 else self._lines.get_nowait()
            except queue.Empty:
                break
            first = False
            if line is None:
                ended = True
                break
            self._handle_line(line)
        if ended:
            self._work_ended()
            self._finish()
            return False
        return True

    def _work_ended(self) -> None:  # the output has ended: e.g. reap the process
        pass

    def wait(self, timeout: Optional[float] = None, interval: float = 0.05) -> ProcessResult:
        """Block until the run ends; used by batch scripts and tests (``wait=True``). Lines are
        handled as they arrive (no polling delay)."""
        t0 = time.monotonic()
        while self.poll(block_s=interval):
            if timeout is not None and time.monotonic() - t0 > timeout:
                self.cancel()
                raise TimeoutError(f"medai did not finish within {timeout} s")
        if self._preparer is not None:  # after a cancel while preparing: until its clean-up is done
            self._preparer.join()
        return self.result

    def cancel(self) -> None:
        """Stop the work; the run finishes as cancelled."""
        with self._lock:
            if self._finished or (not self._launched and self._preparer is None):
                return
            self.result.cancelled = True
            launched = self._launched
        if not launched:  # still writing the inputs: the work will never start; finish now
            self._finish()
            return
        self._stop_work()
        # Drain what was printed before the stop, then finish.
        while self.poll(block_s=0.05):
            pass

    # --- internals -------------------------------------------------------------------------------
    def _handle_line(self, line: str):
        event = events.parse_line(line)
        if event is None:
            self._log(line)
            return
        kind = event["event"]
        if kind == events.PROGRESS:
            if self.on_progress:
                self.on_progress(event.get("fraction"), event.get("message", ""), event.get("eta_s"))
        elif kind == events.LOG:
            self._log(event.get("message", ""))
        elif kind == events.DONE:
            self.result.outputs = list(event.get("outputs", []))
            self.result.failed = list(event.get("failed", []))
        elif events.case_failure(event):
            # a case that failed inside the engine (exception, bad input): keep its reason for the user
            text, hint = events.case_failure(event)
            self._log(text)
            if self.result.error is None:
                self.result.error = {"message": text, "hint": hint}
        elif kind == events.ERROR:
            self.result.error = {"message": event.get("message", ""), "hint": event.get("hint", "")}
            self._log("Error: " + self.result.error_text())
        if self.on_event:
            self.on_event(event)

    def _log(self, text: str):
        self.result.log.append(text)
        if self.on_log:
            self.on_log(text)

    def _finish(self):
        self._finished = True
        self.result.returncode = self._returncode()
        if self._prepare_error is not None and not self.result.cancelled:
            e = self._prepare_error
            self.result.error = {"message": f"could not write the engine's input or start it: {e}",
                                 "hint": "check the free disk space of the temporary folder"}
            self._log("Error: " + self.result.error_text())
        try:
            if self.on_finished:  # e.g. import the result file, before its folder goes
                self.on_finished(self.result)
        finally:
            self._remove_temporary()

    def _remove_temporary(self):
        for d in self.cleanup_dirs:
            shutil.rmtree(d, ignore_errors=True)


class EngineProcess(EngineJob):
    """One run of ``medai <subcommand> ... --progress json`` in a process of its own (one-shot)."""

    def __init__(self, command: list, env: Optional[dict] = None, cwd=None, **kwargs):
        super().__init__(command, **kwargs)
        self.env = env if env is not None else engine_environment()
        self.cwd = cwd
        self._proc: Optional[subprocess.Popen] = None
        self._reader: Optional[threading.Thread] = None

    def _launch(self):
        kwargs = {}
        if os.name == "posix":
            kwargs["start_new_session"] = True  # own process group: cancel kills the whole tree
        else:  # pragma: no cover - Windows
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
        try:
            self._proc = subprocess.Popen(self.command, env=self.env, cwd=self.cwd, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          text=True, encoding="utf-8", errors="replace", bufsize=1, **kwargs)
        except OSError:
            self._remove_temporary()
            raise
        self._reader = threading.Thread(target=self._read, name="medai-output-reader", daemon=True)
        self._reader.start()

    def _read(self):
        for line in self._proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._proc.stdout.close()
        self._lines.put(None)  # end of output

    def _work_ended(self):
        if self._proc is not None:
            self._proc.wait()

    def _stop_work(self):
        """Kill the process and every child it started."""
        kill_process_tree(self._proc)
        self._proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)

    def _returncode(self):
        return self._proc.returncode if self._proc is not None else None


def kill_process_tree(proc: subprocess.Popen) -> None:
    """Kill ``proc`` and its descendants. ``PythonSlicer`` is a launcher that starts the real
    interpreter as a child, so killing only the launcher would leave the work running."""
    try:
        import psutil  # Slicer may bundle it; use it when present

        try:
            parent = psutil.Process(proc.pid)
            for child in parent.children(recursive=True):
                child.kill()
            parent.kill()
        except psutil.NoSuchProcess:
            pass
        return
    except ImportError:
        pass
    if os.name == "posix":
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # started with start_new_session: pgid == pid
        except (ProcessLookupError, PermissionError):
            pass
    else:  # pragma: no cover - Windows
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(proc.pid)], capture_output=True)
    try:
        proc.kill()
    except OSError:
        pass
