"""Where the Slicer modules' runs go: the warm local engine, a one-shot process, or a server.

The setting (module level, no Qt): ``settings.runOn`` is

- ``"warm"`` (default): a local ``medai serve`` started in the background on the first run and
  kept for the session (torch, MONAI and the models stay loaded, so a click costs its work). It
  exits with Slicer. If it has died, the next run starts a new one and says so in the log;
- ``"oneshot"``: a fresh ``medai`` process per run (the fall-back; what a custom ``enginePrefix``
  always uses);
- ``"http://HOST:PORT"`` (or ``https://``): a ``medai serve --port`` server shared by several
  computers, with ``settings.tokenFile`` holding the token. Inputs go up as compressed NRRD,
  results come back into the run's temporary folder.

The environment sets the defaults: ``MEDAI_ENGINE`` (warm, oneshot or a URL) and
``MEDAI_TOKEN_FILE``. Every kind of run has the same interface (:class:`.process.EngineJob`),
reads the same events, and gives the same result files; ``wait=True`` works with each.

No ``slicer`` import here: the module is usable, and tested, without Slicer.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Optional

from MedAILib.core import events
from MedAILib.server import protocol

from .process import EngineJob, EngineProcess, engine_command, kill_process_tree, python_executable

WARM, ONESHOT = "warm", "oneshot"


class Settings:
    """Run on: this computer (warm engine or one-shot process) or a server URL + token file."""

    def __init__(self, runOn: Optional[str] = None, tokenFile: Optional[str] = None, idleReleaseS: float = 60.0):
        self.runOn = (runOn or os.environ.get("MEDAI_ENGINE") or WARM).strip()
        self.tokenFile = tokenFile or os.environ.get("MEDAI_TOKEN_FILE") or None
        self.idleReleaseS = idleReleaseS  # the warm engine returns GPU memory after this many idle seconds

    @property
    def kind(self) -> str:
        if self.runOn.startswith(("http://", "https://")):
            return "server"
        if self.runOn not in (WARM, ONESHOT):
            raise ValueError(f"MedAI 'Run on' must be 'warm', 'oneshot' or a server URL (http://HOST:PORT), "
                             f"not {self.runOn!r}")
        return self.runOn


settings = Settings()


def make_job(subcommand: str, args: list, env: dict, workDir, enginePrefix=None, **kwargs) -> EngineJob:
    """The job of one run, as ``settings`` says (a custom ``enginePrefix`` is always one-shot)."""
    # register and fuse are not jobs of the warm engine or a server (protocol.JOB_COMMANDS): one-shot
    kind = ONESHOT if enginePrefix or subcommand not in protocol.JOB_COMMANDS else settings.kind
    if kind == ONESHOT:
        return EngineProcess(engine_command(subcommand, args, enginePrefix), env=env, **kwargs)
    if kind == "server":
        if not settings.tokenFile:
            raise ValueError(f"Running on the server {settings.runOn} needs a token file: set "
                             "MedAISlicerLib.engine_client.settings.tokenFile (or MEDAI_TOKEN_FILE).")
        return ServerJob(subcommand, args, settings.runOn, settings.tokenFile, workDir, **kwargs)
    return WarmJob(subcommand, args, env, **kwargs)


# --- the warm local engine --------------------------------------------------------------------------

class WarmEngine:
    """One ``medai serve`` child speaking the stdio protocol (:mod:`MedAILib.server.stdio`)."""

    def __init__(self, env: dict, idleReleaseS: float = 60.0):
        self.env = dict(env)
        self.idleReleaseS = idleReleaseS
        self.proc: Optional[subprocess.Popen] = None
        self.jobs: dict = {}
        self.stderrTail: collections.deque = collections.deque(maxlen=40)
        self.refusal: Optional[dict] = None
        self.starts = 0
        self.lastExit: Optional[int] = None
        self._lock = threading.RLock()
        self._write_lock = threading.Lock()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ensure_started(self) -> str:
        """Start the engine unless it runs; returns a note for the log when it had died."""
        with self._lock:
            if self.alive:
                return ""
            note = ""
            if self.proc is not None:
                self.lastExit = self.proc.returncode
                note = (f"The MedAI engine had stopped ({_exit_text(self.lastExit)}); a new one was started. "
                        f"Its last messages: {' | '.join(list(self.stderrTail)[-3:]) or 'none'}")
            self.refusal = None
            self.stderrTail.clear()
            command = [python_executable(), "-m", "MedAILib.cli", "serve", "--parent-pid", str(os.getpid()),
                       "--idle-release-s", str(self.idleReleaseS)]
            kwargs = {"start_new_session": True} if os.name == "posix" else \
                {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}  # pragma: no cover - Windows
            self.proc = subprocess.Popen(command, env=self.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace",
                                         bufsize=1, **kwargs)
            self.starts += 1
            proc = self.proc
            threading.Thread(target=self._read, args=(proc,), name="medai-engine-reader", daemon=True).start()
            threading.Thread(target=self._read_stderr, args=(proc,), name="medai-engine-log", daemon=True).start()
            self._send({"op": "hello", "version": protocol.engine_version(), "protocol": protocol.PROTOCOL})
            return note

    def _send(self, message: dict) -> None:
        with self._write_lock:
            try:
                self.proc.stdin.write(json.dumps(message) + "\n")
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                pass  # the reader sees the engine end and fails its jobs

    def submit(self, job: "WarmJob") -> None:
        with self._lock:
            note = self.ensure_started()
            if note:
                job.deliver_line(note)
            self.jobs[job.jobId] = job
            self._send({"op": "submit", "job": job.jobId, "argv": job.argv, "client": "slicer"})

    def cancel(self, jobId: str) -> None:
        if self.alive:
            self._send({"op": "cancel", "job": jobId})

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            kill_process_tree(self.proc)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Ask the engine to end (it cancels what runs), then make sure it has."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        self._send({"op": "shutdown"})
        try:
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_process_tree(proc)
            proc.wait()

    def _read(self, proc) -> None:
        for line in proc.stdout:
            msg = protocol.loads(line)
            if msg is None:
                continue
            kind = msg.get("engine")
            if kind == "refused" and not msg.get("job"):
                self.refusal = msg  # the handshake failed: every job is refused
                for job in self._take_jobs():
                    job.deliver_refusal(msg)
                continue
            job = self.jobs.get(msg.get("job"))
            if job is None:
                continue
            if kind == "refused":
                job.deliver_refusal(msg)
                self.jobs.pop(job.jobId, None)
            elif "out" in msg:
                job.deliver_line(msg["out"])
            elif kind == "end":
                self.jobs.pop(job.jobId, None)
                job.deliver_end(msg)
        proc.wait()
        for job in self._take_jobs():  # the engine ended while these ran
            job.deliver_engine_death(proc.returncode, list(self.stderrTail))

    def _read_stderr(self, proc) -> None:
        for line in proc.stderr:
            self.stderrTail.append(line.rstrip("\n"))

    def _take_jobs(self) -> list:
        with self._lock:
            jobs, self.jobs = list(self.jobs.values()), {}
        return jobs


_engine: Optional[WarmEngine] = None
_engine_lock = threading.Lock()


def warm_engine(env: dict) -> WarmEngine:
    """The session's warm engine for this environment (a different environment, e.g. another
    MEDAI_HOME, gets a new engine: a job must see exactly what a one-shot process would)."""
    global _engine
    with _engine_lock:
        if _engine is not None and (_engine.env != env or _engine.idleReleaseS != settings.idleReleaseS):
            _engine.shutdown()
            _engine = None
        if _engine is None:
            _engine = WarmEngine(env, settings.idleReleaseS)
        return _engine


def shutdown_warm_engine() -> None:
    global _engine
    with _engine_lock:
        if _engine is not None:
            _engine.shutdown()
            _engine = None


_ids = itertools.count(1)


class WarmJob(EngineJob):
    """A run sent to the warm engine."""

    def __init__(self, subcommand: str, args: list, env: dict, **kwargs):
        argv = [subcommand] + [str(a) for a in args]
        super().__init__(["medai (warm engine)"] + argv, **kwargs)
        self.argv = argv
        self.env = env
        self.jobId = f"{os.getpid()}-{next(_ids)}"
        self.engine: Optional[WarmEngine] = None
        self._rc: Optional[int] = None
        self._ended = threading.Event()

    def _launch(self):
        self.engine = warm_engine(self.env)
        self.engine.submit(self)

    def _stop_work(self):
        self.engine.cancel(self.jobId)
        if not self._ended.wait(15.0):  # a cancel takes effect within one window batch; this one hangs
            self.deliver_line("The MedAI engine did not stop the job; it was ended (the next run starts a new one).")
            self.engine.kill()
            self._ended.wait(10.0)
            if not self._ended.is_set():
                self._end(137)

    def _returncode(self):
        return self._rc

    # called by the engine's reader thread
    def deliver_line(self, line: str) -> None:
        self._lines.put(line)

    def deliver_end(self, msg: dict) -> None:
        rc = msg.get("returncode")
        self._end(int(rc) if rc is not None else 1)

    def deliver_refusal(self, msg: dict) -> None:
        self._lines.put(events.encode(events.ERROR, message=msg.get("message", "the engine refused the job"),
                                      hint=msg.get("hint", "")))
        self._end(2)

    def deliver_engine_death(self, returncode, stderr_tail: list) -> None:
        self._lines.put(f"The MedAI engine stopped while running this job ({_exit_text(returncode)}); the next "
                        "run starts a new one.")
        for line in stderr_tail[-10:]:
            self._lines.put(line)
        self._end(returncode if returncode is not None and returncode < 0 else 1)

    def _end(self, rc: int) -> None:
        if self._ended.is_set():
            return
        self._rc = rc
        self._ended.set()
        self._lines.put(None)


def _exit_text(returncode) -> str:
    if returncode is None:
        return "no exit status"
    if returncode < 0:
        import signal

        try:
            return f"stopped by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"stopped by signal {-returncode}"
    return f"exit status {returncode}"


# --- a server ---------------------------------------------------------------------------------------

class ServerJob(EngineJob):
    """A run sent to a ``medai serve --port`` server. Files of the run's folder named in the
    arguments go up (those that exist: inputs, as compressed NRRD) or come back (the others:
    results, into the same folder); events name them as local files again."""

    def __init__(self, subcommand: str, args: list, url: str, tokenFile, workDir, **kwargs):
        argv = [subcommand] + [str(a) for a in args]
        super().__init__([f"medai (server {url})"] + argv, **kwargs)
        self.argv, self.url, self.tokenFile, self.workDir = argv, url, tokenFile, Path(workDir)
        self._holder: list = []
        self._thread: Optional[threading.Thread] = None
        self._rc: Optional[int] = None

    def _launch(self):
        self._thread = threading.Thread(target=self._run, name="medai-server-job", daemon=True)
        self._thread.start()

    def _remote_argv(self, upload_dir: Path):
        """argv with the run folder's files as @in/ (uploaded) and @out/ names; {name: file} to upload."""
        from MedAILib.core.atomic import full_suffix

        folder = self.workDir.resolve()
        argv, uploads = [], {}
        for a in self.argv:
            p = Path(a)
            inside = p.is_absolute() and folder in p.resolve().parents
            if not inside:
                argv.append(a)
            elif p.exists():
                name = p.name
                if full_suffix(p).lower() == ".nrrd":  # Slicer's inputs are raw NRRD: sent compressed
                    from MedAILib.io import read_image, write_image

                    upload = upload_dir / name
                    write_image(read_image(p), upload, compress=True)
                    uploads[name] = str(upload)
                else:
                    uploads[name] = str(p)
                argv.append(protocol.IN_PREFIX + name)
            else:
                argv.append(protocol.OUT_PREFIX + p.name)
        return argv, uploads

    def _run(self):
        import shutil
        import tempfile

        from MedAILib.client.remote import RemoteEngine, RemoteError, read_token

        upload_dir = Path(tempfile.mkdtemp(prefix="medai-upload-"))
        local = json.dumps(str(self.workDir))[1:-1] + "/"
        try:
            argv, uploads = self._remote_argv(upload_dir)
            engine = RemoteEngine(self.url, read_token(self.tokenFile), client_id=f"slicer-{os.getpid()}")
            engine.hello()

            def line(text: str):
                self._lines.put(text.replace('"' + protocol.OUT_PREFIX, '"' + local)
                                .replace('"' + protocol.IN_PREFIX, '"' + local))

            end = engine.run(argv, uploads, self.workDir, on_line=line, job_holder=self._holder)
            self._rc = 130 if end.get("state") == protocol.CANCELLED else int(end.get("returncode") or 0)
        except RemoteError as e:
            self._lines.put(events.encode(events.ERROR, message=e.message, hint=e.hint))
            self._rc = 2
        except Exception as e:  # noqa: BLE001 - reported as the run's error, never raised in a thread
            self._lines.put(events.encode(events.ERROR, message=f"the run on {self.url} failed: {e}",
                                          hint="check the server's address and log"))
            self._rc = 1
        finally:
            shutil.rmtree(upload_dir, ignore_errors=True)
            self._lines.put(None)

    def _stop_work(self):
        deadline = time.monotonic() + 30.0
        while not self._holder and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)  # the job is still being created/uploaded
        if self._holder:
            self._holder[0].cancel()
        self._thread.join(max(0.0, deadline - time.monotonic()))

    def _returncode(self):
        return self._rc
