"""The user's MedAI folder (``MEDAI_HOME``, default ``~/.medai``): downloaded bundles, trust list,
user catalogue. Nothing else in MedAILib decides where these live."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from MedAILib.core.errors import ModelError
from MedAILib.core.names import check_name


def medai_home() -> Path:
    env = os.environ.get("MEDAI_HOME")
    return Path(env).expanduser() if env else Path.home() / ".medai"


def models_dir() -> Path:
    """Downloaded/imported bundles, one folder per catalogue id."""
    return medai_home() / "models"


def downloads_dir() -> Path:
    """Archives as downloaded (kept so a resumed or offline run can re-verify them)."""
    return medai_home() / "downloads"


def bundle_dir(model_id: str) -> Path:
    """``models/<model_id>``; an id that is not one plain name (``..``, ``/abs/dir``, ``a/b``) is refused."""
    check_name(model_id, "model id", ModelError)
    return models_dir() / model_id


def remove_tree_in_cache(path) -> None:
    """Delete ``path`` (a folder or file) only if it lies inside the model cache, checked after
    resolving symbolic links: a link ``models/x -> /elsewhere`` or a name that climbs out of the
    cache is refused instead of deleting what it points at."""
    path = Path(path)
    root = models_dir().resolve()
    if path.is_symlink():
        # the link itself must live in the cache; what it points at is never ours to delete
        where = path.parent.resolve()
        if where != root and root not in where.parents:
            raise ModelError(f"refusing to delete {path}: it is not inside the model cache {root}",
                             "remove it by hand if you really mean to; MedAI only deletes inside its cache")
        path.unlink()
        return
    real = path.resolve()
    if real == root or root not in real.parents:
        raise ModelError(f"refusing to delete {path}: it is not inside the model cache {root}"
                         + (f" (it resolves to {real})" if real != path.absolute() else ""),
                         "remove it by hand if you really mean to; MedAI only deletes inside its cache")
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def sha256_file(path, chunk: int = 1 << 20) -> str:
    from MedAILib.models.checksums import digest_file

    return digest_file(path, "sha256", chunk)


# Names a model's downloaded archive can have (download.archive_path) and their partial downloads.
ARCHIVE_SUFFIXES = (".zip", ".bin", ".zip.part", ".bin.part")


def remove_model(model_id: str) -> list:
    """Delete a model's cached bundle and archive; returns what was removed.

    Exact archive names, no glob: ``a.*`` would also match model ``a.b``'s archive, and an id
    holding ``*`` would match everything."""
    removed = []
    target = bundle_dir(model_id)
    if target.exists() or target.is_symlink():
        remove_tree_in_cache(target)
        removed.append(str(target))
    dl = downloads_dir()
    for suffix in ARCHIVE_SUFFIXES:
        f = dl / f"{model_id}{suffix}"
        if f.is_file() and not f.is_symlink():
            f.unlink()
            removed.append(str(f))
    return removed
