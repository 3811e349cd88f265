"""Classification: a Volume (optionally restricted to a mask or an ROI box) -> the bundle's model
space -> network -> class probabilities, with an optional explanation heat-map (Grad-CAM or
occlusion sensitivity, :mod:`monai.visualize`) brought back onto the input's exact grid.

Two ways into model space, both with an exact way back for the heat-map:

- **A preparation recipe** (``configs/medai.json`` ``preparation`` or ``metadata.json``
  ``medai.preparation``, written by :mod:`MedAILib.tasks.classification.trainer`). For ``input_kind:
  "mask"`` (AdrenalMNIST3D) the network sees the *mask*, prepared as the dataset was: centroid of
  the mask -> a cube of ``crop_size_mm`` along the input's own IJK axes -> ``resize`` voxels, linear
  interpolation, binarised at ``binarize_threshold``; array order KJI (like the npz). The way back
  resamples the model grid onto the input grid by world coordinates (SimpleITK, linear).
- **Any other classification bundle**: the volume is cropped to the region's bounding box (plus
  the margin the bundle declares, ``medai.crop_margin_mm``, default 0) and goes through the bundle's
  own preprocessing (:func:`MedAILib.tasks.segmentation.pipeline.to_model_space`); the heat-map comes back through
  MONAI's recorded inverse (``Invertd``) and is pasted into the crop's place.

A labelmap on another grid than the input is refused (InputError), not resampled: a mask that
does not share the image's voxels usually means the wrong pair of files, and silently resampling
a thin structure changes its shape, which is what this kind of model looks at.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import time
from typing import Optional, Sequence

import numpy as np

from MedAILib.core.errors import InputError, ModelError
from MedAILib.core.progress import CancelToken, Progress
from MedAILib.core.volume import Volume

log = logging.getLogger(__name__)

EXPLAIN_METHODS = ("gradcam", "occlusion")


@dataclasses.dataclass
class ClassifyResult:
    class_names: list
    probabilities: list
    predicted_index: int
    multi_label: bool
    heatmap: Optional[Volume]
    region: dict
    seconds: float
    device: str
    warnings: list
    log: list
    decision_threshold: Optional[float] = None  # binary softmax bundles: P(class 1) at/above which class 1
    temperature: float = 1.0  # logits were divided by this before the activation (calibration)

    @property
    def predicted(self) -> str:
        return self.class_names[self.predicted_index]

    def as_dict(self) -> dict:
        return {"class_names": list(self.class_names), "probabilities": [float(p) for p in self.probabilities],
                "predicted": self.predicted, "predicted_index": int(self.predicted_index),
                "multi_label": self.multi_label, "region": self.region,
                "decision_threshold": self.decision_threshold, "temperature": self.temperature}


# --- what the bundle declares -------------------------------------------------------------------

def medai_config(bundle) -> dict:
    """The bundle's MedAI section: ``configs/medai.json`` merged over ``metadata.json`` ``medai``."""
    cfg = dict(bundle.metadata.get("medai", {}) or {})
    f = bundle.path / "configs" / "medai.json"
    if f.exists():
        cfg.update(json.loads(f.read_text(encoding="utf-8")))
    return cfg


def calibration(bundle) -> tuple:
    """(temperature, decision threshold) of the bundle: ``medai.temperature`` (default 1.0: logits as
    they are) and ``medai.decision_threshold`` (default 0.5), both fitted on validation data by
    :mod:`MedAILib.tasks.classification.calibration`."""
    cfg = medai_config(bundle)
    t = float(cfg.get("temperature", 1.0))
    if not t > 0:
        raise ModelError(f"{bundle.name}: temperature {t} in its configs is not positive", "fix configs/medai.json")
    return t, float(cfg.get("decision_threshold", 0.5))


def class_names(bundle, n: int) -> list:
    names = bundle.output_channel_names or {int(k): v for k, v in (medai_config(bundle).get("classes") or {}).items()}
    return [str(names.get(i, f"class_{i}")) for i in range(n)]


