"""The three modules' own self-tests (MedAISegmentTest, MedAITest, MedAIFusionTest: what Slicer runs
as the extension's self-test, through ``slicer.selfTests[name]``) on real MRML (slicer-core) with the
real engine in its own process.

MedAITest converts Slicer's MRHead sample when SampleData is there; slicer-core has no SampleData, so
here it converts a real brain MR from the MedAI data folder instead (MEDAI_DATA_DIR). Each test then
checks that the self-test really ran (what it reports along the way, through delayDisplay and the
log), so a self-test that skipped itself cannot pass here.
"""

import logging

import pytest


@pytest.mark.parametrize("module, said", [
    ("MedAISegment", ["Segmenting with the shipped model", "anterior: Dice", "posterior: Dice", "Test passed"]),
    ("MedAI", ["Catalogue models:", "Converting BraTS-GLI-00001-000-t2w", "Out-of-distribution warning:",
               "Classifying the segment", "Result:"]),
    ("MedAIFusion", ["Mattes MI"]),
])
def test_module_self_test_passes_on_real_mrml(slicer, data_dir, monkeypatch, caplog, module, said):
    monkeypatch.setenv("MEDAI_DATA_DIR", str(data_dir))
    assert module in slicer.selfTests, f"{module} did not register its self-test"
    with pytest.raises(ModuleNotFoundError):
        import SampleData  # noqa: F401  (not in slicer-core: MedAITest must use the local file)
    with caplog.at_level(logging.INFO):
        slicer.selfTests[module]()  # raises on the first failed assertion
    text = caplog.text
    assert "Skipped" not in text, f"{module}'s self-test skipped a part"
    missing = [s for s in said if s not in text]
    assert missing == [], f"{module}'s self-test did not get to: {missing}"
