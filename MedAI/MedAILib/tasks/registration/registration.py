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
random sampling restricted to each image's head/body mask grown by a margin (so the air around the
head does not dilute the histogram, while the skin edge stays in), three resolution levels (shrink
4/2/1 with 2/1/0 mm Gaussian smoothing), a start transform that trusts the scanner frame when the
two images overlap ("world"), otherwise aligns intensity centroids ("moments"), then a coarse global
search (a grid of rotations scored at the coarsest level; the unrotated start and the best-scoring
rotations are optimised there and the best of those continues) before the local optimiser. The rigid
stage is checked by a backward run (FIXED onto MOVING, finer levels, from the inverse of the forward
coarse result): their disagreement (mean mm over the fixed mask), the metric before/after and rival
optima of the global search say how far the result can be trusted (``RegistrationResult.reliability``,
``warnings``). Affine and B-spline start from that rigid
result; when one of them is replaced by a rigid result (it ended worse than the rigid stage, or the
safety net below kept a rigid one), ``transform_type`` says "rigid", ``requested_type`` keeps what was
asked for, and ``warnings`` says why: nothing is downgraded silently.
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
    auto_mask: bool = True                 # metric mask = head mask + margin when no mask is given
    mask_margin_mm: float = 10.0           # grow the head mask so the skin/air edge stays in the metric
    global_search: bool = True             # rotation grid at the coarsest level before the local optimiser
    search_angles_deg: Sequence[float] = (-10.0, 0.0, 10.0)   # per Euler angle (3^3 = 27 starts)
    search_candidates: int = 3             # best grid starts optimised at the coarsest level
    backward_check: bool = True            # also register FIXED onto MOVING; their disagreement is reported
    average_backward: bool = False         # deliver the rigid transform halfway between the two runs
    agreement_tolerance_mm: float = 1.0    # forward/backward disagreement above this = unreliable
    max_samples: int = 100_000             # cap on metric samples per level (MI needs ~1e5; 512x512 slices give 1e6)

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
    requested_type: Optional[str] = None   # what was asked for (transform_type is what was delivered)
    warnings: list = dataclasses.field(default_factory=list)   # fall-backs and reliability doubts, one line each
    reliability: dict = dataclasses.field(default_factory=dict)

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
            "requested_type": self.requested_type or self.transform_type,
            "fell_back": bool(self.requested_type and self.requested_type != self.transform_type),
            "reliable": self.reliability.get("reliable"),
            "reliability": self.reliability,
            "warnings": list(self.warnings),
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


def head_mask_image(image: sitk.Image, margin_mm: float) -> Optional[sitk.Image]:
    """The metric mask used when none is given: :func:`foreground_mask`'s head (Otsu, closing, largest
    component, holes filled) grown by ``margin_mm`` (a distance map, so thick slices grow in mm, not
    voxels). None when no plausible head is found (under 2 % of the image): the whole image is used."""
    img = sitk.Cast(image, sitk.sitkFloat32)
    mask = sitk.OtsuThreshold(img, 0, 1)
    mask = sitk.BinaryMorphologicalClosing(mask, [2, 2, 1])
    cc = sitk.RelabelComponent(sitk.ConnectedComponent(mask), sortByObjectSize=True)
    mask = sitk.BinaryFillhole(sitk.Cast(cc == 1, sitk.sitkUInt8))
    arr = sitk.GetArrayViewFromImage(mask)
    if arr.mean() < 0.02:
        return None
    if margin_mm > 0:
        dist = sitk.SignedMaurerDistanceMap(mask, insideIsPositive=False, squaredDistance=False, useImageSpacing=True)
        mask = sitk.Cast(dist <= float(margin_mm), sitk.sitkUInt8)
    return mask


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

    def method(self, sampling: float, sitk_levels: bool = False, image: Optional[sitk.Image] = None
               ) -> sitk.ImageRegistrationMethod:
        """A configured registration method; ``image`` (the level's fixed image) caps the sampling
        fraction at ``max_samples`` points."""
        s = self.s
        if image is not None and s.max_samples:
            sampling = min(float(sampling), float(s.max_samples) / float(np.prod(image.GetSize())))
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

    def run_linear(self, configure, initial, fixed, moving, span, label, levels=None):
        """Run a linear stage level by level (coarse to fine); ``configure(r)`` sets the optimiser.
        ``levels``: the level indices to run (default all)."""
        s = self.s
        n = len(s.shrink_factors)
        current, iterations, stop = initial, [], ""
        for level, (shrink, sigma, sampling) in enumerate(zip(s.shrink_factors, s.smoothing_sigmas_mm,
                                                               s.sampling_percentage)):
            if levels is not None and level not in levels:
                continue
            f_img = _pyramid_image(fixed, int(shrink), float(sigma))
            m_img = _pyramid_image(moving, int(shrink), float(sigma))
            r = self.method(float(sampling), image=f_img)
            configure(r)
            r.SetInitialTransform(current, inPlace=False)
            level_span = (span[0] + (span[1] - span[0]) * level / n, span[0] + (span[1] - span[0]) * (level + 1) / n)
            out, its, stop = self._execute(r, f_img, m_img, level_span, f"{label}: level {level + 1}/{n}", s.iterations)
            iterations.append(its[0] if its else 0)
            current = _unwrap(out)
        return current, iterations, stop

    def check_cancel(self):
        if self.progress is not None:
            self.progress.cancel.check()

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
    mask = _mask_image(fixed_mask)
    if mask is None and s.auto_mask:  # the same metric register() reports
        mask = head_mask_image(fixed_img, s.mask_margin_mm)
    return _metric(_Runner(s, mask, None, None), fixed_img, moving_img, transform)


