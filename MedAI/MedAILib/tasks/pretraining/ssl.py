"""Self-supervised pre-training of a segmentation UNet on unlabelled volumes (``medai pretrain``).

The pretext task is MONAI's self-supervised tutorial (``self_supervised_pretraining`` with
``ViTAutoEnc``), applied to the UNet that ``medai train segmentation`` plans: each random patch is
turned into two views, each corrupted by coarse dropout (holes filled with noise or everything but the
holes kept) and coarse shuffling of small blocks; the network reconstructs the clean patch from each
view. Loss = L1(reconstruction of view 1, clean patch) + ContrastiveLoss(view 1, view 2 outputs) x L1
(the tutorial's weighting).

The result is a MONAI bundle whose ``network_def`` is exactly the planned UNet (one output channel
per input channel: the reconstruction) and whose inferer window is the planned patch, so
``medai train segmentation --init PRETRAINED`` keeps that architecture and window and loads the
weights the bundle holds: the encoder (down path + bottom layer) by default, every layer but the
output head with ``keep="all"`` (``--keep all``). The bundle is written atomically by the shared
bundle writer and trusted
(the user made it); it is not added to the segmentation catalogue (it segments nothing).
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from pathlib import Path
from typing import Optional

import numpy as np

from MedAILib.core.errors import InputError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")


# ---------------------------------------------------------------- data


def list_images(images=None, datalist=None, files=None) -> list:
    """Unlabelled cases as ``[{"image": path or [channel paths]}]`` from a folder, a datalist (its
    ``training`` and ``unlabelled`` entries' images; labels are ignored) or explicit files."""
    items: list = []
    if images:
        d = Path(images)
        if not d.is_dir():
            raise InputError(f"{d} is not a folder", "give --images as a folder of image files")
        items += [{"image": str(p)} for p in sorted(d.iterdir()) if p.name.endswith(IMAGE_SUFFIXES)]
        if not items:
            raise InputError(f"{d} holds no image file ({', '.join(IMAGE_SUFFIXES)})", "point --images at the volumes")
    if datalist:
        path = Path(datalist)
        try:
            dl = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read datalist {path}: {e}", "give a JSON file with a 'training' list") from None
        entries = dl if isinstance(dl, list) else [e for k in ("training", "unlabelled", "unlabeled")
                                                   for e in (dl.get(k) or [])]
        if not entries:
            raise InputError(f"datalist {path} lists no image", "give a 'training' or 'unlabelled' list")
        for e in entries:
            img = e.get("image") if isinstance(e, dict) else e
            if img is None:
                raise InputError(f"datalist {path}: an entry has no 'image'", "each entry is {\"image\": file}")
            imgs = img if isinstance(img, list) else [img]
            imgs = [str(Path(f) if Path(f).is_absolute() else path.parent / f) for f in imgs]
            items.append({"image": imgs if len(imgs) > 1 else imgs[0]})
    for f in files or ():
        items.append({"image": str(f)})
    for it in items:
        for f in (it["image"] if isinstance(it["image"], list) else [it["image"]]):
            if not Path(f).is_file():
                raise InputError(f"image {f} does not exist", "fix the path (or the datalist)")
    n = {len(i["image"]) if isinstance(i["image"], list) else 1 for i in items}
    if len(n) > 1:
        raise InputError(f"the cases have different numbers of channel files {sorted(n)}",
                         "every case needs the same channels in the same order")
    if not items:
        raise InputError("no unlabelled images given", "give --images DIR, --datalist FILE or image files")
    return items


def image_facts(items: list, max_cases: int = 40, seed: int = 0) -> dict:
    """What :func:`planning.make_plan` needs, read from images alone (no labels: no foreground)."""
    from MedAILib.tasks.segmentation.planning import _load

    sample = list(items)
    if len(sample) > max_cases:
        sample = random.Random(seed).sample(sample, max_cases)
    spacings, shapes, zero_frac, chans = [], [], [], None
    for it in sample:
        files = it["image"] if isinstance(it["image"], list) else [it["image"]]
        chans = chans or [[] for _ in files]
        for k, f in enumerate(files):
            try:
                im, sp, shp = _load(f)
            except Exception as e:  # nibabel's message names the cause, not the file
                raise InputError(f"cannot read image {f}: {e}", "give NIfTI files (.nii/.nii.gz)") from None
            if k == 0:
                spacings.append(sp)
                shapes.append(shp)
            im = np.asarray(im, dtype=np.float32).ravel()
            zero_frac.append(float((im == 0).mean()))
            rng = np.random.default_rng(seed)
            chans[k].append(rng.choice(im, size=min(im.size, 10000), replace=False))
    per_channel = [np.concatenate(c) for c in chans]
    return {"n_cases_read": len(sample), "n_channels": len(per_channel), "spacings": np.asarray(spacings),
            "shapes": np.asarray(shapes), "label_values": [0], "foreground_size_mm": None,
            "zero_fraction": float(np.median(zero_frac)),
            "fg_intensity": [{"p005": float(np.percentile(v, 0.5)), "p995": float(np.percentile(v, 99.5)),
                              "mean": float(v.mean()), "std": float(v.std() + 1e-8), "min": float(v.min())}
                             for v in per_channel]}


def view_transforms(patch: list):
    """The tutorial's two corrupted views of one clean patch (hole sizes scaled to the patch)."""
    from monai import transforms as T

    s = max(2, min(patch) // 8)
    big = max(s + 1, min(patch) // 2)

    def corrupt(key):
        return [
            T.OneOf(transforms=[
                T.RandCoarseDropoutd(keys=key, prob=1.0, holes=6, spatial_size=s, dropout_holes=True,
                                     max_spatial_size=2 * s + 2),
                T.RandCoarseDropoutd(keys=key, prob=1.0, holes=6, spatial_size=big // 2, dropout_holes=False,
                                     max_spatial_size=big),
            ]),
            T.RandCoarseShuffled(keys=key, prob=0.8, holes=10, spatial_size=max(2, s // 2)),
        ]

    return [T.CopyItemsd(keys="image", times=2, names=["gt_image", "image_2"]), *corrupt("image"),
            *corrupt("image_2")]


def train_transforms(plan: dict):
    from monai import transforms as T

    from MedAILib.tasks.segmentation.own_data import _compose, preprocessing_configs

    p = plan["patch"]
    return T.Compose([
        *_compose(preprocessing_configs(plan, ("image",))).transforms,
        T.SpatialPadd(keys="image", spatial_size=p),
        T.RandSpatialCropd(keys="image", roi_size=p, random_size=False),
        T.RandFlipd(keys="image", spatial_axis=0, prob=0.5),
        *view_transforms(p),
    ])


# ---------------------------------------------------------------- training


def pretrain(items: list, out_dir, work_dir=None, epochs: int = 20, steps_per_epoch: int = 10, batch_size: int = 4,
             lr: float = 1e-3, seed: int = 0, time_limit_min: Optional[float] = None, resume: bool = False,
             base_filters: int = 16, memory_gb: float = 2.0, spacing=None, max_patch=None, modality=None,
             threads: int = 1, command: str = "", overwrite: bool = False, keep: str = "encoder",
             progress=None) -> dict:
    """Pre-train on ``items`` and write the bundle ``out_dir``. ``keep``: "encoder" writes the down
    path and bottom layer only (``--init`` then starts the decoder fresh: better in the measured
    hippocampus run, docs/training.md), "all" every layer (the reconstruction head never loads)."""
    import torch
    from monai.data import CacheDataset, DataLoader
    from monai.losses import ContrastiveLoss
    from monai.utils import set_determinism

    from MedAILib.models.checkpoints import resume_or_start
    from MedAILib.tasks.segmentation import own_data, planning
    from MedAILib.tasks.segmentation.trainer import _lr_at, build_network

    if keep not in ("encoder", "all"):
        raise InputError(f"unknown --keep {keep!r}", "choose encoder or all")
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite and not resume:
        raise InputError(f"{out_dir} already exists", "choose another --out, or --overwrite / --resume")
    t_start = time.time()
    deadline = t_start + time_limit_min * 60 if time_limit_min else None
    torch.set_num_threads(threads)
    set_determinism(seed=seed)
    work_dir = Path(work_dir) if work_dir else out_dir.parent / (out_dir.name + ".training")
    work_dir.mkdir(parents=True, exist_ok=True)
    facts = image_facts(items, seed=seed)
    plan = planning.make_plan(facts, modality=modality, memory_gb=memory_gb, base_filters=base_filters,
                              batch_size=batch_size, spacing=spacing, max_patch=max_patch)
    n_ch = plan["n_channels"]
    net_def = own_data.network_def(plan, n_ch)  # the reconstruction head: one output per input channel
    (work_dir / "plan.json").write_text(json.dumps(plan, indent=1, default=float), encoding="utf-8")
    log.info("pretrain plan: spacing %s, patch %s, filters %s, normalisation %s; %d unlabelled cases",
             plan["spacing"], plan["patch"], plan["filters"], plan["normalisation"]["kind"], len(items))
    ds = CacheDataset(items, train_transforms(plan), cache_rate=1.0, num_workers=0, progress=False)
    net = build_network(net_def)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-5)
    l1 = torch.nn.L1Loss()
    contrastive = ContrastiveLoss(temperature=0.05)
    ckpt_path, log_path = work_dir / "checkpoint.pt", work_dir / "pretrain_log.csv"
    state, _ = resume_or_start(ckpt_path, log_path, net, opt, {"epoch": 0, "elapsed_s": 0.0, "commands": [],
                                                                "losses": []}, resume, log)
    state["commands"].append(command)
    stopped, last_dt = "completed", None
    new_log = not log_path.exists()
    with open(log_path, "a", encoding="utf-8") as f:
        if new_log:
            f.write("epoch,lr,loss,l1,contrastive,epoch_seconds\n")
        for epoch in range(state["epoch"], epochs):
            if deadline and last_dt and time.time() + 1.2 * last_dt > deadline:
                stopped = f"time limit ({time_limit_min} min) reached after epoch {epoch}"
                break
            t0 = time.time()
            cur = _lr_at(epoch, epochs, lr)
            for g in opt.param_groups:
                g["lr"] = cur
            ds.transform.set_random_state(seed=(seed * 100003 + epoch) % (2**32))
            loader = DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=0, drop_last=len(ds) >= batch_size,
                                generator=torch.Generator().manual_seed(seed * 100003 + epoch))
            net.train()
            rows, it = [], 0
            while it < steps_per_epoch:
                for b in loader:
                    opt.zero_grad(set_to_none=True)
                    o1, o2 = net(b["image"]), net(b["image_2"])
                    r = l1(o1, b["gt_image"])
                    c = contrastive(o1.flatten(1), o2.flatten(1)) if o1.shape[0] > 1 else torch.zeros(())
                    loss = r + c * r
                    loss.backward()
                    opt.step()
                    rows.append((float(loss.detach()), float(r.detach()), float(c.detach())))
                    it += 1
                    if it >= steps_per_epoch:
                        break
            m = np.mean(rows, 0)
            last_dt = time.time() - t0
            state["epoch"] = epoch + 1
            state["elapsed_s"] += last_dt
            state["losses"].append(float(m[0]))
            f.write(f"{epoch + 1},{cur:.6g},{m[0]:.5f},{m[1]:.5f},{m[2]:.5f},{last_dt:.1f}\n")
            f.flush()
            left = (epochs - epoch - 1) * last_dt
            if deadline:
                left = min(left, max(0.0, deadline - time.time()))
            msg = (f"epoch {epoch + 1}/{epochs} loss {m[0]:.4f} (L1 {m[1]:.4f}, contrastive {m[2]:.4f}) "
                   f"({last_dt:.0f} s; about {left / 60:.1f} min left)")
            log.info(msg)
            if progress:
                progress((epoch + 1) / epochs, msg, left)
            tmp = ckpt_path.with_suffix(".tmp")
            torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "state": state}, tmp)
            os.replace(tmp, ckpt_path)
    weights = net.state_dict()
    if keep == "encoder":
        weights = {k: weights[k] for k in encoder_keys(weights)}
    info = {"plan": plan, "n_cases": len(items), "keep": keep, "epochs": epochs, "epochs_run": state["epoch"],
            "steps_per_epoch": steps_per_epoch, "batch_size": batch_size, "lr": lr, "seed": seed, "stopped": stopped,
            "final_loss": state["losses"][-1] if state["losses"] else None, "first_loss":
            state["losses"][0] if state["losses"] else None, "train_seconds": round(state["elapsed_s"], 1),
            "commands": [c for c in state["commands"] if c], "threads": threads}
    write_pretrained_bundle(out_dir, plan, net_def, weights, info, log_path, overwrite=overwrite or resume)
    return info


# ---------------------------------------------------------------- bundle


def inference_config(plan: dict, net_def: dict, strict: bool = True) -> dict:
    """A bundle config: preprocessing as training saw it, the reconstruction network and the window
    that ``--init`` adopts. With all weights kept (``strict``) running it writes the reconstruction
    (useful to look at); an encoder-only bundle is for ``--init`` only."""
    from MedAILib.tasks.segmentation.own_data import preprocessing_configs

    return {
        "imports": ["$import monai", "$import numpy as np", "$import torch"],
        "bundle_root": ".", "output_dir": "$@bundle_root + '/eval'", "datalist": [],
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": net_def, "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": preprocessing_configs(plan)},
        "dataset": {"_target_": "Dataset", "data": "$[{'image': i} for i in @datalist]", "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False,
                       "num_workers": 0},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": plan["patch"], "sw_batch_size": 2,
                    "overlap": 0.5, "mode": "gaussian"},
        "postprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir", "output_postfix": "recon",
             "resample": False, "separate_folder": False}]},
        "handlers": [{"_target_": "CheckpointLoader", "load_path": "$@bundle_root + '/models/model.pt'",
                      "load_dict": {"model": "@network"}, "map_location": "@device", "strict": strict}],
        "evaluator": {"_target_": "SupervisedEvaluator", "device": "@device", "val_data_loader": "@dataloader",
                      "network": "@network", "inferer": "@inferer", "postprocessing": "@postprocessing",
                      "val_handlers": "@handlers"},
        "run": ["$@evaluator.run()"],
    }


