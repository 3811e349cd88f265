"""MedAIFusion runs: volume nodes -> temporary files -> ``medai register`` / ``medai fuse`` process -> nodes.

The engine does all the computing in its own process (GUI stays live, Cancel kills it); this file
only moves data between MRML nodes and files and follows progress. MRML is touched on the
caller's thread only (inside ``poll()``/``wait()``).

Registration result in Slicer: the engine's ITK transform maps FIXED points to MOVING points
(resampling direction). ``slicer.util.loadTransform`` stores it as the node's "from parent"
transform, so putting the MOVING volume under the node shows it aligned with the FIXED volume.
``RegistrationRun`` does exactly that when ``applyToMoving`` is set (no hardening: the original
voxels stay untouched), and also loads the engine's resampled volume (moving on the fixed grid).
"""

from __future__ import annotations

import json
from pathlib import Path

import slicer

from MedAISlicerLib import nodes
from MedAISlicerLib.runs import EngineRun  # the shared run life cycle (start/poll/wait/cancel, temp folder)

TRANSFORM_TYPES = ("rigid", "affine", "bspline")
ENSEMBLE_METHODS = ("mean", "weighted", "vote", "staple")


class RegistrationRun(EngineRun):
    """``medai register FIXED MOVING``: output transform node, resampled volume node, metrics."""

    subcommand = "register"
    tempKey = "MedAIFusionRegister"

    def __init__(self, fixedVolume, movingVolume, transformType="rigid", fixedMask=None, movingMask=None,
                 applyToMoving=False, **kwargs):
        super().__init__(**kwargs)
        if fixedVolume is None or movingVolume is None:
            raise ValueError("Choose a fixed and a moving volume.")
        if fixedVolume is movingVolume:
            raise ValueError("The fixed and the moving volume are the same volume.")
        if transformType not in TRANSFORM_TYPES:
            raise ValueError(f"Registration type must be one of {TRANSFORM_TYPES}, not {transformType!r}.")
        for v in (fixedVolume, movingVolume):
            nodes.check_not_transformed(v)
        self.fixedVolume, self.movingVolume = fixedVolume, movingVolume
        self.fixedMask, self.movingMask = fixedMask, movingMask
        self.transformType = transformType
        self.applyToMoving = bool(applyToMoving)
        self.outputTransform = None
        self.outputVolume = None
        self.report: dict = {}

    def _arguments(self):
        # Views only here; the files are written in the worker thread before the engine starts.
        nodesByStem = {"fixed": self.fixedVolume, "moving": self.movingVolume, "fixed_mask": self.fixedMask,
                       "moving_mask": self.movingMask}
        paths, write_inputs = self._inputFiles({stem: nodes.volume_view_from_node(node)
                                                for stem, node in nodesByStem.items() if node is not None})
        self.outDir = Path(self.tempDir) / "out"
        args = [paths["fixed"], paths["moving"], "-o", self.outDir, "--type", self.transformType, "--progress", "json"]
        if self.fixedMask is not None:
            args += ["--fixed-mask", paths["fixed_mask"]]
        if self.movingMask is not None:
            args += ["--moving-mask", paths["moving_mask"]]
        return args, write_inputs

    def _import(self, result) -> None:
        self.report = json.loads((self.outDir / "report.json").read_text(encoding="utf-8"))
        # .tfm for linear results, .h5 for B-spline: the report names the file written
        transform = slicer.util.loadTransform(str(self.report["outputs"]["transform"]))
        transform.SetName(f"{self.movingVolume.GetName()} to {self.fixedVolume.GetName()}")
        volume = slicer.util.loadVolume(str(self.outDir / "moving_resampled.nii.gz"),
                                        {"name": f"{self.movingVolume.GetName()} registered", "show": False})
        self.outputTransform, self.outputVolume = transform, volume
        nodes.place_next_to(volume, self.fixedVolume)
        if self.applyToMoving:
            self.movingVolume.SetAndObserveTransformNodeID(transform.GetID())

    @property
    def metricText(self) -> str:
        if not self.report:
            return ""
        return (f"Mattes MI {self.report['metric_before']:.4f} -> {self.report['metric_after']:.4f} "
                "(lower is better)")


