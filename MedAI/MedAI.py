"""MedAI: classification and modality conversion with MedAI (MONAI) models.

This module also ships the shared code of the extension: the engine ``MedAILib`` and the Slicer-side
helpers ``MedAISlicerLib``; MedAISegment and MedAIFusion depend on it for that.

Where sections plug in (each section = one ctkCollapsibleButton in Resources/UI/MedAI.ui):
- "Classify": widgets ``classifyCollapsibleButton`` and children; logic in ``MedAIModuleLib/classify_logic.py``;
  wire it in ``MedAIWidget.setupClassifySection`` and expose it from ``MedAILogic.classify``.
- "Convert modality": ``convertCollapsibleButton``; logic in ``MedAIModuleLib/synthesis_logic.py``;
  wire it in ``MedAIWidget.setupConvertSection`` and expose it from ``MedAILogic.synthesize``.
Keep computation out of this file: logic files translate nodes and run ``medai`` in a separate process.
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


class MedAI(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("MedAI")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["MedAI contributors (MedAI project)"]
        self.parent.helpText = _(
            "Classify images and convert them between modalities with MedAI (MONAI) models. Segmentation "
            "is in the MedAI Segment module, registration and fusion in MedAI Fusion. See "
            "<a href='https://github.com/MedAI-project/SlicerMedAI/blob/main/docs/slicer.md'>the documentation</a>.")
        self.parent.acknowledgementText = _("Built on MONAI, PyTorch, SimpleITK and 3D Slicer.")


class MedAIWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MedAI.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MedAILogic()
        self.setupClassifySection()
        self.setupConvertSection()

    def setupClassifySection(self) -> None:
        """Plug-in point of the "Classify" section (see the module docstring)."""

    def setupConvertSection(self) -> None:
        """Plug-in point of the "Convert modality" section (see the module docstring)."""

    def cleanup(self) -> None:
        self.removeObservers()


class MedAILogic(ScriptedLoadableModuleLogic):
    """Section logics are attached here by their files in MedAIModuleLib (see the module docstring)."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def engineVersion(self) -> str:
        import MedAILib

        return MedAILib.__version__


class MedAITest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_engine_and_catalogue_load()

    def test_engine_and_catalogue_load(self):
        """The shipped engine imports inside Slicer and its model catalogue is readable."""
        from MedAILib.bundles.catalogue import load_catalogue

        self.assertTrue(MedAILogic().engineVersion())
        ids = [e.id for e in load_catalogue()]
        self.delayDisplay(f"Catalogue models: {', '.join(ids)}")
        self.assertIn("hippocampus_unet", ids)
