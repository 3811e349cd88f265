""""Convert modality" logic: scalar volume node -> ``medai synthesize`` process -> new scalar volume node.

The engine does all the work in its own process (GUI stays live, Cancel kills it). This file only
writes the input (and the optional reference) to a temporary folder (in a worker thread), follows the JSON events
(progress, the out-of-distribution ``warning``, ``metrics``) and loads the result onto a volume
node. MRML is touched on the caller's thread only (inside ``poll()``).
"""

from __future__ import annotations

from typing import Callable, Optional

from MedAISlicerLib import nodes
from MedAISlicerLib.runs import EngineRun  # the shared run life cycle (start/poll/wait/cancel, temp folder)
from MedAISlicerLib.tasks import check_device, check_volume_run

DEFAULT_MODEL = "t2_to_flair_gan"


class SynthesisRun(EngineRun):
    """One conversion. After the end: ``status`` is "done", "failed" or "cancelled";
    ``outputVolume`` is the filled node ("done" only); ``oodWarning`` is the engine's
    out-of-distribution message ("" when the input looked like the training data); ``metrics``
    holds MAE/PSNR/SSIM when a reference volume was given; ``errorText`` says what went wrong.
    """

    subcommand = "synthesize"
    tempKey = "MedAISynthesis"
    runName = "Conversion"

    def __init__(self, inputVolume, outputVolume=None, modelId: str = DEFAULT_MODEL, referenceVolume=None,
                 device: str = "auto", progressCallback: Optional[Callable] = None,
                 logCallback: Optional[Callable] = None, completedCallback: Optional[Callable] = None,
                 enginePrefix=None):
        super().__init__(progressCallback, logCallback, completedCallback, enginePrefix)
        check_volume_run(inputVolume, outputVolume, referenceVolume, "reference")
        device = check_device(device)
        self.inputVolume, self.outputVolume, self.referenceVolume = inputVolume, outputVolume, referenceVolume
        self.modelId, self.device = modelId, device
        self.oodWarning = ""
        self.metrics: dict = {}
        self.units = ""
        self._caseError = ""

    def _arguments(self):
        # Views only here; the files are written in the worker thread before the engine starts.
        volumes = {"input": nodes.volume_view_from_node(self.inputVolume)}
        if self.referenceVolume is not None:
            volumes["reference"] = nodes.volume_view_from_node(self.referenceVolume)
        paths, write_inputs = self._inputFiles(volumes)
        self.resultPath = f"{self.tempDir}/result.nrrd"
        args = [paths["input"], "-o", self.resultPath, "--model", self.modelId, "--progress", "json",
                "--device", self.device]
        if self.referenceVolume is not None:
            args += ["--reference", paths["reference"]]
        return args, write_inputs

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

    def _failureText(self, result) -> str:  # the engine's own words for this case beat the generic error
        return self._caseError or result.error_text()

    def _import(self, result) -> None:
        self._importResult(result.outputs[0] if result.outputs else self.resultPath)

    def _importResult(self, path):
        # Slicer's own reader; the engine writes the result on the input's grid.
        name = f"{self.inputVolume.GetName()} {self.modelId}"
        if self.outputVolume is None:  # "create new": made only now, so cancel/failure leave nothing
            self._newOutput("outputVolume", nodes.load_volume_file(path, name))
        else:
            nodes.load_volume_file(path, name, into=self.outputVolume)
        # Units travel with the node so a person sees what the numbers mean.
        self.outputVolume.SetAttribute("MedAI.synthesis.model", self.modelId)
        self.outputVolume.SetAttribute("MedAI.synthesis.units", self.units)
        self.outputVolume.SetAttribute("MedAI.synthesis.oodWarning", self.oodWarning)
        nodes.place_next_to(self.outputVolume, self.inputVolume)


def synthesis_models() -> list:
    """(id, title) of the catalogue's modality-conversion models, for the model combo box."""
    from MedAILib.models.catalogue import load_catalogue

    return [(e.id, e.title) for e in load_catalogue() if e.task == "synthesis"]


def synthesize(inputVolume, outputVolume=None, modelId: str = DEFAULT_MODEL, referenceVolume=None,
               device: str = "auto", wait: bool = False, **callbacks) -> SynthesisRun:
    """Start a conversion; with ``wait=True`` block until it ends (Slicer batch scripts, tests)."""
    run = SynthesisRun(inputVolume, outputVolume, modelId, referenceVolume, device, **callbacks).start()
    if wait:
        run.wait()
    return run
