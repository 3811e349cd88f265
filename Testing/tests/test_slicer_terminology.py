"""Every terminology MedAI gives a segment is one Slicer knows: checked through Slicer's own
terminology logic (vtkSlicerTerminologiesModuleLogic, real slicer-core) loaded with Slicer's
.term.json files, in the context each entry names.

Covered: every label of every catalogue entry (BraTS and the whole-body/whole-brain models
included), every term of resources/terminology_map.json (with and without a side), and the
hippocampus code (SCT 5366008 in the DICOM master list; the former SCT 5001000 in the
"3D Slicer General Anatomy list" is not a code Slicer knows).
"""

import json

import pytest

from slicer_support.terminology_codes import Known

OLD_HIPPOCAMPUS = ("Segmentation category and type - 3D Slicer General Anatomy list~SCT^123037004^Anatomical Structure"
                   "~SCT^5001000^Hippocampus~SCT^255549009^Anterior~Anatomic codes - DICOM master list~^^~^^")


@pytest.fixture
def known(slicer):
    logic = slicer.modules.terminologies.logic()
    assert logic.GetClassName() == "vtkSlicerTerminologiesModuleLogic"
    k = Known(logic)
    assert "Segmentation category and type - DICOM master list" in k.contexts
    return k


def _catalogue_labels():
    from MedAILib.core.paths import resources_dir

    data = json.loads((resources_dir() / "catalogue.json").read_text(encoding="utf-8"))
    return [(m["id"], label) for m in data["models"] for label in m.get("labels", [])]


def test_checker_rejects_what_slicer_does_not_know(known):
    problems = known.problems(OLD_HIPPOCAMPUS)
    assert problems and "5001000" in problems[0]
    wrong_modifier = OLD_HIPPOCAMPUS.replace("3D Slicer General Anatomy list", "DICOM master list").replace(
        "5001000", "5366008")
    assert any("255549009" in p and "Right" in p for p in known.problems(wrong_modifier))
    assert known.problems("Segmentation category and type - DICOM master list~SCT^123037004^Anatomical Structure"
                          "~SCT^5366008^Hippocampus~^^~Anatomic codes - DICOM master list~^^~^^") == []
    assert "not a terminology entry" in known.problems("Hippocampus")[0]


def test_every_catalogue_label_has_a_terminology_slicer_knows(known):
    labels = _catalogue_labels()
    assert len(labels) > 250 and {m for m, _ in labels} >= {"brats_mri_segmentation", "wholebody_ct_segmentation"}
    problems = {f"{model}/{label['name']}": known.problems(label.get("terminology", "")) for model, label in labels}
    assert {k: v for k, v in problems.items() if v} == {}


def test_hippocampus_is_sct_5366008_in_the_dicom_master_list(known):
    labels = [label for model, label in _catalogue_labels() if model == "hippocampus_unet"]
    assert [l["name"] for l in labels] == ["anterior", "posterior"]  # the part is in the name: Slicer has no such modifier
    for label in labels:
        fields = label["terminology"].split("~")
        assert fields[0] == "Segmentation category and type - DICOM master list"
        assert fields[2] == "SCT^5366008^Hippocampus" and fields[3] == "^^"


def test_brats_segments_are_neoplasm_and_edema(known):
    labels = {label["value"]: label for model, label in _catalogue_labels() if model == "brats_mri_segmentation"}
    assert sorted(labels) == [1, 2, 4]  # necrotic/non-enhancing core, peritumoral edema, enhancing tumour
    for value, code in ((1, "SCT^108369006^Neoplasm"), (2, "SCT^79654002^Edema"), (4, "SCT^108369006^Neoplasm")):
        assert f"SCT^49755003^Morphologically Altered Structure~{code}~" in labels[value]["terminology"]


def test_every_term_of_the_map_is_known_with_and_without_a_side(known):
    from MedAILib.models import terminology

    table = terminology.load_map()
    checked = 0
    for name, term in table["terms"].items():
        for text in (name, f"left {name}", f"{name} right"):
            entry = terminology.terminology_string(text)
            assert entry is not None, text
            assert known.problems(entry) == [], (text, entry)
            checked += 1
        sided = terminology.terminology_string(f"left {name}")
        assert ("SCT^7771000^Left" in sided) == bool(term.get("lateral")), name
    assert checked == 3 * len(table["terms"])
