"""One segmentation run: volume nodes -> temporary files -> ``medai segment`` process -> segmentation node.

The engine does all the work in its own process; this file only moves data between MRML nodes and
files and follows progress. MRML is touched on the caller's thread only (inside ``poll()``).
"""

from __future__ import annotations

from typing import Callable, Optional

from MedAISlicerLib import nodes
from MedAISlicerLib.runs import EngineRun  # the shared run life cycle (start/poll/wait/cancel, temp folder)
from MedAISlicerLib.tasks import check_device


class SegmentationRun(EngineRun):
    """Created by ``MedAISegmentLogic.process``; ``poll()``/``wait()`` drive it, ``cancel()`` stops it.

    After the end: ``status`` is "done", "failed" or "cancelled"; ``outputSegmentation`` is the
    filled node ("done" only); ``errorText`` says what went wrong.

    What the engine decides is not decided again here: the device name, the structure names
    (matched by the engine's own rule) and everything about the inputs but their count (checked
    with the catalogue's input spec before anything starts, since a wrong count would be read by
    the engine's batch runner as several cases); segment names, colours and terminology come from
    the engine's file, read with Slicer's own reader.
    """

    subcommand = "segment"
    tempKey = "MedAISegment"
    runName = "Segmentation"

    def __init__(self, inputVolumes, outputSegmentation, model, structures=None, device="auto", fast=False,
                 overwrite=False, progressCallback: Optional[Callable] = None,
                 logCallback: Optional[Callable] = None, completedCallback: Optional[Callable] = None,
                 enginePrefix=None, assumeAligned=False, statistics=True, uncertainty=False):
        super().__init__(progressCallback, logCallback, completedCallback, enginePrefix)
        device = check_device(device)
        model.check_input_count([v for v in inputVolumes if v is not None])
        for v in inputVolumes:
            nodes.check_not_transformed(v)
        if (outputSegmentation is not None and outputSegmentation.GetSegmentation().GetNumberOfSegments() > 0
                and not overwrite):
            raise ValueError(f"'{outputSegmentation.GetName()}' already has segments. Choose "
                             "'Create new segmentation' as output, or allow overwriting.")
        self.inputVolumes = list(inputVolumes)
        self.outputSegmentation = outputSegmentation
        self.model = model
        self.structures = list(structures or [])
        self.device, self.fast, self.overwrite = device, bool(fast), bool(overwrite)
        self.assumeAligned = bool(assumeAligned)
        # statistics: a table node of the engine's per-segment statistics (volume, intensity, box);
        # uncertainty: test-time augmentation, its entropy volume shown over the input, and a
        # per-segment confidence column in the table.
        self.statistics, self.uncertainty = bool(statistics), bool(uncertainty)
        self.statisticsTable = None
        self.uncertaintyVolume = None

    def _arguments(self):
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
        self.reportPath = f"{self.tempDir}/report.json"
        if self.statistics or self.uncertainty:
            args += ["--report", self.reportPath]
        if self.uncertainty:
            args.append("--tta")
        return args, write_inputs

    def _import(self, result) -> None:
        self._importResult(result.outputs[0] if result.outputs else self.resultPath)
        row = nodes.read_report_row(self.reportPath) if (self.statistics or self.uncertainty) else None
        if row is None:
            return
        name = self.outputSegmentation.GetName()
        if self.statistics and row.get("statistics"):
            self._newOutput("statisticsTable", nodes.statistics_table(row["statistics"], row.get("segment_confidence"),
                                                                      f"{name} statistics"))
        if self.uncertainty and row.get("uncertainty"):
            volume = self._newOutput("uncertaintyVolume", nodes.load_volume_file(row["uncertainty"], f"{name} uncertainty"))
            nodes.show_colour_overlay(self.inputVolumes[0], volume, opacity=0.5, colourTable="Warm1", lowerThreshold=0.05)

    def _importResult(self, path):
        reference = self.inputVolumes[0]
        name = f"{reference.GetName()} {self.model.title}"
        if self.outputSegmentation is None:  # "create new": made only now, so cancel/failure leave nothing
            self._newOutput("outputSegmentation", nodes.load_segmentation_file(path, name, reference))
        else:
            nodes.load_segmentation_file(path, name, reference, into=self.outputSegmentation, replace=self.overwrite)
        nodes.place_next_to(self.outputSegmentation, reference)
