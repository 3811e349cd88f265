"""Visual fusion, decision-level ensembles (mean/weighted/vote/STAPLE, uncertainty) and the register/fuse CLI."""

import json

import numpy as np
import pytest
import SimpleITK as sitk

from MedAILib.cli import main
from MedAILib.core.errors import InputError
from MedAILib.tasks.fusion import ensemble
from MedAILib.tasks.registration import blend
from MedAILib.tasks.registration import registration as R
from MedAILib.io import read_image, write_image
from MedAILib.core.volume import LabelInfo, Volume


def grid(shape=(4, 5, 6)):
    m = np.diag([0.8, 1.1, 2.5, 1.0])
    m[:3, 3] = (3.0, -7.0, 11.0)
    return m


def test_blend_checkerboard_overlay_on_base_grid(oblique_volume, tmp_path):
    other = oblique_volume.with_array(oblique_volume.array.max() - oblique_volume.array)
    b = blend.alpha_blend(oblique_volume, other, 0.25)
    assert b.same_grid(oblique_volume)
    na, nb = blend.normalise(oblique_volume.array), blend.normalise(other.array)
    np.testing.assert_allclose(b.array, 0.75 * na + 0.25 * nb, atol=1e-6)
    cb = blend.checkerboard(oblique_volume, other, squares=(2, 2, 1))
    assert cb.same_grid(oblique_volume)
    # boxes alternate: the first voxel comes from base, the first voxel of the next I box from the other
    assert cb.array[0, 0, 0] == pytest.approx(na[0, 0, 0])
    i2 = oblique_volume.size_ijk[0] // 2 + 1  # ITK boxes are size // n voxels wide
    assert cb.array[0, 0, i2] == pytest.approx(nb[0, 0, i2])
    labels = oblique_volume.with_array((oblique_volume.array > 120).astype(np.uint8),
                                       labels=[LabelInfo(1, "bright", (0.0, 1.0, 0.0))])
    rgb = blend.colour_overlay(oblique_volume, labels, alpha=1.0)
    assert rgb.shape == oblique_volume.shape + (3,) and rgb.dtype == np.uint8
    on = labels.array == 1
    assert (rgb[on][:, 1] == 255).all() and (rgb[on][:, 0] == 0).all()
    assert (rgb[~on][:, 0] == rgb[~on][:, 1]).all()  # grey elsewhere
    path = blend.write_rgb(rgb, oblique_volume, tmp_path / "overlay.nrrd")
    img = sitk.ReadImage(str(path))
    assert img.GetNumberOfComponentsPerPixel() == 3 and img.GetSize() == oblique_volume.size_ijk
    png = blend.save_png([b, cb, rgb], tmp_path / "fig.png", titles=["blend", "checkerboard", "overlay"])
    from PIL import Image

    im = Image.open(png)
    assert im.size[0] == 3 * oblique_volume.size_ijk[0] + 8
    with pytest.raises(InputError):
        blend.alpha_blend(oblique_volume, other, 1.5)


def test_ensemble_mean_weighted_and_entropy():
    m = grid()
    p1 = np.full((4, 5, 6), 0.9, np.float32)
    p2 = np.full((4, 5, 6), 0.1, np.float32)
    p3 = np.full((4, 5, 6), 0.8, np.float32)
    p2[0] = 0.9
    vols = [Volume(p, m) for p in (p1, p2, p3)]
    r = ensemble.combine(vols, "mean")
    np.testing.assert_allclose(r.probabilities.array[1, ..., 1], (0.9 + 0.1 + 0.8) / 3, atol=1e-6)
    assert (r.labels.array[1:] == 1).all()
    assert r.uncertainty.same_grid(vols[0]) and r.uncertainty.array.dtype == np.float32
    # entropy of p=0.6 vs p=0.8667 (layer 0): the less certain layer is more uncertain
    assert r.uncertainty.array[1, 0, 0] > r.uncertainty.array[0, 0, 0]
    expected = -(0.6 * np.log(0.6) + 0.4 * np.log(0.4)) / np.log(2)
    assert r.uncertainty.array[1, 0, 0] == pytest.approx(expected, rel=1e-5)
    w = ensemble.combine(vols, "weighted", weights=[0, 1, 0])
    np.testing.assert_allclose(w.probabilities.array[..., 1], p2, atol=1e-6)
    assert (w.labels.array[1:] == 0).all()
    with pytest.raises(InputError):
        ensemble.combine(vols, "weighted", weights=[1, 1])


