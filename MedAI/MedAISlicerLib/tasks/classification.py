""""Classify" logic: volume node (+ optional segment or ROI) -> ``medai classify`` process -> a table
node (class, probability), a result text and an optional heat-map volume shown in colour.

Translation only: the segment is exported to a 0/1 labelmap on the input volume's grid and passed
as ``--mask`` (for the adrenal model the segment *is* what is classified); an ROI node becomes
``--roi`` (its RAS bounds). The engine, in its own process, does every computation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import slicer

from MedAISlicerLib import nodes
from MedAISlicerLib.runs import EngineRun
from MedAISlicerLib.tasks import check_device

EXPLAIN_METHODS = ("gradcam", "occlusion")
DEFAULT_MODEL = "adrenal_classifier"


class ClassifyRun(EngineRun):
    """One classification. After the end: ``status`` "done"/"failed"/"cancelled"; ``classNames``,
    ``probabilities``, ``predicted``, ``resultText``; ``tableNode`` (filled); ``heatmapVolume``
    (when ``explain`` was asked); ``warnings`` from the engine; ``errorText``."""

    subcommand = "classify"
    tempKey = "MedAIClassify"

    def __init__(self, inputVolume, modelId: str = DEFAULT_MODEL, segmentationNode=None, segmentId=None,
                 roiNode=None, explain: Optional[str] = "gradcam", tableNode=None, device: str = "auto",
                 showHeatmap: bool = True, **kwargs):
        super().__init__(**kwargs)
        if inputVolume is None:
            raise ValueError("Choose an input volume.")
        device = check_device(device)
        if explain not in (None, "") + EXPLAIN_METHODS:
            raise ValueError(f"explanation must be one of {EXPLAIN_METHODS} or None, not {explain!r}")
        if segmentationNode is not None and not segmentId:
            raise ValueError("Choose a segment of the segmentation.")
        if segmentationNode is not None and roiNode is not None:
            raise ValueError("Choose either a segment or an ROI, not both.")
        nodes.check_not_transformed(inputVolume)
        self.inputVolume, self.modelId, self.device = inputVolume, modelId, device
        self.segmentationNode, self.segmentId, self.roiNode = segmentationNode, segmentId, roiNode
        self.explain = explain or None
        self.tableNode, self.showHeatmap = tableNode, showHeatmap
        self.heatmapVolume = None
        self.classNames, self.probabilities, self.predicted = [], [], ""
        self.warnings: list = []
        self.resultText = ""
        self._case: dict = {}

    def _arguments(self):
        # The segment is exported to a labelmap here (MRML, caller's thread); only the file writes
        # happen in the worker thread before the engine starts.
        folder = Path(self.tempDir)
        volumes = {"input": nodes.volume_view_from_node(self.inputVolume)}
        if self.segmentationNode is not None:
            volumes["mask"] = nodes.segment_mask_volume(self.segmentationNode, self.segmentId, self.inputVolume)
        paths, write_inputs = self._inputFiles(volumes)
        args = [paths["input"], "--model", self.modelId,
                "--progress", "json", "--device", self.device, "--report", folder / "report.json"]
        if self.segmentationNode is not None:
            args += ["--mask", paths["mask"]]
        if self.roiNode is not None:
            args += ["--roi", ",".join(f"{v:.4f}" for v in nodes.roi_bounds(self.roiNode))]
        if self.explain:
            args += ["--explain", folder / "heatmap.nrrd", "--explain-method", self.explain]
        return args, write_inputs

    def _onEvent(self, event) -> None:
        if event.get("event") == "case_done":
            self._case = event
            for w in event.get("warnings") or []:
                self._log("WARNING: " + w)

    def _import(self, result) -> None:
        case = self._case
        if not case:  # the report is the fallback when the event was missed
            case = nodes.read_report_row(Path(self.tempDir) / "report.json") or {}
        if case.get("status") != "ok":
            raise ValueError(case.get("error") or "the engine did not classify the input")
        self.classNames = list(case["class_names"])
        self.probabilities = [float(p) for p in case["probabilities"]]
        self.predicted = case["predicted"]
        self.warnings = list(case.get("warnings") or [])
        self._fillTable()
        self.resultText = f"{self.predicted} (probability {self.probabilities[case['predicted_index']]:.3f})\n" + \
            "\n".join(f"  {c}: {p:.3f}" for c, p in zip(self.classNames, self.probabilities))
        if self.warnings:
            self.resultText += "\nWarning: " + "\nWarning: ".join(self.warnings)
        if self.explain:
            self._importHeatmap(Path(self.tempDir) / "heatmap.nrrd")

    def _fillTable(self) -> None:
        if self.tableNode is None:
            self.tableNode = slicer.mrmlScene.AddNewNodeByClass(
                "vtkMRMLTableNode", f"{self.inputVolume.GetName()} {self.modelId} classes")
        table = self.tableNode
        table.RemoveAllColumns()
        for i, name in enumerate(("class", "probability")):
            table.AddColumn()
            table.RenameColumn(i, name)
        for name, p in zip(self.classNames, self.probabilities):
            row = table.AddEmptyRow()
            table.SetCellText(row, 0, name)
            table.SetCellText(row, 1, f"{p:.4f}")
        table.SetAttribute("MedAI.classification.model", self.modelId)
        table.SetAttribute("MedAI.classification.predicted", self.predicted)
        nodes.place_next_to(table, self.inputVolume)

    def _importHeatmap(self, path) -> None:
        # Slicer's own reader; the engine writes the heat-map on the input's grid.
        self.heatmapVolume = self._newOutput("heatmapVolume", nodes.load_volume_file(
            path, f"{self.inputVolume.GetName()} {self.explain} ({self.predicted})"))
        self.heatmapVolume.SetAttribute("MedAI.classification.explanation", self.explain)
        nodes.place_next_to(self.heatmapVolume, self.inputVolume)
        if self.showHeatmap:
            # the heat-map is 0..1 (engine); near-zero attribution is left undrawn
            nodes.show_colour_overlay(self.inputVolume, self.heatmapVolume, 0.4, "Rainbow", lowerThreshold=0.05)


def classification_models() -> list:
    """(id, title) of the catalogue's classification models, for the model combo box."""
    from MedAILib.models.catalogue import load_catalogue

    return [(e.id, e.title) for e in load_catalogue() if e.task == "classification"]


def classify(inputVolume, modelId: str = DEFAULT_MODEL, segmentationNode=None, segmentId=None, roiNode=None,
             explain: Optional[str] = "gradcam", tableNode=None, device: str = "auto", wait: bool = False,
             **kwargs) -> ClassifyRun:
    """Start a classification; ``wait=True`` blocks until it ends (Slicer batch scripts, tests)."""
    run = ClassifyRun(inputVolume, modelId, segmentationNode, segmentId, roiNode, explain, tableNode, device,
                      **kwargs).start()
    if wait:
        run.wait()
    return run
