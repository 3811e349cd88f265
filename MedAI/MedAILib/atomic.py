"""Write files so that a partial file never looks complete: temp name in the same folder, then rename."""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

# Multi-part suffixes that writers (SimpleITK, slicerio) read to pick the format.
_COMPOUND = (".nii.gz", ".seg.nrrd", ".seg.nhdr", ".tar.gz")


def full_suffix(path) -> str:
    name = Path(path).name.lower()
    for s in _COMPOUND:
        if name.endswith(s):
            return Path(path).name[-len(s):]
    return Path(path).suffix


@contextlib.contextmanager
def atomic_output(path):
    """Yield a temporary path next to ``path`` with the same suffix; rename it into place on success.

    On any error the temporary file is removed, so a crash, a full disk or a cancel never leaves a
    half-written file under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = full_suffix(path)
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    tmp = path.with_name(f".{stem}.partial-{uuid.uuid4().hex[:8]}{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
