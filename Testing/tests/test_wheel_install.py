"""The engine as a wheel: `pip wheel .`, installed into a fresh venv outside the checkout, finds its
catalogue and shipped models (package data) and segments a real hippocampus image.

The fresh venv gets the wheel itself (``--no-deps``); its third-party dependencies come from this
test environment's site-packages through a ``.pth`` path line. Such a line adds the folder to
``sys.path`` without running the ``.pth`` files inside it, so this checkout's editable install of
MedAILib is NOT visible there: only the wheel's own copy can be imported.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(root / "dist"), str(REPO)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    wheel = next((root / "dist").glob("medai-*.whl"))
    env_dir = root / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "_deps_from_test_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEDAI_RESOURCES", "PYTHONPATH"))}
    env["MEDAI_HOME"] = str(root / "home")
    return wheel, env_dir, env, root


def test_wheel_holds_the_catalogue_and_shipped_bundles(wheel_env):
    import zipfile

    names = set(zipfile.ZipFile(wheel_env[0]).namelist())
    for needed in ("MedAILib/resources/catalogue.json", "MedAILib/resources/catalogue.schema.json",
                   "MedAILib/resources/terminology_map.json",
                   "MedAILib/resources/Models/hippocampus_unet/configs/inference.json",
                   "MedAILib/resources/Models/hippocampus_unet/models/model.pt"):
        assert needed in names, needed


def test_installed_wheel_lists_models_and_segments_a_real_image(wheel_env, data_dir):
    _, env_dir, env, root = wheel_env
    medai = env_dir / "bin" / "medai"
    where = subprocess.run([str(env_dir / "bin" / "python"), "-c", "import MedAILib; print(MedAILib.__file__)"],
                           capture_output=True, text=True, env=env, cwd=root, check=True).stdout.strip()
    assert where.startswith(str(env_dir)), f"imported {where}, not the wheel's copy"
    r = subprocess.run([str(medai), "models", "list"], capture_output=True, text=True, env=env, cwd=root, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "hippocampus_unet" in r.stdout and "shipped" in r.stdout
    image = data_dir / "msd-hippocampus" / "imagesTr" / "hippocampus_003.nii.gz"
    if not image.exists():
        pytest.skip(f"{image} not in the data folder")
    out = root / "seg.seg.nrrd"
    r = subprocess.run([str(medai), "segment", str(image), "-o", str(out), "--model", "hippocampus_unet"],
                       capture_output=True, text=True, env=env, cwd=root, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    import numpy as np

    from MedAILib.io import read_image, read_segmentation

    seg = read_segmentation(out)
    ref = read_image(data_dir / "msd-hippocampus" / "labelsTr" / "hippocampus_003.nii.gz")
    assert seg.same_grid(ref)
    a, b = seg.array > 0, ref.array > 0
    dice = 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())
    assert dice > 0.8, f"hippocampus Dice {dice:.3f} from the installed wheel"
