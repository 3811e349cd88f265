"""Train a 3D classifier on a MedMNIST-style npz (AdrenalMNIST3D) and package it as a MONAI bundle.

The npz holds ``train_images``/``train_labels``, ``val_*`` and ``test_*`` (uint8 volumes, N×D×D×D).
Training uses only the train split; the model kept is the epoch with the best validation AUC. The
test split is never touched here except by :func:`evaluate_bundle`, which the card's final figure
comes from.

    medai train classification --data adrenalmnist3d.npz --out Resources/Models/adrenal_classifier
    python -m MedAILib.tasks.classification.trainer --data ... --out ...

Checkpoints (``<out>/train/last.pt``) make a killed run resumable with ``--resume``; every epoch
appends one JSON line (loss, val AUC/ACC, lr, seconds) to ``<out>/train/log.jsonl``.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import io
import json
import logging
import random
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from MedAILib.core.atomic import atomic_output
from MedAILib.models.checkpoints import load_checkpoint
from MedAILib.core.errors import InputError

log = logging.getLogger(__name__)

CLASS_NAMES = {"0": "normal", "1": "hyperplasia"}

# Network definitions in MONAI bundle syntax, so the very same dict goes into inference.json.
# Full-resolution ResNets are far too slow on a CPU at 28³; these stride early and stay small.
NETWORKS = {
    "densenet": {
        "_target_": "monai.networks.nets.DenseNet",
        "spatial_dims": 3, "in_channels": 1, "out_channels": 2,
        "init_features": 16, "growth_rate": 12, "block_config": [4, 8, 8], "dropout_prob": 0.0,
    },
    "resnet10": {
        "_target_": "monai.networks.nets.resnet10",
        "spatial_dims": 3, "n_input_channels": 1, "num_classes": 2,
        "conv1_t_size": 3, "conv1_t_stride": 2, "no_max_pool": False, "widen_factor": 0.5,
    },
    "resnet18": {
        "_target_": "monai.networks.nets.resnet18",
        "spatial_dims": 3, "n_input_channels": 1, "num_classes": 2,
        "conv1_t_size": 3, "conv1_t_stride": 2, "no_max_pool": False, "widen_factor": 0.5,
    },
}


def network_def(name: str, dropout: float = 0.0) -> dict:
    if name not in NETWORKS:
        raise InputError(f"unknown network {name!r}", f"choose one of {', '.join(NETWORKS)}")
    d = copy.deepcopy(NETWORKS[name])
    if "dropout_prob" in d:
        d["dropout_prob"] = dropout
    return d


def build_network(net_def: dict) -> torch.nn.Module:
    from monai.bundle import ConfigParser

    return ConfigParser({"network_def": copy.deepcopy(net_def)}).get_parsed_content("network_def")


# ----------------------------------------------------------------------------------------- data
def load_split(npz_path, split: str, limit: int | None = None):
    """Images as float32 (N,1,D,D,D) in [0,1] (the files hold 0/255 masks) and int64 labels (N,)."""
    npz_path = Path(npz_path)
    if not npz_path.exists():
        raise InputError(f"dataset not found: {npz_path}", "give the MedMNIST .npz file with --data")
    with np.load(npz_path) as d:
        key = f"{split}_images"
        if key not in d:
            raise InputError(f"{npz_path.name} has no {key}", "expected MedMNIST keys train_/val_/test_images")
        x = d[key][:limit].astype(np.float32) / 255.0
        y = d[f"{split}_labels"][:limit].reshape(-1).astype(np.int64)
    if x.ndim != 4:
        raise InputError(f"{key} is {x.ndim}-D, expected N×D×H×W", "use a MedMNIST 3D npz")
    return x[:, None], y


def train_transforms(kind: str, seed: int):
    """MONAI array transforms applied to one (1,D,D,D) sample. ``kind``: none | flip | affine."""
    from monai.transforms import Compose, RandAffine, RandFlip

    t = []
    if kind in ("flip", "affine"):
        t += [RandFlip(prob=0.5, spatial_axis=a) for a in (0, 1, 2)]
    if kind == "affine":
        # Small rotations/scales: the class is about gland size and thickness, so keep scale mild.
        t.append(RandAffine(prob=0.8, rotate_range=(0.26, 0.26, 0.26), scale_range=(0.05, 0.05, 0.05),
                            translate_range=(2, 2, 2), mode="bilinear", padding_mode="zeros"))
    c = Compose(t)
    c.set_random_state(seed=seed)
    return c


def _random_generators(compose) -> list:
    """The numpy RandomStates of every random transform (and random sub-part, e.g. RandAffine's grid)."""
    from monai.transforms import Randomizable

    if compose is None:
        return []
    out = []
    for t in compose.transforms:
        out += [t.R] + [v.R for v in vars(t).values() if isinstance(v, Randomizable) and v is not t]
    return out


class _Augmented(torch.utils.data.Dataset):
    def __init__(self, x, y, transform):
        self.x, self.y, self.t = x, y, transform

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        img = self.t(self.x[i]) if self.t is not None else self.x[i]
        return torch.as_tensor(np.asarray(img), dtype=torch.float32), int(self.y[i])


# ------------------------------------------------------------------------------------ inference
@torch.no_grad()
def predict_proba(net: torch.nn.Module, x: np.ndarray, tta: bool = False, batch: int = 64,
                  temperature: float = 1.0) -> np.ndarray:
    """Softmax probability of class 1 for (N,1,D,D,D) inputs; ``tta`` averages the 8 axis flips;
    ``temperature`` divides the logits first (the bundle's calibration)."""
    net.eval()
    flips = [()]
    if tta:
        flips = [f for f in ((), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4))]
    out = []
    for s in range(0, len(x), batch):
        xb = torch.as_tensor(x[s:s + batch])
        p = sum(torch.softmax(net(xb.flip(f) if f else xb) / temperature, 1)[:, 1] for f in flips) / len(flips)
        out.append(p.numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


# ------------------------------------------------------------------------------------- training
def _seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(data, out, size=None, network="densenet", epochs=60, batch_size=32, lr=2e-3,
          weight_decay=1e-4, augment="affine", label_smoothing=0.0, class_weight=False,
          dropout=0.0, ema=0.0, seed=0, resume=False, limit=None, threads=None,
          stop_after=None, progress=None) -> dict:
    """Train; keep the best-val-AUC weights; return a summary dict. ``out`` gets train/ + the bundle."""
    from MedAILib.tasks.classification.metrics import classification_metrics

    if threads:
        torch.set_num_threads(threads)
    out = Path(out)
    work = out / "train"
    work.mkdir(parents=True, exist_ok=True)
    _seed_everything(seed)
    xtr, ytr = load_split(data, "train", limit)
    xva, yva = load_split(data, "val", limit)
    if size is not None and xtr.shape[-1] != size:
        raise InputError(f"{Path(data).name} holds {xtr.shape[-1]}³ volumes, not {size}³",
                         "pass the npz of that size or leave --size out")
    net_def = network_def(network, dropout)
    net = build_network(net_def)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * int(np.ceil(len(ytr) / batch_size)),
                                                pct_start=0.1)
    weights = None
    if class_weight:  # inverse frequency, so hyperplasia (~22 %) counts as much as normal
        counts = np.bincount(ytr, minlength=2).astype(np.float32)
        weights = torch.as_tensor(counts.sum() / (2 * counts))
    loss_fn = torch.nn.CrossEntropyLoss(weight=weights, label_smoothing=label_smoothing)
    avg = torch.optim.swa_utils.AveragedModel(
        net, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(ema)) if ema else None

    gen = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(_Augmented(xtr, ytr, train_transforms(augment, seed) if augment != "none" else None),
                                         batch_size=batch_size, shuffle=True, generator=gen, drop_last=True)
    state = {"epoch": 0, "best_auc": -1.0, "best_epoch": -1}
    ckpt = work / "last.pt"
    if resume and ckpt.exists():
        c = load_checkpoint(ckpt)  # weights_only=True; numpy RNG state allowed, nothing else
        net.load_state_dict(c["net"])
        opt.load_state_dict(c["opt"])
        sched.load_state_dict(c["sched"])
        if avg is not None and c.get("avg"):
            avg.load_state_dict(c["avg"])
        state = c["state"]
        gen.set_state(c["gen"])
        torch.set_rng_state(c["torch_rng"])
        np.random.set_state(c["np_rng"])
        random.setstate(c["py_rng"])
        for r, st in zip(_random_generators(loader.dataset.t), c["aug"]):  # resume == no interruption
            r.set_state(st)
        log.info("resumed at epoch %d", state["epoch"])
    config = dict(network=network, network_def=net_def, size=int(xtr.shape[-1]), epochs=epochs,
                  batch_size=batch_size, lr=lr, weight_decay=weight_decay, augment=augment,
                  label_smoothing=label_smoothing, class_weight=class_weight, dropout=dropout, ema=ema,
                  seed=seed, n_train=len(ytr), n_val=len(yva), data=str(data))
    (work / "config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")

    last = epochs if stop_after is None else min(epochs, state["epoch"] + stop_after)
    for epoch in range(state["epoch"], last):  # stop_after: time-boxed slice, continue with resume
        t0 = time.time()
        net.train()
        losses = []
        for xb, yb in loader:
            loss = loss_fn(net(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if avg is not None:
                avg.update_parameters(net)
            losses.append(loss.item())
        evaluated = avg.module if avg is not None else net
        if avg is not None:  # EMA keeps BN running stats of the live net: copy them across
            for b_avg, b in zip(avg.module.buffers(), net.buffers()):
                b_avg.copy_(b)
        pva = predict_proba(evaluated, xva)
        m = classification_metrics(yva, pva)
        rec = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "val_auc": m["auc"], "val_acc": m["accuracy"],
               "lr": sched.get_last_lr()[0], "seconds": round(time.time() - t0, 1)}
        state["epoch"] = epoch + 1
        if m["auc"] > state["best_auc"]:
            state.update(best_auc=m["auc"], best_epoch=epoch + 1, best_acc=m["accuracy"])
            torch.save(evaluated.state_dict(), work / "best.pt")
        with open(work / "log.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        with atomic_output(ckpt) as tmp:
            torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                        "avg": avg.state_dict() if avg is not None else None, "state": state,
                        "gen": gen.get_state(), "torch_rng": torch.get_rng_state(),
                        "aug": [r.get_state() for r in _random_generators(loader.dataset.t)],
                        "np_rng": np.random.get_state(), "py_rng": random.getstate()}, tmp)
        log.info("epoch %s", rec)
        if progress is not None:
            progress(state["epoch"] / epochs, f"epoch {epoch + 1}/{epochs} val AUC {m['auc']:.3f}")
    torch.save(torch.load(work / "best.pt", weights_only=True), work / "final_best.pt")
    summary = {**config, "epochs_done": state["epoch"],
               **{k: state[k] for k in ("best_auc", "best_epoch", "best_acc") if k in state}}
    (work / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return summary


# --------------------------------------------------------------------------------------- bundle
def preparation_recipe(size: int) -> dict:
    """How a segment must be turned into the network input: the way MedMNIST built AdrenalMNIST3D.

    MedMNIST: "We calculate the center of adrenal and resize the center-cropped 64mm×64mm×64mm
    volume into 28×28×28". The files confirm a centroid centre (see docs/README.md).
    """
    return {
        "input_kind": "mask",
        "one_structure": "one adrenal gland (left or right); split a two-gland segment first",
        "center": "mask_centroid",
        "crop": "cube_mm",
        "crop_size_mm": [64.0, 64.0, 64.0],
        "grid_axes": "the input volume's own voxel (IJK) axes; array order KJI like the npz",
        "resize": [size, size, size],
        "spacing_mm": [round(64.0 / size, 6)] * 3,
        "interpolation": "linear",
        "binarize_threshold": 0.5,
        "outside": 0.0,
        "value_range": [0.0, 1.0],
        "scale": "mask 0/1 float (the npz stores 0/255; training divides by 255)",
        "unknown": "which axis is cranio-caudal in the npz is not documented; training used random flips",
    }


def write_bundle(out, state_dict, net_def: dict, size: int, card: str | None = None,
                 extra_meta: dict | None = None) -> Path:
    """Write the MONAI bundle layout (configs/, models/model.pt, docs/, LICENSE) under ``out`` with the
    shared atomic writer (:func:`MedAILib.models.bundle_writer.write_bundle`). Files already in ``out``
    that the bundle does not rewrite (``train/`` checkpoints, an earlier card) are carried over."""
    from MedAILib.models.bundle_writer import write_bundle as write_bundle_folder

    out = Path(out)
    buf = io.BytesIO()  # via bytes: the zip records carry a fixed name, so the checksum is reproducible
    torch.save(state_dict, buf)
    weights = buf.getvalue()
    sha = hashlib.sha256(weights).hexdigest()
    meta = {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json",
        "version": "0.1.0",
        "changelog": {"0.1.0": "first model trained by MedAI on AdrenalMNIST3D"},
        "monai_version": "1.6.1",
        "pytorch_version": "2.13.0",
        "numpy_version": "2.4.6",
        "optional_packages_version": {},
        "name": "MedAI adrenal gland classifier (AdrenalMNIST3D)",
        "task": "Classification of a 3D adrenal gland shape mask: normal vs hyperplasia",
        "description": "A small 3D CNN trained on AdrenalMNIST3D (MedMNIST v2) shape masks.",
        "authors": "MedAI contributors",
        "copyright": "Weights: MedAI contributors, trained on AdrenalMNIST3D (CC BY 4.0)",
        "data_source": "AdrenalMNIST3D, MedMNIST v2 (Yang et al., Scientific Data 10, 41, 2023), https://medmnist.com/",
        "data_type": "numpy",
        "image_classes": "binary adrenal gland mask, 1 channel",
        "label_classes": "0 normal, 1 hyperplasia",
        "pred_classes": "2 channels, softmax probabilities",
        "intended_use": "Research and teaching only; not for clinical decisions.",
        "references": ["Yang J, Shi R, Wei D, et al. MedMNIST v2 - A large-scale lightweight benchmark for 2D "
                       "and 3D biomedical image classification. Scientific Data 10, 41 (2023)."],
        "network_data_format": {
            "inputs": {"image": {
                "type": "image", "format": "magnitude", "modality": "binary mask",
                "num_channels": 1, "spatial_shape": [size, size, size], "dtype": "float32",
                "value_range": [0, 1], "is_patch_data": False,
                "channel_def": {"0": "adrenal gland mask"},
                "description": (
                    f"Binary mask of ONE adrenal gland (left or right) prepared exactly like AdrenalMNIST3D: "
                    f"centre = centroid of the mask; crop a 64 mm x 64 mm x 64 mm cube (physical size) around it; "
                    f"resample that cube to {size}x{size}x{size} voxels ({64.0 / size:.3f} mm); "
                    "binary values 0/1 (the dataset stores 0/255). See configs/medai.json and docs/README.md.")}},
            "outputs": {"pred": {
                "type": "probabilities", "format": "classes", "num_channels": 2, "spatial_shape": [2],
                "dtype": "float32", "value_range": [0, 1], "is_onehot": True, "channel_def": CLASS_NAMES}},
        },
        "medai": {"preparation": preparation_recipe(size), "model_sha256": sha},
    }
    if extra_meta:
        meta["medai"].update(extra_meta)
    written = {"configs/metadata.json", "configs/inference.json", "configs/medai.json", "models/model.pt", "LICENSE"}
    if card is not None:
        written.add("docs/README.md")
    keep = {}
    if out.is_dir():
        for f in sorted(out.rglob("*")):
            rel = f.relative_to(out).as_posix()
            if f.is_file() and rel not in written:
                keep[rel] = f
    extra = {**keep, "configs/medai.json": {"task": "classification", "classes": CLASS_NAMES,
                                            "preparation": preparation_recipe(size)},
             "models/model.pt": weights}
    return write_bundle_folder(out, inference_config(net_def, size), meta, None, card=card, license_text=LICENSE_TEXT,
                               extra_files=extra, overwrite=True)


def inference_config(net_def: dict, size: int) -> dict:
    """A standard MONAI bundle inference config: input npy/nifti mask → softmax probabilities."""
    return {
        "imports": ["$import glob", "$import torch", "$import monai"],
        "bundle_root": ".",
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "dataset_dir": "$@bundle_root + '/data'",
        "datalist": "$list(sorted(glob.glob(@dataset_dir + '/*.npy')))",
        "network_def": net_def,
        "network": "$@network_def.to(@device)",
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "LoadImaged", "keys": "image", "image_only": True},
                {"_target_": "EnsureChannelFirstd", "keys": "image", "channel_dim": "no_channel"},
                {"_target_": "ScaleIntensityd", "keys": "image", "minv": 0.0, "maxv": 1.0},
                {"_target_": "Resized", "keys": "image", "spatial_size": [size, size, size], "mode": "nearest"},
                {"_target_": "EnsureTyped", "keys": "image", "dtype": "$torch.float32"},
            ],
        },
        "dataset": {"_target_": "Dataset", "data": "$[{'image': i} for i in @datalist]", "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False,
                       "num_workers": 0},
        "inferer": {"_target_": "SimpleInferer"},
        "postprocessing": {
            "_target_": "Compose",
            "transforms": [{"_target_": "Activationsd", "keys": "pred", "softmax": True}],
        },
        "handlers": [{"_target_": "CheckpointLoader", "load_path": "$@bundle_root + '/models/model.pt'",
                      "load_dict": {"model": "@network"}, "map_location": "@device"}],
        "evaluator": {"_target_": "SupervisedEvaluator", "device": "@device", "val_data_loader": "@dataloader",
                      "network": "@network", "inferer": "@inferer", "postprocessing": "@postprocessing",
                      "val_handlers": "@handlers"},
        "initialize": ["$monai.utils.set_determinism(seed=0)"],
        "run": ["$@evaluator.run()"],
    }


