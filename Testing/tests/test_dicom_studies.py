"""`medai segment STUDIES_DIR`: each DICOM study is a case, each model input gets the series its
description asks for (reason logged and reported), ambiguity is refused with the candidates, and
`--series` overrides. Real TCIA Brain-Tumor-Progression studies (PGBM-003, PGBM-006), linked into a
temporary folder of studies; the files themselves are never copied into the repository or changed.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from modelzoo_bundles import mr_multi_input_bundle

from MedAILib.cli import main
from MedAILib.core.errors import InputError
from MedAILib.io.dicom import list_dicom_studies, read_dicom_series
from MedAILib.tasks.segmentation.series_choice import choose_series, parse_overrides, series_sequence

warnings.filterwarnings("ignore", module="monai")
TCIA = "tcia-brain-tumor-progression-dicom"
BRATS_LIKE = [{"name": n, "modality": "MR"} for n in ("T1c", "T1", "T2", "FLAIR")]


@pytest.fixture(autouse=True)
def medai_home(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDAI_HOME", str(tmp_path / "medai_home"))


@pytest.fixture
def studies(data_dir, tmp_path):
    folder = tmp_path / "studies"
    folder.mkdir()
    for p in ("PGBM-003", "PGBM-006"):
        (folder / p).symlink_to(data_dir / TCIA / p, target_is_directory=True)
    return folder


def _by_name(studies_dir):
    return {st.name: st for st in list_dicom_studies(studies_dir)}


def test_sequences_read_from_the_real_descriptions(studies):
    st = _by_name(studies)
    seq = {s.description: series_sequence(s)[0] for s in st["PGBM-003"].series}
    assert seq == {"T1post": "T1c", "T1pre_reg": "T1", "T2_reg": "T2", "FLAIR_reg": "FLAIR", "HippoCrop": None}
    assert {s.description: series_sequence(s)[0] for s in st["PGBM-006"].series}["dT1"] is None


def test_four_input_model_gets_the_right_series_in_input_order(studies):
    st = _by_name(studies)["PGBM-003"]
    logged = []
    choices = choose_series(st, BRATS_LIKE, log=logged.append)
    assert [(c.input_name, c.series.description) for c in choices] == [
        ("T1c", "T1post"), ("T1", "T1pre_reg"), ("T2", "T2_reg"), ("FLAIR", "FLAIR_reg")]
    assert all("names" in c.reason for c in choices) and len(logged) == 4
    assert "input T1 <- series 'T1pre_reg'" in logged[1]


def test_crop_model_gets_the_crop_by_field_of_view(studies, data_dir):
    """The hippocampus model (T1 crops, 31-58 mm): of five MR series only the HippoCrop fits."""
    from MedAILib.models.catalogue import load_catalogue
    from MedAILib.tasks.segmentation.domain import domain_profile

    entry = load_catalogue().get("hippocampus_unet")
    for name, st in _by_name(studies).items():
        (c,) = choose_series(st, entry.raw["inputs"], profile=domain_profile(entry))
        assert c.series.description == "HippoCrop", name
        assert "field of view" in c.reason and "does not say T1" in c.reason


def test_ambiguous_study_is_refused_with_the_candidates(studies):
    """PGBM-006 has no T1 pre-contrast: for a T1 input only the delta-T1 map and the crop remain
    (neither names a sequence), so the choice is refused and both are listed."""
    st = _by_name(studies)["PGBM-006"]
    with pytest.raises(InputError) as e:
        choose_series(st, BRATS_LIKE)
    msg = e.value.message
    assert "2 series could feed model input T1" in msg and "dT1" in msg and "HippoCrop" in msg
    assert "--series T1=" in e.value.hint
    # --series by description pattern (or UID) settles it
    dt1 = next(s for s in st.series if s.description == "dT1")
    for value in ("dT1", dt1.uid):
        choices = choose_series(st, BRATS_LIKE, overrides=parse_overrides([f"T1={value}"]))
        assert choices[1].series.uid == dt1.uid and choices[1].overridden
        assert [c.series.description for c in choices] == ["T1post", "dT1", "T2_reg", "FLAIR_reg"]


def test_series_override_errors_name_the_problem(studies):
    st = _by_name(studies)["PGBM-003"]
    with pytest.raises(InputError, match="does not have"):
        choose_series(st, BRATS_LIKE, overrides=parse_overrides(["T3=x"]))
    with pytest.raises(InputError, match="matches 2 series"):
        choose_series(st, BRATS_LIKE, overrides=parse_overrides(["T1=T1*"]))
    with pytest.raises(InputError, match="several inputs"):
        choose_series(st, BRATS_LIKE, overrides=parse_overrides(["T1post"]))


def test_cli_folder_of_studies_hippocampus_report_records_series(studies, tmp_path, capsys):
    rc = main(["segment", str(studies), "-o", str(tmp_path / "out"), "--report", str(tmp_path / "r.json"),
               "--device", "cpu", "--progress", "none"])
    assert rc == 0
    r = json.loads((tmp_path / "r.json").read_text())
    assert [c["case"] for c in r["cases"]] == ["PGBM-003", "PGBM-006"]
    for c in r["cases"]:
        (s,) = c["series"]
        assert s["input"] == "image" and s["series_description"] == "HippoCrop" and "field of view" in s["reason"]
        crop = read_dicom_series(Path(c["inputs"][0]), s["series_instance_uid"])
        assert crop.shape[0] in (40, 35)  # the crop, not a 22/24-slice brain series
        stats = {x["name"]: x for x in c["statistics"]}
        assert set(stats) == {"anterior", "posterior"}
        assert stats["anterior"]["volume_ml"] == pytest.approx(c["label_volumes_ml"]["anterior"], abs=1e-3)
        assert stats["anterior"]["intensity"]["image"]["mean"] is not None
        assert (tmp_path / "out" / f"{c['case']}.seg.nrrd").is_file()


def test_cli_multi_input_bundle_on_studies_ambiguity_fails_that_case_and_series_overrides(studies, tmp_path):
    """A BraTS-like 4-input bundle (T1c/T1/T2/FLAIR, random weights): PGBM-003 runs with its four
    series in the model's input order, PGBM-006 (no T1) fails with the candidates while the batch
    goes on; --series T1=dT1 makes it run."""
    bundle = mr_multi_input_bundle(tmp_path / "brats_like")
    common = ["--model", str(bundle), "--trust", str(bundle), "--device", "cpu", "--progress", "none",
              "--format", "nii.gz"]
    rc = main(["segment", str(studies), "-o", str(tmp_path / "out"), "--report", str(tmp_path / "r.json"), *common])
    assert rc == 3, "expected partial: one case done, one refused"
    r = {c["case"]: c for c in json.loads((tmp_path / "r.json").read_text())["cases"]}
    assert [(s["input"], s["series_description"]) for s in r["PGBM-003"]["series"]] == [
        ("T1c", "T1post"), ("T1", "T1pre_reg"), ("T2", "T2_reg"), ("FLAIR", "FLAIR_reg")]
    assert r["PGBM-006"]["status"] == "failed" and "dT1" in r["PGBM-006"]["error"]
    assert "HippoCrop" in r["PGBM-006"]["error"]
    # --series wins over the automatic choice (here deliberately swapping the two T1 series)
    only = tmp_path / "only003"
    only.mkdir()
    (only / "PGBM-003").symlink_to(studies / "PGBM-003", target_is_directory=True)
    rc = main(["segment", str(only), "-o", str(tmp_path / "out3.seg.nii.gz"), "--series", "T1=T1post",
               "--series", "T1c=T1pre", "--report", str(tmp_path / "r3.json"), *common])
    assert rc == 0
    (c,) = json.loads((tmp_path / "r3.json").read_text())["cases"]
    assert [s["series_description"] for s in c["series"]] == ["T1pre_reg", "T1post", "T2_reg", "FLAIR_reg"]
    assert "--series" in c["series"][0]["reason"] and "--series" in c["series"][1]["reason"]


def test_folder_mixing_two_patients_is_refused_not_one_silently(data_dir, tmp_path):
    """Issue 14: one folder holding the T2 series of PGBM-003 and of PGBM-006 (two patients)."""
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for p, s in (("PGBM-003", "37830-T2reg-78532"), ("PGBM-006", "37980-T2reg-88079")):
        for f in (data_dir / TCIA / p / s).iterdir():
            shutil.copy(f, mixed / f"{p}_{f.name}")
    with pytest.raises(InputError, match="2 different patients"):
        read_dicom_series(mixed)
    # given to `medai segment`, the two studies become two cases (split per study, one patient each)
    from MedAILib.tasks.segmentation.studies import find_studies

    found = find_studies([mixed], (".nii.gz",))
    assert len(found) == 2 and len({st.patient_key for st in found}) == 2
    assert len({st.name if not hasattr(st, "folder_name") else st.folder_name for st in found}) == 2


def test_one_series_with_files_of_two_patients_is_refused(data_dir, tmp_path):
    import pydicom

    src = sorted((data_dir / TCIA / "PGBM-003" / "37830-T2reg-78532").iterdir())
    mixed = tmp_path / "one_series"
    mixed.mkdir()
    for i, f in enumerate(src):
        ds = pydicom.dcmread(f)
        if i == 5:
            ds.PatientID = "SOMEONE-ELSE"
        ds.save_as(mixed / f.name)
    with pytest.raises(InputError, match="mixes files of different patients") as e:
        read_dicom_series(mixed)
    assert "SOMEONE-ELSE" not in str(e.value) and "PGBM" not in e.value.message