def activation(bundle) -> str:
    """"sigmoid" for multi-label bundles (post-processing ``Activationsd(sigmoid=True)`` or
    ``medai.multi_label``), else "softmax"."""
    if medai_config(bundle).get("multi_label"):
        return "sigmoid"
    raw = bundle.parser.get("postprocessing") if "postprocessing" in bundle.parser else None
    steps = raw.get("transforms", []) if isinstance(raw, dict) else []
    for t in steps:
        if isinstance(t, dict) and str(t.get("_target_", "")).split(".")[-1] in ("Activationsd", "Activations"):
            if t.get("sigmoid") is True:
                return "sigmoid"
    return "softmax"


# --- input checks and the region ----------------------------------------------------------------

def check_volume_3d(volume: Volume, what: str = "the input") -> None:
    a = volume.array
    if a.ndim != 3:
        raise InputError(f"{what} is {a.ndim}D (shape {a.shape}); classification needs one 3D volume",
                         "give a 3D scalar volume (one frame/channel)")
    if min(a.shape) < 2:
        raise InputError(f"{what} is 2D (a single slice, size {' x '.join(map(str, volume.size_ijk))}); "
                         "this model classifies 3D volumes", "give the whole series or a 3D image file")


def region_mask(volume: Volume, mask: Optional[Volume] = None, roi=None, label: Optional[int] = None):
    """Boolean KJI mask on ``volume``'s grid from a labelmap (non-zero, or == ``label``) and/or an
    ROI box ``(x0, y0, z0, x1, y1, z1)`` in RAS mm; None when neither is given."""
    out = None
    if mask is not None:
        check_volume_3d(mask, "the mask")
        if not mask.same_grid(volume, atol=1e-3):
            raise InputError(
                f"the mask is on another voxel grid than the image (size {mask.size_ijk} vs {volume.size_ijk}, "
                f"spacing {np.round(mask.spacing, 3).tolist()} vs {np.round(volume.spacing, 3).tolist()} mm)",
                "give the mask drawn on this image (in Slicer: export the segment with this volume as reference)")
        out = (mask.array == label) if label is not None else (mask.array != 0)
        if not out.any():
            raise InputError("the mask is empty" + (f" (no voxel has label {label})" if label is not None else ""),
                             "draw or choose a non-empty segment")
    if roi is not None:
        box = roi_index_box(volume, roi)
        inside = np.zeros(volume.shape, bool)
        (k0, k1), (j0, j1), (i0, i1) = box
        inside[k0:k1, j0:j1, i0:i1] = True
        out = inside if out is None else (out & inside)
        if not out.any():
            raise InputError("the mask has no voxel inside the ROI box", "move the ROI over the segment")
    return out


def roi_index_box(volume: Volume, roi) -> tuple:
    """((k0, k1), (j0, j1), (i0, i1)) half-open voxel ranges covering an RAS box."""
    roi = [float(v) for v in roi]
    if len(roi) != 6:
        raise InputError(f"an ROI needs 6 numbers (x0,y0,z0,x1,y1,z1 in RAS mm), got {len(roi)}", "")
    lo, hi = np.minimum(roi[:3], roi[3:]), np.maximum(roi[:3], roi[3:])
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    ijk = volume.ras_to_ijk_points(corners)
    size = np.array(volume.size_ijk)
    a = np.clip(np.floor(ijk.min(0) + 0.5).astype(int), 0, size)
    b = np.clip(np.ceil(ijk.max(0) + 0.5).astype(int), 0, size)
    if np.any(b <= a):
        raise InputError(f"the ROI box {roi} does not overlap the image", "place the ROI over the image")
    return (a[2], b[2]), (a[1], b[1]), (a[0], b[0])


# --- into model space and back ------------------------------------------------------------------

