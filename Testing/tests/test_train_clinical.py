"""Classification with clinical variables (issue 19.3): CSV reading, encoding with missing values,
feature-level fusion, the variables declared in the bundle, and `medai classify` refusing without them."""

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from MedAILib.core.errors import InputError
from MedAILib.tasks.classification import clinical as cl


def _table(tmp_path: Path, n=72, seed=0, missing=0.1):
    """Every image is the same sphere (plus faint noise); the label is age > 50, so only the variable
    can explain it."""
    rng = np.random.default_rng(seed)
    (tmp_path / "img").mkdir()
    rows = []
    sphere = (((np.indices((16, 16, 16)) - 8) ** 2).sum(0) < 25).astype(np.float32)
    for i in range(n):
        img = sphere + 0.01 * rng.random((16, 16, 16)).astype(np.float32)
        nib.save(nib.Nifti1Image(img, np.eye(4)), str(tmp_path / "img" / f"c{i}.nii.gz"))
        age = float(rng.uniform(20, 80))
        split = "train" if i < 36 else "val" if i < 48 else "test"
        rows.append({"image": f"img/c{i}.nii.gz", "label": "old" if age > 50 else "young",
                     "age": "NA" if split == "train" and rng.random() < missing else f"{age:.1f}", "sex": rng.choice(["F", "M"]),
                     "split": split})
    with open(tmp_path / "cases.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return tmp_path / "cases.csv"


def test_encoding_numeric_categorical_and_missing():
    rows = [{"age": "40", "sex": "F"}, {"age": "60", "sex": "M"}, {"age": "NA", "sex": ""}]
    spec = cl.fit_variables(rows, ["age", "sex"])
    assert spec[0]["type"] == "numeric" and spec[0]["mean"] == 50 and spec[0]["missing_in_training"] == 1
    assert spec[1]["levels"] == ["F", "M"]
    assert cl.encoded_size(spec) == 2 + 3
    np.testing.assert_allclose(cl.encode(spec, {"age": "60", "sex": "M"}), [1, 0, 0, 1, 0])
    np.testing.assert_allclose(cl.encode(spec, {"age": "NA", "sex": "NA"}), [0, 1, 0, 0, 1])
    with pytest.raises(InputError, match="not one of the trained levels"):
        cl.encode(spec, {"age": "1", "sex": "X"})
    with pytest.raises(InputError, match="not a number"):
        cl.encode(spec, {"age": "old", "sex": "F"})


def test_csv_errors_name_file_and_column(tmp_path):
    p = _table(tmp_path, n=4)
    with pytest.raises(InputError, match="no column 'weight'"):
        cl.read_table(p, variables=["weight"])
    text = p.read_text().replace("img/c1.nii.gz", "img/gone.nii.gz")
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(InputError, match="line 3: image .*gone.nii.gz does not exist"):
        cl.read_table(tmp_path / "bad.csv")


def test_fusion_learns_what_only_the_variable_carries_and_classify_requires_it(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDAI_HOME", str(tmp_path / "home"))
    p = _table(tmp_path)
    kw = dict(size=16, epochs=25, batch_size=12, lr=5e-3, seed=0)
    fused = cl.train_clinical(p, tmp_path / "fused", ["age", "sex"], **kw)
    image_only = cl.train_clinical(p, tmp_path / "img_only", [], **kw)
    # judged on the untouched test rows: the best-of-epochs validation AUC of 12 cases is optimistic
    assert fused["test_auc"] >= 0.85, fused["test_auc"]
    assert fused["test_auc"] > image_only["test_auc"] + 0.15, (fused["test_auc"], image_only["test_auc"])

    from MedAILib.io.images import read_image
    from MedAILib.models import trust
    from MedAILib.models.bundle import load_bundle
    from MedAILib.tasks.classification.pipeline import classify

    trust.trust(tmp_path / "fused")
    b = load_bundle(tmp_path / "fused")
    medai = json.loads((tmp_path / "fused" / "configs" / "medai.json").read_text())
    assert [v["name"] for v in medai["clinical_variables"]] == ["age", "sex"]
    vol = read_image(tmp_path / "img" / "c40.nii.gz")
    with pytest.raises(InputError, match="needs the clinical variables .*not given: sex"):
        classify(vol, b, clinical={"age": "70"}, device="cpu")
    old = classify(vol, b, clinical={"age": "75", "sex": "F"}, device="cpu")
    young = classify(vol, b, clinical={"age": "25", "sex": "F"}, device="cpu")
    i_old = old.class_names.index("old")
    assert old.probabilities[i_old] > young.probabilities[i_old]
    unknown = classify(vol, b, clinical={"age": "NA", "sex": "NA"}, device="cpu")  # explicit unknown accepted
    assert abs(sum(unknown.probabilities) - 1) < 1e-5
    trust.trust(tmp_path / "img_only")
    with pytest.raises(InputError, match="takes no clinical variables"):
        classify(vol, load_bundle(tmp_path / "img_only"), clinical={"age": "1"}, device="cpu")


def test_classify_cli_has_clinical_option():
    from MedAILib.cli import build_parser

    args = build_parser().parse_args(["classify", "x.nii.gz", "--clinical", "age=63,sex=F"])
    assert cl.parse_clinical_arg(args.clinical) == {"age": "63", "sex": "F"}
    with pytest.raises(InputError, match="NAME=VALUE"):
        cl.parse_clinical_arg("age")
