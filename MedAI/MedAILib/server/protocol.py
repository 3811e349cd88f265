"""The warm engine's wire protocol, shared by the engine (``medai serve``), the CLI client
(``--server``) and the Slicer side (:mod:`MedAISlicerLib.engine_client`).

A job is one ``medai`` command line (``argv``, e.g. ``["segment", IN, "-o", OUT, "--model", ID]``)
run by the same function the one-shot CLI runs. What the job prints is passed on unchanged, line
by line, so a client reads exactly the events of ``medai ... --progress json``
(:mod:`MedAILib.core.events`). Around those lines the engine sends *envelope* messages, which carry
the key ``"engine"`` (never ``"event"``, so an events reader cannot confuse them)::

    {"engine": "ready", "version", "protocol", "pid"}        stdio: once, when jobs can be sent
    {"engine": "queued", "job", "position"}                  the job waits (position 0 = next)
    {"engine": "started", "job", "device", "seq"}            seq: the order jobs started in
    {"job": ID, "out": LINE}                                 one line the command printed
    {"engine": "end", "job", "state", "returncode", "seconds", "outputs"}
    {"engine": "refused", "message", "hint"}                 handshake or request refused

Two transports, one job runner (:mod:`MedAILib.server.engine`):

- **stdio** (the local warm engine Slicer starts): requests are JSON lines on stdin
  (``{"op": "hello" | "submit" | "cancel" | "status" | "shutdown", ...}``), envelopes JSON lines on
  stdout. Only the parent holds the pipes, so no port and no token are needed; the engine exits
  when stdin closes or its parent process ends.
- **HTTP** (a shared server, :mod:`MedAILib.server.http`): token in ``Authorization: Bearer``;
  inputs uploaded and results downloaded as files (compressed NRRD); envelopes streamed as
  newline-delimited JSON. Placeholders in ``argv`` name the job's files: ``@in/NAME`` an uploaded
  input, ``@out/NAME`` (or ``@out/`` for a folder) a result.

Imports nothing but the standard library and ``MedAILib.__version__``: Slicer imports it as it is.
"""

from __future__ import annotations

import json

PROTOCOL = 1
# The commands a job may run (each the same function as the one-shot `medai <command>`).
JOB_COMMANDS = ("segment", "classify", "synthesize", "detect")

IN_PREFIX, OUT_PREFIX = "@in/", "@out/"

# HTTP headers
VERSION_HEADER = "X-MedAI-Version"
PROTOCOL_HEADER = "X-MedAI-Protocol"
CLIENT_HEADER = "X-MedAI-Client"

# Job states ("end" envelope)
DONE, FAILED, CANCELLED = "done", "failed", "cancelled"


def engine_version() -> str:
    from MedAILib import __version__

    return __version__


def version_mismatch(client_version: str, client_protocol, server_version: str) -> str:
    """The refusal text when client and engine differ (empty when they agree). Results are only
    promised identical to a local run for the same MedAI version, so versions must match exactly."""
    try:
        client_protocol = int(client_protocol)
    except (TypeError, ValueError):
        client_protocol = None
    if client_version == server_version and client_protocol == PROTOCOL:
        return ""
    return (f"version mismatch: this client is medai {client_version or 'unknown'} (protocol "
            f"{client_protocol}) but the server runs medai {server_version} (protocol {PROTOCOL})")


def version_hint(server_version: str) -> str:
    return f"install medai {server_version} on this computer, or run the same version on the server"


def envelope(kind: str, **fields) -> dict:
    return {"engine": kind, **fields}


def dumps(message: dict) -> str:
    return json.dumps(message, default=str)


def loads(line: str):
    """The message of one protocol line, or None for anything else."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        msg = json.loads(line)
    except ValueError:
        return None
    return msg if isinstance(msg, dict) else None
