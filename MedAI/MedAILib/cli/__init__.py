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
    "MedAILib.tasks.sequences.command",
    "MedAILib.tasks.detection.command",
    "MedAILib.tasks.pretraining.command",
    "MedAILib.cli.evaluate",
    "MedAILib.cli.train",
    "MedAILib.cli.demo",
    "MedAILib.cli.serve",
]


def _command_named(argv) -> str | None:
    """The subcommand word of ``argv`` (None for ``--help``, ``--version`` or no command)."""
    for a in argv:
        if a == "--debug":
            continue
        return None if a.startswith("-") else a
    return None


def _module_of(command: str) -> str | None:
    """The one SUBCOMMANDS module that registers ``command``, found in its source text
    (``add_parser("NAME"``) so that no other command's imports are paid; None when unsure."""
    import importlib.util
    import re

    pattern = re.compile(r"""add_parser\(\s*["']%s["']""" % re.escape(command))
    found = []
    for path in SUBCOMMANDS:
        try:
            origin = importlib.util.find_spec(path).origin
            with open(origin, encoding="utf-8") as f:
                if pattern.search(f.read()):
                    found.append(path)
        except (ImportError, AttributeError, OSError, TypeError):
            return None
    return found[0] if len(found) == 1 else None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``command``, only the module of that subcommand is imported (start-up time:
    `medai models list` must not import torch, SimpleITK or another command's libraries)."""
    parser = argparse.ArgumentParser(
        prog="medai",
        description="MedAI: deep learning for medical images (segmentation, classification, "
        "modality conversion, fusion) from the shell, with the same engine as the Slicer modules.",
    )
    parser.add_argument("--version", action="version", version=f"medai {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    module = _module_of(command) if command else None
    for path in [module] if module else SUBCOMMANDS:
        importlib.import_module(path).register(sub)
    from MedAILib.server.protocol import JOB_COMMANDS

    if set(sub.choices) & set(JOB_COMMANDS):  # --server/--token-file: run the cases on a `medai serve`
        from MedAILib.client.command import add_server_arguments

        add_server_arguments(sub)
        from MedAILib.cli.cluster import add_cluster_arguments  # --cluster: the cases on Dask workers

        add_cluster_arguments(sub)
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command_named(argv))
    if "--debug" in argv:  # accept `medai info X --debug` as well as `medai --debug info X`
        argv = ["--debug"] + [a for a in argv if a != "--debug"]
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="medai: %(levelname)s: %(message)s")
    from MedAILib.core.redact import install_log_redaction

    install_log_redaction()  # no credentials in any log line either (issue 14)
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
    except (OSError, MemoryError) as e:  # a file problem or memory: say which file and why, never "internal"
        if args.debug:
            raise
        from MedAILib.core.causes import describe_os_error

        message, hint = (describe_os_error(e) if isinstance(e, OSError) else
                         ("this computer ran out of memory (the input is too large for it)",
                          "close other programs, use a smaller (cropped or downsampled) input, or a bigger computer"))
        from MedAILib.core.redact import redact

        print(redact(f"medai: error: {message} — what to do: {hint}"), file=sys.stderr)
        return 2
    except Exception as e:  # unexpected: still one line unless --debug
        if args.debug:
            raise
        from MedAILib.core.redact import redact

        print(redact(f"medai: internal error: {type(e).__name__}: {e} — what to do: run again with --debug "
                     "and report the output"), file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
