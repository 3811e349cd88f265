"""Calibrated probabilities and an operating point for a binary classification bundle, both fitted
on the validation split only, stored in the bundle (``configs/medai.json``) and used by the engine.

- **Temperature scaling** (Guo et al., "On calibration of modern neural networks", ICML 2017): one
  scalar T > 0 dividing the logits, fitted by minimising the validation negative log-likelihood
  (torch L-BFGS on log T). It does not change the ranking (AUC) of the cases.
- **Operating point**: the threshold on the calibrated P(positive) at which the decision is made,
  chosen on validation by maximising Youden's J (sensitivity + specificity - 1), or as the highest
  threshold that reaches a stated sensitivity. The threshold is put halfway between the two
  validation scores around the cut (the validation confusion matrix is the same anywhere in
  between; the midpoint does not sit exactly on one validation case).

    python -m MedAILib.tasks.classification.calibration --bundle BUNDLE --data adrenalmnist3d.npz

writes ``temperature``, ``decision_threshold`` and ``operating_point`` into the bundle's
``configs/medai.json``, the matching step into ``configs/inference.json``'s post-processing, the
val/test figures into ``docs/metrics.json`` and the "Results" section of ``docs/README.md``. The test
split is only measured, never used to choose anything.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

OPERATING_METHODS = ("youden", "sensitivity")


# ------------------------------------------------------------------------------------ fitting
def fit_temperature(logits, labels, max_iter: int = 200) -> float:
    """The temperature T minimising the cross-entropy of ``softmax(logits / T)`` against ``labels``."""
    import torch

    z = torch.as_tensor(np.asarray(logits, np.float64))
    y = torch.as_tensor(np.asarray(labels).reshape(-1).astype(np.int64))
    if z.ndim != 2 or len(z) != len(y) or len(y) == 0:
        raise ValueError(f"need (N, C) logits and N labels, got {tuple(z.shape)} and {len(y)}")
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)  # T = exp(log_t) stays positive
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp())


def softmax_positive(logits, temperature: float = 1.0) -> np.ndarray:
    """P(class 1) of two-class logits after temperature scaling."""
    z = np.asarray(logits, np.float64) / float(temperature)
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return (e[:, 1] / e.sum(1)).astype(np.float64)


def operating_point(labels, scores, method: str = "youden", target_sensitivity: float | None = None) -> dict:
    """The decision threshold on ``scores`` (predict positive when score >= threshold) and the
    sensitivity/specificity it gives on these cases.

    ``youden``: maximise sensitivity + specificity - 1 (ties: the higher threshold).
    ``sensitivity``: the highest threshold whose sensitivity is >= ``target_sensitivity``.
    """
    from sklearn.metrics import roc_curve

    y = np.asarray(labels).reshape(-1).astype(int)
    s = np.asarray(scores, np.float64).reshape(-1)
    if len(np.unique(y)) < 2:
        raise ValueError("an operating point needs both classes among the cases")
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    # thr[0] is +inf (nothing positive); thr is decreasing, so index k+1 is the next lower score.
    if method == "youden":
        j = tpr - fpr
        k = int(np.flatnonzero(j == j.max())[0])
    elif method == "sensitivity":
        if target_sensitivity is None or not 0 < target_sensitivity <= 1:
            raise ValueError("method 'sensitivity' needs target_sensitivity in (0, 1]")
        k = int(np.flatnonzero(tpr >= target_sensitivity - 1e-12)[0])
    else:
        raise ValueError(f"unknown operating point method {method!r}; use one of {OPERATING_METHODS}")
    k = max(k, 1)
    lower = thr[k + 1] if k + 1 < len(thr) else max(0.0, thr[k] - 1e-6)
    threshold = float((thr[k] + lower) / 2.0)
    pred = s >= threshold
    sens = float(pred[y == 1].mean())
    spec = float(1.0 - pred[y == 0].mean())
    out = {"method": method, "threshold": threshold, "sensitivity": sens, "specificity": spec,
           "youden_j": sens + spec - 1.0, "n": int(len(y)), "n_positive": int((y == 1).sum())}
    if method == "sensitivity":
        out["target_sensitivity"] = float(target_sensitivity)
    return out


def reliability(labels, scores, bins: int = 10) -> dict:
    """Calibration figures of P(class 1): negative log-likelihood, Brier score, expected calibration
    error (``bins`` equal-width bins, |mean score - observed frequency| weighted by bin size)."""
    from sklearn.metrics import brier_score_loss, log_loss

    y = np.asarray(labels).reshape(-1).astype(int)
    p = np.clip(np.asarray(scores, np.float64).reshape(-1), 1e-12, 1 - 1e-12)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    ece = sum(abs(p[idx == b].mean() - y[idx == b].mean()) * (idx == b).mean() for b in range(bins) if (idx == b).any())
    return {"nll": float(log_loss(y, p, labels=[0, 1])), "brier": float(brier_score_loss(y, p)), "ece": float(ece)}


def wilson_interval(successes: int, n: int) -> list:
    """95 % Wilson score interval of a proportion (scipy), for sensitivity/specificity on a finite split."""
    from scipy.stats import binomtest

    if n == 0:
        return [math.nan, math.nan]
    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=0.95, method="wilson")
    return [float(ci.low), float(ci.high)]


# ------------------------------------------------------------------------------------ bundle
def bundle_logits(bundle_dir, data, split: str, limit=None):
    """Raw logits (N, 2) of the bundle's network on a MedMNIST split, and the labels."""
    import torch

    from MedAILib.tasks.classification.trainer import load_bundle_network, load_split

    x, y = load_split(data, split, limit)
    net = load_bundle_network(bundle_dir)
    with torch.no_grad():
        z = [net(torch.as_tensor(x[s:s + 64])).double().numpy() for s in range(0, len(x), 64)]
    return (np.concatenate(z) if z else np.zeros((0, 2))), y


