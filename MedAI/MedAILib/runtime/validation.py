"""Input validation before any model runs: one clear message per problem (what is wrong, what to do).

``check_inputs(volumes, spec)`` raises :class:`~MedAILib.core.errors.InputError` for the first problem
that makes a run pointless or wrong, and returns a list of warnings for things it fixed or that
look suspicious. Safe type conversions (int64 / uint32 / float64 ... -> int32 or float32) are done by
replacing ``volume.array`` (a new array; the caller's original buffer is not modified) and reported
as warnings.

``spec`` describes what the model needs; every key is optional:

- ``n_inputs`` (int) and ``input_names`` (list of str): how many input volumes and what they are.
- ``aligned`` (bool): several inputs must share one voxel grid (default True when n_inputs > 1).
- ``modality`` ("CT" | "MR" | ...), or ``modalities`` (one per input): checked with
  :func:`guess_modality` and the DICOM Modality tag when present.
- ``modality_check``: "error" (default) | "warn" | "off".
- ``allow_2d`` (bool, default False): accept single-slice images.
- ``max_spacing_mm`` (default 100), ``memory_factor`` (default 12: float32 copies the
  pre-processing, network activations and post-processing need per input voxel),
  ``model`` (a name used in messages).
- ``accept_input_warnings`` (bool): turn the *sanity* refusals below into warnings. Also on when
  the environment variable ``MEDAI_ACCEPT_INPUT_WARNINGS`` is 1 (what the commands' flag
  ``--accept-input-warnings`` sets, so every check of the run, CLI pre-check and pipeline, agrees).
- ``sanity`` (bool, default True): run the sanity checks at all.

Sanity checks (issue 14): inputs that read fine and have valid values but on which a model would
answer nonsense without a word. Always refused (no flag helps): a segmentation given as the image
(a ``.seg.nrrd``, a DICOM SEG/RTSTRUCT/other non-image object). Refused unless accepted (then a
warning): a volume that looks like a label map (integer values, at most ``LABELMAP_MAX_VALUES``
distinct ones, or up to ``LABELMAP_MAX_CLASSES`` in uniform regions); absurd outliers (a value more than ``OUTLIER_FACTOR`` times the 99.9th percentile of
the non-zero magnitudes: one voxel of 1e30 wrecks intensity normalisation); fewer than
``MIN_SLICES`` voxels along an axis (too thin for a 3D network's receptive field); voxels more than
``MAX_ANISOTROPY`` times longer along one axis than another (0.1 x 0.1 x 20 mm); a sheared
direction matrix (axes not at right angles, e.g. an uncorrected gantry tilt).

The modality heuristic (documented because it can be wrong, see :func:`guess_modality`):
CT in Hounsfield units has air at about -1000 and fat below 0; MR intensities are arbitrary but
almost never strongly negative. So a volume where >= 5 % of voxels lie in [-1100, -850] (air) or
>= 2 % lie below -500 "looks like CT". A volume with no voxel below -50 "looks unlike CT (HU)".
Anything else is undecided. An MR model given a CT-looking volume is an error (the model would
see values far outside anything it was trained on); a CT model given a volume with no
negative values is a warning (raw CT without the rescale intercept also looks like that).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from MedAILib.core.errors import InputError
from MedAILib.core.limits import physical_memory_bytes as _physical_memory_bytes

MAX_SPACING_MM = 100.0
MIN_SPACING_MM = 1e-3
DEFAULT_MEMORY_FACTOR = 12

# --- sanity limits (see module doc; each was chosen to pass every real image in the test data) ----
ACCEPT_FLAG = "--accept-input-warnings"
ACCEPT_ENV = "MEDAI_ACCEPT_INPUT_WARNINGS"
LABELMAP_MAX_VALUES = 8      # a real scan has hundreds of distinct values; a label map a handful
LABELMAP_MAX_CLASSES = 1000  # ... or many classes (TotalSegmentator: 117) when it is piecewise constant:
LABELMAP_MIN_CONSTANT = 0.7  # fraction of equal foreground neighbours (label maps >= 0.78, scans <= 0.07)
OUTLIER_FACTOR = 1000.0      # times the 99.9th percentile of |non-zero voxels|
MIN_SLICES = 4               # voxels along the thinnest axis
MAX_ANISOTROPY = 30.0        # largest / smallest voxel spacing (0.4 x 0.4 x 5 mm = 12.5 passes)
SHEAR_TOLERANCE = 1e-3       # |cos| of the angle between two voxel axes (0.06 degrees)
# DICOM Modality values of objects that are not images a model can segment
NOT_IMAGE_MODALITIES = {"SEG": "a DICOM Segmentation object (SEG)", "RTSTRUCT": "a DICOM RT structure set",
                        "RTPLAN": "a DICOM RT plan", "SR": "a DICOM structured report", "PR": "a DICOM presentation state",
                        "KO": "a DICOM key-object selection", "REG": "a DICOM registration object",
                        "RWV": "a DICOM real-world value mapping", "DOC": "a DICOM encapsulated document"}

# dtypes models take as they are (MONAI casts to float32 on the way in)
_NATIVE = {np.dtype(t) for t in (np.uint8, np.int8, np.int16, np.uint16, np.int32, np.float32)}


# --- helpers ---------------------------------------------------------------------------------
def _name(volume, index: int, spec: dict) -> str:
    names = spec.get("input_names") or []
    if index < len(names):
        label = names[index]
        src = getattr(volume, "metadata", {}).get("source")
        return f"{label} ({Path(src).name})" if src else label
    src = getattr(volume, "metadata", {}).get("source")
    return Path(src).name if src else f"input {index + 1}"


def physical_memory_bytes() -> int:
    """Total RAM of this computer (:func:`MedAILib.core.limits.physical_memory_bytes`); 0 when unknown."""
    return _physical_memory_bytes()


def estimate_memory_bytes(n_voxels: int, factor: float = DEFAULT_MEMORY_FACTOR, bytes_per_voxel: int = 4) -> int:
    """Rough peak memory to run a model on ``n_voxels``: float32 copies x ``factor``."""
    return int(n_voxels) * int(bytes_per_voxel) * float(factor)


def _gb(n: float) -> str:
    return f"{n / 1024 ** 3:.1f} GB"


def check_memory(n_voxels: int, name: str, factor: float = DEFAULT_MEMORY_FACTOR, bytes_per_voxel: int = 4) -> None:
    """Refuse a volume whose estimated peak memory exceeds this computer's RAM."""
    need = estimate_memory_bytes(n_voxels, factor, bytes_per_voxel)
    have = physical_memory_bytes()
    if have and need > have:
        raise InputError(
            f"{name} is too large: {n_voxels:,} voxels need about {_gb(need)} of memory, this computer has {_gb(have)}",
            "crop the volume to the region of interest or resample it to a coarser spacing first",
        )


