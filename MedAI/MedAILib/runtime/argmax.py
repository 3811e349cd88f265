"""Argmax over the class channel, bit-identical to ``torch.argmax(x, dim=0, keepdim=True)`` but
several times faster on the CPU.

Why: ``torch.argmax`` reducing the *outer* dimension of a (C, X, Y, Z) tensor walks memory with a
stride of X*Y*Z and runs ~5x slower than a pass per class (measured 0.58 s vs 0.09 s for 3 x 96^3
on one core; at 512x512x300 that is tens of seconds). A running maximum over the channels gives the
same answer: the strict ``>`` keeps the first maximal index on ties, as ``torch.argmax`` does, and
inputs with NaN (which ``torch.argmax`` treats as the maximum) go to ``torch.argmax`` itself.

``FastArgmaxd`` stands in for a bundle's plain ``AsDiscreted(argmax=True)`` step (same output,
dtype and MetaTensor metadata); any other AsDiscreted option keeps MONAI's own transform.
"""

from __future__ import annotations

import torch

# Above this many classes a per-class pass stops paying off against one strided reduction.
MAX_CHANNELS = 32


def channel_argmax(x: torch.Tensor) -> torch.Tensor:
    """``torch.argmax(x, dim=0, keepdim=True)`` (int64), computed one class at a time."""
    data = x.as_tensor() if hasattr(x, "as_tensor") else x
    c = data.shape[0]
    if c == 1 or c > MAX_CHANNELS or data.is_complex() or data.device.type != "cpu" or torch.isnan(data).any():
        return torch.argmax(data, dim=0, keepdim=True)
    best = data[0].clone()
    index = torch.zeros(data.shape[1:], dtype=torch.int64)
    for k in range(1, c):
        better = data[k] > best
        index.masked_fill_(better, k)
        torch.maximum(best, data[k], out=best)
    return index.unsqueeze(0)


def is_plain_argmax(transform) -> bool:
    """A MONAI ``AsDiscreted`` that only takes the argmax over channel 0 (no one-hot, threshold, rounding)."""
    from monai.transforms import AsDiscreted

    if type(transform) is not AsDiscreted:
        return False
    kw = getattr(transform.converter, "kwargs", {})
    return (all(bool(a) for a in transform.argmax) and all(o is None for o in transform.to_onehot)
            and all(o is None for o in transform.threshold) and all(o is None for o in transform.rounding)
            and kw.get("dim", 0) == 0 and kw.get("keepdim", True) is True)


class FastArgmaxd:
    """Drop-in for a plain ``AsDiscreted(keys, argmax=True)``: the argmax is computed here, everything
    else (output dtype, MetaTensor metadata) by the bundle's own transform with ``argmax=False``."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, data: dict) -> dict:
        from monai.data import MetaTensor

        t = self.transform
        d = dict(data)
        for key in t.key_iterator(d):
            img = d[key]
            index = channel_argmax(img)
            if isinstance(img, MetaTensor):
                index = MetaTensor(index, meta=img.meta, applied_operations=img.applied_operations)
            d[key] = t.converter(index, False, None, None, None)
        return d
