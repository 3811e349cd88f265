"""Denoising benchmark: the shipped MR denoising GAN against the classical filters (Gaussian, median,
anisotropic diffusion; SimpleITK, each with its best parameter chosen on a TRAINING subject) on the
held-out BraTS subject (BraTS-GLI-00001-000, never used in training) with added Rician noise at
sigma 3, 5 and 8 % of each volume's 99.5th percentile: PSNR and SSIM per method, per volume and
averaged, plus a PNG (noisy / GAN / classical / clean side by side).

    OMP_NUM_THREADS=1 python Testing/Benchmarks/bench_denoising.py [--data DIR] [--model NAME=BUNDLE ...]
        [--png denoising.png] [--json denoising.json]

Real images only (``$MEDAI_DATA_DIR/brainlesion-brats-examples``; see SOURCES.md section 6); the
noise is simulated with the physics of MR magnitude images (:mod:`MedAILib.tasks.denoising.noise`).
The method itself is :mod:`MedAILib.tasks.denoising.evaluate`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "MedAI"))
SHIPPED = ROOT / "MedAI/MedAILib/resources/Models/mr_denoising_gan"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=os.environ.get("MEDAI_DATA_DIR", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--model", nargs="+", default=[f"GAN={SHIPPED}"], help="NAME=BUNDLE (default: the shipped GAN)")
    ap.add_argument("--png", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    from MedAILib.tasks.denoising import evaluate

    args = ["--data", a.data, "--model", *a.model, "--seed", str(a.seed)]
    if a.png:
        args += ["--png", a.png]
    if a.json:
        args += ["--json", a.json]
    return evaluate.main(args)


if __name__ == "__main__":
    raise SystemExit(main())
