"""The local warm engine: requests on stdin, envelopes on stdout, one JSON object per line
(:mod:`.protocol`). Started by the Slicer side (:mod:`MedAISlicerLib.engine_client`) as
``medai serve --parent-pid PID``; only that parent holds the pipes.

Requests: ``{"op": "hello", "version", "protocol"}``, ``{"op": "submit", "job", "argv"}``,
``{"op": "cancel", "job"}``, ``{"op": "status"}``, ``{"op": "shutdown"}``. The engine ends when
stdin closes, on ``shutdown``, or when the parent process ends.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

from MedAILib.server import protocol
from MedAILib.server.engine import Engine, Job

log = logging.getLogger(__name__)


class StdioChannel:
    """The protocol output: the process's original stdout, written one whole line at a time."""

    def __init__(self, stream):
        self.stream = stream
        self._lock = threading.Lock()

    def send(self, message: dict) -> None:
        line = protocol.dumps(message) + "\n"
        with self._lock:
            try:
                self.stream.write(line)
                self.stream.flush()
            except (BrokenPipeError, ValueError, OSError):
                pass  # the parent has gone; the stdin loop or the parent watch ends the engine


def serve_stdio(engine: Engine, channel: StdioChannel, requests=None) -> int:
    """Read requests until stdin closes or ``shutdown``; returns the exit status."""
    requests = requests if requests is not None else sys.stdin
    engine.on_message = lambda job, msg: channel.send(msg)
    channel.send(protocol.envelope("ready", version=protocol.engine_version(), protocol=protocol.PROTOCOL,
                                   pid=os.getpid()))
    for line in requests:
        msg = protocol.loads(line)
        if msg is None:
            continue
        op = msg.get("op")
        if op == "hello":
            problem = protocol.version_mismatch(msg.get("version", ""), msg.get("protocol"),
                                                protocol.engine_version())
            if problem:
                channel.send(protocol.envelope("refused", message=problem,
                                               hint=protocol.version_hint(protocol.engine_version())))
            else:
                channel.send(protocol.envelope("hello", version=protocol.engine_version(),
                                               protocol=protocol.PROTOCOL))
        elif op == "submit":
            argv = msg.get("argv") or []
            if not argv or argv[0] not in protocol.JOB_COMMANDS:
                channel.send(protocol.envelope("refused", job=msg.get("job"),
                                               message=f"the engine runs only {', '.join(protocol.JOB_COMMANDS)}",
                                               hint="run other commands with the one-shot medai"))
                continue
            try:
                engine.submit(Job(argv, client=str(msg.get("client", "local")), job_id=msg.get("job")))
            except RuntimeError as e:
                channel.send(protocol.envelope("refused", job=msg.get("job"), message=str(e), hint=""))
        elif op == "cancel":
            engine.cancel(str(msg.get("job")))
        elif op == "status":
            channel.send(protocol.envelope("status", **engine.status()))
        elif op == "shutdown":
            break
    engine.shutdown()
    return 0


def claim_stdout():
    """The original stdout for the protocol, and fd 1 pointed at stderr from now on: whatever a
    library prints (Python or native code) can then never break a protocol line."""
    sys.stdout.flush()
    proto = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    return proto
