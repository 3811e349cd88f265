"""Classification engine and CLI on real AdrenalMNIST3D masks (shipped adrenal_classifier bundle).

- dataset masks wrapped as Volumes on an oblique grid go through the engine's preparation (centroid
  cube on the input lattice) and give the network's output on the very same array;
- a mask inside a larger volume, given as a labelmap, restricts the input; the Grad-CAM volume lies on
  the input's grid and peaks inside the region; occlusion peaks on the gland;
- a bundle without MedAI's recipe runs through its own preprocessing (crop + Invertd back);
- bad inputs get clear errors; `medai classify` (batch, report, explain, exit 3) and
  `medai evaluate classification` (table equal to the metrics module on the test split).
"""

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import oblique_ijk_to_ras
from MedAILib.core.errors import InputError
from MedAILib.core.volume import LabelInfo, Volume

MODEL = "adrenal_classifier"
SPACING = 64.0 / 28  # one AdrenalMNIST3D voxel at 28^3


@pytest.fixture(scope="module")
def npz(data_dir):
    path = data_dir / "medmnist3d" / "adrenalmnist3d.npz"
    if not path.exists():
        pytest.skip(f"{path} not found")
    with np.load(path) as d:
        return {"x": d["test_images"][:40] > 0, "y": d["test_labels"][:40].reshape(-1), "path": path}


@pytest.fixture(scope="module")
def bundle():
    from MedAILib.models import resolve_model

    return resolve_model(MODEL, task="classification")


def _grid(flip=(False, True, False)):
    return oblique_ijk_to_ras(spacing=(SPACING,) * 3, flip=flip)


def _direct(bundle, arrays):
    from MedAILib.tasks.classification.pipeline import predict_arrays

    return predict_arrays(bundle, np.asarray(arrays, np.float32)[:, None])


def test_engine_gives_the_network_output_on_the_same_array(npz, bundle):
    from MedAILib.tasks.classification.pipeline import classify, to_model_input

    x = npz["x"][:12]
    direct = _direct(bundle, x)
    same = 0
    for i, mask in enumerate(x):
        vol = Volume(mask.astype(np.float32), _grid())
        mi = to_model_input(vol, bundle)
        res = classify(vol, bundle, device="cpu")
        # always: the probabilities are the network's softmax on the prepared array
        np.testing.assert_allclose(res.probabilities, _direct(bundle, mi.tensor.numpy()[:, 0])[0], atol=1e-6)
        if np.array_equal(mi.tensor.numpy()[0, 0] > 0, mask):  # the engine rebuilt the dataset's array exactly
            same += 1
            np.testing.assert_allclose(res.probabilities, direct[i], atol=1e-5)
        assert res.class_names == ["normal", "hyperplasia"] and abs(sum(res.probabilities) - 1) < 1e-5
        # the decision is the bundle's validation operating point (issue 21), not the arg-max
        assert res.decision_threshold == pytest.approx(_stored()["decision_threshold"]) and res.decision_threshold < 0.5
        assert res.predicted == res.class_names[int(res.probabilities[1] >= res.decision_threshold)]
    assert same >= 10, f"only {same}/12 dataset masks rebuilt exactly"


def _stored():
    from MedAILib.core.paths import resources_dir

    return json.loads((resources_dir() / "Models" / MODEL / "configs" / "medai.json").read_text())


def test_operating_point_decides_and_probabilities_are_calibrated(npz, bundle):
    """A gland whose P(hyperplasia) lies between the operating point and 0.5 is called hyperplasia; the
    probabilities are softmax(logits / T) with the stored T."""
    from MedAILib.tasks.classification.pipeline import classify, to_model_input

    cfg = _stored()
    t, thr = cfg["temperature"], cfg["decision_threshold"]
    assert cfg["operating_point"]["chosen_on"] == "val" and 0.0 < thr < 0.5 and 0.5 < t < 2.0
    between = 0
    for mask in npz["x"]:
        vol = Volume(mask.astype(np.float32), _grid())
        res = classify(vol, bundle, device="cpu")
        with torch.no_grad():
            logits = bundle.network(to_model_input(vol, bundle).tensor)
        np.testing.assert_allclose(res.probabilities, torch.softmax(logits / t, 1)[0].numpy(), atol=1e-6)
        if thr <= res.probabilities[1] < 0.5:
            between += 1
            assert res.predicted == "hyperplasia"
        assert res.as_dict()["decision_threshold"] == pytest.approx(thr)
    assert between >= 1, "no case between the operating point and 0.5 among the first 40 test masks"


