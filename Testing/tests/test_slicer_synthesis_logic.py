"""MedAI "Convert modality" Logic end to end on real MRML (slicer-core): node -> `medai synthesize`
process -> new scalar volume node (read with Slicer's own reader), metrics with a reference, and the
out-of-distribution warning.

The engine runs as a separate process exactly as inside Slicer, with the shipped t2_to_flair_gan bundle
on the held-out TCIA patient.
"""

from pathlib import Path

import numpy as np
import pytest

from slicer_support.geometry import same_world_grid


TCIA = "tcia-brain-tumor-progression-dicom"


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
    assert same_world_grid(out, t2)
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
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        logic.synthesize(noise, device="tpu")
    run = logic.synthesize(noise, None, "t2_to_flair_gan", device="cpu", wait=True)
    assert run.status == "done" and "UNLIKE THE TRAINING DATA" in run.oodWarning
    assert run.outputVolume.GetAttribute("MedAI.synthesis.oodWarning") == run.oodWarning


def test_failed_import_removes_the_new_node_and_case_error_wins(slicer, tmp_path, monkeypatch):
    """The shared run life cycle (MedAISlicerLib.runs.EngineRun) as SynthesisRun uses it, without the engine:
    a result that fails to load leaves no half-filled new node; the engine's case_error beats the generic text."""
    from types import SimpleNamespace

    from MedAILib.io import write_image
    from MedAILib.core.volume import Volume
    from MedAISlicerLib.tasks import synthesis as synthesis_logic

    ijk_to_ras = np.diag([1.0, 1.0, 2.0, 1.0])
    node = slicer.util.addVolumeFromArray(np.zeros((4, 5, 6), np.float32), ijk_to_ras, "in", "vtkMRMLScalarVolumeNode")
    result_path = tmp_path / "result.nrrd"
    write_image(Volume(np.ones((4, 5, 6), np.float32), ijk_to_ras), result_path)
    volumes = lambda: len(slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode"))
    before = volumes()

    run = synthesis_logic.SynthesisRun(node, device="cpu")
    monkeypatch.setattr(synthesis_logic.nodes, "place_next_to", lambda *a: (_ for _ in ()).throw(RuntimeError("boom")))
    run._onFinished(SimpleNamespace(cancelled=False, ok=True, outputs=[str(result_path)]))
    assert run.status == "failed" and "boom" in run.errorText
    assert run.outputVolume is None and volumes() == before

    run = synthesis_logic.SynthesisRun(node, device="cpu")
    run._onEvent({"event": "case_error", "message": "not a T2 image", "hint": "choose the T2 series"})
    run._onFinished(SimpleNamespace(cancelled=False, ok=False, outputs=[], error_text=lambda: "exit status 2"))
    assert run.status == "failed"
    assert run.errorText == "not a T2 image\nWhat to do: choose the T2 series"