LICENSE_TEXT = """MedAI adrenal gland classifier — licence

Model weights: trained by the MedAI contributors on AdrenalMNIST3D. The training data are licensed
under Creative Commons Attribution 4.0 International (CC BY 4.0,
https://creativecommons.org/licenses/by/4.0/); these weights are a derivative work and are
distributed under CC BY 4.0 as well.

Attribution (required):
  Jiancheng Yang, Rui Shi, Donglai Wei, Zequan Liu, Lin Zhao, Bilian Ke, Hanspeter Pfister,
  Bingbing Ni. "MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D biomedical image
  classification." Scientific Data 10, 41 (2023). https://medmnist.com/
  AdrenalMNIST3D source: Zhongshan Hospital affiliated to Fudan University.

Code and configuration files of this bundle: Apache License 2.0, like the rest of MedAI.

For research and teaching only. Not a medical device; not for clinical decisions.
"""


def load_bundle_network(bundle) -> torch.nn.Module:
    """The bundle's network with its weights (weights_only=True), in eval mode."""
    bundle = Path(bundle)
    cfg = json.loads((bundle / "configs" / "inference.json").read_text(encoding="utf-8"))
    net = build_network(cfg["network_def"])
    net.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True, map_location="cpu"))
    return net.eval()


def bundle_calibration(bundle) -> tuple:
    """(temperature, decision threshold) stored in the bundle's configs/medai.json (1.0, 0.5 if absent)."""
    f = Path(bundle) / "configs" / "medai.json"
    cfg = json.loads(f.read_text(encoding="utf-8")) if f.exists() else {}
    return float(cfg.get("temperature", 1.0)), float(cfg.get("decision_threshold", 0.5))


