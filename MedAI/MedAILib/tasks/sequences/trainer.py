"""Train a small left-ventricle (blood pool) model on the Sunnybrook cine and package it as a MONAI bundle.

``python -m MedAILib.tasks.sequences.trainer --data ../shared/data/sunnybrook-cine --out BUNDLE``

Data (how little, stated plainly): manual endocardial contours exist only at end-diastole and
end-systole, on 9-11 slices per patient. Training uses 3 patients (SC-HF-I-1, -2, -4: 56 labelled
2D images); SC-HF-I-5 and -6 (40 labelled images, all 20 frames for the ejection fraction) are held
out for :mod:`.evaluate`.

Model: a DynUNet whose kernels are 3x3x1 and strides 2x2x1, i.e. a 2D U-Net applied to each slice
of a frame, written as a 3D network so the bundle runs through MONAI's ordinary SlidingWindowInferer
(window 80x80x1) and through ``medai segment`` / ``medai segment-sequence`` unchanged. No
Orientationd: the network must see the acquisition plane (short axis), which an oblique cine's
nearest RAS axes would scramble. Preprocessing: in-plane spacing 2 mm (slice spacing kept),
z-score per frame. The training transforms are built from the same config dicts the bundle's
inference.json holds, so training and inference see identical inputs.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch

from MedAILib.tasks.sequences.cine_lv import LABEL_NAME, load_case

TRAIN_PATIENTS = ("SCD0000101", "SCD0000201", "SCD0000301")
TEST_PATIENTS = ("SCD0000401", "SCD0000501")
PIXDIM = [2.0, 2.0, -1]          # in-plane mm; -1: keep the slice spacing (MONAI Spacingd)
PATCH = [80, 80, 1]              # training patch = inference window (160 mm: the LV and its surroundings)
FILTERS = [16, 32, 64, 128]


def network_def(filters=FILTERS) -> dict:
    n = len(filters)
    return {"_target_": "DynUNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 2,
            "kernel_size": [[3, 3, 1]] * n, "strides": [[1, 1, 1]] + [[2, 2, 1]] * (n - 1),
            "upsample_kernel_size": [[2, 2, 1]] * (n - 1), "filters": list(filters),
            "norm_name": "instance", "res_block": True}


def preprocessing_def(keys=("image",)) -> list:
    keys = list(keys)
    modes = ["bilinear", "nearest"][: len(keys)]
    return [{"_target_": "LoadImaged", "keys": keys},
            {"_target_": "EnsureChannelFirstd", "keys": keys},
            {"_target_": "Spacingd", "keys": keys, "pixdim": PIXDIM, "mode": modes},
            {"_target_": "NormalizeIntensityd", "keys": "image", "nonzero": False, "channel_wise": True},
            {"_target_": "EnsureTyped", "keys": keys, "dtype": "$torch.float32"}]


def inference_config(filters=FILTERS) -> dict:
    return {
        "imports": ["$import glob", "$import os", "$import monai", "$import numpy as np", "$import torch"],
        "bundle_root": ".",
        "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": "/workspace/data/sunnybrook-cine-nifti",
        "datalist": "$list(sorted(glob.glob(@dataset_dir + '/*.nii.gz')))",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": network_def(filters),
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": preprocessing_def()},
        "dataset": {"_target_": "Dataset", "data": "$[{'image': i} for i in @datalist]", "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False,
                       "num_workers": 0},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": PATCH, "sw_batch_size": 32, "overlap": 0.25,
                    "mode": "gaussian"},
        "postprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "Activationsd", "keys": "pred", "softmax": True},
            {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image",
             "nearest_interp": False, "to_tensor": True},
            {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
            {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir", "output_postfix": "seg",
             "output_dtype": "$np.uint8", "resample": False, "separate_folder": False}]},
        "handlers": [{"_target_": "CheckpointLoader", "load_path": "$@bundle_root + '/models/model.pt'",
                      "load_dict": {"model": "@network"}, "map_location": "@device"},
                     {"_target_": "StatsHandler", "iteration_log": False}],
        "evaluator": {"_target_": "SupervisedEvaluator", "device": "@device", "val_data_loader": "@dataloader",
                      "network": "@network", "inferer": "@inferer", "postprocessing": "@postprocessing",
                      "val_handlers": "@handlers", "amp": "$torch.cuda.is_available()"},
        "initialize": ["$monai.config.print_config()"],
        "run": ["$@evaluator.run()"],
    }


def _parse(obj):
    from monai.bundle import ConfigParser

    parser = ConfigParser({"x": copy.deepcopy(obj)})
    return parser.get_parsed_content("x")


def build_network(filters=FILTERS) -> torch.nn.Module:
    return _parse(network_def(filters))


def labelled_slices(case) -> list:
    """(image 2D (1, H, W), label 2D (1, H, W)) of every contoured image of ``case``, after the bundle's
    own preprocessing of its whole frame (spacing, per-frame z-score)."""
    from monai.transforms import Compose

    from MedAILib.runtime.model_space import metatensor_from_volumes

    pre = Compose([_parse(t) for t in preprocessing_def(("image", "label"))[1:]])  # no LoadImaged
    out = []
    for t in sorted({t for t, _ in case.masks}):
        frame = case.sequence.frames[t]
        label = np.zeros(frame.array.shape, np.uint8)
        ks = sorted(k for tt, k in case.masks if tt == t)
        for k in ks:
            label[k] = case.masks[(t, k)]
        d = pre({"image": metatensor_from_volumes([frame]), "label": metatensor_from_volumes([frame.with_array(label)])})
        img, lab = d["image"].as_tensor(), d["label"].as_tensor()  # (1, I, J, K)
        for k in ks:
            out.append((img[..., k].clone(), lab[..., k].round().to(torch.uint8).clone()))
    return out


def augmentations():
    from monai import transforms as T

    keys = ["image", "label"]
    return T.Compose([
        T.RandCropByPosNegLabeld(keys=keys, label_key="label", spatial_size=PATCH[:2], pos=2, neg=1, num_samples=1,
                                 fg_indices_key="fg", bg_indices_key="bg"),
        T.RandAffined(keys=keys, prob=0.8, rotate_range=0.35, scale_range=(0.15, 0.15), mode=["bilinear", "nearest"],
                      padding_mode="zeros"),
        T.RandGaussianNoised(keys="image", prob=0.2, std=0.1),
        T.RandScaleIntensityd(keys="image", factors=0.2, prob=0.5),
        T.RandShiftIntensityd(keys="image", offsets=0.2, prob=0.5),
        T.RandAdjustContrastd(keys="image", gamma=(0.7, 1.5), prob=0.3),
    ])


def train(data_root, out_dir, iterations: int = 2000, batch_size: int = 6, lr: float = 3e-3, seed: int = 0,
          threads: int = 1, max_minutes: float = 7.5, patients=TRAIN_PATIENTS, log=print) -> dict:
    from monai.losses import DiceCELoss
    from monai.utils import set_determinism

    torch.set_num_threads(threads)
    set_determinism(seed)
    rng = np.random.default_rng(seed)
    t_start = time.monotonic()
    cases = [load_case(data_root, p) for p in patients]
    samples = [s for c in cases for s in labelled_slices(c)]
    log(f"training on {len(cases)} patients ({', '.join(c.case for c in cases)}): {len(samples)} labelled images")
    from monai.transforms import FgBgToIndicesd

    indexed = [FgBgToIndicesd(keys="label", fg_postfix="_fg", bg_postfix="_bg")({"image": i, "label": l})
               for i, l in samples]
    for d in indexed:
        d["fg"], d["bg"] = d.pop("label_fg"), d.pop("label_bg")
    aug = augmentations()
    aug.set_random_state(seed=seed)
    net = build_network()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    budget = max_minutes * 60.0
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    history = []
    net.train()
    done = 0
    for it in range(iterations):
        if time.monotonic() - t_start > budget:
            log(f"stopping at iteration {it}: the {max_minutes} min budget is used up")
            break
        xs, ys = [], []
        for n in rng.integers(0, len(samples), batch_size):
            d = aug(dict(indexed[n]))
            d = d[0] if isinstance(d, list) else d
            xs.append(torch.as_tensor(d["image"]))
            ys.append(torch.as_tensor(d["label"]))
        x = torch.stack(xs)[..., None].float()
        y = torch.stack(ys)[..., None].float()
        # Cosine learning rate over the time budget (the CPU is shared, so the number of iterations that
        # fit is not known in advance): warm-up in the first 5 %, annealed to ~0 when the budget ends.
        frac = min(1.0, max((time.monotonic() - t_start) / budget, (it + 1) / iterations))
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, frac / 0.05) * 0.5 * (1 + np.cos(np.pi * frac))
        opt.zero_grad()
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        done = it + 1
        history.append(float(loss))
        if done % 20 == 0:
            log(f"iteration {done}/{iterations}: loss {np.mean(history[-20:]):.4f} "
                f"({time.monotonic() - t_start:.0f} s)")
    info = {"patients": [c.case for c in cases], "labelled_images": len(samples), "iterations": done,
            "batch_size": batch_size, "lr": lr, "seed": seed, "threads": threads,
            "train_seconds": round(time.monotonic() - t_start, 1), "final_loss": float(np.mean(history[-100:])),
            "filters": FILTERS, "patch": PATCH, "pixdim": PIXDIM}
    write_bundle(out_dir, net.state_dict(), info)
    return info


def write_bundle(out_dir, state_dict: dict, info: dict, metrics: dict = None, filters=FILTERS) -> Path:
    from MedAILib.models.bundle_writer import write_bundle as write

    meta = {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json",
        "version": "0.1.0",
        "changelog": {"0.1.0": "first release: trained on 3 Sunnybrook patients on a shared CPU"},
        "monai_version": "1.6.1", "pytorch_version": "2.13.0", "numpy_version": "2.4.6",
        "name": "MedAI left ventricle (blood pool) on short-axis cine MR",
        "task": "Left-ventricle blood-pool segmentation in each slice of each frame of a short-axis cine",
        "description": "2D U-Net (DynUNet with 3x3x1 kernels) applied slice by slice; trained by MedAI on the "
                       "manual endocardial contours of 3 Sunnybrook patients (56 labelled images). A small "
                       "demonstration model, not a clinical tool.",
        "authors": "MedAI contributors",
        "copyright": "Copyright (c) MedAI contributors; weights CC0-derived (Sunnybrook Cardiac Data, CC0 1.0)",
        "data_source": "Sunnybrook Cardiac Data (MICCAI 2009 LV challenge), SC-HF-I-1, -2, -4; contours CC0 1.0",
        "data_type": "dicom",
        "image_classes": "single channel cine MR frame (short axis), in-plane 2 mm, z-score per frame",
        "label_classes": f"0 background, 1 {LABEL_NAME}",
        "pred_classes": f"0 background, 1 {LABEL_NAME}",
        "eval_metrics": metrics or {},
        "intended_use": "Research and demonstration only; not a medical device. Input: a short-axis cine frame "
                        "(or a 4D cine through medai segment-sequence).",
        "references": ["Radau P. et al., Evaluation Framework for Algorithms Segmenting Short Axis Cardiac MRI, "
                       "The MIDAS Journal (2009), http://hdl.handle.net/10380/3070",
                       "Isensee F. et al., nnU-Net, Nature Methods 18, 203-211 (2021)"],
        "network_data_format": {
            "inputs": {"image": {"type": "image", "format": "magnitude", "modality": "MR", "num_channels": 1,
                                 "spatial_shape": PATCH, "dtype": "float32", "value_range": [],
                                 "is_patch_data": True, "channel_def": {"0": "cine MR"}}},
            "outputs": {"pred": {"type": "image", "format": "segmentation", "num_channels": 2,
                                 "spatial_shape": PATCH, "dtype": "float32", "value_range": [0, 1],
                                 "is_patch_data": True, "channel_def": {"0": "background", "1": LABEL_NAME}}}},
        "training": info,
    }
    return write(out_dir, inference_config(filters), meta, state_dict, license_text=(
        "Weights (models/model.pt): trained on the Sunnybrook Cardiac Data, released under CC0 1.0 Universal; "
        "the authors ask for a citation: Radau P. et al., The MIDAS Journal (2009), http://hdl.handle.net/10380/3070.\n"
        "Configs: Apache-2.0 (MedAI).\n"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="the sunnybrook-cine folder")
    ap.add_argument("--out", required=True, help="bundle folder to write")
    ap.add_argument("--iterations", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=6)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-minutes", type=float, default=7.5)
    a = ap.parse_args(argv)
    info = train(a.data, a.out, a.iterations, a.batch_size, a.lr, a.seed, a.threads, a.max_minutes)
    print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
