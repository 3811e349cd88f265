"""A detection bundle (Model Zoo ``lung_nodule_ct_detection`` layout) loaded for ``medai detect``.

The bundle's config decides what is computed: ``network_def`` (a ``RetinaNet``), ``anchor_generator``,
``detector`` (``RetinaNetDetector``: box coder, box selector with score threshold, top-k and NMS) and
``detector_ops`` (e.g. ``set_box_selector_parameters``, ``set_sliding_window_inferer``), and its
``preprocessing``. MedAI loads the weights itself (``torch.load(weights_only=True)`` through
:class:`MedAILib.models.bundle.Bundle`) and hands that network to the config's ``detector``, so the
config's own ``network``/``device`` expressions and its ``scripts`` inferer, saver and evaluator
are never run. The engine decides the device and keeps the sliding window no larger than the
(padded) image.
"""

from __future__ import annotations

from typing import Optional

from MedAILib.core.errors import ModelError
from MedAILib.models.overrides import Override

# Model Zoo detection bundles written for MONAI 0.9-1.2 (lung_nodule_ct_detection) pass
# meta_key_postfix to EnsureChannelFirstd, which MONAI 1.3+ no longer accepts; the metadata lives in
# the MetaTensor since, so dropping it changes nothing. Applied in memory only, and only where the
# installed MONAI lacks the argument (MedAILib.models.overrides' mechanism), and reported.
DETECTION_OVERRIDES = (
    Override(("EnsureChannelFirstd",), "monai.transforms", drop=("meta_key_postfix",),
             why="EnsureChannelFirstd no longer takes meta_key_postfix (MONAI 1.3)"),
)


def is_detection_bundle(bundle) -> bool:
    """A bundle whose config names a RetinaNet detector (or whose network is a RetinaNet)."""
    p = bundle.parser
    if "detector" in p:
        return "retinanetdetector" in str(p.get("detector", {}).get("_target_", "")).lower()
    return "retinanet" in str(p.get("network_def", {}).get("_target_", "")).lower()


class DetectionModel:
    """``detector`` (a ``RetinaNetDetector`` in eval mode) + label names, from a loaded Bundle."""

    def __init__(self, bundle, label_names: Optional[list] = None):
        from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector

        from MedAILib.tasks.detection.compat import ensure

        from MedAILib.models.overrides import apply_overrides

        ensure()  # MONAI's FPN helpers from torchvision, or MedAI's equivalents where it cannot load
        self.bundle = bundle
        applied = apply_overrides(bundle.parser, DETECTION_OVERRIDES)
        bundle.overrides_applied = list(getattr(bundle, "overrides_applied", []) or []) + applied
        if not is_detection_bundle(bundle):
            raise ModelError(f"model {bundle.name} is not a detection model (no RetinaNet detector in its config)",
                             "use `medai segment` for segmentation models, or give a detection bundle")
        p = bundle.parser
        network = bundle.network  # network_def + verified weights
        try:
            if "detector" in p:
                p["network"] = network  # the config's "$@network_def.to(@device)" would build a second copy
                self.detector = p.get_parsed_content("detector")
            else:
                self.detector = RetinaNetDetector(network, p.get_parsed_content("anchor_generator"))
            if "detector_ops" in p:
                p.get_parsed_content("detector_ops")  # acts on the same (cached) detector instance
        except ModelError:
            raise
        except Exception as e:  # noqa: BLE001 - a config that does not build is the bundle's problem
            raise ModelError(f"detection bundle {bundle.name}: cannot build its detector ({type(e).__name__}: "
                             f"{str(e).splitlines()[0][:200]})",
                             "the bundle may need another MONAI version or a package it imports") from e
        if not isinstance(self.detector, RetinaNetDetector):
            raise ModelError(f"bundle {bundle.name}: 'detector' is a {type(self.detector).__name__}, "
                             "not a RetinaNetDetector", "")
        if getattr(self.detector, "box_selector", None) is None:
            self.detector.set_box_selector_parameters()
        self.detector.eval()
        n = int(self.detector.num_classes)
        names = label_names or _label_names(bundle, n)
        self.label_names = {i: names[i] if i < len(names) else f"class {i}" for i in range(n)}

    @property
    def name(self) -> str:
        return self.bundle.name

    @property
    def score_threshold(self) -> float:
        return float(self.detector.box_selector.score_thresh)

    @property
    def size_divisible(self):
        return self.detector.size_divisible


def _label_names(bundle, n: int) -> list:
    """Class names: the catalogue entry's labels, or metadata ``detection_classes`` / ``channel_def``,
    else ``lesion`` for a single class."""
    entry = getattr(bundle, "entry", None)
    if entry is not None and entry.label_infos:
        return [l.name for l in sorted(entry.label_infos, key=lambda l: l.value)]
    meta = bundle.metadata
    classes = meta.get("detection_classes")
    if isinstance(classes, dict):
        return [str(classes.get(str(i), f"class {i}")) for i in range(n)]
    out = (meta.get("network_data_format", {}).get("outputs", {}).get("pred", {}) or {}).get("channel_def") or {}
    if out:
        return [str(out.get(str(i), f"class {i}")) for i in range(n)]
    return ["lesion"] if n == 1 else [f"class {i}" for i in range(n)]


def load_detection_model(model: str, trust_paths=(), progress=None) -> DetectionModel:
    from MedAILib.models import resolve_model

    return DetectionModel(resolve_model(model, task="detection", trust_paths=trust_paths, progress=progress))
