"""Helpers for the warm-engine tests (test_serve*.py): start and stop `medai serve` (stdio and
HTTP on 127.0.0.1 only), run the one-shot `medai segment`, read label arrays, make a volume large
enough that the hippocampus model needs many window batches. Every engine a test starts is stopped
by the test (bounded waits, then kill)."""

from __future__ import annotations

import json
import os
import queue
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
HIPPO = "hippocampus_unet"


def engine_env(tmp_home: Path, **extra) -> dict:
    """The environment of every engine process of a test: one thread (2-core machines, and the same
    arithmetic in the one-shot and the warm runs), a private MEDAI_HOME, the engine on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "MedAI") + os.pathsep + env.get("PYTHONPATH", "")
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MEDAI_HOME=str(tmp_home), PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def one_shot(args: list, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "MedAILib.cli", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=timeout)


def labels(path) -> np.ndarray:
    from MedAILib.io import read_segmentation

    return read_segmentation(path).array


class StdioEngine:
    """`medai serve` speaking JSON lines, as the Slicer side starts it."""

    def __init__(self, env: dict, *extra, parent_pid=None):
        cmd = [sys.executable, "-m", "MedAILib.cli", "serve", *map(str, extra)]
        if parent_pid:
            cmd += ["--parent-pid", str(parent_pid)]
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1)
        self.messages: "queue.Queue" = queue.Queue()
        self.stderr: list = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True).start()
        self.ready = self.next(lambda m: m.get("engine") == "ready", timeout=120)

    def _read(self):
        for line in self.proc.stdout:
            self.messages.put(json.loads(line))  # every stdout line must be protocol JSON
        self.messages.put(None)

    def send(self, **msg):
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()

    def next(self, match=lambda m: True, timeout: float = 300, seen=None):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no matching engine message within {timeout} s; stderr: {self.stderr[-10:]}"
            m = self.messages.get(timeout=left)
            assert m is not None, f"the engine ended; stderr: {''.join(self.stderr[-20:])}"
            if seen is not None:
                seen.append(m)
            if match(m):
                return m

    def run(self, job: str, argv: list, timeout: float = 300):
        """Submit and wait for the end: (end envelope, [lines the command printed])."""
        self.send(op="submit", job=job, argv=[str(a) for a in argv])
        seen = []
        end = self.next(lambda m: m.get("engine") == "end" and m.get("job") == job, timeout, seen)
        return end, [m["out"] for m in seen if m.get("job") == job and "out" in m]

    def stop(self, timeout: float = 30):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


class HttpServer:
    """`medai serve --host 127.0.0.1 --port 0 --token-file F ...`; ``url`` and ``token`` once ready."""

    def __init__(self, env: dict, work: Path, *extra):
        work.mkdir(parents=True, exist_ok=True)
        self.token = secrets.token_urlsafe(24)
        self.token_file = work / "token.txt"
        self.token_file.write_text(f"# test token\n{self.token}\n")
        self.work_dir = work / "jobs"
        self.log = open(work / "server.log", "w")
        cmd = [sys.executable, "-m", "MedAILib.cli", "serve", "--host", "127.0.0.1", "--port", "0",
               "--token-file", str(self.token_file), "--work-dir", str(self.work_dir), *map(str, extra)]
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = _readline(self.proc.stdout, 120)
        assert line, f"the server did not start: {(work / 'server.log').read_text()[-2000:]}"
        ready = json.loads(line)
        assert ready["engine"] == "ready"
        self.url = ready["url"]
        self.log_path = work / "server.log"

    def client(self, token=None, client_id=None):
        from MedAILib.client.remote import RemoteEngine

        return RemoteEngine(self.url, token or self.token, client_id=client_id)

    def stop(self, timeout: float = 30):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # uvicorn's graceful stop
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()


def _readline(stream, timeout: float) -> str:
    out = []
    t = threading.Thread(target=lambda: out.append(stream.readline()), daemon=True)
    t.start()
    t.join(timeout)
    return out[0] if out else ""


def big_volume(data_dir: Path, folder: Path) -> Path:
    """A real hippocampus MRI tiled 3x3x3 (same 1 mm spacing): ~32 window batches for the shipped
    model instead of one, so a cancel can land in the middle of a run."""
    from MedAILib.core.volume import Volume
    from MedAILib.io import read_image, write_image

    v = read_image(data_dir / "msd-hippocampus" / "imagesTr" / "hippocampus_001.nii.gz")
    big = Volume(np.ascontiguousarray(np.tile(v.array, (3, 3, 3))), v.ijk_to_ras)
    path = folder / "big.nii.gz"
    write_image(big, path)
    return path


def big_volume_flags() -> list:
    """What the segment command needs to run the tiled volume: its field of view is far from the
    model's training crops, which the input checks refuse unless told to accept it."""
    import argparse

    from MedAILib.cli import build_parser

    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            options = action.choices["segment"]._option_string_actions
            return ["--accept-input-warnings"] if "--accept-input-warnings" in options else []
    return []


def hippo_cases(data_dir: Path, n: int) -> list:
    folder = data_dir / "msd-hippocampus" / "imagesTr"
    return sorted(folder.glob("hippocampus_*.nii.gz"))[:n]
