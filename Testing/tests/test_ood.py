"""The autoencoder out-of-distribution check (issue 19, MedAILib.tasks.ood): one grid for training
and checking, the folder inside a bundle, the pipelines' call, and `medai train ood --progress json`.

Real hippocampus crops (MEDAI_DATA_DIR), two epochs: the path, not the figures (ROC AUC in
docs/training.md, from Testing/Benchmarks/bench_ood.py).
"""

import json
import shutil

import numpy as np
import pytest

from MedAILib.core.errors import InputError
from MedAILib.core.volume import Volume
from MedAILib.tasks.ood import autoencoder as ae


@pytest.fixture
def home(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDAI_HOME", str(tmp_path / "medai-home"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return tmp_path / "medai-home"


def _images(data_dir, n):
    return [str(p) for p in sorted((data_dir / "msd-hippocampus" / "imagesTr").glob("hippocampus_*.nii.gz"))[:n]]


def test_grid_is_the_same_whatever_the_index_order():
    """The same physical image stored with K reversed (and its matrix saying so) gives the same grid."""
    rng = np.random.default_rng(0)
    arr = rng.normal(size=(20, 30, 24)).astype(np.float32) + np.linspace(0, 3, 24)[None, None]
    m = np.diag([1.0, 1.0, 2.0, 1.0])
    flipped_m = m.copy()
    flipped_m[:3, 2] *= -1
    flipped_m[:3, 3] = m[:3, :3] @ [0, 0, 19]  # voxel k'=0 is old k=19
    a, b = Volume(arr, m), Volume(arr[::-1].copy(), flipped_m)
    grid = ae.grid_for([a])
    assert grid == ae.grid_for([b])
    np.testing.assert_allclose(ae.to_model_grid(a, grid).numpy(), ae.to_model_grid(b, grid).numpy(), atol=1e-5)
    with pytest.raises(InputError, match="3D single-channel"):
        ae.to_model_grid(Volume(np.zeros((2, 4, 4, 4), np.float32), m), grid)


def test_train_check_and_bundle_hook(tmp_path, home, data_dir):
    from MedAILib.models import trust

    files = _images(data_dir, 8)
    with pytest.raises(InputError, match="at least 5"):
        ae.train_ood(files[:3], tmp_path / "x")
    cfg = ae.train_ood(files, tmp_path / "ood", epochs=2, batch_size=4)
    assert cfg["n_train"] + cfg["n_calibration"] == 8 and len(cfg["calibration_scores"]) == cfg["n_calibration"]
    assert cfg["threshold"] >= max(cfg["calibration_scores"]) * 0.99 - 1e-9
    with pytest.raises(InputError, match="already exists"):
        ae.train_ood(files, tmp_path / "ood", epochs=1)
    s1 = ae.score_volumes(tmp_path / "ood", files[:2])
    np.testing.assert_allclose(s1, ae.score_volumes(tmp_path / "ood", files[:2]))  # deterministic (latent mean)
    # a bundle without an OOD model: the pipelines' call says nothing
    bundle = tmp_path / "bundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "configs" / "inference.json").write_text("{}")
    assert ae.check_input(bundle, files[0]) is None
    trust.trust(bundle)
    shutil.copytree(tmp_path / "ood", bundle / "ood")
    r = ae.check_input(bundle, files[0])
    assert set(r) == {"score", "threshold", "percentile", "out_of_distribution", "message"}
    assert r["score"] == pytest.approx(s1[0]) and r["out_of_distribution"] == (r["score"] > r["threshold"])
    assert f"{r['score']:.3f}" in r["message"]
    # a Volume in memory (what a pipeline holds) scores like its file
    from MedAILib.io import read_image

    assert ae.check_input(bundle, read_image(files[0]))["score"] == pytest.approx(s1[0], rel=1e-5)
    # catalogue models (shipped bundles are not written to): MEDAI_HOME/ood/ID
    shutil.copytree(tmp_path / "ood", ae.user_ood_dir("hippocampus_unet"))
    assert ae.check_input(None, files[1], model_id="hippocampus_unet")["score"] == pytest.approx(s1[1])
    with pytest.raises(InputError, match="bad model id"):
        ae.user_ood_dir("../x")


def test_cli_json_events_and_bundle_stays_trusted(tmp_path, home, data_dir, capsys):
    from MedAILib.cli import main
    from MedAILib.core import events
    from MedAILib.models import trust

    bundle = tmp_path / "bundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "configs" / "inference.json").write_text("{}")
    trust.trust(bundle)
    code = main(["train", "ood", *_images(data_dir, 6), "--bundle", str(bundle), "--epochs", "2", "--progress", "json"])
    assert code == 0
    evs = [e for e in map(events.parse_line, capsys.readouterr().out.splitlines()) if e]
    progress = [e for e in evs if e["event"] == "progress"]
    assert progress[0]["fraction"] == 0 and [p["fraction"] for p in progress[1:]] == [0.5, 1.0]
    assert evs[-1]["event"] == "done" and evs[-1]["outputs"] == [str(bundle)]
    assert (bundle / "ood" / "ood.json").is_file()
    assert trust.trust_status(bundle)[0]  # the user trusted it before and added the OOD model: still trusted
    assert main(["train", "ood", *_images(data_dir, 6), "--out", str(tmp_path / "o"), "--bundle", str(bundle)]) != 0


def test_segment_warns_when_the_check_says_so(tmp_path, home, data_dir):
    """The pipelines' hook: with an OOD model for hippocampus_unet (MEDAI_HOME/ood/ID) the segment
    result carries the check's message exactly when the check says "out of distribution" (here set
    by its threshold: two training epochs do not separate anything, bench_ood.py measures that),
    and the labels are the same either way (the check only warns)."""
    import os

    from MedAILib.io import read_image
    from MedAILib.models import resolve_model
    from MedAILib.tasks.segmentation.pipeline import segment

    files = _images(data_dir, 8)
    folder = ae.user_ood_dir("hippocampus_unet")
    ae.train_ood(files, folder, epochs=2, batch_size=4)
    bundle, crop = resolve_model("hippocampus_unet"), read_image(files[0])
    results = []
    for threshold in (1e9, 0.0):
        cfg = json.loads((folder / "ood.json").read_text())
        cfg["threshold"] = threshold
        (folder / "ood.json").write_text(json.dumps(cfg))
        pt = folder / "autoencoder.pt"
        os.utime(pt, ns=(pt.stat().st_atime_ns, pt.stat().st_mtime_ns + 1_000_000))  # reload the config
        r = ae.check_input(None, crop, model_id="hippocampus_unet")
        assert r["out_of_distribution"] == (threshold == 0.0)
        result = segment([crop], bundle, device="cpu")
        warned = [w for w in result.warnings if "unlike the model's training images" in w]
        assert warned == ([r["message"]] if r["out_of_distribution"] else [])
        results.append(result.labelmap.array)
    assert np.array_equal(*results)
