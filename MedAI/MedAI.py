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
        import qt

        self._convertRun = None
        self._convertTimer = qt.QTimer()
        self._convertTimer.setInterval(200)
        self._convertTimer.connect("timeout()", self.onConvertPollTimer)
        self.ui.convertWarningLabel.hide()
        try:
            from MedAIModuleLib.synthesis_logic import synthesis_models

            models = synthesis_models()
        except Exception as e:  # a broken install must still show the module, with the reason
            models = []
            self.ui.convertStatusLabel.text = _("Could not read the model catalogue: {e}").format(e=e)
        for modelId, title in models:
            self.ui.convertModelComboBox.addItem(title, modelId)
        self.ui.convertInputSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateConvertButton)
        self.ui.convertApplyButton.connect("clicked(bool)", self.onConvertButton)
        self.ui.convertCancelButton.connect("clicked(bool)", self.onConvertCancel)
        self.updateConvertButton()

    def updateConvertButton(self, node=None) -> None:
        running = self._convertRun is not None and self._convertRun.running
        ready = self.ui.convertInputSelector.currentNode() is not None and self.ui.convertModelComboBox.count > 0
        self.ui.convertApplyButton.enabled = ready and not running
        self.ui.convertCancelButton.enabled = running

    def onConvertButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to start the conversion."), waitCursor=True):
            self.ui.convertWarningLabel.hide()
            self.ui.convertMetricsLabel.text = ""
            self.ui.convertProgressBar.value = 0
            self._convertRun = self.logic.synthesize(
                self.ui.convertInputSelector.currentNode(), self.ui.convertOutputSelector.currentNode(),
                self.ui.convertModelComboBox.currentData, self.ui.convertReferenceSelector.currentNode(),
                progressCallback=self.onConvertProgress, completedCallback=self.onConvertCompleted)
            self._convertTimer.start()
            self.updateConvertButton()

    def onConvertCancel(self) -> None:
        if self._convertRun is not None:
            self._convertRun.cancel()

    def onConvertPollTimer(self) -> None:
        if self._convertRun is not None:
            self._convertRun.poll()  # progress and, at the end, onConvertCompleted on the GUI thread

    def onConvertProgress(self, fraction, message, eta_s) -> None:
        if fraction is not None:
            self.ui.convertProgressBar.value = int(round(100 * fraction))
        self.ui.convertStatusLabel.text = message

    def onConvertCompleted(self, run) -> None:
        self._convertTimer.stop()
        self.updateConvertButton()
        if run.oodWarning:  # shown prominently: a GAN output looks plausible even when it is wrong
            self.ui.convertWarningLabel.text = run.oodWarning
            self.ui.convertWarningLabel.show()
        if run.status == "done":
            self.ui.convertProgressBar.value = 100
            self.ui.convertStatusLabel.text = _("Done: {name} ({units}).").format(
                name=run.outputVolume.GetName(), units=run.units)
            self.ui.convertOutputSelector.setCurrentNode(run.outputVolume)
            slicer.util.setSliceViewerLayers(background=run.outputVolume)
            if run.metrics:
                self.ui.convertMetricsLabel.text = _(
                    "Against the reference (inside the head mask): MAE {mae:.3f}, PSNR {psnr:.2f} dB, "
                    "SSIM {ssim:.3f}").format(**run.metrics)
        elif run.status == "cancelled":
            self.ui.convertStatusLabel.text = _("Cancelled.")
        else:
            self.ui.convertStatusLabel.text = _("Failed.")
            slicer.util.errorDisplay(_("Conversion failed."), detailedText=run.errorText)

    def cleanup(self) -> None:
        self.removeObservers()


class MedAILogic(ScriptedLoadableModuleLogic):
    """Section logics are attached here by their files in MedAIModuleLib (see the module docstring)."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def synthesize(self, inputVolume, outputVolume=None, modelId="t2_to_flair_gan", referenceVolume=None,
                   device="auto", wait=False, **callbacks):
        """Convert ``inputVolume`` to another modality in a separate ``medai synthesize`` process.

        ``outputVolume`` None creates a new scalar volume at the end. ``wait=True`` blocks (batch
        scripts). The returned run has ``status``, ``outputVolume``, ``oodWarning``, ``metrics``.
        """
        from MedAIModuleLib.synthesis_logic import synthesize

        return synthesize(inputVolume, outputVolume, modelId, referenceVolume, device, wait=wait,
                          enginePrefix=getattr(self, "enginePrefix", None), **callbacks)

    def engineVersion(self) -> str:
        import MedAILib

        return MedAILib.__version__


class MedAITest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_engine_and_catalogue_load()
        self.setUp()
        self.test_convert_modality()

    def test_engine_and_catalogue_load(self):
        """The shipped engine imports inside Slicer and its model catalogue is readable."""
        from MedAILib.bundles.catalogue import load_catalogue

        self.assertTrue(MedAILogic().engineVersion())
        ids = [e.id for e in load_catalogue()]
        self.delayDisplay(f"Catalogue models: {', '.join(ids)}")
        self.assertIn("hippocampus_unet", ids)

    def test_convert_modality(self):
        """Convert a brain MR with the shipped T2 -> FLAIR model the way a user would (separate
        process, new output volume) and check the result lies on the input's grid."""
        import numpy as np
        import SampleData
        import vtk

        inputVolume = SampleData.downloadSample("MRHead")
        self.delayDisplay("Converting MRHead with t2_to_flair_gan (a T1 image: an OOD warning is expected)")
        run = MedAILogic().synthesize(inputVolume, None, "t2_to_flair_gan", device="cpu", wait=True)
        self.assertEqual(run.status, "done", run.errorText)
        a, b = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
        inputVolume.GetIJKToRASMatrix(a)
        run.outputVolume.GetIJKToRASMatrix(b)
        self.assertTrue(np.allclose(slicer.util.arrayFromVTKMatrix(a), slicer.util.arrayFromVTKMatrix(b)))
        self.assertEqual(slicer.util.arrayFromVolume(run.outputVolume).shape,
                         slicer.util.arrayFromVolume(inputVolume).shape)
        self.delayDisplay("Out-of-distribution warning: " + (run.oodWarning or "none"))
