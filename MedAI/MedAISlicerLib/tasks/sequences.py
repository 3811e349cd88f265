"""One sequence (4D / cine) segmentation run: a Sequence of volumes -> ``.seq.nrrd`` -> ``medai
segment-sequence`` process -> a Sequence of segmentations synchronized in the input's browser.

The engine segments every frame (progress per frame); this file only moves data between MRML nodes
and files. The input frames are written in a worker thread from views of their voxels (no MRML
there); MRML is touched on the caller's thread only (inside ``poll()``/``wait()``).

What the result looks like in Slicer: a ``vtkMRMLSequenceNode`` of ``vtkMRMLSegmentationNode`` (one
per input frame, each on its frame's grid, with the input's own index values) added as a
synchronized sequence to the sequence browser of the input (one is made when the input has none),
so browsing the input shows the segmentation of the same frame (the browser's proxy segmentation).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import numpy as np
import slicer
import vtk

from MedAISlicerLib import nodes
from MedAISlicerLib.runs import EngineRun
from MedAISlicerLib.tasks import check_device


def sequence_and_browser(inputNode):
    """(sequence node, its browser node or None) for a ``vtkMRMLSequenceNode`` or a
    ``vtkMRMLSequenceBrowserNode`` (then its master sequence). ValueError for anything else."""
    if inputNode is None:
        raise ValueError("Choose the input sequence.")
    if inputNode.IsA("vtkMRMLSequenceBrowserNode"):
        sequence = inputNode.GetMasterSequenceNode()
        if sequence is None:
            raise ValueError(f"The sequence browser '{inputNode.GetName()}' has no sequence.")
        return sequence, inputNode
    if not inputNode.IsA("vtkMRMLSequenceNode"):
        raise ValueError(f"'{inputNode.GetName()}' is not a sequence (choose a Sequence of volumes or a "
                         "sequence browser).")
    return inputNode, find_browser(inputNode)


def find_browser(sequenceNode):
    """The first sequence browser in the scene whose master or synchronized sequence is ``sequenceNode``."""
    for browser in slicer.util.getNodesByClass("vtkMRMLSequenceBrowserNode"):
        if browser.IsSynchronizedSequenceNodeID(sequenceNode.GetID(), True):
            return browser
    return None


def _geometry(volumeNode) -> np.ndarray:
    m = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(m)  # fills m
    return slicer.util.arrayFromVTKMatrix(m)


class SequenceSegmentationRun(EngineRun):
    """Created by ``MedAISegmentLogic.processSequence``; ``poll()``/``wait()`` drive it, ``cancel()`` stops it.

    After the end: ``status`` is "done", "failed" or "cancelled"; ``outputSequence`` is the new
    Sequence of segmentations ("done" only), ``browserNode`` the browser it is synchronized in and
    ``proxySegmentation`` the segmentation node that shows the browser's current frame; a failed or
    cancelled run leaves no new node. ``errorText`` says what went wrong.
    """

    subcommand = "segment-sequence"
    tempKey = "MedAISegmentSequence"
    runName = "Sequence segmentation"

    def __init__(self, inputNode, model, structures=None, device="auto", framesPerBatch=4, temporalSmoothing=0.0,
                 cyclic=True, keepLargest=False, progressCallback: Optional[Callable] = None,
                 logCallback: Optional[Callable] = None, completedCallback: Optional[Callable] = None,
                 enginePrefix=None):
        super().__init__(progressCallback, logCallback, completedCallback, enginePrefix)
        self.device = check_device(device)
        self.inputSequence, self.inputBrowser = sequence_and_browser(inputNode)
        if model.task != "segmentation":
            raise ValueError(f"{model.id} is a {model.task or 'non-segmentation'} model: choose a segmentation model.")
        model.check_input_count([self.inputSequence])  # one image per frame
        if self.inputBrowser is not None:
            # the frames are shown through the browser's proxy volume: a transform on it would place
            # the results differently from what the user sees (as for one volume)
            proxy = self.inputBrowser.GetProxyNode(self.inputSequence)
            if proxy is not None:
                nodes.check_not_transformed(proxy)
        self.model = model
        self.structures = list(structures or [])
        self.framesPerBatch = int(framesPerBatch)
        if self.framesPerBatch < 1:
            raise ValueError("Frames per batch must be at least 1.")
        self.temporalSmoothing = float(temporalSmoothing)
        if self.temporalSmoothing < 0:
            raise ValueError("Temporal smoothing (sigma in frames) cannot be negative.")
        self.cyclic, self.keepLargest = bool(cyclic), bool(keepLargest)
        self.frameNodes, self.indexValues = self._frames()
        self.outputSequence = None
        self.browserNode = None  # set at the end: the input's browser, or one made for it
        self.proxySegmentation = None
        self.inputProxyVolume = None  # the volume showing the current frame, when the browser is made here

    def _frames(self):
        sequence = self.inputSequence
        count = sequence.GetNumberOfDataNodes()
        if count < 1:
            raise ValueError(f"The sequence '{sequence.GetName()}' has no frames.")
        frames = [sequence.GetNthDataNode(n) for n in range(count)]
        first = frames[0]
        for n, frame in enumerate(frames):
            if frame is None or not frame.IsA("vtkMRMLScalarVolumeNode") or frame.IsA("vtkMRMLLabelMapVolumeNode"):
                kind = "nothing" if frame is None else frame.GetClassName()
                raise ValueError(f"Frame {n + 1} of '{sequence.GetName()}' is {kind}, not a scalar volume: "
                                 "only sequences of volumes can be segmented.")
            if frame.GetImageData() is None:
                raise ValueError(f"Frame {n + 1} of '{sequence.GetName()}' has no voxels.")
            if frame.GetImageData().GetNumberOfScalarComponents() != 1:
                raise ValueError(f"Frame {n + 1} of '{sequence.GetName()}' has "
                                 f"{frame.GetImageData().GetNumberOfScalarComponents()} components per voxel "
                                 "(colour or vector frames): give a sequence of scalar volumes.")
            if n and (slicer.util.arrayFromVolume(frame).shape != slicer.util.arrayFromVolume(first).shape
                      or not np.allclose(_geometry(frame), _geometry(first), atol=1e-4)):
                raise ValueError(f"Frame {n + 1} of '{sequence.GetName()}' is not on frame 1's grid "
                                 "(size, spacing, origin or axes differ): resample the sequence first.")
        return frames, [sequence.GetNthIndexValue(n) for n in range(count)]

    def _arguments(self):
        # Views of each frame's voxels (O(1) on the caller's thread); the 4D file is written in the
        # worker thread that then starts the engine (see SegmentationRun).
        from MedAILib.io.sequences import Sequence

        views = [nodes.volume_view_from_node(f) for f in self.frameNodes]
        values = []
        for n, v in enumerate(self.indexValues):
            try:
                values.append(float(v))
            except ValueError:
                values.append(float(n))
        sequence = self.inputSequence
        indexName, indexUnit = sequence.GetIndexName() or "time", sequence.GetIndexUnit() or ""
        self.inputPath = f"{self.tempDir}/input.seq.nrrd"
        inputPath = self.inputPath

        def write_input():
            from MedAILib.io.sequences import write_sequence

            write_sequence(Sequence(views, values, index_name=indexName, index_unit=indexUnit), inputPath)

        self.resultPath = f"{self.tempDir}/result.seq.nrrd"
        self.reportPath = f"{self.tempDir}/report.json"
        args = [inputPath, "-o", self.resultPath, "--format", "seq.nrrd", "--model", self.model.id,
                "--progress", "json", "--device", self.device, "--frames-per-batch", str(self.framesPerBatch),
                "--report", self.reportPath]
        if self.temporalSmoothing > 0:
            args += ["--temporal-smoothing", f"{self.temporalSmoothing:g}"]
        if not self.cyclic:
            args.append("--not-cyclic")
        if self.keepLargest:
            args.append("--keep-largest")
        if self.structures:
            args += ["--structures", ",".join(self.structures)]
        return args, write_input

    def _labelTable(self):
        """The model's labels the engine kept (its report names them; all of them without a report)."""
        row = nodes.read_report_row(self.reportPath)
        kept = {str(name).lower() for name in ((row or {}).get("label_volumes_ml") or {})}
        return [l for l in self.model.labels if l.name.lower() in kept] or list(self.model.labels)

    def _import(self, result) -> None:
        from MedAILib.core.volume import Volume
        from MedAILib.io import write_segmentation
        from MedAILib.io.sequences import read_sequence

        labels = read_sequence(result.outputs[0] if result.outputs else self.resultPath)
        if labels.n_frames != len(self.frameNodes):
            raise ValueError(f"the engine returned {labels.n_frames} frames for {len(self.frameNodes)} input frames")
        table = self._labelTable()
        name = f"{self.inputSequence.GetName()} {self.model.title}"
        output = self._newOutput("outputSequence", slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSequenceNode", name))
        output.SetIndexName(self.inputSequence.GetIndexName())
        output.SetIndexUnit(self.inputSequence.GetIndexUnit())
        output.SetIndexType(self.inputSequence.GetIndexType())
        framePath = Path(self.tempDir) / "frame.seg.nrrd"
        for n, (frame, labelFrame) in enumerate(zip(self.frameNodes, labels.frames)):
            geometry = _geometry(frame)
            if (labelFrame.array.shape != slicer.util.arrayFromVolume(frame).shape
                    or not np.allclose(labelFrame.ijk_to_ras, geometry, atol=1e-3)):
                raise ValueError(f"frame {n + 1} of the result is not on the input frame's grid")
            # The engine's segmentation writer and Slicer's own reader, as for one volume: names,
            # colours, label values and terminology (the model's label table, which the engine's 4D
            # file does not carry); written on the input frame's exact geometry.
            if framePath.exists():
                framePath.unlink()
            write_segmentation(Volume(labelFrame.array, geometry, table), framePath)
            segmentation = nodes.load_segmentation_file(framePath, f"{name} {n + 1}", None)
            try:
                segmentation.SetReferenceImageGeometryParameterFromVolumeNode(frame)
                output.SetDataNodeAtValue(segmentation, self.indexValues[n])  # the sequence keeps a copy
            finally:
                slicer.mrmlScene.RemoveNode(segmentation)
        browser = self.inputBrowser or find_browser(self.inputSequence)
        if browser is None:  # made only now, so a cancelled or failed run leaves nothing
            browser = self._newOutput("browserNode", slicer.mrmlScene.AddNewNodeByClass(
                "vtkMRMLSequenceBrowserNode", f"{self.inputSequence.GetName()} browser"))
            browser.SetAndObserveMasterSequenceNodeID(self.inputSequence.GetID())
            masterProxy = browser.GetProxyNode(self.inputSequence)  # made by Slicer's Sequences logic
            if masterProxy is not None:
                self._newOutput("inputProxyVolume", masterProxy)
        self.browserNode = browser
        browser.AddSynchronizedSequenceNodeID(output.GetID())
        # Slicer's Sequences logic makes the proxy node (the segmentation shown for the current frame).
        proxy = browser.GetProxyNode(output)
        if proxy is not None:
            self._newOutput("proxySegmentation", proxy)
            proxy.CreateDefaultDisplayNodes()
            masterProxy = browser.GetProxyNode(self.inputSequence)
            if masterProxy is not None:
                nodes.place_next_to(proxy, masterProxy)

    def _removeCreatedOutputs(self) -> None:
        if self.browserNode is not None and self.outputSequence is not None:
            self.browserNode.RemoveSynchronizedSequenceNode(self.outputSequence.GetID())
        super()._removeCreatedOutputs()