def _metric(runner: _Runner, fixed_img, moving_img, transform) -> float:
    r = runner.method(float(runner.s.sampling_percentage[-1]), image=fixed_img)
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
    fixed grid, the metric before (world alignment) and after, ``reliability`` (forward/backward
    agreement, metric values; ``reliable`` False with the reasons in ``warnings`` when in doubt) and
    the delivered ``transform_type`` (``requested_type`` is what was asked for). ``overrides`` set
    fields of :class:`RegistrationSettings` (e.g. ``init="moments"``, ``shrink_factors=(2, 1)``).
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
    fmask, mmask = _mask_image(fixed_mask), _mask_image(moving_mask)
    masks = {"fixed": "given" if fmask is not None else None, "moving": "given" if mmask is not None else None}
    if s.auto_mask:
        if fmask is None:
            fmask = head_mask_image(fixed_img, s.mask_margin_mm)
            masks["fixed"] = f"head + {s.mask_margin_mm:g} mm" if fmask is not None else "none (no head found)"
        if mmask is None:
            mmask = head_mask_image(moving_img, s.mask_margin_mm)
            masks["moving"] = f"head + {s.mask_margin_mm:g} mm" if mmask is not None else "none (no head found)"
    # The forward run samples the fixed image inside the fixed mask; the moving mask is used only as the
    # fixed mask of the backward run (a moving mask in the metric rejects samples as the image moves,
    # which makes the metric jump).
    runner = _Runner(s, fmask, mmask if moving_mask is not None else None, progress)
    init = _choose_init(fixed_img, moving_img) if s.init == "auto" else s.init
    warnings: list = []
    if progress is not None:
        progress.update(0.0, f"registering ({s.transform_type}, start: {init})")

    metric_before = _metric(runner, fixed_img, moving_img, None)
    iterations, stops = [], []
    rigid_span = (0.0, 1.0) if s.transform_type == "rigid" else (0.0, 0.5)
    half = (rigid_span[0], (rigid_span[0] + rigid_span[1]) / 2) if s.backward_check else rigid_span

    # Stage 1, always: rigid (the stable start for affine and B-spline too).
    start = _initial_rigid(fixed_img, moving_img, init)
    points = _mask_points(fmask, fixed_img)  # where agreement between transforms is measured (mm)
    fwd, info = _rigid_one_way(runner, fixed_img, moving_img, start, half, "rigid", points)
    iterations.append({"rigid": info["iterations"]})
    stops.append(info["stop"])
    rigid = fwd
    reliability = {"metric_start": None, "search": info.get("search")}
    search = info.get("search") or {}
    if search.get("rival_mm") is not None and search["rival_mm"] > s.agreement_tolerance_mm:
        warnings.append(f"unreliable: two starts of the global search reached almost the same metric "
                        f"({search['rival_metric']:.4f} vs {search['best_metric']:.4f}) {search['rival_mm']:.1f} mm "
                        "apart: the images may not hold enough to pin the alignment down")
    if s.backward_check:
        # Backward run: FIXED onto MOVING over the finer levels, from the inverse of the forward run's
        # coarse result. It samples the other image's grid and interpolates the other image, so a
        # result that depends on those choices (or a shallow optimum) shows up as a disagreement. The
        # forward result is delivered: averaging the two was tried and moved the answer further from the
        # truth on a TCIA pair (0.52 vs 0.36 mm, docs/fusion.md); ``average_backward`` keeps the option.
        back_runner = _Runner(s, mmask, fmask if fixed_mask is not None else None, progress)
        n = len(s.shrink_factors)
        back_start = sitk.Euler3DTransform(info["coarse"].GetInverse())
        back, back_its, back_stop = back_runner.run_linear(
            _regular_step(s, s.learning_rate), back_start, moving_img, fixed_img, (half[1], rigid_span[1]),
            "rigid, backward", levels=list(range(1 if n > 1 else 0, n)))
        back = sitk.Euler3DTransform(back)
        iterations.append({"rigid_backward": back_its})
        stops.append(back_stop)
        backward_inverse = sitk.Euler3DTransform(back.GetInverse())
        gap = np.linalg.norm(_apply(fwd, points) - _apply(backward_inverse, points), axis=1)
        metric_fwd = _metric(runner, fixed_img, moving_img, fwd)
        metric_bwd = _metric(runner, fixed_img, moving_img, backward_inverse)
        reliability.update(forward_inverse_mm=round(float(gap.mean()), 4), forward_inverse_max_mm=round(float(gap.max()), 4),
                           metric_forward=metric_fwd, metric_backward=metric_bwd)
        if gap.mean() > s.agreement_tolerance_mm:
            # Averaging a good and a bad answer gives neither: keep the better by the metric, say so.
            rigid = fwd if metric_fwd <= metric_bwd else backward_inverse
            reliability["kept"] = "forward" if rigid is fwd else "backward"
            warnings.append(f"unreliable: registering MOVING onto FIXED and FIXED onto MOVING disagree by "
                            f"{gap.mean():.2f} mm on average (max {gap.max():.2f} mm; tolerance "
                            f"{s.agreement_tolerance_mm:g} mm): check the result visually")
        elif s.average_backward:
            rigid = _rigid_midpoint(fwd, backward_inverse, points)
            reliability["kept"] = "midpoint"
            reliability["metric_midpoint"] = _metric(runner, fixed_img, moving_img, rigid)
        else:
            reliability["kept"] = "forward"
    final, delivered = rigid, "rigid"
    metric_rigid = _metric(runner, fixed_img, moving_img, rigid)

    if s.transform_type == "affine":
        affine = sitk.AffineTransform(3)
        affine.SetCenter(rigid.GetCenter())
        affine.SetMatrix(rigid.GetMatrix())
        affine.SetTranslation(rigid.GetTranslation())
        final, its, stop = runner.run_linear(_regular_step(s, s.learning_rate / 2), affine, fixed_img, moving_img,
                                             (0.5, 1.0), "affine")
        iterations.append({"affine": its})
        stops.append(stop)
        delivered = "affine"
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
        _, its, stop = runner._execute(r, fixed_img, moving_img, (0.5, 1.0), "B-spline", s.bspline_iterations)
        iterations.append({"bspline": its})
        stops.append(stop)
        # Composite applies the last transform first: x -> rigid(bspline(x)).
        final = sitk.CompositeTransform([rigid, bspline])
        delivered = "bspline"

    metric_after = _metric(runner, fixed_img, moving_img, final)
    if delivered != "rigid" and metric_after > metric_rigid:
        warnings.append(f"the {s.transform_type} stage ended worse than the rigid stage (metric {metric_after:.4f} vs "
                        f"{metric_rigid:.4f}): the RIGID result is delivered, not {s.transform_type}")
        final, delivered, metric_after = rigid, "rigid", metric_rigid
    note = None
    metric_start = _metric(runner, fixed_img, moving_img, start)
    reliability["metric_start"] = metric_start
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
                    f"after); a rigid simplex (Nelder-Mead) search from the start gave {metric_simplex:.4f} and was used")
            final, metric_after = simplex, metric_simplex
        else:
            note = (f"registration did not improve the metric ({metric_start:.4f} at the start, {metric_after:.4f} "
                    f"after, simplex {metric_simplex:.4f}); the starting alignment ({init}) was kept")
            final, metric_after = start, metric_start
            warnings.append("unreliable: " + note)
        if delivered != "rigid":
            warnings.append(f"{note}: the RIGID result is delivered, not {s.transform_type}")
        delivered = "rigid"
        if progress is not None:
            progress.log(note)
    reliability.update(metric_before=metric_before, metric_after=metric_after, masks=masks,
                       improved=bool(metric_after < metric_before or metric_after < metric_start),
                       reliable=not any(w.startswith("unreliable") for w in warnings))
    for w in warnings:
        if progress is not None:
            progress.log("warning: " + w)
    if progress is not None:
        progress.update(0.98, "resampling moving image onto the fixed grid")
    resampled = resample_to(moving, fixed, "linear", final)
    return RegistrationResult(final, resampled, delivered, metric_before, metric_after, iterations,
                              stops, init, s.to_dict(), note=note, requested_type=s.transform_type,
                              warnings=warnings, reliability=reliability)


