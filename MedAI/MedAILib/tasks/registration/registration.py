"""Intensity-based registration (SimpleITK) and resampling onto another volume's grid.

Direction convention (read this before using a transform anywhere else)
---------------------------------------------------------------------
Every transform returned or saved here is an ITK transform in the **resampling direction**: it maps
a physical point of the **FIXED** image (LPS, mm) to the corresponding physical point of the
**MOVING** image. That is what ``SimpleITK.Resample(moving, fixed, transform)`` needs, and it is
what is written to ``.tfm`` / ``.h5``.

In 3D Slicer: *Add Data* the ``.tfm``/``.h5`` file; Slicer converts LPS to RAS and stores it as the
transform node's "from parent" transform (ITK files are resampling transforms). To see the moving
volume aligned with the fixed one, put the **moving** volume under that transform node (Data module:
drag the moving volume onto the transform, or Transforms module: "Apply transform" with the moving
volume in the right-hand list). Do not invert it and do not put the fixed volume under it. "Harden
transform" then resamples permanently; MedAI's ``resampled`` output is the same thing already done on
the fixed grid. :meth:`RegistrationResult.fixed_to_moving_ras` gives the same mapping as a 4x4 RAS
matrix (Slicer's ``GetMatrixTransformFromParent`` of the loaded node).

Defaults are meant to work on real MR pairs without tuning: Mattes mutual information (50 bins),
random sampling, three resolution levels (shrink 4/2/1 with 2/1/0 mm Gaussian smoothing), a rigid
stage always first (affine and B-spline start from it), and a start transform that trusts the
scanner frame when the two images overlap ("world"), otherwise aligns intensity centroids ("moments").
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import SimpleITK as sitk

from MedAILib.core import geometry
from MedAILib.core.atomic import atomic_output, full_suffix
from MedAILib.core.errors import Cancelled, InputError
from MedAILib.io import to_sitk
from MedAILib.core.progress import Progress
from MedAILib.core.volume import Volume
from MedAILib.runtime.resample import INTERPOLATORS, resample_to  # noqa: F401  (resample_to: results on the fixed grid)

TRANSFORM_TYPES = ("rigid", "affine", "bspline")
INIT_MODES = ("auto", "world", "geometry", "moments")
TRANSFORM_SUFFIXES = (".tfm", ".txt", ".h5", ".hdf5", ".mat")

# 4x4 conjugation by the LPS<->RAS flip, taken from geometry (the one place that defines it):
# T_ras = FLIP @ T_lps @ FLIP for any 4x4 point transform.
_FLIP4 = geometry.ijk_to_ras_from_ijk_to_lps(np.eye(4))


@dataclasses.dataclass
class RegistrationSettings:
    """Knobs of :func:`register`; the defaults are the tested ones."""

    transform_type: str = "rigid"
    init: str = "auto"                     # auto | world | geometry | moments
    histogram_bins: int = 50
    sampling_percentage: Sequence[float] = (0.10, 0.10, 0.20)   # per level, of the fixed voxels
    shrink_factors: Sequence[int] = (4, 2, 1)
    smoothing_sigmas_mm: Sequence[float] = (2.0, 1.0, 0.0)
    iterations: int = 300                  # per level, linear stages
    min_step: float = 1e-4                 # regular-step optimiser stop (physical-shift units, mm)
    learning_rate: float = 2.0
    bspline_grid_mm: float = 60.0          # control point spacing of the coarsest B-spline mesh
    bspline_iterations: int = 100
    metric_interpolator: str = "linear"    # how the moving image is sampled while optimising (linear | bspline)
    seed: int = 20240607                   # sampling seed: results are reproducible
    threads: Optional[int] = None

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}


@dataclasses.dataclass
class RegistrationResult:
    """What :func:`register` found.

    ``transform`` maps FIXED physical points to MOVING physical points (ITK/LPS, resampling
    direction; see the module docstring for Slicer). ``resampled`` is the moving image on the fixed
    grid. Mattes MI values are negative; lower (more negative) means better aligned.
    """

    transform: sitk.Transform
    resampled: Volume
    transform_type: str
    metric_before: float
    metric_after: float
    iterations: list
    stop_conditions: list
    init: str
    settings: dict
    tre_mm: Optional[dict] = None
    note: Optional[str] = None     # set when the result is the starting alignment (see register)

    @property
    def is_linear(self) -> bool:
        return self.transform_type in ("rigid", "affine") or not isinstance(self.transform, sitk.CompositeTransform)

    def fixed_to_moving_ras(self) -> np.ndarray:
        """4x4 RAS matrix mapping fixed points to moving points (linear transforms only)."""
        if not self.is_linear:
            raise ValueError("a B-spline transform has no 4x4 matrix; use map_points_ras")
        return ras_matrix_from_transform(self.transform)

    def map_points_ras(self, points_ras) -> np.ndarray:
        """Moving-space RAS positions of fixed-space RAS points (N, 3)."""
        return transform_points_ras(self.transform, points_ras)

    def save_transform(self, path) -> Path:
        return save_transform(self.transform, path)

    def summary(self) -> dict:
        d = {
            "transform_type": self.transform_type,
            "direction": "fixed->moving physical points (ITK resampling transform); in Slicer apply it to the MOVING volume",
            "init": self.init,
            "metric": "Mattes mutual information (lower is better)",
            "metric_before": self.metric_before,
            "metric_after": self.metric_after,
            "iterations": self.iterations,
            "stop_conditions": self.stop_conditions,
            "settings": self.settings,
        }
        if self.is_linear:
            d["fixed_to_moving_ras"] = [[round(float(x), 6) for x in row] for row in self.fixed_to_moving_ras()]
            rot, shift = rigid_magnitude(self.fixed_to_moving_ras())
            d["rotation_deg"], d["translation_mm"] = round(rot, 4), round(shift, 4)
        if self.tre_mm is not None:
            d["tre_mm"] = self.tre_mm
        if self.note:
            d["note"] = self.note
        return d


# ------------------------------------------------------------------------------------------------
# transforms <-> RAS matrices, points, files
# ------------------------------------------------------------------------------------------------
def _points_lps(points_ras) -> np.ndarray:
    return np.atleast_2d(np.asarray(points_ras, dtype=np.float64)) @ geometry.LPS_TO_RAS.T


def transform_points_ras(transform: sitk.Transform, points_ras) -> np.ndarray:
    """Apply an ITK (LPS) transform to RAS points; returns RAS points (N, 3)."""
    out = [transform.TransformPoint([float(c) for c in p]) for p in _points_lps(points_ras)]
    return np.asarray(out, dtype=np.float64).reshape(-1, 3) @ geometry.LPS_TO_RAS.T


def ras_matrix_from_transform(transform: sitk.Transform) -> np.ndarray:
    """4x4 RAS matrix of a linear ITK transform (found from how it maps the origin and unit axes)."""
    base = np.vstack([np.zeros(3), np.eye(3)])
    mapped = np.array([transform.TransformPoint([float(c) for c in p]) for p in base])
    m_lps = np.eye(4)
    m_lps[:3, 3] = mapped[0]
    m_lps[:3, :3] = (mapped[1:] - mapped[0]).T
    return _FLIP4 @ m_lps @ _FLIP4


def transform_from_ras_matrix(matrix_ras) -> sitk.AffineTransform:
    """ITK AffineTransform (LPS) equal to a 4x4 RAS point transform."""
    m = _FLIP4 @ np.asarray(matrix_ras, dtype=np.float64) @ _FLIP4
    t = sitk.AffineTransform(3)
    t.SetMatrix([float(x) for x in m[:3, :3].reshape(-1)])
    t.SetTranslation([float(x) for x in m[:3, 3]])
    return t


def rigid_ras_matrix(rotation_deg=(0.0, 0.0, 0.0), translation_mm=(0.0, 0.0, 0.0), center_ras=(0.0, 0.0, 0.0)) -> np.ndarray:
    """4x4 RAS rigid transform: rotations about R, A, S axes (degrees, applied x then y then z)
    about ``center_ras``, then a shift (mm)."""
    ax, ay, az = np.deg2rad(rotation_deg)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    r = rz @ ry @ rx
    c = np.asarray(center_ras, dtype=np.float64)
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = c - r @ c + np.asarray(translation_mm, dtype=np.float64)
    return m


def rigid_magnitude(matrix) -> tuple:
    """(rotation angle in degrees, translation length in mm) of a 4x4 (near-)rigid matrix."""
    r = np.asarray(matrix)[:3, :3]
    angle = math.degrees(math.acos(max(-1.0, min(1.0, (np.trace(r) - 1.0) / 2.0))))
    return angle, float(np.linalg.norm(np.asarray(matrix)[:3, 3]))


def move_frame(volume: Volume, matrix_ras) -> Volume:
    """The same voxels placed elsewhere in the world: IJK->RAS becomes ``matrix_ras @ IJK->RAS``.

    A point p of the original lies at ``matrix_ras @ p`` in the result, so the fixed->moving
    transform that registers the original (fixed) to the result (moving) is ``matrix_ras``.
    No voxel is interpolated (how the benchmark and tests apply a known offset losslessly).
    """
    return Volume(volume.array, np.asarray(matrix_ras, dtype=np.float64) @ volume.ijk_to_ras,
                  volume.labels, dict(volume.metadata))


def save_transform(transform: sitk.Transform, path) -> Path:
    """Write an ITK transform file (.tfm/.txt text, .h5 HDF5, .mat); atomic."""
    path = Path(path)
    suffix = full_suffix(path).lower()
    if suffix not in TRANSFORM_SUFFIXES:
        raise InputError(f"cannot write transform {path.name}: unknown format",
                         "use .tfm (linear transforms) or .h5 (any transform, including B-spline)")
    with atomic_output(path) as tmp:
        sitk.WriteTransform(transform, str(tmp))
    return path


def read_transform(path) -> sitk.Transform:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist", "check the transform file path")
    try:
        t = sitk.ReadTransform(str(path))
    except RuntimeError as e:
        raise InputError(f"{path.name} is not a readable ITK transform", "give a .tfm/.h5 written by ITK, Slicer or MedAI") from e
    # A single transform read back comes wrapped in a CompositeTransform; unwrap it for clarity.
    if isinstance(t, sitk.CompositeTransform) and t.GetNumberOfTransforms() == 1:
        t = t.GetNthTransform(0).Downcast()
    return t.Downcast() if hasattr(t, "Downcast") else t




# ------------------------------------------------------------------------------------------------
# masks
# ------------------------------------------------------------------------------------------------
def foreground_mask(volume: Volume) -> Volume:
    """Head/body mask: Otsu threshold, hole filling and the largest connected component.

    Used to restrict the metric to anatomy (optional) and to pick TRE points inside the head.
    """
    img = sitk.Cast(to_sitk(volume), sitk.sitkFloat32)
    mask = sitk.OtsuThreshold(img, 0, 1)
    mask = sitk.BinaryMorphologicalClosing(mask, [2, 2, 1])
    cc = sitk.RelabelComponent(sitk.ConnectedComponent(mask), sortByObjectSize=True)
    mask = sitk.Cast(cc == 1, sitk.sitkUInt8)
    # fill holes slice by slice is not needed for a metric mask; a 3D fill keeps dark ventricles in
    mask = sitk.BinaryFillhole(mask)
    arr = sitk.GetArrayFromImage(mask).astype(np.uint8)
    return volume.with_array(arr, labels=[])


def _mask_image(mask: Optional[Volume]) -> Optional[sitk.Image]:
    if mask is None:
        return None
    arr = (np.asarray(mask.array) > 0).astype(np.uint8)
    if not arr.any():
        raise InputError("the registration mask is empty", "give a mask with at least some non-zero voxels, or none")
    return to_sitk(mask.with_array(arr))


# ------------------------------------------------------------------------------------------------
# registration
# ------------------------------------------------------------------------------------------------
def _physical_center(image: sitk.Image) -> np.ndarray:
    size = np.array(image.GetSize(), dtype=np.float64)
    return np.array(image.TransformContinuousIndexToPhysicalPoint(((size - 1) / 2.0).tolist()))


def _choose_init(fixed: sitk.Image, moving: sitk.Image) -> str:
    """'world' when the scanner frames plausibly agree (centres close), else 'moments'."""
    extent = np.array(fixed.GetSize()) * np.array(fixed.GetSpacing())
    distance = np.linalg.norm(_physical_center(fixed) - _physical_center(moving))
    return "world" if distance < 0.25 * float(np.min(extent)) else "moments"


def _initial_rigid(fixed: sitk.Image, moving: sitk.Image, init: str) -> sitk.Euler3DTransform:
    if init == "world":
        t = sitk.Euler3DTransform()
        t.SetCenter([float(c) for c in _physical_center(fixed)])
        return t
    mode = {"geometry": sitk.CenteredTransformInitializerFilter.GEOMETRY,
            "moments": sitk.CenteredTransformInitializerFilter.MOMENTS}[init]
    return sitk.Euler3DTransform(sitk.CenteredTransformInitializer(fixed, moving, sitk.Euler3DTransform(), mode))


def _pyramid_image(image: sitk.Image, shrink: int, sigma_mm: float) -> sitk.Image:
    """One resolution level: Gaussian smoothing (mm) then block-averaging towards ``shrink`` x the
    finest spacing. Unlike SimpleITK's per-level shrink (one factor for all axes) a thick-slice axis
    is not shrunk further: 0.7x0.7x6.5 mm with shrink 4 gives 2.8x2.8x6.5 mm, not 2.8x2.8x26 mm."""
    if sigma_mm > 0:
        image = sitk.SmoothingRecursiveGaussian(image, [float(sigma_mm)] * 3)
    spacing = np.array(image.GetSpacing())
    target = shrink * float(spacing.min())
    factors = [int(max(1, min(target // s + 1e-9, n // 4))) for s, n in zip(spacing, image.GetSize())]
    return sitk.BinShrink(image, factors) if max(factors) > 1 else image


class _Runner:
    """Configured SimpleITK registration stages with our own resolution pyramid, progress and cancel."""

    def __init__(self, settings: RegistrationSettings, fixed_mask, moving_mask, progress: Optional[Progress]):
        self.s = settings
        self.fixed_mask, self.moving_mask = fixed_mask, moving_mask
        self.progress = progress
        self.cancelled = False

    def method(self, sampling: float, sitk_levels: bool = False) -> sitk.ImageRegistrationMethod:
        s = self.s
        r = sitk.ImageRegistrationMethod()
        r.SetMetricAsMattesMutualInformation(numberOfHistogramBins=int(s.histogram_bins))
        r.SetMetricSamplingStrategy(r.RANDOM)
        r.SetInterpolator(INTERPOLATORS[s.metric_interpolator])
        if sitk_levels:  # B-spline mesh refinement needs SimpleITK's own levels
            r.SetMetricSamplingPercentagePerLevel([float(p) for p in s.sampling_percentage], int(s.seed))
            r.SetShrinkFactorsPerLevel([int(f) for f in s.shrink_factors])
            r.SetSmoothingSigmasPerLevel([float(x) for x in s.smoothing_sigmas_mm])
            r.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
        else:
            r.SetMetricSamplingPercentage(float(sampling), int(s.seed))
        if self.fixed_mask is not None:
            r.SetMetricFixedMask(self.fixed_mask)
        if self.moving_mask is not None:
            r.SetMetricMovingMask(self.moving_mask)
        if s.threads:
            r.SetNumberOfThreads(int(s.threads))
        return r

    def run_linear(self, configure, initial, fixed, moving, span, label):
        """Run a linear stage level by level (coarse to fine); ``configure(r)`` sets the optimiser."""
        s = self.s
        n = len(s.shrink_factors)
        current, iterations, stop = initial, [], ""
        for level, (shrink, sigma, sampling) in enumerate(zip(s.shrink_factors, s.smoothing_sigmas_mm,
                                                               s.sampling_percentage)):
            f_img = _pyramid_image(fixed, int(shrink), float(sigma))
            m_img = _pyramid_image(moving, int(shrink), float(sigma))
            r = self.method(float(sampling))
            configure(r)
            r.SetInitialTransform(current, inPlace=False)
            level_span = (span[0] + (span[1] - span[0]) * level / n, span[0] + (span[1] - span[0]) * (level + 1) / n)
            out, its, stop = self._execute(r, f_img, m_img, level_span, f"{label}: level {level + 1}/{n}", s.iterations)
            iterations.append(its[0] if its else 0)
            current = _unwrap(out)
        return current, iterations, stop

    def _execute(self, r, fixed, moving, span, label, max_iterations):
        start, end = span
        iterations = []  # optimiser iterations per (SimpleITK) level

        def on_iteration():
            level = r.GetCurrentLevel()
            while len(iterations) <= level:
                iterations.append(0)
            iterations[level] += 1
            if self.progress is None:
                return
            frac = min(1.0, r.GetOptimizerIteration() / max(1, max_iterations))
            try:
                self.progress.update(start + (end - start) * frac, f"{label}, metric {r.GetMetricValue():.4f}")
            except Cancelled:
                # Raising inside an ITK callback is not reliable; ask the optimiser to stop instead.
                self.cancelled = True
                r.StopRegistration()

        r.AddCommand(sitk.sitkIterationEvent, on_iteration)
        out = r.Execute(fixed, moving)
        if self.cancelled:
            raise Cancelled()
        return out, iterations, r.GetOptimizerStopConditionDescription()


def metric_value(fixed: Volume, moving: Volume, transform: Optional[sitk.Transform] = None,
                 fixed_mask: Optional[Volume] = None, settings: Optional[RegistrationSettings] = None) -> float:
    """Mattes MI between ``fixed`` and ``moving`` seen through ``transform`` (identity: world alignment),
    at full resolution with the registration's own sampling. Lower is better."""
    s = settings or RegistrationSettings()
    fixed_img = sitk.Cast(to_sitk(fixed), sitk.sitkFloat32)
    moving_img = sitk.Cast(to_sitk(moving), sitk.sitkFloat32)
    return _metric(_Runner(s, _mask_image(fixed_mask), None, None), fixed_img, moving_img, transform)


