"""Preview PNG of a conversion: input / output / real target (when given), a few axial slices each.

Built on :mod:`MedAILib.io.preview` (the same radiological display orientation and slice choice as
every other MedAI preview). Each row has its own grey window (1st-99th percentile inside the
mask), because input and output are in different units.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from MedAILib.core.volume import Volume
from MedAILib.io.preview import _slice_positions, _to_ras_array, _view, save_figure


def conversion_png(rows: Sequence[tuple], path, mask: Optional[np.ndarray] = None, n_slices: int = 3,
                   title: Optional[str] = None) -> Path:
    """``rows``: (label, Volume) pairs on one grid (input, output, reference...). ``mask`` (KJI, that
    grid) picks the slices and the grey windows; without it the middle 30-70 % of the slices are shown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = rows[0][1]
    for label, v in rows[1:]:
        if not v.same_grid(base):
            raise ValueError(f"preview row {label!r} is not on the input's grid")
    m = _to_ras_array(base.with_array(mask.astype(np.uint8))).astype(bool) if mask is not None else None
    positions = _slice_positions(m if m is not None and m.any() else _to_ras_array(base), 2, n_slices)
    codes = base.axis_codes
    sp = np.abs(np.asarray(base.spacing))
    sp = [sp[next(i for i, c in enumerate(codes) if c in pair)] for pair in ("RL", "AP")]
    fig, axes = plt.subplots(len(rows), n_slices, figsize=(3 * n_slices, 3 * len(rows)), squeeze=False)
    for r, (label, vol) in enumerate(rows):
        arr = _to_ras_array(vol).astype(np.float32)
        vals = arr[m] if m is not None and m.any() else arr[np.isfinite(arr)]
        lo, hi = np.percentile(vals, [1, 99]) if vals.size else (0.0, 1.0)
        for c, pos in enumerate(positions):
            ax = axes[r][c]
            ax.imshow(_view(arr, 2, pos), cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1,
                      aspect=sp[1] / sp[0], interpolation="nearest")
            ax.set_title(f"{label}, axial {pos}", fontsize=8)
            ax.axis("off")
    return save_figure(fig, path, title, dpi=80, title_size=10)


def preview_path(output) -> Path:
    """``out.nii.gz`` -> ``out_preview.png`` (next to the output)."""
    from MedAILib.core.atomic import full_suffix

    output = Path(output)
    return output.with_name(output.name[: len(output.name) - len(full_suffix(output))] + "_preview.png")


def write_conversion_preview(source: Volume, result: Volume, path, reference: Optional[Volume] = None,
                             mask: Optional[np.ndarray] = None, source_name: str = "input",
                             target_name: str = "output") -> Path:
    from MedAILib.tasks.synthesis.evaluate import reference_on_grid

    rows = [(f"{source_name} (input)", source), (f"{target_name} (synthesised)", result)]
    if reference is not None:
        rows.append((f"{target_name} (real)", source.with_array(reference_on_grid(reference, source))))
    return conversion_png(rows, path, mask)
