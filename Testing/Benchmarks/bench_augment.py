"""GAN augmentation on a small labelled set: hippocampus segmentation trained on 5 cases with and
without synthetic cases from a label-conditioned generator, Dice on held-out cases.

    OMP_NUM_THREADS=1 python Testing/Benchmarks/bench_augment.py [--data DIR] [--work DIR] [--gan-minutes 4]
        [--epochs 20] [--steps 10] [--ratio 0.3] [--n-eval 50]

Data (msd-hippocampus, real MR with manual labels), split by the shipped model's split.json:
- training: the first 5 cases of its 'training' list (the only labelled data the generator and
  both segmentation runs see);
- model selection (best epoch): the next 3 cases of its 'training' list;
- evaluation: the cases its 'validation' list holds (never used for training or selection; one
  comparison, no tuning on them).
Both segmentation runs have the same plan, seed, epochs and optimiser steps; the only difference is
that with ``--synthetic-ratio`` each sample is synthetic with that probability. Dice is computed by
the shipped inference path (the bundle's own pre/post-processing, back on the input grid).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "MedAI"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=os.path.join(os.environ.get("MEDAI_DATA_DIR", str(ROOT.parent / "shared" / "data"))))
    ap.add_argument("--work", default="/tmp/medai_bench_augment")
    ap.add_argument("--gan-minutes", type=float, default=4.0)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--ratio", type=float, default=0.3)
    ap.add_argument("--n-train", type=int, default=5)
    ap.add_argument("--n-eval", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--reuse", action="store_true",
                    help="keep a generator / real-only bundle already in --work from an earlier run of this script")
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from MedAILib.tasks.augmentation.label_gan import train_label_gan
    from MedAILib.tasks.segmentation import own_data
    from MedAILib.tasks.segmentation.trainer import evaluate_bundle, load_split

    hippo = Path(a.data) / "msd-hippocampus"
    split = load_split(ROOT / "MedAI/MedAILib/resources/Models/hippocampus_unet/split.json")
    entry = lambda c: {"image": str(hippo / "imagesTr" / f"{c}.nii.gz"), "label": str(hippo / "labelsTr" / f"{c}.nii.gz"),
                       "id": c}
    train_ids = split["training"][:a.n_train]
    select_ids = split["training"][a.n_train:a.n_train + 3]
    eval_ids = split["validation"][:a.n_eval]
    assert not set(eval_ids) & set(train_ids + select_ids)
    dl = {"training": [entry(c) for c in train_ids], "validation": [entry(c) for c in select_ids]}
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    gen = work / "generator"
    if a.reuse and (gen / "models" / "model.pt").is_file():
        gan_info = json.loads((gen / "configs" / "metadata.json").read_text())["training"]
        print(f"reusing the generator in {gen}", flush=True)
    else:
        gan_info = train_label_gan(dl["training"], gen, max_minutes=a.gan_minutes, seed=a.seed, overwrite=True,
                                   log=lambda m: print(m, flush=True))
    results = {"train_cases": train_ids, "selection_cases": select_ids, "n_eval": len(eval_ids),
               "generator": {k: gan_info[k] for k in ("iterations", "train_seconds", "final_l1")}}
    for name, ratio in (("real only", 0.0), (f"real + synthetic (ratio {a.ratio})", a.ratio)):
        out = work / ("seg_syn" if ratio else "seg_real")
        t = time.time()
        if a.reuse and (out / "models" / "model.pt").is_file():
            print(f"reusing {out}", flush=True)
            meta = json.loads((out / "configs" / "metadata.json").read_text())
            info = dict(meta["medai_training"], val_mean_dice=meta["eval_metrics"]["val_mean_dice"])
        else:
            info = own_data.train_own(dl, out, work_dir=work / (out.name + ".training"), epochs=a.epochs,
                                      seed=a.seed, steps_per_epoch=a.steps, val_interval=2, register=False,
                                      threads=1,
                                      synthetic_ratio=ratio, synthetic_model=str(gen) if ratio else None)
        per_case = [evaluate_bundle(out, [entry(c)])["mean"] for c in eval_ids]
        scores = evaluate_bundle(out, [entry(c) for c in eval_ids])
        results[name] = {"eval_dice": scores, "per_case_mean_dice": per_case, "best_epoch": info["best_epoch"],
                         "selection_dice": round(info["val_mean_dice"], 4), "seconds": round(time.time() - t, 1)}
        print(name, json.dumps(results[name]), flush=True)
    import numpy as np

    a_, b_ = (np.asarray(results[k]["per_case_mean_dice"]) for k in list(results)[-2:])
    diff = b_ - a_
    rng = np.random.default_rng(0)
    boot = [float(diff[rng.integers(0, len(diff), len(diff))].mean()) for _ in range(5000)]
    results["paired"] = {"mean_difference": round(float(diff.mean()), 4),
                         "bootstrap_95ci": [round(float(np.percentile(boot, 2.5)), 4),
                                            round(float(np.percentile(boot, 97.5)), 4)],
                         "cases_better": int((diff > 0).sum()), "cases_worse": int((diff < 0).sum())}
    print("paired (synthetic - real only):", json.dumps(results["paired"]), flush=True)
    results["total_seconds"] = round(time.time() - t0, 1)
    print(json.dumps(results, indent=1, default=str))
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