def split_figures(y, logits, temperature: float, threshold: float, class_names) -> dict:
    """classification_metrics at ``threshold`` on calibrated scores + calibration figures before/after
    + Wilson intervals of sensitivity and specificity."""
    from MedAILib.tasks.classification.metrics import classification_metrics

    p = softmax_positive(logits, temperature)
    m = classification_metrics(y, p, threshold=threshold, class_names=class_names)
    m["accuracy_at_0.5"] = classification_metrics(y, p, threshold=0.5)["accuracy"]
    (tn, fp), (fn, tp) = m["confusion_matrix"]
    m["sensitivity_ci95"] = wilson_interval(tp, tp + fn)
    m["specificity_ci95"] = wilson_interval(tn, tn + fp)
    m["calibration"] = {"uncalibrated": reliability(y, softmax_positive(logits, 1.0)), "calibrated": reliability(y, p)}
    return m


def calibrate(bundle_dir, data, method: str = "youden", target_sensitivity: float | None = None,
              also_sensitivity: float | None = 0.9, limit=None) -> dict:
    """Fit T and the operating point on ``val``; measure val and test. Returns the figures."""
    from MedAILib.tasks.classification.trainer import CLASS_NAMES

    names = [CLASS_NAMES[k] for k in sorted(CLASS_NAMES)]
    zv, yv = bundle_logits(bundle_dir, data, "val", limit)
    zt, yt = bundle_logits(bundle_dir, data, "test", limit)
    if len(np.unique(yv)) < 2:
        from MedAILib.core.errors import InputError

        raise InputError(f"the validation split of {Path(data).name} has only class {int(yv[0])} "
                         f"({len(yv)} cases): no operating point can be chosen",
                         "use more validation cases (a larger --limit or none)")
    t = fit_temperature(zv, yv)
    op = operating_point(yv, softmax_positive(zv, t), method, target_sensitivity)
    op["chosen_on"] = "val"
    alternatives = {}
    if also_sensitivity and not (method == "sensitivity" and target_sensitivity == also_sensitivity):
        alt = operating_point(yv, softmax_positive(zv, t), "sensitivity", also_sensitivity)
        alt["chosen_on"] = "val"
        alternatives[f"sensitivity_{also_sensitivity:g}"] = {
            "val": alt, "test": split_figures(yt, zt, t, alt["threshold"], names)}
    return {"temperature": t, "operating_point": op,
            "val": split_figures(yv, zv, t, op["threshold"], names),
            "test": split_figures(yt, zt, t, op["threshold"], names),
            "default_threshold_test": split_figures(yt, zt, t, 0.5, names),
            "alternatives": alternatives}


