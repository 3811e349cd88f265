"""Training checkpoints (weights, optimiser, RNG states) loaded without running code.

``torch.load(weights_only=True)`` refuses numpy objects by default, and a resume checkpoint holds
numpy's RNG state. Rather than ``weights_only=False`` (which executes whatever pickle sits in the
work folder), allow exactly the numpy array/dtype reconstructors and nothing else.
"""

from __future__ import annotations

import numpy as np
import torch


def _numpy_globals() -> list:
    core = getattr(np, "_core", None) or np.core  # numpy 2 / numpy 1
    allowed = [core.multiarray._reconstruct, np.ndarray, np.dtype]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:  # numpy >= 1.25 pickles dtypes through their classes
        allowed += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")]
    return allowed


def load_checkpoint(path, map_location="cpu"):
    """A checkpoint dict saved with ``torch.save``: tensors, numbers, strings, lists/dicts/tuples and
    numpy arrays only (``weights_only=True``); a pickle that would run code is refused."""
    with torch.serialization.safe_globals(_numpy_globals()):
        return torch.load(path, map_location=map_location, weights_only=True)


def resume_or_start(ckpt_path, log_path, net, optimizer, fresh_state: dict, resume: bool, log=None) -> tuple:
    """(training state, checkpoint or None). With ``resume`` and a checkpoint at ``ckpt_path``: the
    network and optimiser are restored from it and its state continues; otherwise ``fresh_state``
    and a stale epoch log at ``log_path`` is removed (a new run must not append to an old one)."""
    from pathlib import Path

    ckpt_path, log_path = Path(ckpt_path), Path(log_path)
    if resume and ckpt_path.is_file():
        ckpt = load_checkpoint(ckpt_path)
        net.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if log is not None:
            log.info("resumed from %s at epoch %d", ckpt_path, ckpt["state"]["epoch"])
        return ckpt["state"], ckpt
    if log_path.exists():
        log_path.unlink()
    return fresh_state, None
