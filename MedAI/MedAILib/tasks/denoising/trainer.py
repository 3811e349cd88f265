"""Train the MR denoising GAN on real brain MR with added Rician noise, and write it as a bundle.

``python -m MedAILib.tasks.denoising.trainer --data ../shared/data --out BUNDLE``

Data: the BraTS-style examples (brainlesion-brats-examples: real, skull-stripped, 1 mm) of
BraTS-GLI-00000, BraTS-MET-00110 and TCGA-FG-6692 (T1, T1c, T2, FLAIR each: 12 volumes) for
training; BraTS-GLI-00001 is held out for :mod:`.evaluate`. Each volume is scaled by its 99.5th
intensity percentile inside the head; training pairs are 64 x 64 axial patches inside the brain
with Rician noise of sigma 2-10 % of that scale (a fresh draw every time), so one model serves a
range of noise levels.

Loss (pix2pix-style conditional GAN): generator L1 to the clean patch + 0.01 x least-squares
adversarial term from a PatchGAN that sees (noisy, candidate). ``--adv-weight 0`` trains the same
generator without the adversarial term (the ablation).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from MedAILib.tasks.denoising.networks import FEATURES, discriminator, generator_def
from MedAILib.tasks.denoising.noise import rician

BRATS = "brainlesion-brats-examples"
TRAIN_SUBJECTS = ("BraTS-GLI-00000-000", "BraTS-MET-00110-000", "TCGA-FG-6692")
TEST_SUBJECTS = ("BraTS-GLI-00001-000",)
PATCH = 64
SIGMA_RANGE = (0.02, 0.10)
CHANNELS = FEATURES  # BasicUNet features (see networks.py)


def subject_volumes(data_root, subject: str) -> list:
    """The four contrasts of one subject (paths)."""
    base = Path(data_root) / BRATS / subject
    if subject.startswith("TCGA"):
        return sorted((base / "preprocessed").glob("*_bet.nii.gz"))
    return sorted(p for p in base.glob("*.nii.gz") if not p.name.endswith("-seg.nii.gz"))


def load_scaled(path) -> np.ndarray:
    """KJI float32 array scaled by its 99.5th percentile inside the head (the bundle's intensity rule)."""
    from MedAILib.io import read_image
    from MedAILib.tasks.denoising.pipeline import intensity_scale

    a = read_image(path).array.astype(np.float32)
    off, s = intensity_scale(a, {"type": "percentile", "value": 99.5})
    return (a - off) / s


def training_slices(data_root, subjects=TRAIN_SUBJECTS, min_brain: float = 0.15) -> list:
    out = []
    for subj in subjects:
        for p in subject_volumes(data_root, subj):
            a = load_scaled(p)
            for k in range(a.shape[0]):
                if np.mean(a[k] > 0.05) >= min_brain:
                    out.append(np.ascontiguousarray(a[k]))
    return out


def build_generator(channels=CHANNELS) -> torch.nn.Module:
    from monai.bundle import ConfigParser

    return ConfigParser({"g": generator_def(channels)}).get_parsed_content("g")


def inference_config(channels=CHANNELS) -> dict:
    return {"imports": ["$import torch"], "bundle_root": ".",
            "network_def": generator_def(channels),
            "medai_denoising": {"modality": "MR", "noise": "rician", "slice_axis": "K",
                                "intensity": {"type": "percentile", "value": 99.5},
                                "trained_sigma_fraction": list(SIGMA_RANGE)}}


def metadata(info: dict, metrics: dict = None) -> dict:
    return {"version": "0.1.0", "monai_version": "1.6.1", "pytorch_version": "2.13.0",
            "name": "MedAI MR denoising GAN (Rician noise)", "task": "MR magnitude image denoising",
            "description": __doc__.split("\n\n")[1].replace("\n", " "), "authors": "MedAI contributors",
            "data_source": "brainlesion-brats-examples (BraTS 2023 examples, TCGA-FG-6692): BraTS/TCIA data terms",
            "intended_use": "Research and demonstration only; not a medical device.",
            "eval_metrics": metrics or {}, "training": info,
            "network_data_format": {"inputs": {"image": {"type": "image", "modality": "MR", "num_channels": 1,
                                                         "spatial_shape": ["16*n", "16*n"], "dtype": "float32"}},
                                    "outputs": {"pred": {"type": "image", "num_channels": 1,
                                                         "spatial_shape": ["16*n", "16*n"], "dtype": "float32"}}}}


def model_card(info: dict, metrics: dict = None) -> str:
    lines = ["# MedAI MR denoising GAN (Rician noise)", "",
             "Conditional GAN (residual U-Net generator, PatchGAN discriminator on (noisy, candidate) pairs),",
             "trained on real brain MR with simulated Rician noise. Research and demonstration only.", "",
             "## Training", "", "```json", json.dumps(info, indent=2), "```"]
    if metrics:
        lines += ["", "## Evaluation (held-out subject)", "", "```json", json.dumps(metrics, indent=2), "```"]
    return "\n".join(lines) + "\n"


LICENSE_TEXT = ("Weights trained on brain MR examples distributed under the BraTS / TCIA data terms "
                "(see ../shared/data/SOURCES.md section 6). Configs: Apache-2.0 (MedAI).\n")


def write_bundle(out_dir, state_dict: dict, info: dict, metrics: dict = None, channels=CHANNELS,
                 overwrite: bool = False) -> Path:
    """The bundle through the shared atomic writer (:func:`MedAILib.models.bundle_writer.write_bundle`)."""
    from MedAILib.models.bundle_writer import write_bundle as shared_write_bundle

    return shared_write_bundle(out_dir, inference_config(channels), metadata(info, metrics), state_dict,
                               card=model_card(info, metrics), license_text=LICENSE_TEXT, overwrite=overwrite)


def _batch(slices, rng, batch_size):
    xs, ys = [], []
    for n in rng.integers(0, len(slices), batch_size):
        s = slices[n]
        for _ in range(10):  # a patch with some brain in it
            j, i = rng.integers(0, s.shape[0] - PATCH + 1), rng.integers(0, s.shape[1] - PATCH + 1)
            clean = s[j:j + PATCH, i:i + PATCH]
            if np.mean(clean > 0.05) > 0.3:
                break
        if rng.random() < 0.5:
            clean = clean[:, ::-1]
        sigma = rng.uniform(*SIGMA_RANGE)
        xs.append(rician(clean, sigma, rng))
        ys.append(np.ascontiguousarray(clean, dtype=np.float32))
    return torch.from_numpy(np.stack(xs)[:, None]), torch.from_numpy(np.stack(ys)[:, None])


def train(data_root, out_dir, adv_weight: float = 0.01, batch_size: int = 8, lr: float = 2e-4,
          max_minutes: float = 7.0, iterations: int = 5000, seed: int = 0, log=print,
          overwrite: bool = False, init=None) -> dict:
    from MedAILib.core.errors import OutputError

    if Path(out_dir).exists() and not overwrite:
        raise OutputError(f"{out_dir} already exists", "pass --overwrite to replace it, or choose another folder")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    t0 = time.monotonic()
    slices = training_slices(data_root)
    log(f"{len(slices)} training slices from {len(TRAIN_SUBJECTS)} subjects x 4 contrasts")
    g = build_generator()
    prior = {}
    if init:  # continue from an earlier run's generator (same architecture): its record is kept
        w = Path(init) / "models" / "model.pt"
        g.load_state_dict(torch.load(w, map_location="cpu", weights_only=True))
        prior = json.loads((Path(init) / "configs" / "metadata.json").read_text(encoding="utf-8")).get("training", {})
        log(f"continuing from {init} ({prior.get('iterations')} iterations, {prior.get('train_seconds')} s)")
    d = discriminator() if adv_weight > 0 else None
    opt_g = torch.optim.Adam(g.parameters(), lr=lr * 5, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=lr, betas=(0.5, 0.999)) if d is not None else None
    l1 = torch.nn.L1Loss()
    mse = torch.nn.MSELoss()
    budget = max_minutes * 60
    hist, done = {"l1": [], "adv": [], "d": []}, 0
    for it in range(iterations):
        if time.monotonic() - t0 > budget:
            log(f"stopping at iteration {it}: the {max_minutes} min budget is used up")
            break
        frac = min(1.0, (time.monotonic() - t0) / budget)
        for opt in (opt_g, opt_d):
            if opt is not None:
                for grp in opt.param_groups:
                    grp.setdefault("base_lr", grp["lr"])
                    grp["lr"] = grp["base_lr"] * (0.5 * (1 + np.cos(np.pi * frac)))
        noisy, clean = _batch(slices, rng, batch_size)
        fake = g(noisy)
        if d is not None:  # discriminator: real pairs -> 1, generated pairs -> 0 (least squares)
            opt_d.zero_grad()
            pr = d(torch.cat([noisy, clean], 1))[-1]
            pf = d(torch.cat([noisy, fake.detach()], 1))[-1]
            loss_d = 0.5 * (mse(pr, torch.ones_like(pr)) + mse(pf, torch.zeros_like(pf)))
            loss_d.backward()
            opt_d.step()
            hist["d"].append(float(loss_d.detach()))
        opt_g.zero_grad()
        loss_l1 = l1(fake, clean)
        loss = loss_l1
        if d is not None:
            pg = d(torch.cat([noisy, fake], 1))[-1]
            loss_adv = mse(pg, torch.ones_like(pg))
            loss = loss + adv_weight * loss_adv
            hist["adv"].append(float(loss_adv.detach()))
        loss.backward()
        opt_g.step()
        hist["l1"].append(float(loss_l1.detach()))
        done = it + 1
        if done % 50 == 0:
            log(f"iteration {done}: L1 {np.mean(hist['l1'][-50:]):.4f}"
                + (f", adv {np.mean(hist['adv'][-50:]):.3f}, D {np.mean(hist['d'][-50:]):.3f}" if d else "")
                + f" ({time.monotonic() - t0:.0f} s)")
    info = {"subjects": list(TRAIN_SUBJECTS), "slices": len(slices), "iterations": done, "batch_size": batch_size,
            "patch": PATCH, "sigma_fraction": list(SIGMA_RANGE), "adv_weight": adv_weight, "lr_g": lr * 5, "lr_d": lr,
            "seed": seed, "train_seconds": round(time.monotonic() - t0, 1),
            "final_l1": float(np.mean(hist["l1"][-50:])) if hist["l1"] else None, "channels": list(CHANNELS)}
    if prior:
        info["continued_from"] = prior
        info["total_iterations"] = done + int(prior.get("total_iterations") or prior.get("iterations") or 0)
        info["total_train_seconds"] = round(info["train_seconds"] + float(prior.get("total_train_seconds")
                                                                          or prior.get("train_seconds") or 0), 1)
    write_bundle(out_dir, g.state_dict(), info, overwrite=overwrite)
    return info


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """Options (``medai train`` convention: ``add_arguments(parser)`` and ``run(args)``)."""
    ap.add_argument("--data", required=True, help="the shared data folder (holds brainlesion-brats-examples)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--adv-weight", type=float, default=0.01)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-minutes", type=float, default=7.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out bundle")
    ap.add_argument("--init", help="continue from this bundle's generator (an earlier run of this trainer)")


def run(a: argparse.Namespace) -> int:
    torch.set_num_threads(1)
    info = train(a.data, a.out, a.adv_weight, a.batch_size, max_minutes=a.max_minutes, seed=a.seed,
                 log=lambda m: print(m, flush=True), overwrite=a.overwrite, init=a.init)
    print(json.dumps(info, indent=2))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(ap)
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
