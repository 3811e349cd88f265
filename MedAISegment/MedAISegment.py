"""MedAISegment: segment an image with a MedAI model in one click.

Thin shell over MedAISlicerLib (models, tasks.segmentation, process, node conversion). The model
runs in a separate ``medai segment`` process, so Slicer stays responsive and Cancel works.
"""

import logging
import os
from typing import Optional

import qt
import slicer
import vtk
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

MAX_INPUTS = 4  # input selectors in the .ui; a model shows as many as it needs


#
# MedAISegment
#
class MedAISegment(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("MedAI Segment")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = ["MedAI"]  # MedAI ships MedAILib and MedAISlicerLib
        self.parent.contributors = ["MedAI contributors (MedAI project)"]
        self.parent.helpText = _(
            "Segment anatomy with MedAI (MONAI) models: pick the input volume(s) and a model, press "
            "<b>Segment</b>. The model runs in a separate process; progress and time left are shown "
            "and <b>Cancel</b> stops it. See "
            "<a href='https://github.com/MedAI-project/SlicerMedAI/blob/main/docs/slicer.md'>the documentation</a>.")
        self.parent.acknowledgementText = _(
            "Built on MONAI, PyTorch, SimpleITK and 3D Slicer. The shipped hippocampus model was trained on "
            "the Medical Segmentation Decathlon Task04 data (CC-BY-SA 4.0).")


#
# Parameter node
#
@parameterNodeWrapper
class MedAISegmentParameterNode:
    """What the user chose, kept in the scene. Input selectors are bound by SlicerParameterName
    in the .ui; the model, device and structure list are managed by the widget."""

    inputVolume0: slicer.vtkMRMLScalarVolumeNode
    inputVolume1: slicer.vtkMRMLScalarVolumeNode
    inputVolume2: slicer.vtkMRMLScalarVolumeNode
    inputVolume3: slicer.vtkMRMLScalarVolumeNode
    outputSegmentation: slicer.vtkMRMLSegmentationNode
    modelId: str = "hippocampus_unet"
    device: str = "auto"
    fast: bool = False
    assumeAligned: bool = False  # multi-input: inputs on different grids share one world space
    uncertainty: bool = False  # test-time augmentation: uncertainty overlay + confidence per segment
    structures: str = ""  # comma-separated names; empty = all

    def inputVolumes(self, count):
        return [getattr(self, f"inputVolume{i}") for i in range(count)]


#
# MedAISegmentWidget
#
class MedAISegmentWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._run = None
        self._models = []
        self._shownModels = []

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MedAISegment.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = MedAISegmentLogic()
        self._inputLabels = [getattr(self.ui, f"inputLabel{i}") for i in range(MAX_INPUTS)]
        self._inputSelectors = [getattr(self.ui, f"inputVolumeSelector{i}") for i in range(MAX_INPUTS)]
        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(200)
        self._pollTimer.connect("timeout()", self.onPollTimer)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.modelFilterLineEdit.connect("textChanged(QString)", self.onFilterChanged)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.deviceComboBox.connect("currentIndexChanged(int)", self.onDeviceChanged)
        self.ui.structuresListWidget.connect("itemChanged(QListWidgetItem*)", self.onStructuresChanged)
        self.ui.selectAllStructuresButton.connect("clicked(bool)", lambda _: self.setAllStructures(True))
        self.ui.selectNoStructuresButton.connect("clicked(bool)", lambda _: self.setAllStructures(False))
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.runOnLineEdit.connect("editingFinished()", self.onRunOnChanged)
        self.ui.tokenFileLineEdit.connect("editingFinished()", self.onRunOnChanged)
        self.ui.trainRefreshButton.connect("clicked(bool)", lambda _: self.fillTrainSegmentations())
        self.ui.trainButton.connect("clicked(bool)", self.onTrainButton)
        from MedAISlicerLib.engine_client import settings

        self.ui.runOnLineEdit.text = settings.runOn
        self.ui.tokenFileLineEdit.text = settings.tokenFile or ""

        try:
            from MedAISlicerLib.models import load_models

            self._models = load_models()
        except Exception as e:  # a broken install must still show the module, with the reason
            logging.exception("model catalogue")
            self.addLog(f"Could not read the model catalogue: {e}")
        self.onFilterChanged("")
        self.initializeParameterNode()

    def cleanup(self) -> None:
        if self._run is not None and self._run.running:
            self._run.cancel()
        self._pollTimer.stop()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateApplyButton)

    def onSceneStartClose(self, caller, event) -> None:
        if self._run is not None and self._run.running:
            self._run.cancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    # --- parameter node ----------------------------------------------------------------------
    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume0:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first:
                self._parameterNode.inputVolume0 = first

    def setParameterNode(self, inputParameterNode: Optional[MedAISegmentParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateApplyButton)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateApplyButton)
            self.selectModel(self._parameterNode.modelId)
            from MedAISlicerLib.tasks import DEVICES  # the .ui lists them in this order

            device = self._parameterNode.device
            self.ui.deviceComboBox.currentIndex = DEVICES.index(device) if device in DEVICES else 0
            self.updateApplyButton()

    # --- models, inputs, structures --------------------------------------------------------
    def currentModel(self):
        i = self.ui.modelComboBox.currentIndex
        return self._shownModels[i] if 0 <= i < len(self._shownModels) else None

    def onFilterChanged(self, text) -> None:
        current = self.currentModel()
        self._shownModels = [m for m in self._models if m.matches(text)]
        wasBlocked = self.ui.modelComboBox.blockSignals(True)
        self.ui.modelComboBox.clear()
        for m in self._shownModels:
            self.ui.modelComboBox.addItem(m.display_text())
        self.ui.modelComboBox.blockSignals(wasBlocked)
        self.selectModel(current.id if current else (self._parameterNode.modelId if self._parameterNode else ""))

    def selectModel(self, modelId) -> None:
        ids = [m.id for m in self._shownModels]
        self.ui.modelComboBox.currentIndex = ids.index(modelId) if modelId in ids else (0 if ids else -1)
        self.onModelChanged(self.ui.modelComboBox.currentIndex)

    def onModelChanged(self, index) -> None:
        model = self.currentModel()
        if model is None:
            self.ui.modelInfoLabel.text = _("No model matches the filter.")
            self.updateApplyButton()
            return
        if self._parameterNode and self._parameterNode.modelId != model.id:
            self._parameterNode.modelId = model.id
            self._parameterNode.structures = ""
        self.ui.modelInfoLabel.text = model.description or model.title
        self.ui.modelInfoLabel.toolTip = f"{model.id} — licence {model.licence}, {model.size_text()}"
        from MedAISlicerLib.models import input_selectors

        try:
            slots = input_selectors(model, MAX_INPUTS)
        except ValueError as e:  # more inputs than the pool of selectors: say so instead of running
            self.ui.modelInfoLabel.text = str(e)
            slots = input_selectors(None, MAX_INPUTS)
        for label, selector, slot in zip(self._inputLabels, self._inputSelectors, slots):
            label.visible = selector.visible = slot.visible
            label.text, selector.toolTip = slot.label, slot.toolTip
        self.fillStructures(model)
        self.updateApplyButton()

    def fillStructures(self, model) -> None:
        chosen = set(filter(None, (self._parameterNode.structures if self._parameterNode else "").split(",")))
        listWidget = self.ui.structuresListWidget
        wasBlocked = listWidget.blockSignals(True)
        listWidget.clear()
        for label in model.labels:
            item = qt.QListWidgetItem(label.name)
            item.setFlags(item.flags() | qt.Qt.ItemIsUserCheckable)
            item.setCheckState(qt.Qt.Checked if (not chosen or label.name in chosen) else qt.Qt.Unchecked)
            listWidget.addItem(item)
        listWidget.blockSignals(wasBlocked)

    def checkedStructures(self) -> list:
        listWidget = self.ui.structuresListWidget
        items = [listWidget.item(i) for i in range(listWidget.count)]
        checked = [it.text() for it in items if it.checkState() == qt.Qt.Checked]
        return [] if len(checked) == len(items) else checked  # all = no subset

    def setAllStructures(self, checked) -> None:
        listWidget = self.ui.structuresListWidget
        for i in range(listWidget.count):
            listWidget.item(i).setCheckState(qt.Qt.Checked if checked else qt.Qt.Unchecked)

    def onStructuresChanged(self, item) -> None:
        if self._parameterNode:
            self._parameterNode.structures = ",".join(self.checkedStructures())
        self.updateApplyButton()

    def onDeviceChanged(self, index) -> None:
        from MedAISlicerLib.tasks import DEVICES

        if self._parameterNode and 0 <= index < len(DEVICES):
            self._parameterNode.device = DEVICES[index]

    def updateApplyButton(self, caller=None, event=None) -> None:
        if self._run is not None and self._run.running:
            self.ui.applyButton.text = _("Cancel")
            self.ui.applyButton.enabled = True
            return
        self.ui.applyButton.text = _("Segment")
        model = self.currentModel()
        p = self._parameterNode
        ready = bool(model and p and model.input_count <= MAX_INPUTS and all(p.inputVolumes(model.input_count)))
        anyChecked = any(self.ui.structuresListWidget.item(i).checkState() == qt.Qt.Checked
                         for i in range(self.ui.structuresListWidget.count))
        self.ui.applyButton.enabled = ready and anyChecked
        self.ui.applyButton.toolTip = _("Run the model") if ready else _("Select the input volume(s) and a model")

    # --- running -----------------------------------------------------------------------------
    def onApplyButton(self) -> None:
        if self._run is not None and self._run.running:
            self._run.cancel()
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to start the segmentation."), waitCursor=True):
            from MedAISlicerLib.dependencies import start_after_dependencies

            model = self.currentModel()
            p = self._parameterNode
            output = p.outputSegmentation
            overwrite = False
            if output is not None and output.GetSegmentation().GetNumberOfSegments() > 0:
                overwrite = slicer.util.confirmOkCancelDisplay(
                    _("'{name}' already has segments. Replace them with the new result?").format(name=output.GetName()))
                if not overwrite:
                    return
            self.ui.logTextEdit.clear()
            self.ui.progressBar.value = 0
            callbacks = {"progressCallback": self.onProgress, "logCallback": self.addLog,
                         "completedCallback": self.onCompleted}
            inputs, structures = p.inputVolumes(model.input_count), self.checkedStructures()
            # First use: the engine's packages install in the background first (progress, Cancel).
            self._run = start_after_dependencies(lambda: self.logic.process(
                inputs, output, model.id, structures=structures, device=p.device, fast=p.fast,
                assumeAligned=p.assumeAligned, uncertainty=p.uncertainty, overwrite=overwrite, wait=False,
                **callbacks), **callbacks)
            self._pollTimer.start()
            self.updateApplyButton()

    def onPollTimer(self) -> None:
        if self._run is not None:
            self._run.poll()  # progress, log and, at the end, onCompleted on this (the GUI) thread

    def onProgress(self, fraction, message, eta_s) -> None:
        if fraction is not None:
            self.ui.progressBar.value = int(round(100 * fraction))
        left = "" if eta_s is None else _(" — about {s} s left").format(s=int(round(eta_s)))
        self.ui.progressLabel.text = f"{message}{left}"

    def addLog(self, text) -> None:
        self.ui.logTextEdit.appendPlainText(text)

    def onCompleted(self, run) -> None:
        self._pollTimer.stop()
        self.updateApplyButton()
        if run.status == "done":
            self.ui.progressBar.value = 100
            self.ui.progressLabel.text = _("Done.")
            if self._parameterNode:
                self._parameterNode.outputSegmentation = run.outputSegmentation
        elif run.status == "cancelled":
            self.ui.progressLabel.text = _("Cancelled.")
        else:
            self.ui.progressLabel.text = _("Failed.")
            slicer.util.errorDisplay(_("Segmentation failed."), detailedText=run.errorText)


    # --- where runs go -----------------------------------------------------------------------
    def onRunOnChanged(self) -> None:
        from MedAISlicerLib.engine_client import WARM, settings

        with slicer.util.tryWithErrorDisplay(_("Invalid 'Run on' setting.")):
            settings.runOn = self.ui.runOnLineEdit.text.strip() or WARM
            settings.tokenFile = self.ui.tokenFileLineEdit.text.strip() or None
            settings.kind  # checks the value: warm, oneshot or a server URL

    # --- training from the scene ---------------------------------------------------------------
    def fillTrainSegmentations(self) -> None:
        self.ui.trainSegmentationsListWidget.clear()
        for node in slicer.util.getNodesByClass("vtkMRMLSegmentationNode"):
            item = qt.QListWidgetItem(node.GetName())
            item.setData(qt.Qt.UserRole, node.GetID())
            item.setFlags(item.flags() | qt.Qt.ItemIsUserCheckable)
            item.setCheckState(qt.Qt.Unchecked)
            self.ui.trainSegmentationsListWidget.addItem(item)

    def onTrainButton(self) -> None:
        if self._run is not None and self._run.running:
            self._run.cancel()
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to start training."), waitCursor=True):
            from MedAISlicerLib.tasks.training import scene_pairs

            listWidget = self.ui.trainSegmentationsListWidget
            nodes = [slicer.mrmlScene.GetNodeByID(listWidget.item(i).data(qt.Qt.UserRole))
                     for i in range(listWidget.count) if listWidget.item(i).checkState() == qt.Qt.Checked]
            timeLimit = self.ui.trainTimeLimitSpinBox.value
            self.ui.logTextEdit.clear()
            self.ui.progressBar.value = 0
            self._run = self.logic.train(
                scene_pairs([n for n in nodes if n is not None]), self.ui.trainModelNameLineEdit.text.strip(),
                epochs=self.ui.trainEpochsSpinBox.value, timeLimitMinutes=timeLimit or None,
                initModel=self.ui.trainInitLineEdit.text.strip() or None, wait=False,
                progressCallback=self.onProgress, logCallback=self.addLog, completedCallback=self.onTrainCompleted)
            self.ui.trainButton.text = _("Cancel training")
            self._pollTimer.start()

    def onTrainCompleted(self, run) -> None:
        self._pollTimer.stop()
        self.ui.trainButton.text = _("Train")
        self.ui.trainCurveLabel.text = ", ".join(f"{e}: {d:.3f}" for e, d in run.validationCurve[-10:])
        if run.status == "done":
            self.ui.progressLabel.text = _("Trained: {model}").format(model=run.modelId)
            from MedAISlicerLib.models import load_models

            self._models = load_models()
            self.onFilterChanged("")
            self.selectModel(run.modelId)
        elif run.status == "cancelled":
            self.ui.progressLabel.text = _("Training cancelled.")
        else:
            self.ui.progressLabel.text = _("Training failed.")
            slicer.util.errorDisplay(_("Training failed."), detailedText=run.errorText)


