"""Train a segmentation bundle on the user's own labelled cases (any label set, modality, channels).

The plan (planning.py) fixes spacing, patch, network and normalisation; the preprocessing written
into the bundle's inference.json is built from the same config dicts the training uses, so the
bundle sees exactly what the network was trained on. Training keeps the best validation epoch,
checkpoints every epoch (``--resume``), stops cleanly before ``--time-limit`` runs out and writes
the bundle from the best epoch so far; the bundle is then added to the user catalogue.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import random
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from MedAILib.core.errors import InputError
from MedAILib.models.checkpoints import resume_or_start
from MedAILib.tasks.segmentation import planning

log = logging.getLogger(__name__)

# Directional names: mirroring would swap their meaning, so flips are off for such label sets.
_DIRECTIONAL = ("left", "right", "anterior", "posterior", "superior", "inferior", "lateral", "medial")


# ---------------------------------------------------------------- configs (shared by training and bundle)


def preprocessing_configs(plan: dict, keys=("image",)) -> list:
    keys = list(keys)
    modes = ["bilinear", "nearest"][: len(keys)]
    out = [
        {"_target_": "LoadImaged", "keys": keys, "image_only": True},
        {"_target_": "EnsureChannelFirstd", "keys": keys},
        {"_target_": "Orientationd", "keys": keys, "axcodes": "RAS"},
        {"_target_": "Spacingd", "keys": keys, "pixdim": plan["spacing"], "mode": modes},
    ]
    n = plan["normalisation"]
    if n["kind"] == "ct":
        # clip to the foreground percentiles, then z-score with the foreground mean/std (nnU-Net CT scheme)
        out.append({"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": n["a_min"], "a_max": n["a_max"],
                    "b_min": (n["a_min"] - n["mean"]) / n["std"], "b_max": (n["a_max"] - n["mean"]) / n["std"],
                    "clip": True})
    else:
        out.append({"_target_": "NormalizeIntensityd", "keys": "image", "nonzero": n["nonzero"], "channel_wise": True})
    out.append({"_target_": "EnsureTyped", "keys": keys, "dtype": "$torch.float32"})
    return out


def network_def(plan: dict, n_classes: int) -> dict:
    f = plan["filters"]
    return {"_target_": "UNet", "spatial_dims": 3, "in_channels": plan["n_channels"], "out_channels": n_classes,
            "channels": list(f), "strides": [2] * (len(f) - 1), "num_res_units": 2, "norm": "instance"}


def _compose(configs: list):
    from monai.bundle import ConfigParser

    parser = ConfigParser({"imports": ["$import torch"], "t": {"_target_": "Compose", "transforms": configs}})
    return parser.get_parsed_content("t")


def flip_axes(label_names: dict) -> list:
    names = " ".join(label_names.values()).lower()
    return [] if any(w in names for w in _DIRECTIONAL) else [0, 1, 2]


def train_transforms(plan: dict, values: list, flips: list):
    from monai import transforms as T

    keys = ["image", "label"]
    p = plan["patch"]
    extra = [
        T.MapLabelValued(keys="label", orig_labels=values, target_labels=list(range(len(values)))),
        T.SpatialPadd(keys=keys, spatial_size=p),
        # one in three patches centred on foreground (nnU-Net's oversampling), the rest anywhere
        T.RandCropByPosNegLabeld(keys=keys, label_key="label", spatial_size=p, pos=1, neg=2, num_samples=1,
                                 allow_smaller=True),
        T.SpatialPadd(keys=keys, spatial_size=p),
    ]
    extra += [T.RandFlipd(keys=keys, spatial_axis=a, prob=0.5) for a in flips]
    extra += [
        T.RandAffined(keys=keys, prob=0.2, rotate_range=[0.26] * 3, scale_range=[0.1] * 3,
                      mode=["bilinear", "nearest"], padding_mode="zeros"),
        T.RandGaussianNoised(keys="image", prob=0.15, std=0.1),
        T.RandScaleIntensityd(keys="image", factors=0.15, prob=0.3),
        T.RandShiftIntensityd(keys="image", offsets=0.1, prob=0.3),
    ]
    return T.Compose([*_compose(preprocessing_configs(plan, keys)).transforms, *extra])


def val_transforms(plan: dict, values: list):
    from monai import transforms as T

    return T.Compose([*_compose(preprocessing_configs(plan, ("image", "label"))).transforms,
                      T.MapLabelValued(keys="label", orig_labels=values, target_labels=list(range(len(values))))])


def inference_config(plan: dict, net_def: dict, values: list) -> dict:
    pre = preprocessing_configs(plan)
    post = [
        {"_target_": "Activationsd", "keys": "pred", "softmax": True},
        {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image",
         "nearest_interp": False, "to_tensor": True},
        {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
    ]
    if values != list(range(len(values))):  # back to the user's own label values (e.g. BraTS 1, 2, 4)
        post.append({"_target_": "MapLabelValued", "keys": "pred", "orig_labels": list(range(len(values))),
                     "target_labels": values})
    post.append({"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir", "output_postfix": "seg",
                 "output_dtype": "$np.uint8" if max(values) < 256 else "$np.int16", "resample": False,
                 "separate_folder": False})
    return {
        "imports": ["$import glob", "$import os", "$import monai", "$import numpy as np", "$import torch"],
        "bundle_root": ".",
        "output_dir": "$@bundle_root + '/eval'",
        "datalist": [],
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": net_def,
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": pre},
        "dataset": {"_target_": "Dataset", "data": "$[{'image': i} for i in @datalist]", "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False,
                       "num_workers": 0},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": plan["patch"], "sw_batch_size": 2,
                    "overlap": 0.5, "mode": "gaussian"},
        "postprocessing": {"_target_": "Compose", "transforms": post},
        "handlers": [{"_target_": "CheckpointLoader", "load_path": "$@bundle_root + '/models/model.pt'",
                      "load_dict": {"model": "@network"}, "map_location": "@device"}],
        "evaluator": {"_target_": "SupervisedEvaluator", "device": "@device", "val_data_loader": "@dataloader",
                      "network": "@network", "inferer": "@inferer", "postprocessing": "@postprocessing",
                      "val_handlers": "@handlers"},
        "run": ["$@evaluator.run()"],
    }


# ---------------------------------------------------------------- evaluation


def dice_all(pred: torch.Tensor, label: torch.Tensor, n: int) -> np.ndarray:
    """Dice of classes 1..n-1 for one case; NaN where a class is absent from both (not counted)."""
    from monai.metrics import compute_dice
    from monai.networks.utils import one_hot

    p = one_hot(torch.as_tensor(pred).reshape(1, 1, *pred.shape[-3:]).long(), n)
    g = one_hot(torch.as_tensor(label).reshape(1, 1, *label.shape[-3:]).long(), n)
    return compute_dice(p, g, include_background=False, ignore_empty=True)[0].cpu().numpy()


def evaluate(net, dataset, inferer, n: int) -> np.ndarray:
    net.eval()
    rows = []
    with torch.no_grad():
        for item in dataset:
            pred = inferer(item["image"][None], net).argmax(1)
            rows.append(dice_all(pred, item["label"], n))
    return np.nanmean(np.asarray(rows), 0) if rows else np.full(n - 1, np.nan)


# ---------------------------------------------------------------- training


def label_names_for(dl: dict, values: list, given: Optional[dict] = None) -> dict:
    names = {int(k): str(v) for k, v in (given or dl.get("labels") or {}).items()}
    out = {}
    for v in values:
        out[v] = names.get(v, "background" if v == 0 else f"label {v}")
    return out


def train_own(dl: dict, out_dir, work_dir=None, epochs: int = 50, seed: int = 0, lr: float = 2e-3,
              batch_size: int = 2, steps_per_epoch: Optional[int] = None, val_interval: int = 1,
              time_limit_min: Optional[float] = None, resume: bool = False, init: Optional[str] = None,
              modality: Optional[list] = None, memory_gb: float = 2.0, base_filters: int = 16,
              spacing: Optional[list] = None, max_patch: Optional[list] = None, label_names: Optional[dict] = None,
              channels: Optional[list] = None, threads: int = 1, command: str = "", register: bool = True,
              model_id: Optional[str] = None, progress=None, synthetic_ratio: float = 0.0,
              synthetic_model: Optional[str] = None, synthetic_count: Optional[int] = None) -> dict:
    from monai.data import CacheDataset, DataLoader
    from monai.inferers import SlidingWindowInferer
    from monai.losses import DiceCELoss
    from monai.utils import set_determinism

    from MedAILib.tasks.segmentation import init_weights
    from MedAILib.tasks.segmentation.trainer import build_network

    t_start = time.time()
    deadline = t_start + time_limit_min * 60 if time_limit_min else None
    torch.set_num_threads(threads)
    set_determinism(seed=seed)
    out_dir = Path(out_dir)
    work_dir = Path(work_dir) if work_dir else out_dir.parent / (out_dir.name + ".training")
    work_dir.mkdir(parents=True, exist_ok=True)
    tr, va, split_note = planning.split_validation(dl, seed=seed)
    facts = planning.data_facts(tr + ([] if va is tr else va), seed=seed)
    plan = planning.make_plan(facts, modality=modality, memory_gb=memory_gb, base_filters=base_filters,
                              batch_size=batch_size, spacing=spacing, max_patch=max_patch)
    src = None
    if init:
        src = init_weights.init_source(init)
        # Fine-tuning keeps the init network's architecture (and its window when it fits the plan).
        if src["roi_size"]:
            plan["patch"] = [int(x) for x in src["roi_size"]]
        plan["filters"] = list(src["net_def"].get("channels") or src["net_def"].get("filters") or plan["filters"])
    values = [int(v) for v in facts["label_values"]]
    if 0 not in values:
        values = [0] + values
    names = label_names_for(dl, values, label_names)
    flips = flip_axes(names)
    net_def = (init_weights.adapt_net_def(src["net_def"], plan["n_channels"], len(values)) if src
               else network_def(plan, len(values)))
    chan_names = list(channels or dl.get("channels") or [f"{m} {k}" for k, m in enumerate(plan["modalities"])])
    (work_dir / "plan.json").write_text(json.dumps({**plan, "label_names": names, "flip_axes": flips,
                                                    "channels": chan_names}, indent=1), encoding="utf-8")
    log.info("plan: spacing %s (%s), patch %s, filters %s, normalisation %s, flips %s, est. %.2f GB",
             plan["spacing"], plan["spacing_reason"], plan["patch"], plan["filters"], plan["normalisation"]["kind"],
             flips or "none", plan["estimated_training_memory_gb"])

    train_ds = CacheDataset(tr, train_transforms(plan, values, flips), cache_rate=1.0, num_workers=0, progress=False)
    val_ds = CacheDataset(va, val_transforms(plan, values), cache_rate=1.0, num_workers=0, progress=False)
    syn_ds, syn_note = None, None
    if synthetic_ratio:
        syn_ds, syn_note = _synthetic_dataset(tr, synthetic_ratio, synthetic_model, synthetic_count, work_dir, seed,
                                              train_transforms(plan, values, flips))
    net = build_network(net_def)
    init_report = init_weights.load_matching(net, src["state_dict"], src["ref"]) if src else None
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    inferer = SlidingWindowInferer(roi_size=plan["patch"], sw_batch_size=2, overlap=0.5, mode="gaussian")
    from MedAILib.tasks.segmentation.trainer import _lr_at

    ckpt_path, best_path, log_path = work_dir / "checkpoint.pt", work_dir / "best_model.pt", work_dir / "train_log.csv"
    state, _ = resume_or_start(ckpt_path, log_path, net, opt, {"epoch": 0, "best_dice": -1.0, "best_epoch": -1,
                                                                "best_scores": None, "elapsed_s": 0.0,
                                                                "commands": []}, resume, log)
    state["commands"].append(command)
    n_cls = len(values)
    steps = steps_per_epoch or max(1, len(tr) // batch_size)
    stopped = "completed"
    new_log = not log_path.exists()
    with open(log_path, "a", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        if new_log:
            w.writerow(["epoch", "lr", "train_loss", "val_mean_dice"] + [f"val_dice_{names[v]}" for v in values[1:]]
                       + ["epoch_seconds"])
        last_dt = None
        for epoch in range(state["epoch"], epochs):
            # stop cleanly when the next epoch (as long as the last one, + the final bundle) would not fit
            if deadline and last_dt and time.time() + 1.2 * last_dt > deadline:
                stopped = f"time limit ({time_limit_min} min) reached after epoch {epoch}"
                break
            t0 = time.time()
            cur_lr = _lr_at(epoch, epochs, lr)
            for g in opt.param_groups:
                g["lr"] = cur_lr
            train_ds.transform.set_random_state(seed=(seed * 100003 + epoch) % (2**32))
            if syn_ds is None:
                loader = DataLoader(train_ds, batch_size=batch_size, shuffle=True, num_workers=0,
                                    generator=torch.Generator().manual_seed(seed * 100003 + epoch))
            else:
                syn_ds.transform.set_random_state(seed=(seed * 100003 + epoch + 7) % (2**32))
                loader = _mixed_loader(train_ds, syn_ds, synthetic_ratio, batch_size, steps,
                                       seed * 100003 + epoch)
            net.train()
            losses, it = [], 0
            while it < steps:
                for batch in loader:
                    opt.zero_grad(set_to_none=True)
                    loss = loss_fn(net(batch["image"]), batch["label"])
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(net.parameters(), 12.0)
                    opt.step()
                    losses.append(float(loss.detach()))
                    it += 1
                    if it >= steps:
                        break
            scores = None
            if (epoch + 1) % val_interval == 0 or epoch + 1 == epochs or (
                    deadline and time.time() + 2 * (time.time() - t0) > deadline):
                scores = evaluate(net, val_ds, inferer, n_cls)
                mean = float(np.nanmean(scores)) if not np.all(np.isnan(scores)) else 0.0
                if mean > state["best_dice"]:
                    state.update(best_dice=mean, best_epoch=epoch + 1,
                                 best_scores={names[v]: (None if np.isnan(s) else float(s))
                                              for v, s in zip(values[1:], scores)})
                    torch.save(net.state_dict(), best_path)
            last_dt = time.time() - t0
            state["epoch"] = epoch + 1
            state["elapsed_s"] += last_dt
            w.writerow([epoch + 1, f"{cur_lr:.6g}", f"{np.mean(losses):.5f}"]
                       + ([f"{np.nanmean(scores):.4f}"] + [f"{s:.4f}" for s in scores] if scores is not None
                          else [""] * n_cls) + [f"{last_dt:.1f}"])
            f.flush()
            left = (epochs - epoch - 1) * last_dt
            if deadline:
                left = min(left, max(0.0, deadline - time.time()))
            msg = (f"epoch {epoch + 1}/{epochs} loss {np.mean(losses):.4f}"
                   + (f" val Dice {np.nanmean(scores):.4f}" if scores is not None else "")
                   + f" ({last_dt:.0f} s; about {left / 60:.1f} min left)")
            log.info(msg)
            if progress:
                progress((epoch + 1) / epochs, msg, left)
            tmp = ckpt_path.with_suffix(".tmp")
            torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "state": state,
                        "torch_rng": torch.get_rng_state(), "numpy_rng": np.random.get_state(),
                        "python_rng": random.getstate()}, tmp)
            os.replace(tmp, ckpt_path)
    if not best_path.is_file():  # stopped before any validation: validate what we have
        scores = evaluate(net, val_ds, inferer, n_cls)
        state.update(best_dice=float(np.nanmean(scores)), best_epoch=state["epoch"],
                     best_scores={names[v]: (None if np.isnan(s) else float(s)) for v, s in zip(values[1:], scores)})
        torch.save(net.state_dict(), best_path)
    best = torch.load(best_path, map_location="cpu", weights_only=True)
    info = {"plan": plan, "label_names": {str(k): v for k, v in names.items()}, "label_values": values,
            "channels": chan_names, "flip_axes": flips, "epochs": epochs, "epochs_run": state["epoch"],
            "stopped": stopped, "seed": seed, "lr": lr, "batch_size": batch_size, "steps_per_epoch": steps,
            "n_train": len(tr), "n_val": len(va), "split": split_note, "best_epoch": state["best_epoch"],
            "val_dice": state["best_scores"], "val_mean_dice": state["best_dice"],
            "train_seconds": round(state["elapsed_s"], 1), "commands": [c for c in state["commands"] if c],
            "init": init_report, "threads": threads,
            "synthetic": ({"ratio": synthetic_ratio, "model": str(synthetic_model), "n_samples": len(syn_ds),
                           "note": syn_note} if syn_ds is not None else None),
            "data": {"n_cases": len(tr) + (0 if va is tr else len(va)), "median_spacing": plan["median_spacing"],
                     "foreground_size_mm": plan["foreground_size_mm"], "modalities": plan["modalities"]}}
    write_bundle(out_dir, plan, net_def, best, info, log_path)
    if register:
        info["catalogue_id"] = register_bundle(out_dir, model_id)
    return info


def _synthetic_dataset(tr: list, ratio: float, model, count, work_dir: Path, seed: int, transforms) -> tuple:
    """Synthetic (image, label) cases from a label-conditioned generator (:mod:`MedAILib.tasks.augmentation`),
    made from the TRAINING cases only, written under ``work_dir/synthetic`` and cached like real cases."""
    from monai.data import CacheDataset

    from MedAILib.tasks.augmentation.label_gan import synthesize

    if not 0 < ratio < 1:
        raise InputError(f"--synthetic-ratio {ratio}: give a fraction between 0 and 1 (e.g. 0.3)",
                         "it is the share of training samples drawn from the synthetic cases")
    if not model:
        raise InputError("--synthetic-ratio needs --synthetic-model (a label-conditioned generator folder)",
                         "train one with `python -m MedAILib.tasks.augmentation.label_gan --datalist ... --out DIR`")
    n = int(count or max(8, 4 * len(tr)))
    made = synthesize(model, tr, n, Path(work_dir) / "synthetic", seed=seed)
    # the same keys as the real cases (batches mix both): the source case's entry with the new files
    entries = [{**tr[k % len(tr)], **{key: e[key] for key in ("image", "label")},
                **({"id": e["id"]} if "id" in tr[k % len(tr)] else {})} for k, e in enumerate(made)]
    log.info("%d synthetic cases from %s mixed in at ratio %.2f", n, model, ratio)
    return (CacheDataset(entries, transforms, cache_rate=1.0, num_workers=0, progress=False),
            f"{n} synthetic cases (deformed training labels painted by the generator), drawn with probability {ratio}")


def _mixed_loader(real_ds, syn_ds, ratio: float, batch_size: int, steps: int, seed: int):
    """Batches where each sample is synthetic with probability ``ratio`` (real otherwise), enough for ``steps``."""
    from monai.data import DataLoader
    from torch.utils.data import ConcatDataset, WeightedRandomSampler

    n_r, n_s = len(real_ds), len(syn_ds)
    weights = torch.tensor([(1 - ratio) / n_r] * n_r + [ratio / n_s] * n_s, dtype=torch.double)
    sampler = WeightedRandomSampler(weights, num_samples=steps * batch_size, replacement=True,
                                    generator=torch.Generator().manual_seed(seed))
    return DataLoader(ConcatDataset([real_ds, syn_ds]), batch_size=batch_size, sampler=sampler, num_workers=0)


# ---------------------------------------------------------------- bundle


def metadata(plan: dict, info: dict) -> dict:
    import monai

    names = info["label_names"]
    values = info["label_values"]
    return {
        "version": "1.0.0", "changelog": {"1.0.0": "trained by medai train segmentation on the user's data"},
        "monai_version": monai.__version__, "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "name": info.get("name") or f"MedAI segmentation ({', '.join(names[str(v)] for v in values[1:])})",
        "task": "segmentation of " + ", ".join(names[str(v)] for v in values[1:]),
        "description": "Trained by `medai train segmentation` on the user's own labelled cases; see docs/README.md.",
        "authors": "the user who trained it (with MedAI)", "copyright": "as the training data allows",
        "license": "as the training data allows (see docs/README.md)",
        "data_type": "nibabel", "intended_use": "Research only; not a medical device.",
        "eval_metrics": {"val_mean_dice": round(info["val_mean_dice"], 4),
                         **{f"val_dice_{k}": (None if v is None else round(v, 4)) for k, v in (info["val_dice"] or {}).items()}},
        "network_data_format": {
            "inputs": {"image": {"type": "image", "format": "magnitude", "modality": plan["modalities"][0],
                                 "num_channels": plan["n_channels"], "spatial_shape": plan["patch"],
                                 "dtype": "float32", "value_range": [], "is_patch_data": True,
                                 "channel_def": {str(k): c for k, c in enumerate(info["channels"])}}},
            "outputs": {"pred": {"type": "image", "format": "segmentation", "num_channels": len(values),
                                 "spatial_shape": plan["patch"], "dtype": "float32", "value_range": [0, 1],
                                 "is_patch_data": True,
                                 "channel_def": {str(i): names[str(v)] for i, v in enumerate(values)}}}},
        "medai_training": {**{k: info[k] for k in ("plan", "label_values", "epochs", "epochs_run", "stopped", "seed",
                                                   "n_train", "n_val", "split", "best_epoch", "commands", "init")},
                           **({"synthetic": info["synthetic"]} if info.get("synthetic") else {})},
    }


def write_bundle(out_dir, plan: dict, net_def: dict, state_dict: dict, info: dict, log_path=None) -> None:
    """Through the shared atomic writer: a bundle folder is complete or absent. An existing folder is
    replaced (the command refuses one earlier unless --overwrite)."""
    from MedAILib.models.bundle_writer import write_bundle as shared_write_bundle
    from MedAILib.tasks.segmentation.model_card import own_data_card

    extra = {"docs/training_log.csv": Path(log_path)} if log_path and Path(log_path).is_file() else {}
    shared_write_bundle(out_dir, inference_config(plan, net_def, info["label_values"]), metadata(plan, info),
                        state_dict, card=own_data_card(info), extra_files=extra, overwrite=True)


def register_bundle(out_dir, model_id: Optional[str] = None) -> str:
    """Add to the user catalogue the way `medai models add --yes` does (the user trained it: trusted)."""
    from MedAILib.models.modelzoo import add_bundle

    entry = add_bundle(str(out_dir), assume_yes=True, say=log.info, model_id=model_id or Path(out_dir).name.lower())
    return entry["id"]


# ---------------------------------------------------------------- command line glue


def datalist_from_args(args) -> dict:
    if getattr(args, "datalist", None):
        return planning.read_datalist(args.datalist)
    if not getattr(args, "labels", None):
        raise InputError("--images needs --labels", "give the folder of label files with --labels")
    return planning.datalist_from_folders(args.images, args.labels)
