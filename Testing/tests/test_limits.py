"""Size limits (issue 14, MedAILib.core.limits): images measured from their header and packs from
their member table, refused before anything is allocated or unpacked, with the limit's name and how
to raise it. Through the CLI (2 GiB NIfTI bomb in 1 GiB of address space, 7 MB -> 207 MB zip ...):
the "limits" scenarios of Testing/badinputs/cli_scenarios.py."""

import zipfile

import numpy as np
import pytest

from MedAILib.core import limits
from MedAILib.core.errors import InputError, ModelError, OutputError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in limits.DEFAULTS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MEDAI_HOME", str(tmp_path / "home"))


def test_defaults_and_environment(monkeypatch):
    assert limits.limit("MEDAI_MAX_IMAGE_VOXELS") == 1 << 29
    monkeypatch.setenv("MEDAI_MAX_IMAGE_VOXELS", "1_000")
    assert limits.limit("MEDAI_MAX_IMAGE_VOXELS") == 1000
    monkeypatch.setenv("MEDAI_MAX_IMAGE_VOXELS", "2e9")
    assert limits.limit("MEDAI_MAX_IMAGE_VOXELS") == 2_000_000_000
    for bad, why in (("lots", "is not a number"), ("-5", "must be positive"), ("0", "must be positive")):
        monkeypatch.setenv("MEDAI_MAX_IMAGE_VOXELS", bad)
        with pytest.raises(InputError, match=why):
            limits.limit("MEDAI_MAX_IMAGE_VOXELS")


def test_image_size_check_names_the_limit_and_how_to_raise_it(monkeypatch):
    limits.check_image_size("ok.nii.gz", (512, 512, 2048), 2)  # a long whole-body CT fits
    with pytest.raises(InputError) as e:
        limits.check_image_size("bomb.nii.gz", (2048, 1024, 1024), 1)
    assert "bomb.nii.gz is too large" in e.value.message and "2048 x 1024 x 1024" in e.value.message
    assert "MEDAI_MAX_IMAGE_VOXELS" in e.value.message and "export MEDAI_MAX_IMAGE_VOXELS=" in e.value.hint
    with pytest.raises(InputError, match="MEDAI_MAX_IMAGE_BYTES"):
        limits.check_image_size("rgb64.nrrd", (512, 512, 1024), 24)  # 6 GiB of 3-component doubles
    monkeypatch.setenv("MEDAI_MAX_IMAGE_VOXELS", str(10 ** 10))
    monkeypatch.setenv("MEDAI_MAX_IMAGE_BYTES", str(10 ** 11))
    limits.check_image_size("bomb.nii.gz", (2048, 1024, 1024), 1)  # raised: accepted


def test_pack_size_check(monkeypatch):
    assert limits.check_pack_size("p.zip", [100, 200], 150) == 300  # small packs may compress well
    with pytest.raises(ModelError, match="MEDAI_MAX_PACK_RATIO"):
        limits.check_pack_size("bomb.zip", [7 << 20, 200 << 20], 7_300_000)  # the 7 MB -> 207 MB
    limits.check_pack_size("weights.zip", [300 << 20], 280 << 20)  # real weights barely compress
    monkeypatch.setenv("MEDAI_MAX_PACK_FILES", "3")
    with pytest.raises(ModelError, match="4 files, over the limit of 3"):
        limits.check_pack_size("many.zip", [1, 1, 1, 1], 4)
    monkeypatch.setenv("MEDAI_MAX_PACK_BYTES", "1000")
    with pytest.raises(ModelError, match=r"would unpack to 1,001 bytes, over the limit of 1,000 bytes"):
        limits.check_pack_size("big.zip", [1001], 2000)


def _nifti_bomb(path, shape, dtype=np.uint8):
    import sys

    from conftest import REPO

    sys.path.insert(0, str(REPO / "Testing" / "badinputs"))
    from cli_scenarios import nifti_bomb

    return nifti_bomb(path, shape, dtype)


