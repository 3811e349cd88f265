"""MedAIFusion: align volumes of different modalities and fuse them (MedAI engine).

Skeleton with the loader-required classes. Where the work plugs in: the logic goes in
``MedAIFusionLib/`` (one file per concern) and is reached from ``MedAIFusionLogic``; the widget
wires the .ui sections in ``MedAIFusionWidget.setup``. Computation stays in the engine
(``medai register`` / ``medai fuse`` run in a separate process through ``MedAISlicerLib.process``).
"""

import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin


class MedAIFusion(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("MedAI Fusion")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Registration")]
        self.parent.dependencies = ["MedAI"]  # MedAI ships MedAILib and MedAISlicerLib
        self.parent.contributors = ["MedAI contributors (MedAI project)"]
        self.parent.helpText = _(
            "Register volumes of different modalities, show them fused and run multi-input MedAI models. See "
            "<a href='https://github.com/MedAI-project/SlicerMedAI/blob/main/docs/slicer.md'>the documentation</a>.")
        self.parent.acknowledgementText = _("Built on MONAI, PyTorch, SimpleITK and 3D Slicer.")


class MedAIFusionWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MedAIFusion.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MedAIFusionLogic()

    def cleanup(self) -> None:
        self.removeObservers()


class MedAIFusionLogic(ScriptedLoadableModuleLogic):
    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)


class MedAIFusionTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_logic_without_gui()

    def test_logic_without_gui(self):
        """The logic works without a widget (batch use) and has its parameter node."""
        logic = MedAIFusionLogic()
        self.assertIsNotNone(logic.getParameterNode())