def _metric(runner: _Runner, fixed_img, moving_img, transform) -> float:
    r = runner.method(float(runner.s.sampling_percentage[-1]))
    r.SetInitialTransform(transform or sitk.Transform(3, sitk.sitkIdentity))
    try:
        return float(r.MetricEvaluate(fixed_img, moving_img))
    except RuntimeError:  # no overlap at all: report "no information" rather than crash
        return 0.0


def register(fixed: Volume, moving: Volume, transform_type: str = "rigid", fixed_mask: Optional[Volume] = None,
             moving_mask: Optional[Volume] = None, settings: Optional[RegistrationSettings] = None,
             progress: Optional[Progress] = None, **overrides) -> RegistrationResult:
    """Register ``moving`` to ``fixed`` (rigid, affine or B-spline; Mattes MI, multi-resolution).

    Returns the fixed->moving transform (see module docstring), the moving image resampled onto the
    fixed grid and the metric before (world alignment) and after. ``overrides`` set fields of
    :class:`RegistrationSettings` (e.g. ``init="moments"``, ``shrink_factors=(2, 1)``).
    """
    s = dataclasses.replace(settings or RegistrationSettings(), transform_type=transform_type, **overrides)
    if s.transform_type not in TRANSFORM_TYPES:
        raise InputError(f"unknown registration type {s.transform_type!r}", f"use one of {', '.join(TRANSFORM_TYPES)}")
    if s.init not in INIT_MODES:
        raise InputError(f"unknown initialisation {s.init!r}", f"use one of {', '.join(INIT_MODES)}")
    if not (len(s.shrink_factors) == len(s.smoothing_sigmas_mm) == len(s.sampling_percentage)):
        raise InputError("shrink factors, smoothing sigmas and sampling percentages need one value per level",
                         "give the same number of values for each, e.g. 4 2 1 / 2 1 0 / 0.1 0.1 0.2")
    for name, v in (("fixed", fixed), ("moving", moving)):
        if v.array.ndim != 3 or min(v.array.shape) < 1:
            raise InputError(f"the {name} image is not a 3D volume", "give 3D scalar volumes")
    fixed_img = sitk.Cast(to_sitk(fixed), sitk.sitkFloat32)
    moving_img = sitk.Cast(to_sitk(moving), sitk.sitkFloat32)
    runner = _Runner(s, _mask_image(fixed_mask), _mask_image(moving_mask), progress)
    init = _choose_init(fixed_img, moving_img) if s.init == "auto" else s.init
    stages = ["rigid"] + ([s.transform_type] if s.transform_type != "rigid" else [])
    spans = {1: [(0.0, 1.0)], 2: [(0.0, 0.4), (0.4, 1.0)]}[len(stages)]
    if progress is not None:
        progress.update(0.0, f"registering ({s.transform_type}, start: {init})")

    metric_before = _metric(runner, fixed_img, moving_img, None)
    iterations, stops = [], []

    # Stage 1, always: rigid (the stable start for affine and B-spline too).
    def regular_step(learning_rate):
        def configure(r):
            r.SetOptimizerAsRegularStepGradientDescent(learningRate=learning_rate, minStep=s.min_step,
                                                       numberOfIterations=int(s.iterations), relaxationFactor=0.5,
                                                       gradientMagnitudeTolerance=1e-8)
            r.SetOptimizerScalesFromPhysicalShift()
        return configure

    start = _initial_rigid(fixed_img, moving_img, init)
    rigid, its, stop = runner.run_linear(regular_step(s.learning_rate), sitk.Euler3DTransform(start),
                                         fixed_img, moving_img, spans[0], "rigid")
    iterations.append({"rigid": its})
    stops.append(stop)
    final = rigid

    if s.transform_type == "affine":
        affine = sitk.AffineTransform(3)
        affine.SetCenter(rigid.GetCenter())
        affine.SetMatrix(rigid.GetMatrix())
        affine.SetTranslation(rigid.GetTranslation())
        final, its, stop = runner.run_linear(regular_step(s.learning_rate / 2), affine, fixed_img, moving_img,
                                             spans[1], "affine")
        iterations.append({"affine": its})
        stops.append(stop)
    elif s.transform_type == "bspline":
        extent = np.array(fixed_img.GetSize()) * np.array(fixed_img.GetSpacing())
        mesh = [max(1, int(round(e / s.bspline_grid_mm))) for e in extent]
        bspline = sitk.BSplineTransformInitializer(fixed_img, mesh, order=3)
        r = runner.method(float(s.sampling_percentage[-1]), sitk_levels=True)
        r.SetMovingInitialTransform(rigid)
        r.SetInitialTransformAsBSpline(bspline, inPlace=True, scaleFactors=[2 ** i for i in range(len(s.shrink_factors))])
        # LBFGS2 (not LBFGSB): ITK's LBFGSB keeps the first level's scales when the mesh is refined.
        r.SetOptimizerAsLBFGS2(solutionAccuracy=1e-2, numberOfIterations=int(s.bspline_iterations),
                               deltaConvergenceTolerance=0.01)
        _, its, stop = runner._execute(r, fixed_img, moving_img, spans[1], "B-spline", s.bspline_iterations)
        iterations.append({"bspline": its})
        stops.append(stop)
        # Composite applies the last transform first: x -> rigid(bspline(x)).
        final = sitk.CompositeTransform([rigid, bspline])

    metric_after = _metric(runner, fixed_img, moving_img, final)
    note = None
    metric_start = _metric(runner, fixed_img, moving_img, start)
    if metric_after > metric_start:
        # Safety net: the gradient optimiser ended worse (by the full-resolution metric) than where it
        # started. Seen on weak multimodal pairs (prostate T2 vs DWI), where the MI gradient pushes
        # points out of the overlap. Retry rigid from the start with a derivative-free simplex
        # (Nelder-Mead) at full resolution; keep whichever of the two is best by the metric.
        if progress is not None:
            progress.log(f"gradient descent ended worse than the start ({metric_after:.4f} vs {metric_start:.4f}); "
                         "retrying with a simplex optimiser")
        simplex = _simplex_rigid(runner, fixed_img, moving_img, start)
        metric_simplex = _metric(runner, fixed_img, moving_img, simplex)
        if metric_simplex < metric_start:
            note = (f"gradient descent did not improve the metric ({metric_start:.4f} at the start, {metric_after:.4f} "
                    f"after); a rigid simplex (Nelder-Mead) search from the start gave {metric_simplex:.4f} and was used"
                    + ("" if s.transform_type == "rigid" else f" (rigid only: the {s.transform_type} stage was dropped)"))
            final, metric_after = simplex, metric_simplex
        else:
            note = (f"registration did not improve the metric ({metric_start:.4f} at the start, {metric_after:.4f} "
                    f"after, simplex {metric_simplex:.4f}); the starting alignment ({init}) was kept")
            final, metric_after = start, metric_start
        if progress is not None:
            progress.log(note)
    if progress is not None:
        progress.update(0.98, "resampling moving image onto the fixed grid")
    resampled = resample_to(moving, fixed, "linear", final)
    return RegistrationResult(final, resampled, s.transform_type, metric_before, metric_after, iterations,
                              stops, init, s.to_dict(), note=note)


