"""PNG of detected boxes with their scores on the axial CT slices through their centres; reference
boxes (e.g. the readers') dashed.

Slices are oriented exactly as :mod:`MedAILib.io.preview` shows them (its ``_to_ras_array`` and
``_view``: radiological view, patient right on the image left, anterior up). Each box is placed on
the picture by sending its voxel mask through the same two functions, so a box and the image can
never be flipped differently.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from MedAILib.core.volume import Volume
from MedAILib.io.preview import _to_ras_array, _view, save_figure


def _as_dict(b) -> dict:
    return b if isinstance(b, dict) else b.to_dict()


def _placed(volume: Volume, box: dict) -> tuple:
    """(axial index in the RAS-ordered array of the box's centre slice, {axial index: (row0, row1,
    col0, col1)} of the box on each displayed slice it crosses)."""
    mask = np.zeros(volume.array.shape, bool)
    (i0, j0, k0), (i1, j1, k1) = box["voxel_min"], box["voxel_max"]
    mask[k0:k1 + 1, j0:j1 + 1, i0:i1 + 1] = True
    ras = _to_ras_array(volume.with_array(mask))
    s = np.nonzero(np.any(ras, axis=(0, 1)))[0]
    rects = {}
    for pos in s:
        v = _view(ras, 2, int(pos))
        rows, cols = np.nonzero(np.any(v, 1))[0], np.nonzero(np.any(v, 0))[0]
        rects[int(pos)] = (rows.min(), rows.max(), cols.min(), cols.max())
    return (int(round((s.min() + s.max()) / 2)) if s.size else None), rects


def boxes_png(volume: Volume, boxes: list, path, references: Optional[list] = None, max_panels: int = 4,
              title: Optional[str] = None, window=(-1350.0, 150.0)) -> Path:
    """``boxes``: Box objects or their dicts (``voxel_min``/``voxel_max`` on ``volume``'s grid,
    ``label``, ``score``); ``references``: dicts with ``voxel_min``/``voxel_max``. One panel per
    distinct slice through a box centre (top scores first, at most ``max_panels``), showing every
    box and reference crossing that slice; a reference's slice when there is no box."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    items = sorted((_as_dict(b) for b in boxes), key=lambda b: -float(b["score"]))
    refs = [_as_dict(r) for r in references or []]
    placed = [(b, *_placed(volume, b)) for b in items]
    placed_refs = [(r, *_placed(volume, r)) for r in refs]
    img = _to_ras_array(volume).astype(np.float32)
    panels = list(dict.fromkeys(p[1] for p in placed if p[1] is not None))[:max_panels]  # distinct slices
    if not panels:
        panels = [p[1] for p in placed_refs[:1] if p[1] is not None] or [img.shape[2] // 2]
    codes = volume.axis_codes
    sp = np.abs(np.asarray(volume.spacing))
    sp = [sp[next(i for i, c in enumerate(codes) if c in pair)] for pair in ("RL", "AP", "SI")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.6), squeeze=False)
    for n, pos in enumerate(panels):
        ax = axes[0][n]
        ax.imshow(_view(img, 2, pos), cmap="gray", vmin=window[0], vmax=window[1], aspect=sp[1] / sp[0],
                  interpolation="nearest")

        def rect(r, **kw):
            r0, r1, c0, c1 = r
            ax.add_patch(Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0 + 1, r1 - r0 + 1, fill=False, **kw))

        for _, _, rects in placed_refs:
            if pos in rects:
                rect(rects[pos], edgecolor="cyan", linestyle="--", linewidth=1.2)
        for b, _, rects in placed:
            if pos in rects:
                rect(rects[pos], edgecolor="red", linewidth=1.4)
                ax.text(rects[pos][2], rects[pos][0] - 4, f"{b['label']} {float(b['score']):.2f}", color="red",
                        fontsize=7)
        ax.set_title(f"axial {pos}", fontsize=8)
        ax.axis("off")
    return save_figure(fig, path, title)
