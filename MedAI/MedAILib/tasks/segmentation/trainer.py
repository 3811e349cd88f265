"""Train the shipped hippocampus segmentation model (MSD Task04) and package it as a MONAI bundle.

Your own data (any labels, modality, channels): ``medai train segmentation --images DIR --labels DIR``
or ``--datalist FILE.json`` -> :mod:`own_data` (planning in :mod:`planning`, ``--init`` in
:mod:`init_weights`; docs/training.md). The shipped hippocampus model is reproduced by
``medai train segmentation --data DIR --split SPLIT.json --out BUNDLE_DIR`` or
``python -m MedAILib.tasks.segmentation.trainer ...``. The bundle it writes (configs/inference.json,
configs/metadata.json, models/model.pt, docs/README.md, LICENSE) follows the MONAI Model Zoo layout
and runs with MONAI's own ``python -m monai.bundle run``.

Design choices (why):
- Whole-volume patches (40x56x40 covers the median 35x50x36 crop): the hippocampus crops are tiny,
  so a patch sees the whole structure and its context; inference uses the same window size.
- Per-volume z-score normalisation: the intensity scale varies by four orders of magnitude.
- Flips only along left-right (axis 0 in RAS): an anterior-posterior flip would swap the meaning of
  the two labels, and a superior-inferior flip produces anatomy that does not occur.
- The network and preprocessing used here are the ones written into inference.json, so the bundle
  reproduces the validation figures exactly (a test checks that).
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import logging
import os
import random
import time
from pathlib import Path

import numpy as np
import torch

from MedAILib.models.checkpoints import resume_or_start

log = logging.getLogger(__name__)

LABEL_NAMES = {0: "background", 1: "anterior hippocampus", 2: "posterior hippocampus"}
PATCH = (40, 56, 40)  # training patch and inference window (divisible by 8 for 3 down-samplings)
DEFAULT_FILTERS = (20, 40, 80, 160)  # the shipped model (7.4 MB of weights)
MAX_MODEL_BYTES = 10 * 1024 * 1024
ARCH_NAMES = {"unet": "UNet", "dynunet": "DynUNet"}


# ---------------------------------------------------------------- data and split


def list_cases(data_dir: str | os.PathLike) -> list[str]:
    """Case ids (e.g. ``hippocampus_001``) that have both an image and a label."""
    data_dir = Path(data_dir)
    images = {p.name[: -len(".nii.gz")] for p in (data_dir / "imagesTr").glob("*.nii.gz")}
    labels = {p.name[: -len(".nii.gz")] for p in (data_dir / "labelsTr").glob("*.nii.gz")}
    return sorted(images & labels)


def make_split(case_ids: list[str], n_val: int = 50, seed: int = 0) -> dict:
    """A fixed train/validation split from a seeded shuffle (written once, then committed)."""
    ids = sorted(case_ids)
    random.Random(seed).shuffle(ids)
    return {
        "description": "Fixed train/validation split of MSD Task04 hippocampus (seeded shuffle).",
        "seed": seed,
        "training": sorted(ids[n_val:]),
        "validation": sorted(ids[:n_val]),
    }


def load_split(path: str | os.PathLike) -> dict:
    with open(path, encoding="utf-8") as f:
        split = json.load(f)
    overlap = set(split["training"]) & set(split["validation"])
    if overlap:
        from MedAILib.core.errors import InputError

        raise InputError(f"split {path} has cases in both training and validation: {sorted(overlap)[:3]}",
                         "fix the split file; a case may only be in one set")
    return split


def datalist(data_dir: str | os.PathLike, case_ids: list[str]) -> list[dict]:
    data_dir = Path(data_dir)
    items = []
    for cid in case_ids:
        image, label = data_dir / "imagesTr" / f"{cid}.nii.gz", data_dir / "labelsTr" / f"{cid}.nii.gz"
        if not image.is_file() or not label.is_file():
            from MedAILib.core.errors import InputError

            raise InputError(f"case {cid} is missing its image or label under {data_dir}",
                             "point --data at the msd-hippocampus folder (imagesTr/, labelsTr/)")
        items.append({"image": str(image), "label": str(label), "id": cid})
    return items


# ---------------------------------------------------------------- network and transforms


def network_def(kind: str = "unet", filters=DEFAULT_FILTERS) -> dict:
    """The bundle's ``network_def`` (a MONAI config dict); training instantiates the same thing.

    ``unet`` (default): MONAI UNet with strided convolutions and residual units, about 4x cheaper
    per step on CPU than ``dynunet`` (nnU-Net-like, full-resolution convolutions) — measured on
    the shared 2-core build machine, where compute is the limit.
    """
    n = len(filters)
    if kind == "unet":
        return {
            "_target_": "UNet",
            "spatial_dims": 3,
            "in_channels": 1,
            "out_channels": len(LABEL_NAMES),
            "channels": list(filters),
            "strides": [2] * (n - 1),
            "num_res_units": 2,
            "norm": "instance",
        }
    if kind == "dynunet":
        return {
            "_target_": "DynUNet",
            "spatial_dims": 3,
            "in_channels": 1,
            "out_channels": len(LABEL_NAMES),
            "kernel_size": [3] * n,
            "strides": [1] + [2] * (n - 1),
            "upsample_kernel_size": [2] * (n - 1),
            "filters": list(filters),
            "norm_name": "instance",
            "res_block": False,
        }
    raise ValueError(f"unknown network kind {kind!r} (unet or dynunet)")


def build_network(net_def: dict) -> torch.nn.Module:
    from monai.bundle import ConfigParser

    parser = ConfigParser({"network_def": copy.deepcopy(net_def)})
    return parser.get_parsed_content("network_def")


def _base_transforms(keys: tuple[str, ...]):
    """Deterministic steps, the same as the bundle's inference preprocessing (plus the label)."""
    from monai import transforms as T

    modes = ["bilinear", "nearest"][: len(keys)]
    return [
        T.LoadImaged(keys=list(keys)),
        T.EnsureChannelFirstd(keys=list(keys)),
        T.Orientationd(keys=list(keys), axcodes="RAS"),
        T.Spacingd(keys=list(keys), pixdim=[1.0, 1.0, 1.0], mode=modes),
        T.NormalizeIntensityd(keys="image", nonzero=False, channel_wise=True),
        T.EnsureTyped(keys=list(keys), dtype=torch.float32),
    ]