# --- single-volume checks --------------------------------------------------------------------
def _check_shape(volume, name: str, spec: dict) -> None:
    a = volume.array
    if a.ndim > 3:
        raise InputError(
            f"{name} is {a.ndim}D (shape {a.shape}: several frames or channels); models take one 3D volume per input",
            "pick one frame (e.g. one time point or b-value) and save it as its own 3D file, then run on each frame",
        )
    if a.ndim < 3:
        raise InputError(f"{name} is {a.ndim}D; MedAI models work on 3D volumes", "give a 3D volume")
    if a.size == 0:
        raise InputError(f"{name} is empty (size {tuple(volume.size_ijk)}: no voxels)",
                         "the file or series holds no image data; export it again")
    if not spec.get("allow_2d", False) and min(a.shape[:3]) == 1:
        raise InputError(
            f"{name} is 2D (a single slice, size {' x '.join(str(s) for s in volume.size_ijk)}); this model needs a 3D volume",
            "give the whole series (the DICOM folder, not one file) or a 3D image file",
        )


def _convert_dtype(volume, name: str, warnings: list) -> None:
    a = volume.array
    dt = a.dtype
    if dt in _NATIVE:
        return
    if dt == np.bool_:
        volume.array = a.astype(np.uint8)
        warnings.append(f"{name}: boolean voxels converted to 0/1 (uint8)")
        return
    if np.issubdtype(dt, np.complexfloating):
        raise InputError(f"{name} has complex voxels ({dt}); models need real intensities",
                         "save the magnitude image (abs) instead of the complex data")
    if np.issubdtype(dt, np.integer):  # int64, uint32, uint64
        lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
        i32 = np.iinfo(np.int32)
        if i32.min <= lo and hi <= i32.max:
            volume.array = a.astype(np.int32)
            warnings.append(f"{name}: {dt} voxels converted to int32 (all values fit, range {lo}..{hi})")
            return
        raise InputError(
            f"{name} has {dt} values ({lo}..{hi}) that do not fit in 32 bits; converting would change them",
            "rescale the image to a 16- or 32-bit type in the tool that made it",
        )
    if np.issubdtype(dt, np.floating):  # float64, float16, longdouble
        finite = a[np.isfinite(a)] if a.size else a
        big = float(np.abs(finite).max()) if finite.size else 0.0
        if big > float(np.finfo(np.float32).max):
            raise InputError(f"{name} has values up to {big:g}, beyond the float32 range models use",
                             "rescale the intensities in the tool that made the image")
        volume.array = a.astype(np.float32)
        warnings.append(f"{name}: {dt} voxels converted to float32")
        return
    raise InputError(f"{name} has an unsupported voxel type {dt}", "convert it to int16 or float32")


