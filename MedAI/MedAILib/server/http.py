"""The engine behind an HTTP API (FastAPI), for a GPU server shared by a department.

Every request carries ``Authorization: Bearer TOKEN`` (one of the tokens in the server's token
file) and the client's MedAI version and protocol (:mod:`.protocol`); a wrong token gets 401, a
different version 409 naming both versions. Each client sends a random id (``X-MedAI-Client``):
queues are fair between client ids and a client can cancel only its own jobs.

A job::

    POST   /v1/jobs                     {"argv": [...], "inputs": [NAME, ...]}  -> {"job": ID}
    PUT    /v1/jobs/ID/inputs/NAME      the file (compressed NRRD), raw body, size-limited
    POST   /v1/jobs/ID/submit           queue it (all inputs uploaded)
    GET    /v1/jobs/ID/events           newline-delimited JSON envelopes until "end" (replayed from the start)
    GET    /v1/jobs/ID/outputs/NAME     a result file (names listed in the "end" envelope)
    POST   /v1/jobs/ID/cancel
    DELETE /v1/jobs/ID                  cancel if needed and delete the job's files
    GET    /v1/hello, GET /v1/status

Patient data: inputs are deleted as soon as the job ends; results when the client deletes the job,
or ``keep_results_s`` after the job ended if it never does; everything when the server stops.
``keep_data`` keeps them (for audits), in ``work_dir``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import shutil
import threading
import time
from pathlib import Path
from typing import Optional

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse

from MedAILib.core.errors import MedAIError
from MedAILib.server import protocol, remote_args
from MedAILib.server.engine import WAITING, Engine, Job

log = logging.getLogger(__name__)


class Settings:
    def __init__(self, tokens: list, work_dir: Path, max_upload_bytes: int = 2 << 30, max_queue: int = 100,
                 max_jobs_per_client: int = 20, keep_results_s: float = 600.0, keep_data: bool = False):
        self.tokens = [t for t in tokens if t]
        self.work_dir = Path(work_dir)
        self.max_upload_bytes, self.max_queue = int(max_upload_bytes), int(max_queue)
        self.max_jobs_per_client = int(max_jobs_per_client)
        self.keep_results_s, self.keep_data = float(keep_results_s), bool(keep_data)


def read_tokens(path) -> list:
    """Tokens of a token file: one per line; blank lines and ``#`` comments ignored."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise MedAIError(f"cannot read the token file {path}: {e.strerror or e}",
                         "give --token-file a readable file holding the token") from e
    tokens = [l.strip() for l in text.splitlines() if l.strip() and not l.strip().startswith("#")]
    if not tokens:
        raise MedAIError(f"the token file {path} holds no token", "write a long random token into it "
                         "(e.g. python -c \"import secrets; print(secrets.token_urlsafe(32))\")")
    return tokens


