"""PNG figures for docs/clinical.md, made from real data with the real commands:

- docs/images/tta_uncertainty_hippocampus_003.png: `medai segment --tta` on MSD hippocampus_003 —
  three axial slices: the image, the labels' outlines, the uncertainty (normalised entropy) overlay;
- docs/images/surfaces_hippocampus_003.png: the two `--surfaces` meshes (RAS), rendered.

    MEDAI_DATA_DIR=../shared/data .venv/bin/python Testing/tools/clinical_figures.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "MedAI"))


def main() -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    from MedAILib.cli import main as medai
    from MedAILib.core.paths import data_dir
    from MedAILib.io import read_image, read_segmentation
    from MedAILib.io.surfaces import segment_mesh

    case = "hippocampus_003"
    image_file = data_dir() / "msd-hippocampus" / "imagesTr" / f"{case}.nii.gz"
    out_dir = REPO / "docs" / "images"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rc = medai(["segment", str(image_file), "-o", str(tmp / f"{case}.seg.nrrd"), "--tta", "--surfaces",
                    str(tmp / "surf"), "--surface-space", "RAS", "--device", "cpu", "--progress", "none"])
        if rc:
            return rc
        img = read_image(image_file).array
        lab = read_segmentation(tmp / f"{case}.seg.nrrd")
        unc = read_image(tmp / f"{case}.uncertainty.nii.gz").array
        ks = np.linspace(np.argwhere(lab.array > 0)[:, 0].min() + 2, np.argwhere(lab.array > 0)[:, 0].max() - 2, 3)
        fig, axes = plt.subplots(1, 3, figsize=(11, 4.2))
        for ax, k in zip(axes, ks.astype(int)):
            ax.imshow(img[k], cmap="gray", origin="lower")
            shown = np.ma.masked_less(unc[k], 0.02)
            im = ax.imshow(shown, cmap="inferno", vmin=0, vmax=1, alpha=0.8, origin="lower")
            for v, colour in ((1, "#dc6432"), (2, "#3ca0e6")):
                ax.contour(lab.array[k] == v, levels=[0.5], colors=colour, linewidths=1.2, origin="lower")
            ax.set_title(f"slice K={k}")
            ax.axis("off")
        fig.colorbar(im, ax=axes, shrink=0.8, label="uncertainty (normalised entropy)")
        fig.suptitle(f"medai segment --tta on {case}: outlines anterior (orange) / posterior (blue)")
        fig.savefig(out_dir / f"tta_uncertainty_{case}.png", dpi=110)
        plt.close(fig)
        fig = plt.figure(figsize=(6, 5))
        ax = fig.add_subplot(projection="3d")
        for v, colour in ((1, (0.863, 0.392, 0.196)), (2, (0.235, 0.627, 0.902))):
            verts, faces = segment_mesh(lab, v, space="RAS")
            ax.add_collection3d(Poly3DCollection(verts[faces], facecolors=[colour] * len(faces), alpha=0.9,
                                                 shade=True))
        allv = np.vstack([segment_mesh(lab, v, space="RAS")[0] for v in (1, 2)])
        for set_lim, axis in zip((ax.set_xlim, ax.set_ylim, ax.set_zlim), allv.T):
            set_lim(axis.min(), axis.max())
        ax.set_xlabel("R (mm)"), ax.set_ylabel("A (mm)"), ax.set_zlabel("S (mm)")
        ax.view_init(elev=20, azim=-60)
        ax.set_title(f"--surfaces (RAS, smoothed): {case}\nanterior (orange), posterior (blue)")
        fig.savefig(out_dir / f"surfaces_{case}.png", dpi=110)
        plt.close(fig)
    print("wrote", out_dir / f"tta_uncertainty_{case}.png", "and", out_dir / f"surfaces_{case}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
