"""MedAI "Convert modality" Logic end to end with the Slicer stand-in: node -> `medai synthesize`
process -> new scalar volume node, metrics with a reference, and the out-of-distribution warning.

The stand-in (Testing/slicer_standin) is not Slicer; it follows the API facts in ../shared/slicer-api/.
The engine runs as a separate process exactly as inside Slicer, with the shipped t2_to_flair_gan bundle
on the held-out TCIA patient.
"""

from pathlib import Path

import numpy as np
import pytest

from slicer_support import standin

TCIA = "tcia-brain-tumor-progression-dicom"


@pytest.fixture
def slicer(monkeypatch, tmp_path):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MEDAI_HOME", str(tmp_path / "medai-home"))
    s = standin.activate()
    yield s
    s.reset()


@pytest.fixture
def val_nodes(slicer, data_dir):
    from MedAILib.io import read_image

    base = data_dir / TCIA / "PGBM-003"
    t2 = read_image(base / "37830-T2reg-78532")
    flair = read_image(base / "36468-FLAIRreg-58706")
    n_t2 = slicer.util.addVolumeFromArray(t2.array, t2.ijk_to_ras, "PGBM-003 T2", "vtkMRMLScalarVolumeNode")
    n_fl = slicer.util.addVolumeFromArray(flair.array, flair.ijk_to_ras, "PGBM-003 FLAIR", "vtkMRMLScalarVolumeNode")
    return n_t2, n_fl


def _geometry(slicer, node):
    import vtk

    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return slicer.util.arrayFromVTKMatrix(m)


def test_convert_with_reference_gives_volume_on_input_grid_and_metrics(slicer, val_nodes):
    import MedAI

    t2, flair = val_nodes
    before = slicer.util.arrayFromVolume(t2).copy()
    progress = []
    run = MedAI.MedAILogic().synthesize(t2, None, "t2_to_flair_gan", flair, device="cpu", wait=True,
                                        progressCallback=lambda f, m, e: progress.append(f))
    assert run.status == "done", run.errorText
    out = run.outputVolume
    assert out is not None and out.GetName().startswith("PGBM-003 T2")
    assert slicer.util.arrayFromVolume(out).shape == before.shape
    assert np.allclose(_geometry(slicer, out), _geometry(slicer, t2))
    assert set(run.metrics) == {"mae", "psnr", "ssim"} and 0 < run.metrics["mae"] < 2
    assert run.oodWarning == ""  # the validation MR is like the training data
    assert "z-score" in out.GetAttribute("MedAI.synthesis.units")
    assert progress and max(progress) > 0.9
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(t2), before)  # input untouched
    assert not list(Path(slicer.app.temporaryPath).glob("MedAISynthesis*"))  # temp folder removed


def test_noise_input_raises_the_ood_warning_and_bad_requests_are_refused(slicer, val_nodes):
    import MedAI

    t2, _ = val_nodes
    rng = np.random.default_rng(3)
    noise = slicer.util.addVolumeFromArray(rng.uniform(0, 1000, slicer.util.arrayFromVolume(t2).shape),
                                           _geometry(slicer, t2), "noise", "vtkMRMLScalarVolumeNode")
    logic = MedAI.MedAILogic()
    with pytest.raises(ValueError, match="differ"):
        logic.synthesize(noise, noise)
    with pytest.raises(ValueError, match="device"):
        logic.synthesize(noise, device="tpu")
    run = logic.synthesize(noise, None, "t2_to_flair_gan", device="cpu", wait=True)
    assert run.status == "done" and "UNLIKE THE TRAINING DATA" in run.oodWarning
    assert run.outputVolume.GetAttribute("MedAI.synthesis.oodWarning") == run.oodWarning
