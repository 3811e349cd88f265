"""Issue 19: self-supervised pre-training then fine-tuning on 20 labelled hippocampus cases vs from scratch.

Data (MEDAI_DATA_DIR/msd-hippocampus, the shipped model's split.json):
  unlabelled : the 200 images of the split's `training` list (labels not read);
  labelled   : the first 20 cases of `training`, validated on the first 10 of `validation`
               (never used in pre-training).
Runs, in this order (each a real `medai` process, 1 torch thread):
  medai pretrain --datalist unlabelled.json --out ssl_pt --epochs 16 --steps-per-epoch 10 --batch-size 4
                 --base-filters 20 --time-limit PRETRAIN_MIN --seed 0 --keep all
  then three `medai train segmentation --datalist dl20.json --epochs E --val-interval 2 --seed 0 --no-register`:
    scratch  : --base-filters 20 (the same UNet 20-40-80-160 and patch 40x56x40 as the pre-trained one)
    ssl      : --init ssl_pt         (every layer but the output head from pre-training)
    ssl_enc  : --init ssl_pt_encoder (encoder only: down path + bottom; decoder fresh)
and prints the validation Dice of each bundle (best epoch, as the model card records it).

  OMP_NUM_THREADS=1 .venv/bin/python Testing/Benchmarks/bench_pretrain.py --work /tmp/pretrain_bench [--epochs 20]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[2]


def medai(args, env, log):
    # `medai pretrain` through its module, so the script runs before the command is registered too
    head = ["-m", "MedAILib.tasks.pretraining.command"] if args[0] == "pretrain" else ["-m", "MedAILib.cli", args[0]]
    cmd = [sys.executable, *head, *map(str, args[1:])]
    with open(log, "w") as f:
        subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, check=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", required=True)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--pretrain-minutes", type=float, default=9)
    a = ap.parse_args(argv)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(HERE / "MedAI"), "OMP_NUM_THREADS": "1",
           "MEDAI_HOME": str(work / "medai-home")}
    data = Path(os.environ.get("MEDAI_DATA_DIR", HERE.parent / "shared" / "data")) / "msd-hippocampus"
    split = json.loads((HERE / "MedAI/MedAILib/resources/Models/hippocampus_unet/split.json").read_text())

    def case(c):
        return {"image": str(data / "imagesTr" / f"{c}.nii.gz"), "label": str(data / "labelsTr" / f"{c}.nii.gz")}

    (work / "unlabelled.json").write_text(json.dumps({"unlabelled": [{"image": case(c)["image"]}
                                                                     for c in split["training"]]}))
    (work / "dl20.json").write_text(json.dumps({"training": [case(c) for c in split["training"][:20]],
                                                "validation": [case(c) for c in split["validation"][:10]]}))
    if not (work / "ssl_pt").is_dir():
        medai(["pretrain", "--datalist", work / "unlabelled.json", "--out", work / "ssl_pt", "--epochs", 16,
               "--steps-per-epoch", 10, "--batch-size", 4, "--base-filters", 20, "--time-limit", a.pretrain_minutes,
               "--seed", 0, "--keep", "all"], env, work / "pretrain.log")
    enc = work / "ssl_pt_encoder"
    if not enc.is_dir():  # the same pre-trained weights, decoder dropped
        import torch

        sys.path.insert(0, str(HERE / "MedAI"))
        os.environ["MEDAI_HOME"] = env["MEDAI_HOME"]
        from MedAILib.models import trust
        from MedAILib.tasks.pretraining.ssl import encoder_keys

        shutil.copytree(work / "ssl_pt", enc)
        sd = torch.load(enc / "models" / "model.pt", weights_only=True)
        torch.save({k: sd[k] for k in encoder_keys(sd)}, enc / "models" / "model.pt")
        trust.trust(enc, reason="bench_pretrain: encoder-only copy")
    runs = {"scratch": ["--base-filters", 20], "ssl": ["--init", work / "ssl_pt"], "ssl_enc": ["--init", enc]}
    out = {}
    for name, extra in runs.items():
        b = work / f"ft_{name}"
        if not b.is_dir():
            medai(["train", "segmentation", "--datalist", work / "dl20.json", "--out", b, "--epochs", a.epochs,
                   "--val-interval", 2, "--seed", 0, "--no-register", *extra], env, work / f"ft_{name}.log")
        meta = json.loads((b / "configs" / "metadata.json").read_text())
        out[name] = {**meta["eval_metrics"], "best_epoch": meta["medai_training"]["best_epoch"]}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
