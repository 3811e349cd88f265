"""``medai train <task> ...``: train a model (the shipped ones reproducibly, or on your own data).

Each trainer is a module with ``add_arguments(parser)`` and ``run(args) -> int``; add yours to
``TRAINERS`` (name -> module path).

``--progress json`` (before or after the task) prints the JSON event protocol of
:mod:`MedAILib.core.events` on stdout, as ``medai segment --progress json`` does: a ``progress``
event per epoch (fraction, message, seconds left) read from the trainers' epoch log lines, ``log``
events for their other log lines, then ``done`` with the bundle folder (or ``error``). This is how
the Slicer Train section follows a run in its own process.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import shlex
import sys

# name -> module with add_arguments(parser) and run(args); order = order in --help.
TRAINERS = {
    "segmentation": "MedAILib.tasks.segmentation.trainer",
    "classification": "MedAILib.tasks.classification.trainer",
    "classification-clinical": "MedAILib.tasks.classification.clinical",
    "synthesis": "MedAILib.tasks.synthesis.trainer",
    "ood": "MedAILib.tasks.ood.autoencoder",
    "denoising": "MedAILib.tasks.denoising.trainer",
    "label-generator": "MedAILib.tasks.augmentation.label_gan",
}

# "epoch 3/8 loss 0.41 val Dice 0.78 (12 s; about 1.2 min left)": the epoch line every trainer logs
_EPOCH = re.compile(r"epoch (\d+)/(\d+)")
_LEFT = re.compile(r"about ([0-9.]+) min left")


def register(sub) -> None:
    # Trainer modules import torch and MONAI (seconds): they are imported only when `medai train`
    # runs, so every other command starts fast. Each trainer parses its own arguments.
    p = sub.add_parser("train", help="train a model and write it as a MONAI bundle",
                       description=__doc__.split("\n")[0] + " Run `medai train TASK --help` for a task's options.")
    p.add_argument("--progress", choices=["text", "json"], default="text",
                   help="json: machine-readable events on stdout (for Slicer and scripts)")
    p.add_argument("task", choices=list(TRAINERS), help="what to train")
    p.add_argument("task_args", nargs=argparse.REMAINDER, help="the task's own options")
    p.set_defaults(func=run)


class _EventHandler(logging.Handler):
    """Trainer log records -> JSON events (progress for epoch lines, log for the rest)."""

    def emit(self, record):
        from MedAILib.core import events

        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken log call must not stop training
            return
        m = _EPOCH.search(msg)
        if m and int(m.group(2)) > 0:
            left = _LEFT.search(msg)
            events.emit(events.PROGRESS, fraction=min(1.0, int(m.group(1)) / int(m.group(2))), message=msg,
                        eta_s=float(left.group(1)) * 60 if left else None)
        elif record.levelno >= logging.WARNING:
            events.emit(events.WARNING, message=msg, kind="training")
        else:
            events.emit(events.LOG, message=msg)


def _split_progress(task_args: list) -> tuple:
    """``--progress json`` may also follow the task (``medai train segmentation ... --progress json``)."""
    out, mode, i = [], None, 0
    while i < len(task_args):
        a = task_args[i]
        if a == "--progress" and i + 1 < len(task_args) and task_args[i + 1] in ("text", "json"):
            mode = task_args[i + 1]
            i += 2
            continue
        if a.startswith("--progress=") and a.split("=", 1)[1] in ("text", "json"):
            mode = a.split("=", 1)[1]
            i += 1
            continue
        out.append(a)
        i += 1
    return out, mode


def run(args) -> int:
    task_args, mode = _split_progress(list(args.task_args))
    if mode:
        args.progress = mode
    json_mode = getattr(args, "progress", "text") == "json"
    module = importlib.import_module(TRAINERS[args.task])
    doc = (module.__doc__ or args.task).strip().split("\n")[0]
    tp = argparse.ArgumentParser(prog=f"medai train {args.task}", description=doc)
    module.add_arguments(tp)
    targs = tp.parse_args(task_args)
    # The exact command, for the model card (reproducible from the repository root).
    targs.command_line = "medai " + shlex.join(sys.argv[1:])
    if not json_mode:
        return int(module.run(targs) or 0)
    from MedAILib.core import events

    engine_log = logging.getLogger("MedAILib")
    handler = _EventHandler(level=logging.INFO)
    old_level, old_propagate = engine_log.level, engine_log.propagate
    engine_log.addHandler(handler)
    engine_log.setLevel(logging.INFO)
    engine_log.propagate = False  # the events carry the lines; no second copy on stderr
    events.emit(events.PROGRESS, fraction=0.0, message=f"training {args.task}", eta_s=None,
                command=f"train {args.task}", cases=1)
    try:
        code = int(module.run(targs) or 0)
    finally:
        engine_log.removeHandler(handler)
        engine_log.setLevel(old_level)
        engine_log.propagate = old_propagate
    out = getattr(targs, "out", None) or getattr(targs, "bundle", None)
    events.emit(events.DONE, status=events.COMPLETE if code == 0 else events.NOTHING_DONE,
                outputs=[str(out)] if out and code == 0 else [], failed=[], skipped=[], report=None)
    return code
