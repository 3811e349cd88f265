"""PNG previews for a person to glance at: a few axial, coronal and sagittal slices of a volume with
an optional labelmap and/or heat-map overlaid (matplotlib, Agg backend: no display needed).

Slices are taken in the volume's own IJK grid but displayed the radiological way (patient right on
the image left, anterior/superior up) using the axis codes, so an LPS- or RAS-stored image looks
the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from MedAILib.core.atomic import atomic_output
from MedAILib.core.volume import Volume


def _to_ras_array(volume: Volume) -> np.ndarray:
    """Array indexed [R, A, S] (nearest axis permutation/flip; oblique images are shown unrotated)."""
    arr = volume.array.transpose(2, 1, 0)  # IJK
    codes = volume.axis_codes
    order, flips = [], []
    for target, pos in (("R", "L"), ("A", "P"), ("S", "I")):
        axis = next(i for i, c in enumerate(codes) if c in (target, pos))
        order.append(axis)
        flips.append(codes[axis] == pos)
    arr = arr.transpose(order)
    for i, f in enumerate(flips):
        if f:
            arr = np.flip(arr, axis=i)
    return arr


def _slice_positions(mask_or_image: np.ndarray, axis: int, n: int) -> list:
    size = mask_or_image.shape[axis]
    if mask_or_image.dtype != bool:
        return [int(round(x)) for x in np.linspace(size * 0.3, size * 0.7, n)]
    idx = np.nonzero(np.any(mask_or_image, axis=tuple(a for a in range(3) if a != axis)))[0]
    if idx.size == 0:
        return [int(round(x)) for x in np.linspace(size * 0.3, size * 0.7, n)]
    return [int(round(x)) for x in np.linspace(idx.min(), idx.max(), n + 2)[1:-1]]


def _view(arr: np.ndarray, axis: int, pos: int) -> np.ndarray:
    """2D slice oriented for display: rows top->bottom, columns patient right on the image left."""
    s = np.take(arr, pos, axis=axis)  # remaining axes in R,A,S order
    if axis == 2:    # axial: (R, A) -> rows A (anterior up), cols R reversed (right on the left)
        return np.flip(s.T, axis=(0, 1))
    if axis == 1:    # coronal: (R, S)
        return np.flip(s.T, axis=(0, 1))
    return np.flip(s.T, axis=0)  # sagittal: (A, S) -> rows S up, cols A (anterior on the right)


def overlay_png(volume: Volume, path, labelmap: Optional[Volume] = None, heatmap: Optional[Volume] = None,
                n_slices: int = 3, title: Optional[str] = None, heatmap_alpha: float = 0.45) -> Path:
    """Write a PNG with ``n_slices`` axial, coronal and sagittal slices; labels/heat-map overlaid.

    ``labelmap`` and ``heatmap`` must be on ``volume``'s grid (segment results always are).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    for other in (labelmap, heatmap):
        if other is not None and not other.same_grid(volume):
            raise ValueError("overlay must be on the image's grid")
    img = _to_ras_array(volume).astype(np.float32)
    finite = img[np.isfinite(img)]
    lo, hi = (np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0))
    lab = _to_ras_array(labelmap) if labelmap is not None else None
    heat = _to_ras_array(heatmap).astype(np.float32) if heatmap is not None else None
    if heat is not None:
        finite = heat[np.isfinite(heat)]
        heat_lo, heat_hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        heat_hi = heat_hi if heat_hi > heat_lo else heat_lo + 1.0
    spacing_ras = np.abs(np.asarray(volume.spacing))  # approximate aspect for display
    codes = volume.axis_codes
    sp = [spacing_ras[next(i for i, c in enumerate(codes) if c in pair)] for pair in ("RL", "AP", "SI")]
    cmap = None
    if lab is not None:
        table = labelmap.label_table()
        maxv = int(max([int(lab.max(initial=0))] + list(table)))
        colors = np.zeros((maxv + 1, 4))
        for v in range(1, maxv + 1):
            c = table[v].color if v in table else (1.0, 1.0, 0.0)
            colors[v] = (*c, 0.5)
        cmap = ListedColormap(colors)
    focus = (lab > 0) if lab is not None and np.any(lab > 0) else img
    fig, axes = plt.subplots(3, n_slices, figsize=(3 * n_slices, 9), squeeze=False)
    aspects = {2: sp[1] / sp[0], 1: sp[2] / sp[0], 0: sp[2] / sp[1]}
    for row, (axis, name) in enumerate(((2, "axial"), (1, "coronal"), (0, "sagittal"))):
        for col, pos in enumerate(_slice_positions(focus, axis, n_slices)):
            ax = axes[row][col]
            ax.imshow(_view(img, axis, pos), cmap="gray", vmin=lo, vmax=hi, aspect=aspects[axis],
                      interpolation="nearest")
            if heat is not None:
                hv = _view(heat, axis, pos)
                # one colour scale for the whole volume; a non-negative map (Grad-CAM, occlusion) hides its zeros
                hv = np.ma.masked_where(~(hv > 0), hv) if heat_lo >= 0 else np.ma.masked_invalid(hv)
                ax.imshow(hv, cmap="jet", alpha=heatmap_alpha, vmin=heat_lo, vmax=heat_hi,
                          aspect=aspects[axis], interpolation="bilinear")
            if lab is not None:
                ax.imshow(_view(lab, axis, pos), cmap=cmap, vmin=0, vmax=cmap.N - 1, aspect=aspects[axis],
                          interpolation="nearest")
            ax.set_title(f"{name} {pos}", fontsize=8)
            ax.axis("off")
    return save_figure(fig, path, title, dpi=80, title_size=10)


def save_figure(fig, path, title: Optional[str] = None, dpi: int = 85, title_size: int = 9) -> Path:
    """The end of every MedAI figure: optional title, tight layout, written atomically (a PNG is
    complete or absent), figure closed (matplotlib keeps open figures alive)."""
    import matplotlib.pyplot as plt

    if title:
        fig.suptitle(title, fontsize=title_size)
    fig.tight_layout()
    path = Path(path)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return path
