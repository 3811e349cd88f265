"""Where the real test and sample images live (MEDAI_DATA_DIR, default ../shared/data)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def data_dir() -> Path:
    """The shared data folder: ``$MEDAI_DATA_DIR`` or ``<repo>/../shared/data``. May not exist."""
    env = os.environ.get("MEDAI_DATA_DIR")
    return Path(env).expanduser() if env else (REPO_ROOT.parent / "shared" / "data")


def resources_dir() -> Path:
    """The folder holding the model catalogue and shipped bundles.

    In the repository (and an editable pip install) this is ``<repo>/Resources``; inside a Slicer
    install CMake copies it next to the package as ``MedAI/Resources`` (the MedAI module folder).
    ``MEDAI_RESOURCES`` overrides both.
    """
    env = os.environ.get("MEDAI_RESOURCES")
    if env:
        return Path(env).expanduser()
    here = Path(__file__).resolve()
    for candidate in (here.parents[2] / "Resources", here.parents[1] / "Resources"):
        if (candidate / "catalogue.json").exists() or (candidate / "Models").is_dir():
            return candidate
    return here.parents[2] / "Resources"
