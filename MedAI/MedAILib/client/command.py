"""``medai segment|classify|synthesize ... --server URL --token-file F``: the same command, each
case run on a ``medai serve`` server.

Everything about the batch stays on this computer and is decided by the same batch runner as a
local run (:mod:`MedAILib.cli.batch`): the cases, output names, overwrite/resume rules, the
report, the events and the exit status. Only the work of each case moves: its inputs are read here
(a bad file is refused with the local reader's message), sent as compressed NRRD, the case runs on
the server as a one-case job of the same command, and its results come back under the names the
batch runner chose, written atomically. One job per case keeps the server's queue fair between
clients.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
from pathlib import Path

from MedAILib.core import events
from MedAILib.core.atomic import atomic_output
from MedAILib.core.errors import Cancelled, InputError, MedAIError
from MedAILib.server import protocol

# Output role of the batch runner -> the command's option that names it.
ROLE_OPTIONS = {
    "segment": {"output": "--output", "preview": "--preview"},
    "classify": {"explanation": "--explain", "preview": "--preview"},
    "synthesize": {"output": "--output"},
    "detect": {"output": "--output", "preview": "--preview"},
}
# Options that only concern this computer's side of the batch.
LOCAL_ONLY = {"inputs", "output", "preview", "explain", "report", "overwrite", "resume", "progress", "server",
              "token_file", "func", "command", "debug"}
# Options whose text names no file (everything else that is text would name a file here).
FREE_TEXT = {"model", "device", "structures", "roi", "explain_layer"}


def add_server_arguments(subparsers) -> None:
    """``--server`` and ``--token-file`` on the commands a server runs."""
    for name in protocol.JOB_COMMANDS:
        p = subparsers.choices.get(name)
        if p is None:
            continue
        g = p.add_argument_group("run on a MedAI server (medai serve)")
        g.add_argument("--server", metavar="URL", help="run each case on this server, e.g. http://gpu-host:8765")
        g.add_argument("--token-file", help="file holding your token for --server")


def _parser_of(command: str):
    from MedAILib.cli import build_parser

    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            return action.choices[command]
    raise InputError(f"no command {command}", "")


def replay_options(command: str, args, local_only, free_text, file_value) -> list:
    """The options of ``args`` (parsed for ``command``) that change the result, as a command line for
    another process: defaults, flags left off and ``local_only`` destinations are skipped; each text
    value that is not in ``free_text`` and has no choices names a file and goes through
    ``file_value(option, value)`` (made absolute, or refused)."""
    out = []
    for action in _parser_of(command)._actions:
        dest = action.dest
        if dest in local_only or dest == "help" or not action.option_strings:
            continue
        value = getattr(args, dest, None)
        if value is None or value == action.default or value is False or value == []:
            continue
        option = next((o for o in action.option_strings if o.startswith("--")), action.option_strings[0])
        if action.nargs == 0:  # a flag
            out.append(option)
            continue
        values = value if isinstance(value, list) else [value]
        values = [file_value(option, v) if isinstance(v, str) and dest not in free_text and action.choices is None
                  else v for v in values]
        if isinstance(action, argparse._AppendAction):
            for v in values:
                out += [option, str(v)]
        else:
            out += [option, *map(str, values)]
    return out


def server_options(command: str, args) -> list:
    """The command-line options a case's job carries: every option that changes the result, as
    given here; refuses options naming a file that would have to be sent too (not supported yet)."""

    def refuse(option, value):
        raise InputError(f"{option} names a file on this computer, which --server does not send yet",
                         f"run without --server, or without {option}")

    return replay_options(command, args, LOCAL_ONLY, FREE_TEXT, refuse)


def _upload_copy(path: Path, folder: Path, name: str) -> Path:
    """The input as a compressed NRRD (read with MedAI's own reader: DICOM folders, NIfTI, ...)."""
    from MedAILib.io import read_image, write_image

    target = folder / name
    write_image(read_image(path), target, compress=True)
    return target


def remote_case_runner(batch):
    """A ``run_case(case, progress)`` for :meth:`MedAILib.cli.batch.Batch.process` that runs each
    case on ``batch.args.server``."""
    from MedAILib.client.remote import RemoteEngine, RemoteError, read_token

    args, command = batch.args, batch.command
    roles = ROLE_OPTIONS.get(command)
    if roles is None:
        raise InputError(f"medai {command} cannot run on a server", "run it without --server")
    if not getattr(args, "token_file", None):
        raise InputError("--server needs --token-file", "give the file holding your token for that server")
    engine = RemoteEngine(args.server, read_token(args.token_file))
    engine.hello()  # token and versions, before anything is sent
    options = server_options(command, args)

    def run_case(case, progress):
        unknown = [r for r in case.outputs if r not in roles]
        if unknown:
            raise InputError(f"output {unknown[0]} cannot be fetched from a server", "run without --server")
        work = Path(tempfile.mkdtemp(prefix="medai-remote-"))
        try:
            uploads = {}
            for i, path in enumerate(case.inputs):
                name = f"{case.name}.nrrd" if i == 0 else f"{case.name}__{i}.nrrd"
                uploads[name] = _upload_copy(Path(path), work, name)
            argv = [command, *[protocol.IN_PREFIX + n for n in uploads]]
            for role, target in case.outputs.items():
                argv += [roles[role], protocol.OUT_PREFIX + Path(target).name]
            argv += options + ["--progress", "json"]
            state = _CaseState(batch, case, progress, uploads)
            holder: list = []
            stop = threading.Event()
            watcher = threading.Thread(target=_cancel_when, args=(progress.cancel, holder, stop), daemon=True)
            watcher.start()
            try:
                end = engine.run(argv, {n: str(p) for n, p in uploads.items()}, work / "results",
                                 on_line=state.line, job_holder=holder)
            finally:
                stop.set()
            if end.get("state") == protocol.CANCELLED:
                raise Cancelled()
            if state.case_done is None:  # the job stopped before the case: the whole command's error
                from MedAILib.cli.batch import StopBatch

                error = state.error or {"message": f"the server's job ended with exit status {end.get('returncode')}",
                                        "hint": "see the server's log"}
                raise StopBatch(RemoteError(error.get("message", ""), error.get("hint", "")))
            done = state.case_done
            if done.get("status") == events.FAILED:
                raise MedAIError(done.get("error") or "failed on the server", done.get("hint") or "")
            for role, target in case.outputs.items():
                got = end["files"].get(Path(target).name)
                if got is None:
                    raise RemoteError(f"the server did not send back {Path(target).name}", "see the server's log")
                with atomic_output(target) as tmp:
                    shutil.copyfile(got, tmp)
            row = {k: v for k, v in done.items() if k not in
                   ("event", "case", "index", "total", "status", "error", "hint", "output", "outputs", "inputs")}
            row.update({role: str(target) for role, target in case.outputs.items()})  # where they are here
            row["server"] = engine.url
            return row
        finally:
            shutil.rmtree(work, ignore_errors=True)

    return run_case


def _cancel_when(token, holder: list, stop: threading.Event) -> None:
    """Cancel the remote job once the local batch is cancelled (signal, Ctrl-C)."""
    while not stop.wait(0.1):
        if token.cancelled and holder:
            holder[0].cancel()
            return


class _CaseState:
    """Follows one case's job: progress and messages to the local batch, its case_done kept."""

    def __init__(self, batch, case, progress, uploads: dict):
        self.batch, self.case, self.progress = batch, case, progress
        self.local = {protocol.IN_PREFIX + n: str(p) for n, p in zip(uploads, case.inputs)}
        self.local.update({protocol.OUT_PREFIX + Path(t).name: str(t) for t in case.outputs.values()})
        self.case_done = None
        self.error = None

    def _localise(self, value):
        if isinstance(value, str):
            return self.local.get(value, value)
        if isinstance(value, list):
            return [self._localise(v) for v in value]
        if isinstance(value, dict):
            return {k: self._localise(v) for k, v in value.items()}
        return value

    def line(self, text: str) -> None:
        event = events.parse_line(text)
        if event is None:
            return  # the server's human-readable lines repeat what the events say
        kind = event.get("event")
        if kind == events.PROGRESS and event.get("fraction") is not None:
            self.progress.update(float(event["fraction"]), str(event.get("message", "")))
        elif kind == events.LOG:
            self.progress.log(str(event.get("message", "")))
        elif kind == events.WARNING:
            details = {k: self._localise(v) for k, v in event.items() if k not in ("event", "case", "message", "kind")}
            self.batch.warn(self.case, str(event.get("message", "")), kind=event.get("kind", "input"), **details)
        elif kind in (events.RESULT, events.METRICS) and self.batch.json:
            fields = {k: self._localise(v) for k, v in event.items() if k != "event"}
            events.emit(kind, **fields)
        elif kind == events.CASE_DONE:
            self.case_done = self._localise(event)
        elif kind == events.ERROR:
            self.error = event
