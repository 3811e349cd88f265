"""MedAI "Pre-process" Logic end to end on real MRML (slicer-core): scalar volume node -> `medai
preprocess` process (outside this process, as inside Slicer) -> new scalar volume node read with
Slicer's own reader. Real data: a slab of the ISLES'22 FLAIR with added Rician noise."""

from pathlib import Path

import numpy as np
import pytest

from slicer_support.geometry import same_world_grid

FLAIR = "isles22-stroke/sub-strokecase0009/sub-strokecase0009_ses-0001_flair.nii.gz"


@pytest.fixture
def noisy_node(slicer, data_dir):
    from MedAILib.io import read_image
    from MedAILib.tasks.denoising.noise import rician

    v = read_image(data_dir / FLAIR)
    k = v.array.shape[0] // 2
    clean = v.array[k - 3:k + 3].astype(np.float32)
    # a right-handed axis-aligned grid with the file's spacing, so arrays compare index by index
    # (Slicer's reader flips K of a left-handed file; the grid itself is checked by world position)
    m = np.diag([*v.spacing, 1.0])
    m[:3, 3] = (v.ijk_to_ras @ np.array([0, 0, k - 3, 1.0]))[:3]
    sigma = 0.05 * float(np.percentile(clean[clean > 0], 99.5))
    noisy = rician(clean, sigma, np.random.default_rng(0))
    node = slicer.util.addVolumeFromArray(noisy, m, "FLAIR noisy", "vtkMRMLScalarVolumeNode")
    return node, clean, noisy


def noisy_node_spacing(node):
    return [float(x) for x in node.GetSpacing()]


def test_denoise_and_normalise_gives_a_new_node_on_the_input_grid(slicer, noisy_node):
    from MedAISlicerLib.tasks.preprocessing import preprocess

    node, clean, noisy = noisy_node
    before = slicer.util.arrayFromVolume(node).copy()
    progress = []
    run = preprocess(node, denoise="gaussian", sigmaMm=1.0, device="cpu", wait=True,
                     progressCallback=lambda f, msg, e: progress.append(f))
    assert run.status == "done", run.errorText
    out = run.outputVolume
    assert out is not None and out is not node and out.GetName() == "FLAIR noisy preprocessed"
    assert same_world_grid(out, node)
    den = slicer.util.arrayFromVolume(out)
    assert den.shape == noisy.shape
    # what the engine's own step gives in this process, voxel for voxel
    from MedAILib.core.volume import Volume
    from MedAILib.tasks.preprocessing.steps import denoise

    direct = denoise(Volume(noisy, np.diag([*noisy_node_spacing(node), 1.0])), "gaussian", sigma_mm=1.0).array
    np.testing.assert_allclose(den, direct, rtol=1e-4, atol=1e-2)
    head = clean > 0.1 * clean.max()
    assert np.abs(den - clean)[head].mean() < np.abs(noisy - clean)[head].mean()  # closer to the clean image
    assert "denoise:gaussian" in out.GetAttribute("MedAI.preprocess.steps")
    assert progress and max(progress) > 0.9
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), before)  # input untouched
    assert not list(Path(slicer.app.temporaryPath).glob("MedAIPreprocess*"))  # temp folder removed

    # into an existing node, z-score normalisation inside the head: mean 0, sd 1 there
    target = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "target")
    run = preprocess(node, target, normalize="zscore", device="cpu", wait=True)
    assert run.status == "done", run.errorText and run.outputVolume is target
    z = slicer.util.arrayFromVolume(target)
    assert z.shape == noisy.shape and abs(float(z.mean())) < 5 and not np.allclose(z, noisy)
    assert target.GetName() == "target" and "normalize:zscore" in target.GetAttribute("MedAI.preprocess.steps")


def test_bad_requests_are_refused_and_engine_errors_come_through(slicer, noisy_node, tmp_path):
    from MedAISlicerLib.tasks.preprocessing import preprocess

    node, _, _ = noisy_node
    with pytest.raises(ValueError, match="at least one"):
        preprocess(node)
    with pytest.raises(ValueError, match="differ"):
        preprocess(node, node, n4=True)
    with pytest.raises(ValueError, match="denoising model"):
        preprocess(node, denoise="gan")
    with pytest.raises(ValueError, match="N4"):
        preprocess(node, denoise="median", biasField=True)
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        preprocess(node, denoise="median", device="tpu")
    n_volumes = len(slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode"))
    run = preprocess(node, denoise="gan", denoiseModel=str(tmp_path / "no-such-bundle"), device="cpu", wait=True)
    assert run.status == "failed" and "no-such-bundle" in run.errorText
    assert run.outputVolume is None and len(slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")) == n_volumes


def test_gan_denoising_with_the_shipped_model(slicer, noisy_node):
    """The catalogue's denoising GAN from the Logic: no trust prompt (catalogue model), a new node on
    the input grid, closer to the clean slab than the noisy input, and what the engine gives in-process."""
    from MedAILib.core.volume import Volume
    from MedAILib.tasks.preprocessing.steps import denoise
    from MedAISlicerLib.tasks.preprocessing import denoising_models, preprocess

    assert "mr_denoising_gan" in [model_id for model_id, _ in denoising_models()]
    node6, clean, noisy = noisy_node
    clean, noisy = clean[2:4], noisy[2:4]  # two slices keep the test short
    m = np.diag([*noisy_node_spacing(node6), 1.0])
    node = slicer.util.addVolumeFromArray(noisy, m, "FLAIR noisy 2", "vtkMRMLScalarVolumeNode")
    run = preprocess(node, denoise="gan", denoiseModel="mr_denoising_gan", device="cpu", wait=True)
    assert run.status == "done", run.errorText
    den = slicer.util.arrayFromVolume(run.outputVolume)
    assert same_world_grid(run.outputVolume, node) and den.shape == noisy.shape
    direct = denoise(Volume(noisy, m), "gan", model="mr_denoising_gan", device="cpu").array
    np.testing.assert_allclose(den, direct, rtol=1e-3, atol=0.5)
    head = clean > 0.1 * clean.max()
    assert np.abs(den - clean)[head].mean() < 0.8 * np.abs(noisy - clean)[head].mean()
    assert "denoise:gan" in run.outputVolume.GetAttribute("MedAI.preprocess.steps")
