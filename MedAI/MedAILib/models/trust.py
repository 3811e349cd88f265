"""Which bundles may run. A bundle's config can execute Python (``$`` expressions, ``_target_``,
``scripts/``), so only catalogue bundles or bundles the user trusted explicitly are loaded.

User trust is recorded in ``MEDAI_HOME/trusted.json`` with a hash of the bundle's configs and
scripts: editing either makes the bundle untrusted again until the user re-trusts it.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from pathlib import Path

from MedAILib.core.atomic import atomic_output
from MedAILib.core.errors import ModelError
from MedAILib.models.cache import medai_home


def trust_store_path() -> Path:
    return medai_home() / "trusted.json"


def configs_hash(bundle_path) -> str:
    """SHA-256 over every file under configs/ and scripts/ (relative name + content)."""
    root = Path(bundle_path)
    h = hashlib.sha256()
    for sub in ("configs", "scripts"):
        folder = root / sub
        if not folder.is_dir():
            continue
        for f in sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            h.update(f.relative_to(root).as_posix().encode() + b"\0")
            h.update(f.read_bytes())
            h.update(b"\0")
    return h.hexdigest()


def _load_store() -> dict:
    p = trust_store_path()
    if not p.exists():
        return {"bundles": {}}
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError:
        return {"bundles": {}}  # a damaged store trusts nothing


def trust(bundle_path, reason: str = "trusted by the user (--trust)") -> str:
    """Record ``bundle_path`` (its current configs) as trusted; returns the configs hash."""
    path = Path(bundle_path).resolve()
    if not (path / "configs").is_dir():
        raise ModelError(f"{path} is not a MONAI bundle (no configs/ folder)",
                         "give the bundle's top folder (the one holding configs/ and models/)")
    store = _load_store()
    digest = configs_hash(path)
    store.setdefault("bundles", {})[str(path)] = {
        "configs_sha256": digest, "reason": reason,
        "trusted_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    trust_store_path().parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(trust_store_path()) as tmp:
        Path(tmp).write_text(json.dumps(store, indent=2))
    return digest


def untrust(bundle_path) -> bool:
    store = _load_store()
    removed = store.get("bundles", {}).pop(str(Path(bundle_path).resolve()), None) is not None
    if removed:
        with atomic_output(trust_store_path()) as tmp:
            Path(tmp).write_text(json.dumps(store, indent=2))
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
    rec = _load_store().get("bundles", {}).get(str(path))
    if rec is None:
        return False, "not trusted"
    if rec.get("configs_sha256") != configs_hash(path):
        return False, "its configs or scripts changed since it was trusted"
    return True, rec.get("reason", "trusted")


def require_trusted(bundle_path, catalogue=None) -> str:
    ok, why = trust_status(bundle_path, catalogue)
    if not ok:
        path = Path(bundle_path).resolve()
        raise ModelError(
            f"refusing to run bundle {path}: {why}; a bundle's config can run arbitrary Python code",
            f"read {path / 'configs'} and, only if you trust its author, run again with "
            f"`--trust {path}` (recorded in {trust_store_path()})")
    return why
