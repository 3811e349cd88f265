"""Classical pre-processing (tasks/preprocessing): each step on a real image, measured, and the
``medai preprocess`` command end to end."""

import hashlib
import subprocess
import sys

import numpy as np
import pytest

from MedAILib.core.errors import InputError
from MedAILib.core.volume import Volume
from MedAILib.io import read_image, write_image
from MedAILib.tasks.preprocessing import steps
from MedAILib.tasks.preprocessing.pipeline import PreprocessOptions, preprocess

BRATS = "brainlesion-brats-examples/BraTS-GLI-00000-000/BraTS-GLI-00000-000-t1n.nii.gz"
ISLES_DWI = "isles22-stroke/sub-strokecase0009/sub-strokecase0009_ses-0001_dwi.nii.gz"
ISLES_MASK = "isles22-stroke/sub-strokecase0009/sub-strokecase0009_ses-0001_msk.nii.gz"
LIDC_0001 = "lidc-idri-subset/LIDC-IDRI-0001"


@pytest.fixture(scope="module")
def brain_2mm(data_dir) -> Volume:
    """A real T1 (BraTS, skull-stripped, 1 mm) at 2 mm: small enough for N4 on a shared CPU."""
    return steps.resample_spacing(read_image(data_dir / BRATS), 2.0)


def _psnr(x, ref, mask):
    rng = float(ref[mask].max() - ref[mask].min())
    return 10 * np.log10(rng ** 2 / float(np.mean((x[mask] - ref[mask]) ** 2)))


def test_n4_removes_most_of_a_synthetic_bias_field(brain_2mm):
    """A smooth multiplicative field (std of log 0.18, about +-35 %) applied to a real T1: N4's
    correction of the biased image equals its correction of the original up to a small residual.
    (N4 is compared with itself on the original because it also removes the original's own
    inhomogeneity, about 0.10 in log units here: that part is not the synthetic field.)"""
    clean = brain_2mm.array.astype(np.float64)
    mask = clean > np.percentile(clean[clean > 0], 5)
    mask_v = brain_2mm.with_array(mask.astype(np.uint8))
    k, j, i = np.meshgrid(*[np.linspace(-1, 1, n) for n in clean.shape], indexing="ij")
    log_bias = 0.5 * i - 0.35 * j + 0.4 * k ** 2
    biased = brain_2mm.with_array((clean * np.exp(log_bias)).astype(np.float32))
    before = biased.array.copy()
    corrected, field = steps.n4(biased, mask=mask_v)
    np.testing.assert_array_equal(biased.array, before)  # the input is never modified
    reference, reference_field = steps.n4(brain_2mm, mask=mask_v)
    residual = np.log(corrected.array[mask] / reference.array[mask])
    applied = log_bias[mask]
    assert residual.std() < 0.25 * applied.std(), (residual.std(), applied.std())
    # the field N4 estimated on top of the original's own follows the applied one
    extra = np.log(field.array[mask] / reference_field.array[mask])
    assert np.corrcoef(extra, applied)[0, 1] > 0.95
    assert corrected.same_grid(brain_2mm)


def test_n4_refuses_ct(data_dir):
    ct = read_image(data_dir / LIDC_0001)
    with pytest.raises(InputError, match="looks like CT"):
        steps.n4(ct)


@pytest.mark.parametrize("method,params", [("gaussian", {"sigma_mm": 1.0}), ("median", {"radius": 1}),
                                           ("anisotropic", {"iterations": 5, "conductance": 1.0})])
def test_denoising_filters_raise_psnr_on_rician_noise(brain_2mm, method, params):
    clean = brain_2mm.array.astype(np.float32)
    mask = clean > 0
    rng = np.random.default_rng(1)
    sigma = 0.08 * float(np.percentile(clean[mask], 95))
    noisy = np.hypot(clean + rng.normal(0, sigma, clean.shape), rng.normal(0, sigma, clean.shape)).astype(np.float32)
    out = steps.denoise(brain_2mm.with_array(noisy), method, **params)
    gain = _psnr(out.array, clean, mask) - _psnr(noisy, clean, mask)
    assert gain > 1.0, f"{method}: PSNR gain {gain:.2f} dB"
    assert out.same_grid(brain_2mm)


def test_zscore_and_percentile(brain_2mm):
    z = steps.normalize(brain_2mm, "zscore")
    assert abs(float(z.array.mean())) < 1e-4 and abs(float(z.array.std()) - 1) < 1e-3
    mask = brain_2mm.with_array((brain_2mm.array > 0).astype(np.uint8))
    zm = steps.normalize(brain_2mm, "zscore", mask=mask)
    inside = zm.array[mask.array > 0]
    assert abs(float(inside.mean())) < 1e-3 and abs(float(inside.std()) - 1) < 1e-3
    p = steps.normalize(brain_2mm, "percentile", lower=2, upper=98)
    lo, hi = np.percentile(brain_2mm.array, [2, 98])
    a = brain_2mm.array
    assert np.all(p.array[a <= lo] == 0) and np.all(p.array[a >= hi] == 1)
    mid = (a > lo) & (a < hi)
    np.testing.assert_allclose(p.array[mid], (a[mid] - lo) / (hi - lo), rtol=1e-4, atol=1e-5)


