"""Extension packaging: CMake lists complete, top-level CMake order and metadata, Extensions Index
entry, icons, pinned first-use packages; plus the Widget-independent parts on real MRML (slicer-core)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
MODULES = ["MedAI", "MedAISegment", "MedAIFusion"]


def test_cmake_lists_name_every_script_and_resource():
    r = subprocess.run([sys.executable, str(REPO / "Testing" / "tools" / "update_cmake_lists.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, f"run Testing/tools/update_cmake_lists.py: {r.stdout}"
    for m in MODULES:
        text = (REPO / m / "CMakeLists.txt").read_text()
        listed = set(re.findall(r"^\s+([\w./-]+)\s*$", text, re.M))  # LICENSE files have no suffix
        folder = REPO / m
        on_disk = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()
                   and "__pycache__" not in p.parts and p.suffix != ".pyc" and ".egg-info" not in str(p)
                   and p.name != "CMakeLists.txt" and p.relative_to(folder).parts[0] != "Testing"}
        assert on_disk - listed == set(), f"{m}: files not packaged"
        assert f"{m}.py" in listed and f"Resources/UI/{m}.ui" in listed and f"Resources/Icons/{m}.png" in listed
        assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text and "WITH_GENERIC_TESTS" in text
    medai = (REPO / "MedAI" / "CMakeLists.txt").read_text()
    assert "catalogue.schema.json" in medai  # top-level Resources are installed by MedAI


def test_top_level_cmake_order_and_metadata():
    text = (REPO / "CMakeLists.txt").read_text()
    order = ["cmake_minimum_required", "project(MedAI)", "EXTENSION_HOMEPAGE", "find_package(Slicer REQUIRED)",
             "include(${Slicer_USE_FILE})", "add_subdirectory(MedAI)", "add_subdirectory(MedAISegment)",
             "add_subdirectory(MedAIFusion)", "include(${Slicer_EXTENSION_GENERATE_CONFIG})",
             "include(${Slicer_EXTENSION_CPACK})"]
    positions = [text.index(s) for s in order]
    assert positions == sorted(positions)
    assert text.rstrip().endswith("include(${Slicer_EXTENSION_CPACK})")
    for var in ("CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS", "DEPENDS"):
        assert re.search(rf'set\(EXTENSION_{var} "[^"]+"\)', text), var
    assert re.search(r'EXTENSION_ICONURL "https://raw\.githubusercontent\.com/\S+\.png"', text)
    icon = re.search(r'EXTENSION_ICONURL "https://raw\.githubusercontent\.com/[^/]+/[^/]+/main/(\S+)"', text).group(1)
    assert (REPO / icon).exists()


def test_extensions_index_entry():
    raw = (REPO / "MedAI.json").read_bytes()
    assert b"\r" not in raw  # index CI: LF only
    entry = json.loads(raw)
    allowed = {"$schema", "category", "scm_url", "scm_revision", "scm_type", "build_dependencies",
               "build_subdirectory", "enabled", "tier"}
    assert set(entry) <= allowed and {"$schema", "category", "scm_url"} <= set(entry)
    assert "slicer-extension-catalog-entry-schema-v1.0.1.json" in entry["$schema"]
    depends = re.search(r'EXTENSION_DEPENDS "([^"]+)"', (REPO / "CMakeLists.txt").read_text()).group(1).split()
    assert entry["build_dependencies"] == depends == ["PyTorch"]
    assert entry["category"] == "Segmentation" and entry["tier"] in (1, 3, 5)


@pytest.mark.parametrize("path", ["Resources/Icons/MedAI.png", "MedAI/Resources/Icons/MedAI.png",
                                  "MedAISegment/Resources/Icons/MedAISegment.png",
                                  "MedAIFusion/Resources/Icons/MedAIFusion.png"])
def test_icons_are_128_png(path):
    with Image.open(REPO / path) as im:
        assert im.format == "PNG" and im.size == (128, 128)


def test_first_use_pins_match_pyproject(slicer):
    from MedAISlicerLib import dependencies

    pyproject = (REPO / "pyproject.toml").read_text()
    for req in dependencies.PINNED.values():
        assert f'"{req}"' in pyproject, f"{req} differs from pyproject.toml"


def test_widget_independent_parts(slicer):
    import MedAISegment
    from MedAISlicerLib.models import from_entry
    from MedAISlicerLib import process

    logic = MedAISegment.MedAISegmentLogic()
    params = logic.getParameterNode()
    assert params.modelId == "hippocampus_unet" and params.device == "auto" and params.fast is False
    vol = slicer.util.addVolumeFromArray(__import__("numpy").zeros((2, 3, 4), "int16"), name="v")
    params.inputVolume0 = vol
    params.fast = True
    again = logic.getParameterNode()  # a new wrapper over the same scene node keeps the values
    assert again.inputVolume0 is vol and again.fast is True and again.inputVolumes(1) == [vol]
    with pytest.raises(TypeError):
        params.fast = "yes"
    model = from_entry({"id": "m", "title": "Hippo", "task": "segmentation", "licence": "CC-BY-SA-4.0",
                        "size_bytes": 2_500_000, "inputs": [{"name": "t1", "modality": "MR"}],
                        "labels": [{"value": 1, "name": "Anterior", "color": [255, 0, 0]}]})
    assert model.display_text() == "Hippo  (segmentation, 2.5 MB, CC-BY-SA-4.0)"
    assert model.matches("hippo mr") and model.matches("anterior") and not model.matches("liver")
    assert model.labels[0].color == (1.0, 0.0, 0.0)
    assert process.engine_command("segment", ["a"])[1:4] == ["-m", "MedAILib.cli", "segment"]
    env = process.engine_environment({"PYTHONPATH": "/x"})
    assert env["PYTHONPATH"].split(":")[:2] == [str(REPO / "MedAI"), "/x"]
