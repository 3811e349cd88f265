"""Input sanity before any model runs (issue 14; MedAILib.runtime.validation.check_sanity):
label maps and segmentations given as images, absurd outliers, too thin, extremely anisotropic and
sheared volumes are refused, or warned about with --accept-input-warnings; real images are not.

Through the CLI (`medai info --check`, `medai segment`) these are the "sanity" scenarios of
Testing/badinputs/cli_scenarios.py (test_bad_inputs.py::test_scenario)."""

import numpy as np
import pytest

from conftest import oblique_ijk_to_ras
from MedAILib.core.errors import InputError
from MedAILib.core.volume import LabelInfo, Volume
from MedAILib.runtime import validation
from MedAILib.runtime.validation import (ACCEPT_ENV, absurd_outliers, check_inputs, check_sanity, labelmap_values,
                                         shear_angle)


def mr(shape=(24, 32, 28), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    k, j, i = np.indices(shape)
    c = np.array(shape) / 2
    r = np.sqrt(((k - c[0]) / c[0]) ** 2 + ((j - c[1]) / c[1]) ** 2 + ((i - c[2]) / c[2]) ** 2)
    return (np.clip(1 - r, 0, 1) * 400 + rng.normal(0, 5, shape) + 20).astype(np.float32)


def vol(a=None, m=None, **meta) -> Volume:
    return Volume(mr() if a is None else a, np.eye(4) if m is None else m, metadata=dict(meta))


@pytest.fixture(autouse=True)
def no_env_accept(monkeypatch):
    monkeypatch.delenv(ACCEPT_ENV, raising=False)


def test_clean_synthetic_and_oblique_volumes_pass(oblique_volume):
    assert check_sanity(vol(), "x") == []
    assert check_inputs([vol()], {"n_inputs": 1}) == []
    # an oblique, flipped, anisotropic (0.7 x 1.3 x 2.9 mm) but orthogonal grid is fine
    assert check_sanity(oblique_volume, "oblique") == []


@pytest.mark.parametrize("dtype,values", [(np.uint8, (0, 1)), (np.int16, (0, 1, 2, 4)), (np.float32, (0.0, 1.0, 2.0))])
def test_label_maps_are_refused(dtype, values):
    a = np.zeros((20, 24, 22), dtype)
    for n, v in enumerate(values):
        a[n * 3:(n + 1) * 3 + 4] = v
    assert labelmap_values(a) is not None
    with pytest.raises(InputError, match="looks like a label map") as e:
        check_sanity(vol(a), "mask.nii.gz")
    assert "mask.nii.gz" in e.value.message and "--accept-input-warnings" in e.value.hint


def test_labelmap_detection_confirms_on_the_whole_array():
    """The strided sample may miss rare values: the values reported come from the whole array, and a
    many-class label map (uniform regions) is recognised while a scan with as few values is not."""
    a = np.zeros((128, 128, 128), np.uint8)  # 2M voxels: the sample takes every second one
    for v in range(1, 8):
        a[v * 14:v * 14 + 10] = v
    a[0, 0, 1] = 200  # a 9th value in a single voxel the sample skips
    assert list(labelmap_values(a)) == list(range(8)) + [200]
    atlas = (np.indices((40, 40, 40)).sum(axis=0) // 6).astype(np.int16)  # 20 classes in uniform slabs
    assert labelmap_values(atlas) is not None and len(labelmap_values(atlas)) == 20
    noisy = (atlas * 10 + np.random.default_rng(0).integers(0, 9, atlas.shape)).astype(np.int16)
    assert labelmap_values(noisy) is None  # ~180 values, neighbours rarely equal: an image
    assert labelmap_values(mr()) is None
    assert labelmap_values(np.round(mr()).astype(np.int16)) is None


def test_segmentation_and_dicom_seg_are_never_images():
    seg = vol(np.zeros((10, 12, 14), np.uint8), source="/x/labels.seg.nrrd")
    seg.labels = [LabelInfo(1, "liver", (1, 0, 0))]
    with pytest.raises(InputError, match=r"is a segmentation \(.seg.nrrd\), not an image"):
        check_inputs([seg], {"accept_input_warnings": True})  # no flag helps
    with pytest.raises(InputError, match="DICOM Segmentation object"):
        check_inputs([vol(modality="SEG")], {"accept_input_warnings": True})
    with pytest.raises(InputError, match="RT structure set"):
        check_inputs([vol(modality="RTSTRUCT")], {})


@pytest.mark.parametrize("value", [1e30, -1e30, 3e9])
def test_absurd_outliers_are_found_by_robust_statistics(value):
    a = mr()
    a[3, 4, 5] = value
    count, extreme, scale = absurd_outliers(a)
    assert count == 1 and extreme == pytest.approx(value) and 300 < scale < 500  # the scale ignores the outlier
    with pytest.raises(InputError, match="1 voxel with absurd values"):
        check_sanity(vol(a), "t1.nii.gz")


def test_outlier_check_spares_sparse_and_bright_real_looking_images():
    # mostly background with a small bright object: not an outlier
    a = np.zeros((40, 40, 40), np.float32)
    a[18:21, 18:21, 18:21] = 500.0
    a += np.random.default_rng(0).normal(0, 1, a.shape).astype(np.float32)
    assert absurd_outliers(a)[0] == 0
    # CT with metal (3071 HU) and air (-1024): nothing absurd
    ct = np.random.default_rng(1).normal(40, 300, (30, 40, 40)).astype(np.int16)
    ct[0, 0, :5] = 3071
    ct[1, 1, :5] = -1024
    assert absurd_outliers(ct.astype(np.float32))[0] == 0
    # a single voxel ten times brighter than the rest is bright, not absurd
    b = mr()
    b[1, 1, 1] = 4000.0
    assert absurd_outliers(b)[0] == 0


@pytest.mark.parametrize("n", [2, 3])
def test_too_thin_volumes_are_refused(n):
    with pytest.raises(InputError, match=f"only {n} voxels thick along K"):
        check_sanity(vol(mr((n, 40, 40))), "thin.nii.gz")
    assert check_sanity(vol(mr((4, 40, 40))), "four slices") == []


def test_extreme_anisotropy_is_refused_but_thick_clinical_slices_pass():
    with pytest.raises(InputError, match="extremely anisotropic voxels"):
        check_sanity(vol(m=np.diag([0.1, 0.1, 20.0, 1.0])), "aniso")
    assert check_sanity(vol(m=np.diag([0.4, 0.4, 5.0, 1.0])), "thick slices") == []  # ratio 12.5


def test_sheared_direction_matrix_is_refused():
    m = np.eye(4)
    m[:3, 2] = [0.0, 0.5, 1.0]  # K leans towards J
    cos, angle, axes = shear_angle(m)
    assert axes == (1, 2) and angle == pytest.approx(63.43, abs=0.01)
    with pytest.raises(InputError, match="sheared geometry: its J and K axes"):
        check_sanity(vol(m=m), "tilted")
    assert shear_angle(oblique_ijk_to_ras())[0] < 1e-9  # rotation + flips: not sheared


def test_flag_and_environment_turn_refusals_into_warnings(monkeypatch):
    a = mr((2, 40, 40))
    a[0, 0, 0] = 1e30
    accepted = check_inputs([vol(a)], {"accept_input_warnings": True})
    assert len(accepted) == 2 and all("(accepted: --accept-input-warnings)" in w for w in accepted)
    assert any("absurd values" in w for w in accepted) and any("too thin" in w for w in accepted)
    monkeypatch.setenv(ACCEPT_ENV, "1")
    assert len(check_inputs([vol(a)], {})) == 2
    monkeypatch.setenv(ACCEPT_ENV, "0")
    with pytest.raises(InputError):
        check_inputs([vol(a)], {})


def test_sanity_can_be_switched_off_for_callers_that_take_masks():
    a = np.zeros((20, 24, 22), np.uint8)
    a[5:10] = 1
    assert check_inputs([vol(a)], {"sanity": False}) == []


# --- real images: none is refused, every label file is ----------------------------------------------
REAL_IMAGES = ["msd-hippocampus/imagesTr/hippocampus_001.nii.gz", "msd-hippocampus/imagesTr/hippocampus_394.nii.gz",
               "prostatex-0000/ProstateX-0000_t2_tse_tra_4.nii.gz", "prostatex-0000/ProstateX-0000_ep2d_diff_tra_7.nii.gz",
               "totalsegmentator-example/example_ct_sm.nii.gz", "totalsegmentator-example/example_mr_sm.nii.gz",
               "brainlesion-brats-examples/BraTS-GLI-00000-000/BraTS-GLI-00000-000-t1c.nii.gz",
               "brainlesion-brats-examples/BraTS-GLI-00000-000/BraTS-GLI-00000-000-t2f.nii.gz",
               "isles22-stroke/sub-strokecase0009/sub-strokecase0009_ses-0001_dwi.nii.gz",
               "isles22-stroke/sub-strokecase0009/sub-strokecase0009_ses-0001_adc.nii.gz",
               "tcia-brain-tumor-progression-dicom/PGBM-003/11_HCropVolume"]
REAL_LABELS = ["msd-hippocampus/labelsTr/hippocampus_001.nii.gz",
               "brainlesion-brats-examples/BraTS-GLI-00000-000/BraTS-GLI-00000-000-seg.nii.gz",
               "isles22-stroke/sub-strokecase0009/sub-strokecase0009_ses-0001_msk.nii.gz",
               "totalsegmentator-example/example_seg.nii.gz"]


def _real(data_dir, rel):
    from MedAILib.io import read_image

    p = data_dir / rel
    if not p.exists():
        pytest.skip(f"{rel} not in the shared data")
    return read_image(p)


@pytest.mark.parametrize("rel", REAL_IMAGES)
def test_real_images_pass_every_sanity_check(data_dir, rel):
    assert check_sanity(_real(data_dir, rel), rel) == []


@pytest.mark.parametrize("rel", REAL_LABELS)
def test_real_label_files_are_recognised_as_label_maps(data_dir, rel):
    with pytest.raises(InputError, match="looks like a label map"):
        check_sanity(_real(data_dir, rel), rel)


def test_limits_are_documented_constants():
    """The thresholds the module doc names are the ones used (a change must change the doc too)."""
    doc = validation.__doc__
    for name in ("LABELMAP_MAX_VALUES", "OUTLIER_FACTOR", "MIN_SLICES", "MAX_ANISOTROPY"):
        assert name in doc and isinstance(getattr(validation, name), (int, float))


def test_segment_refuses_an_absurd_voxel_and_proceeds_only_when_accepted(tmp_path, monkeypatch):
    """Issue 14's example through `medai segment` (the shipped hippocampus model): one voxel of 1e30
    turned a near-empty result into several mL. Refused by default (nothing written); with
    --accept-input-warnings it runs, and the warning reaches the report (the pre-check and the
    pipeline's own check both honour the flag)."""
    import contextlib
    import io
    import json

    from MedAILib.cli import main
    from MedAILib.io import write_image

    monkeypatch.setenv("MEDAI_HOME", str(tmp_path / "home"))
    clean, spiked = tmp_path / "clean.nii.gz", tmp_path / "spiked.nii.gz"
    a = mr((36, 50, 35))
    write_image(vol(a.copy()), clean)
    a[5, 6, 7] = 1e30
    write_image(vol(a), spiked)

    def segment(*args):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = main(["segment", *map(str, args), "--progress", "none"])
        return rc, err.getvalue()

    rc, err = segment(spiked, "-o", tmp_path / "refused.seg.nrrd")
    assert rc != 0 and "1 voxel with absurd values" in err and "--accept-input-warnings" in err
    assert not (tmp_path / "refused.seg.nrrd").exists()
    rc, err = segment(spiked, "-o", tmp_path / "spiked.seg.nrrd", "--accept-input-warnings",
                      "--report", tmp_path / "spiked.json")
    assert rc == 0, err
    row = json.loads((tmp_path / "spiked.json").read_text())["cases"][0]
    assert any("absurd values" in w and "accepted" in w for w in row["warnings"])
    rc, err = segment(clean, "-o", tmp_path / "clean.seg.nrrd", "--report", tmp_path / "clean.json")
    assert rc == 0, err
    clean_ml = sum(json.loads((tmp_path / "clean.json").read_text())["cases"][0]["label_volumes_ml"].values())
    spiked_ml = sum(row["label_volumes_ml"].values())
    assert spiked_ml > 2 * clean_ml + 0.5  # what the refusal protects against: the answer changed wholesale