def train_transforms():
    from monai import transforms as T

    keys = ["image", "label"]
    return T.Compose(
        _base_transforms(("image", "label"))
        + [
            T.SpatialPadd(keys=keys, spatial_size=PATCH),  # zero = the volume's mean after z-score
            T.RandSpatialCropd(keys=keys, roi_size=PATCH, random_size=False),
            # Left-right only (axis 0 is R-L in RAS): keeps anterior/posterior semantics.
            T.RandFlipd(keys=keys, spatial_axis=0, prob=0.5),
            T.RandAffined(keys=keys, prob=0.3, rotate_range=[0.26, 0.26, 0.26], scale_range=[0.12] * 3,
                          mode=["bilinear", "nearest"], padding_mode="zeros"),
            T.RandGaussianNoised(keys="image", prob=0.15, std=0.1),
            T.RandScaleIntensityd(keys="image", factors=0.15, prob=0.3),
            T.RandShiftIntensityd(keys="image", offsets=0.1, prob=0.3),
            T.RandAdjustContrastd(keys="image", gamma=(0.7, 1.5), prob=0.15),
        ]
    )


def val_transforms():
    from monai import transforms as T

    return T.Compose(_base_transforms(("image", "label")))


def make_inferer():
    from monai.inferers import SlidingWindowInferer

    return SlidingWindowInferer(roi_size=list(PATCH), sw_batch_size=4, overlap=0.5, mode="gaussian")


# ---------------------------------------------------------------- evaluation