def _check_values(volume, name: str) -> None:
    a = volume.array
    if np.issubdtype(a.dtype, np.floating):
        bad = a.size - int(np.count_nonzero(np.isfinite(a)))
        if bad:
            n_nan = int(np.count_nonzero(np.isnan(a)))
            raise InputError(
                f"{name} has {bad:,} voxels that are not numbers ({n_nan:,} NaN, {bad - n_nan:,} Inf)",
                "fix the image in the tool that made it (e.g. replace NaN/Inf by 0 or the background value)",
            )
    lo, hi = a.min(), a.max()
    if lo == hi:
        raise InputError(f"{name} is constant: every voxel is {float(lo):g}, so there is nothing to analyse",
                         "check that the right series or file was chosen and that it was exported with its pixel data")


def _check_spacing(volume, name: str, spec: dict) -> None:
    m = volume.ijk_to_ras
    if not np.all(np.isfinite(m)):
        raise InputError(f"{name} has an invalid geometry (NaN or Inf in the voxel-to-patient matrix)",
                         "the file header is damaged; export the image again")
    sp = np.linalg.norm(m[:3, :3], axis=0)
    max_mm = float(spec.get("max_spacing_mm", MAX_SPACING_MM))
    pretty = " x ".join(f"{s:g}" for s in sp)
    if np.any(sp <= 0) or abs(np.linalg.det(m[:3, :3] / sp)) < 1e-6:
        raise InputError(f"{name} has zero or degenerate voxel spacing ({pretty} mm)",
                         "the file header is wrong; fix the spacing in the tool that made it or export again")
    if np.any(sp > max_mm):
        raise InputError(f"{name} has absurd voxel spacing ({pretty} mm; more than {max_mm:g} mm per voxel)",
                         "the header is probably in the wrong unit (cm or m instead of mm); fix the spacing and try again")
    if np.any(sp < MIN_SPACING_MM):
        raise InputError(f"{name} has absurd voxel spacing ({pretty} mm; less than {MIN_SPACING_MM:g} mm per voxel)",
                         "the header is probably in the wrong unit (m or µm instead of mm); fix the spacing and try again")


