"""``medai evaluate <kind> ...``: score results against references.

Each kind is a module with ``add_arguments(parser)`` and ``run(args) -> int``; add yours to
``EVALUATORS`` (name -> module path).
"""

from __future__ import annotations

import importlib

# name -> module with add_arguments(parser) and run(args); order = order in --help.
EVALUATORS = {
    "image": "MedAILib.tasks.synthesis.evaluate_files",
    "classification": "MedAILib.tasks.classification.evaluate",
    "segmentation": "MedAILib.tasks.segmentation.evaluate",
}


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="score results against references (image similarity, ...)",
                       description=__doc__.split("\n")[0])
    esub = p.add_subparsers(dest="evaluator", metavar="KIND")
    for name, path in EVALUATORS.items():
        module = importlib.import_module(path)  # argument definitions only; heavy imports are in run()
        doc = (module.__doc__ or name).strip().split("\n")[0]
        ep = esub.add_parser(name, help=doc, description=doc)
        module.add_arguments(ep)
        ep.set_defaults(func=module.run)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
