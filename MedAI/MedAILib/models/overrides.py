"""Fixes for old Model Zoo bundles whose config no longer matches the installed MONAI.

Bundles are frozen in time: their ``inference.json`` names constructor arguments and classes of the
MONAI version they were written for. When MONAI later removes or renames one, the bundle fails to
build ("unexpected keyword argument 'img_size'"). We never edit a bundle on disk (its files are what
the user trusted and what its checksum covers); instead this table rewrites the *parsed config* in
memory, at load time, before anything is instantiated.

Each rule names a class (``_target_``, matched by its last dotted component), what to change, and
is applied only when the installed MONAI really lacks the old name, so the table is harmless on the
MONAI versions that still accept it. Every applied rule is reported (logged and returned) so a
person can see that the run differs from the bundle's literal config.

Rules (MONAI version where the old form stopped working):

| class | old | new | why |
| --- | --- | --- | --- |
| SwinUNETR | ``img_size=...`` | dropped | argument removed in MONAI 1.5; the network is size-agnostic (e.g. swin_unetr_btcv_segmentation) |
| UNETR, ViT, ViTAutoEnc | ``pos_embed=...`` | ``proj_type=...`` | renamed in MONAI 1.3, old name removed since |
| UNet, BasicUNet, DynUNet, SegResNet, AttentionUnet | ``dimensions=...`` | ``spatial_dims=...`` | renamed in MONAI 0.6-0.8, old name removed in 1.x (early Model Zoo bundles, e.g. spleen v0.1.0 era) |
| AddChanneld / AddChannel | class removed in MONAI 1.3 | ``EnsureChannelFirstd(channel_dim='no_channel')`` | same behaviour: add a leading channel axis |
| AsChannelFirstd / AsChannelFirst | class removed in MONAI 1.3 | ``EnsureChannelFirstd(channel_dim=<channel_dim or -1>)`` | same behaviour: move the channel axis first |
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import logging
from typing import Optional

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Override:
    targets: tuple          # class names (last component of _target_)
    module: str             # where the current MONAI defines them (to check the old name is really gone)
    drop: tuple = ()        # argument names to remove
    rename: tuple = ()      # (old, new) argument names
    replace_target: Optional[str] = None   # new _target_ when the class itself is gone
    set_args: tuple = ()    # (name, value) pairs added when replace_target applies
    why: str = ""


OVERRIDES = (
    Override(("SwinUNETR",), "monai.networks.nets", drop=("img_size",),
             why="SwinUNETR no longer takes img_size (removed in MONAI 1.5)"),
    Override(("UNETR", "ViT", "ViTAutoEnc"), "monai.networks.nets", rename=(("pos_embed", "proj_type"),),
             why="pos_embed was renamed proj_type (MONAI 1.3)"),
    Override(("UNet", "BasicUNet", "DynUNet", "SegResNet", "AttentionUnet"), "monai.networks.nets",
             rename=(("dimensions", "spatial_dims"),), why="dimensions was renamed spatial_dims"),
    Override(("AddChanneld", "AddChannel"), "monai.transforms", replace_target="EnsureChannelFirst",
             set_args=(("channel_dim", "no_channel"),), why="AddChannel(d) was removed (MONAI 1.3)"),
    Override(("AsChannelFirstd", "AsChannelFirst"), "monai.transforms", replace_target="EnsureChannelFirst",
             set_args=(("channel_dim", -1),),
             why="AsChannelFirst(d) was removed (MONAI 1.3)"),
)


def _class_of(module: str, name: str):
    try:
        return getattr(importlib.import_module(module), name, None)
    except ImportError:  # pragma: no cover - MONAI is a hard dependency
        return None


def _accepts(cls, arg: str) -> bool:
    try:
        params = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return True
    return arg in params


def _fix_node(node: dict, path: str, rules, applied: list) -> None:
    target = node.get("_target_")
    if not isinstance(target, str) or target.startswith("$"):
        return
    name = target.split(".")[-1]
    for rule in rules:
        if name not in rule.targets:
            continue
        cls = _class_of(rule.module, name)
        if rule.replace_target:
            if cls is not None:  # the old class still exists here: leave the config alone
                continue
            new = rule.replace_target + ("d" if name.endswith("d") else "")
            node["_target_"] = new
            for key, value in rule.set_args:
                node.setdefault(key, value)
            applied.append(f"{path}: {name} -> {new} ({rule.why})")
            continue
        if cls is None:
            continue
        for arg in rule.drop:
            if arg in node and not _accepts(cls, arg):
                del node[arg]
                applied.append(f"{path}: dropped {name}({arg}=...) ({rule.why})")
        for old, new in rule.rename:
            if old != new and old in node and not _accepts(cls, old):
                value = node.pop(old)
                node.setdefault(new, value)
                applied.append(f"{path}: {name}({old}=...) -> {new} ({rule.why})")


def apply_overrides(config, rules=OVERRIDES) -> list:
    """Rewrite a bundle config (dict, or a ``monai.bundle.ConfigParser``) in place; return what changed.

    Call it after reading the config and before ``get_parsed_content``. Applies to every
    ``_target_`` node anywhere in the config (network_def, preprocessing transforms, ...).
    """
    is_parser = hasattr(config, "get_parsed_content")
    root = config.get() if is_parser else config  # ConfigParser.get(): the raw, unparsed config dict
    applied: list = []

    def walk(node, path):
        if isinstance(node, dict):
            _fix_node(node, path or "(root)", rules, applied)
            for k, v in list(node.items()):
                walk(v, f"{path}#{k}" if path else str(k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}#{i}")

    walk(root, "")
    if is_parser and applied:
        config.set(root)  # make sure the parser re-reads the edited config
    for msg in applied:
        log.warning("bundle config override: %s", msg)
    return applied
