"""The ``medai`` command line. Each subcommand is a module here exposing ``register(subparsers)``."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from MedAILib import __version__
from MedAILib.core.errors import MedAIError

# Modules that add a subcommand with ``register(subparsers)`` (order = order in --help). Each task's
# command lives with its task; the commands about the engine itself live here in cli/.
SUBCOMMANDS = [
    "MedAILib.cli.info",
    "MedAILib.cli.models",
    "MedAILib.tasks.segmentation.command",
    "MedAILib.tasks.classification.command",
    "MedAILib.tasks.synthesis.command",
    "MedAILib.tasks.registration.command",
    "MedAILib.tasks.fusion.command",
    "MedAILib.tasks.preprocessing.command",
    "MedAILib.cli.evaluate",
    "MedAILib.cli.train",
    "MedAILib.cli.demo",
    "MedAILib.cli.serve",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medai",
        description="MedAI: deep learning for medical images (segmentation, classification, "
        "modality conversion, fusion) from the shell, with the same engine as the Slicer modules.",
    )
    parser.add_argument("--version", action="version", version=f"medai {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for path in SUBCOMMANDS:
        importlib.import_module(path).register(sub)
    from MedAILib.client.command import add_server_arguments

    add_server_arguments(sub)  # --server/--token-file: run the cases on a `medai serve` (cli/batch.py)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in argv:  # accept `medai info X --debug` as well as `medai --debug info X`
        argv = ["--debug"] + [a for a in argv if a != "--debug"]
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="medai: %(levelname)s: %(message)s")
    if not args.debug:
        # MONAI announces an optional GPU DICOM decoder on import; not something a user can act on.
        logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except MedAIError as e:
        if args.debug:
            raise
        print(f"medai: error: {e.message}" + (f" — what to do: {e.hint}" if e.hint else ""), file=sys.stderr)
        if getattr(args, "progress", None) == "json":
            from MedAILib.core import events

            events.emit(events.ERROR, message=e.message, hint=e.hint)
        return e.exit_code
    except KeyboardInterrupt:
        print("medai: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # unexpected: still one line unless --debug
        if args.debug:
            raise
        print(f"medai: internal error: {type(e).__name__}: {e} — what to do: run again with --debug "
              "and report the output", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
