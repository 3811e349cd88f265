"""Train a pix2pix-style modality-conversion GAN and write it as a MedAI synthesis bundle.

Generator: MONAI 2D UNet on 2.5D stacks (the slice and its neighbours as channels -> one slice),
predicting the change from the centre slice (``ResidualUNet``). Losses: L1 + MONAI SSIMLoss, plus
(``--adv-weight`` > 0) a MONAI PatchDiscriminator on (source stack, target slice) with
PatchAdversarialLoss (least squares): pix2pix.

    medai train synthesis --pairs DIR_OR_CSV [DIR_OR_CSV ...] --source T2 --target FLAIR --out BUNDLE_DIR \
        [--val-cases PGBM-003] [--epochs 20] [--norm percentile] [--resume | --overwrite]
    python -m MedAILib.tasks.synthesis.trainer ...   (same arguments)

Intensities (``--norm percentile``, the default for MR targets): source and target are scaled in the
source's brain mask (skull-stripped images: the non-background; whole heads: the Otsu head mask) so
that the mask's 1st percentile is 0 and its 99th is 1. The output is the target in those units.

The output folder is written with :func:`MedAILib.models.bundle_writer.write_bundle` after every epoch
(a complete bundle or none: configs/, models/model.pt), and carries ``checkpoints/last.pt`` (for
--resume), ``train_log.csv`` and ``samples/epoch_NNN.png`` (input | generated | real).
"""

from __future__ import annotations

import argparse
import csv
import io as _io
import json
import logging
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from MedAILib.core.errors import InputError, OutputError
from MedAILib.io import to_sitk
from MedAILib.models.bundle_writer import write_bundle
from MedAILib.tasks.synthesis import ood
from MedAILib.tasks.synthesis.bundle import SynthesisBundle
from MedAILib.tasks.synthesis.evaluate import reference_on_grid, score
from MedAILib.tasks.synthesis.pipeline import ood_features, predict_slices, synthesize
from MedAILib.tasks.synthesis.pairs import find_pairs
from MedAILib.tasks.synthesis.preprocess import mask_for, model_space_arrays, normalise, slice_stacks, target_to_model_space

log = logging.getLogger(__name__)

