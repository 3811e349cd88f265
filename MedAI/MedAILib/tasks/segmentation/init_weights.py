"""``--init BUNDLE``: start training from another bundle's weights (shipped, user or Model Zoo).

Tensors are copied where name and shape agree; the rest (typically the output head when the label
set differs, or the first convolution when the channel count differs) keep their fresh
initialisation. The report says how many were loaded, so a silent mismatch cannot pass as
fine-tuning.
"""

from __future__ import annotations

import copy
import logging
from typing import Optional

import torch

from MedAILib.core.errors import ModelError

log = logging.getLogger(__name__)


def init_source(ref: str) -> dict:
    """The bundle ``ref`` (catalogue id or folder; trust rules as for ``medai segment``) ->
    {"net_def", "state_dict", "roi_size", "path"}."""
    from MedAILib.models.bundle import resolve_model

    b = resolve_model(ref, task="segmentation")
    net_def = copy.deepcopy(b.parser.get("network_def"))
    if not isinstance(net_def, dict) or "_target_" not in net_def:
        raise ModelError(f"bundle {b.path} has no plain network_def to copy", "use a bundle whose network_def is a dict")
    inferer = b.parser.get("inferer") or {}
    roi = inferer.get("roi_size") if isinstance(inferer, dict) else None
    state = torch.load(b.weights_path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    return {"net_def": net_def, "state_dict": state, "roi_size": roi if isinstance(roi, list) else None,
            "path": str(b.path), "ref": ref}


def adapt_net_def(net_def: dict, in_channels: int, out_channels: int) -> dict:
    nd = copy.deepcopy(net_def)
    for k in ("in_channels", "out_channels"):
        if k not in nd:
            raise ModelError(f"the init bundle's network_def has no {k}", "use a UNet/DynUNet/SegResNet bundle")
    nd["in_channels"], nd["out_channels"] = in_channels, out_channels
    return nd


def load_matching(net: torch.nn.Module, state: dict, source: Optional[str] = None) -> dict:
    """Copy every tensor whose name and shape match; returns counts for the model card."""
    own = net.state_dict()
    loaded, skipped = [], []
    for k, v in state.items():
        if k in own and own[k].shape == v.shape:
            own[k] = v.to(own[k].dtype)
            loaded.append(k)
        else:
            skipped.append(k)
    net.load_state_dict(own)
    fresh = [k for k in own if k not in loaded]
    n_loaded = sum(own[k].numel() for k in loaded)
    n_all = sum(v.numel() for v in own.values())
    if not loaded:
        raise ModelError(f"no layer of {source or 'the init bundle'} matches the network being trained",
                         "use --init only with a bundle of the same architecture")
    report = {"source": source, "tensors_loaded": len(loaded), "tensors_fresh": len(fresh),
              "tensors_skipped": len(skipped), "fraction_of_parameters_loaded": round(n_loaded / max(1, n_all), 4),
              "fresh": fresh[:8]}
    log.info("init from %s: %d tensors loaded, %d fresh (%s), %.1f%% of parameters", source, len(loaded),
             len(fresh), ", ".join(fresh[:4]), 100 * report["fraction_of_parameters_loaded"])
    return report