@dataclasses.dataclass
class ModelInput:
    """The network input (1, C, *spatial) and how to bring a model-space map back to the input grid."""
    tensor: object
    back: object  # callable: np.ndarray (model spatial) -> np.ndarray KJI on the input grid
    region: dict


def mask_model_grid(volume: Volume, mask: np.ndarray, recipe: dict) -> Volume:
    """The model's grid for a mask recipe: ``resize`` voxels spanning ``crop_size_mm`` along the
    input's own IJK axes, centred on the mask's centroid (physical)."""
    size = np.array(recipe.get("resize", [28, 28, 28]), int)  # KJI order like the npz (cubic anyway)
    crop = np.array(recipe.get("crop_size_mm", [64.0, 64.0, 64.0]), float)
    spacing_ijk = (crop / size)[::-1]
    centroid_ijk = np.argwhere(mask).mean(0)[::-1]  # KJI -> IJK
    # Where exactly the cube sits: the files put the centroid at index 32.5 of 64 (1 mm voxels) and
    # 13.9 of 28 (2.286 mm), i.e. MedMNIST cut the 1 mm CT array at start = floor(centroid) - 32: the
    # cube's centre lies 0.5-1.5 mm (mean 1 mm) before the centroid along each array axis. We use the
    # mean (``centre_offset_mm``, default -1) and start the cube on the input's voxel lattice, as an
    # array crop does (an input already at model spacing is then copied, not interpolated).
    offset_mm = float(recipe.get("centre_offset_mm", -1.0))
    centre_ijk = centroid_ijk + offset_mm / volume.spacing
    start_ijk = np.round(centre_ijk - (size[::-1] - 1) / 2.0 * spacing_ijk / volume.spacing)
    m = np.eye(4)
    m[:3, :3] = volume.direction @ np.diag(spacing_ijk)
    m[:3, 3] = volume.ijk_to_ras_points(start_ijk[None])[0]
    return Volume(np.zeros(tuple(size), np.float32), m)


