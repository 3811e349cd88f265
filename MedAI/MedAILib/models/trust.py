"""Which bundles may run. A bundle's config can execute Python (``$`` expressions, ``_target_``,
``scripts/``) and its root folder is put on ``sys.path``, so only catalogue bundles or bundles the
user trusted explicitly are loaded.

What the trust hash covers (``bundle_hash``): every file in the bundle folder, whatever its name
or sub-folder (``.py`` in the root, ``scripts/``, ``configs/``, a ``.so``, ``docs/``), EXCEPT the
weights files in ``models/`` (``.pt``/``.pth`` are loaded with ``torch.load(weights_only=True)``,
which runs no code, and catalogue models check them against their published checksum;
``.ts``/``.onnx``/``.safetensors``/``.ckpt`` there are never loaded by MedAI) and MedAI's own
cache marker. Why not just configs/ and scripts/: with the root on ``sys.path`` any module in the
root is importable by a config, and a config may read any file. Docs are hashed too: they are
small, and a config could read one.

Compiled Python (any ``.pyc``/``.pyo`` or ``__pycache__`` folder) makes a bundle untrusted: Python
runs a ``.pyc`` instead of its source when its header matches, so a planted one would run code the
hash of the ``.py`` never saw. MedAI imports bundle code with ``sys.dont_write_bytecode`` set, so
running a bundle never creates one. A link that leads out of the bundle folder is refused too.

User trust is recorded in ``MEDAI_HOME/trusted.json`` (``{"bundles": {path: record}}``). A record
file that cannot be read or has another shape means "nothing is trusted", with a message naming
the file; trusting again sets the damaged file aside (``trusted.json.damaged-<time>``) and starts
a new one.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from pathlib import Path
from typing import Optional

from MedAILib.core.atomic import atomic_output
from MedAILib.core.errors import ModelError
from MedAILib.models.cache import medai_home

HASH_VERSION = 2
WEIGHT_SUFFIXES = (".pt", ".pth", ".ts", ".onnx", ".safetensors", ".ckpt")
CACHE_MARKER = ".medai-source.json"  # written by models.download for cached catalogue models
COMPILED_SUFFIXES = (".pyc", ".pyo")


def trust_store_path() -> Path:
    return medai_home() / "trusted.json"


class BundleContentError(Exception):
    """The bundle holds something no hash can vouch for (compiled Python, a link out of the folder)."""


def _hashed_files(root: Path) -> list:
    """Every file the hash covers, as (relative posix name, path), sorted; raises BundleContentError."""
    out = []
    real_root = root.resolve()
    seen = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        here = Path(folder)
        real_here = here.resolve()
        if real_here != real_root and real_root not in real_here.parents:
            raise BundleContentError(f"{here.relative_to(root).as_posix()} is a link that leads out of the bundle "
                                     f"(to {real_here})")
        if real_here in seen:
            raise BundleContentError(f"{here.relative_to(root).as_posix()} is a link back into the bundle (a loop)")
        seen.add(real_here)
        for d in dirs:
            if d == "__pycache__":
                raise BundleContentError(f"it holds compiled Python ({(here / d).relative_to(root).as_posix()}/)")
        for name in files:
            f = here / name
            rel = f.relative_to(root).as_posix()
            if name.lower().endswith(COMPILED_SUFFIXES):
                raise BundleContentError(f"it holds compiled Python ({rel})")
            real = f.resolve()
            if not real.is_file():
                raise BundleContentError(f"{rel} is a broken link or not a regular file")
            if real_root not in real.parents:
                raise BundleContentError(f"{rel} is a link that leads out of the bundle (to {real})")
            top = rel.split("/", 1)[0]
            if top == "models" and name.lower().endswith(WEIGHT_SUFFIXES):
                continue  # weights: loaded with weights_only=True (no code), checksummed for catalogue models
            if rel == CACHE_MARKER:
                continue
            out.append((rel, f))
    return sorted(out)


def bundle_hash(bundle_path) -> str:
    """SHA-256 over every file of the bundle except weights (relative name + content); see module doc.
    Raises BundleContentError for compiled Python or links out of the folder."""
    root = Path(bundle_path)
    h = hashlib.sha256()
    h.update(f"medai-bundle-hash-v{HASH_VERSION}\0".encode())
    for rel, f in _hashed_files(root):
        h.update(rel.encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()


def configs_hash(bundle_path) -> str:
    """Kept for callers of the old name: the whole-bundle hash (:func:`bundle_hash`)."""
    return bundle_hash(bundle_path)


# --- the record file ------------------------------------------------------------------------------
def _load_store() -> tuple:
    """({"bundles": {...}}, problem): problem is '' or why the record file cannot be used."""
    p = trust_store_path()
    if not p.exists() and not p.is_symlink():
        return {"bundles": {}}, ""
    try:
        text = p.read_text(encoding="utf-8")
    except IsADirectoryError:
        return {"bundles": {}}, "it is a folder, not a file"
    except PermissionError:
        return {"bundles": {}}, "permission denied reading it"
    except UnicodeDecodeError:
        return {"bundles": {}}, "it is not text (random or binary bytes)"
    except OSError as e:
        return {"bundles": {}}, f"it cannot be read ({e.strerror or e})"
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        return {"bundles": {}}, f"it is not valid JSON ({e.msg} at line {e.lineno})"
    if not isinstance(doc, dict):
        return {"bundles": {}}, f"it holds a JSON {_json_kind(doc)}, not the expected object {{\"bundles\": {{...}}}}"
    bundles = doc.get("bundles", {})
    if not isinstance(bundles, dict):
        return {"bundles": {}}, f"its \"bundles\" is a JSON {_json_kind(bundles)}, not an object of records"
    return doc, ""


def _json_kind(value) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "true/false",
            type(None): "null", dict: "object"}.get(type(value), type(value).__name__)


def _set_aside_damaged() -> Optional[Path]:
    """Move a damaged record file out of the way (kept for the user to look at); returns where."""
    p = trust_store_path()
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    aside = p.with_name(f"{p.name}.damaged-{stamp}")
    try:
        os.replace(p, aside)
    except OSError as e:
        raise ModelError(f"the trust record file {p} is damaged and cannot be set aside ({e.strerror or e})",
                         f"move or delete {p} by hand, then trust the bundle again") from e
    return aside


def _save_store(store: dict) -> None:
    p = trust_store_path()
    p.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(p) as tmp:
        Path(tmp).write_text(json.dumps(store, indent=2), encoding="utf-8")


def trust(bundle_path, reason: str = "trusted by the user (--trust)") -> str:
    """Record ``bundle_path`` (its current content) as trusted; returns the bundle hash.

    A damaged record file is set aside first (its name is logged and kept in ``last_set_aside``)."""
    global last_set_aside
    path = Path(bundle_path).resolve()
    if not (path / "configs").is_dir():
        raise ModelError(f"{path} is not a MONAI bundle (no configs/ folder)",
                         "give the bundle's top folder (the one holding configs/ and models/)")
    try:
        digest = bundle_hash(path)
    except BundleContentError as e:
        raise ModelError(f"refusing to trust bundle {path}: {e}",
                         "compiled Python (.pyc, __pycache__) and links out of the folder are never trusted: "
                         "delete them (they are not needed: Python runs the .py sources) and trust it again") from None
    store, problem = _load_store()
    last_set_aside = _set_aside_damaged() if problem else None
    store.setdefault("bundles", {})[str(path)] = {
        "bundle_sha256": digest, "hash_version": HASH_VERSION, "reason": reason,
        "trusted_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    _save_store(store)
    return digest


last_set_aside: Optional[Path] = None


def untrust(bundle_path) -> bool:
    store, problem = _load_store()
    if problem:
        return False
    removed = store.get("bundles", {}).pop(str(Path(bundle_path).resolve()), None) is not None
    if removed:
        _save_store(store)
    return removed


def _is_shipped(path: Path, catalogue) -> bool:
    for entry in catalogue or []:
        shipped = entry.shipped_path() if entry.origin == "shipped" else None
        if shipped is not None and shipped.resolve() == path:
            return True
    return False


def trust_status(bundle_path, catalogue=None) -> tuple:
    """(trusted: bool, why: str)."""
    path = Path(bundle_path).resolve()
    if _is_shipped(path, catalogue):
        return True, "shipped with MedAI (catalogue)"
    store, problem = _load_store()
    if problem:
        return False, f"the trust record file {trust_store_path()} is damaged ({problem}), so nothing in it is trusted"
    rec = store.get("bundles", {}).get(str(path))
    if rec is None:
        return False, "not trusted"
    if not isinstance(rec, dict):
        return False, f"its record in {trust_store_path()} is damaged (a JSON {_json_kind(rec)}, not an object)"
    try:
        digest = bundle_hash(path)
    except BundleContentError as e:
        return False, str(e)
    if rec.get("hash_version") != HASH_VERSION or "bundle_sha256" not in rec:
        return False, ("it was trusted by an older MedAI whose check covered only configs/ and scripts/; "
                       "it must be trusted again under the whole-bundle check")
    if rec.get("bundle_sha256") != digest:
        return False, "its files (code, configs or other non-weight files) changed since it was trusted"
    return True, str(rec.get("reason", "trusted"))


def require_trusted(bundle_path, catalogue=None) -> str:
    ok, why = trust_status(bundle_path, catalogue)
    if not ok:
        path = Path(bundle_path).resolve()
        if "compiled Python" in why or "link" in why:
            raise ModelError(f"refusing to run bundle {path}: {why}; no trust record can vouch for it",
                             "delete the compiled files (.pyc, __pycache__) or the link (Python runs the .py "
                             f"sources), read what is left, and trust it again: `medai models trust {path}`")
        raise ModelError(
            f"refusing to run bundle {path}: {why}; a bundle's config and code can run arbitrary Python",
            f"read {path / 'configs'} and its Python files and, only if you trust its author, run again with "
            f"`--trust {path}` (recorded in {trust_store_path()})")
    return why