def card(info: dict) -> str:
    p = info["plan"]
    return "\n".join([
        "# Self-supervised pre-trained UNet (MedAI)", "",
        "Pre-trained by `medai pretrain` on unlabelled volumes: reconstruction of coarse-dropout/shuffled patches "
        "plus a contrastive term between two views (MONAI's self-supervised tutorial, with the planned UNet). "
        "It segments nothing; use it to initialise training:", "",
        "    medai train segmentation --datalist cases.json --out my_model --init THIS_FOLDER", "",
        "## Data and plan", "",
        f"- unlabelled cases: {info['n_cases']}",
        f"- spacing {p['spacing']} mm, patch {p['patch']}, UNet channels {p['filters']}, "
        f"normalisation {p['normalisation']['kind']}, modalities {p['modalities']}", "",
        "## Training", "",
        f"- epochs run {info['epochs_run']} of {info['epochs']} x {info['steps_per_epoch']} steps, batch "
        f"{info['batch_size']}, lr {info['lr']}, seed {info['seed']}, {info['train_seconds']} s ({info['stopped']})",
        f"- loss first epoch {info['first_loss']}, last epoch {info['final_loss']} (log: docs/pretrain_log.csv)",
        f"- weights kept: {'encoder (down path + bottom; the decoder starts fresh)' if info['keep'] == 'encoder' else 'all layers'}",
        "- command(s): " + "; ".join(f"`{c}`" for c in info["commands"]), "",
        "Research use only; not a medical device.", ""])


