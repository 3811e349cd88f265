"""MedAI: classification, modality conversion, lesion detection and pre-processing with MedAI (MONAI) models.

This module also ships the shared code of the extension: the engine ``MedAILib`` and the Slicer-side
helpers ``MedAISlicerLib``; MedAISegment and MedAIFusion depend on it for that.

Where sections plug in (each section = one ctkCollapsibleButton in Resources/UI/MedAI.ui):
- "Classify": widgets ``classifyCollapsibleButton`` and children; logic in ``MedAISlicerLib/tasks/classification.py``;
  wire it in ``MedAIWidget.setupClassifySection`` and expose it from ``MedAILogic.classify``.
- "Convert modality": ``convertCollapsibleButton``; logic in ``MedAISlicerLib/tasks/synthesis.py``;
  wire it in ``MedAIWidget.setupConvertSection`` and expose it from ``MedAILogic.synthesize``.
- "Detect lesions": ``detectCollapsibleButton``; logic in ``MedAISlicerLib/tasks/detection.py``;
  wire it in ``MedAIWidget.setupDetectSection`` and expose it from ``MedAILogic.detect``.
- "Pre-process": ``preprocessCollapsibleButton``; logic in ``MedAISlicerLib/tasks/preprocessing.py``;
  wire it in ``MedAIWidget.setupPreprocessSection`` and expose it from ``MedAILogic.preprocess``.
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
            "Classify images, detect lesions (boxes as ROIs with scores) and convert images between modalities "
            "with MedAI (MONAI) models. Segmentation "
            "is in the MedAI Segment module, registration and fusion in MedAI Fusion. See "
            "<a href='https://github.com/MedAI-project/SlicerMedAI/blob/main/docs/slicer.md'>the documentation</a>.")
        self.parent.acknowledgementText = _("Built on MONAI, PyTorch, SimpleITK and 3D Slicer.")


def timeLeftText(eta_s) -> str:
    """" — about N s left" (or minutes) for a progress line; "" while the engine cannot tell yet."""
    if eta_s is None:
        return ""
    eta_s = max(0, int(round(eta_s)))
    if eta_s >= 120:
        return _(" — about {m} min left").format(m=int(round(eta_s / 60)))
    return _(" — about {s} s left").format(s=eta_s)


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
        self.setupDetectSection()
        self.setupPreprocessSection()

    def setupClassifySection(self) -> None:
        """The "Classify" section: input volume, optional segment or ROI, model, explanation; one
        button that becomes Cancel while the separate ``medai classify`` process runs."""
        import qt

        self._classifyRun = None
        self._classifyTimer = qt.QTimer()
        self._classifyTimer.setInterval(200)
        self._classifyTimer.connect("timeout()", self.onClassifyPollTimer)
        try:
            from MedAISlicerLib.tasks.classification import classification_models

            models = classification_models()
        except Exception as e:  # a broken install must still show the module, with the reason
            models = []
            self.ui.classifyStatusLabel.text = _("Could not read the model catalogue: {e}").format(e=e)
        for modelId, title in models:
            self.ui.classifyModelComboBox.addItem(title, modelId)
        for text, method in ((_("Grad-CAM (fast)"), "gradcam"), (_("Occlusion sensitivity (slower)"), "occlusion"),
                             (_("None"), "")):
            self.ui.classifyExplainComboBox.addItem(text, method)
        self.ui.classifyInputSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateClassifyButton)
        self.ui.classifyApplyButton.connect("clicked(bool)", self.onClassifyButton)
        self.updateClassifyButton()

    def updateClassifyButton(self, node=None) -> None:
        running = self._classifyRun is not None and self._classifyRun.running
        ready = self.ui.classifyInputSelector.currentNode() is not None and self.ui.classifyModelComboBox.count > 0
        self.ui.classifyApplyButton.enabled = running or ready
        self.ui.classifyApplyButton.text = _("Cancel") if running else _("Classify")

    def onClassifyButton(self) -> None:
        if self._classifyRun is not None and self._classifyRun.running:
            self._classifyRun.cancel()
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to start the classification."), waitCursor=True):
            segmentation = self.ui.classifySegmentSelector.currentNode()
            segmentId = self.ui.classifySegmentSelector.currentSegmentID() if segmentation is not None else None
            from MedAISlicerLib.dependencies import start_after_dependencies

            self.ui.classifyResultLabel.text = ""
            self.ui.classifyProgressBar.value = 0
            args = (self.ui.classifyInputSelector.currentNode(), self.ui.classifyModelComboBox.currentData,
                    segmentation, segmentId or None, self.ui.classifyROISelector.currentNode(),
                    self.ui.classifyExplainComboBox.currentData or None)
            callbacks = {"progressCallback": self.onClassifyProgress, "completedCallback": self.onClassifyCompleted}
            # First use: the engine's packages install in the background first (progress, Cancel).
            self._classifyRun = start_after_dependencies(lambda: self.logic.classify(*args, **callbacks), **callbacks)
            self._classifyTimer.start()
        self.updateClassifyButton()

    def onClassifyPollTimer(self) -> None:
        if self._classifyRun is not None:
            self._classifyRun.poll()  # progress and, at the end, onClassifyCompleted on the GUI thread

    def onClassifyProgress(self, fraction, message, eta_s) -> None:
        if fraction is not None:
            self.ui.classifyProgressBar.value = int(round(100 * fraction))
        self.ui.classifyStatusLabel.text = message + timeLeftText(eta_s)

    def onClassifyCompleted(self, run) -> None:
        self._classifyTimer.stop()
        self.updateClassifyButton()
        if run.status == "done":
            self.ui.classifyProgressBar.value = 100
            self.ui.classifyStatusLabel.text = _("Done: results in table '{name}'.").format(name=run.tableNode.GetName())
            self.ui.classifyResultLabel.text = run.resultText
        elif run.status == "cancelled":
            self.ui.classifyStatusLabel.text = _("Cancelled.")
        else:
            self.ui.classifyStatusLabel.text = _("Failed.")
            slicer.util.errorDisplay(_("Classification failed."), detailedText=run.errorText)

    def setupConvertSection(self) -> None:
        """Plug-in point of the "Convert modality" section (see the module docstring)."""
        import qt

        self._convertRun = None
        self._convertTimer = qt.QTimer()
        self._convertTimer.setInterval(200)
        self._convertTimer.connect("timeout()", self.onConvertPollTimer)
        self.ui.convertWarningLabel.hide()
        try:
            from MedAISlicerLib.tasks.synthesis import synthesis_models

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
            from MedAISlicerLib.dependencies import start_after_dependencies

            args = (self.ui.convertInputSelector.currentNode(), self.ui.convertOutputSelector.currentNode(),
                    self.ui.convertModelComboBox.currentData, self.ui.convertReferenceSelector.currentNode())
            callbacks = {"progressCallback": self.onConvertProgress, "completedCallback": self.onConvertCompleted}
            # First use: the engine's packages install in the background first (progress, Cancel).
            self._convertRun = start_after_dependencies(lambda: self.logic.synthesize(*args, **callbacks), **callbacks)
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
        self.ui.convertStatusLabel.text = message + timeLeftText(eta_s)

    def onConvertCompleted(self, run) -> None:
        self._convertTimer.stop()
        self.updateConvertButton()
        if getattr(run, "oodWarning", ""):  # shown prominently: a GAN output looks plausible even when it is wrong
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

    def setupDetectSection(self) -> None:
        """The "Detect lesions" section: input volume, detection model, minimum score, number of
        boxes; one button that becomes Cancel while the separate ``medai detect`` process runs.
        Each box comes back as an ROI node named with its label and score."""
        import qt

        self._detectRun = None
        self._detectTimer = qt.QTimer()
        self._detectTimer.setInterval(200)
        self._detectTimer.connect("timeout()", self.onDetectPollTimer)
        try:
            from MedAISlicerLib.tasks.detection import detection_models

            models = detection_models()
        except Exception as e:  # a broken install must still show the module, with the reason
            models = []
            self.ui.detectStatusLabel.text = _("Could not read the model catalogue: {e}").format(e=e)
        for modelId, title in models:
            self.ui.detectModelComboBox.addItem(title, modelId)
        self.ui.detectInputSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateDetectButton)
        self.ui.detectApplyButton.connect("clicked(bool)", self.onDetectButton)
        self.updateDetectButton()

    def updateDetectButton(self, node=None) -> None:
        running = self._detectRun is not None and self._detectRun.running
        ready = self.ui.detectInputSelector.currentNode() is not None and self.ui.detectModelComboBox.count > 0
        self.ui.detectApplyButton.enabled = running or ready
        self.ui.detectApplyButton.text = _("Cancel") if running else _("Detect")

    def onDetectButton(self) -> None:
        if self._detectRun is not None and self._detectRun.running:
            self._detectRun.cancel()
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to start the detection."), waitCursor=True):
            from MedAISlicerLib.dependencies import start_after_dependencies

            self.ui.detectProgressBar.value = 0
            args = (self.ui.detectInputSelector.currentNode(), self.ui.detectModelComboBox.currentData,
                    self.ui.detectMinScoreSpinBox.value, int(self.ui.detectMaxBoxesSpinBox.value))
            callbacks = {"progressCallback": self.onDetectProgress, "completedCallback": self.onDetectCompleted}
            # First use: the engine's packages install in the background first (progress, Cancel).
            self._detectRun = start_after_dependencies(lambda: self.logic.detect(*args, **callbacks), **callbacks)
            self._detectTimer.start()
        self.updateDetectButton()

    def onDetectPollTimer(self) -> None:
        if self._detectRun is not None:
            self._detectRun.poll()  # progress and, at the end, onDetectCompleted on the GUI thread

    def onDetectProgress(self, fraction, message, eta_s) -> None:
        if fraction is not None:
            self.ui.detectProgressBar.value = int(round(100 * fraction))
        self.ui.detectStatusLabel.text = message + timeLeftText(eta_s)

    def onDetectCompleted(self, run) -> None:
        self._detectTimer.stop()
        self.updateDetectButton()
        if run.status == "done":
            self.ui.detectProgressBar.value = 100
            self.ui.detectStatusLabel.text = getattr(run, "resultText", "") or _("Done.")
        elif run.status == "cancelled":
            self.ui.detectStatusLabel.text = _("Cancelled.")
        else:
            self.ui.detectStatusLabel.text = _("Failed.")
            slicer.util.errorDisplay(_("Detection failed."), detailedText=run.errorText)

    def setupPreprocessSection(self) -> None:
        """The "Pre-process" section: N4, denoising (classical or a GAN model) and normalisation of
        one volume into a new volume, in a separate ``medai preprocess`` process; the button becomes
        Cancel while it runs."""
        import qt

        from MedAISlicerLib.tasks.preprocessing import DENOISE_METHODS, NORMALIZE_METHODS

        self._preprocessRun = None
        self._preprocessTimer = qt.QTimer()
        self._preprocessTimer.setInterval(200)
        self._preprocessTimer.connect("timeout()", self.onPreprocessPollTimer)
        self.ui.preprocessDenoiseComboBox.addItem(_("none"), "")
        for method in DENOISE_METHODS:
            self.ui.preprocessDenoiseComboBox.addItem(method, method)
        self.ui.preprocessNormalizeComboBox.addItem(_("none"), "")
        for method in NORMALIZE_METHODS:
            self.ui.preprocessNormalizeComboBox.addItem(method, method)
        try:
            from MedAISlicerLib.tasks.preprocessing import denoising_models

            for modelId, title in denoising_models():
                self.ui.preprocessModelComboBox.addItem(title, modelId)
        except Exception as e:  # a broken install must still show the module, with the reason
            self.ui.preprocessStatusLabel.text = _("Could not read the model catalogue: {e}").format(e=e)
        self.ui.preprocessInputSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.updatePreprocessButton)
        self.ui.preprocessApplyButton.connect("clicked(bool)", self.onPreprocessButton)
        self.updatePreprocessButton()

    def updatePreprocessButton(self, node=None) -> None:
        running = self._preprocessRun is not None and self._preprocessRun.running
        self.ui.preprocessApplyButton.enabled = running or self.ui.preprocessInputSelector.currentNode() is not None
        self.ui.preprocessApplyButton.text = _("Cancel") if running else _("Apply")

    def onPreprocessButton(self) -> None:
        if self._preprocessRun is not None and self._preprocessRun.running:
            self._preprocessRun.cancel()
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to start the pre-processing."), waitCursor=True):
            from MedAISlicerLib.dependencies import start_after_dependencies

            denoise = self.ui.preprocessDenoiseComboBox.currentData or None
            node = self.ui.preprocessInputSelector.currentNode()
            options = {"n4": self.ui.preprocessN4CheckBox.checked, "denoise": denoise,
                       "denoiseModel": self.ui.preprocessModelComboBox.currentData if denoise == "gan" else None,
                       "normalize": self.ui.preprocessNormalizeComboBox.currentData or None}
            callbacks = {"progressCallback": self.onPreprocessProgress, "completedCallback": self.onPreprocessCompleted}
            self.ui.preprocessProgressBar.value = 0
            # First use: the engine's packages install in the background first (progress, Cancel).
            self._preprocessRun = start_after_dependencies(
                lambda: self.logic.preprocess(node, None, **options, **callbacks), **callbacks)
            self._preprocessTimer.start()
        self.updatePreprocessButton()

    def onPreprocessPollTimer(self) -> None:
        if self._preprocessRun is not None:
            self._preprocessRun.poll()

    def onPreprocessProgress(self, fraction, message, eta_s) -> None:
        if fraction is not None:
            self.ui.preprocessProgressBar.value = int(round(100 * fraction))
        self.ui.preprocessStatusLabel.text = message + timeLeftText(eta_s)

    def onPreprocessCompleted(self, run) -> None:
        self._preprocessTimer.stop()
        self.updatePreprocessButton()
        if run.status == "done":
            self.ui.preprocessProgressBar.value = 100
            self.ui.preprocessStatusLabel.text = _("Done: {name}.").format(name=run.outputVolume.GetName())
            slicer.util.setSliceViewerLayers(background=run.outputVolume)
        elif run.status == "cancelled":
            self.ui.preprocessStatusLabel.text = _("Cancelled.")
        else:
            self.ui.preprocessStatusLabel.text = _("Failed.")
            slicer.util.errorDisplay(_("Pre-processing failed."), detailedText=run.errorText)

    def cleanup(self) -> None:
        self.removeObservers()


class MedAILogic(ScriptedLoadableModuleLogic):
    """Section logics are attached here by their files in MedAISlicerLib/tasks (see the module docstring)."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def synthesize(self, inputVolume, outputVolume=None, modelId="t2_to_flair_gan", referenceVolume=None,
                   device="auto", wait=False, **callbacks):
        """Convert ``inputVolume`` to another modality in a separate ``medai synthesize`` process.

        ``outputVolume`` None creates a new scalar volume at the end. ``wait=True`` blocks (batch
        scripts). The returned run has ``status``, ``outputVolume``, ``oodWarning``, ``metrics``.
        """
        from MedAISlicerLib.tasks.synthesis import synthesize

        return synthesize(inputVolume, outputVolume, modelId, referenceVolume, device, wait=wait,
                          enginePrefix=getattr(self, "enginePrefix", None), **callbacks)

    def classify(self, inputVolume, modelId="adrenal_classifier", segmentationNode=None, segmentId=None,
                 roiNode=None, explain="gradcam", tableNode=None, device="auto", wait=False, **callbacks):
        """Classify ``inputVolume`` (inside a segment or an ROI when given) in a separate ``medai classify``
        process. The segment is exported on the volume's grid and passed as the mask (the adrenal model
        classifies the segment's shape). ``explain`` "gradcam"/"occlusion"/None adds a heat-map volume
        shown in colour over the input. The returned run has ``status``, ``classNames``,
        ``probabilities``, ``predicted``, ``resultText``, ``tableNode``, ``heatmapVolume``.
        """
        from MedAISlicerLib.tasks.classification import classify

        return classify(inputVolume, modelId, segmentationNode, segmentId, roiNode, explain, tableNode, device,
                        wait=wait, enginePrefix=getattr(self, "enginePrefix", None), **callbacks)

    def detect(self, inputVolume, modelId=None, minScore=None, maxBoxes=10, device="auto", wait=False, **callbacks):
        """Detect lesions in ``inputVolume`` in a separate ``medai detect`` process (``monai.apps.detection``
        RetinaNet: anchors, box coder, NMS). ``modelId`` is a catalogue id or a (trusted) bundle folder;
        ``minScore`` None keeps the model's own threshold; at most ``maxBoxes`` boxes. Each box becomes a
        markups ROI node (centre and size in RAS mm) named with its label and score. The returned run has
        ``status``, ``boxes`` (the engine's table), ``roiNodes``, ``resultText``.
        """
        from MedAISlicerLib.tasks.detection import DEFAULT_MODEL, detect

        return detect(inputVolume, modelId or DEFAULT_MODEL, minScore, maxBoxes, device, wait=wait,
                      enginePrefix=getattr(self, "enginePrefix", None), **callbacks)

    def preprocess(self, inputVolume, outputVolume=None, wait=False, **options):
        """Classical pre-processing of ``inputVolume`` (N4, denoising incl. a GAN model, resampling,
        crop, normalisation) into a new volume, in a separate ``medai preprocess`` process.
        ``options``: the keyword arguments of ``MedAISlicerLib.tasks.preprocessing.PreprocessRun``.
        The run has ``status``, ``outputVolume``, ``biasFieldVolume`` and ``errorText``."""
        from MedAISlicerLib.tasks.preprocessing import preprocess

        options.setdefault("enginePrefix", getattr(self, "enginePrefix", None))
        return preprocess(inputVolume, outputVolume, wait=wait, **options)

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
        self.setUp()
        self.test_classify()
        self.setUp()
        self.test_detect()

    def test_engine_and_catalogue_load(self):
        """The shipped engine imports inside Slicer and its model catalogue is readable."""
        from MedAILib.models.catalogue import load_catalogue

        self.assertTrue(MedAILogic().engineVersion())
        ids = [e.id for e in load_catalogue()]
        self.delayDisplay(f"Catalogue models: {', '.join(ids)}")
        self.assertIn("hippocampus_unet", ids)

    def test_convert_modality(self):
        """Convert a brain MR with the shipped T2 -> FLAIR model the way a user would (separate
        process, new output volume) and check the result lies on the input's grid."""
        import numpy as np
        import vtk

        inputVolume = self.brainVolume()
        if inputVolume is None:
            return
        self.delayDisplay(f"Converting {inputVolume.GetName()} with t2_to_flair_gan (an OOD warning is expected "
                          "for a T1 image such as MRHead)")
        run = MedAILogic().synthesize(inputVolume, None, "t2_to_flair_gan", device="cpu", wait=True)
        self.assertEqual(run.status, "done", run.errorText)
        a, b = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
        inputVolume.GetIJKToRASMatrix(a)
        run.outputVolume.GetIJKToRASMatrix(b)
        self.assertTrue(np.allclose(slicer.util.arrayFromVTKMatrix(a), slicer.util.arrayFromVTKMatrix(b)))
        self.assertEqual(slicer.util.arrayFromVolume(run.outputVolume).shape,
                         slicer.util.arrayFromVolume(inputVolume).shape)
        self.delayDisplay("Out-of-distribution warning: " + (run.oodWarning or "none"))

    def brainVolume(self):
        """Slicer's MRHead sample (SampleData, downloaded); where SampleData is not there (slicer-core
        in CI), a brain MR from the MedAI data folder (MEDAI_DATA_DIR). None (test skipped, with a
        message) when neither is available."""
        try:
            import SampleData
        except ModuleNotFoundError:
            SampleData = None
        if SampleData is not None:
            return SampleData.downloadSample("MRHead")
        from MedAILib.core.paths import data_dir

        path = data_dir() / "brainlesion-brats-examples" / "BraTS-GLI-00001-000" / "BraTS-GLI-00001-000-t2w.nii.gz"
        if not path.is_file():
            self.delayDisplay(f"Skipped: no SampleData module and {path} not found (set MEDAI_DATA_DIR)")
            return None
        return slicer.util.loadVolume(str(path))

    def test_classify(self):
        """Classify an adrenal gland segment the way a user would: a volume, a segment drawn on it,
        the shipped adrenal_classifier, Grad-CAM; check the table node and the heat-map's grid."""
        import numpy as np
        import vtk

        # A gland-like shape (an elongated, bent ellipsoid) on a 1 mm volume: the segment is what is classified.
        k, j, i = np.mgrid[0:60, 0:70, 0:80].astype(np.float32)
        shape = (((i - 40) / 14) ** 2 + ((j - 35 - 0.01 * (i - 40) ** 2) / 4) ** 2 + ((k - 30) / 9) ** 2) <= 1
        image = np.where(shape, 40.0, 0.0).astype(np.float32) + np.float32(-100.0)
        ijkToRAS = np.diag([1.0, 1.0, 1.0, 1.0])
        volume = slicer.util.addVolumeFromArray(image, ijkToRAS, "abdomen", "vtkMRMLScalarVolumeNode")
        segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "adrenal")
        segmentId = segmentation.GetSegmentation().AddEmptySegment("left_adrenal", "left adrenal", (0.9, 0.6, 0.2))
        slicer.util.updateSegmentBinaryLabelmapFromArray(shape.astype(np.uint8), segmentation, segmentId,
                                                         referenceVolumeNode=volume)
        self.delayDisplay("Classifying the segment with adrenal_classifier (Grad-CAM)")
        run = MedAILogic().classify(volume, "adrenal_classifier", segmentation, segmentId, explain="gradcam",
                                    device="cpu", wait=True)
        self.assertEqual(run.status, "done", run.errorText)
        self.assertEqual(run.tableNode.GetNumberOfRows(), 2)
        self.assertAlmostEqual(sum(run.probabilities), 1.0, places=4)
        a, b = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
        volume.GetIJKToRASMatrix(a)
        run.heatmapVolume.GetIJKToRASMatrix(b)
        self.assertTrue(np.allclose(slicer.util.arrayFromVTKMatrix(a), slicer.util.arrayFromVTKMatrix(b)))
        self.delayDisplay("Result: " + run.resultText)

    def test_detect(self):
        """Detect with the shipped lung-nodule RetinaNet the way a user would (separate process) on a
        chest-CT-like volume (air, body, lungs, a 30 mm soft-tissue ball in one lung, 20 HU noise); each box must come
        back as an ROI node at the box's RAS centre, named with its score."""
        import numpy as np

        k, j, i = np.mgrid[0:12, 0:160, 0:160].astype(np.float32)
        body = ((i - 80) / 75) ** 2 + ((j - 80) / 60) ** 2 <= 1
        lung = (((i - 50) / 25) ** 2 + ((j - 80) / 40) ** 2 <= 1) | (((i - 110) / 25) ** 2 + ((j - 80) / 40) ** 2 <= 1)
        ball = ((i - 110) * 0.8) ** 2 + ((j - 95) * 0.8) ** 2 + ((k - 6) * 2.5) ** 2 <= 15 ** 2
        image = np.full(k.shape, -1000.0, np.float32)
        image[body] = 40.0
        image[lung] = -850.0
        image[ball] = 30.0
        image += np.random.default_rng(0).normal(0.0, 20.0, image.shape).astype(np.float32)  # CT noise
        volume = slicer.util.addVolumeFromArray(image, np.diag([0.8, 0.8, 2.5, 1.0]), "chest CT", "vtkMRMLScalarVolumeNode")
        self.delayDisplay("Detecting with lidc_nodule_retinanet_tiny")
        run = MedAILogic().detect(volume, "lidc_nodule_retinanet_tiny", minScore=0.0, maxBoxes=3, device="cpu",
                                  wait=True)
        self.assertEqual(run.status, "done", run.errorText)
        self.assertEqual(len(run.roiNodes), len(run.boxes))
        self.assertTrue(0 < len(run.boxes) <= 3)
        for roi, box in zip(run.roiNodes, run.boxes):
            centre = [0.0, 0.0, 0.0]
            roi.GetCenter(centre)
            self.assertTrue(np.allclose(centre, box["center_ras_mm"], atol=1e-3))
            self.assertEqual(roi.GetName(), f"{box['label']} {box['score']:.2f}")
        self.delayDisplay("Detection: " + run.resultText)
