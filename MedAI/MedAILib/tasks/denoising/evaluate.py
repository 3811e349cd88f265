"""Denoising GAN vs classical filters on held-out real MR with added Rician noise: PSNR and SSIM.

``python -m MedAILib.tasks.denoising.evaluate --data ../shared/data --model BUNDLE [--png OUT.png]``

Held-out subject (never seen in training): its four contrasts, a 48-slice slab through the middle
of the brain, cropped to the head. Noise: Rician with sigma 3, 5 and 8 % of the volume's 99.5th
percentile. Classical filters (SimpleITK, :mod:`MedAILib.tasks.preprocessing.steps`) get their best
parameter, chosen by PSNR on a training subject at each noise level (so they are tuned, not
defaults). PSNR and SSIM (per slice, MONAI) are computed inside the head mask (clean > 0) on
intensities scaled by the 99.5th percentile, data range = the clean image's range in the mask.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from MedAILib.tasks.denoising.noise import rician
from MedAILib.tasks.denoising.trainer import TEST_SUBJECTS, TRAIN_SUBJECTS, load_scaled, subject_volumes

SIGMAS = (0.03, 0.05, 0.08)
CLASSICAL_GRID = {"gaussian": [{"sigma_mm": s} for s in (0.5, 0.75, 1.0, 1.5)],
                  "median": [{"radius": r} for r in (1, 2)],
                  "anisotropic": [{"iterations": n, "conductance": c} for n in (5, 10) for c in (0.5, 1.0, 2.0)]}


def slab(a: np.ndarray, n: int = 48) -> np.ndarray:
    """The middle ``n`` slices, cropped to the head's bounding box (+4 voxels)."""
    k0 = max(0, a.shape[0] // 2 - n // 2)
    a = a[k0:k0 + n]
    j, i = np.nonzero((a > 0.02).any(0))
    return np.ascontiguousarray(a[:, max(0, j.min() - 4):j.max() + 5, max(0, i.min() - 4):i.max() + 5])


def _volume(a):
    from MedAILib.core.volume import Volume

    return Volume(a.astype(np.float32), np.eye(4))  # 1 mm isotropic (BraTS): spacing matters to the filters


def classical(noisy: np.ndarray, method: str, params: dict) -> np.ndarray:
    from MedAILib.tasks.preprocessing.steps import denoise

    return denoise(_volume(noisy), method, **params).array


def metrics(x, clean) -> dict:
    from MedAILib.tasks.synthesis.metrics import image_metrics

    m = image_metrics(x, clean, mask=clean > 0)
    return {"psnr": round(m["psnr"], 3), "ssim": round(m["ssim"], 4)}


def tune_classical(data_root, sigma: float, rng) -> dict:
    """Best parameters per method by PSNR on one training volume (T1 of the first training subject)."""
    clean = slab(load_scaled(subject_volumes(data_root, TRAIN_SUBJECTS[0])[1]), 32)
    noisy = rician(clean, sigma, rng)
    best = {}
    for method, grid in CLASSICAL_GRID.items():
        scored = [(metrics(classical(noisy, method, p), clean)["psnr"], p) for p in grid]
        best[method] = max(scored, key=lambda s: s[0])[1]
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", nargs="+", required=True, help="bundle folder(s): NAME=PATH or PATH")
    ap.add_argument("--png")
    ap.add_argument("--json")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    import torch

    from MedAILib.models.bundle import Bundle
    from MedAILib.tasks.denoising.pipeline import denoise_array

    torch.set_num_threads(1)
    models = {}
    for spec in a.model:
        name, _, path = spec.rpartition("=")
        models[name or "GAN"] = Bundle(path).network  # written by our trainer: no trust prompt
    rng = np.random.default_rng(a.seed)
    results, example = [], None
    for sigma in SIGMAS:
        params = tune_classical(a.data, sigma, rng)
        for path in [p for s in TEST_SUBJECTS for p in subject_volumes(a.data, s)]:
            clean = slab(load_scaled(path))
            noisy = rician(clean, sigma, rng)
            row = {"volume": Path(path).name, "sigma": sigma, "noisy": metrics(noisy, clean)}
            outs = {"noisy": noisy}
            for method, p in params.items():
                outs[method] = classical(noisy, method, p)
                row[method] = dict(metrics(outs[method], clean), params=p)
            for name, net in models.items():
                outs[name] = np.maximum(denoise_array(net, noisy, 0.0, 1.0), 0)
                row[name] = metrics(outs[name], clean)
            results.append(row)
            print(json.dumps(row), flush=True)
            if sigma == 0.05 and example is None:
                from MedAILib.io import read_image

                example = (clean, outs, Path(path).name, None, read_image(path).ijk_to_ras)
    methods = ["noisy", *CLASSICAL_GRID, *models]
    summary = {}
    for sigma in SIGMAS:
        rows = [r for r in results if r["sigma"] == sigma]
        summary[str(sigma)] = {m: {"psnr": round(float(np.mean([r[m]["psnr"] for r in rows])), 2),
                                   "ssim": round(float(np.mean([r[m]["ssim"] for r in rows])), 4)} for m in methods}
    print(json.dumps(summary, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps({"summary": summary, "rows": results}, indent=2), encoding="utf-8")
    if a.png and example is not None:
        clean, outs, name, _, m = example
        comparison_png(clean, outs, name, a.png, ijk_to_ras=m)
    return 0


def comparison_png(clean, outs: dict, name: str, path, ijk_to_ras=None) -> Path:
    """Noisy / GAN / classical filters / clean, the same axial slice side by side, PSNR / SSIM in the
    titles. Slices are oriented by :mod:`MedAILib.io.preview`'s helpers (radiological display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from MedAILib.core.volume import Volume
    from MedAILib.io.preview import _to_ras_array, _view, save_figure

    m = np.eye(4) if ijk_to_ras is None else np.asarray(ijk_to_ras, float)
    panels = list(outs.items()) + [("clean", clean)]
    shown = [_to_ras_array(Volume(np.asarray(a, np.float32), m)) for _, a in panels]
    k = shown[0].shape[2] // 2
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 3.3))
    for ax, (title, a), r in zip(axes, panels, shown):
        ax.imshow(_view(r, 2, k), cmap="gray", vmin=0, vmax=1.0, interpolation="nearest")
        if title != "clean":
            mt = metrics(a, clean)
            title = f"{title}\n{mt['psnr']:.1f} dB / SSIM {mt['ssim']:.3f}"
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    return save_figure(fig, path, f"{name} (held out), Rician sigma 5 % of the 99.5th percentile: PSNR / SSIM "
                                  "inside the head", dpi=90, title_size=9)


if __name__ == "__main__":
    raise SystemExit(main())
