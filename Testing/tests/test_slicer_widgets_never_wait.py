"""The modules' GUI never waits: every button that starts work (MedAISegment Segment, MedAI Classify
and Convert, MedAIFusion Register, Checkerboard, Combine and Segment with several inputs) returns at
once while the work runs in a process of its own, shows progress (Classify and Convert with the time
left), and the same button cancels it. The first-use installation of the engine's packages runs the
same way from every module.

Each module's own Widget class runs its own ``setup()`` on real MRML (slicer-core) with the widget
doubles of its .ui file (Testing/slicer_real/widgets.py: no Qt here); buttons are "clicked" as a
user would. The engine is the scripted fake engine, which works for FAKE_SECONDS: a handler that
waited for it would take that long, so the time a click takes is the check.
"""

import ast
import sys
import time
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
FAKE = HERE / "slicer_support" / "fake_engine.py"
WORK_S = 6.0  # how long the fake engine works; a click must return in a fraction of it
CLICK_S = 1.0
MODULES = {"MedAI": REPO / "MedAI" / "MedAI.py", "MedAISegment": REPO / "MedAISegment" / "MedAISegment.py",
           "MedAIFusion": REPO / "MedAIFusion" / "MedAIFusion.py"}


@pytest.fixture
def gui(slicer, monkeypatch, tmp_path):
    from slicer_real.widgets import headless_widgets

    monkeypatch.setenv("FAKE_MODE", "slow")
    monkeypatch.setenv("FAKE_SECONDS", str(WORK_S))
    monkeypatch.setenv("FAKE_PIDFILE", str(tmp_path / "child.pid"))
    with headless_widgets():
        yield slicer


def _widget(name):
    module = sys.modules[name]
    widget = getattr(module, f"{name}Widget")()
    widget.setup()
    widget.logic.enginePrefix = [sys.executable, str(FAKE)]
    return widget


def _volume(slicer, name, cls="vtkMRMLScalarVolumeNode", seed=0):
    rng = np.random.default_rng(seed)
    array = rng.normal(100, 20, (12, 16, 14)).astype(np.float32 if "Scalar" in cls else np.uint8)
    if "LabelMap" in cls:
        array = (array > 100).astype(np.uint8)
    return slicer.util.addVolumeFromArray(array, np.diag([1.2, 1.0, 2.0, 1.0]), name, cls)


def _click(button):
    t0 = time.perf_counter()
    button.click()
    return time.perf_counter() - t0


def _until(condition, timer, seconds=60):
    t0 = time.monotonic()
    while not condition():
        assert time.monotonic() - t0 < seconds, "timed out"
        timer.fire()  # what Qt's event loop does every 100-200 ms
        time.sleep(0.05)


def _segment(slicer):
    w = _widget("MedAISegment")
    volume = _volume(slicer, "mr")
    w.ui.inputVolumeSelector0.setCurrentNode(volume)
    assert w._parameterNode.inputVolume0 is volume and w.ui.applyButton.enabled
    return w, w.ui.applyButton, w._pollTimer, lambda: w._run, w.ui.progressLabel, "Segment"


def _classify(slicer):
    w = _widget("MedAI")
    w.ui.classifyInputSelector.setCurrentNode(_volume(slicer, "ct"))
    w.ui.classifyExplainComboBox.currentIndex = 2  # no heat-map
    return w, w.ui.classifyApplyButton, w._classifyTimer, lambda: w._classifyRun, w.ui.classifyStatusLabel, "Classify"


def _convert(slicer):
    w = _widget("MedAI")
    w.ui.convertInputSelector.setCurrentNode(_volume(slicer, "t2"))
    return w, w.ui.convertApplyButton, w._convertTimer, lambda: w._convertRun, w.ui.convertStatusLabel, None


def _fusion(slicer):
    w = _widget("MedAIFusion")
    w.ui.fixedVolumeSelector.setCurrentNode(_volume(slicer, "fixed", seed=1))
    w.ui.movingVolumeSelector.setCurrentNode(_volume(slicer, "moving", seed=2))
    return w


