"""An autoencoder trained on a task's images; its reconstruction error flags inputs unlike them.

Every image (training or checked) goes through one function, :func:`to_model_grid`: the Volume
(KJI array + IJK->RAS) is put in RAS orientation, resampled to the OOD model's spacing (the training
images' median, coarsened so their median field of view fits at most 64 voxels per axis),
centre-cropped or padded to a fixed shape, then z-scored (over the crop) and clipped to [-5, 5]. A MONAI
``VarAutoEncoder`` with a small latent (64) learns to reconstruct such grids; at check time the
mean squared reconstruction error (from the latent mean, deterministic) is the score. Part of the
training images is held out to calibrate: the warning threshold is the 99th percentile of the held-out
scores, and each score is also reported as the share of held-out scores below it.

The OOD model lives in a folder (``ood.json`` + ``autoencoder.pt``, weights loaded with
``weights_only=True``; the network is built here from plain numbers, nothing in the folder
executes). Put it inside a bundle as ``BUNDLE/ood/`` and :func:`check_input` finds it.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from MedAILib.core.errors import InputError, ModelError

log = logging.getLogger(__name__)

FOLDER = "ood"  # inside a bundle: BUNDLE/ood/ood.json, BUNDLE/ood/autoencoder.pt
MAX_AXIS = 64


def _read(item):
    from MedAILib.io import read_image

    return read_image(item) if not hasattr(item, "ijk_to_ras") else item


def grid_for(volumes: Sequence) -> dict:
    """Spacing and shape of the OOD grid from the training Volumes' geometry (RAS axis order)."""
    sp, fov = [], []
    for v in volumes:
        lin = np.asarray(v.ijk_to_ras)[:3, :3]
        # RAS axis r takes the spacing of the IJK axis that points most along it
        ax = np.argmax(np.abs(lin), axis=0)  # for each ijk column, which RAS axis
        s_ijk = np.linalg.norm(lin, axis=0)
        n_ijk = np.asarray(v.size_ijk, float)
        s, n = np.empty(3), np.empty(3)
        s[ax], n[ax] = s_ijk, n_ijk
        sp.append(s)
        fov.append(s * n)
    spacing = np.median(sp, 0)
    fov_med = np.median(fov, 0)
    spacing = np.maximum(spacing, fov_med / MAX_AXIS)
    shape = np.minimum(MAX_AXIS, np.ceil(fov_med / spacing / 8) * 8).astype(int)
    return {"spacing": [round(float(x), 4) for x in spacing], "shape": [int(x) for x in np.maximum(shape, 8)]}


def to_model_grid(volume, grid: dict):
    """Volume -> float32 tensor (1, X, Y, Z) on the OOD grid (see the module docstring)."""
    import torch
    from monai.data import MetaTensor
    from monai.transforms import NormalizeIntensity, Orientation, ResizeWithPadOrCrop, Spacing

    arr = np.asarray(volume.array, dtype=np.float32)
    if arr.ndim != 3:
        raise InputError(f"the OOD check needs a 3D single-channel image, got shape {arr.shape}",
                         "check one channel (volume) at a time")
    t = MetaTensor(torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 1, 0)))[None],
                   affine=torch.as_tensor(volume.ijk_to_ras, dtype=torch.float64))
    t = Orientation(axcodes="RAS", labels=None)(t)
    t = Spacing(pixdim=grid["spacing"], mode="bilinear")(t)
    # crop first, then z-score the crop itself: the score is then relative to the crop's own contrast,
    # so a flat region (e.g. soft tissue in a CT) cannot pass as "easy to reconstruct"
    t = ResizeWithPadOrCrop(grid["shape"], mode="constant")(t)
    t = NormalizeIntensity()(torch.as_tensor(t, dtype=torch.float32))
    return torch.clamp(torch.as_tensor(t, dtype=torch.float32), -5, 5)


def build_net(shape, latent: int = 64):
    from monai.networks.nets import VarAutoEncoder

    return VarAutoEncoder(spatial_dims=3, in_shape=(1, *shape), out_channels=1, latent_size=latent,
                          channels=(16, 32, 64), strides=(2, 2, 2), num_res_units=1, norm="instance")