def prepare_mask_recipe(volume: Volume, mask: Optional[np.ndarray], recipe: dict) -> ModelInput:
    """AdrenalMNIST3D-style preparation: the network sees the (binary) mask, not intensities."""
    import torch

    if mask is None:  # the input itself is the mask (e.g. a labelmap file)
        values = np.unique(volume.array[:: max(1, volume.shape[0] // 64)])
        if values.size > 2 and not np.array_equal(volume.array, np.round(volume.array)):
            raise InputError("this model classifies the shape of a mask, and the input looks like an image",
                             "give the segment as --mask (or as the input itself)")
        mask = volume.array > 0
    if not mask.any():
        raise InputError("the mask is empty", "draw or choose a non-empty segment")
    from MedAILib.runtime.resample import resample_array

    grid = mask_model_grid(volume, mask, recipe)
    arr = resample_array(volume.with_array(mask.astype(np.float32)), grid, linear=recipe.get("interpolation") != "nearest")
    arr = (arr >= float(recipe.get("binarize_threshold", 0.5))).astype(np.float32)
    if not arr.any():
        raise InputError("the mask vanished when resampled to the model grid (too small?)",
                         f"the model expects a structure seen in a {recipe.get('crop_size_mm')} mm cube")
    x = torch.from_numpy(np.ascontiguousarray(arr))[None, None]

    def back(heat: np.ndarray) -> np.ndarray:
        return resample_array(grid.with_array(np.asarray(heat, np.float32)), volume, linear=True)

    centre = grid.ijk_to_ras_points(((np.array(grid.size_ijk) - 1) / 2.0)[None])[0]
    region = {"kind": "mask", "centre_ras": [round(float(c), 3) for c in centre],
              "mask_voxels": int(mask.sum()), "model_voxels": int(arr.sum()),
              "crop_size_mm": list(recipe.get("crop_size_mm", []))}
    return ModelInput(x, back, region)


def crop_box(volume: Volume, mask: Optional[np.ndarray], margin_mm: float) -> tuple:
    """Half-open KJI index box of the mask's bounding box grown by ``margin_mm`` (whole image if None)."""
    shape = np.array(volume.shape)
    if mask is None:
        return tuple((0, int(s)) for s in shape)
    idx = np.argwhere(mask)
    pad = np.ceil(margin_mm / volume.spacing[::-1]).astype(int)
    lo = np.maximum(idx.min(0) - pad, 0)
    hi = np.minimum(idx.max(0) + 1 + pad, shape)
    return tuple((int(a), int(b)) for a, b in zip(lo, hi))


def prepare_bundle_preprocessing(volume: Volume, mask: Optional[np.ndarray], bundle, margin_mm: float) -> ModelInput:
    """Crop to the region (+ margin), then the bundle's own preprocessing; back through Invertd."""
    import torch

    from MedAILib.runtime.model_space import from_model_space, to_model_space

    (k0, k1), (j0, j1), (i0, i1) = crop_box(volume, mask, margin_mm)
    m = volume.ijk_to_ras.copy()
    m[:3, 3] = volume.ijk_to_ras_points(np.array([[i0, j0, k0]], float))[0]
    cropped = Volume(np.ascontiguousarray(volume.array[k0:k1, j0:j1, i0:i1]), m, metadata=dict(volume.metadata))
    data = to_model_space([cropped], bundle)
    x = data["image"].as_tensor()[None].float()

    def back(heat: np.ndarray) -> np.ndarray:
        h = torch.as_tensor(np.asarray(heat, np.float32))[None]
        ijk = np.asarray(from_model_space(h, data, bundle, nearest=False)[0])
        out = np.zeros(volume.shape, np.float32)
        out[k0:k1, j0:j1, i0:i1] = ijk.transpose(2, 1, 0)
        return out

    region = {"kind": "mask" if mask is not None else "whole", "crop_kji": [[k0, k1], [j0, j1], [i0, i1]],
              "margin_mm": margin_mm}
    return ModelInput(x, back, region)


def to_model_input(volume: Volume, bundle, mask: Optional[Volume] = None, roi=None,
                   label: Optional[int] = None) -> ModelInput:
    check_volume_3d(volume)
    cfg = medai_config(bundle)
    recipe = cfg.get("preparation") or {}
    region = region_mask(volume, mask, roi, label)
    if recipe.get("input_kind") == "mask":
        if region is not None and mask is None:  # ROI only: the binary input inside the box
            region = region & (volume.array > 0)
            if not region.any():
                raise InputError("the input has no mask voxel inside the ROI box", "move the ROI over the segment")
        mi = prepare_mask_recipe(volume, region, recipe)
    else:
        mi = prepare_bundle_preprocessing(volume, region, bundle, float(cfg.get("crop_margin_mm", 0.0)))
    if roi is not None:
        mi.region["roi_ras"] = [float(v) for v in roi]
    return mi


# --- explanations -------------------------------------------------------------------------------

def last_spatial_layer(net, x) -> str:
    """Name of the last module (in execution order) whose output is still a spatial feature map —
    the usual Grad-CAM target (e.g. DenseNet's ``class_layers.relu`` before global pooling)."""
    import torch

    spatial = x.ndim - 2
    seen = []
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: seen.append(n))
             for n, m in net.named_modules() if n and not list(m.children())]
    shapes = {}
    hooks += [m.register_forward_hook(lambda mod, i, o, n=n: shapes.__setitem__(n, tuple(getattr(o, "shape", ()))))
              for n, m in net.named_modules() if n and not list(m.children())]
    try:
        with torch.no_grad():
            net(x)
    finally:
        for h in hooks:
            h.remove()
    for n in reversed(seen):
        s = shapes.get(n, ())
        if len(s) == spatial + 2 and max(s[2:]) > 1:
            return n
    raise ModelError("found no spatial layer for Grad-CAM in this network",
                     "declare medai.gradcam_layer in the bundle or use --explain-method occlusion")


def explain(net, x, class_index: int, method: str = "gradcam", target_layer: Optional[str] = None,
            act: str = "softmax") -> np.ndarray:
    """Heat-map (model spatial shape) for ``class_index``, scaled to [0, 1]."""
    import torch
    from monai.visualize import GradCAM, OcclusionSensitivity

    if method not in EXPLAIN_METHODS:
        raise InputError(f"unknown explanation method {method!r}", f"use one of {', '.join(EXPLAIN_METHODS)}")
    if method == "gradcam":
        layer = target_layer or last_spatial_layer(net, x)
        # MONAI's GradCAM leaves its hooks on the module, and in-place activations break its backward
        # hooks: work on a copy (same weights) with in-place switched off, so the bundle's network
        # stays untouched for the next case.
        net = copy.deepcopy(net)
        for m in net.modules():
            if getattr(m, "inplace", False):
                m.inplace = False
        if layer not in dict(net.named_modules()):
            raise ModelError(f"the network has no layer {layer!r} for Grad-CAM",
                             f"choose one of: {', '.join(n for n, _ in net.named_modules() if n)[:300]}")
        with torch.enable_grad():
            heat = GradCAM(nn_module=net, target_layers=layer)(x, class_idx=class_index)
        heat = heat[0, 0].detach().cpu().numpy()
    else:
        spatial = x.shape[2:]
        mask_size = [max(2, int(round(s / 7))) for s in spatial]
        activate = (lambda t: torch.sigmoid(t)) if act == "sigmoid" else True
        occ = OcclusionSensitivity(nn_module=net, mask_size=mask_size, n_batch=32, verbose=False, overlap=0.25,
                                   activate=activate)
        with torch.no_grad():
            occ_map = occ(x)[0][0, class_index].detach().cpu().numpy()
        # importance = how much hiding the neighbourhood changes the class probability, in either
        # direction (a gland can be evidence *against* a class: hiding it then raises that class).
        # Baseline = the median of the map: MONAI's window blending scales even a no-op occlusion
        # (hiding empty background) slightly, and most positions are such no-ops.
        heat = np.abs(occ_map - np.median(occ_map))
    heat = np.nan_to_num(heat.astype(np.float32))
    top = float(heat.max())
    return heat / top if top > 0 else heat


# --- the whole pipeline -------------------------------------------------------------------------

def classify(volume: Volume, bundle, mask: Optional[Volume] = None, roi: Optional[Sequence[float]] = None,
             label: Optional[int] = None, explain_method: Optional[str] = None, device: str = "auto",
             target_layer: Optional[str] = None, progress: Optional[Progress] = None,
             cancel: Optional[CancelToken] = None, clinical: Optional[dict] = None) -> ClassifyResult:
    """Classify ``volume`` (restricted to ``mask``/``roi`` when given) with a classification bundle.

    ``explain_method`` "gradcam" or "occlusion" adds ``heatmap``: a float Volume in [0, 1] on the
    input's exact grid for the predicted class.
    """
    import torch

    from MedAILib.runtime.device import choose_device

    t0 = time.monotonic()
    cancel = cancel or (progress.cancel if progress is not None else CancelToken())
    progress = progress or Progress(cancel=cancel)
    messages, warnings = [], []
    if explain_method is not None and explain_method not in EXPLAIN_METHODS:
        raise InputError(f"unknown explanation method {explain_method!r}", f"use one of {', '.join(EXPLAIN_METHODS)}")
    progress.stage(0.0, 0.2).update(0.0, "preparing the input (model space)")
    mi = to_model_input(volume, bundle, mask, roi, label)
    cancel.check()
    dev = choose_device(device)
    progress.stage(0.2, 0.5).update(0.0, f"running {bundle.name} on {dev.type}")
    net = bundle.network.to(dev).eval()
    from MedAILib.tasks.classification.clinical import with_clinical  # issue 19: bundles declaring variables

    net = with_clinical(net, bundle, clinical, dev)
    x = mi.tensor.to(dev)
    act = activation(bundle)
    temperature, threshold = calibration(bundle)
    with torch.no_grad():
        logits = net(x)
    if logits.ndim != 2:
        raise ModelError(f"{bundle.name} gives an output of shape {tuple(logits.shape)}, not one score per class",
                         "is this a classification bundle?")
    logits = logits / temperature
    probs = (torch.sigmoid(logits) if act == "sigmoid" else torch.softmax(logits, 1))[0].float().cpu().numpy()
    names = class_names(bundle, len(probs))
    binary = act == "softmax" and len(probs) == 2
    predicted = int(probs[1] >= threshold) if binary else int(np.argmax(probs))
    region = dict(mi.region)
    if len(set(np.unique(np.asarray(mi.tensor)).tolist())) <= 2 and region.get("kind") == "mask":
        n = _components(np.asarray(mi.tensor)[0, 0] > 0)
        if n > 1:
            warnings.append(f"the mask has {n} separate pieces; this model expects one structure "
                            "(e.g. one gland: split a two-gland segment first)")
    heat_vol = None
    if explain_method:
        cancel.check()
        progress.stage(0.5, 0.95).update(0.0, f"explaining ({explain_method})")
        heat = explain(net, x, predicted, explain_method, target_layer or medai_config(bundle).get("gradcam_layer"), act)
        if not heat.any():  # Grad-CAM keeps only positive evidence; there may be none at that layer
            warnings.append(f"the {explain_method} map is zero everywhere: no region raised '{names[predicted]}' "
                            "at the explained layer (try --explain-method occlusion)")
        arr = np.clip(mi.back(heat), 0.0, 1.0).astype(np.float32)
        heat_vol = volume.with_array(arr, explanation=explain_method, model=bundle.name,
                                     description=f"{explain_method} heat-map for '{names[predicted]}' ({bundle.name})")
        heat_vol.labels = None
    from MedAILib.tasks.ood import ood_warning  # autoencoder check, for models that carry one (issue 19)

    if (unlike := ood_warning(bundle, volume)) is not None:
        warnings.append(unlike)
    for w in warnings:
        progress.log(f"warning: {w}")
        messages.append(w)
    progress.stage(0.0, 1.0).update(1.0, f"{names[predicted]} ({probs[predicted]:.3f})")
    return ClassifyResult(names, [float(p) for p in probs], predicted, act == "sigmoid", heat_vol, region,
                          time.monotonic() - t0, dev.type, warnings, messages,
                          decision_threshold=threshold if binary else None, temperature=temperature)


def _components(mask: np.ndarray, ratio: float = 0.3) -> int:
    """Number of connected pieces at least ``ratio`` times the largest (small crumbs of a thin
    gland at 28^3 are normal in the dataset; two large pieces suggest two structures)."""
    import SimpleITK as sitk

    cc = sitk.GetArrayFromImage(sitk.ConnectedComponent(sitk.GetImageFromArray(mask.astype(np.uint8))))
    sizes = np.bincount(cc.ravel())[1:]
    return int((sizes >= ratio * sizes.max()).sum()) if sizes.size else 0


def predict_arrays(bundle, x: np.ndarray, batch: int = 64) -> np.ndarray:
    """Probabilities (calibrated like :func:`classify`) for inputs already in model space
    (N, C, *spatial), e.g. a MedMNIST split."""
    import torch

    net = bundle.network.eval()
    act = activation(bundle)
    temperature, _ = calibration(bundle)
    out = []
    with torch.no_grad():
        for s in range(0, len(x), batch):
            logits = net(torch.as_tensor(np.asarray(x[s:s + batch], np.float32))) / temperature
            out.append((torch.sigmoid(logits) if act == "sigmoid" else torch.softmax(logits, 1)).numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)
