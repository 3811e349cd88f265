"""Run the chosen pre-processing steps in a fixed, sensible order, on a Volume.

Order (why): N4 first (it models the raw MR intensities; filtering or normalising first would
change what it fits), then denoising (on the native grid, where the noise is), resampling, cropping
to the mask, and intensity normalisation last (statistics of the final voxels).

Other tasks call :func:`preprocess` with :class:`PreprocessOptions` as optional pre-steps before
their model; :func:`add_arguments` / :func:`options_from_args` give any command the same options
as ``medai preprocess`` (``prefix="pre-"`` gives ``--pre-n4`` etc.).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Optional

from MedAILib.core.progress import Progress
from MedAILib.core.volume import Volume
from MedAILib.tasks.preprocessing import steps


@dataclasses.dataclass
class PreprocessOptions:
    n4: bool = False
    n4_shrink: int = 4
    denoise: Optional[str] = None          # gaussian | median | anisotropic | gan
    sigma_mm: float = 1.0                  # gaussian
    radius: int = 1                        # median, voxels
    iterations: int = 5                    # anisotropic diffusion
    conductance: float = 1.0               # anisotropic diffusion
    denoise_model: Optional[str] = None    # gan: bundle folder or catalogue id
    resample_mm: Optional[tuple] = None    # one value (isotropic) or three
    crop_to_mask: bool = False
    margin_mm: float = 5.0
    normalize: Optional[str] = None        # zscore | percentile | ct-window
    percentiles: tuple = (1.0, 99.0)
    window: Optional[tuple] = None         # (width, level) HU, or a preset name
    device: str = "auto"
    trust_paths: tuple = ()                # bundle folders the user trusts (--trust), for gan

    @property
    def any(self) -> bool:
        return bool(self.n4 or self.denoise or self.resample_mm or self.crop_to_mask or self.normalize)

    def describe(self) -> list:
        """The steps that will run, in order (for logs and reports)."""
        out = []
        if self.n4:
            out.append("n4")
        if self.denoise:
            out.append(f"denoise:{self.denoise}")
        if self.resample_mm:
            out.append("resample:" + "x".join(f"{x:g}" for x in self.resample_mm))
        if self.crop_to_mask:
            out.append("crop-to-mask")
        if self.normalize:
            out.append(f"normalize:{self.normalize}")
        return out


@dataclasses.dataclass
class PreprocessResult:
    volume: Volume
    mask: Optional[Volume]        # the mask used (on the output grid) when one was used or made
    bias_field: Optional[Volume]  # N4's multiplicative field on the input grid
    steps: list                   # [{"step": name, "seconds": s, ...}]


def _window(options: PreprocessOptions):
    w = options.window
    if isinstance(w, str):
        return steps.CT_WINDOWS[w]
    return tuple(float(x) for x in w) if w else None


def preprocess(volume: Volume, options: PreprocessOptions, mask: Optional[Volume] = None,
               progress: Optional[Progress] = None) -> PreprocessResult:
    """Apply ``options``' steps to ``volume`` (never modified) and return the result.

    ``mask`` (optional, any grid) restricts N4 and z-score statistics and defines the crop; without
    it a foreground mask is computed when a step needs one (crop-to-mask)."""
    progress = progress or Progress()
    todo = options.describe()
    done, record = 0, []
    bias = None
    out = volume

    def step(name, fn, **info):
        nonlocal done
        progress.update(done / max(1, len(todo)), f"pre-processing: {name}")
        t0 = time.monotonic()
        value = fn()
        record.append({"step": name, "seconds": round(time.monotonic() - t0, 2), **info})
        done += 1
        return value

    if options.n4:
        out, bias = step("n4", lambda: steps.n4(out, mask=mask, shrink=options.n4_shrink), shrink=options.n4_shrink)
    if options.denoise:
        params = {"gaussian": {"sigma_mm": options.sigma_mm}, "median": {"radius": options.radius},
                  "anisotropic": {"iterations": options.iterations, "conductance": options.conductance},
                  "gan": {"model": options.denoise_model, "trust_paths": tuple(options.trust_paths)}}[options.denoise]
        out = step(f"denoise:{options.denoise}",
                   lambda: steps.denoise(out, options.denoise, device=options.device, progress=None, **params),
                   **{k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items() if k != "trust_paths"})
    if options.resample_mm:
        out = step("resample", lambda: steps.resample_spacing(out, options.resample_mm),
                   spacing_mm=list(options.resample_mm))
        if mask is not None:
            from MedAILib.runtime.resample import resample_to

            mask = resample_to(mask, out, "nearest")
    if options.crop_to_mask:
        out, mask = step("crop-to-mask", lambda: steps.crop_to_mask(out, mask, options.margin_mm),
                         margin_mm=options.margin_mm, mask="given" if mask is not None else "automatic")
    if options.normalize:
        out = step(f"normalize:{options.normalize}",
                   lambda: steps.normalize(out, options.normalize, mask=mask, lower=options.percentiles[0],
                                           upper=options.percentiles[1], window=_window(options)))
    progress.update(1.0, "pre-processing done")
    out.metadata["preprocessing"] = todo
    return PreprocessResult(out, mask, bias, record)


# --- command-line options shared by `medai preprocess` and any command offering pre-steps --------

def add_arguments(p, prefix: str = "") -> None:
    """The pre-processing options; ``prefix="pre-"`` for commands where they are optional pre-steps."""
    from MedAILib.cli.batch import number

    f = f"--{prefix}"
    g = p.add_argument_group("pre-processing" if prefix else "steps (run in this order)")
    g.add_argument(f"{f}n4", action="store_true", help="N4 bias-field correction (MR)")
    g.add_argument(f"{f}n4-shrink", type=number(low=1, high=16, integer=True), default=4,
                   help="N4 fits on an image this many times smaller (default 4)")
    g.add_argument(f"{f}denoise", choices=steps.DENOISE_METHODS, help="denoising filter")
    g.add_argument(f"{f}sigma", type=number(low=0.01, high=50), default=1.0, help="gaussian: sigma in mm (default 1)")
    g.add_argument(f"{f}radius", type=number(low=1, high=10, integer=True), default=1,
                   help="median: radius in voxels (default 1)")
    g.add_argument(f"{f}iterations", type=number(low=1, high=100, integer=True), default=5,
                   help="anisotropic: diffusion iterations (default 5)")
    g.add_argument(f"{f}conductance", type=number(low=0.01, high=100), default=1.0,
                   help="anisotropic: conductance (lower keeps more edges; default 1)")
    g.add_argument(f"{f}denoise-model", help="gan: denoising bundle folder or catalogue id")
    g.add_argument(f"{f}resample", type=number(low=0.01, high=100), nargs="+", metavar="MM",
                   help="resample to this voxel size in mm (one value: isotropic; or three: I J K)")
    g.add_argument(f"{f}crop-to-mask", action="store_true",
                   help="crop to the body (CT) / head (MR) mask, or to --mask, plus --margin")
    g.add_argument(f"{f}margin", type=number(low=0, high=200), default=5.0, help="crop margin in mm (default 5)")
    g.add_argument(f"{f}normalize", choices=steps.NORMALIZE_METHODS, help="intensity normalisation (last step)")
    g.add_argument(f"{f}percentiles", type=number(low=0, high=100), nargs=2, default=[1.0, 99.0],
                   metavar=("LOW", "HIGH"), help="percentile: input percentiles mapped to 0..1 (default 1 99)")
    g.add_argument(f"{f}window", nargs="+", metavar="W_L",
                   help=f"ct-window: WIDTH LEVEL in HU, or a preset ({', '.join(steps.CT_WINDOWS)}); "
                        "default soft-tissue (400 40)")


def options_from_args(args, prefix: str = "") -> PreprocessOptions:
    from MedAILib.core.errors import InputError

    def get(name):
        return getattr(args, (prefix + name).replace("-", "_"))

    window = get("window")
    if window:
        if len(window) == 1 and window[0] in steps.CT_WINDOWS:
            window = window[0]
        elif len(window) == 2:
            try:
                window = (float(window[0]), float(window[1]))
            except ValueError:
                raise InputError(f"--{prefix}window {' '.join(window)}: give WIDTH LEVEL in HU or a preset",
                                 f"presets: {', '.join(steps.CT_WINDOWS)}") from None
        else:
            raise InputError(f"--{prefix}window {' '.join(window)}: give WIDTH LEVEL in HU or a preset",
                             f"presets: {', '.join(steps.CT_WINDOWS)}")
    res = get("resample")
    if res and len(res) not in (1, 3):
        raise InputError(f"--{prefix}resample takes one value (isotropic) or three (I J K), got {len(res)}",
                         "e.g. --resample 1.0 or --resample 0.8 0.8 2")
    if get("denoise") == "gan" and not get("denoise_model"):
        raise InputError(f"--{prefix}denoise gan needs --{prefix}denoise-model (a denoising bundle)",
                         "train one with `python -m MedAILib.tasks.denoising.trainer`, or use a classical filter")
    if window and get("normalize") != "ct-window":
        raise InputError(f"--{prefix}window is only used with --{prefix}normalize ct-window", "")
    return PreprocessOptions(
        n4=bool(get("n4")), n4_shrink=int(get("n4_shrink")), denoise=get("denoise"), sigma_mm=float(get("sigma")),
        radius=int(get("radius")), iterations=int(get("iterations")), conductance=float(get("conductance")),
        denoise_model=get("denoise_model"),
        resample_mm=tuple(float(x) for x in (res * 3 if res and len(res) == 1 else res)) if res else None,
        crop_to_mask=bool(get("crop_to_mask")), margin_mm=float(get("margin")), normalize=get("normalize"),
        percentiles=tuple(float(x) for x in get("percentiles")), window=window,
        device=getattr(args, "device", "auto") or "auto", trust_paths=tuple(getattr(args, "trust", None) or ()))
