"""``medai train <task> ...``: train the models this repository ships, reproducibly from the repository.

Each trainer is a module with ``add_arguments(parser)`` and ``run(args) -> int``; add yours to
``TRAINERS`` (name -> module path).
"""

from __future__ import annotations

import argparse
import shlex
import sys

import importlib

# name -> module with add_arguments(parser) and run(args); order = order in --help.
TRAINERS = {
    "segmentation": "MedAILib.tasks.segmentation.trainer",
    "classification": "MedAILib.tasks.classification.trainer",
    "classification-clinical": "MedAILib.tasks.classification.clinical",
    "synthesis": "MedAILib.tasks.synthesis.trainer",
}


def register(sub) -> None:
    # Trainer modules import torch and MONAI (seconds): they are imported only when `medai train`
    # runs, so every other command starts fast. Each trainer parses its own arguments.
    p = sub.add_parser("train", help="train a model and write it as a MONAI bundle",
                       description=__doc__.split("\n")[0] + " Run `medai train TASK --help` for a task's options.")
    p.add_argument("task", choices=list(TRAINERS), help="what to train")
    p.add_argument("task_args", nargs=argparse.REMAINDER, help="the task's own options")
    p.set_defaults(func=run)


def run(args) -> int:
    module = importlib.import_module(TRAINERS[args.task])
    doc = (module.__doc__ or args.task).strip().split("\n")[0]
    tp = argparse.ArgumentParser(prog=f"medai train {args.task}", description=doc)
    module.add_arguments(tp)
    targs = tp.parse_args(args.task_args)
    # The exact command, for the model card (reproducible from the repository root).
    targs.command_line = "medai " + shlex.join(sys.argv[1:])
    return int(module.run(targs) or 0)
