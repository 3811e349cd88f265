"""The Slicer modules use only Slicer APIs that exist (facts from Slicer's source in
../shared/slicer-api/), name only widgets their .ui files have, follow the loader's naming rules and
carry the metadata Slicer's generic module test requires. No Slicer needed."""

import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from slicer_support import api_facts

REPO = Path(__file__).resolve().parents[2]
MODULES = ["MedAI", "MedAISegment", "MedAIFusion"]
# Widget classes available in Slicer's Designer/PythonQt. Qt and CTK classes are not in the facts
# file (it covers Slicer/MRML); this list is standard Qt widgets + CTK widgets Slicer bundles. The
# qMRML classes are checked against the facts below.
QT_CTK_WIDGETS = {
    "QWidget", "QLabel", "QPushButton", "QCheckBox", "QComboBox", "QLineEdit", "QProgressBar",
    "QPlainTextEdit", "QTextEdit", "QListWidget", "QTreeWidget", "QTableWidget", "QSpinBox", "QDoubleSpinBox",
    "QRadioButton", "QGroupBox", "QFrame", "QTabWidget", "QToolButton", "QSlider",
    "ctkCollapsibleButton", "ctkCollapsibleGroupBox", "ctkSearchBox", "ctkComboBox", "ctkCheckableComboBox",
    "ctkPathLineEdit", "ctkDirectoryButton", "ctkSliderWidget", "ctkCheckBox", "ctkColorPickerButton",
}
QMRML_NOT_IN_FACTS_BUT_STANDARD = {"qMRMLWidget"}  # the template's top-level widget class


@pytest.fixture(scope="module")
def facts():
    if not api_facts.FACTS.exists():
        pytest.skip(f"Slicer API facts not found at {api_facts.FACTS}")
    return api_facts.Facts(api_facts.load_facts())


def slicer_sources():
    files = []
    for m in MODULES:
        files += [p for p in (REPO / m).rglob("*.py") if "MedAILib" not in p.parts]
    return sorted(files)


def test_every_slicer_call_exists_with_a_compatible_signature(facts):
    files = slicer_sources()
    assert any(p.name == "nodes.py" for p in files) and any(p.name == "MedAISegment.py" for p in files)
    problems = []
    for path in files:
        problems += api_facts.check_source(path.read_text(), facts, str(path.relative_to(REPO)))
    assert problems == []


@pytest.mark.parametrize("snippet, expected", [
    ("import slicer\nslicer.util.arrayFromVolumeMagic(node)\n", "does not exist"),
    ("import slicer\nslicer.util.loadVolume()\n", "missing a required argument"),
    ("import slicer\nslicer.util.pip_install('x', 'y')\n", "too many positional"),
    ("import slicer\nnode.GetIJKToRASMatrixAsNumpy()\n", "no Slicer/VTK class"),
    ("import slicer\nseg.AddEmptySegment('a', 'b', (1, 0, 0), 'extra')\n", "called with 4 arguments"),
    ("import slicer\nslicer.mrmlScene.AddNewNodeByType('vtkMRMLSegmentationNode')\n", "does not exist"),
    ("import slicer\nslicer.mrmlScene.StartClosingEvent\n", "not in the facts"),
    ("import slicer\nn = slicer.vtkMRMLMagicNode()\n", "not in the facts"),
])
def test_checker_rejects_made_up_calls(facts, snippet, expected):
    problems = api_facts.check_source(snippet, facts)
    assert problems and expected in problems[0]


def test_checker_accepts_real_calls(facts):
    ok = ("import slicer, vtk\nm = vtk.vtkMatrix4x4()\nv.GetIJKToRASMatrix(m)\n"
          "slicer.util.arrayFromVolume(v)\nslicer.mrmlScene.AddNewNodeByClass('vtkMRMLSegmentationNode', 'x')\n"
          "s.SetTag(s.GetTerminologyEntryTagName(), 't')\nm.GetElement(0, 0)\n")
    assert api_facts.check_source(ok, facts) == []


def ui_widgets(path):
    root = ET.parse(path).getroot()
    return {w.get("name"): w.get("class") for w in root.iter("widget")}, root


@pytest.mark.parametrize("module", MODULES)
def test_ui_names_exist_and_widget_classes_are_slicer_ones(facts, module):
    widgets, root = ui_widgets(REPO / module / "Resources" / "UI" / f"{module}.ui")
    assert root.find("widget").get("class") == "qMRMLWidget"
    qmrml = {c for c in facts.classes if c.startswith("qMRML")} | QMRML_NOT_IN_FACTS_BUT_STANDARD
    unknown = {n: c for n, c in widgets.items() if c not in QT_CTK_WIDGETS | qmrml}
    assert unknown == {}
    source = "\n".join(p.read_text() for p in (REPO / module).rglob("*.py") if "MedAILib" not in p.parts)
    used = set(re.findall(r"self\.ui\.(\w+)", source))
    used |= {f"{pre}{i}" for pre in ("inputLabel", "inputVolumeSelector")
             for i in range(4) if f'f"{pre}{{i}}"' in source}  # names built in a loop
    assert used - set(widgets) == set()
    # every qMRMLNodeComboBox gets the scene through the Designer connection
    receivers = {c.findtext("receiver") for c in root.iter("connection") if "setMRMLScene" in c.findtext("slot")}
    combos = {n for n, c in widgets.items() if c == "qMRMLNodeComboBox"}
    assert combos <= receivers


def test_segment_ui_parameter_names_are_parameters():
    import typing

    widgets, root = ui_widgets(REPO / "MedAISegment" / "Resources" / "UI" / "MedAISegment.ui")
    names = {p.findtext("string") for p in root.iter("property") if p.get("name") == "SlicerParameterName"}
    tree = ast.parse((REPO / "MedAISegment" / "MedAISegment.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "MedAISegmentParameterNode")
    params = {s.target.id for s in cls.body if isinstance(s, ast.AnnAssign)}
    assert names and names <= params


@pytest.mark.parametrize("module", MODULES)
def test_loader_rules_and_generic_test_metadata(module):
    tree = ast.parse((REPO / module / f"{module}.py").read_text())
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    bases = {name: {ast.unparse(b) for b in c.bases} for name, c in classes.items()}
    assert "ScriptedLoadableModule" in bases[module]
    assert "ScriptedLoadableModuleWidget" in bases[module + "Widget"]
    assert "ScriptedLoadableModuleLogic" in bases[module + "Logic"]
    assert "ScriptedLoadableModuleTest" in bases[module + "Test"]
    init = next(f for f in classes[module].body if isinstance(f, ast.FunctionDef) and f.name == "__init__")
    assigned = {}
    for s in ast.walk(init):
        if isinstance(s, ast.Assign) and isinstance(s.targets[0], ast.Attribute):
            assigned[s.targets[0].attr] = s.value
    for key in ("title", "categories", "contributors", "helpText", "acknowledgementText"):
        assert key in assigned, f"{module}: parent.{key} not set"
    for key in ("categories", "contributors"):
        assert isinstance(assigned[key], ast.List) and assigned[key].elts
    # widget setup calls the base setup first (template rule)
    setup = next(f for f in classes[module + "Widget"].body if isinstance(f, ast.FunctionDef) and f.name == "setup")
    assert ast.unparse(setup.body[0]) == "ScriptedLoadableModuleWidget.setup(self)"
    # the self-test class drives test_* methods explicitly from runTest
    run = next(f for f in classes[module + "Test"].body if isinstance(f, ast.FunctionDef) and f.name == "runTest")
    assert "self.setUp()" in ast.unparse(run) and "test_" in ast.unparse(run)