def evaluate_bundle(bundle, data, split="test", tta=False, threshold=None, limit=None) -> dict:
    """Metrics of a bundle folder on a MedMNIST split, with its calibration; ``threshold`` defaults to
    the bundle's operating point."""
    from MedAILib.tasks.classification.metrics import classification_metrics

    temperature, stored = bundle_calibration(bundle)
    threshold = stored if threshold is None else threshold
    x, y = load_split(data, split, limit)
    p = predict_proba(load_bundle_network(bundle), x, tta=tta, temperature=temperature)
    return classification_metrics(y, p, threshold=threshold, class_names=[CLASS_NAMES[k] for k in sorted(CLASS_NAMES)])


# ------------------------------------------------------------------------------------------ CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="MedMNIST 3D .npz (train_/val_/test_ images and labels)")
    p.add_argument("--out", required=True, help="bundle folder to write (training state goes to OUT/train)")
    p.add_argument("--size", type=int, choices=(28, 64), default=None, help="check the npz holds this size")
    p.add_argument("--network", choices=sorted(NETWORKS), default="densenet")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--augment", choices=("none", "flip", "affine"), default="affine")
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--class-weight", action="store_true", help="inverse-frequency class weights in the loss")
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--ema", type=float, default=0.0, help="keep an exponential moving average of weights (e.g. 0.99)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="use only the first N cases of each split (smoke tests)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--resume", action="store_true", help="continue from OUT/train/last.pt")
    p.add_argument("--stop-after", type=int, default=None, help="stop after N epochs of this run (resume later)")
    p.add_argument("--no-bundle", action="store_true", help="train only; do not write the bundle")
    p.add_argument("--operating-point", choices=("youden", "sensitivity"), default="youden",
                   help="how the decision threshold is chosen on the validation split (after temperature scaling)")
    p.add_argument("--target-sensitivity", type=float, default=None,
                   help="with --operating-point sensitivity: the sensitivity to reach on validation")
    p.add_argument("--card-notes", default=None, help="markdown file appended to the model card (what was tried)")


