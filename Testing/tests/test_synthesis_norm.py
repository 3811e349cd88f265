"""Synthesis (issue 21): brain mask + percentile normalisation, pairs on the BraTS-toolkit layout,
the shared bundle writer and checksum helper, the conversion preview, the LOSO benchmark's CSF measure."""

import argparse
import importlib.util

import numpy as np
import pytest
import torch

from MedAILib.core.errors import OutputError
from MedAILib.core.paths import REPO_ROOT
from MedAILib.core.volume import Volume
from MedAILib.io import write_image
from MedAILib.tasks.synthesis import bundle as synth_bundle
from MedAILib.tasks.synthesis import trainer
from MedAILib.tasks.synthesis.pairs import find_pairs
from MedAILib.tasks.synthesis.preprocess import brain_mask_array, denormalise, mask_for, normalise


def _stripped_phantom(seed=0):
    """A skull-stripped-like volume: zero background, a 'brain' ellipsoid with a bright 'ventricle'."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[0:8, 0:48, 0:48]
    r = ((y - 24) / 18.0) ** 2 + ((x - 24) / 15.0) ** 2
    brain = r < 1
    arr = np.where(brain, 400 + 300 * (r < 0.1) + rng.normal(0, 10, r.shape), 0).astype(np.float32)
    return arr, brain


def test_brain_mask_and_percentile_scaling():
    arr, brain = _stripped_phantom()
    mask = brain_mask_array(arr)
    assert np.array_equal(mask, brain)  # constant background -> the non-background is the brain
    norm = {"type": "percentile_brain", "low": 1.0, "high": 99.0}
    assert np.array_equal(mask_for(arr, norm), brain)
    out = normalise(arr, mask, norm)
    lo, hi = np.percentile(arr[brain], [1, 99])
    assert np.allclose(out[brain], (arr[brain] - lo) / (hi - lo), atol=1e-5)
    assert np.percentile(out[brain], 1) == pytest.approx(0.0, abs=1e-5)
    assert np.percentile(out[brain], 99) == pytest.approx(1.0, abs=1e-5)
    assert (out[~brain] == 0).all()  # stripped background stays 0
    # Scaling a subject's intensities does not change its normalised image: subjects become comparable.
    assert np.allclose(normalise(arr * 7.5, mask, norm), out, atol=1e-5)
    assert np.array_equal(denormalise(out, norm), out)  # output stays in the training's percentile units
    # A whole head (noisy background) falls back to the Otsu head mask, not "everything above the minimum".
    head = arr + np.random.default_rng(1).uniform(1, 30, arr.shape).astype(np.float32)
    hm = brain_mask_array(head)
    assert hm.sum() < 0.8 * hm.size and hm[brain].mean() > 0.95


def test_pairs_in_brats_toolkit_preprocessed_folder(tmp_path):
    pre = tmp_path / "cases" / "TCGA-XX-0001" / "preprocessed"
    pre.mkdir(parents=True)
    (tmp_path / "cases" / "TCGA-XX-0001" / "native").mkdir()
    for name in ("TCGA-XX-0001_t2_bet.nii.gz", "TCGA-XX-0001_fla_bet.nii.gz", "TCGA-XX-0001_t1_bet.nii.gz"):
        (pre / name).write_bytes(b"")
    pairs = find_pairs(tmp_path / "cases", "T2", "FLAIR")
    assert [p.case for p in pairs] == ["TCGA-XX-0001"]
    assert pairs[0].source.endswith("_t2_bet.nii.gz") and pairs[0].target.endswith("_fla_bet.nii.gz")


def test_shared_data_has_six_t2_flair_subjects(data_dir):
    cases = [p.case for p in find_pairs(data_dir / "brainlesion-brats-examples", "T2", "FLAIR")]
    cases += [p.case for p in find_pairs(data_dir / "tcia-brain-tumor-progression-dicom", "T2", "FLAIR")]
    assert sorted(cases) == ["BraTS-GLI-00000-000", "BraTS-GLI-00001-000", "BraTS-MET-00110-000",
                             "PGBM-003", "PGBM-006", "TCGA-FG-6692"]


def test_no_private_writer_or_checksum_in_synthesis():
    assert not hasattr(synth_bundle, "write_bundle") and not hasattr(synth_bundle, "sha256_of")
    from MedAILib.models import bundle_writer, checksums

    assert trainer.write_bundle is bundle_writer.write_bundle
    assert synth_bundle.digest_file is checksums.digest_file


def _tiny_pairs(root):
    for i, case in enumerate(("a", "b")):
        arr, brain = _stripped_phantom(i)
        flair = np.where(brain, 500 - 350 * (arr > 600), 0).astype(np.float32)  # 'ventricle' dark
        d = root / case
        d.mkdir(parents=True)
        m = np.diag([1.5, 1.5, 3.0, 1.0])
        write_image(Volume(arr, m), d / "t2.nii.gz")
        write_image(Volume(flair, m), d / "flair.nii.gz")


def _args(root, out, *extra):
    p = argparse.ArgumentParser()
    trainer.add_arguments(p)
    return p.parse_args(["--pairs", str(root), "--source", "T2", "--target", "FLAIR", "--out", str(out),
                         "--val-cases", "b", "--iters-per-epoch", "2", "--batch-size", "2", "--patch", "32",
                         "--channels", "4,8", "--pixel-mm", "1.5", "--threads", "1", "--epochs", "1",
                         "--ssim-weight", "1", "--adv-weight", "0", *extra])


def test_trainer_percentile_bundle_and_overwrite_rule(tmp_path):
    _tiny_pairs(tmp_path / "pairs")
    out = tmp_path / "bundle"
    assert trainer.run(_args(tmp_path / "pairs", out)) == 0
    b = synth_bundle.SynthesisBundle(out)
    assert b.cfg["target_norm"]["type"] == "percentile_brain" and "percentile units" in b.cfg["output_units"]
    assert (out / "checkpoints" / "last.pt").exists() and (out / "samples" / "epoch_001.png").exists()
    assert (out / "configs" / "training_stats.json").exists() and "b" in b.metadata["validation"]
    assert not [q for q in tmp_path.iterdir() if q.name.startswith(".bundle")]  # no staging folder left
    before = (out / "models" / "model.pt").read_bytes()
    with pytest.raises(OutputError):
        trainer.run(_args(tmp_path / "pairs", out))  # an existing bundle is not replaced silently
    assert (out / "models" / "model.pt").read_bytes() == before
    assert trainer.run(_args(tmp_path / "pairs", out, "--overwrite")) == 0
    assert isinstance(torch.load(out / "models" / "model.pt", weights_only=True), dict)


def _loso_module():
    path = REPO_ROOT / "Testing" / "Benchmarks" / "synthesis_loso.py"
    spec = importlib.util.spec_from_file_location("synthesis_loso", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_csf_contrast_sign_separates_flair_from_t2():
    """The benchmark's CSF-minus-white-matter measure: negative for a FLAIR-like image (dark CSF),
    positive for the T2 itself; the identity baseline scores SSIM < 1 against the FLAIR."""
    loso = _loso_module()
    t2_arr, brain = _stripped_phantom()
    z, y, x = np.mgrid[0:8, 0:48, 0:48]
    r = ((y - 24) / 18.0) ** 2 + ((x - 24) / 15.0) ** 2
    t2_arr = np.where(brain, 300 + 500 * (r < 0.1) - 150 * ((r > 0.4) & (r < 0.7)), 0).astype(np.float32)
    t2_arr += np.where(brain, np.random.default_rng(0).normal(0, 5, brain.shape), 0).astype(np.float32)
    flair_arr = np.where(brain, 500 - 400 * (r < 0.1) + 60 * ((r > 0.4) & (r < 0.7)), 0).astype(np.float32)
    m = np.diag([1.0, 1.0, 1.0, 1.0])
    t2, flair = Volume(t2_arr, m), Volume(flair_arr, m)
    res = loso.evaluate_case(t2, flair, {"model": flair_arr * 2.0 + 10}, blur_mm=1.0)
    rows = res["rows"]
    assert res["mask"].startswith("brain") and res["csf_voxels"] > 0 and res["wm_voxels"] > 0
    assert rows["identity (T2)"]["csf_minus_wm"] > 1.0 and rows["real FLAIR"]["csf_minus_wm"] < -1.0
    assert rows["model"]["ssim"] == pytest.approx(1.0, abs=1e-4)  # z-scoring removes the scale and offset
    assert rows["identity (T2)"]["ssim"] < 0.9
