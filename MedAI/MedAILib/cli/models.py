"""``medai models list|show|download|remove|path|import|trust``: the model catalogue and cache."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from MedAILib.core.errors import ModelError
from MedAILib.core.names import check_name


def register(sub) -> None:
    p = sub.add_parser("models", help="list, download, import and manage models (MONAI bundles)")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION")
    a = msub.add_parser("list", help="models in the catalogue and whether they are available offline")
    a.add_argument("--json", action="store_true")
    a = msub.add_parser("show", help="everything the catalogue says about a model")
    a.add_argument("id")
    a = msub.add_parser("download", help="download a model into the cache (MEDAI_HOME) and verify it")
    a.add_argument("id")
    a.add_argument("--mirror", help="base URL of a mirror holding the same file names (or MEDAI_MIRROR)")
    a = msub.add_parser("remove", help="delete a downloaded model from the cache")
    a.add_argument("id")
    a = msub.add_parser("path", help="print the folder of a model's bundle")
    a.add_argument("id")
    a = msub.add_parser("import", help="install a model pack (.zip, .tar.gz, .tgz or .tar) copied to an offline machine")
    a.add_argument("pack")
    a = msub.add_parser("trust", help="trust a bundle folder (its config can run Python code)")
    a.add_argument("path")
    try:  # `models add` (Model Zoo bundles) lives with the Model Zoo code when present
        from MedAILib.models import modelzoo

        if hasattr(modelzoo, "add_bundle"):
            a = msub.add_parser("add", help="add a bundle folder, zip or modelzoo:NAME@VERSION to your catalogue")
            a.add_argument("source")
            a.add_argument("--id", dest="model_id")
            a.add_argument("--yes", action="store_true", help="trust it without asking")
    except ImportError:  # pragma: no cover
        pass
    p.set_defaults(func=run, _parser=p)


def _status(entry) -> str:
    from MedAILib.models.download import is_cached

    if entry.is_shipped:
        return "shipped" if entry.shipped_path() and entry.shipped_path().is_dir() else "shipped (missing!)"
    try:
        return "downloaded" if is_cached(entry) else ("not downloaded" if entry.verified else "unverified")
    except Exception:  # noqa: BLE001
        return "not downloaded"


def run(args) -> int:
    from MedAILib.models import cache, download, load_catalogue, trust

    cmd = args.models_command
    if cmd is None:
        args._parser.print_help()
        return 2
    if cmd == "trust":
        digest = trust.trust(args.path)
        if trust.last_set_aside:
            print(f"note: the damaged trust record file was set aside as {trust.last_set_aside}; "
                  "bundles trusted in it must be trusted again", file=sys.stderr)
        print(f"trusted {Path(args.path).resolve()} (bundle sha256 {digest[:12]}...); "
              f"editing any of its files other than weights makes it untrusted again")
        return 0
    if cmd == "add":
        from MedAILib.models import modelzoo

        if args.model_id is not None:  # before anything is read, copied or deleted
            check_name(args.model_id, "model id (--id)", ModelError,
                       "give --id a plain name of letters, digits, '-', '_' and '.', e.g. --id my_model")

        def _dl(entry, folder):
            algorithm, value = modelzoo.expected_checksum(entry)
            name = Path(entry["source"]["url"]).name or f"{entry['id']}.zip"
            return download.download_file(entry["source"]["url"], Path(folder) / name, value,
                                          entry.get("size_bytes"), algorithm=algorithm)

        modelzoo.add_bundle(args.source, assume_yes=args.yes, model_id=args.model_id, download=_dl)
        return 0
    catalogue = load_catalogue()
    if cmd == "import":
        model_id, folder, trusted = download.import_pack(args.pack, catalogue)
        print(f"imported {model_id} into {folder}")
        if not trusted:
            print(f"this pack is not a catalogue model: to run it, trust it with `--trust {folder}`", file=sys.stderr)
        return 0
    if cmd == "list":
        rows = [{"id": e.id, "title": e.title, "task": e.task, "version": e.version, "status": _status(e),
                 "origin": e.origin} for e in catalogue]
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for r in rows:
                print(f"{r['id']:<32} {r['task']:<14} {r['status']:<16} {r['title']}")
        return 0
    entry = catalogue.get(args.id)
    if cmd == "show":
        d = dict(entry.raw)
        d["status"] = _status(entry)
        print(json.dumps(d, indent=2))
        return 0
    if cmd == "path":
        folder = entry.shipped_path() if entry.is_shipped else cache.bundle_dir(entry.id)
        if not folder.is_dir():
            raise ModelError(f"model {entry.id} is not downloaded", f"run `medai models download {entry.id}`")
        print(folder)
        return 0
    if cmd == "download":
        if entry.is_shipped:
            print(f"{entry.id} is shipped with MedAI: {entry.shipped_path()}")
            return 0
        folder = download.ensure_model(entry, mirror=args.mirror)
        print(f"{entry.id}: verified and ready in {folder}")
        return 0
    if cmd == "remove":
        if entry.is_shipped:
            raise ModelError(f"{entry.id} is shipped with MedAI and cannot be removed", "")
        removed = cache.remove_model(entry.id)
        print("removed " + ", ".join(removed) if removed else f"{entry.id} was not in the cache")
        return 0
    return 2