def _scores(net, grids) -> np.ndarray:
    import torch

    net.eval()
    out = []
    with torch.no_grad():
        for g in grids:
            recon = net(g[None])[0]
            out.append(float(((recon - g[None]) ** 2).mean()))
    return np.asarray(out)


def train_ood(images: Sequence, out_dir, epochs: int = 60, batch_size: int = 8, lr: float = 1e-3,
              calibration_fraction: float = 0.2, seed: int = 0, time_limit_min: Optional[float] = None,
              kl_weight: float = 1e-4, threads: int = 1, overwrite: bool = False, command: str = "",
              progress=None) -> dict:
    """Train on ``images`` (files, DICOM folders or Volumes), calibrate on a held-out part, write the folder."""
    import torch
    from monai.transforms import RandAffine, RandFlip

    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise InputError(f"{out_dir} already exists", "pass --overwrite to replace it, or choose another folder")
    if len(images) < 5:
        raise InputError(f"{len(images)} training images given; the OOD model needs at least 5",
                         "give the task's training images")
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    t_start = time.time()
    deadline = t_start + time_limit_min * 60 if time_limit_min else None
    names = [str(getattr(i, "metadata", {}).get("source", i)) if hasattr(i, "ijk_to_ras") else str(i) for i in images]
    vols = [_read(i) for i in images]
    grid = grid_for(vols)
    grids = [to_model_grid(v, grid) for v in vols]
    order = list(range(len(grids)))
    random.Random(seed).shuffle(order)
    n_cal = max(2, int(round(calibration_fraction * len(grids))))
    cal_idx, tr_idx = order[:n_cal], order[n_cal:]
    train = torch.stack([grids[i] for i in tr_idx])
    net = build_net(grid["shape"])
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    aug_flip = RandFlip(prob=0.5, spatial_axis=0)
    aug_aff = RandAffine(prob=0.3, rotate_range=[0.1] * 3, scale_range=[0.05] * 3, padding_mode="zeros")
    aug_flip.set_random_state(seed)
    aug_aff.set_random_state(seed + 1)
    g = torch.Generator().manual_seed(seed)
    losses, stopped, last_dt, epochs_run = [], "completed", None, 0
    for epoch in range(epochs):
        if deadline and last_dt and time.time() + 1.2 * last_dt > deadline:
            stopped = f"time limit ({time_limit_min} min) reached after epoch {epoch}"
            break
        t0 = time.time()
        net.train()
        perm = torch.randperm(len(train), generator=g)
        ep = []
        for s in range(0, len(train), batch_size):
            x = torch.stack([torch.as_tensor(aug_aff(aug_flip(train[i]))) for i in perm[s:s + batch_size]]).float()
            opt.zero_grad(set_to_none=True)
            recon, mu, logvar, _ = net(x)
            rec = torch.mean((recon - x) ** 2)
            kld = -0.5 * torch.mean(1 + logvar - mu.pow(2) - logvar.exp())
            loss = rec + kl_weight * kld
            loss.backward()
            opt.step()
            ep.append(float(rec.detach()))
        losses.append(float(np.mean(ep)))
        last_dt = time.time() - t0
        epochs_run = epoch + 1
        msg = f"OOD autoencoder epoch {epoch + 1}/{epochs} reconstruction MSE {losses[-1]:.4f} ({last_dt:.1f} s)"
        log.info(msg)
        if progress:
            progress((epoch + 1) / epochs, msg, (epochs - epoch - 1) * last_dt)
    cal = _scores(net, [grids[i] for i in cal_idx])
    train_scores = _scores(net, [grids[i] for i in tr_idx])
    threshold = float(np.quantile(cal, 0.99))
    cfg = {"kind": "medai-ood-autoencoder", "version": 1, "grid": grid, "latent": 64,
           "network": "monai.networks.nets.VarAutoEncoder(channels=(16,32,64), strides=(2,2,2), num_res_units=1, "
                      "norm=instance)",
           "score": "mean squared reconstruction error of the z-scored, resampled, centre-cropped image",
           "threshold": threshold, "threshold_rule": "99th percentile of the held-out calibration scores",
           "calibration_scores": sorted(float(x) for x in cal), "train_scores_median": float(np.median(train_scores)),
           "n_train": len(tr_idx), "n_calibration": len(cal_idx), "epochs": epochs, "epochs_run": epochs_run,
           "stopped": stopped, "seed": seed, "lr": lr, "batch_size": batch_size, "kl_weight": kl_weight,
           "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
           "train_seconds": round(time.time() - t_start, 1), "command": command,
           "calibration_cases": [names[i] for i in cal_idx]}
    _write_folder(out_dir, cfg, net.state_dict())
    return cfg