def dice_per_label(pred: torch.Tensor, label: torch.Tensor) -> np.ndarray:
    """Dice of labels 1..N for one case; ``pred``/``label`` are integer maps (C=1 first axis allowed)."""
    from monai.metrics import compute_dice
    from monai.networks.utils import one_hot

    n = len(LABEL_NAMES)
    p = one_hot(torch.as_tensor(pred).reshape(1, 1, *pred.shape[-3:]).long(), n)
    g = one_hot(torch.as_tensor(label).reshape(1, 1, *label.shape[-3:]).long(), n)
    return compute_dice(p, g, include_background=False, ignore_empty=False)[0].cpu().numpy()


def evaluate(net: torch.nn.Module, dataset, inferer=None) -> dict:
    """Mean per-label Dice over ``dataset`` items (preprocessed ``image``/``label``)."""
    inferer = inferer or make_inferer()
    net.eval()
    scores = []
    with torch.no_grad():
        for item in dataset:
            logits = inferer(item["image"][None], net)
            pred = logits.argmax(1)
            scores.append(dice_per_label(pred, item["label"]))
    scores = np.asarray(scores)
    mean = scores.mean(0)
    return {"anterior": float(mean[0]), "posterior": float(mean[1]), "mean": float(mean.mean()),
            "n_cases": int(len(scores))}


def evaluate_bundle(bundle_dir: str | os.PathLike, items: list[dict]) -> dict:
    """Dice of a bundle on labelled cases, run through the bundle's OWN inference.json.

    Uses its preprocessing, network, inferer and postprocessing (minus SaveImaged), so the result
    comes back on the input's grid and is compared with the label file as stored.
    """
    import nibabel as nib
    from monai.bundle import ConfigParser
    from monai.transforms import Compose, SaveImaged

    bundle_dir = Path(bundle_dir)
    parser = ConfigParser()
    parser.read_config(str(bundle_dir / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle_dir)
    parser["device"] = "$torch.device('cpu')"
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(bundle_dir / "models" / "model.pt", map_location="cpu", weights_only=True))
    net.eval()
    pre = parser.get_parsed_content("preprocessing")
    inferer = parser.get_parsed_content("inferer")
    post = parser.get_parsed_content("postprocessing")
    post = Compose([t for t in post.transforms if not isinstance(t, SaveImaged)])
    scores = []
    with torch.no_grad():
        for item in items:
            data = pre({"image": item["image"]})
            data["pred"] = inferer(data["image"][None], net)[0]
            data = post(data)
            label = np.asarray(nib.load(item["label"]).dataobj)
            pred = data["pred"]
            if pred.shape[-3:] != label.shape:
                raise AssertionError(f"prediction grid {tuple(pred.shape)} != label grid {label.shape}")
            scores.append(dice_per_label(pred, torch.as_tensor(label.astype(np.int64))))
    scores = np.asarray(scores)
    mean = scores.mean(0)
    return {"anterior": float(mean[0]), "posterior": float(mean[1]), "mean": float(mean.mean()),
            "n_cases": int(len(scores))}


# ---------------------------------------------------------------- training


def _lr_at(epoch: int, epochs: int, lr: float, warmup: int = 3) -> float:
    # Short linear warm-up, then cosine decay to 1% over the planned epochs.
    if epoch < warmup:
        return float(lr * (epoch + 1) / warmup)
    t = (epoch - warmup) / max(1, epochs - warmup)
    # A Python float: a numpy scalar in the optimiser state would not load with weights_only=True.
    return float(lr * (0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi * t))))


