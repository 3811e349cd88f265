"""A label-conditioned image generator (pix2pix-style conditional GAN, 3D) trained on a task's own
labelled cases, and the synthetic (image, label) pairs it makes for training a segmentation model.

``python -m MedAILib.tasks.augmentation.label_gan --datalist DL.json --out GEN_DIR [--max-minutes 4]``

- Generator: MONAI ``UNet`` (3D) from the one-hot label map (+ one channel of uniform noise) to the
  image, intensities scaled per case to 0..1 by the 0.5/99.5th percentiles. Discriminator: MONAI
  ``PatchDiscriminator`` (3D) on the pair (one-hot label, image), so it judges whether the image
  fits the label. Loss: L1 to the real image + ``adv_weight`` x least-squares adversarial term.
- New samples (:func:`synthesize`): a training label map is deformed (MONAI ``RandAffine``:
  rotation, scaling, shear; nearest neighbour, so it stays a label map) and the generator paints
  an image for the new shape. The pair is written on the source case's grid (NIfTI), so the
  segmentation trainer reads it like any case. Only the labelled training cases are used; the
  validation cases of the datalist are never seen.

The generator folder is a MONAI bundle (shared writer :mod:`MedAILib.models.bundle_writer`):
``configs/inference.json`` holds ``network_def`` and ``medai_augmentation`` (label values, channels).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from MedAILib.core.errors import InputError, ModelError

PATCH = (32, 32, 32)


def generator_def(n_labels: int, n_channels: int, channels=(16, 32, 64)) -> dict:
    return {"_target_": "UNet", "spatial_dims": 3, "in_channels": n_labels + 1, "out_channels": n_channels,
            "channels": list(channels), "strides": [2] * (len(channels) - 1), "num_res_units": 1,
            "norm": "instance"}


def discriminator(n_labels: int, n_channels: int):
    from monai.networks.nets import PatchDiscriminator

    return PatchDiscriminator(spatial_dims=3, num_layers_d=2, channels=16, in_channels=n_labels + n_channels,
                              out_channels=1, norm="INSTANCE")


def _build(net_def: dict) -> torch.nn.Module:
    from monai.bundle import ConfigParser

    return ConfigParser({"imports": ["$import monai"], "g": {**net_def, "_target_": "monai.networks.nets.UNet"}}
                        ).get_parsed_content("g")


def _read_case(item: dict) -> tuple:
    """(image CxKxJxI float 0..1, label KxJxI int, label Volume) for one datalist entry."""
    from MedAILib.io import read_image

    files = item["image"] if isinstance(item["image"], list) else [item["image"]]
    lab = read_image(item["label"])
    chans = []
    for f in files:
        v = read_image(f)
        if v.array.shape != lab.array.shape:
            raise InputError(f"{f}: image grid {v.array.shape} differs from its label's {lab.array.shape}",
                             "label-conditioned augmentation needs each image on its label's grid")
        a = v.array.astype(np.float32)
        lo, hi = np.percentile(a, (0.5, 99.5))
        chans.append(np.clip((a - float(lo)) / float(hi - lo if hi > lo else 1.0), 0, 1.2).astype(np.float32))
    return np.stack(chans), np.rint(lab.array).astype(np.int64), lab


def _onehot(label: np.ndarray, values: list) -> np.ndarray:
    return np.stack([(label == v) for v in values]).astype(np.float32)


def _pad_crop(arrs: list, rng, size=PATCH) -> list:
    """Same random crop (after padding up to ``size``) of each channel-first array."""
    shape = arrs[0].shape[1:]
    pads = [(0, 0)] + [(0, max(0, s - d)) for s, d in zip(size, shape)]
    arrs = [np.pad(a, pads, mode="edge") for a in arrs]
    shape = arrs[0].shape[1:]
    start = [int(rng.integers(0, d - s + 1)) for s, d in zip(size, shape)]
    sl = (slice(None),) + tuple(slice(b, b + s) for b, s in zip(start, size))
    return [np.ascontiguousarray(a[sl]) for a in arrs]


def train_label_gan(items: list, out_dir, max_minutes: float = 4.0, iterations: int = 4000, adv_weight: float = 0.05,
                    batch_size: int = 2, lr: float = 2e-4, seed: int = 0, overwrite: bool = False, log=print) -> dict:
    """Train on the datalist entries ``items`` (training cases only) and write the generator bundle."""
    from MedAILib.core.errors import OutputError

    if Path(out_dir).exists() and not overwrite:
        raise OutputError(f"{out_dir} already exists", "pass --overwrite to replace it, or choose another folder")
    if not items:
        raise InputError("no labelled training cases for the generator", "give a datalist with a 'training' list")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    t0 = time.monotonic()
    cases = [_read_case(it)[:2] for it in items]
    values = sorted({int(v) for _, lab in cases for v in np.unique(lab)})
    if 0 not in values:
        values = [0] + values
    n_ch = cases[0][0].shape[0]
    net_def = generator_def(len(values), n_ch)
    g, d = _build(net_def), discriminator(len(values), n_ch)
    opt_g = torch.optim.Adam(g.parameters(), lr=lr * 5, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=lr, betas=(0.5, 0.999))
    l1, mse = torch.nn.L1Loss(), torch.nn.MSELoss()
    hist = {"l1": [], "adv": [], "d": []}
    done = 0
    for it in range(iterations):
        if time.monotonic() - t0 > max_minutes * 60:
            log(f"stopping at iteration {it}: the {max_minutes} min budget is used up")
            break
        xs, ys = [], []
        for n in rng.integers(0, len(cases), batch_size):
            img, lab = cases[n]
            oh, img = _pad_crop([_onehot(lab, values), img], rng)
            xs.append(np.concatenate([oh, rng.random((1, *PATCH), dtype=np.float32)]))
            ys.append(img)
        x, y = torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))
        fake = g(x)
        cond = x[:, :-1]
        opt_d.zero_grad()
        pr, pf = d(torch.cat([cond, y], 1))[-1], d(torch.cat([cond, fake.detach()], 1))[-1]
        loss_d = 0.5 * (mse(pr, torch.ones_like(pr)) + mse(pf, torch.zeros_like(pf)))
        loss_d.backward()
        opt_d.step()
        opt_g.zero_grad()
        pg = d(torch.cat([cond, fake], 1))[-1]
        loss_l1, loss_adv = l1(fake, y), mse(pg, torch.ones_like(pg))
        (loss_l1 + adv_weight * loss_adv).backward()
        opt_g.step()
        for k, v in (("l1", loss_l1), ("adv", loss_adv), ("d", loss_d)):
            hist[k].append(float(v.detach()))
        done = it + 1
        if done % 50 == 0:
            log(f"iteration {done}: L1 {np.mean(hist['l1'][-50:]):.4f}, adv {np.mean(hist['adv'][-50:]):.3f}, "
                f"D {np.mean(hist['d'][-50:]):.3f} ({time.monotonic() - t0:.0f} s)")
    info = {"n_cases": len(items), "cases": [str(it.get("id") or Path(str(it["label"])).name) for it in items],
            "label_values": values, "n_channels": n_ch, "iterations": done, "batch_size": batch_size,
            "patch": list(PATCH), "adv_weight": adv_weight, "seed": seed,
            "train_seconds": round(time.monotonic() - t0, 1),
            "final_l1": float(np.mean(hist["l1"][-50:])) if hist["l1"] else None}
    write_generator(out_dir, net_def, g.state_dict(), info, overwrite=overwrite)
    return info


def write_generator(out_dir, net_def: dict, state_dict: dict, info: dict, overwrite: bool = False) -> Path:
    from MedAILib.models.bundle_writer import write_bundle

    inference = {"imports": ["$import torch"], "bundle_root": ".", "network_def": net_def,
                 "medai_augmentation": {"kind": "label_to_image", "label_values": info["label_values"],
                                        "n_channels": info["n_channels"], "intensity": "per-case 0.5-99.5 percentile -> 0..1"}}
    meta = {"version": "0.1.0", "name": "MedAI label-conditioned image generator (augmentation)",
            "task": "synthetic training images from label maps", "authors": "the user who trained it (with MedAI)",
            "intended_use": "Training-data augmentation for research; not a medical device.", "training": info,
            "network_data_format": {"inputs": {"label": {"type": "image", "num_channels": len(info["label_values"]) + 1}},
                                    "outputs": {"image": {"type": "image", "num_channels": info["n_channels"]}}}}
    card = ("# Label-conditioned image generator\n\nConditional GAN (3D UNet generator, PatchGAN discriminator on "
            "(label, image)) trained by `python -m MedAILib.tasks.augmentation.label_gan` on the user's labelled "
            "training cases. It paints images for (deformed) label maps to augment segmentation training.\n\n"
            "```json\n" + json.dumps(info, indent=2) + "\n```\n")
    return write_bundle(out_dir, inference, meta, state_dict, card=card, overwrite=overwrite)


def load_generator(model_dir) -> tuple:
    """(generator network in eval mode, medai_augmentation settings)."""
    p = Path(model_dir)
    cfg_path, w = p / "configs" / "inference.json", p / "models" / "model.pt"
    if not cfg_path.is_file() or not w.is_file():
        raise ModelError(f"{p} is not a generator folder (configs/inference.json and models/model.pt needed)",
                         "train one with `python -m MedAILib.tasks.augmentation.label_gan`")
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    settings = cfg.get("medai_augmentation")
    if not isinstance(settings, dict) or settings.get("kind") != "label_to_image":
        raise ModelError(f"{p} is not a label-conditioned generator (no medai_augmentation section)",
                         "train one with `python -m MedAILib.tasks.augmentation.label_gan`")
    g = _build(cfg["network_def"])
    g.load_state_dict(torch.load(w, map_location="cpu", weights_only=True))
    return g.eval(), settings


def generate(g, settings: dict, label: np.ndarray, rng) -> np.ndarray:
    """Image (C x K x J x I, 0..1 scale) the generator paints for one label map (K x J x I)."""
    from monai.inferers import SlidingWindowInferer

    oh = _onehot(label, settings["label_values"])
    x = torch.from_numpy(np.concatenate([oh, rng.random((1, *label.shape), dtype=np.float32)])[None])
    inferer = SlidingWindowInferer(roi_size=PATCH, sw_batch_size=4, overlap=0.5, mode="gaussian",
                                   padding_mode="replicate")
    with torch.inference_mode():
        return np.clip(inferer(x, g)[0].numpy(), 0, None)


def deform_label(label: np.ndarray, rng, rotate: float = 0.26, scale: float = 0.12, shear: float = 0.1) -> np.ndarray:
    """A new label shape: random rotation/scale/shear of a training label (nearest neighbour)."""
    from monai.transforms import RandAffine

    t = RandAffine(prob=1.0, rotate_range=[rotate] * 3, scale_range=[scale] * 3, shear_range=[shear] * 6,
                   mode="nearest", padding_mode="zeros")
    t.set_random_state(seed=int(rng.integers(0, 2**31 - 1)))
    return np.asarray(t(torch.from_numpy(label[None].astype(np.float32)))[0]).round().astype(label.dtype)


def synthesize(model_dir, items: list, n: int, out_dir, seed: int = 0) -> list:
    """``n`` synthetic cases (deformed training labels + generated images) written under ``out_dir``
    as NIfTI on their source case's grid; returns datalist entries ``{"image", "label", "id"}`` (entry ``k`` comes from ``items[k % len(items)]``)."""
    from MedAILib.core.volume import Volume
    from MedAILib.io import write_image

    g, settings = load_generator(model_dir)
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for k in range(n):
        item = items[k % len(items)]
        _, lab, lab_vol = _read_case(item)
        unknown = sorted(set(np.unique(lab).tolist()) - set(settings["label_values"]))
        if unknown:
            raise InputError(f"{item['label']}: label values {unknown} were not in the generator's training labels",
                             "train the generator on the same label set")
        new_lab = deform_label(lab, rng)
        img = generate(g, settings, new_lab, rng)
        stem = f"synthetic_{k:03d}"
        imgs = []
        for c in range(img.shape[0]):
            p = out_dir / (f"{stem}_{c:04d}.nii.gz" if img.shape[0] > 1 else f"{stem}.nii.gz")
            write_image(Volume(img[c].astype(np.float32), lab_vol.ijk_to_ras.copy()), p)
            imgs.append(str(p))
        lp = out_dir / f"{stem}_label.nii.gz"
        write_image(Volume(new_lab.astype(np.uint8), lab_vol.ijk_to_ras.copy()), lp)
        entries.append({"image": imgs if len(imgs) > 1 else imgs[0], "label": str(lp), "id": stem})
    return entries


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """Options (``medai train`` convention: ``add_arguments(parser)`` and ``run(args)``)."""
    ap.add_argument("--datalist", required=True, help="MONAI datalist JSON: only its 'training' cases are used")
    ap.add_argument("--out", required=True, help="generator folder to write")
    ap.add_argument("--max-minutes", type=float, default=4.0)
    ap.add_argument("--adv-weight", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")


def run(a: argparse.Namespace) -> int:
    from MedAILib.tasks.segmentation import planning

    torch.set_num_threads(1)
    dl = planning.read_datalist(a.datalist)
    info = train_label_gan(dl["training"], a.out, max_minutes=a.max_minutes, adv_weight=a.adv_weight, seed=a.seed,
                           overwrite=a.overwrite, log=lambda m: print(m, flush=True))
    print(json.dumps(info, indent=2))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(ap)
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