def test_ct_window_on_real_ct(data_dir, brain_2mm):
    ct = read_image(data_dir / LIDC_0001)
    w = steps.normalize(ct, "ct-window", window=steps.CT_WINDOWS["lung"])  # W 1500, L -600: -1350..150 HU
    hu = ct.array.astype(np.float32)
    np.testing.assert_allclose(w.array, np.clip((hu + 1350) / 1500, 0, 1), atol=1e-5)
    with pytest.raises(InputError, match="does not look like CT"):
        steps.normalize(brain_2mm, "ct-window")


def test_resample_keeps_world_positions(data_dir):
    dwi = read_image(data_dir / ISLES_DWI)  # oblique (LAS, tilted), 2 mm
    lesion = read_image(data_dir / ISLES_MASK)
    lesion.labels = []
    out = steps.resample_spacing(dwi, 3.0)
    np.testing.assert_allclose(out.spacing, 3.0)
    np.testing.assert_allclose(out.direction, dwi.direction, atol=1e-9)
    extent_in = np.array(dwi.size_ijk) * dwi.spacing
    extent_out = np.array(out.size_ijk) * out.spacing
    assert np.all(np.abs(extent_in - extent_out) <= 3.0)
    m3 = steps.resample_spacing(lesion, 3.0)
    assert m3.array.dtype == lesion.array.dtype and set(np.unique(m3.array)) <= {0, 1}

    def centroid(v):
        k, j, i = np.nonzero(v.array)
        return v.ijk_to_ras_points(np.stack([i, j, k], 1)).mean(0)

    assert np.linalg.norm(centroid(m3) - centroid(lesion)) < 1.5  # mm, under half a new voxel


def test_crop_to_mask_keeps_every_brain_voxel_in_place(data_dir):
    t1 = read_image(data_dir / BRATS)
    out, mask = steps.crop_to_mask(t1, margin_mm=4)
    assert out.array.size < 0.6 * t1.array.size
    (i0, j0, k0), (i1, j1, k1) = out.metadata["preprocessing_crop_ijk"]
    np.testing.assert_array_equal(out.array, t1.array[k0:k1 + 1, j0:j1 + 1, i0:i1 + 1])
    np.testing.assert_allclose(out.origin, t1.ijk_to_ras_points([[i0, j0, k0]])[0], atol=1e-6)
    assert float(out.array.sum()) == pytest.approx(float(t1.array.sum()), rel=1e-6)  # only background was cut
    assert mask.same_grid(out)


def test_preprocess_chain_order_and_record(brain_2mm):
    opts = PreprocessOptions(denoise="gaussian", sigma_mm=1.0, resample_mm=(3.0, 3.0, 3.0), crop_to_mask=True,
                             normalize="zscore")
    r = preprocess(brain_2mm, opts)
    assert [s["step"] for s in r.steps] == ["denoise:gaussian", "resample", "crop-to-mask", "normalize:zscore"]
    np.testing.assert_allclose(r.volume.spacing, 3.0)
    assert r.mask is not None and r.mask.same_grid(r.volume)
    assert abs(float(r.volume.array[r.mask.array > 0].mean())) < 1e-3  # z-score statistics inside the mask


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _medai(args, env):
    return subprocess.run([sys.executable, "-m", "MedAILib.cli", "preprocess", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=600)


def test_cli_preprocess_end_to_end(data_dir, tmp_path, medai_env):
    src = data_dir / ISLES_DWI
    before = _sha(src)
    out, png = tmp_path / "dwi_pre.nii.gz", tmp_path / "dwi.png"
    r = _medai([src, "-o", out, "--denoise", "median", "--resample", "3", "--normalize", "percentile",
                "--preview", png, "--progress", "none"], medai_env)
    assert r.returncode == 0, r.stderr
    v = read_image(out)
    np.testing.assert_allclose(v.spacing, 3.0)
    assert 0.0 <= float(v.array.min()) and float(v.array.max()) <= 1.0
    assert png.stat().st_size > 10_000
    assert _sha(src) == before
    again = _medai([src, "-o", out, "--normalize", "zscore"], medai_env)
    assert again.returncode == 2 and "already exists" in again.stderr and "--overwrite" in again.stderr
    none = _medai([src, "-o", tmp_path / "x.nii.gz"], medai_env)
    assert none.returncode == 2 and "no pre-processing step" in none.stderr
    gan = _medai([src, "-o", tmp_path / "y.nii.gz", "--denoise", "gan"], medai_env)
    assert gan.returncode == 2 and "--denoise-model" in gan.stderr


def test_cli_preprocess_batch_reports_a_bad_case_and_finishes(data_dir, tmp_path, medai_env):
    good = tmp_path / "in" / "good.nii.gz"
    good.parent.mkdir()
    write_image(steps.resample_spacing(read_image(data_dir / ISLES_DWI), 4.0), good)
    (tmp_path / "in" / "bad.nii.gz").write_bytes(b"not an image")
    r = _medai([tmp_path / "in", "-o", tmp_path / "out", "--normalize", "zscore", "--progress", "none"], medai_env)
    assert r.returncode == 3, r.stderr
    assert (tmp_path / "out" / "good_pre.nii.gz").is_file()
    assert not (tmp_path / "out" / "bad_pre.nii.gz").exists()
    assert "bad" in r.stderr and "failed" in r.stderr
