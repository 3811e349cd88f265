""""Detect lesions" logic: volume node -> ``medai detect`` process -> one markups ROI node per box,
named with its label and score.

Translation only: the volume is written for the engine (worker thread), the engine detects and
writes ``boxes.json`` (boxes in RAS mm on the input's own grid, see
``MedAILib.tasks.detection.boxes``), and each box becomes a ``vtkMRMLMarkupsROINode`` whose centre
and size are the box's RAS centre and size. The score, label, model and voxel range are kept as
node attributes (``MedAI.detection.*``). MRML is touched on the caller's thread only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import slicer

from MedAISlicerLib import nodes
from MedAISlicerLib.runs import EngineRun
from MedAISlicerLib.tasks import check_device

DEFAULT_MODEL = "lidc_nodule_retinanet_tiny"


def roi_name(box: dict) -> str:
    """The node name of a box: its label and score ("nodule 0.87")."""
    return f"{box.get('label', 'lesion')} {float(box['score']):.2f}"


def roi_nodes_from_boxes(boxes: list, referenceNode=None, modelId: str = "") -> list:
    """One ROI markups node per box dict (``center_ras_mm``, ``size_ras_mm``, ``score``, ``label``),
    highest score first; placed next to ``referenceNode`` in the subject hierarchy when given."""
    made = []
    try:
        for rank, box in enumerate(sorted(boxes, key=lambda b: -float(b["score"]))):
            roi = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", roi_name(box))
            made.append(roi)
            centre, size = [float(v) for v in box["center_ras_mm"]], [float(v) for v in box["size_ras_mm"]]
            # vtkMRMLMarkupsROINode::SetCenter / SetSize (x, y, z) (Slicer v5.12.3 vtkMRMLMarkupsROINode.h);
            # RAS mm: the input volume is not transformed (checked when the run starts).
            roi.SetCenter(centre[0], centre[1], centre[2])
            roi.SetSize(size[0], size[1], size[2])
            roi.SetDescription(f"MedAI detection {rank + 1}: {box.get('label', 'lesion')}, score {float(box['score']):.4f}"
                               + (f", model {modelId}" if modelId else ""))
            roi.SetAttribute("MedAI.detection.score", f"{float(box['score']):.6f}")
            roi.SetAttribute("MedAI.detection.label", str(box.get("label", "lesion")))
            roi.SetAttribute("MedAI.detection.rank", str(rank + 1))
            if modelId:
                roi.SetAttribute("MedAI.detection.model", modelId)
            if "voxel_min" in box and "voxel_max" in box:
                roi.SetAttribute("MedAI.detection.voxels", json.dumps([box["voxel_min"], box["voxel_max"]]))
            if referenceNode is not None:
                nodes.place_next_to(roi, referenceNode)
    except Exception:
        for roi in made:
            slicer.mrmlScene.RemoveNode(roi)
        raise
    return made


class DetectRun(EngineRun):
    """One detection. After the end: ``status`` "done"/"failed"/"cancelled"; ``boxes`` (dicts from
    the engine's boxes.json, highest score first); ``roiNodes`` (one per box); ``resultText``;
    ``errorText``."""

    subcommand = "detect"
    tempKey = "MedAIDetect"
    runName = "Detection"

    def __init__(self, inputVolume, modelId: str = DEFAULT_MODEL, minScore: Optional[float] = None,
                 maxBoxes: Optional[int] = 10, device: str = "auto", **kwargs):
        super().__init__(**kwargs)
        if inputVolume is None:
            raise ValueError("Choose an input volume.")
        if not modelId:
            raise ValueError("Choose a detection model.")
        device = check_device(device)
        if minScore is not None and not 0.0 <= float(minScore) <= 1.0:
            raise ValueError(f"The minimum score must be between 0 and 1, not {minScore}.")
        if maxBoxes is not None and int(maxBoxes) < 1:
            raise ValueError(f"The number of boxes must be at least 1, not {maxBoxes}.")
        nodes.check_not_transformed(inputVolume)
        self.inputVolume, self.modelId, self.device = inputVolume, str(modelId), device
        self.minScore, self.maxBoxes = minScore, maxBoxes
        self.boxes: list = []
        self.roiNodes: list = []
        self.resultText = ""

    def _arguments(self):
        volumes = {"input": nodes.volume_view_from_node(self.inputVolume)}
        paths, write_inputs = self._inputFiles(volumes)
        self.resultPath = Path(self.tempDir) / "boxes.json"
        args = [paths["input"], "-o", self.resultPath, "--model", self.modelId, "--progress", "json",
                "--device", self.device]
        if self.minScore is not None:
            args += ["--min-score", f"{float(self.minScore):g}"]
        if self.maxBoxes is not None:
            args += ["--max-boxes", str(int(self.maxBoxes))]
        return args, write_inputs

    def _import(self, result) -> None:
        data = json.loads(Path(self.resultPath).read_text(encoding="utf-8"))
        self.boxes = sorted(data.get("boxes", []), key=lambda b: -float(b["score"]))
        self.roiNodes = roi_nodes_from_boxes(self.boxes, self.inputVolume, self.modelId)
        if not self.boxes:
            self.resultText = "No box above the score threshold."
        else:
            self.resultText = f"{len(self.boxes)} box(es): " + ", ".join(roi_name(b) for b in self.boxes[:5]) + \
                ("..." if len(self.boxes) > 5 else "")

    def _removeCreatedOutputs(self) -> None:
        super()._removeCreatedOutputs()
        for roi in self.roiNodes:
            slicer.mrmlScene.RemoveNode(roi)
        self.roiNodes = []


def detection_models() -> list:
    """(id, title) of the catalogue's detection models, for the model combo box."""
    from MedAILib.models.catalogue import load_catalogue

    return [(e.id, e.title) for e in load_catalogue() if e.task == "detection"]


def detect(inputVolume, modelId: str = DEFAULT_MODEL, minScore: Optional[float] = None, maxBoxes: Optional[int] = 10,
           device: str = "auto", wait: bool = False, **kwargs) -> DetectRun:
    """Start a detection; ``wait=True`` blocks until it ends (Slicer batch scripts, tests)."""
    run = DetectRun(inputVolume, modelId, minScore, maxBoxes, device, **kwargs).start()
    if wait:
        run.wait()
    return run