def train(
    data_dir: str | os.PathLike,
    split: dict,
    out_dir: str | os.PathLike,
    work_dir: str | os.PathLike | None = None,
    epochs: int = 100,
    seed: int = 0,
    batch_size: int = 2,
    lr: float = 2e-3,
    filters=DEFAULT_FILTERS,
    network: str = "unet",
    val_interval: int = 2,
    threads: int = 1,
    resume: bool = False,
    max_train_cases: int | None = None,
    max_val_cases: int | None = None,
    command: str = "",
) -> dict:
    """Train, keep the best model by validation mean Dice, and write the bundle to ``out_dir``."""
    from monai.data import CacheDataset, DataLoader
    from monai.losses import DiceCELoss
    from monai.utils import set_determinism

    torch.set_num_threads(threads)
    set_determinism(seed=seed)
    out_dir = Path(out_dir)
    work_dir = Path(work_dir) if work_dir else out_dir / "training"
    work_dir.mkdir(parents=True, exist_ok=True)
    train_ids = split["training"][:max_train_cases] if max_train_cases else split["training"]
    val_ids = split["validation"][:max_val_cases] if max_val_cases else split["validation"]

    train_ds = CacheDataset(datalist(data_dir, train_ids), train_transforms(), cache_rate=1.0,
                            num_workers=0, progress=False)
    val_ds = CacheDataset(datalist(data_dir, val_ids), val_transforms(), cache_rate=1.0, num_workers=0,
                          progress=False)
    loader = DataLoader(train_ds, batch_size=batch_size, shuffle=True, num_workers=0, drop_last=True,
                        generator=torch.Generator().manual_seed(seed))
    net_def = network_def(network, filters)
    net = build_network(net_def)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    inferer = make_inferer()

    ckpt_path = work_dir / "checkpoint.pt"
    best_path = work_dir / "best_model.pt"
    log_path = work_dir / "train_log.csv"
    state, ckpt = resume_or_start(ckpt_path, log_path, net, opt, {"epoch": 0, "best_dice": -1.0, "best_epoch": -1,
                                                                  "best_scores": None, "elapsed_s": 0.0}, resume, log)
    if ckpt is not None:  # the same random stream as an uninterrupted run
        torch.set_rng_state(ckpt["torch_rng"])
        np.random.set_state(ckpt["numpy_rng"])
        random.setstate(ckpt["python_rng"])
    # Every command that contributed to these weights (a resumed run has more than one).
    state.setdefault("commands", []).append(command)

    new_log = not log_path.exists()
    with open(log_path, "a", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        if new_log:
            writer.writerow(["epoch", "lr", "train_loss", "val_dice_anterior", "val_dice_posterior",
                             "val_dice_mean", "epoch_seconds", "elapsed_seconds"])
        for epoch in range(state["epoch"], epochs):
            t0 = time.time()
            cur_lr = _lr_at(epoch, epochs, lr)
            for g in opt.param_groups:
                g["lr"] = cur_lr
            # Re-seed shuffling and augmentation from (seed, epoch): a resumed run continues
            # exactly as an uninterrupted one would.
            loader.generator.manual_seed(seed * 100003 + epoch)
            train_ds.transform.set_random_state(seed=(seed * 100003 + epoch) % (2**32))
            net.train()
            losses = []
            for batch in loader:
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(net(batch["image"]), batch["label"])
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), 12.0)
                opt.step()
                losses.append(float(loss.detach()))
            scores = None
            if (epoch + 1) % val_interval == 0 or epoch + 1 == epochs:
                scores = evaluate(net, val_ds, inferer)
                if scores["mean"] > state["best_dice"]:
                    state.update(best_dice=scores["mean"], best_epoch=epoch + 1, best_scores=scores)
                    torch.save(net.state_dict(), best_path)
            dt = time.time() - t0
            state["epoch"] = epoch + 1
            state["elapsed_s"] += dt
            writer.writerow([epoch + 1, f"{cur_lr:.6g}", f"{np.mean(losses):.5f}"]
                            + ([f"{scores['anterior']:.4f}", f"{scores['posterior']:.4f}", f"{scores['mean']:.4f}"]
                               if scores else ["", "", ""])
                            + [f"{dt:.1f}", f"{state['elapsed_s']:.1f}"])
            f.flush()
            log.info("epoch %d/%d loss %.4f %s (%.1fs)", epoch + 1, epochs, np.mean(losses),
                     f"val dice {scores['mean']:.4f}" if scores else "", dt)
            # Checkpoint after every epoch: write to a temp file, then rename (never half-written).
            tmp = ckpt_path.with_suffix(".tmp")
            torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "state": state,
                        "torch_rng": torch.get_rng_state(), "numpy_rng": np.random.get_state(),
                        "python_rng": random.getstate()}, tmp)
            os.replace(tmp, ckpt_path)

    best_state = torch.load(best_path, map_location="cpu", weights_only=True)
    info = {
        "epochs": epochs, "seed": seed, "batch_size": batch_size, "lr": lr, "filters": list(filters),
        "network": network,
        "n_train": len(train_ids), "n_val": len(val_ids), "best_epoch": state["best_epoch"],
        "val_dice": state["best_scores"], "train_seconds": round(state["elapsed_s"], 1),
        "threads": threads, "command": command, "commands": [c for c in state["commands"] if c],
    }
    write_bundle(out_dir, net_def, best_state, info, log_path)
    # The reported figures come from the shipped pipeline (inference.json: preprocessing, inferer,
    # postprocessing, back on the input grid), not the training loop.
    info["val_dice_training_loop"] = info["val_dice"]
    info["val_dice"] = evaluate_bundle(out_dir, datalist(data_dir, val_ids))
    write_bundle(out_dir, net_def, best_state, info, log_path)
    return info


