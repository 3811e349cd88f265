"""Into a bundle's model space and back, a slab at a time, with MONAI's values.

MONAI's eager path (the bundle runner's) at clinical size: ``Spacingd`` copies the whole input to
float64 and builds a dense float64 grid; ``Invertd`` resamples every class channel back to the input
grid through another dense float64 grid (3 doubles per input voxel) and returns float32 channels,
which ``AsDiscreted`` then reduces to labels. At 512x512x300 that is ~3 GB for the way back alone.

Here the same numbers are computed a slab at a time (:mod:`MedAILib.runtime.slab_resample`):

- forward: the bundle's leading geometric transforms (``EnsureChannelFirstd``, ``Orientationd``,
  one ``Spacingd``) run in MONAI's *lazy* mode on a stand-in tensor without storage, which gives
  MONAI's own metadata, output grid and transform trace; the resampled voxels are then computed
  slab by slab straight from the caller's array (any dtype; orientation is index arithmetic), in
  float64 as MONAI does, and stored as float32. The transforms after them run as MONAI runs them.
- back (``Invertd`` + argmax): the transforms after ``Spacingd`` are inverted by MONAI on the
  model-space prediction; the inverse resampling and orientation are computed slab by slab of the
  *input* grid, each slab cast to float32 and reduced to labels at once. Nothing of input size is
  ever held but the labels (1 byte per voxel). With ``nearest_interp`` the argmax is taken first,
  in model space: nearest-neighbour sampling copies values, so argmax and sampling commute exactly.

Labels are identical to MONAI's (bit-identical model input, same float32 channels before the
argmax): the tests compare both paths voxel by voxel on flipped, permuted, oblique, multi-channel
and unchanged-spacing inputs, and the clinical-size benchmark compares with MONAI's bundle runner.
Anything else (spline or reflection resampling, other geometric transforms before ``Spacingd``,
compiled MONAI resamplers) raises :class:`Unsupported`, and MedAI uses MONAI's eager path.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from typing import Optional, Sequence

import numpy as np
import torch

from MedAILib.runtime import slab_resample as sr

META_ONLY = ("EnsureChannelFirstd",)      # change metadata / add a view dimension only
GEOMETRIC = ("Orientationd", "Spacingd")  # run lazily here, computed slab by slab


class Unsupported(Exception):
    """The bundle's preprocessing cannot be streamed with identical values: use MONAI's eager path."""


@dataclasses.dataclass
class StreamPlan:
    prefix: list               # transforms computed here (the same objects: their ids are in the trace)
    suffix: list               # the rest, run by MONAI on the model-space tensor
    rot: np.ndarray            # (3, 3) signed permutation: input IJK index = rot @ o + shift
    shift: np.ndarray          # (3,)
    o_size: tuple              # spatial size after orientation (the resampler's input)
    out_size: tuple            # model-space spatial size
    xform: torch.Tensor        # index-space resampling transform (model index -> oriented input index)
    unchanged: bool            # MONAI skips the resampling (same grid within its tolerance)
    mode: str
    padding: str
    align_corners: bool
    channels: int
    input_shape_kji: tuple


# --- forward ---------------------------------------------------------------------------------------

def _standin(volumes, meta_for) :
    """A MetaTensor with the inputs' shape and metadata but no storage (one value broadcast)."""
    from monai.data import MetaTensor

    ref = volumes[0]
    ijk = tuple(int(s) for s in ref.array.shape[:3][::-1])
    shape = ijk if len(volumes) == 1 else (len(volumes), *ijk)
    return MetaTensor(torch.zeros(1, dtype=torch.float32).expand(shape), meta=meta_for(volumes, ijk))


def _check_no_storage(t) -> None:
    if t.untyped_storage().nbytes() > 64:
        raise Unsupported("a metadata transform allocated the image")