def _register(slicer):
    w = _fusion(slicer)
    return w, w.ui.registerButton, w._pollTimer, lambda: w._run, w.ui.statusLabel, "Register"


def _checkerboard(slicer):
    w = _fusion(slicer)
    return w, w.ui.checkerboardButton, w._pollTimer, lambda: w._run, w.ui.statusLabel, "Checkerboard"


def _ensemble(slicer):
    w = _fusion(slicer)
    w.ui.ensembleInput0Selector.setCurrentNode(_volume(slicer, "model a", "vtkMRMLLabelMapVolumeNode", 3))
    w.ui.ensembleInput1Selector.setCurrentNode(_volume(slicer, "model b", "vtkMRMLLabelMapVolumeNode", 4))
    return w, w.ui.ensembleButton, w._pollTimer, lambda: w._run, w.ui.statusLabel, "Combine"


def _multi_segment(slicer):
    w = _fusion(slicer)
    models = [m.id for m in w._multiModels]
    w.ui.multiModelComboBox.currentIndex = models.index("brats_mri_segmentation")
    for i in range(4):
        w._multiInputSelectors[i].setCurrentNode(_volume(slicer, f"contrast {i}", seed=10 + i))
    return w, w.ui.multiSegmentButton, w._pollTimer, lambda: w._run, w.ui.statusLabel, "Segment"


def _detect(slicer):
    w = _widget("MedAI")
    w.ui.detectInputSelector.setCurrentNode(_volume(slicer, "chest ct"))
    assert w.ui.detectModelComboBox.count > 0 and w.ui.detectApplyButton.enabled
    return w, w.ui.detectApplyButton, w._detectTimer, lambda: w._detectRun, w.ui.detectStatusLabel, "Detect"


def _preprocess(slicer):
    w = _widget("MedAI")
    w.ui.preprocessInputSelector.setCurrentNode(_volume(slicer, "noisy mr"))
    w.ui.preprocessDenoiseComboBox.currentIndex = 1  # gaussian
    assert w.ui.preprocessApplyButton.enabled
    return w, w.ui.preprocessApplyButton, w._preprocessTimer, lambda: w._preprocessRun, w.ui.preprocessStatusLabel, "Apply"


ACTIONS = {"segment": _segment, "classify": _classify, "convert": _convert, "register": _register,
           "checkerboard": _checkerboard, "ensemble": _ensemble, "segment several inputs": _multi_segment,
           "detect": _detect, "preprocess": _preprocess}


@pytest.mark.parametrize("action", list(ACTIONS))
def test_button_returns_at_once_shows_progress_and_cancels(gui, action, tmp_path):
    slicer = gui
    w, button, timer, run, status, idle_text = ACTIONS[action](slicer)
    nodes_before = slicer.mrmlScene.GetNumberOfNodes()
    took = _click(button)
    assert took < CLICK_S, f"{action}: the click took {took:.1f} s: it waited for the work"
    assert run() is not None and run().running, f"{action}: nothing runs after the click"
    assert timer.isActive(), f"{action}: the GUI does not follow the run"
    if idle_text is not None:  # the button that started the run is its Cancel
        assert button.text == "Cancel"
    _until(lambda: "working" in status.text, timer)
    if action in ("classify", "convert"):
        assert "left" in status.text, f"{action}: no time left shown: {status.text!r}"
    assert run().running
    if idle_text is not None:
        took = _click(button)
    else:
        took = _click(w.ui.convertCancelButton)
    assert took < CLICK_S + 4, f"{action}: Cancel took {took:.1f} s"
    _until(lambda: not run().running, timer, 30)
    assert run().status == "cancelled"
    assert "Cancelled" in status.text
    if idle_text is not None:
        assert button.text == idle_text
    assert slicer.mrmlScene.GetNumberOfNodes() == nodes_before, "a cancelled run left nodes"
    assert not list(Path(slicer.app.temporaryPath).glob("MedAI*")), "a cancelled run left files"