# ---------------------------------------------------------------- bundle


def _versions() -> dict:
    import monai
    import nibabel

    return {"monai": monai.__version__, "torch": torch.__version__.split("+")[0], "numpy": np.__version__,
            "nibabel": nibabel.__version__}


def inference_config(net_def: dict) -> dict:
    """A standard Model Zoo inference.json that ``python -m monai.bundle run`` executes as is."""
    return {
        "imports": ["$import glob", "$import os", "$import monai", "$import numpy as np", "$import torch"],
        "bundle_root": ".",
        "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": "/workspace/data/msd-hippocampus",
        "datalist": "$list(sorted(glob.glob(@dataset_dir + '/imagesTr/*.nii.gz')))",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": net_def,
        "network": "$@network_def.to(@device)",
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "LoadImaged", "keys": "image"},
                {"_target_": "EnsureChannelFirstd", "keys": "image"},
                {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
                {"_target_": "Spacingd", "keys": "image", "pixdim": [1.0, 1.0, 1.0], "mode": "bilinear"},
                {"_target_": "NormalizeIntensityd", "keys": "image", "nonzero": False, "channel_wise": True},
                {"_target_": "EnsureTyped", "keys": "image", "dtype": "$torch.float32"},
            ],
        },
        "dataset": {"_target_": "Dataset", "data": "$[{'image': i} for i in @datalist]",
                    "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False,
                       "num_workers": 0},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": list(PATCH), "sw_batch_size": 4,
                    "overlap": 0.5, "mode": "gaussian"},
        "postprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "Activationsd", "keys": "pred", "softmax": True},
                {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image",
                 "nearest_interp": False, "to_tensor": True},
                {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
                {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir", "output_postfix": "seg",
                 "output_dtype": "$np.uint8", "resample": False, "separate_folder": False},
            ],
        },
        "handlers": [
            {"_target_": "CheckpointLoader", "load_path": "$@bundle_root + '/models/model.pt'",
             "load_dict": {"model": "@network"}, "map_location": "@device"},
            {"_target_": "StatsHandler", "iteration_log": False},
        ],
        "evaluator": {"_target_": "SupervisedEvaluator", "device": "@device", "val_data_loader": "@dataloader",
                      "network": "@network", "inferer": "@inferer", "postprocessing": "@postprocessing",
                      "val_handlers": "@handlers", "amp": "$torch.cuda.is_available()"},
        "initialize": ["$monai.config.print_config()"],
        "run": ["$@evaluator.run()"],
    }


