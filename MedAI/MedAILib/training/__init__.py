"""Training code for the models this repository ships (reproducible from the repository).

Each trainer module exposes ``add_arguments(parser)`` and ``run(args) -> int`` so the
``medai train <name>`` command can register it.
"""
