"""Build an image + clinical-variable table from AdrenalMNIST3D (for issue 19's clinical-variable study).

What the data carries: 28^3 binary adrenal-gland masks and a normal/hyperplasia label; no clinical
variable is published with it. The variable here is DERIVED from the image itself, stated as such:
``gland_voxels`` = the mask's voxel count at 28^3 (a size proxy). So any gain it brings is a global
shape statistic the CNN could in principle learn, not independent clinical information. 20 % of its
values (seeded) are blanked to exercise missing-value handling.

    python Testing/tools/adrenal_clinical_table.py NPZ OUT_DIR     # writes OUT_DIR/cases.csv + images/
"""

import csv
import sys
from pathlib import Path

import nibabel as nib
import numpy as np


def main(npz, out, missing_fraction=0.2, seed=0):
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    with np.load(npz) as d:
        for split in ("train", "val", "test"):
            X, y = d[f"{split}_images"], d[f"{split}_labels"].ravel()
            for i, (x, lab) in enumerate(zip(X, y)):
                name = f"{split}_{i:04d}.nii.gz"
                nib.save(nib.Nifti1Image((x > 127).astype(np.uint8) * 255, np.eye(4)), str(out / "images" / name))
                vox = int((x > 127).sum())
                rows.append({"image": f"images/{name}", "label": ["normal", "hyperplasia"][int(lab)], "split": split,
                             "gland_voxels": "NA" if rng.random() < missing_fraction else vox})
    with open(out / "cases.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"{len(rows)} rows -> {out / 'cases.csv'}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
