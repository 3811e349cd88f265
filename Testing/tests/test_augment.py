"""GAN augmentation (tasks/augmentation): the label-conditioned generator's bundle, the synthetic
(image, label) cases it makes from real hippocampus labels, and how the own-data trainer mixes them in."""

import argparse

import numpy as np
import pytest
import torch

from MedAILib.core.errors import InputError, ModelError, OutputError


def _items(data_dir, ids=("hippocampus_001", "hippocampus_004")):
    d = data_dir / "msd-hippocampus"
    return [{"image": str(d / "imagesTr" / f"{c}.nii.gz"), "label": str(d / "labelsTr" / f"{c}.nii.gz"), "id": c}
            for c in ids]


def test_generator_bundle_and_synthetic_cases_on_real_labels(data_dir, tmp_path):
    from MedAILib.io import read_image
    from MedAILib.tasks.augmentation import label_gan

    items = _items(data_dir)
    info = label_gan.train_label_gan(items, tmp_path / "gen", iterations=2, max_minutes=5, log=lambda m: None)
    assert info["label_values"] == [0, 1, 2] and info["n_channels"] == 1 and info["iterations"] == 2
    for f in ("configs/inference.json", "configs/metadata.json", "models/model.pt", "docs/README.md"):
        assert (tmp_path / "gen" / f).is_file()
    with pytest.raises(OutputError, match="already exists"):
        label_gan.train_label_gan(items, tmp_path / "gen", iterations=1, log=lambda m: None)

    entries = label_gan.synthesize(tmp_path / "gen", items, 2, tmp_path / "syn", seed=1)
    assert [e["id"] for e in entries] == ["synthetic_000", "synthetic_001"]
    for k, e in enumerate(entries):
        src = read_image(items[k % 2]["label"])
        img, lab = read_image(e["image"]), read_image(e["label"])
        assert img.same_grid(src) and lab.same_grid(src)  # written on the source case's grid
        assert set(np.unique(lab.array)) <= {0, 1, 2} and (lab.array > 0).sum() > 50
        assert not np.array_equal(lab.array, src.array)  # a new (deformed) shape, not a copy
        assert np.isfinite(img.array).all() and img.array.min() >= 0


def test_bad_generator_folders_are_refused(tmp_path):
    from MedAILib.tasks.augmentation.label_gan import load_generator

    with pytest.raises(ModelError, match="not a generator folder"):
        load_generator(tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "models").mkdir()
    (tmp_path / "configs" / "inference.json").write_text('{"network_def": {}}')
    torch.save({}, tmp_path / "models" / "model.pt")
    with pytest.raises(ModelError, match="not a label-conditioned generator"):
        load_generator(tmp_path)


def test_mixed_loader_draws_synthetic_samples_at_the_ratio():
    from MedAILib.tasks.segmentation.own_data import _mixed_loader

    real = [{"image": torch.zeros(1), "src": torch.tensor(0)} for _ in range(5)]
    syn = [{"image": torch.zeros(1), "src": torch.tensor(1)} for _ in range(20)]
    loader = _mixed_loader(real, syn, 0.3, batch_size=4, steps=500, seed=0)
    src = torch.cat([b["src"] for b in loader])
    assert len(src) == 2000
    assert abs(float(src.float().mean()) - 0.3) < 0.04  # binomial sd ~0.01


def test_synthetic_options_are_checked(tmp_path):
    from MedAILib.tasks.segmentation import trainer
    from MedAILib.tasks.segmentation.own_data import _synthetic_dataset

    with pytest.raises(InputError, match="needs --synthetic-model"):
        _synthetic_dataset([{}], 0.3, None, None, tmp_path, 0, None)
    with pytest.raises(InputError, match="between 0 and 1"):
        _synthetic_dataset([{}], 1.5, "x", None, tmp_path, 0, None)
    p = argparse.ArgumentParser()
    trainer.add_arguments(p)
    a = p.parse_args(["--out", "o", "--images", "i", "--labels", "l", "--synthetic-ratio", "0.3",
                      "--synthetic-model", "G"])
    assert a.synthetic_ratio == 0.3 and a.synthetic_model == "G" and a.synthetic_count is None


def test_own_data_training_with_synthetic_cases_records_them(data_dir, tmp_path):
    """One tiny epoch with half the samples synthetic: the bundle is written (shared writer) and says
    what was mixed in; the synthetic cases come from the training cases only."""
    import json

    from MedAILib.tasks.augmentation.label_gan import train_label_gan
    from MedAILib.tasks.segmentation.own_data import train_own

    items = _items(data_dir)
    train_label_gan(items, tmp_path / "gen", iterations=1, log=lambda m: None)
    dl = {"training": items, "validation": _items(data_dir, ("hippocampus_006",))}
    info = train_own(dl, tmp_path / "seg", epochs=1, steps_per_epoch=1, register=False, base_filters=4,
                     synthetic_ratio=0.5, synthetic_model=str(tmp_path / "gen"), synthetic_count=2)
    assert info["synthetic"]["ratio"] == 0.5 and info["synthetic"]["n_samples"] == 2
    meta = json.loads((tmp_path / "seg" / "configs" / "metadata.json").read_text())
    assert meta["medai_training"]["synthetic"]["n_samples"] == 2
    made = sorted(p.name for p in (tmp_path / "seg.training" / "synthetic").iterdir())
    assert made == ["synthetic_000.nii.gz", "synthetic_000_label.nii.gz", "synthetic_001.nii.gz",
                    "synthetic_001_label.nii.gz"]


def test_generator_command_line(data_dir, tmp_path, capsys):
    """`python -m MedAILib.tasks.augmentation.label_gan` (add_arguments/run, the `medai train` convention):
    writes the generator from a datalist's training cases and refuses to replace it."""
    import json

    from MedAILib.tasks.augmentation import label_gan

    dl = tmp_path / "dl.json"
    dl.write_text(json.dumps({"training": _items(data_dir)}))
    assert label_gan.main(["--datalist", str(dl), "--out", str(tmp_path / "g"), "--max-minutes", "0"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out[out.index("{"):])["n_cases"] == 2
    assert (tmp_path / "g" / "models" / "model.pt").is_file()
    with pytest.raises(OutputError, match="already exists"):
        label_gan.main(["--datalist", str(dl), "--out", str(tmp_path / "g")])
