""""Convert modality" logic: scalar volume node -> ``medai synthesize`` process -> new scalar volume node.

The engine does all the work in its own process (GUI stays live, Cancel kills it). This file only
writes the input (and the optional reference) to a temporary folder, follows the JSON events
(progress, the out-of-distribution ``warning``, ``metrics``) and loads the result onto a volume
node. MRML is touched on the caller's thread only (inside ``poll()``).
"""

from __future__ import annotations

import logging
import shutil
from typing import Callable, Optional

import slicer

from MedAISlicerLib import nodes
from MedAISlicerLib.process import EngineProcess, engine_command, engine_environment

DEVICES = ("auto", "cuda", "cpu")
DEFAULT_MODEL = "t2_to_flair_gan"


class SynthesisRun:
    """One conversion. After the end: ``status`` is "done", "failed" or "cancelled";
    ``outputVolume`` is the filled node ("done" only); ``oodWarning`` is the engine's
    out-of-distribution message ("" when the input looked like the training data); ``metrics``
    holds MAE/PSNR/SSIM when a reference volume was given; ``errorText`` says what went wrong.
    """

    def __init__(self, inputVolume, outputVolume=None, modelId: str = DEFAULT_MODEL, referenceVolume=None,
                 device: str = "auto", progressCallback: Optional[Callable] = None,
                 logCallback: Optional[Callable] = None, completedCallback: Optional[Callable] = None,
                 enginePrefix=None):
        if inputVolume is None:
            raise ValueError("Choose an input volume.")
        if device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, not {device!r}")
        nodes.check_not_transformed(inputVolume)
        if referenceVolume is not None:
            nodes.check_not_transformed(referenceVolume)
        if outputVolume is not None and outputVolume in (inputVolume, referenceVolume):
            raise ValueError("The output volume must differ from the input and reference volumes.")
        self.inputVolume, self.outputVolume, self.referenceVolume = inputVolume, outputVolume, referenceVolume
        self.modelId, self.device = modelId, device
        self.progressCallback, self.logCallback, self.completedCallback = progressCallback, logCallback, completedCallback
        self.enginePrefix = enginePrefix
        self.status = "created"
        self.errorText = ""
        self.oodWarning = ""
        self.metrics: dict = {}
        self.units = ""
        self.tempDir = None
        self.process: Optional[EngineProcess] = None
        self._caseError = ""

    # --- running --------------------------------------------------------------------------------
    def start(self) -> "SynthesisRun":
        self.tempDir = slicer.util.tempDirectory("MedAISynthesis")
        try:
            source = nodes.write_input_volume(self.inputVolume, self.tempDir, "input")
            self.resultPath = f"{self.tempDir}/result.nrrd"
            args = [source, "-o", self.resultPath, "--model", self.modelId, "--progress", "json",
                    "--device", self.device]
            if self.referenceVolume is not None:
                args += ["--reference", nodes.write_input_volume(self.referenceVolume, self.tempDir, "reference")]
            env = engine_environment(slicer.util.startupEnvironment())
            self.process = EngineProcess(engine_command("synthesize", args, self.enginePrefix), env=env,
                                         on_progress=self._onProgress, on_log=self._log, on_event=self._onEvent,
                                         on_finished=self._onFinished, cleanup_dirs=[self.tempDir])
            self._log("Running: " + " ".join(self.process.command))
            self.process.start()
        except Exception:
            shutil.rmtree(self.tempDir, ignore_errors=True)
            raise
        self.status = "running"
        return self

    def poll(self) -> bool:
        return self.process is not None and self.process.poll()

    def wait(self, timeout=None) -> "SynthesisRun":
        self.process.wait(timeout=timeout)
        return self

    def cancel(self) -> None:
        if self.process is not None:
            self.process.cancel()

    @property
    def running(self) -> bool:
        return self.status == "running"

    # --- callbacks (caller's thread) -------------------------------------------------------------
    def _log(self, text):
        logging.info(text)
        if self.logCallback:
            self.logCallback(text)

    def _onProgress(self, fraction, message, eta_s):
        if self.progressCallback:
            self.progressCallback(fraction, message, eta_s)

    def _onEvent(self, event):
        kind = event.get("event")
        if kind == "warning" and event.get("kind") == "out_of_distribution":
            self.oodWarning = event.get("message", "")
            self._log("WARNING: " + self.oodWarning)
        elif kind == "metrics":
            self.metrics = {k: float(event[k]) for k in ("mae", "psnr", "ssim") if k in event}
        elif kind == "result":
            self.units = event.get("units", "")
        elif kind == "case_error":
            self._caseError = event.get("message", "") + (f"\nWhat to do: {event['hint']}" if event.get("hint") else "")

    def _onFinished(self, result):
        created = False
        try:
            if result.cancelled:
                self.status, self.errorText = "cancelled", "Cancelled."
            elif not result.ok:
                self.status, self.errorText = "failed", self._caseError or result.error_text()
            else:
                created = self.outputVolume is None
                self._importResult(result.outputs[0] if result.outputs else self.resultPath)
                self.status = "done"
        except Exception as e:  # a failed import must not leave a half-filled new node
            logging.exception("importing the converted volume failed")
            if created and self.outputVolume is not None:
                slicer.mrmlScene.RemoveNode(self.outputVolume)
                self.outputVolume = None
            self.status, self.errorText = "failed", f"Could not load the result: {e}"
        self._log(f"Conversion {self.status}." + (f" {self.errorText}" if self.status == "failed" else ""))
        if self.completedCallback:
            self.completedCallback(self)

    def _importResult(self, path):
        from MedAILib.io import read_image

        result = read_image(path)
        reference = nodes.volume_from_node(self.inputVolume)
        if not result.same_grid(reference, atol=1e-3):
            raise ValueError(f"the result is not on the grid of '{self.inputVolume.GetName()}'")
        if self.outputVolume is None:  # "create new": made only now, so cancel/failure leave nothing
            name = f"{self.inputVolume.GetName()} {self.modelId}"
            self.outputVolume = slicer.util.addVolumeFromArray(result.array, result.ijk_to_ras, name,
                                                               "vtkMRMLScalarVolumeNode")
        else:
            slicer.util.updateVolumeFromArray(self.outputVolume, result.array)
            self.outputVolume.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(result.ijk_to_ras))
        # Units travel with the node so a person sees what the numbers mean.
        self.outputVolume.SetAttribute("MedAI.synthesis.model", self.modelId)
        self.outputVolume.SetAttribute("MedAI.synthesis.units", self.units)
        self.outputVolume.SetAttribute("MedAI.synthesis.oodWarning", self.oodWarning)
        nodes.place_next_to(self.outputVolume, self.inputVolume)


def synthesis_models() -> list:
    """(id, title) of the catalogue's modality-conversion models, for the model combo box."""
    from MedAILib.bundles.catalogue import load_catalogue

    return [(e.id, e.title) for e in load_catalogue() if e.task == "synthesis"]


def synthesize(inputVolume, outputVolume=None, modelId: str = DEFAULT_MODEL, referenceVolume=None,
               device: str = "auto", wait: bool = False, **callbacks) -> SynthesisRun:
    """Start a conversion; with ``wait=True`` block until it ends (Slicer batch scripts, tests)."""
    run = SynthesisRun(inputVolume, outputVolume, modelId, referenceVolume, device, **callbacks).start()
    if wait:
        run.wait()
    return run