def plan(volumes, bundle, meta_for) -> tuple:
    """(StreamPlan, stand-in after the prefix): what runs here, MONAI's trace and output grid.
    Raises :class:`Unsupported`."""
    from monai.config import USE_COMPILED
    from monai.data.utils import AFFINE_TOL
    from monai.transforms.utils_pytorch_numpy_unification import allclose

    from MedAILib.runtime.model_space import loader_free

    if USE_COMPILED:
        raise Unsupported("MONAI's compiled resampler is in use")
    arrays = [np.asarray(v.array) for v in volumes]
    if any(a.ndim != 3 or a.shape != arrays[0].shape for a in arrays):
        raise Unsupported("inputs are not 3-D arrays on one grid")
    transforms = list(loader_free(bundle.preprocessing).transforms)
    d = {"image": _standin(volumes, meta_for)}
    prefix, saved = [], []
    try:
        for t in transforms:
            name = type(t).__name__
            keys = tuple(getattr(t, "keys", ()) or ())
            if keys != ("image",) or name not in META_ONLY + GEOMETRIC:
                break
            if name in GEOMETRIC:
                saved.append((t, t.lazy))
                t.lazy = True
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                d = t(d)
            _check_no_storage(d["image"])
            prefix.append(t)
            if name == "Spacingd":
                break
    finally:
        for t, lazy in saved:
            t.lazy = lazy
    image = d["image"]
    pending = list(image.pending_operations)
    if not prefix or type(prefix[-1]).__name__ != "Spacingd":
        raise Unsupported("the preprocessing does not start with orientation/spacing")
    if [p["class"] for p in pending] != ["Orientation"] * (len(pending) - 1) + ["SpatialResample"]:
        raise Unsupported(f"unexpected lazy operations {[p['class'] for p in pending]}")
    channels = int(image.shape[0])
    rot, shift = np.eye(3, dtype=np.int64), np.zeros(3, dtype=np.int64)
    for p in pending[:-1]:
        m = np.asarray(torch.as_tensor(p["lazy_affine"]), dtype=np.float64)
        r = np.rint(m[:3, :3]).astype(np.int64)
        if not (np.array_equal(m[:3, :3], r) and np.array_equal(m[:3, 3], np.rint(m[:3, 3]))
                and np.array_equal(np.abs(r).sum(0), [1, 1, 1]) and np.array_equal(np.abs(r).sum(1), [1, 1, 1])):
            raise Unsupported("orientation is not a signed axis permutation")
        # x = rot @ (r @ q + t) + shift
        shift = rot @ np.rint(m[:3, 3]).astype(np.int64) + shift
        rot = rot @ r
    res = pending[-1]
    info = res["extra_info"]
    mode, padding = info.get("mode"), info.get("padding_mode")
    align = info.get("align_corners")
    align = False if align is None or isinstance(align, str) else bool(align)
    if mode not in sr.SUPPORTED_MODES or padding not in sr.SUPPORTED_PADDING or info.get("dtype") != "float64":
        raise Unsupported(f"resampling {mode}/{padding}/{info.get('dtype')}")
    o_size = tuple(int(s) for s in res["orig_size"])
    out_size = tuple(int(s) for s in res["lazy_shape"])
    xform = torch.as_tensor(res["lazy_affine"], dtype=torch.float64)
    src_affine = torch.as_tensor(info["src_affine"], dtype=torch.float64)
    same_size = allclose(torch.tensor(out_size), torch.tensor(o_size))
    unchanged = bool((allclose(src_affine, src_affine @ xform, atol=AFFINE_TOL) and same_size)
                     or (allclose(xform, torch.eye(4, dtype=torch.float64), atol=AFFINE_TOL) and same_size))
    sp = StreamPlan(prefix, transforms[len(prefix):], rot, shift, o_size, out_size, xform, unchanged, mode, padding,
                    align, channels, tuple(arrays[0].shape))
    return sp, image


def _eager_trace_and_affine(image, sp: StreamPlan) -> tuple:
    """The applied-operations entries and affine MONAI's eager path records for the prefix."""
    from monai.data.utils import to_affine_nd
    from monai.utils import convert_to_dst_type, convert_to_tensor

    trace = list(image.applied_operations)
    affine = image.affine
    for p in image.pending_operations:
        entry = {k: v for k, v in p.items() if k not in ("lazy_shape", "lazy_affine")}
        entry["lazy"] = False
        trace.append(entry)
        if p["class"] == "Orientation":  # eager: numpy xform (nibabel), orig affine converted to numpy
            x = np.asarray(torch.as_tensor(p["lazy_affine"]), dtype=np.float64)
            orig = convert_to_dst_type(affine, x, dtype=torch.float64)[0]
            affine = orig @ to_affine_nd(orig.shape[-1] - 1, x, dtype=torch.float64)
        elif not sp.unchanged:              # eager: torch float64 xform
            orig = convert_to_dst_type(affine, sp.xform, dtype=torch.float64)[0]
            affine = orig @ to_affine_nd(orig.shape[-1] - 1, sp.xform, dtype=torch.float64)
        affine = convert_to_tensor(affine, device=torch.device("cpu"), dtype=torch.float64)
    return trace, affine