#
# MedAISegmentLogic
#
class MedAISegmentLogic(ScriptedLoadableModuleLogic):
    """Runs a catalogue model on volume nodes and fills a segmentation node. Works without a GUI."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.enginePrefix = None  # tests may point this at another engine command

    def getParameterNode(self):
        return MedAISegmentParameterNode(super().getParameterNode())

    def process(self, inputVolumes, outputSegmentation, modelId, structures=None, device="auto", fast=False,
                overwrite=False, wait=False, progressCallback=None, logCallback=None, completedCallback=None,
                catalogue=None, timeout=None, assumeAligned=False, statistics=True, uncertainty=False):
        """Segment ``inputVolumes`` (one node per model input, in catalogue order) with ``modelId``.

        ``statistics``: the run's ``statisticsTable`` (a table node: volume, intensity, box and,
        with ``uncertainty``, confidence per segment). ``uncertainty``: test-time augmentation; the
        entropy volume (``uncertaintyVolume``) is shown in colour over the first input.

        Multi-input models: the engine brings inputs on other grids onto the FIRST input's grid
        (registration, or resampling by world coordinates when ``assumeAligned``); the result is
        on the first input's grid.

        ``outputSegmentation`` None creates a new node at the end. The inputs are never modified; an
        output that already has segments is refused unless ``overwrite``. ``wait=False`` returns a
        running ``SegmentationRun`` (drive it with ``poll()``, stop it with ``cancel()``);
        ``wait=True`` blocks until the end and raises RuntimeError on failure or cancel.
        """
        from MedAISlicerLib.models import find_model
        from MedAISlicerLib.tasks.segmentation import SegmentationRun

        if not isinstance(inputVolumes, (list, tuple)):
            inputVolumes = [inputVolumes]
        run = SegmentationRun(inputVolumes, outputSegmentation, find_model(modelId, catalogue), structures, device,
                              fast, overwrite, progressCallback, logCallback, completedCallback, self.enginePrefix,
                              assumeAligned=assumeAligned, statistics=statistics, uncertainty=uncertainty)
        return run.startAndMaybeWait(wait, timeout)

    def processSequence(self, inputSequence, modelId, structures=None, device="auto", framesPerBatch=4,
                        temporalSmoothing=0.0, cyclic=True, keepLargest=False, wait=False, progressCallback=None,
                        logCallback=None, completedCallback=None, catalogue=None, timeout=None):
        """Segment every frame of a Sequence of volumes (4D / cine) with ``modelId``.

        ``inputSequence``: a ``vtkMRMLSequenceNode`` of scalar volumes on one grid, or a sequence
        browser (its master sequence). The engine (``medai segment-sequence``, in its own process)
        segments the frames ``framesPerBatch`` at a time, with progress per frame;
        ``temporalSmoothing`` (sigma in frames) smooths the class probabilities along the frames
        (wrapping around unless ``cyclic`` is False).

        The result (``run.outputSequence``) is a new Sequence of segmentation nodes, one per input
        frame at the input's index values, each on its frame's grid, added as a synchronized
        sequence to the input's browser (``run.browserNode``; one is made when the input has none),
        so browsing the input shows the same frame's segmentation (``run.proxySegmentation``).
        The inputs are never modified; a failed or cancelled run leaves no new node.
        ``wait=False`` returns a running ``SequenceSegmentationRun`` (``poll()``, ``cancel()``);
        ``wait=True`` blocks until the end and raises RuntimeError on failure or cancel.
        """
        from MedAISlicerLib.models import find_model
        from MedAISlicerLib.tasks.sequences import SequenceSegmentationRun

        run = SequenceSegmentationRun(inputSequence, find_model(modelId, catalogue), structures, device,
                                      framesPerBatch=framesPerBatch, temporalSmoothing=temporalSmoothing,
                                      cyclic=cyclic, keepLargest=keepLargest, progressCallback=progressCallback,
                                      logCallback=logCallback, completedCallback=completedCallback,
                                      enginePrefix=self.enginePrefix)
        return run.startAndMaybeWait(wait, timeout)

    def train(self, pairs, modelId, epochs=50, timeLimitMinutes=None, initModel=None, validationPairs=(),
              outputFolder=None, extraArguments=(), wait=False, progressCallback=None, logCallback=None,
              completedCallback=None, timeout=None):
        """Train a segmentation model from the scene: ``pairs`` are (volume node, segmentation node)
        tuples (segments with the same name are the same structure in every case; values 1, 2, ...
        in order of first appearance). The engine (``medai train segmentation`` in its own process)
        plans, trains, validates (``validationPairs``, else a held-out part of ``pairs``), writes
        the bundle and adds it to the user catalogue as ``modelId``; ``initModel`` fine-tunes from
        a bundle (catalogue id or folder, e.g. one made by ``medai pretrain``). ``extraArguments``
        go to ``medai train segmentation`` as given (e.g. ``["--max-patch", 32, 32, 32]``).

        ``wait=False`` returns a running ``TrainingRun`` (``poll()``, ``cancel()``; progress per
        epoch with the validation Dice and the time left); ``wait=True`` blocks until the end and
        raises RuntimeError on failure or cancel. Afterwards ``run.modelId`` segments with
        :meth:`process` and ``run.validationCurve`` holds (epoch, mean validation Dice).
        """
        from MedAISlicerLib.tasks.training import TrainingRun

        run = TrainingRun(pairs, modelId, epochs=epochs, timeLimitMinutes=timeLimitMinutes, initModel=initModel,
                          validationPairs=validationPairs, outputFolder=outputFolder, extraArguments=extraArguments,
                          progressCallback=progressCallback, logCallback=logCallback,
                          completedCallback=completedCallback, enginePrefix=self.enginePrefix)
        return run.startAndMaybeWait(wait, timeout)


#
# MedAISegmentTest
#
class MedAISegmentTest(ScriptedLoadableModuleTest):
    """Self-test: segment a real hippocampus MRI with the shipped model and compare with the reference.

    Needs the MedAI data folder (MEDAI_DATA_DIR, see the project README); skipped with a message
    when it is absent, because a clinical install has no test data.
    """

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_segment_hippocampus()

    def test_segment_hippocampus(self):
        import json

        import numpy as np

        from MedAILib.core.paths import data_dir, resources_dir
        from MedAISlicerLib.models import find_model

        # a held-out case of the shipped model (its fixed split), not one it was trained on
        split = json.loads((resources_dir() / "Models" / "hippocampus_unet" / "split.json").read_text())
        case = os.environ.get("MEDAI_TEST_CASE", split["validation"][0])
        folder = data_dir() / "msd-hippocampus"
        image, reference = folder / "imagesTr" / f"{case}.nii.gz", folder / "labelsTr" / f"{case}.nii.gz"
        if not image.exists():
            self.delayDisplay(f"Skipped: {image} not found (set MEDAI_DATA_DIR to the MedAI data folder)")
            return
        self.delayDisplay("Loading a hippocampus MRI")
        volume = slicer.util.loadVolume(str(image))
        before = slicer.util.arrayFromVolume(volume).copy()

        self.delayDisplay("Segmenting with the shipped model")
        run = MedAISegmentLogic().process([volume], None, "hippocampus_unet", device="cpu", wait=True)
        seg = run.outputSegmentation
        segmentation = seg.GetSegmentation()
        labels = find_model("hippocampus_unet").labels
        self.assertEqual(segmentation.GetNumberOfSegments(), len(labels))
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(volume), before)  # input untouched

        # The reference label read by Slicer too; masks taken on its grid (world positions, not indices).
        truthNode = slicer.util.loadLabelVolume(str(reference), {"show": False})
        truth = slicer.util.arrayFromVolume(truthNode)
        for label in labels:
            segmentId = segmentation.GetSegmentIdBySegmentName(label.name)
            self.assertTrue(segmentId, f"no segment named {label.name}")
            self.assertEqual(segmentation.GetSegment(segmentId).GetTerminology(), label.terminology)
            mask = slicer.util.arrayFromSegmentBinaryLabelmap(seg, segmentId, truthNode) > 0
            ref = truth == label.value
            dice = 2.0 * np.logical_and(mask, ref).sum() / max(1, mask.sum() + ref.sum())
            self.delayDisplay(f"{label.name}: Dice {dice:.3f}")
            self.assertGreater(dice, 0.6)
        self.delayDisplay("Test passed")