def create_app(engine: Engine, settings: Settings):
    app = FastAPI(title="MedAI engine", version=protocol.engine_version())
    settings.work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = threading.Lock()

    def fail(status: int, message: str, hint: str = ""):
        raise HTTPException(status_code=status, detail={"message": message, "hint": hint})

    def client_of(request: Request) -> str:
        given = request.headers.get("authorization", "")
        token = given[7:].strip() if given.lower().startswith("bearer ") else ""
        if not token or not any(hmac.compare_digest(token.encode(), t.encode()) for t in settings.tokens):
            fail(401, "the server refused the token" if token else "no token was sent",
                 "use the token file your server administrator gave you (--token-file)")
        problem = protocol.version_mismatch(request.headers.get(protocol.VERSION_HEADER, ""),
                                            request.headers.get(protocol.PROTOCOL_HEADER),
                                            protocol.engine_version())
        if problem:
            fail(409, problem, protocol.version_hint(protocol.engine_version()))
        host = request.client.host if request.client else "?"
        return request.headers.get(protocol.CLIENT_HEADER) or f"anonymous@{host}"

    def job_of(job_id: str, client: str) -> Job:
        job = engine.jobs.get(job_id)
        if job is None:
            fail(404, f"no job {job_id} on this server", "it ended and was deleted, or the server restarted")
        if job.client != client:
            fail(403, f"job {job_id} belongs to another client", "a client can only see and cancel its own jobs")
        return job

    @app.exception_handler(HTTPException)
    async def _detail(request, exc):  # the body is always {"message", "hint"}
        detail = exc.detail if isinstance(exc.detail, dict) else {"message": str(exc.detail), "hint": ""}
        return JSONResponse(status_code=exc.status_code, content=detail)

    @app.get("/v1/hello")
    def hello(client: str = Depends(client_of)):
        return {"server": "medai", "version": protocol.engine_version(), "protocol": protocol.PROTOCOL,
                "client": client, "max_upload_bytes": settings.max_upload_bytes}

    @app.get("/v1/status")
    def status(client: str = Depends(client_of)):
        s = engine.status()
        s["your_jobs"] = [j.id for j in engine.active_jobs(client)]
        return s

    @app.post("/v1/jobs", status_code=201)
    def create(body: dict, client: str = Depends(client_of)):
        argv = body.get("argv")
        inputs = body.get("inputs") or []
        if not isinstance(argv, list) or not argv or argv[0] not in protocol.JOB_COMMANDS:
            fail(400, f"a job runs one of {', '.join(protocol.JOB_COMMANDS)}", "send argv = [command, ...]")
        if not isinstance(inputs, list) or not all(isinstance(n, str) and remote_args.safe_name(n) for n in inputs):
            fail(400, "input names must be plain file names", "name inputs like input0.nrrd")
        with lock:
            active = engine.active_jobs()
            if len(active) >= settings.max_queue:
                fail(429, f"the server's queue is full ({len(active)} jobs; limit {settings.max_queue})",
                     "try again when some jobs have finished")
            mine = [j for j in active if j.client == client]
            if len(mine) >= settings.max_jobs_per_client:
                fail(429, f"you already have {len(mine)} jobs on this server (limit "
                          f"{settings.max_jobs_per_client} per client)", "wait for some to finish")
            job = Job(argv, client=client)
            job.workdir = settings.work_dir / job.id
            (job.workdir / "in").mkdir(parents=True, mode=0o700)
            (job.workdir / "out").mkdir(mode=0o700)
            job.expected_inputs = list(dict.fromkeys(inputs))
            engine.add(job)
        return {"job": job.id, "max_upload_bytes": settings.max_upload_bytes}

    @app.put("/v1/jobs/{job_id}/inputs/{name}")
    async def upload(job_id: str, name: str, request: Request, client: str = Depends(client_of)):
        job = job_of(job_id, client)
        if job.state != WAITING:
            fail(409, f"job {job_id} was already submitted", "upload inputs before submitting")
        if name not in job.expected_inputs:
            fail(400, f"{name} is not one of the job's inputs", "name it in the inputs list when creating the job")
        limit = settings.max_upload_bytes
        declared = request.headers.get("content-length")
        too_big = (f"{name} is larger than the server's upload limit of {limit / 2**20:.0f} MiB",
                   "crop the image to the region needed, or ask the administrator to raise --max-upload-mb")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            fail(413, *too_big)
        target = job.workdir / "in" / name
        size = 0
        try:
            with open(target, "wb") as f:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        raise OverflowError
                    f.write(chunk)
        except OverflowError:
            target.unlink(missing_ok=True)
            fail(413, *too_big)
        job.uploaded.add(name)
        return {"name": name, "bytes": size}

    @app.post("/v1/jobs/{job_id}/submit")
    def submit(job_id: str, client: str = Depends(client_of)):
        job = job_of(job_id, client)
        if job.state != WAITING:
            fail(409, f"job {job_id} was already submitted", "")
        engine.warm.wait()  # checking the command builds the parser: not during the start-up imports
        missing = [n for n in job.expected_inputs if n not in job.uploaded]
        if missing:
            fail(400, f"inputs not uploaded yet: {', '.join(missing)}", "upload them, then submit")
        try:
            argv = remote_args.substitute(job.argv, job.workdir / "in", job.workdir / "out", job.uploaded)
            remote_args.check(argv, job.workdir)
        except MedAIError as e:
            engine.forget(job.id)
            _remove(job.workdir)
            fail(400, e.message, e.hint)
        job.argv = argv
        # Results and events name the job's files as @in/NAME and @out/NAME: the server's own
        # folders are not the client's business (it maps them to its own files).
        folders = [(str(job.workdir / "out") + "/", protocol.OUT_PREFIX), (str(job.workdir / "in") + "/", protocol.IN_PREFIX),
                   (str(job.workdir / "out"), protocol.OUT_PREFIX)]

        def rewrite(line: str) -> str:
            for server_path, placeholder in folders:
                line = line.replace(server_path, placeholder)
            return line

        job.rewrite = rewrite
        engine.submit(job)
        return {"job": job.id, "state": job.state}

    @app.get("/v1/jobs/{job_id}/events")
    async def events(job_id: str, client: str = Depends(client_of)):
        job = job_of(job_id, client)

        async def stream():
            sent = 0
            while True:
                batch = job.messages[sent:]
                for msg in batch:
                    yield protocol.dumps(msg) + "\n"
                sent += len(batch)
                if batch and batch[-1].get("engine") == "end":
                    return
                if not batch and job.finished and sent >= len(job.messages):
                    return
                await asyncio.sleep(0.02)

        return StreamingResponse(stream(), media_type="application/x-ndjson")

    @app.get("/v1/jobs/{job_id}/outputs/{name}")
    def output(job_id: str, name: str, client: str = Depends(client_of)):
        job = job_of(job_id, client)
        if not job.finished or name not in job.outputs:
            fail(404, f"job {job_id} has no result {name}", "results are listed in the job's end message")
        return FileResponse(job.workdir / "out" / name, filename=name)

    @app.post("/v1/jobs/{job_id}/cancel")
    def cancel(job_id: str, client: str = Depends(client_of)):
        job = job_of(job_id, client)
        return {"job": job.id, "cancelled": engine.cancel(job.id, client=client)}

    @app.delete("/v1/jobs/{job_id}")
    def delete(job_id: str, client: str = Depends(client_of)):
        job = job_of(job_id, client)
        engine.cancel(job.id, client=client)
        if job.finished:
            _discard(job)
        else:
            job.discard_when_ended = True  # the janitor removes it once its worker lets go
        return {"job": job.id, "deleted": True}

    def _discard(job: Job) -> None:
        engine.forget(job.id)
        if not settings.keep_data:
            _remove(job.workdir)

    def before_end(job: Job) -> None:
        if job.workdir is None:
            return
        out = job.workdir / "out"
        job.outputs = sorted(p.name for p in out.iterdir() if p.is_file() and not p.name.startswith(".")) \
            if out.is_dir() else []
        if not settings.keep_data:
            _remove(job.workdir / "in")  # the patient's images are not kept once the job is over

    engine.before_end = before_end

    def janitor():
        while True:
            time.sleep(max(0.5, min(30.0, settings.keep_results_s / 4)))
            now = time.time()
            for job in list(engine.jobs.values()):
                if job.finished and (job.discard_when_ended
                                     or now - (job.ended or now) > settings.keep_results_s):
                    _discard(job)

    threading.Thread(target=janitor, name="medai-janitor", daemon=True).start()

    return app


def _remove(path: Optional[Path]) -> None:
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)
