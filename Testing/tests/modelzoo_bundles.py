"""Bundles in the MONAI Model Zoo layout (random weights) for the Model Zoo fidelity tests, and a runner
for MONAI's own bundle workflow (``monai.bundle.run``: SupervisedEvaluator + SaveImaged).

Built on Testing/tests/bundle_factory.py; adds what those tests need beyond it: a CT UNet with a
Spacingd/Orientationd/ScaleIntensityRanged chain, a 4-input MR SegResNet (channels T1c/T1/T2/FLAIR
loaded from four files, as the BraTS bundle does), a bundle importing its own ``scripts/`` package,
and an "old" bundle whose config uses a constructor argument current MONAI removed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bundle_factory import make_bundle, unet_def

BRATS_INPUTS = ("T1c", "T1", "T2", "FLAIR")


def segresnet_def(in_channels: int, out_channels: int) -> dict:
    return {"_target_": "SegResNet", "blocks_down": [1, 1], "blocks_up": [1], "init_filters": 8,
            "in_channels": in_channels, "out_channels": out_channels, "dropout_prob": 0.0}


def ct_unet_bundle(folder, with_scripts: bool = False) -> Path:
    """(a)/(c) CT UNet: LoadImaged, EnsureChannelFirstd, Orientationd RAS, Spacingd (anisotropic),
    ScaleIntensityRanged (-57..164 HU), SlidingWindowInferer; softmax, Invertd, argmax, SaveImaged."""
    labels = ("background", "spleen", "liver", "kidney_right")
    return make_bundle(folder, labels=labels, pixdim=(2.5, 3.0, 4.0), roi_size=(32, 32, 16), sw_batch_size=2,
                       intensity="scalerange", modality="CT", seed=1, with_scripts=with_scripts,
                       network_def=unet_def(1, len(labels), channels=(4, 8, 16), strides=(2, 2)))


def mr_multi_input_bundle(folder) -> Path:
    """(b) 4-input MR SegResNet (T1c, T1, T2, FLAIR stacked as channels), z-score per channel."""
    labels = ("background", "necrosis", "edema", "enhancing tumor")
    return make_bundle(folder, labels=labels, inputs=BRATS_INPUTS, pixdim=(3.0, 3.0, 3.0), roi_size=(32, 32, 32),
                       sw_batch_size=1, intensity="normalize", modality="MR", seed=2,
                       network_def=segresnet_def(len(BRATS_INPUTS), len(labels)))


def old_unet_bundle(folder) -> Path:
    """A bundle written for an old MONAI: its UNet still says ``dimensions=3`` (now ``spatial_dims``),
    which the installed MONAI rejects."""
    folder = ct_unet_bundle(folder)
    cfg_path = folder / "configs" / "inference.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["network_def"]["dimensions"] = cfg["network_def"].pop("spatial_dims")
    cfg_path.write_text(json.dumps(cfg, indent=2))
    return folder


def run_monai_workflow(bundle: Path, items: list, output_dir: Path) -> list:
    """Run the bundle exactly as the Model Zoo documents (``python -m monai.bundle run``), in process.

    ``items`` are the dataset entries' image values (a path, or a list of paths for a multi-input
    bundle). Returns the files SaveImaged wrote, in item order.
    """
    from monai.bundle import run

    bundle = Path(bundle)
    # Model Zoo bundles are run with the bundle root on PYTHONPATH so `scripts.*` imports resolve.
    for mod in [m for m in sys.modules if m == "scripts" or m.startswith("scripts.")]:
        del sys.modules[mod]
    sys.path.insert(0, str(bundle))
    try:
        run(run_id="run", init_id="initialize", config_file=str(bundle / "configs" / "inference.json"),
            meta_file=str(bundle / "configs" / "metadata.json"), bundle_root=str(bundle),
            output_dir=str(output_dir), datalist=list(items))
    finally:
        sys.path.remove(str(bundle))
    written = sorted(Path(output_dir).rglob("*_seg.nii.gz"))
    by_stem = {p.name: p for p in written}
    out = []
    for item in items:
        first = Path(item[0] if isinstance(item, (list, tuple)) else item)
        stem = first.name[:-len(".nii.gz")] if first.name.endswith(".nii.gz") else first.stem
        out.append(by_stem[f"{stem}_seg.nii.gz"])
    return out