def _write_folder(out_dir: Path, cfg: dict, state: dict) -> None:
    import shutil
    import tempfile

    import torch

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        torch.save(state, stage / "autoencoder.pt")
        (stage / "ood.json").write_text(json.dumps(cfg, indent=1) + "\n", encoding="utf-8")
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out_dir.rename(old)
            stage.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            stage.rename(out_dir)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def ood_folder(path) -> Optional[Path]:
    """The OOD model folder: ``path`` itself or ``path/ood`` (a bundle); None when there is none."""
    p = Path(path)
    for c in (p, p / FOLDER):
        if (c / "ood.json").is_file():
            return c
    return None


_CACHE: dict = {}


def load_ood(path):
    """(config, network) of an OOD folder (or a bundle holding one), cached by folder and mtime."""
    import torch

    folder = ood_folder(path)
    if folder is None:
        raise ModelError(f"{path} holds no OOD model (ood.json)", "train one with `medai train ood`")
    key = (str(folder.resolve()), (folder / "autoencoder.pt").stat().st_mtime_ns)
    if key not in _CACHE:
        try:
            cfg = json.loads((folder / "ood.json").read_text(encoding="utf-8"))
            net = build_net(cfg["grid"]["shape"], cfg.get("latent", 64))
            net.load_state_dict(torch.load(folder / "autoencoder.pt", map_location="cpu", weights_only=True))
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            raise ModelError(f"cannot load the OOD model in {folder}: {e}", "retrain it with `medai train ood`") from None
        net.eval()
        _CACHE.clear()
        _CACHE[key] = (cfg, net)
    return _CACHE[key]


def score_volumes(path, items: Sequence) -> np.ndarray:
    """Scores of several inputs (files, DICOM folders or Volumes) under the OOD model at ``path``."""
    cfg, net = load_ood(path)
    return _scores(net, [to_model_grid(_read(i), cfg["grid"]) for i in items])


def user_ood_dir(model_id: str) -> Path:
    """Where ``medai train ood --model-id ID`` keeps the OOD model of a catalogue model (shipped bundles
    are package data and are never written to): ``MEDAI_HOME/ood/ID``."""
    from MedAILib.models.cache import medai_home

    if not model_id or "/" in model_id or "\\" in model_id or model_id.startswith("."):
        raise InputError(f"bad model id {model_id!r} for the OOD model folder", "give a catalogue id")
    return medai_home() / "ood" / model_id


def find_ood(bundle_path=None, model_id: Optional[str] = None) -> Optional[Path]:
    """The OOD folder for a bundle: ``BUNDLE/ood``, else ``MEDAI_HOME/ood/MODEL_ID``; None if neither."""
    if bundle_path is not None and ood_folder(bundle_path) is not None:
        return ood_folder(bundle_path)
    if model_id:
        try:
            return ood_folder(user_ood_dir(model_id))
        except InputError:
            return None
    return None


