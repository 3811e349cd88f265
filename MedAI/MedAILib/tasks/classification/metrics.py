"""Classification metrics (scikit-learn): AUC, accuracy, precision, recall, F1, confusion matrix.

``y_score`` is either the probability of the positive class (binary, shape N) or one probability
column per class (shape N×C). Predictions are ``score >= threshold`` for binary tasks and the arg-max
otherwise. Precision/recall/F1 are for the positive class (binary) or macro averages (multi-class).
"""

from __future__ import annotations

import math

import numpy as np
from sklearn import metrics as skm


def classification_metrics(y_true, y_score, threshold: float = 0.5, class_names=None) -> dict:
    """Return a dict: n, auc, accuracy, precision, recall, f1, specificity (binary), confusion_matrix
    (rows = true class, columns = predicted class, as nested lists), labels, threshold."""
    y_true = np.asarray(y_true).reshape(-1).astype(int)
    s = np.asarray(y_score, dtype=np.float64)
    if s.ndim == 2 and s.shape[1] == 2:
        s = s[:, 1]  # binary given as two softmax columns
    if len(y_true) != len(s):
        raise ValueError(f"{len(y_true)} labels but {len(s)} scores")
    binary = s.ndim == 1
    n_classes = 2 if binary else s.shape[1]
    labels = list(range(n_classes))
    y_pred = (s >= threshold).astype(int) if binary else s.argmax(1)
    present = np.unique(y_true)
    if len(present) < 2:
        auc = math.nan  # undefined with a single class present
    elif binary:
        auc = float(skm.roc_auc_score(y_true, s))
    else:
        auc = float(skm.roc_auc_score(y_true, s, multi_class="ovr", labels=labels))
    avg = "binary" if binary else "macro"
    p, r, f, _ = skm.precision_recall_fscore_support(y_true, y_pred, average=avg, labels=None if binary else labels,
                                                     zero_division=0)
    cm = skm.confusion_matrix(y_true, y_pred, labels=labels)
    out = {"n": int(len(y_true)), "auc": auc, "accuracy": float(skm.accuracy_score(y_true, y_pred)),
           "precision": float(p), "recall": float(r), "f1": float(f), "confusion_matrix": cm.tolist(),
           "labels": [str(class_names[i]) if class_names else str(i) for i in labels]}
    if binary:
        tn, fp = cm[0]
        out["specificity"] = float(tn / (tn + fp)) if (tn + fp) else math.nan
        out["threshold"] = float(threshold)
    return out


def format_metrics(m: dict, title: str | None = None) -> str:
    """A plain-text table of the scalar metrics followed by the confusion matrix."""
    lines = [title] if title else []
    keys = [k for k in ("n", "auc", "accuracy", "precision", "recall", "specificity", "f1", "threshold") if k in m]
    width = max(len(k) for k in keys)
    for k in keys:
        v = m[k]
        lines.append(f"{k:<{width}}  {v:d}" if isinstance(v, int) else f"{k:<{width}}  {v:.4f}")
    labels = m["labels"]
    cw = max(8, *(len(s) for s in labels))
    lines.append("")
    lines.append("confusion matrix (rows: true, columns: predicted)")
    lines.append(" " * cw + "".join(f"{s:>{cw + 1}}" for s in labels))
    for name, row in zip(labels, m["confusion_matrix"]):
        lines.append(f"{name:<{cw}}" + "".join(f"{v:>{cw + 1}d}" for v in row))
    return "\n".join(lines)
