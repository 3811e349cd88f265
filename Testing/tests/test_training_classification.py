"""Classification training (AdrenalMNIST3D), the shipped adrenal bundle, and the classification metrics."""

import json
import math

import numpy as np
import pytest
import torch

from MedAILib.core.paths import REPO_ROOT
from MedAILib.core.errors import InputError
from MedAILib.tasks.classification.metrics import classification_metrics, format_metrics
from MedAILib.tasks.classification import trainer as tc

BUNDLE = REPO_ROOT / "MedAI" / "MedAILib" / "resources" / "Models" / "adrenal_classifier"


@pytest.fixture(scope="module")
def npz(data_dir):
    p = data_dir / "medmnist3d" / "adrenalmnist3d.npz"
    if not p.exists():
        pytest.skip(f"AdrenalMNIST3D not found at {p}")
    return p


# ----------------------------------------------------------------------------------------- metrics
def test_binary_metrics_by_hand():
    # Pairs (pos, neg): 0.35>0.1, 0.35<0.4, 0.8>0.1, 0.8>0.4 -> 3 of 4 ranked right: AUC 0.75.
    # At 0.5 the predictions are [0,0,0,1]: TN=2 FP=0 FN=1 TP=1.
    m = classification_metrics([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    assert m["auc"] == pytest.approx(0.75)
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["precision"] == pytest.approx(1.0)
    assert m["recall"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(1.0)
    assert m["confusion_matrix"] == [[2, 0], [1, 1]]
    # A lower threshold turns 0.4 and 0.35 positive: TN=1 FP=1 FN=0 TP=2; AUC does not move.
    m = classification_metrics([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], threshold=0.3)
    assert m["confusion_matrix"] == [[1, 1], [0, 2]]
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(1.0)
    assert m["auc"] == pytest.approx(0.75)


def test_two_column_scores_and_multiclass():
    two_col = np.array([[0.9, 0.1], [0.6, 0.4], [0.65, 0.35], [0.2, 0.8]])
    assert classification_metrics([0, 0, 1, 1], two_col)["auc"] == pytest.approx(0.75)
    # Three classes, arg-max predictions [0, 1, 2, 1]: one error (true 2 predicted 1).
    p = np.array([[0.8, 0.1, 0.1], [0.1, 0.7, 0.2], [0.1, 0.2, 0.7], [0.2, 0.5, 0.3]])
    m = classification_metrics([0, 1, 2, 2], p, class_names=["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    assert m["labels"] == ["a", "b", "c"]
    # macro precision: a 1, b 1/2, c 1 -> 5/6; macro recall: a 1, b 1, c 1/2 -> 5/6
    assert m["precision"] == pytest.approx(5 / 6) and m["recall"] == pytest.approx(5 / 6)


def test_auc_undefined_with_one_class_and_table_text():
    m = classification_metrics([1, 1, 1], [0.2, 0.7, 0.9])
    assert math.isnan(m["auc"]) and m["accuracy"] == pytest.approx(2 / 3)
    text = format_metrics(classification_metrics([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8],
                                                 class_names=["normal", "hyperplasia"]), title="demo")
    lines = text.splitlines()
    assert lines[0] == "demo"
    assert any(line.split() == ["auc", "0.7500"] for line in lines)
    assert lines[-2].split() == ["normal", "2", "0"] and lines[-1].split() == ["hyperplasia", "1", "1"]


# ------------------------------------------------------------------------- calibration, operating point
def test_temperature_fit_recovers_the_temperature_that_made_the_labels():
    from MedAILib.tasks.classification import calibration as cal

    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, (4000, 2))
    for t_true in (0.5, 2.0):  # labels drawn from softmax(z / t_true): the NLL minimum is at t_true
        y = (rng.random(4000) < cal.softmax_positive(z, t_true)).astype(int)
        assert cal.fit_temperature(z, y) == pytest.approx(t_true, rel=0.1)
    # scaling never changes the ranking
    p1, p2 = cal.softmax_positive(z, 1.0), cal.softmax_positive(z, 3.0)
    assert np.array_equal(np.argsort(p1, kind="stable"), np.argsort(p2, kind="stable"))


def test_operating_point_by_hand():
    from MedAILib.tasks.classification import calibration as cal

    y = [0, 0, 0, 0, 1, 1, 1, 1]
    s = [0.05, 0.10, 0.30, 0.45, 0.20, 0.40, 0.60, 0.90]
    # cuts: >=0.6 -> sens 0.5 spec 1 (J 0.5); >=0.4 -> 0.75 / 0.75 (0.5); >=0.2 -> 1.0 / 0.5 (0.5);
    # >=0.45 -> 0.5 / 0.75. Ties at J = 0.5: the highest threshold wins, halfway to the next score (0.45).
    op = cal.operating_point(y, s)
    assert op["threshold"] == pytest.approx((0.60 + 0.45) / 2)
    assert op["sensitivity"] == 0.5 and op["specificity"] == 1.0 and op["youden_j"] == pytest.approx(0.5)
    op = cal.operating_point(y, s, "sensitivity", 0.75)  # the highest cut with 3 of 4 positives: 0.40
    assert op["threshold"] == pytest.approx((0.40 + 0.30) / 2) and op["sensitivity"] == 0.75
    op = cal.operating_point(y, s, "sensitivity", 1.0)
    assert op["threshold"] == pytest.approx((0.20 + 0.10) / 2) and op["specificity"] == 0.5
    with pytest.raises(ValueError, match="both classes"):
        cal.operating_point([1, 1], [0.2, 0.3])
    lo, hi = cal.wilson_interval(57, 69)
    assert lo < 57 / 69 < hi and lo == pytest.approx(0.7202, abs=1e-3) and hi == pytest.approx(0.8976, abs=1e-3)


def test_shipped_operating_point_is_reproduced_from_the_validation_split(npz):
    """The stored T and threshold are what the calibration gives on val (so test was not used)."""
    from MedAILib.tasks.classification import calibration as cal

    cfg = json.loads((BUNDLE / "configs" / "medai.json").read_text())
    z, y = cal.bundle_logits(BUNDLE, npz, "val")
    t = cal.fit_temperature(z, y)
    assert t == pytest.approx(cfg["temperature"], rel=1e-3)
    op = cal.operating_point(y, cal.softmax_positive(z, t), cfg["operating_point"]["method"])
    assert op["threshold"] == pytest.approx(cfg["decision_threshold"], abs=1e-3)
    m = tc.evaluate_bundle(BUNDLE, npz, split="val")  # the bundle's own rule: val sens/spec as stored
    assert m["threshold"] == pytest.approx(cfg["decision_threshold"])
    assert m["recall"] == pytest.approx(op["sensitivity"]) and m["specificity"] == pytest.approx(op["specificity"])
    card = json.loads((BUNDLE / "docs" / "metrics.json").read_text())
    assert card["test"]["threshold"] == pytest.approx(cfg["decision_threshold"])
    assert card["test"]["recall"] > card["default_threshold_test"]["recall"]  # the point of issue 21


# ---------------------------------------------------------------------------------------- training
def test_smoke_train_resume_and_bundle(npz, tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "bundle"
    s = tc.train(npz, out, epochs=2, limit=48, batch_size=16, seed=3, stop_after=1)  # "killed" after 1 epoch
    assert s["epochs_done"] == 1 and s["best_epoch"] == 1 and 0.0 <= s["best_auc"] <= 1.0
    # Resume continues the same run from its checkpoint instead of starting over.
    s2 = tc.train(npz, out, epochs=2, limit=48, batch_size=16, seed=3, resume=True)
    log = [json.loads(line) for line in (out / "train" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2] and s2["epochs_done"] == 2
    # ... and ends where an uninterrupted run with the same seed ends, weight for weight.
    ref = tc.train(npz, tmp_path / "ref", epochs=2, limit=48, batch_size=16, seed=3)
    assert ref["best_auc"] == s2["best_auc"]
    a = torch.load(out / "train" / "last.pt", weights_only=False)["net"]
    b = torch.load(tmp_path / "ref" / "train" / "last.pt", weights_only=False)["net"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    sd = torch.load(out / "train" / "final_best.pt", weights_only=True)
    tc.write_bundle(out, sd, s2["network_def"], s2["size"])
    meta = json.loads((out / "configs" / "metadata.json").read_text())
    assert meta["network_data_format"]["inputs"]["image"]["spatial_shape"] == [28, 28, 28]
    assert meta["network_data_format"]["outputs"]["pred"]["channel_def"] == {"0": "normal", "1": "hyperplasia"}
    net = tc.load_bundle_network(out)
    x, y = tc.load_split(npz, "val", limit=8)
    p = tc.predict_proba(net, x)
    assert p.shape == (8,) and np.all((p >= 0) & (p <= 1))
    # finalize = bundle + calibration on val (T, operating point) + the card from those figures
    r = tc.finalize(out, npz, {**s2, "limit": 48}, "python -m MedAILib.tasks.classification.trainer ...")
    cfg = json.loads((out / "configs" / "medai.json").read_text())
    assert cfg["temperature"] == pytest.approx(r["temperature"]) and cfg["temperature"] > 0
    assert cfg["decision_threshold"] == pytest.approx(r["operating_point"]["threshold"])
    assert r["test"]["threshold"] == pytest.approx(cfg["decision_threshold"]) and r["test"]["n"] == 48
    card = (out / "docs" / "README.md").read_text()
    assert "Smoke run" in card and f"{cfg['decision_threshold']:.4f}" in card and "T = " in card


def test_wrong_size_and_missing_file_are_clear(npz, tmp_path):
    with pytest.raises(InputError, match="28³"):
        tc.train(npz, tmp_path / "b", size=64, epochs=1, limit=8)
    with pytest.raises(InputError, match="not found"):
        tc.load_split(tmp_path / "nope.npz", "train")


# ---------------------------------------------------------------------------------- shipped bundle
def test_shipped_bundle_files_and_recipe():
    if not BUNDLE.exists():
        pytest.fail(f"shipped bundle missing: {BUNDLE}")
    sd = torch.load(BUNDLE / "models" / "model.pt", weights_only=True, map_location="cpu")
    assert isinstance(sd, dict) and all(isinstance(v, torch.Tensor) for v in sd.values())
    assert (BUNDLE / "models" / "model.pt").stat().st_size <= 10 * 1024 * 1024
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    inp = meta["network_data_format"]["inputs"]["image"]
    prep = json.loads((BUNDLE / "configs" / "medai.json").read_text())["preparation"]
    assert prep["resize"] == inp["spatial_shape"] and prep["crop_size_mm"] == [64.0, 64.0, 64.0]
    for name in ("docs/README.md", "LICENSE", "configs/inference.json"):
        assert (BUNDLE / name).stat().st_size > 100, name


def test_shipped_bundle_inference_config_runs(npz, tmp_path):
    """The bundle's own inference.json (MONAI ConfigParser) runs on npy masks and gives probabilities."""
    from monai.bundle import ConfigParser

    x, _ = tc.load_split(npz, "test", limit=2)
    data = tmp_path / "data"
    data.mkdir()
    for i, v in enumerate(x[:, 0]):
        np.save(data / f"case{i}.npy", (v * 255).astype(np.uint8))  # as stored in the npz: 0/255
    cfg = ConfigParser()
    cfg.read_config(BUNDLE / "configs" / "inference.json")
    cfg["bundle_root"] = str(BUNDLE)
    cfg["dataset_dir"] = str(data)
    cfg["device"] = "$torch.device('cpu')"
    ds = cfg.get_parsed_content("dataset")
    net = cfg.get_parsed_content("network")
    net.load_state_dict(torch.load(BUNDLE / "models" / "model.pt", weights_only=True))
    net.eval()
    img = ds[0]["image"]
    assert tuple(img.shape) == (1, 28, 28, 28) and float(img.max()) == pytest.approx(1.0)
    with torch.no_grad():
        logits = cfg.get_parsed_content("inferer")(img[None].float(), net)
    post = cfg.get_parsed_content("postprocessing")({"pred": logits[0]})
    assert post["pred"].shape == (2,) and float(post["pred"].sum()) == pytest.approx(1.0, abs=1e-5)
    temperature, _ = tc.bundle_calibration(BUNDLE)  # the config divides the logits by the stored T
    direct = tc.predict_proba(tc.load_bundle_network(BUNDLE), x[:1], temperature=temperature)[0]
    assert float(post["pred"][1]) == pytest.approx(float(direct), abs=1e-5)


def test_shipped_bundle_beats_chance_on_real_test_cases(npz):
    m = tc.evaluate_bundle(BUNDLE, npz, split="test", limit=40)
    assert m["n"] == 40 and sum(m["confusion_matrix"][1]) >= 5  # both classes present
    assert m["auc"] >= 0.75, format_metrics(m)