def _big_case(mask, seed=0):
    """The gland inside a larger oblique volume with CT-like noise and a second, unrelated blob."""
    rng = np.random.default_rng(seed)
    lab = np.zeros((40, 44, 48), np.uint8)
    lab[6:34, 8:36, 12:40] = mask
    image = rng.normal(30, 8, lab.shape).astype(np.float32) + 50 * lab
    image[2:6, 2:6, 2:8] += 300  # something else in the image: must not matter
    m = _grid()
    return Volume(image, m), Volume(lab, m, labels=[LabelInfo(1, "adrenal", (0.9, 0.6, 0.2))])


def test_labelmap_restricts_and_gradcam_is_on_the_input_grid(npz, bundle):
    from MedAILib.tasks.classification.pipeline import classify

    mask = npz["x"][5]
    image, labelmap = _big_case(mask)
    res = classify(image, bundle, mask=labelmap, explain_method="gradcam", device="cpu")
    alone = classify(Volume(labelmap.array, labelmap.ijk_to_ras), bundle, device="cpu")
    np.testing.assert_allclose(res.probabilities, alone.probabilities, atol=1e-6)  # image intensities unused
    heat = res.heatmap
    assert heat.same_grid(image) and heat.array.dtype == np.float32
    assert 0.99 <= heat.array.max() <= 1.0 and heat.array.min() >= 0.0
    # the map is non-zero only inside the 64 mm cube the model saw, and peaks inside it
    centre = np.array(res.region["centre_ras"])
    ijk = np.argwhere(heat.array > 0)[:, ::-1]
    ras = image.ijk_to_ras_points(ijk)
    along = (ras - centre) @ image.direction  # coordinates along the cube's (= the input's) axes
    assert np.abs(along).max() <= 32.0 + SPACING
    peak = np.array(np.unravel_index(heat.array.argmax(), heat.shape))
    peak_along = (image.ijk_to_ras_points(peak[::-1][None])[0] - centre) @ image.direction
    assert np.abs(peak_along).max() <= 32.0
    assert heat.array[2:6, 2:6, 2:8].max() == 0.0  # the unrelated blob is outside the region
    # Grad-CAM works on a copy: the bundle's network keeps no hooks and gives the same result again
    assert not any(m._forward_hooks or m._backward_hooks for m in bundle.network.modules())
    again = classify(image, bundle, mask=labelmap, explain_method="gradcam", device="cpu")
    np.testing.assert_array_equal(again.heatmap.array, heat.array)


def test_occlusion_peaks_on_the_gland(npz, bundle):
    from scipy import ndimage

    from MedAILib.tasks.classification.pipeline import classify

    mask = npz["x"][5]
    image, labelmap = _big_case(mask)
    res = classify(image, bundle, mask=labelmap, explain_method="occlusion", device="cpu")
    assert res.heatmap.same_grid(image)
    near = ndimage.binary_dilation(labelmap.array > 0, iterations=2)
    assert near[np.unravel_index(res.heatmap.array.argmax(), image.shape)]


