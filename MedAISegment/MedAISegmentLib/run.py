"""One segmentation run: volume nodes -> temporary files -> ``medai segment`` process -> segmentation node.

The engine does all the work in its own process; this file only moves data between MRML nodes and
files and follows progress. MRML is touched on the caller's thread only (inside ``poll()``).
"""

from __future__ import annotations

import logging
from typing import Callable, Optional

import slicer

from MedAISlicerLib import nodes
from MedAISlicerLib.process import EngineProcess, engine_command, engine_environment

DEVICES = ("auto", "cuda", "cpu")


class SegmentationRun:
    """Created by ``MedAISegmentLogic.process``; ``poll()``/``wait()`` drive it, ``cancel()`` stops it.

    After the end: ``status`` is "done", "failed" or "cancelled"; ``outputSegmentation`` is the
    filled node ("done" only); ``errorText`` says what went wrong.
    """

    def __init__(self, inputVolumes, outputSegmentation, model, structures=None, device="auto", fast=False,
                 overwrite=False, progressCallback: Optional[Callable] = None,
                 logCallback: Optional[Callable] = None, completedCallback: Optional[Callable] = None,
                 enginePrefix=None, assumeAligned=False):
        if device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, not {device!r}")
        given = [v for v in inputVolumes if v is not None]
        if not given:
            raise ValueError("no input image was given: choose the input volume(s) the model needs.")
        if len(given) != model.input_count or len(inputVolumes) != model.input_count:
            # same wording as the engine's validation (MedAILib.validation.check_inputs)
            n = model.input_count
            wanted = ", ".join(name for name, _ in model.inputs)
            raise ValueError(f"'{model.title}' needs {n} input image{'s' if n != 1 else ''} ({wanted}), but "
                             f"{len(given)} {'was' if len(given) == 1 else 'were'} given.")
        for v in inputVolumes:
            nodes.check_not_transformed(v)
        if (outputSegmentation is not None and outputSegmentation.GetSegmentation().GetNumberOfSegments() > 0
                and not overwrite):
            raise ValueError(f"'{outputSegmentation.GetName()}' already has segments. Choose "
                             "'Create new segmentation' as output, or allow overwriting.")
        known = {l.name for l in model.labels}
        unknown = [s for s in (structures or []) if s not in known]
        if unknown:
            raise ValueError(f"'{model.title}' has no structure(s) {', '.join(unknown)}.")
        self.inputVolumes = list(inputVolumes)
        self.outputSegmentation = outputSegmentation
        self.model = model
        self.structures = list(structures or [])
        self.device, self.fast, self.overwrite = device, bool(fast), bool(overwrite)
        self.assumeAligned = bool(assumeAligned)
        self.progressCallback, self.logCallback, self.completedCallback = progressCallback, logCallback, completedCallback
        self.enginePrefix = enginePrefix
        self.status = "created"
        self.errorText = ""
        self.tempDir = None
        self.process: Optional[EngineProcess] = None
        self._createdOutput = False

    # --- running --------------------------------------------------------------------------------
    def start(self) -> "SegmentationRun":
        self.tempDir = slicer.util.tempDirectory("MedAISegment")
        try:
            # The caller's thread only takes views of the voxels (O(1)); the input files are written in
            # a worker thread that then starts the engine (a CT took 0.3-1.7 s to write on Slicer's
            # main thread). See nodes.volume_view_from_node for why a view and not a copy.
            views = [nodes.volume_view_from_node(v) for v in self.inputVolumes]
            inputs = [f"{self.tempDir}/input{n}.nrrd" for n in range(len(views))]
            folder = self.tempDir

            def write_inputs():
                for n, v in enumerate(views):
                    nodes.write_volume(v, folder, f"input{n}")

            self.resultPath = f"{self.tempDir}/result.seg.nrrd"
            args = [*inputs, "-o", self.resultPath, "--model", self.model.id, "--progress", "json",
                    "--device", self.device]
            if self.fast:
                args.append("--fast")
            if self.assumeAligned and len(inputs) > 1:
                args.append("--assume-aligned")
            if self.structures:
                args += ["--structures", ",".join(self.structures)]
            env = engine_environment(slicer.util.startupEnvironment())
            self.process = EngineProcess(engine_command("segment", args, self.enginePrefix), env=env,
                                         on_progress=self._onProgress, on_log=self._log,
                                         on_finished=self._onFinished, cleanup_dirs=[self.tempDir],
                                         prepare=write_inputs)
            self._log("Running: " + " ".join(self.process.command))
            self.process.start()
        except Exception:
            import shutil

            shutil.rmtree(self.tempDir, ignore_errors=True)
            raise
        self.status = "running"
        return self

    def poll(self) -> bool:
        """Deliver progress and, at the end, import the result. True while still running."""
        return self.process is not None and self.process.poll()

    def wait(self, timeout=None) -> "SegmentationRun":
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

    def _onFinished(self, result):
        try:
            if result.cancelled:
                self.status, self.errorText = "cancelled", "Cancelled."
            elif not result.ok:
                self.status, self.errorText = "failed", result.error_text()
            else:
                self._importResult(result.outputs[0] if result.outputs else self.resultPath)
                self.status = "done"
        except Exception as e:  # a failed import must not leave a half-filled new node
            logging.exception("importing the segmentation failed")
            if self._createdOutput:
                slicer.mrmlScene.RemoveNode(self.outputSegmentation)
                self.outputSegmentation = None
            self.status, self.errorText = "failed", f"Could not load the result: {e}"
        self._log(f"Segmentation {self.status}." + (f" {self.errorText}" if self.status == "failed" else ""))
        if self.completedCallback:
            self.completedCallback(self)

    def _importResult(self, path):
        reference = self.inputVolumes[0]
        if self.outputSegmentation is None:  # "create new": made only now, so cancel/failure leave nothing
            name = f"{reference.GetName()} {self.model.title}"
            self.outputSegmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
            self._createdOutput = True
        nodes.import_segmentation_file(path, self.outputSegmentation, reference, labels=self.model.labels,
                                       replace=self.overwrite)
        nodes.place_next_to(self.outputSegmentation, reference)