def test_majority_vote_ties_and_disagreement():
    m = grid()
    a = np.zeros((4, 5, 6), np.uint8)
    b, c = a.copy(), a.copy()
    a[0, 0, 0] = b[0, 0, 0] = 2          # 2 vs 0 -> 2
    a[1, 1, 1], b[1, 1, 1], c[1, 1, 1] = 1, 2, 3  # three-way tie -> undecided (0)
    c[2, 2, 2] = 1                        # one of three -> 0
    vols = [Volume(x, m, labels=[]) for x in (a, b, c)]
    r = ensemble.combine(vols, "vote", uncertainty="disagreement")
    assert r.labels.array[0, 0, 0] == 2
    assert r.labels.array[1, 1, 1] == 0 and r.details["ties"] == 1
    assert r.labels.array[2, 2, 2] == 0
    assert r.uncertainty.array[0, 0, 0] == pytest.approx(1 / 3)
    assert r.uncertainty.array[2, 2, 2] == pytest.approx(1 / 3)
    assert r.uncertainty.array[3, 3, 3] == 0.0
    assert r.uncertainty.same_grid(vols[0])


def test_staple_weights_good_raters_over_a_bad_one():
    rng = np.random.default_rng(3)
    m = grid()
    truth = np.zeros((10, 20, 20), np.uint8)
    truth[3:7, 5:15, 5:15] = 1
    raters = []
    for flip in (0.02, 0.02, 0.03, 0.4):  # three good raters, one that is mostly noise
        noise = rng.random(truth.shape) < flip
        raters.append(Volume(np.where(noise, 1 - truth, truth).astype(np.uint8), m, labels=[]))
    r = ensemble.combine(raters, "staple")
    assert (r.labels.array == truth).mean() > 0.99
    sens, spec = r.details["sensitivity"], r.details["specificity"]
    assert min(sens[:3]) > sens[3] and min(spec[:3]) > spec[3]
    assert r.uncertainty.same_grid(raters[0])
    # multi-label STAPLE on a two-label example
    t2 = truth.copy()
    t2[3:7, 5:15, 10:15] = 2
    r2 = ensemble.combine([Volume(t2, m, labels=[])] * 2 + [Volume(truth, m, labels=[])], "staple")
    assert (r2.labels.array == t2).mean() > 0.99


def test_ensemble_resamples_onto_first_grid():
    m = grid()
    p = Volume(np.full((4, 5, 6), 0.7, np.float32), m)
    finer = R.resample_to(p, Volume(np.zeros((8, 10, 12), np.float32), m @ np.diag([0.5, 0.5, 0.5, 1.0])))
    r = ensemble.combine([p, finer], "mean")
    assert r.uncertainty.same_grid(p) and r.labels.same_grid(p)


def _phantom(contrast):
    from test_registration import phantom

    return phantom(contrast=contrast)


