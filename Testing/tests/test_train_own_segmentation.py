"""`medai train segmentation` on the user's own data (issue 19): datalists, the data-driven plan,
time limit, --init fine-tuning, the bundle in the user catalogue, and `medai segment` running it.

Synthetic volumes with known geometry (fast); the real-data figures are in docs/training.md.
"""

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from MedAILib.core.errors import InputError
from MedAILib.tasks.segmentation import own_data, planning


def _write(path: Path, arr, spacing=(1.0, 1.0, 1.0)):
    nib.save(nib.Nifti1Image(np.asarray(arr), np.diag([*spacing, 1.0])), str(path))
    return str(path)


def _case(folder: Path, name: str, seed: int, shape=(24, 24, 20), values=(2, 5), channels=2, ct=False):
    """Two channels; label value 2 = a bright sphere, 5 = a dark box: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    zz = np.indices(shape).astype(float)
    c = np.array(shape) / 2 + rng.integers(-2, 3, 3)
    sphere = ((zz - c[:, None, None, None]) ** 2).sum(0) < 25
    box = np.zeros(shape, bool)
    box[2:8, 2:8, 2:8] = True
    lab = np.zeros(shape, np.uint8)
    lab[sphere], lab[box] = values[0], values[1]
    base = -1000.0 if ct else 100.0
    files = []
    for k in range(channels):
        img = base + rng.normal(0, 5, shape) + 300 * sphere - (0 if ct else 80) * box + 20 * k
        files.append(_write(folder / f"{name}_{k:04d}.nii.gz", img.astype(np.float32)))
    return {"image": files if channels > 1 else files[0], "label": _write(folder / f"{name}_seg.nii.gz", lab),
            "id": name}


@pytest.fixture
def home(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDAI_HOME", str(tmp_path / "medai-home"))
    return tmp_path / "medai-home"


def test_folders_pair_images_labels_and_channels(tmp_path):
    (tmp_path / "img").mkdir(), (tmp_path / "lab").mkdir()
    for i in range(2):
        it = _case(tmp_path / "img", f"c{i}", i)
        Path(it["label"]).rename(tmp_path / "lab" / f"c{i}_seg.nii.gz")
    dl = planning.datalist_from_folders(tmp_path / "img", tmp_path / "lab")
    assert [i["id"] for i in dl["training"]] == ["c0", "c1"]
    assert [Path(f).name for f in dl["training"][0]["image"]] == ["c0_0000.nii.gz", "c0_0001.nii.gz"]
    with pytest.raises(InputError, match="no image"):
        planning.datalist_from_folders(tmp_path / "lab", tmp_path / "img")


def test_datalist_relative_paths_and_missing_file_named(tmp_path):
    it = _case(tmp_path, "a", 0, channels=1)
    (tmp_path / "dl.json").write_text(json.dumps({"training": [{"image": "a_0000.nii.gz", "label": "a_seg.nii.gz"}]}))
    dl = planning.read_datalist(tmp_path / "dl.json")
    assert dl["training"][0]["image"] == it["image"]
    (tmp_path / "bad.json").write_text(json.dumps({"training": [{"image": "nope.nii.gz", "label": "a_seg.nii.gz"}]}))
    with pytest.raises(InputError, match="nope.nii.gz does not exist"):
        planning.read_datalist(tmp_path / "bad.json")
    tr, va, note = planning.split_validation(dl)
    assert tr == va and "ONE labelled case" in note


def test_plan_follows_the_data(tmp_path):
    mr = [_case(tmp_path, f"m{i}", i, channels=1) for i in range(2)]
    ct = [_case(tmp_path, f"t{i}", i, channels=1, ct=True) for i in range(2)]
    p_mr = planning.make_plan(planning.data_facts(mr))
    p_ct = planning.make_plan(planning.data_facts(ct))
    assert p_mr["normalisation"]["kind"] == "zscore" and p_mr["modalities"] == ["MR"]
    assert p_ct["normalisation"]["kind"] == "ct" and p_ct["normalisation"]["a_min"] < p_ct["normalisation"]["a_max"]
    assert p_mr["label_values"] == [0, 2, 5]
    # every patch axis divisible by the network's total down-sampling
    assert all(x % 2 ** (p_mr["levels"] - 1) == 0 for x in p_mr["patch"])
    # anisotropic data: the coarse axis takes its 10th percentile, not the median
    facts = planning.data_facts(mr)
    facts["spacings"] = np.array([[1, 1, 5.0], [1, 1, 5.0], [1, 1, 3.0], [1, 1, 5.0]])
    facts["shapes"] = np.array([[200, 200, 30]] * 4)
    p = planning.make_plan(facts)
    assert p["spacing"][2] < 5.0 and "anisotropic" in p["spacing_reason"]
    # a small memory budget shrinks the patch
    big = planning.make_plan(facts, memory_gb=8)
    small = planning.make_plan(facts, memory_gb=0.05)
    assert np.prod(small["patch"]) < np.prod(big["patch"])
    assert small["estimated_training_memory_gb"] <= 0.05 or max(small["patch"]) <= 2 ** (small["levels"] - 1)


def test_directional_label_names_switch_mirroring_off():
    assert own_data.flip_axes({0: "background", 1: "left kidney"}) == []
    assert own_data.flip_axes({0: "background", 1: "tumour"}) == [0, 1, 2]


def test_train_two_channel_non_contiguous_labels_registers_and_segments(tmp_path, home):
    from MedAILib.core.volume import Volume  # noqa: F401  (engine import check)
    from MedAILib.io.images import read_image
    from MedAILib.models.bundle import resolve_model
    from MedAILib.tasks.segmentation.pipeline import segment

    items = [_case(tmp_path, f"c{i}", i) for i in range(4)]
    dl = {"training": items[:3], "validation": items[3:], "labels": {"2": "sphere", "5": "box"},
          "channels": ["A", "B"]}
    info = own_data.train_own(dl, tmp_path / "bundle", epochs=12, base_filters=8, lr=1e-2, batch_size=2,
                              steps_per_epoch=4, val_interval=3, seed=1, command="test")
    assert info["catalogue_id"] == "bundle" and info["n_val"] == 1
    assert set(info["val_dice"]) == {"sphere", "box"}
    meta = json.loads((tmp_path / "bundle" / "configs" / "metadata.json").read_text())
    assert meta["network_data_format"]["inputs"]["image"]["channel_def"] == {"0": "A", "1": "B"}
    card = (tmp_path / "bundle" / "docs" / "README.md").read_text()
    assert "| 5 | box |" in card and "seed 1" in card
    cat = json.loads((home / "catalogue.json").read_text())
    entry = next(m for m in cat["models"] if m["id"] == "bundle")
    assert {l["value"] for l in entry["labels"]} >= {2, 5}
    # runs through medai's own pipeline from the catalogue id, values back to the user's 2 and 5
    bundle = resolve_model("bundle")
    vols = [read_image(f) for f in items[3]["image"]]
    res = segment(vols, bundle, device="cpu")
    out = res.labelmap.array
    ref = np.asarray(nib.load(items[3]["label"]).dataobj).transpose(2, 1, 0)
    assert set(np.unique(out)) <= {0, 2, 5}
    dice = 2 * ((out == 2) & (ref == 2)).sum() / ((out == 2).sum() + (ref == 2).sum())
    assert dice > 0.5, f"the sphere was not learnt (Dice {dice:.2f})"


def test_time_limit_stops_cleanly_with_a_bundle(tmp_path, home):
    items = [_case(tmp_path, f"c{i}", i, channels=1) for i in range(3)]
    info = own_data.train_own({"training": items}, tmp_path / "b", epochs=500, base_filters=4, steps_per_epoch=2,
                              time_limit_min=0.3, register=False)
    assert info["epochs_run"] < 500 and info["stopped"].startswith("time limit")
    assert (tmp_path / "b" / "models" / "model.pt").is_file() and info["best_epoch"] >= 1


def test_init_loads_matching_layers_and_new_head(tmp_path, home):
    items = [_case(tmp_path, f"c{i}", i, channels=1) for i in range(3)]
    a = own_data.train_own({"training": items}, tmp_path / "a", epochs=1, base_filters=4, steps_per_epoch=1,
                           model_id="init-src")
    # same data but only one foreground label: a different label set -> fresh output head
    one = []
    for it in items:
        lab = np.asarray(nib.load(it["label"]).dataobj)
        one.append({**it, "label": _write(Path(it["label"]).with_name(Path(it["label"]).name.replace("_seg", "_one")),
                                          (lab == 2).astype(np.uint8))})
    b = own_data.train_own({"training": one}, tmp_path / "b", epochs=1, base_filters=16, steps_per_epoch=1,
                           init="init-src", register=False)
    rep = b["init"]
    assert rep["tensors_loaded"] > 10 and rep["tensors_fresh"] >= 1
    assert 0.5 < rep["fraction_of_parameters_loaded"] < 1.0
    assert b["plan"]["filters"] == a["plan"]["filters"]  # the init network's width, not --base-filters
    src = torch.load(tmp_path / "a" / "models" / "model.pt", weights_only=True)
    assert src, a["catalogue_id"]


def test_cli_refuses_without_data(tmp_path, capsys):
    from MedAILib.cli import main

    rc = main(["train", "segmentation", "--out", str(tmp_path / "o")])
    assert rc != 0
    assert "no training data given" in capsys.readouterr().err
