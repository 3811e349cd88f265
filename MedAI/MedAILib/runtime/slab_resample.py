"""MONAI's resampling (``SpatialResample``: ``affine_grid`` + ``grid_sample`` in float64), computed one
slab of the output at a time, with bit-identical values and without a float64 copy of the input.

Why: MONAI resamples the whole volume at once through a dense float64 sampling grid (3 doubles per
output voxel) after copying its input to float64. At CT size (512x512x300) the way back to the input
grid alone holds ~3 GB. Every output voxel of ``grid_sample`` depends only on its own grid point and
the input, so any subset of output voxels can be computed on its own, provided that

- the grid points are the same numbers: ``affine_grid`` is ``base_rows @ theta^T`` (one ``bmm``); the
  rows of a slab are built from the same ``linspace`` values and multiplied by the same ``bmm``
  (tests compare with ``torch.nn.functional.affine_grid`` for axis-aligned and oblique ``theta``);
- the interpolation is the same kernel: ``torch.nn.functional.grid_sample`` itself, on an input
  with the full shape (the source index depends on the input size). That input is a float64 tensor
  whose memory is *reserved* (an anonymous mapping) but resident only for the planes a slab reads:
  they are written just before the slab is sampled and handed back to the system after
  (``madvise(MADV_DONTNEED)``), so at any time a few planes of float64 exist, never the volume.
"""

from __future__ import annotations

import math
import mmap
from typing import Callable, Sequence

import numpy as np
import torch

# Output voxels per slab: bounds the slab's grid (3 doubles), base rows (4) and values (C) per voxel.
CHUNK_VOXELS = 1 << 18

SUPPORTED_MODES = ("bilinear", "nearest")
SUPPORTED_PADDING = ("zeros", "border")


def normalized_theta(xform: torch.Tensor, src_size: Sequence[int], dst_size: Sequence[int],
                     align_corners: bool) -> torch.Tensor:
    """The (1, 3, 4) ``theta`` MONAI's ``AffineTransform(normalized=False, reverse_indexing=True)``
    hands to ``affine_grid`` for the index-space ``xform`` (dst index -> src index)."""
    from monai.networks.utils import to_norm_affine

    theta = torch.as_tensor(xform, dtype=torch.float64)[None].clone()
    theta = to_norm_affine(affine=theta, src_size=tuple(int(s) for s in src_size),
                           dst_size=tuple(int(s) for s in dst_size), align_corners=align_corners, zero_centered=False)
    rev = torch.as_tensor(range(2, -1, -1))
    theta[:, :3] = theta[:, rev]
    theta[:, :, :3] = theta[:, :, rev]
    return theta[:, :3]


def linspace_from_neg_one(n: int, align_corners: bool) -> torch.Tensor:
    """ATen's ``linspace_from_neg_one`` (the base grid of ``affine_grid``), float64."""
    if n <= 1:
        return torch.zeros(1, dtype=torch.float64)
    r = torch.linspace(-1, 1, n, dtype=torch.float64)
    if not align_corners:
        r = r * (n - 1) / n
    return r


def grid_points(theta: torch.Tensor, base_w: torch.Tensor, base_h: torch.Tensor, base_d: torch.Tensor) -> torch.Tensor:
    """Grid points (n, 3) = (x, y, z) of the output voxels whose base coordinates are given (float64
    tensors broadcastable to one shape): the rows ``affine_grid`` computes for them."""
    shape = torch.broadcast_shapes(base_w.shape, base_h.shape, base_d.shape)
    base = torch.empty((*shape, 4), dtype=torch.float64)
    base[..., 0] = base_w
    base[..., 1] = base_h
    base[..., 2] = base_d
    base[..., 3] = 1.0
    return base.view(1, -1, 4).bmm(theta.transpose(1, 2)).view(-1, 3)


def _source_index(coord: torch.Tensor, size: int, padding: str, align_corners: bool) -> torch.Tensor:
    """ATen's ``grid_sampler_compute_source_index`` (unnormalise; clip for border)."""
    if align_corners:
        coord = ((coord + 1) / 2) * (size - 1)
    else:
        coord = ((coord + 1) * size - 1) / 2
    if padding == "border":
        coord = torch.clamp(coord, min=0.0).clamp_(max=float(size - 1))
    return coord


