"""Issue 19: the autoencoder OOD score, hippocampus MR crops vs CT and vs other MR (ROC AUC).

Trains the OOD autoencoder (MedAILib.tasks.ood) on the 200 training images of the shipped
hippocampus split (40 of them held out for calibration), then scores:
  in-distribution : the split's 50 validation images (never seen in training or calibration),
                    and the two Udacity "HippoCrop" DICOM series (MSD-style crops wrapped in DICOM);
  CT              : TotalSegmentator example CT (NIfTI and its DICOM series), 3 LIDC-IDRI slabs;
  BraTS MR        : the 3 BraTS subjects x 4 contrasts (T1n, T1c, T2w, T2-FLAIR);
  other MR        : ISLES'22 DWI/ADC/FLAIR, ProstateX T2/DWI, TotalSegmentator MR, TCIA brain series.
ROC AUC = P(score of an OOD volume > score of an in-distribution validation volume).

  OMP_NUM_THREADS=1 PYTHONPATH=MedAI .venv/bin/python Testing/Benchmarks/bench_ood.py --out /tmp/ood_bench \
      [--epochs 60 --time-limit 6]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(HERE / "MedAI"))


def auc(neg, pos) -> float:
    """Mann-Whitney ROC AUC: P(pos > neg) + 0.5 P(tie)."""
    neg, pos = np.asarray(neg, float), np.asarray(pos, float)
    gt = (pos[:, None] > neg[None, :]).mean()
    eq = (pos[:, None] == neg[None, :]).mean()
    return float(gt + 0.5 * eq)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--time-limit", type=float, default=6.0)
    ap.add_argument("--quick", action="store_true", help="20 training images, 3 epochs (smoke run)")
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from MedAILib.tasks.ood import autoencoder as ae

    data = Path(os.environ.get("MEDAI_DATA_DIR", HERE.parent / "shared" / "data"))
    hip = data / "msd-hippocampus"
    split = json.loads((HERE / "MedAI/MedAILib/resources/Models/hippocampus_unet/split.json").read_text())
    train = [str(hip / "imagesTr" / f"{c}.nii.gz") for c in split["training"]]
    val = [str(hip / "imagesTr" / f"{c}.nii.gz") for c in split["validation"]]
    if a.quick:
        train, val, a.epochs = train[:20], val[:10], 3
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = ae.train_ood(train, out / "ood_model", epochs=a.epochs, time_limit_min=a.time_limit, overwrite=True,
                       command="Testing/Benchmarks/bench_ood.py " + " ".join(argv or sys.argv[1:]))
    tcia = data / "tcia-brain-tumor-progression-dicom"
    groups = {
        "hippocampus validation (ID)": val,
        "HippoCrop DICOM (ID-like)": sorted(str(p) for p in tcia.glob("*/*_HCropVolume")),
        "CT": [str(data / "totalsegmentator-example/example_ct_sm.nii.gz"),
               str(data / "totalsegmentator-example/example_ct_dicom")]
              + sorted(str(p) for p in (data / "lidc-idri-subset").glob("LIDC-IDRI-*/*") if p.is_dir()),
        "BraTS MR": sorted(glob.glob(str(data / "brainlesion-brats-examples/BraTS-*/BraTS-*-t[12]*.nii.gz"))),
        "other MR": sorted(glob.glob(str(data / "isles22-stroke/*/*_[adf]*.nii.gz")))
                    + sorted(glob.glob(str(data / "prostatex-0000/*.nii.gz")))
                    + [str(data / "totalsegmentator-example/example_mr_sm.nii.gz")]
                    + sorted(str(p) for p in tcia.glob("*/*") if p.is_dir() and "HCrop" not in p.name
                             and "dT1" not in p.name),
    }
    groups["other MR"] = [f for f in groups["other MR"] if not f.endswith("_msk.nii.gz")]
    scores = {}
    for name, items in groups.items():
        scores[name] = {Path(i).name: float(s) for i, s in zip(items, ae.score_volumes(out / "ood_model", items))}
    idv = list(scores["hippocampus validation (ID)"].values())
    thr = cfg["threshold"]
    rows = {}
    for name in groups:
        v = list(scores[name].values())
        rows[name] = {"n": len(v), "median_score": float(np.median(v)), "flagged_above_threshold": int(sum(x > thr for x in v))}
        if "ID" not in name:
            rows[name]["roc_auc_vs_validation"] = auc(idv, v)
    ood_all = [x for n in ("CT", "BraTS MR", "other MR") for x in scores[n].values()]
    result = {"threshold": thr, "training": {k: cfg[k] for k in ("n_train", "n_calibration", "epochs_run", "stopped",
                                                                 "train_seconds", "loss_first", "loss_last", "grid")},
              "groups": rows, "roc_auc_all_ood_vs_validation": auc(idv, ood_all), "scores": scores}
    (out / "ood_benchmark.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if k != "scores"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
