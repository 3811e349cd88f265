"""``medai pretrain``: self-supervised pre-training of a segmentation UNet on unlabelled volumes.

  medai pretrain --images UNLABELLED/ --out pretrained [--epochs 20 --time-limit 10]
  medai train segmentation --datalist few_labelled.json --out my_model --init pretrained

The result is a bundle (trusted, not added to the segmentation catalogue) whose UNet and window
``--init`` adopts; it holds the encoder (default) or every layer (``--keep all``). See docs/training.md.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="*", help="unlabelled image files (or use --images / --datalist)")
    p.add_argument("--images", default=None, help="folder of unlabelled images")
    p.add_argument("--datalist", default=None,
                   help="JSON: a list of files or {'training'|'unlabelled': [{'image': ...}]} (labels ignored)")
    p.add_argument("--out", required=True, help="bundle folder to write")
    p.add_argument("--work-dir", default=None, help="checkpoint and loss log (default OUT.training)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--steps-per-epoch", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=4, help="patches per step (>= 2 for the contrastive term)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time-limit", type=float, default=None, metavar="MINUTES",
                   help="stop cleanly before this many minutes and write the bundle")
    p.add_argument("--resume", action="store_true", help="continue from WORK_DIR/checkpoint.pt")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out bundle")
    p.add_argument("--base-filters", type=int, default=16, help="as for medai train segmentation")
    p.add_argument("--memory-gb", type=float, default=2.0)
    p.add_argument("--spacing", type=float, nargs=3, default=None)
    p.add_argument("--max-patch", type=int, nargs=3, default=None)
    p.add_argument("--modality", nargs="+", default=None)
    p.add_argument("--keep", choices=["encoder", "all"], default="encoder",
                   help="weights written: the encoder (default; measured better for --init) or every layer")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")


def register(sub) -> None:
    p = sub.add_parser("pretrain", help="self-supervised pre-training on unlabelled volumes (for train --init)",
                       description=__doc__.split("\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import json
    import shlex
    import sys

    from MedAILib.tasks.pretraining import ssl

    items = ssl.list_images(args.images, args.datalist, args.files)
    command = getattr(args, "command_line", None) or "medai " + shlex.join(sys.argv[1:])
    info = ssl.pretrain(items, args.out, work_dir=args.work_dir, epochs=args.epochs,
                        steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                        time_limit_min=args.time_limit, resume=args.resume, base_filters=args.base_filters,
                        memory_gb=args.memory_gb, spacing=args.spacing, max_patch=args.max_patch,
                        modality=args.modality, threads=args.threads, command=command, overwrite=args.overwrite,
                        keep=args.keep,
                        progress=lambda frac, msg, left: print(msg, file=sys.stderr, flush=True))
    print(json.dumps({"bundle": str(args.out), **{k: info[k] for k in ("n_cases", "epochs_run", "stopped",
                                                                      "first_loss", "final_loss", "train_seconds")},
                      "patch": info["plan"]["patch"], "filters": info["plan"]["filters"]}, indent=1))
    return 0


def main(argv=None) -> int:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    p = argparse.ArgumentParser(prog="medai pretrain", description=__doc__.split("\n")[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