def metadata(info: dict) -> dict:
    v = _versions()
    d = info["val_dice"] or {}
    arch = ARCH_NAMES[info.get("network", "unet")]
    return {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json",
        "version": "1.0.0",
        "changelog": {"1.0.0": f"first release: {arch} trained on MSD Task04 hippocampus (250-case copy) on CPU"},
        "monai_version": v["monai"],
        "pytorch_version": v["torch"],
        "numpy_version": v["numpy"],
        "required_packages_version": {"nibabel": v["nibabel"]},
        "name": f"MedAI hippocampus segmentation ({arch})",
        "task": "Hippocampus segmentation (anterior and posterior) in MRI crops",
        "description": (f"A 3D {arch} that segments the anterior (head) and posterior (body/tail) hippocampus in "
                        "1 mm MRI crops around the hippocampus, as in MSD Task04. Trained by MedAI from the "
                        "repository's own training command."),
        "authors": "MedAI contributors",
        "copyright": "Copyright (c) MedAI contributors; weights licensed CC-BY-SA 4.0 (trained on CC-BY-SA 4.0 data)",
        "data_source": ("Medical Segmentation Decathlon Task04 Hippocampus (Vanderbilt University Medical Center), "
                        "250-case copy from udacity/nd320-c3-3d-imaging-starter; http://medicaldecathlon.com/"),
        "data_type": "nibabel",
        "image_classes": "single channel MRI, 1x1x1 mm, z-score normalised per volume",
        "label_classes": "0 background, 1 anterior hippocampus, 2 posterior hippocampus",
        "pred_classes": "0 background, 1 anterior hippocampus, 2 posterior hippocampus",
        "eval_metrics": {
            "val_mean_dice": round(d.get("mean", float("nan")), 4),
            "val_dice_anterior": round(d.get("anterior", float("nan")), 4),
            "val_dice_posterior": round(d.get("posterior", float("nan")), 4),
        },
        "intended_use": ("Research and demonstration only; not a medical device. Input must be an MRI crop "
                         "around one hippocampus like the MSD Task04 images."),
        "references": [
            "Antonelli M. et al., The Medical Segmentation Decathlon, Nature Communications 13, 4128 (2022)",
            "Simpson A.L. et al., A large annotated medical image dataset for the development and evaluation "
            "of segmentation algorithms, arXiv:1902.09063 (2019)",
            "Isensee F. et al., nnU-Net: a self-configuring method for deep learning-based biomedical image "
            "segmentation, Nature Methods 18, 203-211 (2021)",
        ],
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "magnitude",
                    "modality": "MR",
                    "num_channels": 1,
                    "spatial_shape": list(PATCH),
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": True,
                    "channel_def": {"0": "MRI"},
                }
            },
            "outputs": {
                "pred": {
                    "type": "image",
                    "format": "segmentation",
                    "num_channels": 3,
                    "spatial_shape": list(PATCH),
                    "dtype": "float32",
                    "value_range": [0, 1],
                    "is_patch_data": True,
                    "channel_def": {str(k): v for k, v in LABEL_NAMES.items()},
                }
            },
        },
        "training": {k: info.get(k) for k in ("network", "epochs", "best_epoch", "seed", "batch_size", "lr",
                                              "filters", "n_train", "n_val", "train_seconds", "threads",
                                              "commands")},
    }


def write_bundle(out_dir: str | os.PathLike, net_def: dict, state_dict: dict, info: dict,
                 log_path: str | os.PathLike | None = None) -> None:
    """Through the shared atomic writer (:mod:`MedAILib.models.bundle_writer`). Files of the training
    run that live inside the bundle folder (the default work dir ``OUT/training``: checkpoint, log)
    are carried over into the new folder, so ``--resume`` still finds them."""
    from MedAILib.models.bundle_writer import write_bundle as shared_write_bundle
    from MedAILib.tasks.segmentation.model_card import model_card

    out_dir = Path(out_dir)
    extra: dict = {}
    if out_dir.is_dir():
        for p in sorted(out_dir.rglob("*")):
            rel = p.relative_to(out_dir)
            if p.is_file() and rel.parts[0] not in ("configs", "models", "docs", "LICENSE"):
                extra[rel.as_posix()] = p
    if log_path and Path(log_path).is_file():
        extra["docs/training_log.csv"] = Path(log_path)
    meta = metadata(info)
    shared_write_bundle(out_dir, inference_config(net_def), meta, state_dict, card=model_card(info, meta),
                        license_text=LICENSE_TEXT, extra_files=extra, overwrite=True)


