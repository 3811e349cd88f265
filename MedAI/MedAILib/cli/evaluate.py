"""``medai evaluate <kind> ...``: score results against references.

Each kind is a module with ``add_arguments(parser)`` and ``run(args) -> int``; add yours to
``EVALUATORS`` (name -> module path). Kinds whose module is absent are left out of the help.
"""

from __future__ import annotations

from . import optional_module

# name -> module with add_arguments(parser) and run(args); order = order in --help.
EVALUATORS = {
    "image": "MedAILib.metrics.evaluate_image",
    "classification": "MedAILib.metrics.evaluate_classification",
}


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="score results against references (image similarity, ...)",
                       description=__doc__.split("\n")[0])
    esub = p.add_subparsers(dest="evaluator", metavar="KIND")
    for name, path in EVALUATORS.items():
        module = optional_module(path)
        if module is None:
            continue
        doc = (module.__doc__ or name).strip().split("\n")[0]
        ep = esub.add_parser(name, help=doc, description=doc)
        module.add_arguments(ep)
        ep.set_defaults(func=module.run)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