def oriented_view(array: np.ndarray, sp: StreamPlan) -> np.ndarray:
    """The (D, H, W) view of a KJI array that MONAI's ``Orientationd`` output is (flips and axis
    permutations of the IJK view; no copy): ``view[q] = ijk[rot @ q + shift]``."""
    ijk = np.asarray(array).transpose(2, 1, 0)
    axes = [int(np.nonzero(sp.rot[:, a])[0][0]) for a in range(3)]  # input axis read by oriented axis a
    view = ijk.transpose(axes)
    for a, b in enumerate(axes):
        sign, size = int(sp.rot[b, a]), ijk.shape[b]
        if (sign, int(sp.shift[b])) == (-1, size - 1):
            view = np.flip(view, axis=a)
        elif (sign, int(sp.shift[b])) != (1, 0):
            raise Unsupported("orientation is not a flip/permutation of the whole grid")
    return view


def forward(volumes, bundle, meta_for) -> tuple:
    """(data dict as MONAI's eager preprocessing returns it, StreamPlan). Raises :class:`Unsupported`."""
    from monai.data import MetaTensor
    from monai.transforms import Compose

    sp, image = plan(volumes, bundle, meta_for)
    trace, affine = _eager_trace_and_affine(image, sp)
    views = [oriented_view(v.array, sp) for v in volumes]
    out = torch.empty((sp.channels, *sp.out_size), dtype=torch.float32)
    if sp.unchanged:  # MONAI only casts the oriented input to float32
        for c, view in enumerate(views):
            out[c].numpy()[...] = view
    else:
        def fill(c, d0, d1):  # float32 first: the values MONAI's float32 MetaTensor holds
            return views[c][d0:d1].astype(np.float32)

        def consume(d0, d1, values):
            out[:, d0:d1] = values.to(torch.float32)

        sr.resample_slabs(fill, sp.channels, sp.o_size, sp.xform, sp.out_size, sp.mode, sp.padding,
                          sp.align_corners, consume)
    meta = copy.deepcopy(image.meta)
    meta["affine"] = affine
    result = MetaTensor(out, meta=meta, applied_operations=trace)
    data = {"image": result}
    if sp.suffix:
        data = Compose(sp.suffix)(data)
    return data, sp


# --- back: inverse resampling + argmax, slab by slab of the input grid -----------------------------

def _inverse_resample(pred, op) -> tuple:
    """MONAI's ``SpatialResample.inverse`` arithmetic for trace entry ``op`` on ``pred`` (C, *model):
    (xform, out size, unchanged, mode, padding, align_corners)."""
    from monai.data.utils import AFFINE_TOL, to_affine_nd
    from monai.transforms.utils_pytorch_numpy_unification import allclose
    from monai.utils import convert_to_dst_type, convert_to_numpy, convert_to_tensor, ensure_tuple, fall_back_tuple

    info = op["extra_info"]
    if info.get("dtype") not in ("float64", torch.float64):
        raise Unsupported("inverse resampling dtype")
    mode, padding = info.get("mode"), info.get("padding_mode")
    if mode not in sr.SUPPORTED_MODES or padding not in sr.SUPPORTED_PADDING:
        raise Unsupported(f"inverse resampling {mode}/{padding}")
    align = info.get("align_corners")
    align = False if align is None or isinstance(align, str) else bool(align)
    src_affine = to_affine_nd(3, pred.peek_pending_affine()).to(torch.float64)
    dst_affine = convert_to_dst_type(to_affine_nd(3, info["src_affine"]), src_affine)[0]
    in_size = torch.tensor(pred.shape[1:4])
    size = torch.tensor(fall_back_tuple(ensure_tuple(op["orig_size"])[:3], in_size, lambda x: x >= 0))
    xform = np.linalg.solve(convert_to_numpy(src_affine), convert_to_numpy(dst_affine))
    xform = convert_to_tensor(to_affine_nd(3, xform)).to(dtype=torch.float64)
    unchanged = bool((allclose(src_affine, dst_affine, atol=AFFINE_TOL) and allclose(size, in_size))
                     or (allclose(xform, np.eye(len(xform)), atol=AFFINE_TOL) and allclose(size, in_size)))
    return xform, tuple(int(s) for s in size), unchanged, mode, padding, align