LICENSE_TEXT = """\
The model weights in this bundle (models/model.pt) are licensed under the Creative Commons
Attribution-ShareAlike 4.0 International licence (CC-BY-SA 4.0),
https://creativecommons.org/licenses/by-sa/4.0/ , because they were trained on data released under
CC-BY-SA 4.0: the Medical Segmentation Decathlon Task04 Hippocampus data (Vanderbilt University
Medical Center). Attribution: Antonelli M., Reinke A., Bakas S., et al. "The Medical Segmentation
Decathlon", Nature Communications 13, 4128 (2022); Simpson A.L. et al., arXiv:1902.09063 (2019);
http://medicaldecathlon.com/. Redistributions and derived works must carry the same licence.

The configuration files (configs/) and documentation (docs/) are part of MedAI and licensed under
Apache-2.0 like the rest of the MedAI source code.
"""


# ---------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    own = parser.add_argument_group("your own data (any label set, modality and channels; see docs/training.md)")
    own.add_argument("--images", default=None, help="folder of images (case.nii.gz, or case_0000.. per channel)")
    own.add_argument("--labels", default=None, help="folder of label files named like the images")
    own.add_argument("--datalist", default=None, help="MONAI datalist JSON (training/validation lists)")
    own.add_argument("--time-limit", type=float, default=None, metavar="MINUTES",
                     help="stop cleanly before this many minutes and keep the best bundle so far")
    own.add_argument("--init", default=None, metavar="BUNDLE",
                     help="fine-tune from a bundle's weights (catalogue id or folder; matching layers)")
    own.add_argument("--modality", nargs="+", default=None, help="CT or MR per channel (default: guessed from HU)")
    own.add_argument("--label-names", default=None, help="JSON file or string {value: name}")
    own.add_argument("--channels", nargs="+", default=None, help="names of the image channels")
    own.add_argument("--spacing", type=float, nargs=3, default=None, help="override the planned spacing (mm)")
    own.add_argument("--max-patch", type=int, nargs=3, default=None, help="cap the planned patch (voxels)")
    own.add_argument("--memory-gb", type=float, default=2.0, help="training memory budget for the plan")
    own.add_argument("--base-filters", type=int, default=16)
    own.add_argument("--steps-per-epoch", type=int, default=None)
    own.add_argument("--model-id", default=None, help="catalogue id (default: the --out folder's name)")
    own.add_argument("--no-register", action="store_true", help="do not add the bundle to the user catalogue")
    own.add_argument("--overwrite", action="store_true", help="replace an existing --out bundle")
    own.add_argument("--synthetic-ratio", type=float, default=0.0, metavar="FRACTION",
                     help="share of training samples drawn from synthetic cases made by --synthetic-model (e.g. 0.3)")
    own.add_argument("--synthetic-model", default=None, metavar="DIR",
                     help="label-conditioned generator folder (python -m MedAILib.tasks.augmentation.label_gan)")
    own.add_argument("--synthetic-count", type=int, default=None, metavar="N",
                     help="number of synthetic cases to make (default: 4 per training case, at least 8)")
    parser.add_argument("--data", default=None, help="msd-hippocampus folder (imagesTr/, labelsTr/): the shipped model")
    parser.add_argument("--split", default=None,
                        help="split JSON with 'training' and 'validation' case ids (written if missing)")
    parser.add_argument("--out", required=True, help="bundle folder to write")
    parser.add_argument("--work-dir", default=None, help="checkpoints and loss log (default OUT/training)")
    parser.add_argument("--epochs", type=int, default=None, help="default: 28 (shipped model), 50 (own data)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--filters", type=int, nargs="+", default=list(DEFAULT_FILTERS),
                        help="channels per resolution level of the DynUNet")
    parser.add_argument("--network", choices=["unet", "dynunet"], default="unet")
    parser.add_argument("--val-interval", type=int, default=2)
    # 1 thread by default: on a shared 2-core machine two torch threads ran 6x slower (measured).
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--resume", action="store_true", help="continue from WORK_DIR/checkpoint.pt")
    parser.add_argument("--max-train-cases", type=int, default=None, help="use only the first N (smoke tests)")
    parser.add_argument("--max-val-cases", type=int, default=None, help="use only the first N (smoke tests)")


