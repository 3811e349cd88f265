"""Registration: output geometry, transform direction convention, .tfm round trip, multi-input alignment."""

import json

import numpy as np
import pytest
import SimpleITK as sitk

from MedAILib.core.errors import InputError
from MedAILib.tasks.registration import registration as R
from MedAILib.tasks.registration.align import align_inputs
from MedAILib.io import from_sitk, read_image, to_sitk, write_image
from MedAILib.core.volume import Volume


def phantom(shape=(20, 44, 40), spacing=(2.0, 2.0, 3.0), contrast="t1", origin=(-40.0, -44.0, -30.0)) -> Volume:
    """A head-like phantom (KJI array) with asymmetric inner structures; 't2' inverts the tissue contrast."""
    k, j, i = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    x, y, z = (i - shape[2] / 2) * spacing[0], (j - shape[1] / 2) * spacing[1], (k - shape[0] / 2) * spacing[2]
    head = (x / 34) ** 2 + (y / 38) ** 2 + (z / 26) ** 2 < 1
    a = np.zeros(shape, np.float32)
    a[head] = 100
    blob1 = ((x - 10) / 10) ** 2 + ((y + 8) / 14) ** 2 + ((z - 4) / 9) ** 2 < 1
    blob2 = ((x + 14) / 7) ** 2 + ((y - 12) / 6) ** 2 + ((z + 6) / 12) ** 2 < 1
    bar = (np.abs(x + 2) < 3) & (np.abs(y + 20) < 10) & (np.abs(z) < 15)
    if contrast == "t1":
        a[blob1], a[blob2], a[bar] = 200, 40, 160
    else:  # different modality: different (non-linear) tissue intensities
        a[head] = 60
        a[blob1], a[blob2], a[bar] = 20, 220, 120
    img = sitk.SmoothingRecursiveGaussian(sitk.GetImageFromArray(a), 1.0)
    m = np.diag(list(spacing) + [1.0])
    m[:3, 3] = origin
    return Volume(sitk.GetArrayFromImage(img).astype(np.float32), m)


FAST = dict(shrink_factors=(2, 1), smoothing_sigmas_mm=(2.0, 0.0), sampling_percentage=(0.5, 0.5))


@pytest.fixture(scope="module")
def pair():
    return phantom(contrast="t1"), phantom(contrast="t2")


def _points(volume, step=4):
    k, j, i = np.nonzero(volume.array > 10)
    return volume.ijk_to_ras_points(np.stack([i, j, k], 1)[::step])


def test_known_transform_direction_fixed_to_moving(pair):
    """Moving = fixed's voxels placed at A(p): the result must be A (fixed->moving), not A^-1."""
    fixed, other = pair
    a = R.rigid_ras_matrix((4.0, -3.0, 6.0), (5.0, -4.0, 3.0), center_ras=(0, 0, 0))
    moving = R.move_frame(other, a)
    res = R.register(fixed, moving, "rigid", **FAST)
    found = res.fixed_to_moving_ras()
    pts = _points(fixed)
    err_true = R.tre_against_transform(res.transform, a, pts)["mean"]
    err_inverse = R.tre_against_transform(res.transform, np.linalg.inv(a), pts)["mean"]
    assert err_true < 0.6, (err_true, found)
    assert err_inverse > 5.0
    np.testing.assert_allclose(found[:3, 3], a[:3, 3], atol=0.6)
    rot_err, _ = R.rigid_magnitude(np.linalg.inv(a) @ found)
    assert rot_err < 0.5
    assert res.metric_after < res.metric_before