FAKE_PIP = """
import sys, time
print("Collecting", sys.argv[-1], flush=True)
time.sleep(float(sys.argv[1]))
print("Successfully installed", sys.argv[-1], flush=True)
"""


@pytest.fixture
def missing_package(gui, monkeypatch, tmp_path):
    """The engine lacks a package (fakepkg) until the fake pip has 'installed' it."""
    from MedAISlicerLib import dependencies

    # The user answers OK. (Slicer 5.13's confirmOkCancelDisplay returns False in testing mode: its
    # testing value True is compared with QMessageBox.Ok.)
    monkeypatch.setattr(gui.util, "confirmOkCancelDisplay", lambda *a, **k: True)
    installed = tmp_path / "installed"
    pip = tmp_path / "pip.py"
    pip.write_text(FAKE_PIP + f"open({str(installed)!r}, 'w').close()\n")
    seconds = {"pip": WORK_S}
    monkeypatch.setattr(dependencies, "missing_packages", lambda: [] if installed.exists() else ["fakepkg==1.0"])
    real_command = dependencies.install_command
    monkeypatch.setattr(dependencies, "install_command", lambda requirements, torch, pip_=None: real_command(
        requirements, torch, [sys.executable, str(pip), str(seconds["pip"])]))
    return installed, seconds


@pytest.mark.parametrize("action", ["segment", "classify", "checkerboard"])  # one action of each module
def test_first_use_install_runs_in_the_background_then_the_action(gui, missing_package, action):
    slicer = gui
    installed, seconds = missing_package
    w, button, timer, run, status, idle_text = ACTIONS[action](slicer)
    took = _click(button)
    assert took < CLICK_S, f"{action}: the click took {took:.1f} s: it waited for the installation"
    first = run()
    assert type(first).__name__ == "FirstUseRun" and first.running and first.run is None
    _until(lambda: "installing fakepkg==1.0 (1 of 1)" in status.text, timer)
    assert not installed.exists() and first.run is None, "the action must wait for the installation"
    _until(lambda: first.run is not None, timer, 60)  # installed: the action itself starts now
    assert installed.exists() and first.running
    assert first.run.subcommand == {"segment": "segment", "classify": "classify", "checkerboard": "fuse"}[action]
    _click(button)  # Cancel stops the action that followed the installation
    _until(lambda: not first.running, timer, 30)
    assert first.run.status == "cancelled"


def test_cancel_during_the_install_stops_it_and_runs_nothing(gui, missing_package, tmp_path):
    slicer = gui
    w, button, timer, run, status, _ = ACTIONS["checkerboard"](slicer)
    _click(button)
    first = run()
    _until(lambda: "installing" in status.text, timer)
    took = _click(button)
    assert took < CLICK_S + 4
    _until(lambda: not first.running, timer, 30)
    assert first.status == "cancelled" and first.run is None and "Cancelled" in status.text
    time.sleep(WORK_S + 1)
    assert not missing_package[0].exists(), "the installer went on after Cancel"
    assert not (tmp_path / "child.pid").exists(), "the action started after the installation was cancelled"


def _widget_methods(path):
    tree = ast.parse(path.read_text())
    for cls in tree.body:
        if isinstance(cls, ast.ClassDef) and cls.name.endswith("Widget"):
            for fn in cls.body:
                if isinstance(fn, ast.FunctionDef):
                    yield cls.name, fn


@pytest.mark.parametrize("module", list(MODULES))
def test_no_widget_method_waits(module):
    """Static: no Widget method calls ``wait()`` or asks a Logic for ``wait=True``."""
    found = []
    for cls, fn in _widget_methods(MODULES[module]):
        for node in ast.walk(fn):
            if isinstance(node, ast.Call):
                if isinstance(node.func, ast.Attribute) and node.func.attr == "wait":
                    found.append(f"{cls}.{fn.name}: .wait()")
                for kw in node.keywords:
                    if kw.arg == "wait" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                        found.append(f"{cls}.{fn.name}: wait={ast.unparse(kw.value)}")
    assert found == []