def run(args: argparse.Namespace) -> int:
    import shlex
    import sys

    if args.images or args.datalist:
        return run_own_data(args)
    if not args.data or not args.split:
        from MedAILib.core.errors import InputError

        raise InputError("no training data given",
                         "give --images DIR --labels DIR or --datalist FILE (or --data/--split for the shipped model)")
    if args.epochs is None:
        args.epochs = 28
    split_path = Path(args.split)
    if not split_path.is_file():
        split = make_split(list_cases(args.data), seed=args.seed)
        split_path.parent.mkdir(parents=True, exist_ok=True)
        split_path.write_text(json.dumps(split, indent=1) + "\n", encoding="utf-8")
    split = load_split(split_path)
    command = getattr(args, "command_line", None) or shlex.join(sys.argv)
    info = train(args.data, split, args.out, work_dir=args.work_dir, epochs=args.epochs, seed=args.seed,
                 batch_size=args.batch_size, lr=args.lr, filters=tuple(args.filters),
                 network=args.network, val_interval=args.val_interval, threads=args.threads, resume=args.resume,
                 max_train_cases=args.max_train_cases, max_val_cases=args.max_val_cases, command=command)
    print(json.dumps({"bundle": str(args.out), **info}, indent=1))
    return 0


def run_own_data(args: argparse.Namespace) -> int:
    import shlex
    import sys

    from MedAILib.tasks.segmentation import own_data

    names = None
    if args.label_names:
        text = Path(args.label_names).read_text(encoding="utf-8") if Path(args.label_names).is_file() else args.label_names
        names = {int(k): v for k, v in json.loads(text).items()}
    out = Path(args.out)
    if out.exists() and not args.resume and not getattr(args, "overwrite", False) and any(out.iterdir()):
        from MedAILib.core.errors import InputError

        raise InputError(f"{out} already exists", "choose another --out, or --resume to continue its training")
    command = getattr(args, "command_line", None) or shlex.join(sys.argv)
    info = own_data.train_own(
        own_data.datalist_from_args(args), out, work_dir=args.work_dir, epochs=args.epochs or 50, seed=args.seed,
        lr=args.lr, batch_size=args.batch_size, steps_per_epoch=args.steps_per_epoch, val_interval=args.val_interval,
        time_limit_min=args.time_limit, resume=args.resume, init=args.init, modality=args.modality,
        memory_gb=args.memory_gb, base_filters=args.base_filters, spacing=args.spacing, max_patch=args.max_patch,
        label_names=names, channels=args.channels, threads=args.threads, command=command,
        register=not args.no_register, model_id=args.model_id,
        synthetic_ratio=getattr(args, "synthetic_ratio", 0.0) or 0.0,
        synthetic_model=getattr(args, "synthetic_model", None), synthetic_count=getattr(args, "synthetic_count", None),
        progress=lambda frac, msg, left: print(msg, file=sys.stderr, flush=True))
    print(json.dumps({"bundle": str(out), **{k: info[k] for k in ("val_dice", "val_mean_dice", "best_epoch",
                                                                   "epochs_run", "stopped", "n_train", "n_val",
                                                                   "split", "init")},
                      "catalogue_id": info.get("catalogue_id"), "plan": info["plan"]}, indent=1, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    parser = argparse.ArgumentParser(prog="python -m MedAILib.tasks.segmentation.trainer", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    import shlex
    import sys

    # Record the equivalent product command in the model card.
    args.command_line = "medai train segmentation " + shlex.join(sys.argv[1:] if argv is None else argv)
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
