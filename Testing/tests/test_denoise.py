"""Denoising (tasks/denoising): noise with the right physics on real images, the GAN bundle applied to
whole volumes (also as ``medai preprocess --denoise gan``), and the trained model against the
classical filters on a held-out subject."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from MedAILib.core.errors import ModelError
from MedAILib.io import read_image, write_image
from MedAILib.tasks.denoising.noise import low_dose_ct_slice, rician

BRATS_T1 = "brainlesion-brats-examples/BraTS-GLI-00001-000/BraTS-GLI-00001-000-t1n.nii.gz"
LIDC_0003 = "lidc-idri-subset/LIDC-IDRI-0003"
SHIPPED = Path(__file__).resolve().parents[2] / "MedAI/MedAILib/resources/Models/mr_denoising_gan"


def test_rician_noise_statistics_on_real_mr(data_dir):
    a = read_image(data_dir / BRATS_T1).array.astype(np.float64)
    s = float(np.percentile(a[a > 0], 99.5))
    sigma = 0.05 * s
    noisy = rician(a, sigma, np.random.default_rng(0))
    background = a == 0
    # no signal: the magnitude of complex Gaussian noise is Rayleigh, mean sigma * sqrt(pi / 2), never 0
    assert noisy[background].mean() == pytest.approx(sigma * np.sqrt(np.pi / 2), rel=0.02)
    # high signal: close to Gaussian with std sigma around the true value
    bright = a > 0.6 * s
    assert np.std(noisy[bright] - a[bright]) == pytest.approx(sigma, rel=0.05)
    assert noisy.min() >= 0


def test_low_dose_ct_noise_scales_with_photons(data_dir):
    from skimage.transform import rescale

    ct = read_image(data_dir / LIDC_0003)
    hu = rescale(ct.array[5].astype(np.float64), 0.5, anti_aliasing=True, preserve_range=True)  # 256 x 256
    px = float(ct.spacing[0]) * 2
    roi = (slice(150, 170), slice(118, 138))  # soft tissue in the mediastinum
    assert -100 < hu[roi].mean() < 150
    rng = np.random.default_rng(0)
    low = [low_dose_ct_slice(hu, px, 2e4, rng, n_angles=180) - hu for _ in range(2)]
    lower = [low_dose_ct_slice(hu, px, 2e3, rng, n_angles=180) - hu for _ in range(2)]
    sd_low = np.mean([n[roi].std() for n in low])
    sd_lower = np.mean([n[roi].std() for n in lower])
    # Poisson counts: variance ~ 1 / dose, so ten times fewer photons -> about sqrt(10) x the noise
    assert 2.5 < sd_lower / sd_low < 4.0, (sd_low, sd_lower)
    assert abs(np.mean([n[roi].mean() for n in lower])) < 0.2 * sd_lower  # no bias in the mean HU
    assert sd_low > 5  # it is visible noise, in HU


def _random_bundle(folder):
    from MedAILib.tasks.denoising import trainer

    torch.manual_seed(0)
    small = (4, 4, 8, 8, 16, 4)
    g = trainer.build_generator(small)
    for p in g.parameters():  # a random residual too (the trainer starts it at zero)
        torch.nn.init.normal_(p, 0, 0.1)
    return trainer.write_bundle(folder, g.state_dict(), {"random": True}, channels=small)


def test_gan_bundle_on_a_whole_volume_keeps_the_grid(data_dir, tmp_path):
    from MedAILib.models.bundle import Bundle
    from MedAILib.tasks.denoising.pipeline import denoise_volume

    bundle = Bundle(_random_bundle(tmp_path / "b"))
    v = read_image(data_dir / "isles22-stroke/sub-strokecase0009/sub-strokecase0009_ses-0001_flair.nii.gz")
    from MedAILib.core.volume import Volume

    # odd sizes (297 x 297, more than one 128 x 128 window): padded inside, cropped back
    odd = Volume(v.array[10:14, 3:300, 5:302].astype(np.float32).copy(), v.ijk_to_ras, metadata=v.metadata)
    before = odd.array.copy()
    out = denoise_volume(odd, bundle, device="cpu")
    assert out.array.shape == odd.array.shape and out.same_grid(odd) and out.array.min() >= 0
    np.testing.assert_array_equal(odd.array, before)
    from MedAILib.core.errors import OutputError

    with pytest.raises(OutputError, match="already exists"):  # the shared writer never replaces silently
        _random_bundle(tmp_path / "b")
    bad = Bundle(_random_bundle(tmp_path / "c"))
    bad.parser["medai_denoising"] = None
    with pytest.raises(ModelError, match="not a denoising model"):
        denoise_volume(odd, bad, device="cpu")


def test_sliding_window_puts_every_tile_back_in_place():
    """A fresh generator is the identity (its residual starts at zero): through the sliding window
    (tiles, overlap blending, padding of odd sizes) the volume must come back unchanged, so any
    misplaced, flipped or cropped tile shows."""
    from MedAILib.tasks.denoising import trainer
    from MedAILib.tasks.denoising.pipeline import denoise_array

    g = trainer.build_generator((4, 4, 8, 8, 16, 4))
    a = np.random.default_rng(0).random((3, 201, 157)).astype(np.float32) * 100
    out = denoise_array(g, a, 10.0, 50.0, batch=2)
    np.testing.assert_allclose(out, a, atol=1e-3)
    with pytest.raises(Exception, match="3D"):
        denoise_array(g, a[0], 0.0, 1.0)


def test_comparison_png_side_by_side(tmp_path):
    """The preview a person looks at: noisy / methods / clean panels through io.preview's helpers."""
    from MedAILib.tasks.denoising.evaluate import comparison_png

    rng = np.random.default_rng(0)
    clean = np.zeros((6, 40, 30), np.float32)
    clean[:, 10:30, 8:22] = 0.8
    noisy = rician(clean, 0.05, rng)
    out = comparison_png(clean, {"noisy": noisy, "GAN": clean * 0.98}, "case", tmp_path / "cmp.png",
                         ijk_to_ras=np.diag([-1.0, -1.0, 1.0, 1.0]))
    from PIL import Image

    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 2 * im.size[1]  # three panels in a row


