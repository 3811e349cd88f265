"""The warm engine's job runner: a fair queue per device, one worker thread per device, and the
job itself run by the one-shot CLI's own entry point (:func:`MedAILib.cli.main`).

A job's argv is exactly what ``medai`` would be given on a command line, so a job computes exactly
what the one-shot process computes, and prints the same event lines (captured per job by
:mod:`.capture`). Around it the engine adds:

- **fair order**: each device has one queue per client; the worker takes the clients' jobs in
  turn (round robin), so a client with ten jobs waiting does not hold back another's one;
- **cancel**: every :class:`~MedAILib.core.progress.CancelToken` created in the job's thread
  shares the job's cancel flag (:func:`MedAILib.core.progress.job_cancel_scope`); the engine checks
  it before each batch of sliding windows, so a cancel takes effect within one batch;
- **failures stay in the job**: any exception (and argparse's ``SystemExit``) ends only that job;
- **warm models**: bundles stay loaded between jobs (:mod:`.bundles`); after ``idle_release_s``
  without work a device's networks go back to the CPU and the GPU's cached memory is returned.
"""

from __future__ import annotations

import collections
import logging
import sys
import threading
import time
import uuid
from typing import Callable, Optional

from MedAILib.server import protocol
from MedAILib.server.bundles import BundleCache
from MedAILib.server.capture import LineSink, ThreadRouter

log = logging.getLogger(__name__)

WAITING, QUEUED, RUNNING = "waiting", "queued", "running"  # waiting = its inputs are still uploading
ENDED = (protocol.DONE, protocol.FAILED, protocol.CANCELLED)


class Job:
    """One command run. ``messages`` is every envelope sent for it, in order (HTTP clients replay it)."""

    def __init__(self, argv: list, client: str = "local", job_id: Optional[str] = None, workdir=None):
        self.id = job_id or uuid.uuid4().hex
        self.client = client
        self.argv = [str(a) for a in argv]
        self.workdir = workdir
        self.state = WAITING
        self.device = None
        self.returncode: Optional[int] = None
        self.outputs: list = []
        self.cancel_event = threading.Event()
        self.created = time.time()
        self.started: Optional[float] = None
        self.ended: Optional[float] = None
        self.messages: list = []
        self.changed = threading.Condition()
        # HTTP jobs only: the inputs named when the job was created, those uploaded so far, and
        # whether the client deleted the job before it ended.
        self.expected_inputs: list = []
        self.uploaded: set = set()
        self.discard_when_ended = False
        # Applied to each line the command prints (HTTP jobs: the server's folders -> @in/, @out/).
        self.rewrite: Optional[Callable[[str], str]] = None

    @property
    def finished(self) -> bool:
        return self.state in ENDED


class FairQueue:
    """Jobs of one device: one FIFO per client, served in turn."""

    def __init__(self):
        self._by_client: "collections.OrderedDict[str, collections.deque]" = collections.OrderedDict()

    def put(self, job: Job) -> None:
        self._by_client.setdefault(job.client, collections.deque()).append(job)

    def pop(self) -> Optional[Job]:
        for client, jobs in list(self._by_client.items()):
            if jobs:
                job = jobs.popleft()
                self._by_client.move_to_end(client)  # this client has had its turn
                if not jobs:
                    del self._by_client[client]
                return job
        return None

    def remove(self, job: Job) -> bool:
        jobs = self._by_client.get(job.client)
        if jobs and job in jobs:
            jobs.remove(job)
            if not jobs:
                del self._by_client[job.client]
            return True
        return False

    def order(self) -> list:
        """The jobs in the order they will run."""
        queues = [list(q) for q in self._by_client.values()]
        out = []
        for i in range(max((len(q) for q in queues), default=0)):
            out += [q[i] for q in queues if i < len(q)]
        return out

    def __len__(self) -> int:
        return sum(len(q) for q in self._by_client.values())


