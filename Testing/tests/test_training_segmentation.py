"""Hippocampus segmentation trainer and the shipped bundle (Resources/Models/hippocampus_unet).

Real MSD Task04 cases; the data-dependent tests skip when MEDAI_DATA_DIR is absent.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from MedAILib.tasks.segmentation import trainer as seg

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "MedAI" / "MedAILib" / "resources" / "Models" / "hippocampus_unet"
SPLIT = BUNDLE / "split.json"


@pytest.fixture(scope="module")
def hippo_dir(data_dir) -> Path:
    d = data_dir / "msd-hippocampus"
    if not (d / "imagesTr").is_dir():
        pytest.skip(f"msd-hippocampus not found under {data_dir}")
    return d


def test_split_is_fixed_disjoint_and_reproducible(hippo_dir):
    split = json.loads(SPLIT.read_text())
    assert len(split["training"]) == 200 and len(split["validation"]) == 50
    assert not set(split["training"]) & set(split["validation"])
    assert set(split["training"]) | set(split["validation"]) == set(seg.list_cases(hippo_dir))
    # Written from a seeded shuffle: the same seed gives the same split.
    again = seg.make_split(seg.list_cases(hippo_dir), n_val=50, seed=split["seed"])
    assert again["validation"] == split["validation"]


def test_smoke_train_writes_loadable_bundle_and_resume_is_exact(hippo_dir, tmp_path):
    split = json.loads(SPLIT.read_text())
    small = {"training": split["training"][:4], "validation": split["validation"][:2]}
    kw = dict(seed=3, batch_size=2, filters=(8, 16, 32, 64), val_interval=1, threads=1)

    straight = seg.train(hippo_dir, small, tmp_path / "a", work_dir=tmp_path / "wa", epochs=2, **kw)
    seg.train(hippo_dir, small, tmp_path / "b", work_dir=tmp_path / "wb", epochs=1, **kw)
    resumed = seg.train(hippo_dir, small, tmp_path / "b", work_dir=tmp_path / "wb", epochs=2, resume=True, **kw)

    a = torch.load(tmp_path / "wa" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "wb" / "checkpoint.pt", weights_only=False)
    assert a["state"]["epoch"] == b["state"]["epoch"] == 2
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], msg=f"resume diverged at {k}")
    assert resumed["val_dice"]["n_cases"] == straight["val_dice"]["n_cases"] == 2
    rows = (tmp_path / "wb" / "train_log.csv").read_text().strip().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2"]

    bundle = tmp_path / "b"
    for rel in ("configs/inference.json", "configs/metadata.json", "models/model.pt", "docs/README.md", "LICENSE"):
        assert (bundle / rel).is_file(), rel
    net = _bundle_network(bundle)
    net.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))


def _bundle_network(bundle: Path):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser.read_meta(str(bundle / "configs" / "metadata.json"))
    return parser.get_parsed_content("network_def")


def test_shipped_bundle_parses_and_weights_load():
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "inference.json"))
    parser.read_meta(str(BUNDLE / "configs" / "metadata.json"))
    for key in ("imports", "network_def", "preprocessing", "inferer", "postprocessing", "handlers", "evaluator",
                "initialize", "run"):
        assert key in parser.config, key
    assert parser["preprocessing"]["transforms"][0]["_target_"] == "LoadImaged"
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    assert meta["network_data_format"]["outputs"]["pred"]["channel_def"] == {
        "0": "background", "1": "anterior hippocampus", "2": "posterior hippocampus"}
    assert meta["eval_metrics"]["val_mean_dice"] >= 0.80

    model = BUNDLE / "models" / "model.pt"
    assert model.stat().st_size <= 10 * 1024 * 1024
    net = parser.get_parsed_content("network_def")
    missing, unexpected = net.load_state_dict(torch.load(model, weights_only=True), strict=True)
    assert not missing and not unexpected
    with torch.no_grad():
        out = net.eval()(torch.zeros(1, 1, *seg.PATCH))
    assert out.shape == (1, 3, *seg.PATCH)


def test_shipped_model_dice_on_validation_cases(hippo_dir):
    split = json.loads(SPLIT.read_text())
    items = seg.datalist(hippo_dir, split["validation"][:5])
    scores = seg.evaluate_bundle(BUNDLE, items)
    assert scores["n_cases"] == 5
    assert scores["mean"] >= 0.80, scores
    assert min(scores["anterior"], scores["posterior"]) >= 0.70, scores


def test_dice_per_label_is_exact_on_known_masks():
    label = torch.zeros(1, 4, 4, 4, dtype=torch.long)
    label[0, :2] = 1
    label[0, 2:] = 2
    pred = label.clone()
    pred[0, 0, 0, :] = 2  # 4 voxels of label 1 (32) predicted as 2
    d = seg.dice_per_label(pred, label)
    np.testing.assert_allclose(d, [2 * 28 / (28 + 32), 2 * 32 / (36 + 32)], rtol=1e-6)


def test_cli_train_segmentation_is_registered():
    from MedAILib.cli import build_parser

    import argparse

    args = build_parser().parse_args(["train", "segmentation", "--data", "D", "--split", "S.json", "--out", "O",
                                      "--epochs", "3"])
    assert args.task == "segmentation" and callable(args.func)
    # the trainer's own parser (built only when `medai train` runs, to keep start-up fast)
    tp = argparse.ArgumentParser()
    seg.add_arguments(tp)
    targs = tp.parse_args(args.task_args)
    assert targs.epochs == 3 and targs.network == "unet"


def test_lr_schedule_is_plain_float_and_decays():
    # A numpy scalar in the optimiser state makes the resume checkpoint unloadable with weights_only=True.
    lrs = [seg._lr_at(e, 30, 2e-3) for e in range(30)]
    assert all(type(x) is float for x in lrs)
    assert lrs[2] == pytest.approx(2e-3) and lrs[-1] < 1e-4 and lrs[10] > lrs[20]
