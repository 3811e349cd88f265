"""Model Zoo fidelity of labels and tasks (issue 16.9): the label values of a bundle come from its own
post-processing, run on a synthetic network output; detection/classification bundles are refused.

The BraTS bundle here uses the Model Zoo's brats_mri_segmentation post-processing verbatim
(Project-MONAI/model-zoo models/brats_mri_segmentation/configs/inference.json @ c1f0166: sigmoid,
Invertd, threshold 0.5, the Lambdad writing ET=4 over TC=1 over WT=2) with its metadata's channel
names (Tumor core, Whole tumor, Enhancing tumor) and a small random-weight SegResNet.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from bundle_factory import make_bundle
from modelzoo_bundles import BRATS_INPUTS, segresnet_def

from MedAILib.core.errors import ModelError
from MedAILib.models import modelzoo

warnings.filterwarnings("ignore", module="monai")
ZOO_BRATS_POST = [
    {"_target_": "Activationsd", "keys": "pred", "sigmoid": True},
    {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image",
     "meta_keys": "pred_meta_dict", "nearest_interp": False, "to_tensor": True},
    {"_target_": "AsDiscreted", "keys": "pred", "threshold": 0.5},
    {"_target_": "Lambdad", "keys": "pred",
     "func": "$lambda x: torch.where(x[[2]] > 0, 4, torch.where(x[[0]] > 0, 1, torch.where(x[[1]] > 0, 2, 0)))"},
    {"_target_": "SaveImaged", "keys": "pred", "meta_keys": "pred_meta_dict", "output_dir": "@output_dir",
     "output_postfix": "seg", "output_dtype": "uint8", "resample": False, "squeeze_end_dims": True},
]


@pytest.fixture(autouse=True)
def medai_home(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDAI_HOME", str(tmp_path / "medai_home"))


def brats_bundle(folder: Path, post=ZOO_BRATS_POST) -> Path:
    make_bundle(folder, labels=("Tumor core", "Whole tumor", "Enhancing tumor"), inputs=BRATS_INPUTS,
                network_def=segresnet_def(4, 3), intensity="normalize")
    cfg_path = folder / "configs" / "inference.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["postprocessing"]["transforms"] = post
    cfg_path.write_text(json.dumps(cfg))
    return folder


def test_brats_post_processing_gives_1_2_4_with_matching_names(tmp_path):
    root = brats_bundle(tmp_path / "brats")
    mapping = modelzoo.learn_label_values(root, "sigmoid")
    assert sorted(mapping) == [0, 1, 2, 4]
    assert mapping[2] == [(0, 1, 0)]  # edema: whole tumour only
    labels = {l["value"]: l["name"] for l in modelzoo.labels_from_postprocessing(
        mapping, {0: "Tumor core", 1: "Whole tumor", 2: "Enhancing tumor"})}
    assert labels == {1: "Tumor core without Enhancing tumor",
                      2: "Whole tumor without Tumor core, Enhancing tumor", 4: "Enhancing tumor"}


def test_models_add_uses_the_post_processing_values_and_says_so(tmp_path):
    root = brats_bundle(tmp_path / "brats")
    said = []
    # the metadata alone says 1/2/3 (sigmoid channels + 1): the old, wrong entry
    assert [l["value"] for l in modelzoo.entry_from_bundle(root)["labels"]] == [1, 2, 3]
    entry = modelzoo.add_bundle(str(root), assume_yes=True, say=said.append)
    assert [(l["value"], l["name"]) for l in entry["labels"]] == [
        (1, "Tumor core without Enhancing tumor"), (2, "Whole tumor without Tumor core, Enhancing tumor"),
        (4, "Enhancing tumor")]
    assert any("WARNING" in s and "1=Tumor core" in s and "4=Enhancing tumor" in s for s in said)
    from MedAILib.models.catalogue import load_catalogue

    assert [l.value for l in load_catalogue().get(entry["id"]).label_infos] == [1, 2, 4]


def test_labels_that_cannot_be_determined_get_a_visible_warning(tmp_path):
    broken = [dict(ZOO_BRATS_POST[0]), {"_target_": "Lambdad", "keys": "pred", "func": "$lambda x: x.no_such()"}]
    root = brats_bundle(tmp_path / "brats", post=broken)
    said = []
    entry = modelzoo.add_bundle(str(root), assume_yes=True, say=said.append)
    assert any("could not be determined" in s for s in said)
    assert "label values not checked against the post-processing" in entry["notes"]


def test_catalogue_brats_entry_has_the_post_processing_values():
    brats = {e["id"]: e for e in modelzoo.modelzoo_entries()}["brats_mri_segmentation"]
    assert sorted(l["value"] for l in brats["labels"]) == [1, 2, 4]
    names = {l["value"]: l["name"].lower() for l in brats["labels"]}
    assert "enhancing" in names[4] and "edema" in names[2] and "core" in names[1]


@pytest.mark.parametrize("kind", ["detection", "classification"])
def test_non_segmentation_bundles_are_refused_with_a_message(tmp_path, kind):
    root = make_bundle(tmp_path / kind)
    meta_path = root / "configs" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    if kind == "detection":  # as lung_nodule_ct_detection's metadata
        meta["task"] = "CT lung nodule detection"
        meta["pred_classes"] = "dict data, containing Nx6 box, Nx1 classification labels, Nx1 classification scores."
        meta["network_data_format"]["outputs"] = {"pred": {"type": "object", "format": "dict", "num_channels": 1}}
    else:
        meta["task"] = "Endoscopic image classification"
        meta["network_data_format"]["outputs"] = {"pred": {"type": "probabilities", "format": "classes",
                                                           "num_channels": 2}}
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=f"is a {kind} bundle, not a segmentation model"):
        modelzoo.add_bundle(str(root), assume_yes=True, say=lambda s: None)
    assert not (tmp_path / "medai_home" / "models" / kind).exists()


def test_fast_variants_state_their_spacing_and_what_they_cost():
    """Catalogue entries with a --fast variant (coarser Spacingd, applied by the bundle loader, see
    test_segment.py::test_fast_mode_needs_catalogue_permission) say what it costs in Dice, or why that
    was not measured; the fast spacing is coarser than the trained one on every axis."""
    from MedAILib.models.catalogue import load_catalogue

    fast = [e for e in load_catalogue() if e.raw["spatial"].get("fast_spacing")]
    assert fast, "no model declares a fast mode"
    for e in fast:
        assert e.raw.get("fast_dice_cost"), e.id
        base = e.raw["spatial"].get("spacing")
        assert base and all(f > b for f, b in zip(e.raw["spatial"]["fast_spacing"], base)), e.id