CT_NORM = {"type": "linear", "offset": 0.0, "scale": 1000.0, "clip": [-1024.0, 3071.0]}
MR_NORM = {"type": "zscore_mask"}
MR_PERCENTILE = {"type": "percentile_brain", "low": 1.0, "high": 99.0}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pairs", required=True, nargs="+",
                   help="folder(s) of case folders (DICOM series or NIfTI named by contrast) or CSV case,source,target")
    p.add_argument("--source", required=True, help="source contrast, e.g. T2 or MR")
    p.add_argument("--target", required=True, help="target contrast, e.g. FLAIR or CT (CT is learnt in HU)")
    p.add_argument("--out", required=True, help="bundle folder to write (also holds checkpoints, log, samples)")
    p.add_argument("--val-cases", default="", help="comma-separated case names held out for validation")
    p.add_argument("--train-cases", default="", help="comma-separated case names to train on (default: all others)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--iters-per-epoch", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--patch", type=int, default=96, help="training patch size in pixels (model space)")
    p.add_argument("--slices", type=int, default=3, help="2.5D: neighbouring slices given as channels (odd)")
    p.add_argument("--pixel-mm", type=float, default=1.5, help="in-plane pixel size of the model space")
    p.add_argument("--channels", default="16,32,64,128", help="UNet channels per level")
    p.add_argument("--lr", type=float, default=1e-3, help="generator learning rate (Adam)")
    p.add_argument("--lr-d", type=float, default=2e-4, help="discriminator learning rate (Adam)")
    p.add_argument("--l1-weight", type=float, default=50.0)
    p.add_argument("--adv-weight", type=float, default=1.0)
    p.add_argument("--ssim-weight", type=float, default=0.0, help="weight of MONAI SSIMLoss (0 = off)")
    p.add_argument("--norm", choices=("percentile", "zscore"), default="percentile",
                   help="MR intensity normalisation: 1st-99th percentile in the brain mask (default) or z-score in the head mask")
    p.add_argument("--case-weighting", choices=("equal", "slices"), default="equal",
                   help="draw training slices with each case equally likely (default) or in proportion to its slices")
    p.add_argument("--max-minutes", type=float, default=0.0,
                   help="stop after the epoch during which this much training time was spent (0 = no limit)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT folder")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.pt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--name", default="", help="model name for metadata (default: <source>_to_<target>_gan)")


# ----------------------------------------------------------------------------------------------
def _cfg(args) -> dict:
    ct = args.target.lower() == "ct"
    pct = getattr(args, "norm", "zscore") == "percentile"
    mr_norm = MR_PERCENTILE if pct else MR_NORM
    if ct:
        units = "HU"
    elif pct:
        units = (f"{args.target} in percentile units of the training normalisation (0 = 1st, 1 = 99th percentile "
                 f"of {args.target} inside the brain mask of the input {args.source})")
    else:
        units = (f"{args.target} in z-score units of the training normalisation "
                 f"(mean 0, SD 1 inside the head mask of the input {args.source})")
    return {
        "source": args.source, "target": args.target,
        "target_modality": "CT" if ct else "MR",
        "slices": args.slices, "pixel_mm": args.pixel_mm,
        "source_norm": CT_NORM if args.source.lower() == "ct" else mr_norm,
        "target_norm": CT_NORM if ct else mr_norm,
        "output_units": units,
    }


def display_range(norm: dict) -> tuple:
    """Grey-level window for PNGs in a normalisation's units."""
    if norm.get("type") == "percentile_brain":
        return -0.1, 1.2
    if norm.get("type") == "linear":
        return -1.0, 1.5
    return -2.5, 3.5


def _networks(args, cfg):
    from monai.networks.nets import PatchDiscriminator

    from MedAILib.tasks.synthesis.bundle import build_network

    chans = [int(c) for c in args.channels.split(",")]
    network_def = {"_target_": "MedAILib.tasks.synthesis.networks.ResidualUNet", "spatial_dims": 2, "in_channels": args.slices,
                   "out_channels": 1, "channels": chans, "strides": [2] * (len(chans) - 1),
                   "num_res_units": 1, "norm": "batch"}  # batch norm: sliding windows see the same statistics
    gen = build_network(network_def)
    disc = PatchDiscriminator(spatial_dims=2, channels=32, in_channels=args.slices + 1, out_channels=1,
                              num_layers_d=3, norm="INSTANCE")
    return network_def, gen, disc


class CaseData:
    """One training case in model space: normalised source/target (Z, Y, X), mask, and OOD features."""

    def __init__(self, pair, cfg):
        src_v, tgt_v, mask_v = pair.load()
        self.pair, self.source, self.target = pair, src_v, tgt_v
        img, self.src, self.mask = model_space_arrays(src_v, cfg)
        self.tgt = target_to_model_space(tgt_v, img, self.mask, cfg)
        self.stacks = slice_stacks(self.src, cfg["slices"])
        self.features = ood_features(src_v, img, self.src, self.mask)
        # A given mask (SynthRAD mask.nii.gz) only decides where training patches are taken; the
        # normalisation keeps the automatic mask because that is what inference can compute.
        self.sample_mask = self.mask
        self._fg_slices = None
        if mask_v is not None:
            m = sitk.Resample(sitk.Cast(to_sitk(mask_v), sitk.sitkFloat32), img, sitk.Transform(),
                              sitk.sitkNearestNeighbor, 0.0)
            given = sitk.GetArrayFromImage(m) > 0.5
            if given.any():
                self.sample_mask = given

    @property
    def fg_slices(self) -> np.ndarray:
        """Slices whose sampling mask covers at least 10 % of the largest slice's (training draws only these:
        the empty top and bottom slices of a 155-slice BraTS volume teach nothing)."""
        if self._fg_slices is None:
            area = self.sample_mask.reshape(self.sample_mask.shape[0], -1).sum(1)
            keep = np.nonzero(area >= 0.1 * area.max())[0] if area.max() > 0 else np.arange(len(area))
            self._fg_slices = keep
        return self._fg_slices


def _padded(case, patch):
    """(stacks, target, mask, foreground pixel lists per slice) padded once to at least ``patch`` in-plane."""
    cached = getattr(case, "_pad_cache", None)
    if cached is not None and cached[0] == patch:
        return cached[1]
    st = case.stacks
    pad = [(max(0, patch - s) // 2, max(0, patch - s) - max(0, patch - s) // 2) for s in st.shape[2:]]
    stacks = np.pad(st, [(0, 0), (0, 0)] + pad, mode="edge")
    tgt = np.pad(case.tgt, [(0, 0)] + pad, mode="edge")
    m = np.pad(case.sample_mask, [(0, 0)] + pad, mode="constant")
    fg = {int(z): np.argwhere(m[z]) for z in case.fg_slices}
    data = (stacks, tgt, fg)
    case._pad_cache = (patch, data)
    return data


def _sample_batch(cases, n, patch, rng, transforms, equal=False):
    srcs, tgts = [], []
    weights = np.array([1.0 if equal else c.src.shape[0] for c in cases], float)
    for _ in range(n):
        c = cases[rng.choice(len(cases), p=weights / weights.sum())]
        z = int(c.fg_slices[rng.integers(len(c.fg_slices))])
        stacks, tgt, fg = _padded(c, patch)
        st, tg = stacks[z], tgt[z][None]
        # crop around a random foreground pixel of the slice
        pts = fg[z]
        yc, xc = pts[rng.integers(len(pts))] if len(pts) else (st.shape[1] // 2, st.shape[2] // 2)
        y0 = int(np.clip(yc - patch // 2, 0, st.shape[1] - patch))
        x0 = int(np.clip(xc - patch // 2, 0, st.shape[2] - patch))
        d = {"src": st[:, y0:y0 + patch, x0:x0 + patch].astype(np.float32),
             "tgt": tg[:, y0:y0 + patch, x0:x0 + patch].astype(np.float32)}
        if transforms is not None:
            d = transforms(d)
        srcs.append(torch.as_tensor(np.asarray(d["src"])))
        tgts.append(torch.as_tensor(np.asarray(d["tgt"])))
    return torch.stack(srcs).float(), torch.stack(tgts).float()


def _augmentations(seed):
    from monai.transforms import (Compose, RandAdjustContrastd, RandAffined, RandFlipd, RandScaleIntensityd,
                                  RandShiftIntensityd)

    t = Compose([
        RandFlipd(keys=["src", "tgt"], prob=0.5, spatial_axis=1),  # left-right
        RandAffined(keys=["src", "tgt"], prob=0.5, rotate_range=0.2, scale_range=0.1, mode="bilinear",
                    padding_mode="border"),
        RandScaleIntensityd(keys="src", factors=0.1, prob=0.5),
        RandShiftIntensityd(keys="src", offsets=0.1, prob=0.5),
        # gamma-like contrast change on the source only: the model must not rely on exact contrast
        RandAdjustContrastd(keys="src", prob=0.3, gamma=(0.8, 1.25)),
    ])
    t.set_random_state(seed=seed)
    return t


def _to_u8(a, lo=-2.5, hi=3.5):
    return (np.clip((np.asarray(a, float) - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def save_sample_grid(path, rows, lo=-2.5, hi=3.5) -> None:
    """PNG with one row per (input, generated, real) triple of 2D arrays (grey window lo..hi)."""
    from PIL import Image

    tiles = [np.concatenate([_to_u8(a, lo, hi) for a in row], axis=1) for row in rows]
    w = max(t.shape[1] for t in tiles)
    tiles = [np.pad(t, ((0, 0), (0, w - t.shape[1]))) for t in tiles]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(tiles, axis=0)).save(path)


def _metadata(args, cfg, network_def, train_cases, val_cases, val_metrics, epoch, seconds) -> dict:
    name = args.name or f"{args.source.lower()}_to_{args.target.lower()}_gan"
    return {
        "name": name,
        "version": f"0.1.{epoch}",
        "task": "modality conversion (image-to-image GAN, pix2pix family)",
        "description": f"{args.source} -> {args.target} conversion, 2.5D residual UNet generator (MONAI), L1"
                       + (" + SSIM" if args.ssim_weight > 0 else "")
                       + (" + adversarial (PatchGAN discriminator)" if args.adv_weight > 0 else "") + " loss.",
        "monai_version": __import__("monai").__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "network_data_format": {
            "inputs": {"image": {"type": "image", "format": "magnitude", "modality": args.source,
                                 "num_channels": args.slices, "spatial_shape": [args.patch, args.patch],
                                 "dtype": "float32", "value_range": [cfg["source_norm"].get("type", "zscore_mask")],
                                 "is_patch_data": True,
                                 "channel_def": {str(i): f"slice {i - args.slices // 2:+d}" for i in range(args.slices)}}},
            "outputs": {"pred": {"type": "image", "format": "magnitude", "modality": args.target,
                                 "num_channels": 1, "spatial_shape": [args.patch, args.patch], "dtype": "float32",
                                 "value_range": [cfg["output_units"]], "is_patch_data": True,
                                 "channel_def": {"0": args.target}}},
        },
        "medai": {"task": "synthesis", "source": args.source, "target": args.target,
                  "units": cfg["output_units"]},
        "training": {"train_cases": train_cases, "val_cases": val_cases, "epochs": epoch,
                     "iters_per_epoch": args.iters_per_epoch, "batch_size": args.batch_size, "patch": args.patch,
                     "seconds": round(seconds, 1),
                     "command": getattr(args, "command_line", None)
                     or "python -m MedAILib.tasks.synthesis.trainer " + shlex.join(sys.argv[1:])},
        "validation": val_metrics,
    }


# ----------------------------------------------------------------------------------------------
def _inference_config(network_def, inferer, cfg) -> dict:
    return {
        "network_def": network_def,
        "network": "$@network_def.to(@device)",  # MONAI bundle convention; MedAI builds network_def itself
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "inferer": {"_target_": "SlidingWindowInferer", **inferer},
        "medai_synthesis": cfg,
    }


def load_cases(pairs, cfg, cache=None) -> dict:
    """case name -> CaseData; ``cache`` (a dict keyed by case and normalisation) avoids reloading across runs."""
    out = {}
    key_norm = json.dumps([cfg["source_norm"], cfg["target_norm"], cfg["pixel_mm"], cfg["slices"]], sort_keys=True)
    for p in pairs:
        key = (p.case, key_norm)
        if cache is not None and key in cache:
            out[p.case] = cache[key]
            continue
        c = CaseData(p, cfg)
        out[p.case] = c
        if cache is not None:
            cache[key] = c
    return out


def run(args, cache=None) -> int:
    """Train; ``cache`` (optional dict) keeps loaded cases between calls (leave-one-out drivers)."""
    from monai.losses import PatchAdversarialLoss, SSIMLoss
    from monai.utils import set_determinism

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.slices < 1 or args.slices % 2 == 0:
        raise InputError(f"--slices must be odd, got {args.slices}", "use 1, 3 or 5")
    set_determinism(seed=args.seed)
    out = Path(args.out)
    ckpt_path = out / "checkpoints" / "last.pt"
    if out.exists() and any(out.iterdir()) and not (args.resume or getattr(args, "overwrite", False)):
        raise OutputError(f"{out} already exists", "pass --overwrite to replace it, --resume to continue it, "
                                                   "or choose another folder")
    cfg = _cfg(args)
    specs = args.pairs if isinstance(args.pairs, (list, tuple)) else [args.pairs]
    pairs, seen = [], set()
    for spec in specs:
        for pr in find_pairs(spec, args.source, args.target):
            if pr.case in seen:
                raise InputError(f"case {pr.case} found twice (in {spec} and an earlier --pairs)",
                                 "give each case once")
            seen.add(pr.case)
            pairs.append(pr)
    val_names = [c for c in args.val_cases.split(",") if c]
    train_names = [c for c in args.train_cases.split(",") if c]
    missing = [c for c in val_names + train_names if c not in seen]
    if missing:
        raise InputError(f"case(s) {missing} not found among {[p.case for p in pairs]}", "check --val-cases/--train-cases")
    train_pairs = [p for p in pairs if p.case not in val_names and (not train_names or p.case in train_names)]
    val_pairs = [p for p in pairs if p.case in val_names]
    if not train_pairs:
        raise InputError("no training cases left after holding out the validation cases", "give more pairs")
    print(f"training on {[p.case for p in train_pairs]}, validating on {[p.case for p in val_pairs]}", flush=True)
    loaded = load_cases(train_pairs, cfg, cache)
    train = [loaded[p.case] for p in train_pairs]
    stats = ood.training_stats([c.features for c in train], [c.pair.case for c in train])
    val = [p.load() + (p.case,) for p in val_pairs]

    network_def, gen, disc = _networks(args, cfg)
    gen.to(args.device), disc.to(args.device)
    use_adv = args.adv_weight > 0
    opt_g = torch.optim.Adam(gen.parameters(), lr=args.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=args.lr_d, betas=(0.5, 0.999))
    adv = PatchAdversarialLoss(criterion="least_squares")
    lo, hi = display_range(cfg["target_norm"])
    ssim_loss = SSIMLoss(spatial_dims=2, data_range=hi - lo) if args.ssim_weight > 0 else None
    inferer = {"roi_size": [args.patch, args.patch], "sw_batch_size": 8, "overlap": 0.5, "mode": "gaussian",
               "padding_mode": "replicate"}

    start_epoch, seconds = 0, 0.0
    if args.resume:
        if not ckpt_path.exists():
            raise InputError(f"nothing to resume: {ckpt_path} does not exist", "run without --resume first")
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        gen.load_state_dict(ck["generator"]), disc.load_state_dict(ck["discriminator"])
        opt_g.load_state_dict(ck["opt_g"]), opt_d.load_state_dict(ck["opt_d"])
        start_epoch, seconds = int(ck["epoch"]), float(ck["seconds"])
        print(f"resumed after epoch {start_epoch}", flush=True)
    rng = np.random.default_rng(args.seed + start_epoch)
    transforms = None if args.no_augment else _augmentations(args.seed + start_epoch)
    fields = ["epoch", "g_l1", "g_adv", "g_ssim", "d_loss", "val_mae", "val_psnr", "val_ssim", "seconds"]
    log_rows = []
    if args.resume and (out / "train_log.csv").exists():
        log_rows = list(csv.reader(open(out / "train_log.csv", newline="")))[1:]
    samples = {f"samples/{q.name}": q.read_bytes() for q in sorted((out / "samples").glob("*.png"))} \
        if args.resume and (out / "samples").is_dir() else {}
    equal = getattr(args, "case_weighting", "equal") == "equal"

    val_metrics = {}
    for epoch in range(start_epoch + 1, args.epochs + 1):
        t0 = time.monotonic()
        gen.train(), disc.train()
        sums = {"g_l1": 0.0, "g_adv": 0.0, "g_ssim": 0.0, "d_loss": 0.0}
        for _ in range(args.iters_per_epoch):
            src, tgt = _sample_batch(train, args.batch_size, args.patch, rng, transforms, equal)
            src, tgt = src.to(args.device), tgt.to(args.device)
            fake = gen(src)
            d_loss = g_adv = torch.zeros(())
            if use_adv:  # discriminator step
                opt_d.zero_grad(set_to_none=True)
                d_real = disc(torch.cat([src, tgt], 1))[-1]
                d_fake = disc(torch.cat([src, fake.detach()], 1))[-1]
                d_loss = 0.5 * (adv(d_real, target_is_real=True, for_discriminator=True)
                                + adv(d_fake, target_is_real=False, for_discriminator=True))
                d_loss.backward()
                opt_d.step()
            # generator step
            opt_g.zero_grad(set_to_none=True)
            g_l1 = torch.nn.functional.l1_loss(fake, tgt)
            g_loss = args.l1_weight * g_l1
            if use_adv:
                g_adv = adv(disc(torch.cat([src, fake], 1))[-1], target_is_real=True, for_discriminator=False)
                g_loss = g_loss + args.adv_weight * g_adv
            g_ssim = torch.zeros(())
            if ssim_loss is not None:
                g_ssim = ssim_loss(fake, tgt)
                g_loss = g_loss + args.ssim_weight * g_ssim
            g_loss.backward()
            opt_g.step()
            for k, v in (("g_l1", g_l1), ("g_adv", g_adv), ("g_ssim", g_ssim), ("d_loss", d_loss)):
                sums[k] += float(v.detach()) / args.iters_per_epoch
        seconds += time.monotonic() - t0
        last = epoch == args.epochs or (args.max_minutes > 0 and seconds >= 60 * args.max_minutes)

        gen.eval()
        state = {k: v.cpu() for k, v in gen.state_dict().items()}
        inference = _inference_config(network_def, inferer, cfg)
        # Validate on whole volumes with exactly what ships: a bundle written the same way, in a scratch folder.
        rows, per_case = [], {}
        if val:
            with tempfile.TemporaryDirectory() as tmp:
                meta = _metadata(args, cfg, network_def, [c.pair.case for c in train], [v[3] for v in val], {},
                                 epoch, seconds)
                bundle = SynthesisBundle(write_bundle(Path(tmp) / "b", inference, meta, state,
                                                      extra_files={"configs/training_stats.json": stats}))
                for src_v, tgt_v, _, case in val:
                    res = synthesize(src_v, bundle, device=args.device)
                    m = score(res.volume, tgt_v, src_v, cfg["target_norm"])
                    per_case[case] = {k: round(float(v), 4) for k, v in m.items()}
                    z = src_v.shape[0] // 2
                    ref = reference_on_grid(tgt_v, src_v)
                    mask = mask_for(src_v.array, cfg["source_norm"])
                    rows.append([normalise(src_v.array, mask, cfg["source_norm"])[z], res.volume.array[z],
                                 normalise(ref, mask, cfg["target_norm"])[z] if cfg["target_norm"]["type"] != "linear"
                                 else ref[z]])
        else:  # no validation case: show a training slice
            c = train[0]
            z = c.src.shape[0] // 2
            with torch.no_grad():
                pred = predict_slices(gen, c.stacks[z:z + 1], None)
            rows.append([c.src[z], pred[0], c.tgt[z]])
        with tempfile.TemporaryDirectory() as tmp:
            save_sample_grid(Path(tmp) / "s.png", rows, lo, hi)
            samples[f"samples/epoch_{epoch:03d}.png"] = (Path(tmp) / "s.png").read_bytes()
        val_metrics = per_case
        mean = {k: float(np.mean([v[k] for v in per_case.values()])) if per_case else float("nan")
                for k in ("mae", "psnr", "ssim")}
        log_rows.append([epoch] + [round(sums[k], 5) for k in ("g_l1", "g_adv", "g_ssim", "d_loss")]
                        + [round(mean[k], 4) for k in ("mae", "psnr", "ssim")] + [round(seconds, 1)])
        meta = _metadata(args, cfg, network_def, [c.pair.case for c in train], [v[3] for v in val], val_metrics,
                         epoch, seconds)
        ck = _io.BytesIO()
        torch.save({"generator": gen.state_dict(), "discriminator": disc.state_dict(), "opt_g": opt_g.state_dict(),
                    "opt_d": opt_d.state_dict(), "epoch": epoch, "seconds": seconds}, ck)
        log_text = _io.StringIO()
        csv.writer(log_text).writerows([fields] + log_rows)
        write_bundle(out, inference, meta, state, overwrite=True,
                     extra_files={"configs/training_stats.json": stats, "checkpoints/last.pt": ck.getvalue(),
                                  "train_log.csv": log_text.getvalue(), **samples})
        print(f"epoch {epoch}/{args.epochs}: L1 {sums['g_l1']:.4f} SSIM-loss {sums['g_ssim']:.4f} adv {sums['g_adv']:.4f} "
              f"D {sums['d_loss']:.4f} val MAE {mean['mae']:.4f} PSNR {mean['psnr']:.2f} SSIM {mean['ssim']:.4f} "
              f"({seconds:.0f} s)", flush=True)
        if last:
            break
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m MedAILib.tasks.synthesis.trainer", description=__doc__.split("\n")[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
