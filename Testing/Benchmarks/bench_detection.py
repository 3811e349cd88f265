"""Detection benchmark (issue 20.2): the figures of docs/detection.md.

    OMP_NUM_THREADS=1 python Testing/Benchmarks/bench_detection.py [--data DIR] --work DIR [--loo]
        [--fold-seconds 120] [--json detection.json]

Default (a few tens of seconds): the shipped ``lidc_nodule_retinanet_tiny`` run by ``detect`` (what
``medai detect`` runs) on each LIDC slab: seconds per slab, boxes, and whether one of the 5
top-scoring boxes overlaps the readers' box. The shipped model was trained on all three slabs, so
this measures speed and checks the shipped weights; it is NOT an accuracy figure.

``--loo``: the accuracy figures, leave one patient out: three models, each trained on two slabs for
``--fold-seconds`` and run on the held-out one; recall at 0.25-8 false positives per scan (a few
minutes per model on a 2-core CPU; :mod:`MedAILib.tasks.detection.trainer`).

Real images only (``$MEDAI_DATA_DIR/lidc-idri-subset``; SOURCES.md section 9).
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


def shipped_speed(data: Path) -> dict:
    from MedAILib.io import read_image
    from MedAILib.tasks.detection import lidc
    from MedAILib.tasks.detection.model import load_detection_model
    from MedAILib.tasks.detection.pipeline import detect

    model = load_detection_model("lidc_nodule_retinanet_tiny")
    out = {}
    for patient in lidc.PATIENTS:
        volume = read_image(lidc.series_dir(data, patient))
        ref = lidc.reference_boxes(data, patient, volume)[0]
        t0 = time.perf_counter()
        result = detect(volume, model, device="cpu")
        seconds = time.perf_counter() - t0
        top = [b.to_dict() for b in result.boxes[:5]]
        out[patient] = {"seconds": round(seconds, 2), "shape_ijk": list(volume.size_ijk), "boxes": len(result.boxes),
                        "top5_best_iou_with_readers": round(max((lidc.iou(b, ref) for b in top), default=0.0), 3),
                        "note": "training slab of the shipped model: not an accuracy figure"}
        print(f"{patient}: {seconds:.1f} s, {len(result.boxes)} boxes above the model's threshold, "
              f"top-5 best IoU {out[patient]['top5_best_iou_with_readers']}", flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(Path(os.environ.get("MEDAI_DATA_DIR", ROOT.parent / "shared" / "data"))
                                          / "lidc-idri-subset"))
    ap.add_argument("--work", help="folder for the leave-one-out bundles, boxes and figures (--loo)")
    ap.add_argument("--loo", action="store_true", help="train and evaluate leave one patient out (minutes)")
    ap.add_argument("--fold-seconds", type=float, default=120)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    results = {"shipped_speed": shipped_speed(Path(a.data))}
    if a.loo:
        if not a.work:
            ap.error("--loo needs --work")
        from MedAILib.tasks.detection import trainer

        trainer.main(["--data", a.data, "--work", a.work, "--fold-seconds", str(a.fold_seconds)])
        results["leave_one_patient_out"] = json.loads((Path(a.work) / "results.json").read_text())["summary"]
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