def _simplex_rigid(runner: "_Runner", fixed_img, moving_img, start) -> sitk.Euler3DTransform:
    """Rigid Nelder-Mead (Amoeba) search from ``start`` at full resolution: uses metric values only."""
    r = runner.method(float(runner.s.sampling_percentage[-1]))
    r.SetOptimizerAsAmoeba(simplexDelta=1.0, numberOfIterations=200)
    r.SetOptimizerScales([50.0, 50.0, 50.0, 1.0, 1.0, 1.0])  # 1 unit = 1/50 rad (~1.1 deg) or 1 mm
    r.SetInitialTransform(sitk.Euler3DTransform(start), inPlace=False)
    out, _, _ = runner._execute(r, fixed_img, moving_img, (0.9, 0.97), "rigid (simplex)", 200)
    return sitk.Euler3DTransform(_unwrap(out))


def _unwrap(t: sitk.Transform) -> sitk.Transform:
    """Registration returns a CompositeTransform wrapper when inPlace=False; get the real one."""
    if isinstance(t, sitk.CompositeTransform) and t.GetNumberOfTransforms() == 1:
        t = t.GetNthTransform(0)
    return t.Downcast() if hasattr(t, "Downcast") else t


# ------------------------------------------------------------------------------------------------
# accuracy: target registration error
# ------------------------------------------------------------------------------------------------
def _stats(d: np.ndarray, spacing=None) -> dict:
    out = {"n_points": int(d.size), "mean": float(np.mean(d)), "median": float(np.median(d)),
           "rms": float(np.sqrt(np.mean(d ** 2))), "p95": float(np.percentile(d, 95)), "max": float(np.max(d))}
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}


