"""``medai train <task> ...``: train the models this repository ships, reproducibly from the repository.

Each trainer is a module with ``add_arguments(parser)`` and ``run(args) -> int``; add yours to
``TRAINERS`` (name -> module path). Trainers whose module is absent are left out of the help.
"""

from __future__ import annotations

import importlib
import shlex
import sys

# name -> module with add_arguments(parser) and run(args); order = order in --help.
TRAINERS = {
    "segmentation": "MedAILib.training.segmentation",
    "classification": "MedAILib.training.classification",
    "synthesis": "MedAILib.training.synthesis",
}


def _module(path: str):
    try:
        return importlib.import_module(path)
    except ModuleNotFoundError as e:
        if e.name == path:
            return None  # trainer not built yet
        raise


def register(sub) -> None:
    p = sub.add_parser("train", help="train a model and write it as a MONAI bundle",
                       description=__doc__.split("\n")[0])
    tsub = p.add_subparsers(dest="trainer", metavar="TASK")
    for name, path in TRAINERS.items():
        module = _module(path)
        if module is None:
            continue
        doc = (module.__doc__ or name).strip().split("\n")[0]
        tp = tsub.add_parser(name, help=doc, description=doc)
        module.add_arguments(tp)
        tp.set_defaults(func=_runner(module))
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _runner(module):
    def run(args) -> int:
        # The exact command, for the model card (reproducible from the repository root).
        args.command_line = "medai " + shlex.join(sys.argv[1:])
        return int(module.run(args) or 0)

    return run