def _regular_step(s: RegistrationSettings, learning_rate: float):
    def configure(r):
        r.SetOptimizerAsRegularStepGradientDescent(learningRate=learning_rate, minStep=s.min_step,
                                                   numberOfIterations=int(s.iterations), relaxationFactor=0.5,
                                                   gradientMagnitudeTolerance=1e-8)
        r.SetOptimizerScalesFromPhysicalShift()
    return configure


def _rigid_one_way(runner: "_Runner", fixed_img, moving_img, start, span, label, points):
    """Rigid MOVING onto FIXED: optional coarse global search, then the pyramid from its winner.
    ``info["coarse"]`` is the transform after the coarsest level."""
    s = runner.s
    n = len(s.shrink_factors)
    current = sitk.Euler3DTransform(start)
    info = {"iterations": [], "stop": ""}
    coarse_span = (span[0], span[0] + (span[1] - span[0]) / n)
    if s.global_search and len(s.search_angles_deg) > 1:
        current, info["search"] = _global_search(runner, fixed_img, moving_img, current, coarse_span, label, points)
        info["iterations"].append(info["search"]["iterations"])
    else:
        current, its, info["stop"] = runner.run_linear(_regular_step(s, s.learning_rate), current, fixed_img, moving_img,
                                                       coarse_span, label, levels=[0])
        info["iterations"] += its
    info["coarse"] = sitk.Euler3DTransform(current)
    if n > 1:
        current, its, info["stop"] = runner.run_linear(_regular_step(s, s.learning_rate), current, fixed_img, moving_img,
                                                       (coarse_span[1], span[1]), label, levels=list(range(1, n)))
        info["iterations"] += its
    return sitk.Euler3DTransform(current), info


