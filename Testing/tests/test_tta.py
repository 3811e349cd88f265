"""`medai segment --tta`: flips the model allows (catalogue tta_flip_axes), an uncertainty (entropy)
volume and per-segment confidence; on real hippocampus cases the uncertainty is highest in a band at
the segment boundaries (measured against the interior and the background)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from scipy import ndimage

from MedAILib.cli import main
from MedAILib.core.errors import InputError
from MedAILib.io import read_image, read_segmentation

warnings.filterwarnings("ignore", module="monai")
CASES = ("hippocampus_003", "hippocampus_025", "hippocampus_050")  # validation cases of split.json


@pytest.fixture(autouse=True)
def medai_home(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDAI_HOME", str(tmp_path / "medai_home"))


def boundary_regions(labels: np.ndarray):
    """(band, interior, background): the band is every voxel within one voxel of a segment edge."""
    edges = np.zeros(labels.shape, bool)
    for v in np.unique(labels[labels > 0]):
        m = labels == v
        edges |= m ^ ndimage.binary_erosion(m)
    band = ndimage.binary_dilation(edges, iterations=1)
    fg = labels > 0
    return band, fg & ~band, ~fg & ~band


def test_uncertainty_is_highest_at_segment_boundaries(data_dir, tmp_path):
    img = tmp_path / "images"
    img.mkdir()
    for c in CASES:
        (img / f"{c}.nii.gz").symlink_to(data_dir / "msd-hippocampus" / "imagesTr" / f"{c}.nii.gz")
    rc = main(["segment", str(img), "-o", str(tmp_path / "out"), "--tta", "--report", str(tmp_path / "r.json"),
               "--device", "cpu", "--progress", "none"])
    assert rc == 0
    rows = {r["case"]: r for r in json.loads((tmp_path / "r.json").read_text())["cases"]}
    for c in CASES:
        unc = read_image(tmp_path / "out" / f"{c}.uncertainty.nii.gz")
        labels = read_segmentation(tmp_path / "out" / f"{c}.seg.nrrd")
        assert unc.same_grid(labels)
        u = unc.array
        assert 0.0 <= u.min() and u.max() <= 1.0
        band, interior, background = boundary_regions(labels.array)
        b, i, g = (float(u[m].mean()) for m in (band, interior, background))
        print(f"{c}: mean normalised entropy band {b:.4f}, interior {i:.4f}, background {g:.4f}")
        assert b > 10 * i and b > 10 * g, (b, i, g)
        conf = rows[c]["segment_confidence"]
        assert set(conf) == {"anterior", "posterior"} and all(0.5 < x <= 1.0 for x in conf.values())
        assert rows[c]["uncertainty"].endswith(f"{c}.uncertainty.nii.gz")


def test_tta_labels_agree_with_the_plain_run(data_dir, tmp_path):
    """Averaging two flips changes few voxels: Dice against the plain run stays high."""
    f = data_dir / "msd-hippocampus" / "imagesTr" / f"{CASES[0]}.nii.gz"
    common = ["--device", "cpu", "--progress", "none"]
    assert main(["segment", str(f), "-o", str(tmp_path / "plain.seg.nrrd"), *common]) == 0
    assert main(["segment", str(f), "-o", str(tmp_path / "tta.seg.nrrd"), "--tta", *common]) == 0
    a = read_segmentation(tmp_path / "plain.seg.nrrd").array
    b = read_segmentation(tmp_path / "tta.seg.nrrd").array
    assert (tmp_path / "tta.uncertainty.nii.gz").is_file()
    for v in (1, 2):
        dice = 2 * np.sum((a == v) & (b == v)) / (np.sum(a == v) + np.sum(b == v))
        assert dice > 0.95


def test_model_without_declared_flips_is_refused():
    from MedAILib.tasks.segmentation.tta import flip_axes

    class NoFlips:
        name = "lateral_model"
        entry = type("E", (), {"raw": {"id": "lateral_model"}})()

    with pytest.raises(InputError, match="declares no test-time flips"):
        flip_axes(NoFlips())
