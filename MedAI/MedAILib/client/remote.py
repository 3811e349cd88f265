"""Talk to a ``medai serve --port`` server (:mod:`MedAILib.server.http`): handshake, upload the
inputs, run one job, follow its events, fetch its results.

Standard library only (``urllib``): the Slicer side and the CLI both use it. Every failure becomes
a :class:`RemoteError` with one line saying what is wrong and one saying what to do.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Callable, Optional

from MedAILib.core.errors import MedAIError
from MedAILib.server import protocol


class RemoteError(MedAIError):
    """The server could not be reached, refused the request, or the job could not be run there."""


def read_token(path) -> str:
    """The first token of a token file (one per line, ``#`` comments ignored)."""
    path = Path(path).expanduser()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise RemoteError(f"cannot read the token file {path}: {e.strerror or e}",
                          "give --token-file the file holding your server token") from e
    token = next((l.strip() for l in lines if l.strip() and not l.strip().startswith("#")), "")
    if not token:
        raise RemoteError(f"the token file {path} holds no token", "ask your server administrator for a token")
    return token


class RemoteJob:
    """A job on the server: ``events()`` yields its envelopes; ``cancel()`` from any thread."""

    def __init__(self, engine: "RemoteEngine", job_id: str):
        self.engine, self.id = engine, job_id
        self.end: Optional[dict] = None
        self.cancel_requested = False
        self._response = None

    def events(self):
        """Envelopes until "end" (each: ``{"engine": ...}`` or ``{"job", "out": LINE}``)."""
        resp = self.engine._open("GET", f"/v1/jobs/{self.id}/events", timeout=None)
        self._response = resp
        try:
            for raw in resp:
                msg = protocol.loads(raw.decode("utf-8", "replace"))
                if msg is None:
                    continue
                yield msg
                if msg.get("engine") == "end":
                    self.end = msg
                    return
        finally:
            resp.close()
        if self.end is None:
            raise RemoteError(f"the server closed the event stream of job {self.id} before it ended",
                              "the server may have restarted; run the job again")

    def cancel(self) -> None:
        self.cancel_requested = True
        try:
            self.engine._json("POST", f"/v1/jobs/{self.id}/cancel")
        except RemoteError:
            pass  # already ended or the server is gone: nothing left to stop

    def download(self, name: str, target) -> Path:
        """Fetch result ``name`` to ``target`` (written to a temporary name, then renamed)."""
        target = Path(target)
        tmp = target.with_name(f".{target.name}.download-{uuid.uuid4().hex[:8]}")
        resp = self.engine._open("GET", f"/v1/jobs/{self.id}/outputs/{urllib.parse.quote(name)}", timeout=None)
        try:
            with open(tmp, "wb") as f:
                shutil.copyfileobj(resp, f, 1 << 20)
            os.replace(tmp, target)
        finally:
            resp.close()
            if tmp.exists():
                tmp.unlink()
        return target

    def delete(self) -> None:
        try:
            self.engine._json("DELETE", f"/v1/jobs/{self.id}")
        except RemoteError:
            pass


class RemoteEngine:
    """One client of a server at ``url`` (a random client id unless given)."""

    def __init__(self, url: str, token: str, client_id: Optional[str] = None, timeout: float = 60.0):
        self.url = url.rstrip("/")
        if not self.url.startswith(("http://", "https://")):
            raise RemoteError(f"server address {url!r} is not an http:// or https:// URL",
                              "give the server as http://HOST:PORT (or https:// behind a proxy)")
        self.token = token
        self.client_id = client_id or uuid.uuid4().hex
        self.timeout = timeout
        self.server_info: Optional[dict] = None

    # --- HTTP ----------------------------------------------------------------------------------
    def _headers(self, extra=None) -> dict:
        h = {"Authorization": f"Bearer {self.token}", protocol.VERSION_HEADER: protocol.engine_version(),
             protocol.PROTOCOL_HEADER: str(protocol.PROTOCOL), protocol.CLIENT_HEADER: self.client_id}
        h.update(extra or {})
        return h

    def _open(self, method: str, path: str, data=None, headers=None, timeout: Optional[float] = 60.0):
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=self._headers(headers))
        try:
            return urllib.request.urlopen(req, timeout=timeout if timeout is not None else None)
        except urllib.error.HTTPError as e:
            raise self._refusal(e) from None
        except urllib.error.URLError as e:
            reason = getattr(e, "reason", e)
            raise RemoteError(f"cannot reach the MedAI server at {self.url}: {reason}",
                              "check the address and that `medai serve` runs there") from None
        except (ConnectionError, TimeoutError, OSError) as e:
            raise RemoteError(f"cannot reach the MedAI server at {self.url}: {e}",
                              "check the address and that `medai serve` runs there") from None

    def _refusal(self, e: "urllib.error.HTTPError") -> RemoteError:
        try:
            body = json.loads(e.read().decode("utf-8", "replace"))
        except (ValueError, OSError):
            body = {}
        message = body.get("message") if isinstance(body, dict) else None
        hint = body.get("hint", "") if isinstance(body, dict) else ""
        if not message:  # not our server's answer (a proxy's error page, another program)
            message = f"the server at {self.url} answered HTTP {e.code} {e.reason}"
            hint = "check the address; if a proxy is in front of the server, check that it forwards to medai serve"
        err = RemoteError(message, hint)
        err.status = e.code
        return err

    def _json(self, method: str, path: str, body=None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        resp = self._open(method, path, data=data, headers={"Content-Type": "application/json"} if data else None,
                          timeout=self.timeout)
        with resp:
            return json.loads(resp.read().decode("utf-8") or "{}")

    # --- API -----------------------------------------------------------------------------------
    def hello(self) -> dict:
        """Check token and versions (raises RemoteError naming both versions when they differ)."""
        self.server_info = self._json("GET", "/v1/hello")
        return self.server_info

    def status(self) -> dict:
        return self._json("GET", "/v1/status")

    def create(self, argv: list, inputs: dict) -> RemoteJob:
        """Create a job, upload ``inputs`` ({name: local file}) and queue it."""
        created = self._json("POST", "/v1/jobs", {"argv": list(argv), "inputs": list(inputs)})
        job = RemoteJob(self, created["job"])
        limit = created.get("max_upload_bytes")
        try:
            for name, path in inputs.items():
                size = os.path.getsize(path)
                if limit is not None and size > limit:  # said before sending, as the server would say after
                    raise RemoteError(f"{name} ({size / 2**20:.1f} MiB compressed) is larger than the server's "
                                      f"upload limit of {limit / 2**20:.0f} MiB",
                                      "crop the image to the region needed, or ask the administrator to raise "
                                      "--max-upload-mb")
                with open(path, "rb") as f:
                    self._open("PUT", f"/v1/jobs/{job.id}/inputs/{urllib.parse.quote(name)}", data=f,
                               headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"},
                               timeout=None).close()
            self._json("POST", f"/v1/jobs/{job.id}/submit")
        except BaseException:
            job.delete()
            raise
        return job

    def run(self, argv: list, inputs: dict, results_dir, on_line: Optional[Callable[[str], None]] = None,
            on_envelope: Optional[Callable[[dict], None]] = None, job_holder: Optional[list] = None) -> dict:
        """Run one job to its end: upload, follow (``on_line`` gets each line the command printed),
        download every result into ``results_dir``, delete the job on the server. Returns the "end"
        envelope plus ``"files"``: {result name: local path}. ``job_holder`` (a list) receives the
        RemoteJob as soon as it exists, so another thread can cancel it."""
        job = self.create(argv, inputs)
        if job_holder is not None:
            job_holder.append(job)
        try:
            for msg in job.events():
                if "out" in msg:
                    if on_line is not None:
                        on_line(msg["out"])
                elif on_envelope is not None:
                    on_envelope(msg)
            end = dict(job.end)
            files = {}
            if end.get("state") != protocol.CANCELLED:
                Path(results_dir).mkdir(parents=True, exist_ok=True)
                for name in end.get("outputs") or []:
                    files[name] = str(job.download(name, Path(results_dir) / name))
            end["files"] = files
            return end
        finally:
            job.delete()


def make_cancel_watcher(job_holder: list, cancel_event: threading.Event) -> threading.Thread:
    """A thread that cancels the job in ``job_holder`` once ``cancel_event`` is set."""

    def watch():
        cancel_event.wait()
        if job_holder:
            job_holder[0].cancel()

    t = threading.Thread(target=watch, name="medai-remote-cancel", daemon=True)
    t.start()
    return t