def write_pretrained_bundle(out_dir, plan, net_def, state_dict, info, log_path=None, overwrite=False) -> Path:
    import monai
    import torch

    from MedAILib.models import trust as trust_mod
    from MedAILib.models.bundle_writer import write_bundle

    meta = {
        "version": "1.0.0", "changelog": {"1.0.0": "pre-trained by medai pretrain"},
        "monai_version": monai.__version__, "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__, "name": "MedAI self-supervised pre-trained UNet",
        "task": "self-supervised pre-training (masked/shuffled patch reconstruction + contrastive views)",
        "description": "Encoder-decoder weights for `medai train segmentation --init`; see docs/README.md.",
        "authors": "the user who trained it (with MedAI)", "copyright": "as the training data allows",
        "license": "as the training data allows", "intended_use": "Initialisation for training; research only.",
        "network_data_format": {
            "inputs": {"image": {"type": "image", "format": "magnitude", "modality": plan["modalities"][0],
                                 "num_channels": plan["n_channels"], "spatial_shape": plan["patch"],
                                 "dtype": "float32", "value_range": [], "is_patch_data": True,
                                 "channel_def": {str(k): m for k, m in enumerate(plan["modalities"])}}},
            "outputs": {"pred": {"type": "image", "format": "magnitude", "num_channels": plan["n_channels"],
                                 "spatial_shape": plan["patch"], "dtype": "float32", "value_range": [],
                                 "is_patch_data": True, "channel_def": {"0": "reconstruction"}}}},
        "medai_pretraining": {k: info[k] for k in ("plan", "n_cases", "keep", "epochs", "epochs_run", "steps_per_epoch",
                                                   "batch_size", "lr", "seed", "stopped", "commands")},
    }
    extra = {"docs/pretrain_log.csv": Path(log_path)} if log_path else None
    out = write_bundle(out_dir, inference_config(plan, net_def, strict=info.get("keep", "all") == "all"), json.loads(json.dumps(meta, default=float)),
                       state_dict, card=card(info), extra_files=extra, overwrite=overwrite)
    trust_mod.trust(out, reason="written by medai pretrain")
    return out


def encoder_keys(state_dict: dict) -> list:
    """The keys of a MONAI UNet's encoder (down path and bottom layer), not its decoder.

    MONAI's UNet nests ``Sequential(down, SkipConnection(submodule), up)`` per level, so a tensor
    belongs to the encoder when the index after its last ``model``/``submodule`` is 0 (down) or
    absent (the bottom layer), and to the decoder when it is 2 (up)."""
    out = []
    for k in state_dict:
        parts = k.split(".")
        idx = [i for i, p in enumerate(parts) if p in ("model", "submodule")]
        if not idx:
            continue
        nxt = parts[idx[-1] + 1] if idx[-1] + 1 < len(parts) else ""
        if nxt == "0" or not nxt.isdigit():
            out.append(k)
    return out