def _medai(args, env):
    return subprocess.run([sys.executable, "-m", "MedAILib.cli", "preprocess", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=600)


def test_cli_preprocess_denoise_gan_needs_trust(data_dir, tmp_path, medai_env):
    env = dict(medai_env, MEDAI_HOME=str(tmp_path / "home"))
    bundle = _random_bundle(tmp_path / "gan")
    from MedAILib.core.volume import Volume

    v = read_image(data_dir / BRATS_T1)
    src = write_image(Volume(v.array[70:74].copy(), v.ijk_to_ras, metadata={}), tmp_path / "t1.nii.gz")
    untrusted = _medai([src, "-o", tmp_path / "a.nii.gz", "--denoise", "gan", "--denoise-model", bundle], env)
    assert untrusted.returncode != 0 and "trust" in untrusted.stderr.lower()
    ok = _medai([src, "-o", tmp_path / "b.nii.gz", "--denoise", "gan", "--denoise-model", bundle, "--trust", bundle,
                 "--progress", "none"], env)
    assert ok.returncode == 0, ok.stderr
    assert read_image(tmp_path / "b.nii.gz").array.shape == (4, 240, 240)


@pytest.mark.slow
@pytest.mark.skipif(not SHIPPED.is_dir(), reason="the trained MR denoising bundle is not in this checkout")
def test_shipped_gan_denoises_held_out_mr(data_dir):
    """The shipped model on the held-out subject's T2 (never seen in training) at Rician sigma 5 %:
    clearly closer to the clean image than the noisy input (PSNR and SSIM). Where it stands against
    the classical filters is measured by Testing/Benchmarks/bench_denoising.py (docs/denoising.md)."""
    from MedAILib.models import resolve_model
    from MedAILib.tasks.denoising import evaluate
    from MedAILib.tasks.denoising.pipeline import denoise_array
    from MedAILib.tasks.denoising.trainer import TRAIN_SUBJECTS, load_scaled, subject_volumes

    assert "BraTS-GLI-00001-000" not in TRAIN_SUBJECTS
    rng = np.random.default_rng(3)
    path = [p for p in subject_volumes(data_dir, "BraTS-GLI-00001-000") if "t2w" in p.name][0]
    clean = evaluate.slab(load_scaled(path), 16)
    noisy = rician(clean, 0.05, rng)
    bundle = resolve_model("mr_denoising_gan", task="denoising")  # the catalogue entry (checksum checked)
    gan = np.maximum(denoise_array(bundle.network, noisy, 0.0, 1.0), 0)
    m_gan, m_noisy = evaluate.metrics(gan, clean), evaluate.metrics(noisy, clean)
    assert m_gan["psnr"] > m_noisy["psnr"] + 1.5
    assert m_gan["ssim"] > m_noisy["ssim"] + 0.08