def _global_search(runner: "_Runner", fixed_img, moving_img, start, span, label, points):
    """Score a grid of rotations (about the start's centre, keeping its translation) at the coarsest
    level, optimise the best few there, return the best by the metric and what was seen: each
    optimised start's metric and distance (mean mm over ``points``) from the winner; ``rival_mm`` is
    that distance for the closest competitor by metric (within 1 % of the best), when there is one."""
    s = runner.s
    f_img = _pyramid_image(fixed_img, int(s.shrink_factors[0]), float(s.smoothing_sigmas_mm[0]))
    m_img = _pyramid_image(moving_img, int(s.shrink_factors[0]), float(s.smoothing_sigmas_mm[0]))
    sampling = float(s.sampling_percentage[0])
    angles = [math.radians(a) for a in s.search_angles_deg]
    base = [start.GetAngleX(), start.GetAngleY(), start.GetAngleZ()]
    scored = []
    for ax in angles:
        for ay in angles:
            for az in angles:
                t = sitk.Euler3DTransform(start)
                t.SetRotation(base[0] + ax, base[1] + ay, base[2] + az)
                scored.append((_metric_on(runner, f_img, m_img, t, sampling), (ax, ay, az), t))
        runner.check_cancel()
    # the unrotated start always competes (it is the usual answer); the best-scoring rotations join it
    plain = [x for x in scored if x[1] == (0.0, 0.0, 0.0)][:1]
    others = sorted((x for x in scored if x[1] != (0.0, 0.0, 0.0)), key=lambda x: x[0])
    k = max(1, int(s.search_candidates))
    candidates = (plain + others)[:1] if k == 1 else plain + others[:k - len(plain)]
    done = []
    for c, (m0, a, t) in enumerate(candidates):
        sub = (span[0] + (span[1] - span[0]) * c / k, span[0] + (span[1] - span[0]) * (c + 1) / k)
        out, its, _ = runner.run_linear(_regular_step(s, s.learning_rate), t, fixed_img, moving_img, sub,
                                        f"{label}: global search start {c + 1}/{k}", levels=[0])
        done.append((_metric_on(runner, f_img, m_img, out, sampling), sitk.Euler3DTransform(out), a, m0,
                     its[0] if its else 0))
    best = min(done, key=lambda d: d[0])
    at_best = _apply(best[1], points)
    results, rival = [], None
    for m1, out, a, m0, its in done:
        dist = float(np.linalg.norm(_apply(out, points) - at_best, axis=1).mean())
        results.append({"start_deg": [round(math.degrees(x), 2) for x in a], "metric_start": m0, "metric": m1,
                        "iterations": its, "distance_to_best_mm": round(dist, 3)})
        if out is not best[1] and abs(m1 - best[0]) <= 0.01 * abs(best[0]) and (rival is None or dist > rival[0]):
            rival = (dist, m1)
    return best[1], {"grid_points": len(scored), "optimised": results, "iterations": best[4],
                     "best_metric": best[0], "rival_mm": rival[0] if rival else None,
                     "rival_metric": rival[1] if rival else None}