def test_direction_matches_sitk_resample_convention(pair):
    """Moving made by sitk.Resample(fixed, T): moving(x) = fixed(T(x)), so the fixed->moving transform is T^-1."""
    fixed, _ = pair
    t = R.transform_from_ras_matrix(R.rigid_ras_matrix((0, 0, 8.0), (6.0, 3.0, 0.0)))
    moving = from_sitk(sitk.Resample(to_sitk(fixed), t, sitk.sitkLinear, 0.0))
    res = R.register(fixed, moving, "rigid", **FAST)
    t_ras = R.ras_matrix_from_transform(t)
    pts = _points(fixed)
    assert R.tre_against_transform(res.transform, np.linalg.inv(t_ras), pts)["mean"] < 0.6
    assert R.tre_against_transform(res.transform, t_ras, pts)["mean"] > 5.0
    # and resampling the moving image with the found transform brings it back onto fixed
    back = R.resample_to(moving, fixed, "linear", res.transform)
    inside = fixed.array > 10
    assert np.abs(back.array[inside] - fixed.array[inside]).mean() < 0.1 * np.abs(fixed.array[inside] - moving.array[inside]).mean()


def test_output_geometry_is_fixed_grid(pair):
    fixed, other = pair
    moving = phantom(shape=(16, 30, 34), spacing=(2.6, 2.9, 3.7), contrast="t2", origin=(-38.0, -40.0, -28.0))
    res = R.register(fixed, moving, "affine", **FAST)
    assert res.resampled.same_grid(fixed)
    assert res.resampled.array.shape == fixed.array.shape
    assert res.fixed_to_moving_ras().shape == (4, 4)
    s = res.summary()
    json.dumps(s)  # report must be serialisable
    assert s["metric_after"] <= s["metric_before"]


def test_bspline_runs_and_improves(pair):
    fixed, other = pair
    moving = R.move_frame(other, R.rigid_ras_matrix((0, 0, 3.0), (2.0, 0, 0)))
    res = R.register(fixed, moving, "bspline", bspline_iterations=5, bspline_grid_mm=80.0, **FAST)
    assert isinstance(res.transform, sitk.CompositeTransform)
    assert res.resampled.same_grid(fixed)
    assert res.metric_after < res.metric_before
    with pytest.raises(ValueError):
        res.fixed_to_moving_ras()


def test_saved_transform_reads_back_identical(tmp_path, pair):
    fixed, _ = pair
    t = sitk.Euler3DTransform((3.0, -4.0, 5.0), 0.05, -0.02, 0.1, (1.5, -2.5, 3.25))  # centre, angles, shift
    res = R.RegistrationResult(t, fixed, "rigid", 0.0, 0.0, [], [], "world", {})
    pts = _points(fixed, step=50)
    for suffix in (".tfm", ".h5"):
        path = res.save_transform(tmp_path / f"t{suffix}")
        back = R.read_transform(path)
        np.testing.assert_allclose(back.GetParameters(), res.transform.GetParameters(), rtol=0, atol=1e-12)
        np.testing.assert_allclose(back.GetFixedParameters(), res.transform.GetFixedParameters(), atol=1e-12)
        np.testing.assert_allclose(R.transform_points_ras(back, pts), res.map_points_ras(pts), atol=1e-9)
    with pytest.raises(InputError):
        R.save_transform(res.transform, tmp_path / "t.png")


def test_resample_to_world_coordinates(oblique_volume):
    # same grid: exact copy; a labelmap keeps its labels and integer values
    same = R.resample_to(oblique_volume, oblique_volume)
    np.testing.assert_allclose(same.array, oblique_volume.array, atol=1e-4)
    ref = Volume(np.zeros((6, 8, 10), np.float32), np.diag([1.1, 1.2, 1.9, 1.0]) @ np.eye(4))
    ref.ijk_to_ras[:3, 3] = oblique_volume.ijk_to_ras_points([[6, 5, 4]])[0] - [5, 4, 3]
    out = R.resample_to(oblique_volume, ref, "nearest")
    assert out.same_grid(ref)
    # each output voxel holds the input voxel found at the same RAS position
    ijk_out = np.array([[3, 2, 1], [5, 4, 3], [7, 6, 2]])
    src = np.rint(oblique_volume.ras_to_ijk_points(ref.ijk_to_ras_points(ijk_out))).astype(int)
    for (i, j, k), (si, sj, sk) in zip(ijk_out, src):
        if all(0 <= a < n for a, n in zip((si, sj, sk), oblique_volume.size_ijk)):
            assert out.array[k, j, i] == pytest.approx(oblique_volume.array[sk, sj, si])