def tre_against_transform(transform: sitk.Transform, true_fixed_to_moving_ras, points_ras) -> dict:
    """TRE (mm) at fixed-space RAS points: |found(p) - true(p)| with ``true`` a 4x4 RAS matrix or an ITK transform."""
    pts = np.atleast_2d(np.asarray(points_ras, dtype=np.float64))
    found = transform_points_ras(transform, pts)
    if isinstance(true_fixed_to_moving_ras, sitk.Transform):
        truth = transform_points_ras(true_fixed_to_moving_ras, pts)
    else:
        m = np.asarray(true_fixed_to_moving_ras, dtype=np.float64)
        truth = pts @ m[:3, :3].T + m[:3, 3]
    return _stats(np.linalg.norm(found - truth, axis=1))


def tre_landmarks(transform: sitk.Transform, fixed_points_ras, moving_points_ras) -> dict:
    """TRE (mm) of corresponding landmarks: |transform(fixed_i) - moving_i|."""
    fixed_pts = np.atleast_2d(np.asarray(fixed_points_ras, dtype=np.float64))
    moving_pts = np.atleast_2d(np.asarray(moving_points_ras, dtype=np.float64))
    if fixed_pts.shape != moving_pts.shape:
        raise InputError(f"{len(fixed_pts)} fixed landmarks but {len(moving_pts)} moving landmarks",
                         "give the same number of corresponding points in both files, in the same order")
    d = np.linalg.norm(transform_points_ras(transform, fixed_pts) - moving_pts, axis=1)
    return _stats(d)