def temperature_step(temperature: float) -> dict:
    """The MONAI post-processing step that divides the logits by T (before the softmax)."""
    return {"_target_": "Lambdad", "keys": "pred", "func": f"$lambda x: x / {temperature!r}",
            "_desc_": "temperature scaling fitted on the validation split (MedAILib.tasks.classification.calibration)"}


def store(bundle_dir, result: dict, data) -> None:
    """Write the fitted values into the bundle: medai.json, inference.json, metrics.json, card section."""
    from MedAILib.core.atomic import atomic_output
    from MedAILib.tasks.classification.model_card import replace_results_section, results_section

    bundle_dir = Path(bundle_dir)
    op = dict(result["operating_point"])

    def write_json(path: Path, obj) -> None:
        with atomic_output(path) as tmp:
            tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")

    cfg_path = bundle_dir / "configs" / "medai.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["temperature"] = result["temperature"]
    cfg["decision_threshold"] = op["threshold"]
    cfg["operating_point"] = {**op, "probability": "calibrated P(hyperplasia) = softmax(logits / temperature)[1]",
                              "data": Path(data).name, "alternatives": {
                                  k: {"threshold": v["val"]["threshold"], "val_sensitivity": v["val"]["sensitivity"],
                                      "val_specificity": v["val"]["specificity"]}
                                  for k, v in result["alternatives"].items()}}
    write_json(cfg_path, cfg)
    meta_path = bundle_dir / "configs" / "metadata.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    # metadata.json's medai section is merged under medai.json: keep the two from disagreeing.
    meta.setdefault("medai", {})["decision_threshold"] = op["threshold"]
    meta["medai"]["temperature"] = result["temperature"]
    write_json(meta_path, meta)
    inf_path = bundle_dir / "configs" / "inference.json"
    inf = json.loads(inf_path.read_text(encoding="utf-8"))
    steps = [s for s in inf["postprocessing"]["transforms"] if s.get("_target_") != "Lambdad"]
    inf["postprocessing"]["transforms"] = [temperature_step(result["temperature"])] + steps
    write_json(inf_path, inf)
    write_json(bundle_dir / "docs" / "metrics.json", result)
    card = bundle_dir / "docs" / "README.md"
    if card.exists():
        with atomic_output(card) as tmp:
            tmp.write_text(replace_results_section(card.read_text(encoding="utf-8"), results_section(result)))


def main(argv=None) -> int:
    from MedAILib.tasks.classification.metrics import format_metrics

    p = argparse.ArgumentParser(prog="python -m MedAILib.tasks.classification.calibration",
                                description=__doc__.split("\n")[0])
    p.add_argument("--bundle", required=True, help="bundle folder (written in place: configs/ and docs/)")
    p.add_argument("--data", required=True, help="MedMNIST .npz with val_ and test_ splits")
    p.add_argument("--method", choices=OPERATING_METHODS, default="youden")
    p.add_argument("--sensitivity", type=float, default=None, help="target sensitivity (with --method sensitivity)")
    p.add_argument("--dry-run", action="store_true", help="print the figures, write nothing")
    args = p.parse_args(argv)
    r = calibrate(args.bundle, args.data, args.method, args.sensitivity)
    op = r["operating_point"]
    print(f"temperature {r['temperature']:.4f}; threshold {op['threshold']:.4f} ({op['method']} on val: "
          f"sensitivity {op['sensitivity']:.3f}, specificity {op['specificity']:.3f})")
    print(format_metrics(r["test"], "test split at the operating point"))
    if not args.dry_run:
        store(args.bundle, r, args.data)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
