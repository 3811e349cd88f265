"""PNG of a cine with its label contours over the phases: rows = slices, columns = frames, in the
acquisition plane (array[k] as stored: how short-axis cine is read), one grey window per slice."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence as Seq

import numpy as np

from MedAILib.io.preview import save_figure


def cine_contours_png(images, labels, path, frames: Optional[Seq[int]] = None, slices: Optional[Seq[int]] = None,
                      frame_titles: Optional[Seq[str]] = None, reference=None, title: Optional[str] = None,
                      crop: bool = True) -> Path:
    """``images``/``labels`` are Sequences on one grid; ``reference`` (optional, a dict
    {(frame, slice): 2D mask}) is drawn dashed. Frames default to 8 spread over the cycle; slices
    to 3 through the labelled region. ``crop`` zooms on the labels' bounding box."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lab = labels.array()  # (T, K, J, I)
    img = images.array()
    T, K = lab.shape[:2]
    frames = list(frames) if frames is not None else [int(round(x)) for x in np.linspace(0, T - 1, min(8, T))]
    if slices is None:
        present = np.nonzero(lab.reshape(T, K, -1).any(axis=(0, 2)))[0]
        lo, hi = (present.min(), present.max()) if present.size else (0, K - 1)
        slices = sorted({int(round(x)) for x in np.linspace(lo, hi, 5)[1:-1]}) or [K // 2]
    if crop and lab.any():
        j, i = np.nonzero(lab.any(axis=(0, 1)))
        pad = 20
        rs = slice(max(0, j.min() - pad), j.max() + pad + 1)
        cs = slice(max(0, i.min() - pad), i.max() + pad + 1)
    else:
        rs, cs = slice(None), slice(None)
    colors = {}
    for info in labels.labels or []:
        colors[info.value] = info.color
    fig, axes = plt.subplots(len(slices), len(frames), figsize=(1.9 * len(frames), 2.0 * len(slices) + 0.5),
                             squeeze=False)
    for r, k in enumerate(slices):
        lo, hi = np.percentile(img[:, k, rs, cs], [1, 99.5])
        for c, t in enumerate(frames):
            ax = axes[r][c]
            ax.imshow(img[t, k, rs, cs], cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            for value, color in colors.items():
                m = lab[t, k, rs, cs] == value
                if m.any():
                    ax.contour(m.astype(float), levels=[0.5], colors=[color], linewidths=1.2)
            if reference is not None and (t, k) in reference:
                ax.contour(reference[(t, k)][rs, cs].astype(float), levels=[0.5], colors=["cyan"],
                           linewidths=1.0, linestyles="dashed")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(frame_titles[c] if frame_titles else f"frame {t + 1}", fontsize=8)
            if c == 0:
                ax.set_ylabel(f"slice {k + 1}", fontsize=8)
    return save_figure(fig, path, title)
