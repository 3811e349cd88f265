"""A remote job's command line: placeholders -> the job's own files, and nothing else of the server.

A client names its uploaded inputs ``@in/NAME`` and its results ``@out/NAME`` (``@out/`` for a
folder). The argv is then parsed by the command's own parser and every string value is checked:
a path must lie inside the job's folder, a model must be a catalogue id, and only options that
name no file (``--device``, ``--structures``, ...) may carry free text. Options that would read or
trust something on the server (``--trust``, a bundle folder as ``--model``, ``--mirror``) are
refused, and so is any option this module does not know to be harmless.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from MedAILib.core.errors import InputError
from MedAILib.server import protocol

# String options that name no file (checked further where needed).
FREE_TEXT = {"model", "device", "structures", "roi", "explain_layer"}
REFUSED = {"trust": "--trust (the server trusts only its own models)",
           "mirror": "--mirror (the server downloads models from its own configuration)"}


def substitute(argv: list, inputs_dir: Path, outputs_dir: Path, uploaded: set) -> list:
    out = []
    for a in argv:
        a = str(a)
        if a.startswith(protocol.IN_PREFIX):
            name = a[len(protocol.IN_PREFIX):]
            if name not in uploaded:
                raise InputError(f"input {name!r} was named in the command but not uploaded",
                                 "upload every @in/ file before submitting the job")
            a = str(inputs_dir / name)
        elif a.startswith(protocol.OUT_PREFIX):
            name = a[len(protocol.OUT_PREFIX):]
            if name and not safe_name(name):
                raise InputError(f"result name {name!r} is not a plain file name", "use a name without folders")
            a = str(outputs_dir / name) if name else str(outputs_dir)
        out.append(a)
    return out


def safe_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name and "\0" not in name


def _subparser(command: str) -> argparse.ArgumentParser:
    from MedAILib.cli import build_parser

    parser = build_parser()
    for action in parser._actions:  # argparse keeps subparsers here; no public accessor
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            return action.choices[command]
    raise InputError(f"the server has no command {command!r}", f"use one of {', '.join(protocol.JOB_COMMANDS)}")


def check(argv: list, job_dir: Path) -> None:
    """Raise InputError unless ``argv`` (placeholders already substituted) touches only ``job_dir``."""
    if not argv or argv[0] not in protocol.JOB_COMMANDS:
        raise InputError(f"the server runs only {', '.join(protocol.JOB_COMMANDS)}", "")
    sub = _subparser(argv[0])

    def refuse(message):
        raise InputError(f"the server cannot run this command: {message}", "check the options")

    sub.error = refuse
    args = sub.parse_args(argv[1:])
    root = job_dir.resolve()
    for dest, value in vars(args).items():
        if dest in ("func", "command") or value is None or value is False or value == []:
            continue
        if dest in REFUSED:
            raise InputError(f"the server does not accept {REFUSED[dest]}", "leave the option out")
        values = value if isinstance(value, list) else [value]
        for v in values:
            if not isinstance(v, str):
                continue  # numbers and flags name no file
            action = next((a for a in sub._actions if a.dest == dest), None)
            if action is not None and action.choices is not None:
                continue  # one of a fixed set of words
            if dest in FREE_TEXT:
                if dest == "model":
                    _check_model(v)
                continue
            p = Path(v)
            if not p.is_absolute() or (p.resolve() != root and root not in p.resolve().parents):
                raise InputError(f"the server cannot use {v!r} ({'--' + dest.replace('_', '-')}): only files "
                                 "uploaded with the job (@in/NAME) and results (@out/NAME) can be named",
                                 "upload the file with the job")


def _check_model(model: str) -> None:
    from MedAILib.models.catalogue import load_catalogue

    if model not in load_catalogue():
        raise InputError(f"the server has no catalogue model {model!r} (bundle folders cannot be sent)",
                         "use a model id from `medai models list` on the server")