def test_read_image_refuses_a_bomb_from_its_header_before_reading_it(tmp_path):
    from MedAILib.io import read_image

    bomb = _nifti_bomb(tmp_path / "bomb.nii.gz", (2048, 1024, 1024))
    assert bomb.stat().st_size < 4 << 20  # a few MB on disk for 2 GiB of voxels
    import time

    t0 = time.monotonic()
    with pytest.raises(InputError, match="MEDAI_MAX_IMAGE_VOXELS"):
        read_image(bomb)
    assert time.monotonic() - t0 < 5  # header only: decompressing 2 GiB takes far longer


def test_segmentation_reader_checks_the_header_too(tmp_path):
    import sys

    from conftest import REPO

    sys.path.insert(0, str(REPO / "Testing" / "badinputs"))
    from cli_scenarios import nrrd_bomb
    from MedAILib.io import read_segmentation

    with pytest.raises(InputError, match="MEDAI_MAX_IMAGE_VOXELS"):
        read_segmentation(nrrd_bomb(tmp_path / "bomb.seg.nrrd", (2048, 1024, 512), kind="uchar", seg=True))


def _pack_with(path, members):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members:
            z.writestr(name, data)
    return path


def test_zip_bomb_refused_before_anything_is_unpacked(tmp_path):
    from MedAILib.models.download import safe_extract

    pack = _pack_with(tmp_path / "bomb.zip", [("b/configs/inference.json", "{}"), ("b/models/pad.bin", bytes(80 << 20))])
    target = tmp_path / "out"
    with pytest.raises(ModelError, match="decompression bomb"):
        safe_extract(pack, target)
    assert not target.exists()


def test_no_room_on_the_disk_is_said_before_unpacking(tmp_path, monkeypatch):
    import shutil

    from MedAILib.models import download

    pack = _pack_with(tmp_path / "p.zip", [("b/configs/inference.json", "{}"), ("b/models/w.bin", b"x" * 5000)])
    real = shutil.disk_usage
    monkeypatch.setattr(download.shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    with pytest.raises(OutputError, match="the disk is full: model pack p.zip needs"):
        download.safe_extract(pack, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_disk_filling_up_during_unpacking_names_the_cause_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    """ENOSPC raised by a write (no file name, as the kernel reports it) while a pack is unpacked:
    "disk is full" naming the pack and the folder, no half-installed model."""
    import errno
    import shutil

    from bundle_factory import make_bundle, zip_bundle
    from MedAILib.cli import main

    pack = zip_bundle(make_bundle(tmp_path / "b"), tmp_path / "mymodel.zip")
    real, calls = shutil.copyfileobj, []

    def full(src, dst, length=0):
        calls.append(dst)
        if len(calls) >= 2:
            dst.write(src.read(10))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(shutil, "copyfileobj", full)
    assert main(["models", "import", str(pack)]) == 2
    err = capsys.readouterr().err
    assert "the disk is full: unpacking model pack mymodel.zip" in err and "internal error" not in err
    models = tmp_path / "home" / "models"
    assert not models.exists() or list(models.iterdir()) == []


def test_dicom_series_checked_against_the_limits_before_reading(monkeypatch, data_dir):
    """A DICOM series is measured from its first header (columns x rows x files x BitsAllocated)
    and refused before any pixel is read, naming the series and the limit."""
    from MedAILib.io.dicom import list_dicom_series, read_series

    folder = data_dir / "tcia-brain-tumor-progression-dicom" / "PGBM-003" / "11_HCropVolume"
    series = list_dicom_series(folder)[0]
    n = series.columns * series.rows * len(series.files)
    monkeypatch.setenv("MEDAI_MAX_IMAGE_VOXELS", str(n - 1))
    with pytest.raises(InputError, match="MEDAI_MAX_IMAGE_VOXELS") as e:
        read_series(series, folder)
    assert "DICOM series" in str(e.value) and str(folder) in str(e.value)
    monkeypatch.setenv("MEDAI_MAX_IMAGE_VOXELS", str(n))
    assert read_series(series, folder).array.size == n
