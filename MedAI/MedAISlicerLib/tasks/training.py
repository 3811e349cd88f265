"""One training run from the scene: (volume, segmentation) node pairs -> files + MONAI datalist ->
``medai train segmentation`` in its own process -> a bundle added to the user catalogue.

Only translation happens here (nodes to files, events to callbacks); the engine plans, trains,
validates and registers. On the caller's thread: each segment is exported as a mask on its
volume's grid (MRML, like ``nodes.segment_mask_volume``) and the volume is taken as a view; a
worker thread then writes the NIfTI files and the datalist and starts the engine. Progress comes
from ``medai train --progress json`` (one event per epoch, with the validation Dice and the time
left); Cancel kills the process and leaves no bundle. At the end ``validationCurve`` holds
``(epoch, mean validation Dice)`` from the training log, for the widget to show.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import slicer

from MedAISlicerLib import nodes
from MedAISlicerLib.runs import EngineRun

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def segment_names(segmentationNode) -> list:
    segmentation = segmentationNode.GetSegmentation()
    return [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]


def label_table(pairs) -> dict:
    """Segment name -> label value (1, 2, ... in order of first appearance over the pairs): segments
    with the same name are the same structure in every case."""
    table: dict = {}
    for _, seg in pairs:
        for name in segment_names(seg):
            table.setdefault(name, len(table) + 1)
    return table


def labelmap_from_segmentation(segmentationNode, referenceVolumeNode, table: dict):
    """The segmentation as one integer label Volume on the volume's grid (MRML: caller's thread)."""
    reference = nodes.volume_view_from_node(referenceVolumeNode)
    labels = np.zeros(reference.array.shape, np.uint8 if len(table) < 256 else np.uint16)
    segmentation = segmentationNode.GetSegmentation()
    for name in segment_names(segmentationNode):
        segmentId = segmentation.GetSegmentIdBySegmentName(name)
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, referenceVolumeNode)
        labels[np.asarray(mask) > 0] = table[name]
    return reference.with_array(labels)


class TrainingRun(EngineRun):
    """Created by ``MedAISegmentLogic.train``; ``poll()``/``wait()`` drive it, ``cancel()`` stops it.

    After the end: ``status`` "done"/"failed"/"cancelled"; ``modelId`` is the new catalogue id
    ("done" only); ``validationCurve`` the (epoch, Dice) rows; ``errorText`` says what went wrong.
    """

    subcommand = "train"
    tempKey = "MedAITrain"
    runName = "Training"

    def __init__(self, pairs, modelId: str, epochs: int = 50, timeLimitMinutes: Optional[float] = None,
                 initModel: Optional[str] = None, validationPairs=(), outputFolder=None, extraArguments=(),
                 progressCallback: Optional[Callable] = None, logCallback: Optional[Callable] = None,
                 completedCallback: Optional[Callable] = None, enginePrefix=None):
        super().__init__(progressCallback, logCallback, completedCallback, enginePrefix)
        pairs, validationPairs = list(pairs), list(validationPairs)
        if not pairs:
            raise ValueError("Choose at least one volume with its segmentation to train from.")
        if not _ID.match(str(modelId or "")):
            raise ValueError(f"'{modelId}' cannot be a model name: use letters, digits, '-', '_' or '.' "
                             "(up to 64 characters).")
        for volume, seg in pairs + validationPairs:
            if volume is None or seg is None:
                raise ValueError("Each training case needs a volume and a segmentation.")
            nodes.check_not_transformed(volume)
            if seg.GetParentTransformNode() is not None:
                raise ValueError(f"'{seg.GetName()}' is under a transform. Harden the transform first.")
            if seg.GetSegmentation().GetNumberOfSegments() == 0:
                raise ValueError(f"'{seg.GetName()}' has no segments. Draw them first (Segment Editor).")
        if int(epochs) < 1:
            raise ValueError("Train for at least one epoch.")
        self.pairs, self.validationPairs = pairs, validationPairs
        self.modelId, self.epochs, self.timeLimitMinutes = str(modelId), int(epochs), timeLimitMinutes
        self.initModel, self.outputFolder = initModel, outputFolder
        self.extraArguments = [str(a) for a in extraArguments]
        self.validationCurve: list = []
        self.labels: dict = {}

    def _arguments(self):
        self.labels = label_table(self.pairs + self.validationPairs)
        # MRML (caller's thread): masks exported on each volume's grid, volumes as views
        cases = []
        for kind, pairs in (("training", self.pairs), ("validation", self.validationPairs)):
            for n, (volume, seg) in enumerate(pairs):
                cases.append((kind, f"{kind}{n}", nodes.volume_view_from_node(volume),
                              labelmap_from_segmentation(seg, volume, self.labels)))
        folder = Path(self.tempDir)
        datalist = folder / "datalist.json"
        out = Path(self.outputFolder) if self.outputFolder else folder / self.modelId
        self.bundlePath = out
        self.workDir = folder / "training"
        labels = {str(v): name for name, v in self.labels.items()}

        def write_inputs():  # worker thread: no MRML
            from MedAILib.io.images import write_image

            dl = {"labels": labels, "training": [], "validation": []}
            for kind, stem, image, label in cases:
                write_image(image, folder / f"{stem}.nii", compress=False)
                write_image(label, folder / f"{stem}_label.nii", compress=False)
                dl[kind].append({"image": f"{stem}.nii", "label": f"{stem}_label.nii"})
            if not dl["validation"]:
                del dl["validation"]
            datalist.write_text(json.dumps(dl, indent=1), encoding="utf-8")

        args = ["--progress", "json", "segmentation", "--datalist", str(datalist), "--out", str(out),
                "--work-dir", str(self.workDir), "--model-id", self.modelId, "--epochs", str(self.epochs)]
        if self.timeLimitMinutes:
            args += ["--time-limit", str(self.timeLimitMinutes)]
        if self.initModel:
            args += ["--init", str(self.initModel)]
        return args + self.extraArguments, write_inputs

    def _onProgress(self, fraction, message, eta_s):
        m = re.search(r"epoch (\d+)/\d+ .*val Dice ([0-9.]+)", message or "")
        if m:
            self.validationCurve.append((int(m.group(1)), float(m.group(2))))
        super()._onProgress(fraction, message, eta_s)

    def _import(self, result) -> None:
        """The engine registered the bundle; read the validation curve from its log (still there)."""
        log_path = Path(self.workDir) / "train_log.csv"
        if log_path.is_file():
            with open(log_path, newline="", encoding="utf-8") as f:
                self.validationCurve = [(int(r["epoch"]), float(r["val_mean_dice"])) for r in csv.DictReader(f)
                                        if r.get("val_mean_dice")]
        from MedAILib.models.catalogue import load_catalogue

        if self.modelId not in load_catalogue():
            raise ValueError(f"training ended but '{self.modelId}' is not in the model list")


def reference_volume(segmentationNode):
    """The volume a segmentation was drawn on (its reference geometry node), or None."""
    return segmentationNode.GetNodeReference(segmentationNode.GetReferenceImageGeometryReferenceRole())


def scene_pairs(segmentationNodes) -> list:
    """(volume, segmentation) pairs for segmentation nodes drawn on a volume; ValueError names the
    node without one."""
    pairs = []
    for seg in segmentationNodes:
        volume = reference_volume(seg)
        if volume is None:
            raise ValueError(f"'{seg.GetName()}' has no reference volume: in the Segment Editor, choose the "
                             "volume it was drawn on as its source volume, then try again.")
        pairs.append((volume, seg))
    return pairs
