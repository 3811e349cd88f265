"""Shared pytest fixtures: real data location, small synthetic volumes with awkward geometry."""

import os
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "MedAI"))  # the engine, even without `pip install -e .`

try:  # keep test runs polite on 2-core machines
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass

from MedAILib.core.paths import data_dir as _data_dir  # noqa: E402
from MedAILib.core.volume import Volume  # noqa: E402


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared real-image folder (MEDAI_DATA_DIR); tests needing it skip when it is absent."""
    d = _data_dir()
    if not d.is_dir():
        pytest.skip(f"real test data not found at {d}: set MEDAI_DATA_DIR to the shared data folder")
    return d


def oblique_ijk_to_ras(spacing=(0.7, 1.3, 2.9), angles=(0.3, -0.2, 0.5), flip=(True, False, True),
                       origin=(-12.5, 33.0, 7.25)) -> np.ndarray:
    """An oblique, anisotropic, axis-flipped IJK->RAS matrix (the awkward case for I/O bugs)."""
    ax, ay, az = angles
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    r = rz @ ry @ rx
    r = r @ np.diag([-1.0 if f else 1.0 for f in flip])
    m = np.eye(4)
    m[:3, :3] = r @ np.diag(spacing)
    m[:3, 3] = origin
    return m


@pytest.fixture
def oblique_volume() -> Volume:
    rng = np.random.default_rng(0)
    arr = rng.normal(100, 20, size=(9, 11, 13)).astype(np.float32)  # K, J, I all different
    arr[2, 3, 4] = 1000.0  # a marked voxel at I=4, J=3, K=2
    return Volume(arr, oblique_ijk_to_ras())


@pytest.fixture(scope="session")
def medai_env():
    """Environment for running the `medai` CLI in a subprocess from the tests."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "MedAI") + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture
def slicer(monkeypatch, tmp_path):
    """Real Slicer (slicer-core: real MRML and module logics, Testing/slicer_real) with a closed
    scene and a fresh temporary folder per test, and a private MEDAI_HOME."""
    from slicer_support import real

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MEDAI_HOME", str(tmp_path / "medai-home"))
    s = real.activate()
    yield s
    real.reset()


_CTYPE = None


@pytest.fixture(autouse=True)
def _keep_text_encoding(request):
    """Some native library loaded by a test (VTK/ITK/Slicer's core) can switch the C locale's
    LC_CTYPE to "C": every later text file and subprocess pipe would then be ASCII in this process
    (a full-suite run failed on model cards and `medai models list` that way). Restore it after each
    test and say which test changed it, so the suite's tests stay independent of their order."""
    import locale

    global _CTYPE
    if _CTYPE is None:
        _CTYPE = locale.setlocale(locale.LC_CTYPE)
    yield
    now = locale.setlocale(locale.LC_CTYPE)
    if now != _CTYPE:
        locale.setlocale(locale.LC_CTYPE, _CTYPE)
        print(f"\nnote: {request.node.nodeid} changed LC_CTYPE to {now!r}; restored {_CTYPE!r}", file=sys.stderr)
