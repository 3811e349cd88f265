"""The user's MedAI folder (``MEDAI_HOME``, default ``~/.medai``): downloaded bundles, trust list,
user catalogue. Nothing else in MedAILib decides where these live."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path


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
    return models_dir() / model_id


def sha256_file(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def remove_model(model_id: str) -> list:
    """Delete a model's cached bundle and archive; returns what was removed."""
    removed = []
    target = bundle_dir(model_id)
    if target.exists():
        shutil.rmtree(target)
        removed.append(str(target))
    dl = downloads_dir()
    if dl.is_dir():
        for f in dl.glob(f"{model_id}.*"):
            f.unlink()
            removed.append(str(f))
    return removed