def test_bundle_without_recipe_runs_its_own_preprocessing(npz, bundle, tmp_path, monkeypatch):
    """Any classification bundle: crop to the mask's box, the bundle's preprocessing, Invertd back."""
    from monai.transforms import Resize, ScaleIntensity

    from MedAILib.models import resolve_model
    from MedAILib.tasks.classification.pipeline import classify

    monkeypatch.setenv("MEDAI_HOME", str(tmp_path / "home"))
    generic = tmp_path / "generic_bundle"
    shutil.copytree(bundle.path, generic)
    (generic / "configs" / "medai.json").unlink()
    meta = json.loads((generic / "configs" / "metadata.json").read_text())
    meta.pop("medai")
    (generic / "configs" / "metadata.json").write_text(json.dumps(meta))
    b = resolve_model(str(generic), trust_paths=[str(generic)])
    image, labelmap = _big_case(npz["x"][7])
    res = classify(image, b, mask=labelmap, explain_method="gradcam", device="cpu")
    # the same by hand: crop to the bounding box (KJI), IJK order, scale, resize nearest, softmax
    idx = np.argwhere(labelmap.array > 0)
    lo, hi = idx.min(0), idx.max(0) + 1
    crop = image.array[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]].transpose(2, 1, 0)[None]
    x = Resize((28, 28, 28), mode="nearest")(ScaleIntensity(0.0, 1.0)(torch.as_tensor(crop)))
    with torch.no_grad():
        p = torch.softmax(b.network(torch.as_tensor(np.asarray(x), dtype=torch.float32)[None]), 1)[0].numpy()
    np.testing.assert_allclose(res.probabilities, p, atol=1e-5)
    assert res.heatmap.same_grid(image)
    outside = np.ones(image.shape, bool)
    outside[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = False
    assert res.heatmap.array[outside].max() == 0.0 and res.heatmap.array.max() > 0.9
    # a multi-label bundle (sigmoid in its post-processing) gets sigmoid probabilities
    cfg = json.loads((generic / "configs" / "inference.json").read_text())
    cfg["postprocessing"]["transforms"] = [{"_target_": "Activationsd", "keys": "pred", "sigmoid": True}]
    (generic / "configs" / "inference.json").write_text(json.dumps(cfg))
    b = resolve_model(str(generic), trust_paths=[str(generic)])
    res = classify(image, b, mask=labelmap, device="cpu")
    with torch.no_grad():
        s = torch.sigmoid(b.network(torch.as_tensor(np.asarray(x), dtype=torch.float32)[None]))[0].numpy()
    assert res.multi_label and res.predicted_index == int(np.argmax(s))
    np.testing.assert_allclose(res.probabilities, s, atol=1e-5)


def test_bad_inputs_get_clear_errors(npz, bundle):
    from MedAILib.tasks.classification.pipeline import classify

    image, labelmap = _big_case(npz["x"][3])
    with pytest.raises(InputError, match="mask is empty"):
        classify(image, bundle, mask=labelmap.with_array(np.zeros_like(labelmap.array)))
    other = Volume(labelmap.array, _grid(flip=(True, False, False)))
    with pytest.raises(InputError, match="another voxel grid"):
        classify(image, bundle, mask=other)
    with pytest.raises(InputError, match="2D"):
        classify(Volume(np.ones((1, 40, 40), np.float32), np.eye(4)), bundle)
    with pytest.raises(InputError, match="looks like an image"):
        classify(image, bundle)  # a mask model given an image and no mask
    with pytest.raises(InputError, match="does not overlap"):
        classify(Volume(labelmap.array, labelmap.ijk_to_ras), bundle, roi=[900, 900, 900, 950, 950, 950])


def _medai(args, env, cwd):
    return subprocess.run([sys.executable, "-m", "MedAILib.cli", *map(str, args)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_cli_batch_report_explain_and_partial_exit(npz, bundle, tmp_path, medai_env):
    from MedAILib.tasks.classification.pipeline import classify
    from MedAILib.io import read_image, write_image

    env = dict(medai_env, MEDAI_HOME=str(tmp_path / "home"), OMP_NUM_THREADS="1")
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir(), masks.mkdir()
    expected = {}
    for n, i in enumerate((0, 5)):
        image, labelmap = _big_case(npz["x"][i], seed=n)
        write_image(image, images / f"case{i}.nii.gz")
        write_image(labelmap, masks / f"case{i}.nii.gz")
        expected[f"case{i}"] = classify(image, bundle, mask=labelmap).probabilities
    write_image(image, images / "nomask.nii.gz")  # no mask for this one: the case fails, others go on
    heat, report = tmp_path / "heat", tmp_path / "report.csv"
    r = _medai(["classify", images, "--mask", masks, "--explain", heat, "--report", report, "--progress", "json"],
               env, tmp_path)
    assert r.returncode == 3, r.stdout + r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    done = {e["case"]: e for e in events if e["event"] == "case_done"}
    assert done["nomask"]["status"] == "failed" and "no mask for case nomask" in done["nomask"]["error"]
    for case, probs in expected.items():
        assert done[case]["status"] == "ok"
        np.testing.assert_allclose(done[case]["probabilities"], probs, atol=1e-5)
        h = read_image(heat / f"{case}.nii.gz")
        assert h.same_grid(read_image(images / f"{case}.nii.gz"), atol=1e-4)
        assert 0.0 <= h.array.min() and h.array.max() <= 1.0
        assert h.array.max() > 0.9 or any("zero everywhere" in w for w in done[case]["warnings"])
    assert events[-1]["event"] == "done" and events[-1]["failed"] == ["nomask"]
    rows = list(csv.DictReader(report.open()))
    assert [r_["case"] for r_ in rows] == ["case0", "case5", "nomask"]
    assert float(rows[0]["p_hyperplasia"]) == pytest.approx(expected["case0"][1], abs=1e-5)
    thr = _stored()["decision_threshold"]
    assert float(rows[0]["decision_threshold"]) == pytest.approx(thr) and done["case0"]["decision_threshold"] == pytest.approx(thr)
    # the console line says which rule made the decision
    r = _medai(["classify", images / "case0.nii.gz", "--mask", masks / "case0.nii.gz"], env, tmp_path)
    assert r.returncode == 0 and f"hyperplasia when p >= {thr:.3f}" in r.stdout, r.stdout + r.stderr
    # outputs are never replaced without --overwrite
    r = _medai(["classify", images / "case0.nii.gz", "--mask", masks / "case0.nii.gz", "--explain",
                heat / "case0.nii.gz"], env, tmp_path)
    assert r.returncode == 2 and "already exists" in r.stderr and "Traceback" not in r.stderr


def test_cli_evaluate_prints_the_table_of_the_test_split(npz, bundle, tmp_path, medai_env):
    from MedAILib.tasks.classification.pipeline import predict_arrays
    from MedAILib.tasks.classification.metrics import classification_metrics

    env = dict(medai_env, MEDAI_HOME=str(tmp_path / "home"), OMP_NUM_THREADS="1")
    r = _medai(["evaluate", "classification", "--model", MODEL, "--data", npz["path"], "--split", "test"],
               env, tmp_path)
    assert r.returncode == 0, r.stderr
    with np.load(npz["path"]) as d:
        x, y = d["test_images"], d["test_labels"].reshape(-1)
    m = classification_metrics(y, predict_arrays(bundle, (x / 255.0).astype(np.float32)[:, None]),
                               threshold=_stored()["decision_threshold"], class_names=["normal", "hyperplasia"])
    out = r.stdout
    assert "confusion matrix" in out and "hyperplasia" in out
    for key in ("auc", "accuracy", "precision", "recall", "f1", "threshold"):
        line = next(l for l in out.splitlines() if l.startswith(key + " "))
        assert float(line.split()[-1]) == pytest.approx(m[key], abs=5e-5)
    tn, fp = m["confusion_matrix"][0]
    assert any(l.split()[1:] == [str(tn), str(fp)] for l in out.splitlines() if l.startswith("normal"))
    # the shipped model card's figures are what this command prints
    card = json.loads((bundle.path / "docs" / "metrics.json").read_text())["test"]
    assert m["auc"] == pytest.approx(card["auc"], abs=1e-6) and m["confusion_matrix"] == card["confusion_matrix"]
