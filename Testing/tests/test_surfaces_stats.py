"""Surfaces (`--surfaces DIR`), per-segment statistics, and the domain check, on real hippocampus data."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from MedAILib.cli import main
from MedAILib.core.errors import InputError
from MedAILib.io import read_image, read_segmentation
from MedAILib.io.surfaces import segment_mesh, write_surfaces
from MedAILib.tasks.segmentation.statistics import segment_statistics

warnings.filterwarnings("ignore", module="monai")
HIPPO = "msd-hippocampus"
FLAIR = "tcia-brain-tumor-progression-dicom/PGBM-003/36468-FLAIRreg-58706"


@pytest.fixture(autouse=True)
def medai_home(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDAI_HOME", str(tmp_path / "medai_home"))


def _mesh_volume(verts, faces) -> float:
    t = verts[faces]
    return float(np.einsum("ij,ij->i", t[:, 0], np.cross(t[:, 1], t[:, 2])).sum() / 6.0)


def test_surfaces_enclose_the_segment_volume_in_ras_and_lps(data_dir, tmp_path):
    vtk = pytest.importorskip("vtk")
    lab = read_segmentation(data_dir / HIPPO / "labelsTr" / "hippocampus_003.nii.gz")
    ras = write_surfaces(lab, tmp_path / "ras", space="RAS")
    lps = write_surfaces(lab, tmp_path / "lps", space="LPS", fmt="obj")
    assert [p.name for p in ras] == ["label_1.RAS.stl", "label_2.RAS.stl"]
    assert [p.name for p in lps] == ["label_1.LPS.obj", "label_2.LPS.obj"]
    for value, path in zip((1, 2), ras):
        reader = vtk.vtkSTLReader()
        reader.SetFileName(str(path))
        reader.Update()
        poly = reader.GetOutput()
        mass = vtk.vtkMassProperties()
        mass.SetInputData(poly)
        mass.Update()
        voxel_mm3 = float(np.sum(lab.array == value) * np.prod(lab.spacing))
        assert mass.GetVolume() == pytest.approx(voxel_mm3, rel=0.15)  # smoothing rounds corners off
        pts = np.array([poly.GetPoint(i) for i in range(poly.GetNumberOfPoints())])
        kji = np.argwhere(lab.array == value)
        box = lab.ijk_to_ras_points(kji[:, ::-1].astype(float))
        assert np.all(pts.min(0) > box.min(0) - 2) and np.all(pts.max(0) < box.max(0) + 2)
        assert "RAS" in open(path, "rb").read(80).decode()
        # outward normals: the signed volume is positive, in both spaces (LPS mirrors two axes)
        v_ras, f_ras = segment_mesh(lab, value, space="RAS")
        v_lps, f_lps = segment_mesh(lab, value, space="LPS")
        assert _mesh_volume(v_ras, f_ras) > 0 and _mesh_volume(v_lps, f_lps) > 0
        np.testing.assert_allclose(v_lps, v_ras * [-1, -1, 1], atol=1e-6)
    with pytest.raises(InputError, match="already exists"):
        write_surfaces(lab, tmp_path / "ras", space="RAS")


def test_statistics_match_counts_and_intensities(data_dir):
    img = read_image(data_dir / HIPPO / "imagesTr" / "hippocampus_003.nii.gz")
    lab = read_segmentation(data_dir / HIPPO / "labelsTr" / "hippocampus_003.nii.gz")
    rows = segment_statistics(lab, [img], ["T1"])
    for r in rows:
        m = lab.array == r["value"]
        assert r["voxels"] == int(m.sum()) and r["volume_ml"] == pytest.approx(m.sum() * np.prod(lab.spacing) / 1000)
        assert r["intensity"]["T1"]["mean"] == pytest.approx(float(img.array[m].mean()), rel=1e-4)
        assert r["intensity"]["T1"]["std"] == pytest.approx(float(img.array[m].std()), rel=1e-3)
        kji = np.argwhere(m)
        assert r["bbox_ijk"] == {"min": kji.min(0)[::-1].tolist(), "max": kji.max(0)[::-1].tolist()}


def test_cli_surfaces_and_statistics_in_the_report(data_dir, tmp_path):
    f = data_dir / HIPPO / "imagesTr" / "hippocampus_003.nii.gz"
    rc = main(["segment", str(f), "-o", str(tmp_path / "o.seg.nrrd"), "--surfaces", str(tmp_path / "surf"),
               "--surface-space", "RAS", "--report", str(tmp_path / "r.json"), "--device", "cpu", "--progress", "none"])
    assert rc == 0
    (row,) = json.loads((tmp_path / "r.json").read_text())["cases"]
    assert sorted(p.split("/")[-1] for p in row["surfaces"]) == ["anterior.RAS.stl", "posterior.RAS.stl"]
    assert {s["name"] for s in row["statistics"]} == {"anterior", "posterior"}
    assert all(s["intensity"]["image"]["mean"] is not None for s in row["statistics"])


def test_whole_brain_flair_into_hippocampus_model_is_refused_then_warned(data_dir, tmp_path, capsys):
    """Issue 16: the hippocampus model on a whole-brain FLAIR reported 78 mL of 'anterior' silently."""
    common = ["--device", "cpu", "--progress", "none"]
    rc = main(["segment", str(data_dir / FLAIR), "-o", str(tmp_path / "a.seg.nrrd"),
               "--report", str(tmp_path / "a.json"), *common])
    assert rc == 2
    (row,) = json.loads((tmp_path / "a.json").read_text())["cases"]
    assert "does not look like what hippocampus_unet was trained on" in row["error"]
    assert "field of view 220 x 193 x 143 mm" in row["error"] and "--accept-input-warnings" in row["hint"]
    assert not (tmp_path / "a.seg.nrrd").exists()
    rc = main(["segment", str(data_dir / FLAIR), "-o", str(tmp_path / "b.seg.nrrd"), "--accept-input-warnings",
               "--report", str(tmp_path / "b.json"), *common])
    assert rc == 0
    (row,) = json.loads((tmp_path / "b.json").read_text())["cases"]
    assert any("field of view" in w for w in row["warnings"])
    assert "WARNING" in capsys.readouterr().err