def test_align_inputs_misaligned_gives_same_labels_as_prealigned(pair):
    """A thresholding 'model' on [T1, T2] channels: misaligned + align_inputs == pre-aligned inputs."""
    fixed, other = pair
    a = R.rigid_ras_matrix((3.0, -2.0, 5.0), (4.0, -3.0, 2.0))
    misaligned = R.move_frame(other, a)

    def model(channels):
        t1, t2 = channels[0].array, channels[1].array
        return (t2 > 170).astype(np.uint8) + 2 * ((t1 > 180) & (t2 < 40)).astype(np.uint8)

    reference_labels = model([fixed, other])
    aligned, record = align_inputs([fixed, misaligned], **FAST)
    assert aligned[1].same_grid(fixed)
    assert record[1]["action"].startswith("registered")
    labels = model(aligned)
    world_only, _ = align_inputs([fixed, misaligned], register=False)  # trusting the frames is not enough here
    naive = model(world_only)
    for value in (1, 2):
        ref_mask, got, bad = reference_labels == value, labels == value, naive == value
        dice = 2 * (ref_mask & got).sum() / (ref_mask.sum() + got.sum())
        dice_naive = 2 * (ref_mask & bad).sum() / (ref_mask.sum() + bad.sum())
        assert dice > 0.95, (value, dice)
        assert dice_naive < 0.9 < dice, (value, dice, dice_naive)
    agreement = (labels == reference_labels).mean()
    assert agreement > 0.995


def test_align_inputs_same_grid_and_assume_aligned(pair):
    fixed, other = pair
    aligned, record = align_inputs([fixed, other])
    assert aligned[1] is other and record[1]["action"].startswith("none")
    coarse = R.resample_to(other, Volume(np.zeros((10, 22, 20), np.float32), np.diag([4.0, 4.0, 6.0, 1.0]) @ np.eye(4)
                                         + np.array([[0, 0, 0, -40], [0, 0, 0, -44], [0, 0, 0, -30], [0, 0, 0, 0]])))
    aligned, record = align_inputs([fixed, coarse], assume_aligned=True)
    assert aligned[1].same_grid(fixed) and record[1]["action"].startswith("resampled by world")


def test_real_tcia_known_offset_recovered_on_shrunk_images(data_dir):
    """PGBM-003 FLAIR (fixed) vs T2 moved by a known rigid offset, in-plane shrunk x4 to stay fast."""
    d = data_dir / "tcia-brain-tumor-progression-dicom" / "PGBM-003"
    if not d.is_dir():
        pytest.skip("PGBM-003 not in the data folder")
    shrink = lambda v: from_sitk(sitk.Shrink(to_sitk(v), [4, 4, 1]))  # noqa: E731
    fixed = shrink(read_image(d / "36468-FLAIRreg-58706"))
    t2 = shrink(read_image(d / "37830-T2reg-78532"))
    center = fixed.ijk_to_ras_points([(np.array(fixed.size_ijk) - 1) / 2])[0]
    a = R.rigid_ras_matrix((6.0, -4.0, 8.0), (7.0, -5.0, 4.0), center)
    res = R.register(fixed, R.move_frame(t2, a), "rigid")
    mask = R.foreground_mask(fixed)
    k, j, i = np.nonzero(mask.array)
    tre = R.tre_against_transform(res.transform, a, fixed.ijk_to_ras_points(np.stack([i, j, k], 1)))
    # 2.75 mm in-plane voxels here (0.6 mm measured; the pair's own MI optimum is ~0.5 mm off the stored
    # co-registration along z); full-resolution figures in the benchmark and docs/fusion.md
    assert tre["mean"] < 1.0, tre
    assert res.metric_after < res.metric_before
    assert res.reliability["reliable"] is True and res.reliability["forward_inverse_mm"] < 1.0, res.reliability


def test_real_prostate_resample_to_t2_grid(data_dir):
    d = data_dir / "prostatex-0000"
    if not d.is_dir():
        pytest.skip("prostatex-0000 not in the data folder")
    t2 = read_image(d / "ProstateX-0000_t2_tse_tra_4.nii.gz")
    dwi = read_image(d / "ProstateX-0000_ep2d_diff_tra_7.nii.gz")
    assert not t2.same_grid(dwi)
    out = R.resample_to(dwi, t2)
    assert out.same_grid(t2) and out.array.dtype == dwi.array.dtype
    # the DWI covers the prostate region: a good part of the T2 field of view gets data
    assert (out.array > 0).mean() > 0.3