# --- modality --------------------------------------------------------------------------------
def _sample(a: np.ndarray, max_voxels: int = 1_000_000) -> np.ndarray:
    flat = a.reshape(-1)
    step = max(1, flat.size // max_voxels)
    s = flat[::step]
    return s[np.isfinite(s)] if np.issubdtype(s.dtype, np.floating) else s


def guess_modality(volume) -> tuple:
    """("CT" | "not CT" | None, reason): what the intensities suggest (heuristic, see module doc)."""
    s = _sample(volume.array).astype(np.float32)
    if s.size == 0:
        return None, "no finite voxels"
    air = float(np.mean((s >= -1100) & (s <= -850)))
    very_neg = float(np.mean(s < -500))
    if air >= 0.05 or very_neg >= 0.02:
        return "CT", f"{100 * max(air, very_neg):.0f}% of voxels at air-like values near -1000 (Hounsfield units)"
    if float(s.min()) >= -50:
        return "not CT", f"no voxel below {float(s.min()):g}: not Hounsfield units (CT has air at -1000, fat below 0)"
    return None, "intensities do not decide"


def _check_modality(volume, name: str, wanted: str, spec: dict, warnings: list) -> None:
    policy = spec.get("modality_check", "error")
    if not wanted or policy == "off":
        return
    wanted = wanted.upper()
    model = spec.get("model", "this model")
    tagged = str(volume.metadata.get("modality", "") or "").upper()
    if tagged in ("CT", "MR", "PT", "US", "CR", "DX", "MG", "NM") and tagged != wanted:
        msg = f"{name} is {tagged} (DICOM Modality tag) but {model} needs {wanted}"
        hint = f"choose the {wanted} series, or a model made for {tagged}"
        if policy == "warn":
            warnings.append(msg)
            return
        raise InputError(msg, hint)
    guess, reason = guess_modality(volume)
    if wanted == "MR" and guess == "CT":
        msg = f"{name} looks like CT, not MR: {reason}; {model} needs MR"
        if policy == "warn":
            warnings.append(msg)
            return
        raise InputError(msg, "give an MR image, or choose a model made for CT")
    if wanted == "CT" and guess == "not CT":
        warnings.append(f"{name} does not look like CT in Hounsfield units ({reason}); {model} expects CT — "
                        "results may be wrong if this is not CT")


# --- public API ------------------------------------------------------------------------------
def check_volume(volume, spec: dict = None, index: int = 0) -> list:
    """Check one volume (shape, type, values, spacing, memory, sanity). Raises InputError; returns warnings."""
    spec = spec or {}
    name = _name(volume, index, spec)
    warnings = []
    if spec.get("sanity", True):
        check_is_image(volume, name)
    _check_shape(volume, name, spec)
    check_memory(volume.array.size, name, spec.get("memory_factor", DEFAULT_MEMORY_FACTOR))
    _convert_dtype(volume, name, warnings)
    _check_values(volume, name)
    _check_spacing(volume, name, spec)
    if spec.get("sanity", True):
        warnings += check_sanity(volume, name, spec)
    return warnings


# --- sanity: inputs a model would answer nonsense on ----------------------------------------------
ACCEPTED_KEY = "input_warnings_accepted"  # Volume.metadata: the user accepted this volume's sanity findings


def accepting_warnings(spec: dict = None, volume=None) -> bool:
    """Whether sanity refusals are downgraded to warnings: the spec key, the environment variable,
    or a volume an earlier check of this run accepted (the CLI's pre-check and the pipeline's own
    check see the same Volume objects, so the user's flag holds for both without global state)."""
    if (spec or {}).get("accept_input_warnings"):
        return True
    if volume is not None and getattr(volume, "metadata", {}).get(ACCEPTED_KEY):
        return True
    return os.environ.get(ACCEPT_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def check_is_image(volume, name: str) -> None:
    """A segmentation given where an image is expected is refused (no flag: it is never an image)."""
    if getattr(volume, "labels", None) is not None:
        src = str(volume.metadata.get("source", ""))
        kind = "a segmentation (.seg.nrrd)" if src.lower().endswith((".seg.nrrd", ".seg.nhdr")) else "a label map"
        raise InputError(f"{name} is {kind}, not an image: a model segments images, not segmentations",
                         "give the scan the segmentation was made from (the .nii.gz/.nrrd image or DICOM series)")
    modality = str(volume.metadata.get("modality", "") or "").upper()
    if modality in NOT_IMAGE_MODALITIES:
        raise InputError(f"{name} is {NOT_IMAGE_MODALITIES[modality]} (DICOM Modality {modality}), not an image",
                         "give the image series it refers to (run `medai info FOLDER` to list the series)")


def _integral(values: np.ndarray) -> bool:
    return not np.issubdtype(values.dtype, np.floating) or bool(np.array_equal(values, np.round(values)))


def piecewise_constant_fraction(a: np.ndarray) -> float:
    """Of the neighbouring voxel pairs along I where either voxel is non-zero, the fraction that are
    equal (every 4th slice). Label maps: 0.78-0.95 in the test data; scans (noise): at most 0.07."""
    sub = a[::4] if a.shape[0] >= 8 else a
    x, y = sub[..., :-1], sub[..., 1:]
    fg = (x != 0) | (y != 0)
    n = int(np.count_nonzero(fg))
    return float(np.count_nonzero((x == y) & fg)) / n if n else 1.0


def labelmap_values(a: np.ndarray, max_values: int = LABELMAP_MAX_VALUES):
    """The distinct values of ``a`` when it looks like a label map, None otherwise: integer values and
    either at most ``max_values`` distinct ones, or up to ``LABELMAP_MAX_CLASSES`` that are piecewise
    constant (``LABELMAP_MIN_CONSTANT`` of the foreground neighbours equal: many-class atlases such as
    TotalSegmentator's). A strided sample decides first, the whole array confirms."""
    s = _sample(a)
    if s.size == 0:
        return None
    values = np.unique(s)
    if values.size < 2 or values.size > LABELMAP_MAX_CLASSES or not _integral(values):
        return None
    if values.size > max_values:
        if piecewise_constant_fraction(a) < LABELMAP_MIN_CONSTANT:
            return None
        values = np.unique(a)
        return values if values.size <= LABELMAP_MAX_CLASSES and _integral(values) else None
    if not np.isin(a, values).all():  # the sample missed some values: count them properly
        values = np.unique(a)
        if not _integral(values):
            return None
        if values.size > max_values and piecewise_constant_fraction(a) < LABELMAP_MIN_CONSTANT:
            return None
    return values


def absurd_outliers(a: np.ndarray, factor: float = OUTLIER_FACTOR) -> tuple:
    """(count, most extreme value, scale): voxels whose magnitude exceeds ``factor`` x the 99.9th
    percentile of the non-zero magnitudes (robust: a handful of absurd voxels cannot move it)."""
    if not np.issubdtype(a.dtype, np.floating) and a.dtype.itemsize <= 2:
        return 0, None, None  # 8/16-bit integers cannot hold a value 1000 x their typical scale that matters
    s = np.abs(_sample(a).astype(np.float64))
    nz = s[s > 0]
    if nz.size < 100:  # a sparse image: the sample may have missed it, use every non-zero voxel
        full = np.abs(a[np.isfinite(a)] if np.issubdtype(a.dtype, np.floating) else a).astype(np.float64)
        nz = full[full > 0]
    if nz.size == 0:
        return 0, None, None
    scale = float(np.percentile(nz, 99.9))
    limit = factor * max(scale, np.finfo(np.float32).tiny)
    hi, lo = float(np.nanmax(a)), float(np.nanmin(a))
    if max(abs(hi), abs(lo)) <= limit:
        return 0, None, scale
    mag = np.abs(a.astype(np.float64, copy=False)) if a.dtype != np.float64 else np.abs(a)
    count = int(np.count_nonzero(mag > limit))
    return count, (hi if abs(hi) >= abs(lo) else lo), scale


def shear_angle(ijk_to_ras: np.ndarray) -> tuple:
    """(largest |cos| between two voxel axes, angle in degrees, axes) of a voxel-to-patient matrix."""
    m = np.asarray(ijk_to_ras, dtype=float)[:3, :3]
    cols = m / np.linalg.norm(m, axis=0)
    worst, pair = 0.0, (0, 1)
    for i, j in ((0, 1), (0, 2), (1, 2)):
        c = abs(float(np.dot(cols[:, i], cols[:, j])))
        if c > worst:
            worst, pair = c, (i, j)
    return worst, float(np.degrees(np.arccos(min(1.0, worst)))), pair


def check_sanity(volume, name: str, spec: dict = None) -> list:
    """Refuse (or, when accepted, warn about) a volume a model would answer nonsense on; see module doc."""
    spec = spec or {}
    warnings: list = []
    accept = accepting_warnings(spec, volume)
    if accept and isinstance(getattr(volume, "metadata", None), dict):
        volume.metadata[ACCEPTED_KEY] = True

    def suspicious(message: str, hint: str) -> None:
        if accept:
            warnings.append(f"{message} (accepted: {ACCEPT_FLAG})")
            return
        raise InputError(message, f"{hint}; if you are sure this is the right input, run again with {ACCEPT_FLAG}")

    a = volume.array
    values = labelmap_values(a)
    if values is not None:
        shown = ", ".join(f"{v:g}" for v in values.tolist()[:8]) + (", ..." if values.size > 8 else "")
        suspicious(f"{name} looks like a label map, not an image: it holds only {values.size} distinct integer "
                   f"values ({shown})" + ("" if values.size <= LABELMAP_MAX_VALUES else
                                          " in uniform regions"),
                   "give the scan itself (a segmentation or mask is not an input for a model)")
    count, extreme, scale = absurd_outliers(a)
    if count:
        suspicious(f"{name} has {count:,} voxel{'s' if count != 1 else ''} with absurd values (up to {extreme:g}, while "
                   f"99.9% of the non-zero voxels are within +/-{scale:g}); one such voxel wrecks the intensity "
                   "normalisation and so the whole result",
                   "fix or clip the image in the tool that made it (the voxel is probably a conversion or "
                   "reconstruction error)")
    shape_ijk = tuple(int(x) for x in volume.size_ijk)
    thin = [("IJK"[k], n) for k, n in enumerate(shape_ijk) if n < MIN_SLICES]
    if thin and not (spec.get("allow_2d") and min(shape_ijk) == 1):
        axis, n = min(thin, key=lambda t: t[1])
        suspicious(f"{name} is only {n} voxel{'s' if n != 1 else ''} thick along {axis} (size "
                   f"{' x '.join(map(str, shape_ijk))}): too thin for a 3D model's receptive field, which needs "
                   f"at least {MIN_SLICES}", "give the whole volume (all slices of the series)")
    sp = np.linalg.norm(np.asarray(volume.ijk_to_ras, dtype=float)[:3, :3], axis=0)
    if np.all(sp > 0) and sp.max() / sp.min() > MAX_ANISOTROPY:
        pretty = " x ".join(f"{x:g}" for x in sp)
        suspicious(f"{name} has extremely anisotropic voxels ({pretty} mm: {sp.max() / sp.min():.0f} times longer along "
                   f"{'IJK'[int(np.argmax(sp))]} than along {'IJK'[int(np.argmin(sp))]}, more than {MAX_ANISOTROPY:g}); "
                   "resampling to the model's spacing invents most of the data",
                   "use a series with thinner slices, or check the spacing in the header (a unit error?)")
    cos, angle, (i, j) = shear_angle(volume.ijk_to_ras)
    if cos > SHEAR_TOLERANCE:
        suspicious(f"{name} has a sheared geometry: its {'IJK'[i]} and {'IJK'[j]} axes are at {angle:.2f} degrees, "
                   "not 90 (e.g. an uncorrected gantry tilt); models and their resampling assume right angles",
                   "resample it onto an orthogonal grid first (e.g. dcm2niix's tilt correction, or Slicer's "
                   "Resample Scalar Volume)")
    return warnings


def check_input_count(count: int, spec: dict = None) -> None:
    """The number of input images against ``spec`` (a catalogue entry's ``input_spec()``): the one
    place this is decided (check_inputs, and the Slicer modules before they start a run)."""
    spec = dict(spec or {})
    model = spec.get("model", "this model")
    names = list(spec.get("input_names") or [])
    n = spec.get("n_inputs", len(names) or None)
    if not count:
        raise InputError("no input image was given", f"give {n or 'the'} input image(s) {model} needs")
    if n is not None and count != int(n):
        wanted = f" ({', '.join(names)})" if names else ""
        raise InputError(f"{model} needs {n} input image{'s' if int(n) != 1 else ''}{wanted}, but {count} "
                         f"{'were' if count != 1 else 'was'} given",
                         f"give exactly {n} image{'s' if int(n) != 1 else ''}, in this order{wanted}")


def check_inputs(volumes: list, spec: dict = None) -> list:
    """Validate the inputs of one model run. Raises InputError (message, hint); returns warnings.

    See the module docstring for ``spec``. Checks run cheapest and most basic first, so the
    message a person sees names the most fundamental problem.
    """
    spec = dict(spec or {})
    volumes = list(volumes)
    model = spec.get("model", "this model")
    check_input_count(len(volumes), spec)
    warnings = []
    total = 0
    for i, v in enumerate(volumes):
        warnings += check_volume(v, spec, i)
        total += v.array.size
    if len(volumes) > 1:
        check_memory(total, "the inputs together", spec.get("memory_factor", DEFAULT_MEMORY_FACTOR))
    if len(volumes) > 1 and spec.get("aligned", True):
        ref = volumes[0]
        for i, v in enumerate(volumes[1:], start=1):
            if not ref.same_grid(v):
                fmt = lambda x: " x ".join(f"{s:g}" for s in x)  # noqa: E731
                raise InputError(
                    f"{_name(v, i, spec)} is not on the same voxel grid as {_name(ref, 0, spec)} "
                    f"(size {fmt(v.size_ijk)} vs {fmt(ref.size_ijk)}, spacing {fmt(np.round(v.spacing, 4))} "
                    f"vs {fmt(np.round(ref.spacing, 4))} mm); {model} needs aligned inputs",
                    "register or resample the inputs onto one grid first (`medai register`, or MedAIFusion in Slicer)",
                )
    modalities = spec.get("modalities") or ([spec["modality"]] * len(volumes) if spec.get("modality") else [])
    for i, (v, m) in enumerate(zip(volumes, modalities)):
        _check_modality(v, _name(v, i, spec), m, spec, warnings)
    return warnings


def check_labelmap(volume, allowed_values=None, name: str = None) -> list:
    """A labelmap must hold integer label values, all in ``allowed_values`` (0 = background is
    always allowed). Raises InputError; returns warnings (e.g. labels absent from the map)."""
    name = name or _name(volume, 0, {})
    a = volume.array
    if a.ndim != 3:
        raise InputError(f"labelmap {name} is {a.ndim}D; a labelmap is one 3D volume", "give a 3D labelmap")
    if np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)):
            raise InputError(f"labelmap {name} has NaN/Inf voxels", "a labelmap holds integer label values only")
        if not np.array_equal(a, np.round(a)):
            raise InputError(f"labelmap {name} holds non-integer values, so it is an image, not a labelmap",
                             "give the label file (integer values, e.g. *_seg.nii.gz or .seg.nrrd), not the image")
    values = set(int(v) for v in np.unique(a))
    if any(v < 0 for v in values):
        raise InputError(f"labelmap {name} has negative values ({sorted(v for v in values if v < 0)[:5]})",
                         "label values must be 0 (background) or positive integers")
    warnings = []
    if allowed_values is not None:
        allowed = set(int(v) for v in allowed_values) | {0}
        extra = sorted(values - allowed)
        if extra:
            shown = ", ".join(str(v) for v in extra[:10]) + (" ..." if len(extra) > 10 else "")
            raise InputError(f"labelmap {name} has label values {shown} that are not among the expected "
                             f"{', '.join(str(v) for v in sorted(allowed))}",
                             "check that the labelmap belongs to this model/task, or relabel it")
        missing = sorted(allowed - values - {0})
        if missing:
            warnings.append(f"labelmap {name} has no voxels with label(s) {missing}")
    return warnings
