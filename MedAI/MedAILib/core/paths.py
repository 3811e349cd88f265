"""Where the real test and sample images live (MEDAI_DATA_DIR, default ../shared/data)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]


def data_dir() -> Path:
    """The shared data folder: ``$MEDAI_DATA_DIR`` or ``<repo>/../shared/data``. May not exist."""
    env = os.environ.get("MEDAI_DATA_DIR")
    return Path(env).expanduser() if env else (REPO_ROOT.parent / "shared" / "data")


def resources_dir() -> Path:
    """The package data folder: model catalogue + schema, terminology map, shipped bundles.

    It ships inside the package (``MedAILib/resources``), so a wheel, an editable install and the
    Slicer install (CMake copies the package with its data) all find it the same way.
    ``MEDAI_RESOURCES`` overrides it (tests, a site-wide catalogue).
    """
    env = os.environ.get("MEDAI_RESOURCES")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[1] / "resources"