def _argmax_rows(vals32: torch.Tensor) -> torch.Tensor:
    """torch.argmax over dim 0 (first maximal index), one channel at a time."""
    from MedAILib.runtime.argmax import channel_argmax

    return channel_argmax(vals32)[0]


def invert_to_labels(pred, data: dict, sp: StreamPlan, nearest: bool, progress=None,
                     argmaxed: bool = False) -> np.ndarray:
    """Labels on the input grid (KJI array) = argmax over channels of MONAI's ``Invertd`` of ``pred``
    (C, *model spatial; float32), computed slab by slab. ``nearest``: Invertd's ``nearest_interp``.
    ``argmaxed``: ``pred`` (1, *model) already holds label values (nearest only): sampled as they are."""
    from monai.data import MetaTensor
    from monai.transforms import Compose
    from monai.transforms.utils import convert_applied_interp_mode

    image = data["image"]
    pred = pred.as_tensor() if isinstance(pred, MetaTensor) else torch.as_tensor(pred)
    if pred.dtype != torch.float32 or torch.isnan(pred).any():
        raise Unsupported("prediction is not finite float32")
    trace = copy.deepcopy(image.applied_operations)
    if nearest:
        trace = convert_applied_interp_mode(trans_info=trace, mode="nearest", align_corners=None)
    p = MetaTensor(pred, meta=copy.deepcopy(image.meta), applied_operations=trace)
    n_prefix_ops = len(trace) - sum(1 for _ in _traced_suffix_ops(trace, sp))
    if len(p.applied_operations) > n_prefix_ops:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p = Compose(sp.suffix).inverse({"image": p})["image"]
    ops = list(p.applied_operations)
    if not ops or ops[-1]["class"] != "SpatialResample" or any(o["class"] != "Orientation" for o in ops[:-1]):
        raise Unsupported("unexpected transform trace after inverting the suffix")
    xform, size, unchanged, mode, padding, align = _inverse_resample(p, ops[-1])
    if tuple(size) != sp.o_size:
        raise Unsupported("inverse grid differs from the oriented input grid")
    src = p.as_tensor()
    C, X, Y, Z = src.shape
    if argmaxed:
        if not (nearest or mode == "nearest") or C != 1:
            raise Unsupported("label values can only go back by nearest neighbour")
        n_classes = int(src.max()) + 1 if src.numel() else 1
        channels = 1
    elif nearest or mode == "nearest" or C == 1:
        # argmax first: nearest-neighbour sampling copies voxels, so the two commute exactly
        n_classes, channels = C, 1
        src = _argmax_rows(src.float())[None].to(torch.float32)
    else:
        n_classes, channels = C, C
    dtype = np.uint8 if n_classes <= 256 else np.int16
    labels = np.empty(sp.input_shape_kji, dtype=dtype)
    lab_o = oriented_view(labels, sp)  # writable view: MONAI's inverse Orientationd as index arithmetic
    src_np = src.numpy()
    if unchanged:
        lab_o[...] = (_argmax_rows(src) if channels > 1 else src[0]).numpy()
        return labels

    def fill(c, d0, d1):
        return src_np[c, d0:d1]

    def consume(d0, d1, values):
        lab = _argmax_rows(values.to(torch.float32)) if channels > 1 else values[0]
        lab_o[d0:d1] = lab.numpy()

    def report(fraction):
        if progress is not None:
            progress.update(fraction, "labels on the input grid")

    sr.resample_slabs(fill, channels, (X, Y, Z), xform, size, "nearest" if channels == 1 else mode, padding, align,
                      consume, report)
    return labels


def _traced_suffix_ops(trace, sp: StreamPlan):
    """Trace entries recorded after the prefix's resampling (by the suffix transforms)."""
    seen = False
    for entry in trace:
        if seen:
            yield entry
        elif entry.get("class") == "SpatialResample":
            seen = True
