"""Feature-level fusion entry: bring N inputs of a multi-input model onto the first input's grid.

``align_inputs`` is what the segmentation pipeline calls before stacking inputs as channels:

- same grid as input 0 (and, when known, the same DICOM frame of reference): used as is;
- different grid, ``assume_aligned=True`` or ``register=False``: resampled by world coordinates
  (right when all series come from one scanner session without patient motion);
- otherwise: registered to input 0 (rigid by default, Mattes MI) and resampled onto its grid.

Each step is recorded (what was done, metric before/after, the fixed->moving transform as a 4x4
RAS matrix) so the caller can report it and the user can check it.
"""

from __future__ import annotations

from typing import Optional, Sequence

from MedAILib.core.errors import InputError
from MedAILib.core.progress import Progress
from MedAILib.core.volume import Volume
from MedAILib.runtime.resample import resample_to
from MedAILib.tasks.registration import registration


def _frame(volume: Volume) -> Optional[str]:
    return volume.metadata.get("frame_of_reference_uid") or None


def needs_alignment(volume: Volume, reference: Volume) -> bool:
    """True when ``volume`` is not on ``reference``'s grid, or is in a different frame of reference."""
    fa, fb = _frame(volume), _frame(reference)
    return (not volume.same_grid(reference)) or (fa is not None and fb is not None and fa != fb)


def align_inputs(volumes: Sequence[Volume], assume_aligned: bool = False, register: bool = True,
                 transform_type: str = "rigid", progress: Optional[Progress] = None, **registration_options):
    """Return ``(aligned_volumes, record)``: every volume on ``volumes[0]``'s grid, plus one dict per input.

    ``registration_options`` go to :func:`registration.register` (e.g. ``init="moments"``).
    """
    volumes = list(volumes)
    if not volumes:
        raise InputError("no input volumes", "give at least one image")
    ref = volumes[0]
    aligned = [ref]
    record = [{"input": 0, "action": "reference", "source": ref.metadata.get("source")}]
    todo = [i for i, v in enumerate(volumes[1:], start=1) if needs_alignment(v, ref)]
    for i in range(1, len(volumes)):
        v = volumes[i]
        entry = {"input": i, "source": v.metadata.get("source")}
        if i not in todo:
            entry["action"] = "none (same grid)"
            aligned.append(v)
        elif assume_aligned or not register or v.is_labelmap:
            entry["action"] = "resampled by world coordinates"
            aligned.append(resample_to(v, ref, "nearest" if v.is_labelmap else "linear"))
        else:
            if progress is not None:
                k = todo.index(i)
                progress.stage(k / len(todo), (k + 1) / len(todo))
            result = registration.register(ref, v, transform_type=transform_type, progress=progress,
                                           **registration_options)
            entry.update(action=f"registered ({result.transform_type}) and resampled",
                         metric_before=round(result.metric_before, 5), metric_after=round(result.metric_after, 5),
                         reliable=result.reliability.get("reliable"), warnings=list(result.warnings))
            if result.transform_type != transform_type:
                entry["action"] += f" ({transform_type} was asked for and fell back to {result.transform_type})"
            if result.is_linear:
                entry["fixed_to_moving_ras"] = result.fixed_to_moving_ras().round(6).tolist()
            entry["transform"] = result.transform
            aligned.append(result.resampled)
        record.append(entry)
    if progress is not None:
        progress.stage(0.0, 1.0)
    return aligned, record
