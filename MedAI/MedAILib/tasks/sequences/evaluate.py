"""Evaluate a left-ventricle bundle on held-out Sunnybrook cines: Dice per phase and ejection fraction.

``python -m MedAILib.tasks.sequences.evaluate --data ../shared/data/sunnybrook-cine --model BUNDLE [--png-dir DIR]``

For each held-out patient the whole cine (all frames) goes through
:func:`MedAILib.tasks.sequences.pipeline.segment_sequence` (the code ``medai segment-sequence`` runs),
then on the contoured slices:

- Dice per phase: at end-diastole and end-systole (the only frames with manual contours), pooled
  over the contoured slices (2|P n G| / (|P| + |G|)), and the mean of the per-image Dice;
- ejection fraction EF = (EDV - ESV) / EDV with volumes summed slice by slice (area x slice spacing):
  manual (contours), predicted at the manual ED/ES frames, and fully automatic (ED/ES = the frames
  of largest/smallest predicted volume over the contoured slices).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from MedAILib.tasks.sequences.cine_lv import LABEL_NAME, load_case
from MedAILib.tasks.sequences.trainer import TEST_PATIENTS


def dice(p: np.ndarray, g: np.ndarray) -> float:
    s = int(p.sum()) + int(g.sum())
    return 2.0 * int(np.logical_and(p, g).sum()) / s if s else 1.0


def evaluate_case(case, labels, value: int = 1) -> dict:
    """``labels``: the predicted label Sequence of ``case.sequence``."""
    lab = labels.array() == value  # (T, K, J, I)
    sp = case.sequence.frames[0].spacing
    voxel_ml = float(np.prod(sp)) / 1000.0
    phases = case.phases
    slices = case.contoured_slices
    out = {"case": case.case, "patient": case.patient, "frames": case.sequence.n_frames,
           "contoured_slices": len(slices), "ed_frame": phases["ED"] + 1, "es_frame": phases["ES"] + 1}
    for name, t in phases.items():
        ks = [k for k in slices if (t, k) in case.masks]
        p = np.stack([lab[t, k] for k in ks])
        g = np.stack([case.masks[(t, k)] for k in ks])
        out[f"dice_{name}"] = dice(p, g)
        out[f"dice_{name}_per_image_mean"] = float(np.mean([dice(lab[t, k], case.masks[(t, k)]) for k in ks]))
        out[f"manual_{name}_ml"] = float(g.sum()) * voxel_ml
        out[f"pred_{name}_ml"] = float(p.sum()) * voxel_ml
    out["ef_manual"] = 100 * (out["manual_ED_ml"] - out["manual_ES_ml"]) / out["manual_ED_ml"]
    out["ef_pred_at_manual_frames"] = 100 * (out["pred_ED_ml"] - out["pred_ES_ml"]) / out["pred_ED_ml"]
    curve = [float(lab[t][slices].sum()) * voxel_ml for t in range(lab.shape[0])]
    ed, es = int(np.argmax(curve)), int(np.argmin(curve))
    out.update(volume_curve_ml=curve, auto_ed_frame=ed + 1, auto_es_frame=es + 1,
               ef_pred_auto=100 * (curve[ed] - curve[es]) / curve[ed] if curve[ed] > 0 else None)
    out["ef_error_at_manual_frames"] = out["ef_pred_at_manual_frames"] - out["ef_manual"]
    out["ef_error_auto"] = (out["ef_pred_auto"] - out["ef_manual"]) if out["ef_pred_auto"] is not None else None
    return out


def volume_curve_png(results: list, path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from MedAILib.io.preview import save_figure

    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.2), squeeze=False)
    for ax, r in zip(axes[0], results):
        for label, res in r["runs"].items():
            ax.plot(range(1, len(res["volume_curve_ml"]) + 1), res["volume_curve_ml"], marker=".", label=label)
        res = next(iter(r["runs"].values()))
        ax.scatter([res["ed_frame"], res["es_frame"]], [res["manual_ED_ml"], res["manual_ES_ml"]], color="k",
                   zorder=5, label="manual ED / ES")
        ax.set_title(f"{r['case']}: EF manual {res['ef_manual']:.0f}%", fontsize=9)
        ax.set_xlabel("frame")
        ax.set_ylabel("LV blood pool (mL, contoured slices)")
        ax.legend(fontsize=7)
    return save_figure(fig, path, dpi=90)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", required=True, help="bundle folder")
    ap.add_argument("--patients", nargs="+", default=list(TEST_PATIENTS))
    ap.add_argument("--smoothing", type=float, nargs="+", default=[0.0, 1.0],
                    help="temporal smoothing sigmas (frames) to compare")
    ap.add_argument("--no-keep-largest", action="store_true",
                    help="keep every predicted piece (default: the largest connected piece per frame)")
    ap.add_argument("--png-dir")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    import torch

    from MedAILib.models import resolve_model
    from MedAILib.tasks.sequences.figures import cine_contours_png
    from MedAILib.tasks.sequences.pipeline import segment_sequence

    torch.set_num_threads(1)
    bundle = resolve_model(a.model, trust_paths=[a.model])
    value = next(l.value for l in bundle.labels if l.name == LABEL_NAME)
    results = []
    for p in a.patients:
        case = load_case(a.data, p)
        runs = {}
        for sigma in a.smoothing:
            r = segment_sequence(case.sequence, bundle, device="cpu", temporal_sigma=sigma,
                                 keep_largest=not a.no_keep_largest)
            runs[f"sigma {sigma:g}"] = evaluate_case(case, r.labels, value)
            runs[f"sigma {sigma:g}"]["seconds"] = round(r.seconds, 1)
            if a.png_dir and sigma == a.smoothing[0]:
                ph = case.phases
                frames = sorted({0, ph["ES"], ph["ED"], 4, 10, 14})
                ref = {(t, k): m for (t, k), m in case.masks.items()}
                cine_contours_png(case.sequence, r.labels, Path(a.png_dir) / f"sequences_sunnybrook_{case.case}.png",
                                  frames=frames, frame_titles=[f"frame {t + 1}" + (" ED" if t == ph["ED"] else
                                                               " ES" if t == ph["ES"] else "") for t in frames],
                                  reference=ref, title=f"{case.case} (held out): predicted LV (solid), manual contour "
                                                       f"(cyan dashed) at ED/ES")
        results.append({"case": case.case, "runs": runs})
        print(json.dumps({k: (v if not isinstance(v, list) else "...") for k, v in next(iter(runs.values())).items()}))
    if a.png_dir:
        volume_curve_png(results, Path(a.png_dir) / "sequences_sunnybrook_volume_curves.png")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2), encoding="utf-8")
    for r in results:
        for name, res in r["runs"].items():
            print(f"{r['case']} {name}: Dice ED {res['dice_ED']:.3f} ES {res['dice_ES']:.3f}; EF manual "
                  f"{res['ef_manual']:.1f}% pred@manual {res['ef_pred_at_manual_frames']:.1f}% auto "
                  f"{res['ef_pred_auto']:.1f}% (frames {res['auto_ed_frame']}/{res['auto_es_frame']}); "
                  f"{res['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
