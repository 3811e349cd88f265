"""The two small torchvision helpers that MONAI's detection networks call, for when torchvision cannot
be imported.

MONAI builds RetinaNet's feature pyramid (``BackboneWithFPN``, ``resnet_fpn_feature_extractor``,
used by the Model Zoo ``lung_nodule_ct_detection`` config) with two pure-Python helpers it takes
from torchvision at call time: ``torchvision.models._utils.IntermediateLayerGetter`` and
``torchvision.models.detection.backbone_utils._validate_trainable_layers`` (and, in training, it
checks ``isinstance`` against torchvision's ``Matcher`` and ``BalancedPositiveNegativeSampler``). No torchvision wheel
fits the CPU build of torch that MedAI pins (PyPI's torchvision links the CUDA build of libtorch and
fails to import next to ``torch+cpu``), so when ``import torchvision.models`` fails, :func:`ensure`
hands MONAI these two equivalents (same module names and state-dict keys as torchvision's, so
Model Zoo weights load unchanged). With a working torchvision nothing is touched. Nothing else in
``monai.apps.detection`` that MedAI uses needs torchvision (NMS, box coder, ATSS matcher and hard
negative sampler are MONAI's own).

``IntermediateLayerGetter`` and ``_validate_trainable_layers`` follow torchvision
(BSD-3-Clause, Copyright (c) Soumith Chintala 2016, all rights reserved).
"""

from __future__ import annotations

import types
import warnings
from collections import OrderedDict

from torch import nn

_state = {"checked": False, "source": None}


class IntermediateLayerGetter(nn.ModuleDict):
    """The children of ``model`` up to the last of ``return_layers``; forward returns the outputs
    of ``return_layers`` ({child name: output name}) in an OrderedDict."""

    def __init__(self, model: nn.Module, return_layers: dict) -> None:
        names = [name for name, _ in model.named_children()]
        if not set(return_layers).issubset(names):
            raise ValueError("return_layers are not present in model")
        orig = return_layers
        remaining = {str(k): str(v) for k, v in return_layers.items()}
        layers = OrderedDict()
        for name, module in model.named_children():
            layers[name] = module
            remaining.pop(name, None)
            if not remaining:
                break
        super().__init__(layers)
        self.return_layers = orig

    def forward(self, x):
        out = OrderedDict()
        for name, module in self.items():
            x = module(x)
            if name in self.return_layers:
                out[self.return_layers[name]] = x
        return out


def _validate_trainable_layers(is_trained, trainable_backbone_layers, max_value, default_value):
    if not is_trained:
        if trainable_backbone_layers is not None:
            warnings.warn("Changing trainable_backbone_layers has no effect if neither pretrained nor "
                          f"pretrained_backbone have been set to True, falling back to {max_value}", stacklevel=2)
        trainable_backbone_layers = max_value
    if trainable_backbone_layers is None:
        trainable_backbone_layers = default_value
    if trainable_backbone_layers < 0 or trainable_backbone_layers > max_value:
        raise ValueError(f"Trainable backbone layers should be in the range [0,{max_value}], "
                         f"got {trainable_backbone_layers} ")
    return trainable_backbone_layers


class _NeedsTorchvision:
    """Stands for torchvision's ``Matcher`` / ``BalancedPositiveNegativeSampler`` in MONAI's
    ``isinstance`` checks during training; MedAI uses MONAI's ATSS matcher and hard negative
    sampler, so building one of these (``set_regular_matcher``, ``set_balanced_sampler``) says
    that it needs torchvision."""

    def __init__(self, *args, **kwargs):
        raise ImportError(f"{type(self).__name__} needs torchvision, which cannot be imported here; "
                          "use set_atss_matcher / set_hard_negative_sampler (MONAI's own)")


class Matcher(_NeedsTorchvision):
    pass


class BalancedPositiveNegativeSampler(_NeedsTorchvision):
    pass


def ensure() -> str:
    """'torchvision' when torchvision imports, else 'medai' after handing MONAI the helpers above."""
    if _state["checked"]:
        return _state["source"]
    try:
        import torchvision.models  # noqa: F401
        import torchvision.models.detection.backbone_utils  # noqa: F401

        _state["source"] = "torchvision"
    except Exception:  # noqa: BLE001 - absent, or a CUDA build that cannot load next to torch+cpu
        import monai.apps.detection.networks.retinanet_detector as retinanet_detector
        import monai.apps.detection.networks.retinanet_network as retinanet_network
        import monai.networks.blocks.backbone_fpn_utils as backbone_fpn_utils

        backbone_fpn_utils.torchvision_models = types.SimpleNamespace(
            _utils=types.SimpleNamespace(IntermediateLayerGetter=IntermediateLayerGetter))
        retinanet_network._validate_trainable_layers = _validate_trainable_layers
        retinanet_detector.Matcher = Matcher
        retinanet_detector.BalancedPositiveNegativeSampler = BalancedPositiveNegativeSampler
        _state["source"] = "medai"
    _state["checked"] = True
    return _state["source"]