def check_input(bundle_path, image, model_id: Optional[str] = None) -> Optional[dict]:
    """The call for pipelines: None when the bundle (``BUNDLE/ood``) or its catalogue id
    (``MEDAI_HOME/ood/ID``) has no OOD model; else
    ``{"score", "threshold", "percentile", "out_of_distribution", "message"}`` for the input
    (a Volume, image file or DICOM folder; multi-channel inputs: check the first channel).
    Warn with ``message`` when ``out_of_distribution``; never fail the run on it."""
    folder = find_ood(bundle_path, model_id)
    if folder is None:
        return None
    cfg, _ = load_ood(folder)
    s = float(score_volumes(folder, [image])[0])
    cal = np.asarray(cfg["calibration_scores"], float)
    pct = float((cal < s).mean() * 100)
    out = s > cfg["threshold"]
    msg = (f"input looks unlike the model's training images: autoencoder reconstruction error {s:.3f} is above "
           f"the threshold {cfg['threshold']:.3f} (99th percentile of held-out training images); check the "
           f"modality, body part and orientation before trusting the result" if out else
           f"input resembles the training images (reconstruction error {s:.3f}, threshold {cfg['threshold']:.3f})")
    return {"score": s, "threshold": float(cfg["threshold"]), "percentile": pct, "out_of_distribution": bool(out),
            "message": msg}


def ood_warning(bundle, image) -> Optional[str]:
    """What a pipeline warns (None: the model has no OOD check, or the input resembles its
    training images). ``bundle``: a loaded Bundle (its folder and catalogue id are looked up)."""
    entry = getattr(bundle, "entry", None)
    r = check_input(getattr(bundle, "path", None), image, model_id=getattr(entry, "id", None))
    return r["message"] if r and r["out_of_distribution"] else None


# ---------------------------------------------------------------- `medai train ood`


def add_arguments(p) -> None:
    p.add_argument("files", nargs="*", help="training images (files or DICOM folders)")
    p.add_argument("--images", default=None, help="folder of training images")
    p.add_argument("--datalist", default=None, help="JSON list of files or {'training': [{'image': ...}]}")
    p.add_argument("--out", default=None, help="OOD model folder to write (default: BUNDLE/ood with --bundle)")
    p.add_argument("--bundle", default=None, help="write the OOD model into this bundle folder (BUNDLE/ood)")
    p.add_argument("--model-id", default=None,
                   help="write it for this catalogue model (MEDAI_HOME/ood/ID; e.g. a shipped model)")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time-limit", type=float, default=None, metavar="MINUTES")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--overwrite", action="store_true", help="replace an existing OOD model folder")


def run(args) -> int:
    """``medai train ood``: train the reconstruction autoencoder for the out-of-distribution check."""
    import sys

    from MedAILib.tasks.pretraining.ssl import list_images

    if sum(bool(x) for x in (args.out, args.bundle, args.model_id)) != 1:
        raise InputError("give exactly one of --out DIR, --bundle BUNDLE, --model-id ID", "where the OOD model goes")
    was_trusted = False
    if args.bundle:
        from MedAILib.models import trust as trust_mod
        from MedAILib.models.catalogue import load_catalogue

        if not (Path(args.bundle) / "configs").is_dir():
            raise InputError(f"{args.bundle} is not a bundle folder (no configs/)", "give the bundle's top folder")
        was_trusted, why = trust_mod.trust_status(args.bundle, load_catalogue())
        if why.startswith("shipped"):
            raise InputError(f"{args.bundle} is a bundle shipped with MedAI (package data, not written to)",
                             "use --model-id ID instead (the OOD model goes to MEDAI_HOME/ood/ID)")
    items = [i["image"] if not isinstance(i["image"], list) else i["image"][0]
             for i in list_images(args.images, args.datalist, [f for f in args.files if not os.path.isdir(f)])]
    items += [f for f in args.files if os.path.isdir(f)]
    out = Path(args.out) if args.out else Path(args.bundle) / FOLDER if args.bundle else user_ood_dir(args.model_id)
    cfg = train_ood(items, out, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                    time_limit_min=args.time_limit, threads=args.threads, overwrite=args.overwrite,
                    command=getattr(args, "command_line", ""),
                    progress=lambda f, msg, left: print(msg, file=sys.stderr, flush=True))
    if was_trusted:  # the user added the OOD model to a bundle they trusted: keep it trusted
        trust_mod.trust(args.bundle, reason="OOD model added by medai train ood")
    print(json.dumps({"ood_model": str(out), **{k: cfg[k] for k in ("grid", "threshold", "n_train", "n_calibration",
                                                                    "epochs_run", "stopped", "train_seconds")}},
                     indent=1))
    return 0