def test_result_never_worse_than_start_simplex_retry(pair, monkeypatch):
    """If gradient descent ends worse than it started, the engine retries with a simplex and never
    returns something worse (by the metric) than the starting alignment."""
    fixed, other = pair
    moving = R.move_frame(other, R.rigid_ras_matrix((0, 0, 2.0), (2.0, 0, 0)))

    def astray(self, configure, initial, *args, **kwargs):  # a gradient run that wandered off by 15 mm
        t = sitk.Euler3DTransform(initial)
        t.SetTranslation((15.0, -10.0, 5.0))
        return t, [1], "forced"

    monkeypatch.setattr(R._Runner, "run_linear", astray)
    res = R.register(fixed, moving, "rigid", **FAST)
    start_metric = R.metric_value(fixed, moving, None, settings=R.RegistrationSettings(**FAST))
    assert res.note and "simplex" in res.note
    assert res.metric_after <= start_metric + 1e-9
    assert res.resampled.same_grid(fixed)


def test_linear_resample_of_integer_image_rounds_instead_of_truncating():
    """ITK casts interpolated values back to the pixel type by truncation; 10.9 must become 11, not 10."""
    import numpy as np

    from MedAILib.tasks.registration.registration import resample_to
    from MedAILib.core.volume import Volume

    arr = np.zeros((4, 4, 4), dtype=np.int16)
    arr[:, :, 2:] = 12  # along I: 0, 0, 12, 12
    src = Volume(arr, np.eye(4))
    ref_m = np.eye(4)
    ref_m[0, 3] = 1.9083  # sample at I = 1.9083 -> 0.9083 * 12 = 10.9
    out = resample_to(src, Volume(np.zeros((4, 4, 4), np.int16), ref_m), interpolator="linear")
    assert out.array.dtype == np.int16
    assert int(out.array[1, 1, 0]) == 11


# ------------------------------------------------------------------ issue 21: search, masks, reliability, fall-backs
def test_head_mask_keeps_the_edge_and_drops_the_air(pair):
    fixed, _ = pair
    img = sitk.Cast(to_sitk(fixed), sitk.sitkFloat32)
    tight = sitk.GetArrayFromImage(R.head_mask_image(img, 0.0)).astype(bool)
    grown = sitk.GetArrayFromImage(R.head_mask_image(img, 6.0)).astype(bool)
    head = fixed.array > 50
    assert tight[head].mean() > 0.97 and (tight & ~head).sum() < 0.1 * head.sum()
    assert grown.sum() > tight.sum() and grown[tight].all()  # grown by the margin, still not the whole box
    assert grown.mean() < 0.95
    # no plausible head (a flat image): no mask rather than a wrong one
    assert R.head_mask_image(sitk.Image(20, 20, 10, sitk.sitkFloat32), 5.0) is None


def test_global_search_and_both_ways_report_agreement(pair):
    """A 22 deg rotation: the rotation grid gives the local optimiser a start near the truth; the
    backward run agrees with the forward one and the result is called reliable."""
    fixed, other = pair
    a = R.rigid_ras_matrix((0.0, 0.0, 22.0), (4.0, -3.0, 2.0))
    moving = R.move_frame(other, a)
    res = R.register(fixed, moving, "rigid", search_angles_deg=(-20.0, 0.0, 20.0), **FAST)
    pts = _points(fixed)
    assert R.tre_against_transform(res.transform, a, pts)["mean"] < 0.6
    rel = res.reliability
    assert rel["reliable"] is True and rel["forward_inverse_mm"] < 0.5 and not res.warnings
    assert rel["search"]["grid_points"] == 27 and len(rel["search"]["optimised"]) == 3
    assert min(o["distance_to_best_mm"] for o in rel["search"]["optimised"]) == 0.0
    s = res.summary()
    assert s["reliable"] is True and s["fell_back"] is False and s["requested_type"] == "rigid"
    json.dumps(s)