class ReservedPlanes:
    """A (1, C, D, H, W) float64 tensor backed by reserved memory: only planes (along D) that are
    written take RAM, and :meth:`keep` hands the others back. Reading a plane never written gives 0."""

    def __init__(self, channels: int, size: Sequence[int]):
        self.C, (self.D, self.H, self.W) = int(channels), (int(s) for s in size)
        self.plane_bytes = self.H * self.W * 8
        n = self.C * self.D * self.H * self.W
        self._map = mmap.mmap(-1, max(8, n * 8))
        self.array = np.frombuffer(self._map, dtype=np.float64, count=n).reshape(self.C, self.D, self.H, self.W)
        self.tensor = torch.from_numpy(self.array)[None]
        self.lo = self.hi = 0  # planes [lo, hi) are written

    def keep(self, lo: int, hi: int, fill: Callable) -> None:
        """Make planes [lo, hi) resident (``fill(c, a, b)`` returns channel c's planes a..b-1) and
        release every other plane written before."""
        lo, hi = max(0, lo), min(self.D, hi)
        if hi <= lo:
            return
        todo = [(lo, hi)]
        if self.hi > self.lo:  # planes [self.lo, self.hi) are written: release those not wanted now
            if self.lo < lo:
                self._release(self.lo, min(self.hi, lo))
            if self.hi > hi:
                self._release(max(self.lo, hi), self.hi)
            todo = [(lo, min(hi, self.lo)), (max(lo, self.hi), hi)]
        for a, b in todo:
            if b > a:
                for c in range(self.C):
                    self.array[c, a:b] = fill(c, a, b)
        self.lo, self.hi = lo, hi

    def _release(self, a: int, b: int) -> None:
        if not hasattr(self._map, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
            return  # no way to hand pages back here: they stay resident (values are unaffected)
        page = mmap.PAGESIZE
        for c in range(self.C):
            start = (c * self.D + a) * self.plane_bytes
            end = (c * self.D + b) * self.plane_bytes
            start, end = math.ceil(start / page) * page, (end // page) * page
            if end > start:
                self._map.madvise(mmap.MADV_DONTNEED, start, end - start)

    def close(self) -> None:
        self.tensor = self.array = None
        try:
            self._map.close()
        except BufferError:  # a view is still alive somewhere: the mapping goes with it
            pass


def resample_slabs(fill: Callable, channels: int, src_size: Sequence[int], xform: torch.Tensor,
                   out_size: Sequence[int], mode: str, padding: str, align_corners: bool, consume: Callable,
                   progress: Callable = None) -> None:
    """MONAI's ``SpatialResample`` of an input of spatial size ``src_size`` (channels read through
    ``fill(c, d0, d1)`` -> planes d0..d1-1 as an array) to ``out_size`` with the index-space ``xform``,
    one slab of output planes (along its first axis) at a time: ``consume(d0, d1, values)`` receives
    float64 values (C, d1 - d0, H, W), exactly MONAI's for those voxels."""
    if mode not in SUPPORTED_MODES or padding not in SUPPORTED_PADDING:
        raise ValueError(f"unsupported resampling {mode}/{padding}")
    D, H, W = (int(s) for s in out_size)
    theta = normalized_theta(xform, src_size, out_size, align_corners)
    lw, lh, ld = (linspace_from_neg_one(n, align_corners) for n in (W, H, D))
    src = ReservedPlanes(channels, src_size)
    rows = max(1, CHUNK_VOXELS // max(1, H * W))
    try:
        for d0 in range(0, D, rows):
            d1 = min(D, d0 + rows)
            pts = grid_points(theta, lw.view(1, 1, -1), lh.view(1, -1, 1), ld[d0:d1].view(-1, 1, 1))
            iz = _source_index(pts[:, 2], int(src_size[0]), padding, align_corners)
            finite = iz[torch.isfinite(iz)]
            if finite.numel():
                lo, hi = int(math.floor(float(finite.min()))) - 1, int(math.floor(float(finite.max()))) + 3
                src.keep(lo, hi, fill)
            grid = pts.view(1, d1 - d0, H, W, 3)
            out = torch.nn.functional.grid_sample(src.tensor, grid, mode=mode, padding_mode=padding,
                                                  align_corners=align_corners)
            del pts, grid, iz, finite
            consume(d0, d1, out[0])
            if progress is not None:
                progress(d1 / D)
    finally:
        src.close()
