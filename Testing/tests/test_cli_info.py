"""`medai info` on one real file of each kind, `--version`, and every error case (one line, no traceback)."""

import gzip
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from MedAILib import __version__


def medai(env, *args, cwd=None):
    """Run the CLI as a person would (a subprocess), through `python -m MedAILib.cli`."""
    return subprocess.run([sys.executable, "-m", "MedAILib.cli", *map(str, args)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def info_json(env, path, *extra):
    r = medai(env, "info", "--json", path, *extra)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_version(medai_env):
    r = medai(medai_env, "--version")
    assert r.returncode == 0 and r.stdout.strip() == f"medai {__version__}"


def test_console_script_exists(medai_env):
    exe = shutil.which("medai", path=str(__import__("pathlib").Path(sys.executable).parent))
    if exe is None:
        pytest.skip("the medai console script is not installed in this environment")
    r = subprocess.run([exe, "--version"], capture_output=True, text=True, env=medai_env)
    assert r.returncode == 0 and __version__ in r.stdout


def test_info_nifti(medai_env, data_dir):
    import nibabel as nib

    path = data_dir / "totalsegmentator-example" / "example_mr_sm.nii.gz"
    d = info_json(medai_env, path)
    img = nib.load(str(path))
    data = np.asarray(img.dataobj)
    assert d["size_ijk"] == list(img.shape)
    np.testing.assert_allclose(d["spacing_mm"], img.header.get_zooms(), atol=1e-4)
    np.testing.assert_allclose(d["origin_ras_mm"], img.affine[:3, 3], atol=1e-3)
    assert d["orientation"] == "".join(nib.aff2axcodes(img.affine)) == "LPS"  # SOURCES.md: stored LPS
    assert d["pixel_type"] == "int16"
    assert d["intensity_range"] == [float(data.min()), float(data.max())]
    text = medai(medai_env, "info", path)
    assert text.returncode == 0
    for needle in ("size (IJK):  117 x 91 x 20", "spacing:     3 x 3 x 3 mm", "orientation: LPS",
                   "pixel type:  int16", f"intensity:   {data.min():g} .. {data.max():g}"):
        assert needle in text.stdout, text.stdout


def test_info_dicom_folder_lists_series(medai_env, data_dir):
    folder = data_dir / "tcia-brain-tumor-progression-dicom" / "PGBM-003"
    d = info_json(medai_env, folder)
    series = d["dicom_series"]
    assert sorted(s["description"] for s in series) == ["FLAIR_reg", "HippoCrop", "T1post", "T1pre_reg", "T2_reg"]
    assert all(s["transfer_syntax"] == "1.2.840.10008.1.2.1" for s in series)
    assert d["series_uid"] == series[0]["uid"]  # the default is the first (largest) listed
    assert d["size_ijk"] == [280, 320, 22]
    assert d["modality"] == "MR"
    t2 = next(s for s in series if s["description"] == "T2_reg")
    d2 = info_json(medai_env, folder, "--series", t2["uid"])
    assert d2["series_uid"] == t2["uid"] and d2["description"] == "T2_reg"
    text = medai(medai_env, "info", folder).stdout
    assert "DICOM series (5;" in text and "T2_reg" in text and "HippoCrop" in text
    # patient identifiers never reach the output
    import pydicom

    ds = pydicom.dcmread(t2_file := sorted((folder / "37830-T2reg-78532").iterdir())[0], stop_before_pixels=True)
    assert str(ds.PatientName) and str(ds.PatientName) not in text, t2_file


def test_info_seg_nrrd(medai_env, tmp_path, oblique_volume):
    from MedAILib.io import write_segmentation
    from MedAILib.core.volume import LabelInfo

    arr = np.zeros(oblique_volume.shape, np.uint8)
    arr[2:5, 2:5, 2:5] = 1
    arr[6:8, 6:9, 6:9] = 2
    term = ("Segmentation category and type - 3D Slicer General Anatomy list~SCT^123037004^Anatomical Structure"
            "~SCT^5001000^Hippocampus~^^~Anatomic codes - DICOM master list~^^~^^")
    lab = oblique_volume.with_array(arr, labels=[LabelInfo(1, "head", (1, 0, 0), term), LabelInfo(2, "tail", (0, 1, 0))])
    write_segmentation(lab, tmp_path / "s.seg.nrrd")
    d = info_json(medai_env, tmp_path / "s.seg.nrrd")
    assert [(l["value"], l["name"]) for l in d["labels"]] == [(1, "head"), (2, "tail")]
    assert d["labels"][0]["terminology"] == term
    assert d["orientation"] == oblique_volume.axis_codes
    np.testing.assert_allclose(d["spacing_mm"], (0.7, 1.3, 2.9), atol=1e-5)
    text = medai(medai_env, "info", tmp_path / "s.seg.nrrd").stdout
    assert "label    1: head" in text and "[SCT^5001000^Hippocampus]" in text


def test_info_nrrd_matches_pynrrd(medai_env, tmp_path, data_dir):
    """A real image converted to NRRD: `medai info` agrees with pynrrd's reading of the header."""
    import nrrd

    from MedAILib.io import read_image, write_image

    path = tmp_path / "hippo.nrrd"
    write_image(read_image(data_dir / "msd-hippocampus" / "imagesTr" / "hippocampus_003.nii.gz"), path)
    data, header = nrrd.read(str(path))
    d = info_json(medai_env, path)
    assert d["size_ijk"] == [int(s) for s in header["sizes"]]
    np.testing.assert_allclose(d["spacing_mm"], np.linalg.norm(header["space directions"], axis=1), atol=1e-6)
    np.testing.assert_allclose(np.diag([-1, -1, 1]) @ np.array(d["origin_ras_mm"]), header["space origin"], atol=1e-3)
    assert d["intensity_range"] == [float(data.min()), float(data.max())]


def _corpus(tmp_path, data_dir):
    """Error cases: (argument, expected message fragment)."""
    nii = data_dir / "msd-hippocampus" / "imagesTr" / "hippocampus_001.nii.gz"
    raw = gzip.open(nii).read()
    (tmp_path / "trunc.nii").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "trunc.nii.gz").write_bytes(nii.read_bytes()[:3000])
    (tmp_path / "notes.txt").write_text("not an image\n")
    (tmp_path / "corrupt.nrrd").write_bytes(b"NRRD0004\nthis is not a header\n\n" + raw[:500])
    (tmp_path / "zero.mha").write_bytes(b"")
    (tmp_path / "emptydir").mkdir()
    (tmp_path / "junkdir").mkdir()
    (tmp_path / "junkdir" / "a.dcm").write_bytes(b"\0" * 300)
    return [
        (tmp_path / "missing.nii.gz", "does not exist"),
        (tmp_path / "trunc.nii", "is truncated"),
        (tmp_path / "trunc.nii.gz", "is truncated"),
        (tmp_path / "notes.txt", "unsupported or unrecognised image format"),
        (tmp_path / "corrupt.nrrd", "could not be read (corrupt or truncated file?)"),
        (tmp_path / "zero.mha", "is empty (0 bytes)"),
        (tmp_path / "emptydir", "no DICOM series found"),
        (tmp_path / "junkdir", "no DICOM series found"),
    ]


def test_info_errors_one_line_no_traceback(medai_env, tmp_path, data_dir):
    for path, expected in _corpus(tmp_path, data_dir):
        r = medai(medai_env, "info", path)
        assert r.returncode != 0, (path, r.stdout)
        assert expected in r.stderr, (path, r.stderr)
        assert "Traceback" not in r.stderr + r.stdout
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        assert len(lines) == 1 and lines[0].startswith("medai: error: ") and "what to do:" in lines[0], r.stderr
        assert r.stdout == ""


def test_debug_shows_traceback(medai_env, tmp_path):
    for args in (["--debug", "info", tmp_path / "nope.nii"], ["info", tmp_path / "nope.nii", "--debug"]):
        r = medai(medai_env, *args)
        assert r.returncode != 0
        assert "Traceback" in r.stderr and "does not exist" in r.stderr


def test_unknown_series_uid(medai_env, data_dir):
    r = medai(medai_env, "info", data_dir / "totalsegmentator-example" / "example_ct_dicom", "--series", "1.2.3")
    assert r.returncode != 0 and "series 1.2.3 is not in" in r.stderr and "Traceback" not in r.stderr


def test_make_compile312(tmp_path):
    """`make compile312` byte-compiles every module with Python 3.12 (Slicer's) and fails on bad syntax."""
    from conftest import REPO

    if shutil.which("make") is None:
        pytest.skip("make not installed")
    r = subprocess.run(["make", "-s", "compile312"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    if "no Python 3.12" in r.stdout:
        pytest.skip("no Python 3.12 interpreter on this machine")
    assert "Python 3.12" in r.stdout
