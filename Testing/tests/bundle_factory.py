"""Build small MONAI bundles in the Model Zoo layout for tests and benchmarks (random weights).

    configs/metadata.json, configs/inference.json, models/model.pt (+ optional scripts/)

The inference config has the Model Zoo's standard ids: ``network_def``, ``preprocessing``
(LoadImaged first, EnsureChannelFirstd, Orientationd, Spacingd, intensity normalisation),
``inferer`` (SlidingWindowInferer) and ``postprocessing`` (Activationsd, Invertd, AsDiscreted,
SaveImaged), plus the ``evaluator``/``run`` MONAI's own bundle runner needs, so the same bundle
can be run through ``monai.bundle`` for fidelity comparisons.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import torch


def unet_def(in_channels=1, out_channels=3, channels=(4, 8), strides=(2,), num_res_units=0) -> dict:
    return {"_target_": "UNet", "spatial_dims": 3, "in_channels": in_channels, "out_channels": out_channels,
            "channels": list(channels), "strides": list(strides), "num_res_units": num_res_units}


def inference_config(network_def: dict, pixdim=(1.0, 1.0, 1.0), roi_size=(32, 32, 32), sw_batch_size=2,
                     intensity: str = "normalize", invert_in_postprocessing: bool = True,
                     axcodes: str = "RAS", overlap: float = 0.25) -> dict:
    if intensity == "normalize":
        norm = {"_target_": "NormalizeIntensityd", "keys": "image", "nonzero": True, "channel_wise": True}
    elif intensity == "scalerange":  # CT style
        norm = {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": -57, "a_max": 164,
                "b_min": 0.0, "b_max": 1.0, "clip": True}
    else:
        norm = None
    pre = [
        {"_target_": "LoadImaged", "keys": "image"},
        {"_target_": "EnsureChannelFirstd", "keys": "image"},
        {"_target_": "Orientationd", "keys": "image", "axcodes": axcodes},
        {"_target_": "Spacingd", "keys": "image", "pixdim": list(pixdim), "mode": "bilinear"},
    ] + ([norm] if norm else []) + [{"_target_": "EnsureTyped", "keys": "image"}]
    post = [{"_target_": "Activationsd", "keys": "pred", "softmax": True}]
    if invert_in_postprocessing:
        post.append({"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image",
                     "meta_key_postfix": "meta_dict", "nearest_interp": False, "to_tensor": True})
    post += [{"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
             {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir", "output_postfix": "seg",
              "separate_folder": False, "resample": False}]
    return {
        "imports": ["$import glob", "$import os"],
        "bundle_root": ".",
        "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": "/workspace/data",
        "datalist": "$list(sorted(glob.glob(@dataset_dir + '/*.nii.gz')))",
        "device": "$torch.device('cpu')",
        "network_def": network_def,
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": pre},
        "dataset": {"_target_": "Dataset", "data": "$[{'image': i} for i in @datalist]",
                    "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False,
                       "num_workers": 0},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": list(roi_size), "sw_batch_size": sw_batch_size,
                    "overlap": overlap},
        "postprocessing": {"_target_": "Compose", "transforms": post},
        "handlers": [{"_target_": "CheckpointLoader", "load_path": "$@bundle_root + '/models/model.pt'",
                      "load_dict": {"model": "@network"}}],
        "evaluator": {"_target_": "SupervisedEvaluator", "device": "@device", "val_data_loader": "@dataloader",
                      "network": "@network", "inferer": "@inferer", "postprocessing": "@postprocessing",
                      "val_handlers": "@handlers", "amp": False},
        "initialize": ["$monai.utils.set_determinism(seed=123)"],
        "run": ["$@evaluator.run()"],
    }


def metadata(labels=("background", "anterior", "posterior"), inputs=("image",), modality="MR",
             name="Test bundle") -> dict:
    in_def = {"type": "image", "format": "magnitude", "modality": modality, "num_channels": len(inputs),
              "spatial_shape": [32, 32, 32], "dtype": "float32", "value_range": [], "is_patch_data": True}
    if len(inputs) > 1:
        in_def["channel_def"] = {str(i): n for i, n in enumerate(inputs)}
    return {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json",
        "version": "0.1.0", "changelog": {"0.1.0": "test bundle"}, "monai_version": "1.6.1",
        "pytorch_version": torch.__version__.split("+")[0], "numpy_version": "2", "name": name,
        "task": "segmentation", "description": "random-weight bundle for MedAI tests", "authors": "MedAI tests",
        "copyright": "none", "license": "Apache-2.0",
        "network_data_format": {
            "inputs": {"image": in_def},
            "outputs": {"pred": {"type": "image", "format": "segmentation", "num_channels": len(labels),
                                 "spatial_shape": [32, 32, 32], "dtype": "float32", "value_range": [0, 1],
                                 "is_patch_data": True,
                                 "channel_def": {str(i): n for i, n in enumerate(labels)}}}},
    }


def make_bundle(folder, labels=("background", "anterior", "posterior"), inputs=("image",), pixdim=(1.0, 1.0, 1.0),
                roi_size=(32, 32, 32), sw_batch_size=2, intensity="normalize", invert_in_postprocessing=True,
                network_def=None, seed: int = 0, with_scripts: bool = False, modality: str = "MR") -> Path:
    """Write a random-weight bundle to ``folder`` and return the folder."""
    folder = Path(folder)
    (folder / "configs").mkdir(parents=True, exist_ok=True)
    (folder / "models").mkdir(parents=True, exist_ok=True)
    net_def = network_def or unet_def(len(inputs), len(labels))
    cfg = inference_config(net_def, pixdim, roi_size, sw_batch_size, intensity, invert_in_postprocessing)
    if with_scripts:  # a bundle whose config imports its own scripts/ package (Model Zoo style)
        (folder / "scripts").mkdir(exist_ok=True)
        (folder / "scripts" / "__init__.py").write_text("")
        (folder / "scripts" / "net.py").write_text(
            "from monai.networks.nets import UNet\n\n\ndef make_net(**kw):\n    return UNet(**kw)\n")
        kw = {k: v for k, v in net_def.items() if k != "_target_"}
        cfg["network_def"] = {"_target_": "scripts.net.make_net", **kw}
    (folder / "configs" / "inference.json").write_text(json.dumps(cfg, indent=2))
    (folder / "configs" / "metadata.json").write_text(json.dumps(metadata(labels, inputs, modality), indent=2))
    from monai.bundle import ConfigParser

    torch.manual_seed(seed)
    parser = ConfigParser({"network_def": net_def})
    net = parser.get_parsed_content("network_def")
    torch.save(net.state_dict(), folder / "models" / "model.pt")
    return folder


def zip_bundle(folder, zip_path, top: str = None) -> Path:
    """Zip a bundle folder (optionally under a top-level folder name, as Model Zoo zips are)."""
    folder, zip_path = Path(folder), Path(zip_path)
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                arc = f.relative_to(folder).as_posix()
                z.write(f, f"{top}/{arc}" if top else arc)
    return zip_path
