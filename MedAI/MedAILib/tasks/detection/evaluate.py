"""Recall at a few false positives per scan (FROC points) of detection bundles on LIDC slabs.

A detection is a hit when its box overlaps a reference nodule box with IoU >= 0.1 (voxel boxes on
the input grid, MONAI's ``box_iou``); further detections of an already found nodule count neither
as hits nor as false positives (the LUNA16 rule); every other detection is a false positive.
Recall and false positives per scan are read at every score threshold; the table gives recall at
0.25, 0.5, 1, 2, 4 and 8 false positives per scan.
"""

from __future__ import annotations

import json
from pathlib import Path


FP_RATES = (0.25, 0.5, 1, 2, 4, 8)
IOU_HIT = 0.1


def match(detections: list, refs: list) -> list:
    """[(score, kind, nodule)] with kind 'hit', 'repeat' or 'fp', highest score first."""
    from MedAILib.tasks.detection.lidc import iou

    found, out = set(), []
    for d in sorted(detections, key=lambda d: -d["score"]):
        best = max(((iou(d, r), r["nodule"]) for r in refs), default=(0.0, None))
        if best[0] >= IOU_HIT:
            out.append((d["score"], "repeat" if best[1] in found else "hit", best[1]))
            found.add(best[1])
        else:
            out.append((d["score"], "fp", None))
    return out


def froc(per_scan: dict, n_refs: int) -> dict:
    """per_scan: {scan: [(score, kind, nodule)]} -> recall at FP_RATES and the curve points.

    One curve point per distinct score threshold: every detection scoring at or above it is kept,
    so tied scores enter together (a tie between a hit and false positives is never broken in the
    detector's favour)."""
    events = sorted(((s, k, scan, n) for scan, m in per_scan.items() for s, k, n in m), key=lambda e: -e[0])
    n_scans = len(per_scan)
    hits, fps, curve = set(), 0, []
    for i, (s, k, scan, n) in enumerate(events):
        if k == "hit":
            hits.add((scan, n))
        elif k == "fp":
            fps += 1
        if i + 1 == len(events) or events[i + 1][0] != s:
            curve.append((s, fps / n_scans, len(hits) / n_refs if n_refs else 0.0))
    at = {}
    for rate in FP_RATES:
        ok = [r for _, f, r in curve if f <= rate]
        at[str(rate)] = max(ok) if ok else 0.0
    return {"recall_at_fp_per_scan": at, "curve": curve, "max_recall": max([r for *_, r in curve], default=0.0),
            "fp_per_scan_total": fps / n_scans}


def evaluate_folds(root, bundles: dict, work) -> dict:
    """``bundles``: {test patient: bundle folder}. Runs :func:`~.pipeline.detect` (what ``medai detect``
    runs) on each held-out slab; writes boxes, figures and results.json into ``work``."""
    from MedAILib.io import read_image
    from MedAILib.models.bundle import Bundle
    from MedAILib.tasks.detection.boxes import write_boxes
    from MedAILib.tasks.detection.figures import boxes_png
    from MedAILib.tasks.detection.lidc import reference_boxes, series_dir
    from MedAILib.tasks.detection.model import DetectionModel
    from MedAILib.tasks.detection.pipeline import detect

    work = Path(work)
    per_scan, n_refs, scans = {}, 0, {}
    for patient, path in bundles.items():
        model = DetectionModel(Bundle(path))  # written by the trainer itself: no trust prompt needed
        volume = read_image(series_dir(root, patient))
        refs = reference_boxes(root, patient, volume)
        result = detect(volume, model, device="cpu", min_score=0.0)
        dets = [b.to_dict() for b in result.boxes]
        write_boxes(work / f"{patient}_boxes.json", result.boxes, {"image": patient, "model": str(path)})
        boxes_png(volume, result.boxes[:5], work / f"detection_lidc_{patient}.png", references=refs, max_panels=3,
                  title=f"{patient} (held out): its 5 top-scoring boxes (red) and the readers' median box (cyan dashed)")
        per_scan[patient] = match(dets, refs)
        n_refs += len(refs)
        top = dets[0] if dets else None
        from MedAILib.tasks.detection.lidc import iou

        ious = [max((iou(d, r) for r in refs), default=0.0) for d in sorted(dets, key=lambda d: -d["score"])]
        hit_rank = next((i + 1 for i, m in enumerate(per_scan[patient]) if m[1] == "hit"), None)
        scans[patient] = {"references": len(refs), "detections": len(dets), "seconds": round(result.seconds, 1),
                          "first_hit_rank": hit_rank,
                          "first_hit_iou": round(ious[hit_rank - 1], 3) if hit_rank else None,
                          "first_hit_score": per_scan[patient][hit_rank - 1][0] if hit_rank else None,
                          "best_iou": round(max(ious, default=0.0), 3),
                          "detections_scoring_1.0": sum(d["score"] >= 0.9999995 for d in dets),
                          "top_score": top["score"] if top else None}
    f = froc(per_scan, n_refs)
    summary = {"scans": len(per_scan), "nodules": n_refs, "recall_at_fp_per_scan": f["recall_at_fp_per_scan"],
               "max_recall": f["max_recall"], "per_scan": scans}
    results = {"summary": summary, "curve": f["curve"], "matches": per_scan}
    (work / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    froc_png(f["curve"], work / "detection_lidc_froc.png", n_refs, len(per_scan))
    return results


def froc_png(curve, path, n_refs, n_scans) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from MedAILib.io.preview import save_figure

    fig, ax = plt.subplots(figsize=(4.5, 3.4))
    xs = [0.0] + [c[1] for c in curve]
    ys = [0.0] + [c[2] for c in curve]
    ax.step(xs, ys, where="post")
    ax.set_xscale("symlog", linthresh=0.25)
    ax.set_xlabel("false positives per scan")
    ax.set_ylabel("recall")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"LIDC slabs, leave-one-patient-out ({n_refs} nodules, {n_scans} scans)", fontsize=8)
    return save_figure(fig, path, dpi=90)