def read_landmarks(path) -> np.ndarray:
    """RAS points (N, 3) from a Slicer markups .json/.fcsv or a plain CSV of x,y,z (RAS, mm)."""
    import csv
    import json

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist", "check the landmarks file path")
    if path.suffix.lower() == ".json":
        doc = json.loads(path.read_text())
        pts = []
        for markup in doc.get("markups", []):
            lps = markup.get("coordinateSystem", "LPS") == "LPS"
            for cp in markup.get("controlPoints", []):
                p = np.asarray(cp["position"], dtype=np.float64)
                pts.append(geometry.LPS_TO_RAS @ p if lps else p)
        return np.asarray(pts).reshape(-1, 3)
    rows, lps = [], False
    with open(path, newline="") as f:
        for row in csv.reader(f):
            if not row:
                continue
            if row[0].startswith("#"):
                lps = lps or "LPS" in ",".join(row)
                continue
            try:
                # .fcsv rows are id,x,y,z,...; plain CSV rows are x,y,z
                vals = [float(v) for v in (row[1:4] if path.suffix.lower() == ".fcsv" else row[:3])]
            except ValueError:
                continue  # header line
            rows.append(vals)
    pts = np.asarray(rows, dtype=np.float64).reshape(-1, 3)
    return pts @ geometry.LPS_TO_RAS.T if lps else pts