def test_disagreement_between_forward_and_backward_is_unreliable(pair, monkeypatch):
    """When the backward run lands elsewhere, the result is flagged (not averaged) and says why."""
    fixed, other = pair
    moving = R.move_frame(other, R.rigid_ras_matrix((0, 0, 3.0), (2.0, 0, 0)))
    real = R._Runner.run_linear

    def backward_astray(self, configure, initial, fixed_img, moving_img, span, label, levels=None):
        t, its, stop = real(self, configure, initial, fixed_img, moving_img, span, label, levels)
        if "backward" in label:
            t = sitk.Euler3DTransform(t)
            t.SetTranslation([x + d for x, d in zip(t.GetTranslation(), (6.0, 0.0, 0.0))])
        return t, its, stop

    monkeypatch.setattr(R._Runner, "run_linear", backward_astray)
    res = R.register(fixed, moving, "rigid", **FAST)
    assert res.reliability["reliable"] is False and res.reliability["forward_inverse_mm"] > 5.0
    assert any("disagree" in w and "unreliable" in w for w in res.warnings)
    assert res.reliability["metric_forward"] < res.reliability["metric_backward"]
    assert res.reliability["kept"] == "forward"  # the better one by the metric, not an average of the two
    pts = _points(fixed)
    assert R.tre_against_transform(res.transform, R.rigid_ras_matrix((0, 0, 3.0), (2.0, 0, 0)), pts)["mean"] < 0.6


def test_affine_that_ends_worse_falls_back_loudly(tmp_path, pair, monkeypatch, capsys):
    """An affine stage worse than the rigid one is replaced by the rigid result, and the console, the
    report and the figure title say so (issue 21: never a silent downgrade)."""
    from MedAILib.cli import main

    fixed, other = pair
    moving = R.move_frame(other, R.rigid_ras_matrix((0, 0, 3.0), (2.0, 0, 0)))
    real = R._Runner.run_linear

    def affine_astray(self, configure, initial, fixed_img, moving_img, span, label, levels=None):
        t, its, stop = real(self, configure, initial, fixed_img, moving_img, span, label, levels)
        if label == "affine":
            t = sitk.AffineTransform(t)
            t.SetMatrix([1.3, 0, 0, 0, 0.8, 0, 0, 0, 1.1])
        return t, its, stop

    monkeypatch.setattr(R._Runner, "run_linear", affine_astray)
    res = R.register(fixed, moving, "affine", **FAST)
    assert res.transform_type == "rigid" and res.requested_type == "affine"
    assert any("RIGID result is delivered" in w for w in res.warnings)
    assert res.summary()["fell_back"] is True

    write_image(fixed, tmp_path / "f.nii.gz")
    write_image(moving, tmp_path / "m.nii.gz")
    titles = []
    import MedAILib.tasks.registration.blend as blend

    real_png = blend.save_png
    def save_png(images, path, titles=None, k=None):
        seen.extend(titles or [])
        return real_png(images, path, titles, k)

    seen = titles
    monkeypatch.setattr(blend, "save_png", save_png)
    rc = main(["register", str(tmp_path / "f.nii.gz"), str(tmp_path / "m.nii.gz"), "-o", str(tmp_path / "out"),
               "--type", "affine", "--shrink", "2", "1"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "WARNING" in err and "RIGID result is delivered" in err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["transform_type"] == "rigid" and report["requested_type"] == "affine" and report["fell_back"]
    assert any("affine FELL BACK to rigid" in t for t in titles)


def test_unrelated_images_are_called_unreliable(pair):
    """Registering an image to noise cannot succeed: the result must say so, not look like an answer."""
    fixed, _ = pair
    noise = fixed.with_array(np.random.default_rng(1).normal(100, 30, fixed.array.shape).astype(np.float32))
    res = R.register(fixed, noise, "rigid", **FAST)
    assert res.reliability["reliable"] is False and res.summary()["reliable"] is False
    assert res.warnings and all(w.startswith("unreliable") for w in res.warnings)