def device_key(argv: list) -> str:
    """The device a job will run on ("cpu", "cuda:0", ...), from its ``--device`` (default auto).
    A device that does not exist here maps to "cpu": the command itself then reports the error,
    word for word as the one-shot process would."""
    name = "auto"
    for i, a in enumerate(argv):
        if a == "--device" and i + 1 < len(argv):
            name = argv[i + 1]
        elif a.startswith("--device="):
            name = a.split("=", 1)[1]
    try:
        from MedAILib.runtime.device import choose_device

        dev = choose_device(name)
    except Exception:  # noqa: BLE001 - reported by the job itself
        return "cpu"
    if dev.type == "cuda":
        import torch

        return f"cuda:{dev.index if dev.index is not None else torch.cuda.current_device()}"
    return dev.type


class Engine:
    """Runs jobs; ``on_message(job, envelope)`` is called for every envelope (any thread)."""

    def __init__(self, on_message: Optional[Callable] = None, router: Optional[ThreadRouter] = None,
                 cache: Optional[BundleCache] = None, idle_release_s: float = 60.0, max_jobs: int = 100,
                 device_of: Callable[[list], str] = device_key):
        self.on_message = on_message
        self.router = router
        self.cache = cache if cache is not None else BundleCache()
        self.idle_release_s = idle_release_s
        self.max_jobs = max_jobs
        self.device_of = device_of
        self.jobs: dict = {}
        self._queues: dict = {}
        self._workers: dict = {}
        self._lock = threading.Condition()
        self._stopping = False
        self.before_end: Optional[Callable[[Job], None]] = None  # e.g. list the job's result files
        # Set once the start-up imports are done (MONAI's own import is not safe from two threads at
        # once, so nothing that imports torch or MONAI starts before it is set).
        self.warm = threading.Event()
        self.warm.set()
        self.releases = 0  # idle GPU releases done (status)
        self.completed = 0
        self.started_count = 0
        from MedAILib.models import bundle as bundle_module

        bundle_module.bundle_cache = self.cache

    # --- jobs ----------------------------------------------------------------------------------
    def add(self, job: Job) -> Job:
        """Register a job (not queued yet: its inputs may still be coming)."""
        with self._lock:
            self.jobs[job.id] = job
        return job

    def active_jobs(self, client: Optional[str] = None) -> list:
        with self._lock:
            return [j for j in self.jobs.values() if not j.finished and (client is None or j.client == client)]

    def submit(self, job: Job) -> Job:
        """Queue ``job`` on its device; starts that device's worker when needed."""
        if job.id not in self.jobs:
            self.add(job)
        self.warm.wait()
        job.device = self.device_of(job.argv)
        with self._lock:
            if self._stopping:
                raise RuntimeError("the engine is shutting down")
            queue = self._queues.setdefault(job.device, FairQueue())
            queue.put(job)
            job.state = QUEUED
            self._ensure_worker(job.device)
            self._lock.notify_all()
        self._announce_positions(job.device)
        return job

    def cancel(self, job_id: str, client: Optional[str] = None) -> bool:
        """Cancel a queued or running job (of ``client`` when given). False if none such."""
        with self._lock:
            job = self.jobs.get(job_id)
            if job is None or (client is not None and job.client != client) or job.finished:
                return False
            job.cancel_event.set()
            dequeued = job.state in (WAITING, QUEUED) and (
                job.state == WAITING or self._queues.get(job.device, FairQueue()).remove(job))
        if dequeued:
            self._end(job, protocol.CANCELLED, 130)
            if job.device:
                self._announce_positions(job.device)
        return True

    def forget(self, job_id: str) -> Optional[Job]:
        with self._lock:
            return self.jobs.pop(job_id, None)

    def status(self) -> dict:
        with self._lock:
            queues = {d: [j.id for j in q.order()] for d, q in self._queues.items()}
            running = {j.device: j.id for j in self.jobs.values() if j.state == RUNNING}
        return {"version": protocol.engine_version(), "protocol": protocol.PROTOCOL, "queued": queues,
                "running": running, "completed": self.completed, "idle_releases": self.releases,
                "cache": self.cache.status()}

    # --- messages --------------------------------------------------------------------------------
    def send(self, job: Job, kind: Optional[str], **fields) -> None:
        msg = protocol.envelope(kind, job=job.id, **fields) if kind else {"job": job.id, **fields}
        with job.changed:
            job.messages.append(msg)
            job.changed.notify_all()
        if self.on_message is not None:
            try:
                self.on_message(job, msg)
            except Exception:  # noqa: BLE001 - a vanished reader must not stop the engine
                log.exception("could not deliver a message of job %s", job.id)

    def _announce_positions(self, device: str) -> None:
        with self._lock:
            order = self._queues.get(device, FairQueue()).order()
        for position, job in enumerate(order):
            self.send(job, "queued", position=position)

    def _end(self, job: Job, state: str, returncode: int) -> None:
        if self.before_end is not None:
            try:
                self.before_end(job)
            except Exception:  # noqa: BLE001
                log.exception("before_end of job %s", job.id)
        job.state, job.returncode, job.ended = state, returncode, time.time()
        seconds = round(job.ended - job.started, 3) if job.started else 0.0
        self.send(job, "end", state=state, returncode=returncode, seconds=seconds, outputs=job.outputs)
        with self._lock:
            self.completed += 1
            self._lock.notify_all()

    # --- workers ---------------------------------------------------------------------------------
    def _ensure_worker(self, device: str) -> None:
        w = self._workers.get(device)
        if w is None or not w.thread.is_alive():
            w = _Worker(self, device)
            self._workers[device] = w
            w.thread.start()

    def _next(self, device: str, timeout: Optional[float]) -> Optional[Job]:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while True:
                if self._stopping:
                    return None
                job = self._queues.get(device, FairQueue()).pop()
                if job is not None:
                    job.state = RUNNING
                    return job
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError
                self._lock.wait(left)

    def run(self, job: Job) -> None:
        """Run one job in the calling thread (a device worker)."""
        from MedAILib.core.progress import job_cancel_scope

        job.started = time.time()
        with self._lock:
            self.started_count += 1
            seq = self.started_count
        self.send(job, "started", device=job.device, seq=seq)  # seq: the order jobs started in (all devices)
        rewrite = job.rewrite or (lambda line: line)
        lines = LineSink(lambda line: self.send(job, None, out=rewrite(line)))
        returncode = 1
        try:
            with self.cache.partition(job.device), job_cancel_scope(job.cancel_event):
                if self.router is not None:
                    with self.router.route(lines):
                        returncode = _call_cli(job.argv)
                else:
                    returncode = _call_cli(job.argv)
        except BaseException as e:  # noqa: BLE001 - nothing a job does may stop the engine
            lines.write(f"medai: internal error: {type(e).__name__}: {e}\n")
            lines.flush()
            returncode = 1
        if job.cancel_event.is_set():
            state = protocol.CANCELLED
        else:
            state = protocol.DONE if returncode == 0 else protocol.FAILED
        self._end(job, state, returncode)
        self._announce_positions(job.device)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Cancel every job and stop the workers (waits up to ``timeout`` s for running jobs)."""
        with self._lock:
            self._stopping = True
            jobs = list(self.jobs.values())
            self._lock.notify_all()
        for job in jobs:
            if not job.finished:
                job.cancel_event.set()
                if job.state in (WAITING, QUEUED):
                    self._end(job, protocol.CANCELLED, 130)
        deadline = time.monotonic() + timeout
        for w in list(self._workers.values()):
            w.thread.join(max(0.0, deadline - time.monotonic()))


class _Worker:
    def __init__(self, engine: Engine, device: str):
        self.engine, self.device, self.current = engine, device, None
        self.thread = threading.Thread(target=self._loop, name=f"medai-worker-{device}", daemon=True)

    def _loop(self):
        engine = self.engine
        released = True
        while True:
            try:
                wait = engine.idle_release_s if (not released and engine.idle_release_s is not None
                                                 and engine.idle_release_s >= 0) else None
                job = engine._next(self.device, wait)
            except TimeoutError:
                engine.cache.release_devices(self.device)
                import gc

                gc.collect()
                engine.releases += 1
                released = True
                continue
            if job is None:
                return
            self.current = job
            try:
                engine.run(job)
            finally:
                self.current = None
                released = False


def _call_cli(argv: list) -> int:
    """``medai <argv>`` in this process: the one-shot CLI's own entry point, exit status back."""
    from MedAILib.cli import main

    try:
        return int(main(list(argv)) or 0)
    except SystemExit as e:  # argparse refuses bad arguments with SystemExit(2)
        code = e.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        sys.stderr.write(f"{code}\n")
        return 2
