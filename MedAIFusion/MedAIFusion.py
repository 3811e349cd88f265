"""MedAIFusion: align volumes of different modalities and fuse them (MedAI engine).

Thin shell over MedAISlicerLib.tasks.fusion (runs of ``medai register`` / ``medai fuse`` in a separate process)
and MedAISlicerLib (process + node conversion). Registration result: a transform node (the moving
volume is put under it, so it shows aligned with the fixed one) and the moving volume resampled
onto the fixed grid. Display: fixed as background, registered moving as foreground with an opacity
slider, a checkerboard volume, or a colour overlay. Ensemble: several probability/label maps ->
fused labels + an uncertainty volume.
"""

import logging

import qt
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

from MedAISlicerLib.nodes import COLOUR_TABLES  # noqa: E402  (shared with the MedAI module)

MULTI_INPUT_POOL = 4  # input selectors of "Segment with several inputs" in the .ui


class MedAIFusion(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("MedAI Fusion")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Registration")]
        # MedAI ships MedAILib and MedAISlicerLib; "Segment with several inputs" runs MedAISegment's logic
        self.parent.dependencies = ["MedAI", "MedAISegment"]
        self.parent.contributors = ["MedAI contributors (MedAI project)"]
        self.parent.helpText = _(
            "Register volumes of different modalities (rigid, affine or B-spline; mutual information), show "
            "them fused (opacity, checkerboard, colour overlay) and combine several model outputs (mean, "
            "weighted, majority vote, STAPLE) with an uncertainty map. Registration runs in a separate "
            "process; <b>Cancel</b> stops it. See "
            "<a href='https://github.com/MedAI-project/SlicerMedAI/blob/main/docs/slicer.md'>the documentation</a>.")
        self.parent.acknowledgementText = _("Built on MONAI, PyTorch, SimpleITK and 3D Slicer.")


class MedAIFusionWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._run = None
        self._runButton = None
        self._pollTimer = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MedAIFusion.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MedAIFusionLogic()
        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(100)
        self._pollTimer.connect("timeout()", self._poll)
        for t in ("rigid", "affine", "bspline"):
            self.ui.typeComboBox.addItem(t)
        for c in COLOUR_TABLES:
            self.ui.colourComboBox.addItem(c)
        for m in ("mean", "weighted", "vote", "staple"):
            self.ui.ensembleMethodComboBox.addItem(m)
        self.ui.registerButton.connect("clicked(bool)", self.onRegister)
        self.ui.opacitySlider.connect("valueChanged(double)", self.onOpacity)
        self.ui.showFusedButton.connect("clicked(bool)", self.onShowFused)
        self.ui.checkerboardButton.connect("clicked(bool)", self.onCheckerboard)
        self.ui.colourOverlayButton.connect("clicked(bool)", self.onColourOverlay)
        self.ui.ensembleButton.connect("clicked(bool)", self.onEnsemble)
        self._multiInputLabels = [getattr(self.ui, f"multiInputLabel{i}") for i in range(MULTI_INPUT_POOL)]
        self._multiInputSelectors = [getattr(self.ui, f"multiInputSelector{i}") for i in range(MULTI_INPUT_POOL)]
        self._multiModels = []
        try:
            self._multiModels = self.logic.multiInputModels()
        except Exception as e:  # a broken catalogue must not hide the rest of the module
            logging.exception("model catalogue")
            self.ui.statusLabel.text = _("Could not read the model catalogue: {e}").format(e=e)
        for m in self._multiModels:
            self.ui.multiModelComboBox.addItem(m.display_text())
        self.ui.multiModelComboBox.connect("currentIndexChanged(int)", self.onMultiModelChanged)
        self.ui.multiSegmentButton.connect("clicked(bool)", self.onMultiSegment)
        self.onMultiModelChanged(self.ui.multiModelComboBox.currentIndex)

    def cleanup(self) -> None:
        if self._running():
            self._run.cancel()
        if self._pollTimer is not None:
            self._pollTimer.stop()
        self.removeObservers()

    # --- running -------------------------------------------------------------------------------
    # Every action (register, checkerboard, ensemble, segment with several inputs) runs in a process
    # of its own: the button that started it becomes Cancel, the others wait; nothing here waits.
    def _actionButtons(self) -> dict:
        return {self.ui.registerButton: _("Register"), self.ui.checkerboardButton: _("Checkerboard"),
                self.ui.ensembleButton: _("Combine"), self.ui.multiSegmentButton: _("Segment")}

    def _running(self) -> bool:
        return self._run is not None and self._run.running

    def _toggle(self, button, startRun, failure) -> None:
        """Start ``startRun(**callbacks)`` from ``button`` (after a first-use install when needed), or
        cancel the run when ``button`` started it."""
        if self._running():
            if button is self._runButton:
                self._run.cancel()
            else:
                self.ui.statusLabel.text = _("Busy: wait for the running step, or cancel it.")
            return
        with slicer.util.tryWithErrorDisplay(failure, waitCursor=True):
            from MedAISlicerLib.dependencies import start_after_dependencies

            callbacks = {"progressCallback": self._onProgress, "completedCallback": self._onCompleted}
            self._run = start_after_dependencies(lambda: startRun(**callbacks), **callbacks)
            self._runButton = button
            self.ui.progressBar.value = 0
            button.text = _("Cancel")
            self._pollTimer.start()

    def _poll(self) -> None:
        if self._run is not None and not self._run.poll():
            self._pollTimer.stop()

    def _onProgress(self, fraction, message, eta_s):
        if fraction is not None:
            self.ui.progressBar.value = int(round(100 * fraction))
        self.ui.statusLabel.text = message + (_(" ({s} s left)").format(s=int(round(eta_s))) if eta_s is not None else "")

    def _onCompleted(self, run) -> None:
        for button, text in self._actionButtons().items():
            button.text = text
        if run.status == "done":
            self.ui.progressBar.value = 100
            self.ui.statusLabel.text = getattr(run, "metricText", "") or _("Done.")
            if getattr(run, "outputSegmentation", None) is not None and hasattr(run, "model"):
                self.ui.multiOutputSelector.setCurrentNode(run.outputSegmentation)
            elif getattr(run, "outputTransform", None) is not None:
                self.logic.showFused(run.fixedVolume, run.outputVolume, self.ui.opacitySlider.value)
        elif run.status == "cancelled":
            self.ui.statusLabel.text = _("Cancelled.")
        else:
            self.ui.statusLabel.text = _("Failed.")
            slicer.util.errorDisplay(run.errorText)

    def onRegister(self) -> None:
        fixed, moving = self.ui.fixedVolumeSelector.currentNode(), self.ui.movingVolumeSelector.currentNode()
        kind, apply = self.ui.typeComboBox.currentText, self.ui.applyTransformCheckBox.checked
        self._toggle(self.ui.registerButton, lambda **cb: self.logic.register(fixed, moving, kind, applyToMoving=apply, **cb),
                     _("Registration could not start."))

    def currentMultiModel(self):
        i = self.ui.multiModelComboBox.currentIndex
        return self._multiModels[i] if 0 <= i < len(self._multiModels) else None

    def onMultiModelChanged(self, index) -> None:
        from MedAISlicerLib.models import input_selectors  # the same decision MedAISegment's widget applies

        model = self.currentMultiModel()
        try:
            slots = input_selectors(model, MULTI_INPUT_POOL)
        except ValueError as e:
            self.ui.statusLabel.text = str(e)
            slots = input_selectors(None, MULTI_INPUT_POOL)
        for label, selector, slot in zip(self._multiInputLabels, self._multiInputSelectors, slots):
            label.visible = selector.visible = slot.visible
            label.text, selector.toolTip = slot.label, slot.toolTip
        self.ui.multiSegmentButton.enabled = model is not None

    def onMultiSegment(self) -> None:
        model = self.currentMultiModel()
        if model is None and not self._running():
            return
        inputs = [s.currentNode() for s in self._multiInputSelectors[:model.input_count]] if model else []
        output, aligned = self.ui.multiOutputSelector.currentNode(), self.ui.multiAssumeAlignedCheckBox.checked
        self._toggle(self.ui.multiSegmentButton, lambda **cb: self.logic.segmentMultiInput(
            inputs, output, model.id, assumeAligned=aligned, **cb), _("Segmentation could not start."))

    def onOpacity(self, value) -> None:
        self.logic.setForegroundOpacity(value)

    def onShowFused(self) -> None:
        self.logic.showFused(self.ui.fixedVolumeSelector.currentNode(), self.ui.movingVolumeSelector.currentNode(),
                             self.ui.opacitySlider.value)

    def onCheckerboard(self) -> None:
        fixed, moving = self.ui.fixedVolumeSelector.currentNode(), self.ui.movingVolumeSelector.currentNode()
        self._toggle(self.ui.checkerboardButton, lambda **cb: self.logic.checkerboard(fixed, moving, **cb),
                     _("Checkerboard could not start."))

    def onColourOverlay(self) -> None:
        self.logic.showColourOverlay(self.ui.fixedVolumeSelector.currentNode(),
                                     self.ui.movingVolumeSelector.currentNode(),
                                     self.ui.opacitySlider.value, self.ui.colourComboBox.currentText)

    def onEnsemble(self) -> None:
        inputs = [self.ui.ensembleInput0Selector.currentNode(), self.ui.ensembleInput1Selector.currentNode(),
                  self.ui.ensembleInput2Selector.currentNode()]
        method, text = self.ui.ensembleMethodComboBox.currentText, self.ui.weightsLineEdit.text

        def start(**callbacks):
            try:
                weights = [float(w) for w in text.replace(",", " ").split()] or None
            except ValueError:
                raise ValueError(_("Weights must be numbers, e.g. 1 2 1.")) from None
            return self.logic.ensemble(inputs, method, weights, **callbacks)

        self._toggle(self.ui.ensembleButton, start, _("Ensemble could not start."))


class MedAIFusionLogic(ScriptedLoadableModuleLogic):
    """Batch-usable: every method works without the widget; ``wait=True`` blocks until the end."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.enginePrefix = None  # tests point this at another command; None = medai in PythonSlicer
        self._colourTable = None

    def _go(self, run, wait):
        run.start()
        if wait:
            run.wait()
        return run

    def register(self, fixedVolume, movingVolume, transformType="rigid", fixedMask=None, movingMask=None,
                 applyToMoving=True, wait=False, **callbacks):
        """Register moving to fixed in a ``medai register`` process. Returns the run: ``outputTransform``
        (the moving volume is put under it when ``applyToMoving``), ``outputVolume`` (moving resampled on
        the fixed grid), ``report`` (metric before/after, transform matrix)."""
        from MedAISlicerLib.tasks.fusion import RegistrationRun

        run = RegistrationRun(fixedVolume, movingVolume, transformType, fixedMask, movingMask, applyToMoving,
                              enginePrefix=self.enginePrefix, **callbacks)
        return self._go(run, wait)

    def checkerboard(self, fixedVolume, movingVolume, squares=(8, 8, 1), wait=False, show=True, **callbacks):
        """Checkerboard of fixed and moving on the fixed grid, in a ``medai fuse`` process; shown as
        the slice views' background when it is loaded (``show``)."""
        from MedAISlicerLib.tasks.fusion import FuseRun

        return self._go(FuseRun("checkerboard", fixedVolume, movingVolume, squares=squares, show=show,
                                enginePrefix=self.enginePrefix, **callbacks), wait)

    def blend(self, fixedVolume, movingVolume, alpha=0.5, wait=False, **callbacks):
        from MedAISlicerLib.tasks.fusion import FuseRun

        return self._go(FuseRun("blend", fixedVolume, movingVolume, alpha=alpha, enginePrefix=self.enginePrefix,
                                **callbacks), wait)

    def ensemble(self, inputVolumes, method="mean", weights=None, uncertainty="entropy", wait=False, **callbacks):
        from MedAISlicerLib.tasks.fusion import EnsembleRun

        return self._go(EnsembleRun(inputVolumes, method, weights, uncertainty, enginePrefix=self.enginePrefix,
                                    **callbacks), wait)

    def multiInputModels(self, catalogue=None) -> list:
        """Catalogue segmentation models that take more than one input volume."""
        from MedAISlicerLib.models import load_models

        return [m for m in load_models(catalogue) if m.input_count > 1]

    def segmentMultiInput(self, inputVolumes, outputSegmentation, modelId, assumeAligned=False, wait=False,
                          catalogue=None, **options):
        """Run a multi-input model: MedAISegment's logic (same run, same engine call), so inputs on
        other grids are aligned to the FIRST input by the engine and the result lies on its grid.
        ``options`` go to ``MedAISegmentLogic.process`` (structures, device, callbacks, overwrite ...)."""
        from MedAISegment import MedAISegmentLogic

        logic = MedAISegmentLogic()
        logic.enginePrefix = self.enginePrefix
        return logic.process(list(inputVolumes), outputSegmentation, modelId, assumeAligned=assumeAligned,
                             wait=wait, catalogue=catalogue, **options)

    # --- display (no computation: slice view layers and colour tables) ------------------------
    def showFused(self, background, foreground, opacity=0.5) -> None:
        if background is None or foreground is None:
            raise ValueError("Choose the two volumes to show.")
        slicer.util.setSliceViewerLayers(background=background, foreground=foreground,
                                         foregroundOpacity=float(opacity))

    def setForegroundOpacity(self, opacity) -> None:
        slicer.util.setSliceViewerLayers(foregroundOpacity=float(opacity))

    def showColourOverlay(self, background, overlay, opacity=0.5, colourTable="Warm1") -> None:
        """Show ``overlay`` in colour over ``background`` (its display node gets a colour table)."""
        from MedAISlicerLib.nodes import show_colour_overlay  # shared with the MedAI module's heat-maps

        if background is None:
            raise ValueError("Choose the two volumes to show.")
        self._colourTable = show_colour_overlay(background, overlay, opacity, colourTable, self._colourTable)


class MedAIFusionTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_logic_without_gui()
        self.test_register_sample_pair()

    def test_logic_without_gui(self):
        """The logic works without a widget (batch use) and has its parameter node."""
        logic = MedAIFusionLogic()
        self.assertIsNotNone(logic.getParameterNode())

    def test_register_sample_pair(self):
        """Register a copy of a volume that was moved by a known shift: the transform undoes it."""
        import numpy as np

        array = np.zeros((20, 40, 40), np.float32)
        array[5:15, 10:30, 12:28] = 100
        array[8:12, 15:20, 15:25] = 200
        ijk = np.diag([2.0, 2.0, 3.0, 1.0])
        fixed = slicer.util.addVolumeFromArray(array, ijk, "fixed")
        moved = ijk.copy()
        moved[:3, 3] = (4.0, -2.0, 3.0)
        moving = slicer.util.addVolumeFromArray(array, moved, "moving")
        run = MedAIFusionLogic().register(fixed, moving, "rigid", applyToMoving=True, wait=True)
        self.assertEqual(run.status, "done", run.errorText)
        found = np.array(run.report["fixed_to_moving_ras"])
        self.assertTrue(np.allclose(found[:3, 3], (4.0, -2.0, 3.0), atol=0.5), found)
        logging.info(run.metricText)