def finalize(out, data, summary: dict, command: str, notes: str = "", method: str = "youden",
             target_sensitivity: float | None = None, weights=None) -> dict:
    """Write the bundle from the run's best weights, calibrate it on val (temperature + operating
    point, :mod:`MedAILib.tasks.classification.calibration`), then measure test once for its card.

    ``weights`` defaults to ``<out>/train/final_best.pt`` (the run that trained into ``out``).
    """
    from MedAILib.tasks.classification import calibration
    from MedAILib.tasks.classification.metrics import format_metrics
    from MedAILib.tasks.classification.model_card import model_card

    out = Path(out)
    sd = torch.load(weights or out / "train" / "final_best.pt", weights_only=True)
    write_bundle(out, sd, summary["network_def"], summary["size"],
                 extra_meta={"training": {k: summary[k] for k in ("network", "epochs", "lr", "augment", "seed",
                                                                    "best_epoch", "best_auc")}})
    result = calibration.calibrate(out, data, method, target_sensitivity, limit=summary.get("limit"))
    calibration.store(out, result, data)
    model = out / "models" / "model.pt"
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    (out / "docs" / "README.md").write_text(model_card(summary, result, command, model.stat().st_size, sha, notes), encoding="utf-8")
    print(format_metrics(result["val"], "val split"))
    print(format_metrics(result["test"], "test split"))
    return {**result, "sha256": sha}


def run(args) -> int:
    s = train(args.data, args.out, size=args.size, network=args.network, epochs=args.epochs,
              batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay, augment=args.augment,
              label_smoothing=args.label_smoothing, class_weight=args.class_weight, dropout=args.dropout,
              ema=args.ema, seed=args.seed, resume=args.resume, limit=args.limit, threads=args.threads,
              stop_after=args.stop_after)
    print(f"best val AUC {s['best_auc']:.4f} at epoch {s['best_epoch']} (val ACC {s.get('best_acc', float('nan')):.4f})")
    if not args.no_bundle:
        s["limit"] = args.limit
        command = getattr(args, "command_line", None) or "python -m MedAILib.tasks.classification.trainer " + " ".join(
            shlex.quote(a) for a in (getattr(args, "argv", None) or []))
        notes = Path(args.card_notes).read_text(encoding="utf-8") if args.card_notes else ""
        finalize(args.out, args.data, s, command, notes, method=args.operating_point,
                 target_sensitivity=args.target_sensitivity)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m MedAILib.tasks.classification.trainer", description=__doc__.split("\n")[0])
    add_arguments(p)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = p.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    return run(args)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
