"""`medai evaluate segmentation`: MONAI's Dice/HD95/ASD/NSD per label and case, on real hippocampus labels.

Fast tests check the numbers against cases whose answer is known independently (a label against
itself, against a copy shifted by one voxel, Dice counted by hand) and the case matching/report; the
slow test reproduces the shipped model card's validation figures from the 50 validation cases.
"""

from __future__ import annotations

import csv
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from MedAILib.cli import main
from MedAILib.core.errors import InputError
from MedAILib.io import read_image, read_segmentation, write_segmentation
from MedAILib.tasks.segmentation.evaluate import evaluate, score_labels

warnings.filterwarnings("ignore", category=FutureWarning)
HIPPO = "msd-hippocampus"
CARD = Path(__file__).resolve().parents[2] / "MedAI/MedAILib/resources/Models/hippocampus_unet"


def _label(data_dir, case="hippocampus_003"):
    return read_segmentation(data_dir / HIPPO / "labelsTr" / f"{case}.nii.gz")


def test_identical_and_shifted_labels_give_known_distances(data_dir):
    ref = _label(data_dir)
    same = score_labels(ref, ref, [1, 2])
    for v in (1, 2):
        assert same[v]["dice"] == 1.0 and same[v]["hd95_mm"] == 0.0 and same[v]["asd_mm"] == 0.0
        assert same[v]["nsd"] == 1.0 and same[v]["volume_diff_ml"] == 0.0
    shifted = ref.copy()
    shifted.array = np.roll(ref.array, 1, axis=2)  # one voxel (1 mm) along I
    s = score_labels(shifted, ref, [1, 2], tolerance_mm=1.0)
    for v in (1, 2):
        a, b = shifted.array == v, ref.array == v
        by_hand = 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())
        assert s[v]["dice"] == pytest.approx(by_hand, abs=1e-4)
        # a 1 mm shift moves no boundary point further than 1 mm: HD95 is at most 1, and above 0
        assert 0 < s[v]["hd95_mm"] <= 1.0 + 1e-6
        assert 0 < s[v]["asd_mm"] < 1.0
        assert s[v]["nsd"] == pytest.approx(1.0, abs=1e-6)  # everything within the 1 mm tolerance
    tight = score_labels(shifted, ref, [1], tolerance_mm=0.5)
    assert tight[1]["nsd"] < 0.9  # the shifted faces are 1 mm away: outside a 0.5 mm tolerance


def test_missing_label_gives_dice_zero_and_no_distance(data_dir):
    ref = _label(data_dir)
    pred = ref.copy()
    pred.array = np.where(ref.array == 2, 0, ref.array).astype(ref.array.dtype)
    s = score_labels(pred, ref, [1, 2, 3])
    assert s[1]["dice"] == 1.0
    assert s[2]["dice"] == 0.0 and s[2]["hd95_mm"] is None and "absent in the prediction" in s[2]["note"]
    assert s[3]["dice"] is None and s[3]["note"] == "absent in both"


def test_cli_folders_matched_by_case_name_with_json_and_csv_reports(data_dir, tmp_path, capsys):
    """Predictions named case.seg.nrrd are matched to references case.nii.gz; one prediction
    without a reference is reported, not scored."""
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    pred.mkdir(), ref.mkdir()
    cases = ["hippocampus_003", "hippocampus_004"]
    for i, c in enumerate(cases):
        shutil.copy(data_dir / HIPPO / "labelsTr" / f"{c}.nii.gz", ref / f"{c}.nii.gz")
        lab = _label(data_dir, c)
        lab.array = np.roll(lab.array, i, axis=1)  # case 0 perfect, case 1 shifted one voxel along J
        write_segmentation(lab, pred / f"{c}.seg.nrrd")
    write_segmentation(_label(data_dir, "hippocampus_006"), pred / "hippocampus_006.seg.nrrd")
    rc = main(["evaluate", "segmentation", str(pred), str(ref), "--labels", "1,label_2",
               "--report", str(tmp_path / "r.json")])
    assert rc == 0
    r = json.loads((tmp_path / "r.json").read_text())
    assert [c["case"] for c in r["cases"]] == cases
    assert r["unmatched_predictions"] == ["hippocampus_006"]
    assert set(r["cases"][0]["labels"]) == {"label_1", "label_2"}
    assert r["cases"][0]["labels"]["label_1"]["dice"] == 1.0
    shifted = r["cases"][1]["labels"]["label_1"]
    assert shifted["dice"] < 1.0 and shifted["hd95_mm"] > 0
    mean_dice = np.mean([c["labels"]["label_1"]["dice"] for c in r["cases"]])
    assert r["mean"]["label_1"]["dice"] == pytest.approx(mean_dice, abs=1e-4)
    # the report is not replaced without --overwrite
    before = (tmp_path / "r.json").read_bytes()
    assert main(["evaluate", "segmentation", str(pred), str(ref), "--report", str(tmp_path / "r.json")]) == 2
    assert "already exists" in capsys.readouterr().err and (tmp_path / "r.json").read_bytes() == before
    assert main(["evaluate", "segmentation", str(pred), str(ref), "--report", str(tmp_path / "r.csv")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "r.csv")))
    assert {r["case"] for r in rows} == {*cases, "mean"}
    assert {"dice", "hd95_mm", "asd_mm", "nsd", "volume_diff_ml"} <= set(rows[0])


def test_unknown_label_name_is_refused_with_the_known_ones(data_dir, tmp_path):
    f = data_dir / HIPPO / "labelsTr" / "hippocampus_003.nii.gz"
    with pytest.raises(InputError, match="no label called 'tumour'"):
        evaluate(f, f, labels="tumour")


@pytest.mark.slow
def test_validation_split_reproduces_model_card(data_dir, tmp_path):
    """The shipped model on its 50 validation cases (split.json) through `medai segment`, scored by
    `medai evaluate segmentation`: the Dice and HD95 of the model card (metadata eval_metrics)."""
    split = json.loads((CARD / "split.json").read_text())["validation"]
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir(), labels.mkdir()
    for c in split:
        (images / f"{c}.nii.gz").symlink_to(data_dir / HIPPO / "imagesTr" / f"{c}.nii.gz")
        (labels / f"{c}.nii.gz").symlink_to(data_dir / HIPPO / "labelsTr" / f"{c}.nii.gz")
    assert main(["segment", str(images), "-o", str(tmp_path / "pred"), "--progress", "none", "--device", "cpu"]) == 0
    report = tmp_path / "scores.json"
    assert main(["evaluate", "segmentation", str(tmp_path / "pred"), str(labels), "--report", str(report)]) == 0
    r = json.loads(report.read_text())
    card = json.loads((CARD / "configs" / "metadata.json").read_text())["eval_metrics"]
    assert len(r["cases"]) == 50
    assert r["mean"]["anterior"]["dice"] == pytest.approx(card["val_dice_anterior"], abs=2e-4)
    assert r["mean"]["posterior"]["dice"] == pytest.approx(card["val_dice_posterior"], abs=2e-4)
    assert r["mean_over_labels"]["dice"] == pytest.approx(card["val_mean_dice"], abs=2e-4)
    assert r["mean"]["anterior"]["hd95_mm"] == pytest.approx(card["val_hd95_anterior_mm"], abs=2e-3)
    assert r["mean"]["posterior"]["hd95_mm"] == pytest.approx(card["val_hd95_posterior_mm"], abs=2e-3)