def test_cli_register_end_to_end(tmp_path, capsys):
    fixed = _phantom("t1")
    a = R.rigid_ras_matrix((3.0, 0.0, -4.0), (4.0, -2.0, 1.0))
    moving = R.move_frame(_phantom("t2"), a)
    write_image(fixed, tmp_path / "fixed.nii.gz")
    write_image(moving, tmp_path / "moving.nii.gz")
    R.save_transform(R.transform_from_ras_matrix(a), tmp_path / "truth.tfm")
    # landmarks: plain CSV (RAS) for fixed; Slicer .fcsv (LPS) for moving = A(fixed points)
    pts = np.array([[10.0, -5.0, 3.0], [-12.0, 8.0, -6.0], [0.0, 20.0, 9.0]])
    moved_pts = pts @ a[:3, :3].T + a[:3, 3]
    (tmp_path / "f.csv").write_text("x,y,z\n" + "\n".join(",".join(map(str, p)) for p in pts))
    (tmp_path / "m.fcsv").write_text("# Markups fiducial file version = 4.11\n# CoordinateSystem = LPS\n"
                                      + "\n".join(f"p{i},{-p[0]},{-p[1]},{p[2]},0,0,0,1,1,1,0,F-{i},," for i, p in enumerate(moved_pts)))
    out = tmp_path / "out"
    rc = main(["register", str(tmp_path / "fixed.nii.gz"), str(tmp_path / "moving.nii.gz"), "-o", str(out),
               "--shrink", "2", "1", "--true-transform", str(tmp_path / "truth.tfm"), "--progress", "json",
               "--landmarks", str(tmp_path / "f.csv"), str(tmp_path / "m.fcsv")])
    assert rc == 0
    lines = [json.loads(l) for l in capsys.readouterr().out.splitlines() if l.startswith("{")]
    assert lines[0]["event"] == "progress" and lines[-1]["event"] == "done"
    report = json.loads((out / "report.json").read_text())
    assert report["tre_mm"]["true_transform"]["mean"] < 1.0
    assert report["tre_mm"]["landmarks"]["n_points"] == 3 and report["tre_mm"]["landmarks"]["max"] < 1.0
    assert report["metric_after"] < report["metric_before"]
    resampled = read_image(out / "moving_resampled.nii.gz")
    assert resampled.same_grid(fixed)
    t = R.read_transform(out / "transform.tfm")
    np.testing.assert_allclose(R.ras_matrix_from_transform(t), report["fixed_to_moving_ras"], atol=1e-5)
    assert (out / "checkerboard_before_after.png").stat().st_size > 1000


def test_cli_fuse_modes_and_ensemble(tmp_path, capsys):
    base, other = _phantom("t1"), _phantom("t2")
    write_image(base, tmp_path / "a.nii.gz")
    write_image(other, tmp_path / "b.nii.gz")
    for mode, extra in (("blend", ["--alpha", "0.3"]), ("checkerboard", ["--squares", "4", "4", "2"]),
                        ("overlay", ["--colormap", "hot"])):
        suffix = ".nrrd" if mode == "overlay" else ".nii.gz"
        assert main(["fuse", mode, str(tmp_path / "a.nii.gz"), str(tmp_path / "b.nii.gz"),
                     "-o", str(tmp_path / f"{mode}{suffix}"), "--png", str(tmp_path / f"{mode}.png")] + extra) == 0
        assert (tmp_path / f"{mode}.png").exists()
    assert read_image(tmp_path / "blend.nii.gz").same_grid(base)
    labels = []
    for n, thr in enumerate((150, 160, 170)):
        path = tmp_path / f"l{n}.nii.gz"
        write_image(base.with_array((base.array > thr).astype(np.uint8), labels=[]), path)
        labels.append(str(path))
    capsys.readouterr()
    rc = main(["fuse", "ensemble", *labels, "--method", "vote", "-o", str(tmp_path / "fused.nii.gz"),
               "--uncertainty", str(tmp_path / "u.nii.gz"), "--uncertainty-kind", "disagreement"])
    assert rc == 0
    fused, unc = read_image(tmp_path / "fused.nii.gz"), read_image(tmp_path / "u.nii.gz")
    np.testing.assert_array_equal(fused.array, (base.array > 160).astype(fused.array.dtype))
    assert unc.same_grid(base) and unc.array.max() == pytest.approx(1 / 3, abs=1e-6)
    assert main(["fuse", "ensemble", labels[0], "-o", str(tmp_path / "x.nii.gz")]) == 2  # one input: clear error