class FuseRun(EngineRun):
    """``medai fuse blend|checkerboard BASE OTHER``: one new scalar volume on BASE's grid."""

    subcommand = "fuse"
    tempKey = "MedAIFusionFuse"

    def __init__(self, mode, baseVolume, otherVolume, alpha=0.5, squares=(8, 8, 1), show=False, **kwargs):
        super().__init__(**kwargs)
        if mode not in ("blend", "checkerboard"):
            raise ValueError(f"mode must be blend or checkerboard, not {mode!r}")
        if baseVolume is None or otherVolume is None:
            raise ValueError("Choose two volumes.")
        self.mode, self.baseVolume, self.otherVolume = mode, baseVolume, otherVolume
        self.alpha, self.squares = float(alpha), [int(s) for s in squares]
        self.show = bool(show)  # the result becomes the slice views' background when it is loaded
        self.outputVolume = None

    def _arguments(self):
        paths, write_inputs = self._inputFiles({"base": nodes.volume_view_from_node(self.baseVolume),
                                                "other": nodes.volume_view_from_node(self.otherVolume)})
        self.outPath = Path(self.tempDir) / f"{self.mode}.nii.gz"
        extra = ["--alpha", self.alpha] if self.mode == "blend" else ["--squares", *self.squares]
        args = [self.mode, paths["base"], paths["other"], "-o", self.outPath, "--progress", "json", *extra]
        return args, write_inputs

    def _import(self, result) -> None:
        self._newOutput("outputVolume", nodes.load_volume_file(
            self.outPath, f"{self.baseVolume.GetName()} {self.mode} {self.otherVolume.GetName()}"))
        nodes.place_next_to(self.outputVolume, self.baseVolume)
        if self.show:
            slicer.util.setSliceViewerLayers(background=self.outputVolume, foreground=None)


class EnsembleRun(EngineRun):
    """``medai fuse ensemble``: the fused labels + an uncertainty volume on the first input's grid.

    Inputs: probability or label maps (volume nodes), or segmentations (segmentation nodes, e.g.
    MedAISegment results of several models or settings). A segmentation goes to the engine as Slicer's
    own writer writes it (label values, names, colours, terminology); the fused result then comes back
    as a segmentation (``outputSegmentation``) whose segments keep the first input's names, colours and
    terminology (the engine carries them through). From volume nodes it is a labelmap volume
    (``outputLabels``). Either way ``outputUncertainty`` is a scalar volume."""

    subcommand = "fuse"
    tempKey = "MedAIFusionEnsemble"

    def __init__(self, inputVolumes, method="mean", weights=None, uncertainty="entropy", **kwargs):
        super().__init__(**kwargs)
        inputVolumes = [v for v in inputVolumes if v is not None]
        if len(inputVolumes) < 2:
            raise ValueError("An ensemble needs at least two probability or label maps.")
        if method not in ENSEMBLE_METHODS:
            raise ValueError(f"method must be one of {ENSEMBLE_METHODS}, not {method!r}")
        if method == "weighted" and (not weights or len(weights) != len(inputVolumes)):
            raise ValueError(f"Give one weight per input ({len(inputVolumes)}).")
        segmentations = [v.IsA("vtkMRMLSegmentationNode") for v in inputVolumes]
        if any(segmentations) and not all(segmentations):
            raise ValueError("Give either segmentations or volumes (label or probability maps), not both.")
        self.segmentationInputs = all(segmentations)
        if not self.segmentationInputs:
            for v in inputVolumes:
                nodes.check_not_transformed(v)
        self.inputVolumes, self.method, self.weights, self.uncertainty = inputVolumes, method, weights, uncertainty
        self.outputLabels = None
        self.outputSegmentation = None
        self.outputUncertainty = None

    def _arguments(self):
        if self.segmentationInputs:  # Slicer's own writer (MRML: this thread); nothing left to write later
            paths = [nodes.write_segmentation_node(s, self.tempDir, f"input{n}") for n, s in enumerate(self.inputVolumes)]
            write_inputs = None
            self.labelsPath = Path(self.tempDir) / "fused.seg.nrrd"
        else:
            files, write_inputs = self._inputFiles({f"input{n}": nodes.volume_view_from_node(v)
                                                    for n, v in enumerate(self.inputVolumes)})
            paths = list(files.values())
            self.labelsPath = Path(self.tempDir) / "fused.nii.gz"
        self.uncertaintyPath = Path(self.tempDir) / "uncertainty.nii.gz"
        args = ["ensemble", *paths, "--method", self.method, "-o", self.labelsPath, "--uncertainty",
                self.uncertaintyPath, "--uncertainty-kind", self.uncertainty, "--progress", "json"]
        if self.method == "weighted":
            args += ["--weights", *self.weights]
        return (args, write_inputs) if write_inputs else args

    def _import(self, result) -> None:
        first = self.inputVolumes[0]
        name = f"{first.GetName()} ensemble {self.method}"
        if self.segmentationInputs:
            self._newOutput("outputSegmentation", nodes.load_segmentation_file(self.labelsPath, name, None))
            fused = self.outputSegmentation
        else:
            self._newOutput("outputLabels", slicer.util.loadLabelVolume(str(self.labelsPath), {"name": name}))
            fused = self.outputLabels
        self._newOutput("outputUncertainty", nodes.load_volume_file(
            self.uncertaintyPath, f"{first.GetName()} ensemble {self.uncertainty}"))
        for node in (fused, self.outputUncertainty):
            nodes.place_next_to(node, first)
