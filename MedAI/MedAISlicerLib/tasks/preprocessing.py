""""Pre-process" logic: scalar volume node -> ``medai preprocess`` process -> new scalar volume node.

The steps are the engine's (:mod:`MedAILib.tasks.preprocessing`): N4 bias-field correction,
denoising (gaussian / median / anisotropic, or ``gan`` with a denoising bundle), resampling,
cropping to the body/head mask (or a labelmap node), intensity normalisation, in that order. The
engine runs outside Slicer's process like every other task (one-shot: ``preprocess`` is not a
warm-engine job); this file only writes the input (in a worker thread), follows the JSON events and
loads the result with Slicer's own reader. MRML is touched on the caller's thread only.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

from MedAISlicerLib import nodes
from MedAISlicerLib.runs import EngineRun
from MedAISlicerLib.tasks import check_device, check_volume_run

DENOISE_METHODS = ("gaussian", "median", "anisotropic", "gan")
NORMALIZE_METHODS = ("zscore", "percentile", "ct-window")


class PreprocessRun(EngineRun):
    """One pre-processing run. After the end: ``status`` is "done", "failed" or "cancelled";
    ``outputVolume`` is the pre-processed node ("done" only; its grid is the input's unless
    ``resampleMm``/``cropToMask`` changed it); ``biasFieldVolume`` N4's field when ``biasField``
    was asked; ``steps`` the engine's list of what it did; ``errorText`` says what went wrong.
    """

    subcommand = "preprocess"
    tempKey = "MedAIPreprocess"
    runName = "Pre-processing"

    def __init__(self, inputVolume, outputVolume=None, n4: bool = False, denoise: Optional[str] = None,
                 sigmaMm: float = 1.0, radius: int = 1, iterations: int = 5, conductance: float = 1.0,
                 denoiseModel: Optional[str] = None, trustModel: bool = False,
                 resampleMm: Optional[Union[float, Sequence[float]]] = None, cropToMask: bool = False,
                 marginMm: float = 5.0, maskVolume=None, normalize: Optional[str] = None,
                 percentiles: Sequence[float] = (1.0, 99.0), window=None, biasField: bool = False,
                 device: str = "auto", progressCallback: Optional[Callable] = None,
                 logCallback: Optional[Callable] = None, completedCallback: Optional[Callable] = None,
                 enginePrefix=None):
        super().__init__(progressCallback, logCallback, completedCallback, enginePrefix)
        check_volume_run(inputVolume, outputVolume, maskVolume, "mask")
        device = check_device(device)
        if denoise is not None and denoise not in DENOISE_METHODS:
            raise ValueError(f"Unknown denoising method {denoise!r}: choose one of {', '.join(DENOISE_METHODS)}.")
        if normalize is not None and normalize not in NORMALIZE_METHODS:
            raise ValueError(f"Unknown normalisation {normalize!r}: choose one of {', '.join(NORMALIZE_METHODS)}.")
        if denoise == "gan" and not denoiseModel:
            raise ValueError("GAN denoising needs a denoising model (a catalogue id or a bundle folder).")
        if biasField and not n4:
            raise ValueError("The bias field is N4's: tick N4 bias-field correction too.")
        if not (n4 or denoise or resampleMm or cropToMask or normalize):
            raise ValueError("Choose at least one pre-processing step.")
        self.inputVolume, self.outputVolume, self.maskVolume = inputVolume, outputVolume, maskVolume
        self.options = dict(n4=n4, denoise=denoise, sigmaMm=sigmaMm, radius=radius, iterations=iterations,
                            conductance=conductance, denoiseModel=denoiseModel, trustModel=trustModel,
                            resampleMm=resampleMm, cropToMask=cropToMask, marginMm=marginMm, normalize=normalize,
                            percentiles=percentiles, window=window, biasField=biasField)
        self.device = device
        self.biasFieldVolume = None
        self.steps: list = []
        self._caseError = ""

    def _arguments(self):
        o = self.options
        volumes = {"input": nodes.volume_view_from_node(self.inputVolume)}
        if self.maskVolume is not None:
            volumes["mask"] = nodes.volume_view_from_node(self.maskVolume)
        paths, write_inputs = self._inputFiles(volumes)
        self.resultPath = f"{self.tempDir}/result.nrrd"
        self.biasPath = f"{self.tempDir}/bias.nrrd"
        args = [paths["input"], "-o", self.resultPath, "--progress", "json", "--device", self.device]
        if self.maskVolume is not None:
            args += ["--mask", paths["mask"]]
        if o["n4"]:
            args += ["--n4"]
            if o["biasField"]:
                args += ["--bias-field", self.biasPath]
        if o["denoise"]:
            args += ["--denoise", o["denoise"], "--sigma", repr(float(o["sigmaMm"])), "--radius", str(int(o["radius"])),
                     "--iterations", str(int(o["iterations"])), "--conductance", repr(float(o["conductance"]))]
            if o["denoise"] == "gan":
                args += ["--denoise-model", str(o["denoiseModel"])]
                if o["trustModel"]:  # the user ticked "trust this bundle" for a folder outside the catalogue
                    args += ["--trust", str(o["denoiseModel"])]
        if o["resampleMm"]:
            mm = o["resampleMm"] if isinstance(o["resampleMm"], (list, tuple)) else [o["resampleMm"]]
            args += ["--resample", *[repr(float(x)) for x in mm]]
        if o["cropToMask"]:
            args += ["--crop-to-mask", "--margin", repr(float(o["marginMm"]))]
        if o["normalize"]:
            args += ["--normalize", o["normalize"]]
            if o["normalize"] == "percentile":
                args += ["--percentiles", *[repr(float(x)) for x in o["percentiles"]]]
            if o["normalize"] == "ct-window" and o["window"]:
                w = o["window"]
                args += ["--window", *([w] if isinstance(w, str) else [repr(float(x)) for x in w])]
        return args, write_inputs

    def _onEvent(self, event):
        if event.get("event") != "case_done":
            return
        if event.get("status") == "failed":  # the engine's own words for this case beat the generic error
            self._caseError = (event.get("error") or "") + (f"\nWhat to do: {event['hint']}" if event.get("hint") else "")
        elif isinstance(event.get("steps"), list):
            self.steps = list(event["steps"])

    def _failureText(self, result) -> str:
        return self._caseError or result.error_text()

    def _import(self, result) -> None:
        from pathlib import Path

        path = self.resultPath if Path(self.resultPath).is_file() else (result.outputs[0] if result.outputs else self.resultPath)
        name = f"{self.inputVolume.GetName()} preprocessed"
        if self.outputVolume is None:  # "create new": made only now, so cancel/failure leave nothing
            self._newOutput("outputVolume", nodes.load_volume_file(path, name))
        else:
            nodes.load_volume_file(path, name, into=self.outputVolume)
        self.outputVolume.SetAttribute("MedAI.preprocess.steps", ", ".join(self._describe()))
        nodes.place_next_to(self.outputVolume, self.inputVolume)
        if self.options["biasField"] and Path(self.biasPath).is_file():
            self._newOutput("biasFieldVolume", nodes.load_volume_file(self.biasPath, f"{self.inputVolume.GetName()} N4 bias field"))
            nodes.place_next_to(self.biasFieldVolume, self.inputVolume)

    def _describe(self) -> list:
        if self.steps:
            return [s if isinstance(s, str) else str(s.get("step", s)) for s in self.steps]
        o = self.options
        return [s for s in ("n4" if o["n4"] else "", f"denoise:{o['denoise']}" if o["denoise"] else "",
                            "resample" if o["resampleMm"] else "", "crop" if o["cropToMask"] else "",
                            f"normalize:{o['normalize']}" if o["normalize"] else "") if s]


def denoising_models() -> list:
    """(id, title) of the catalogue's denoising models (for ``denoise="gan"``)."""
    from MedAILib.models.catalogue import load_catalogue

    return [(e.id, e.title) for e in load_catalogue() if e.task == "denoising"]


def preprocess(inputVolume, outputVolume=None, wait: bool = False, **options) -> PreprocessRun:
    """Start a pre-processing run; with ``wait=True`` block until it ends (Slicer batch scripts, tests).
    ``options``: the keyword arguments of :class:`PreprocessRun` (steps, device, callbacks)."""
    run = PreprocessRun(inputVolume, outputVolume, **options).start()
    if wait:
        run.wait()
    return run