def _metric_on(runner: "_Runner", f_img, m_img, transform, sampling: float) -> float:
    r = runner.method(sampling, image=f_img)
    r.SetInitialTransform(transform)
    try:
        return float(r.MetricEvaluate(f_img, m_img))
    except RuntimeError:  # too few samples in the overlap: no information
        return 0.0


def _mask_points(mask: Optional[sitk.Image], image: sitk.Image, n: int = 20000) -> np.ndarray:
    """Up to ``n`` physical (LPS) points spread over the mask (or the whole image)."""
    if mask is not None:
        arr = sitk.GetArrayViewFromImage(mask)
        k, j, i = np.nonzero(arr)
    else:
        size = image.GetSize()
        k, j, i = [a.ravel() for a in np.meshgrid(*(np.arange(0, size[d], max(1, size[d] // 30)) for d in (2, 1, 0)),
                                                   indexing="ij")]
    step = max(1, len(i) // n)
    idx = np.stack([i, j, k], 1)[::step].astype(float)
    ref = mask if mask is not None else image
    origin, spacing = np.array(ref.GetOrigin()), np.array(ref.GetSpacing())
    direction = np.array(ref.GetDirection()).reshape(3, 3)
    return origin + (idx * spacing) @ direction.T


def _apply(transform: sitk.Transform, points: np.ndarray) -> np.ndarray:
    return np.array([transform.TransformPoint([float(c) for c in p]) for p in points])


def _rigid_midpoint(a: sitk.Transform, b: sitk.Transform, points: np.ndarray) -> sitk.Euler3DTransform:
    """The rigid transform closest (least squares, Kabsch) to the point-wise average of ``a`` and ``b``."""
    target = (_apply(a, points) + _apply(b, points)) / 2.0
    pc, tc = points.mean(0), target.mean(0)
    h = (points - pc).T @ (target - tc)
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(vt.T @ u.T))
    rot = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    out = sitk.Euler3DTransform()
    out.SetCenter([float(c) for c in a.GetCenter()] if hasattr(a, "GetCenter") else [0.0, 0.0, 0.0])
    out.SetMatrix([float(x) for x in rot.reshape(-1)])
    c = np.array(out.GetCenter())
    # x -> R (x - c) + c + t must send pc to tc
    out.SetTranslation([float(x) for x in (tc - rot @ (pc - c) - c)])
    return out


def _simplex_rigid(runner: "_Runner", fixed_img, moving_img, start) -> sitk.Euler3DTransform:
    """Rigid Nelder-Mead (Amoeba) search from ``start`` at full resolution: uses metric values only."""
    r = runner.method(float(runner.s.sampling_percentage[-1]), image=fixed_img)
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
        doc = json.loads(path.read_text(encoding="utf-8"))
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
