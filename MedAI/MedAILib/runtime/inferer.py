"""The bundle's inferer (usually MONAI ``SlidingWindowInferer``) run under MedAI's control.

MONAI does the windowing, blending and stitching; MedAI wraps the *predictor* so that every call
(one batch of windows) reports fraction done and time left and checks the cancel token, runs
under ``torch.inference_mode`` with autocast on CUDA, and on out-of-memory retries with a smaller
window batch, then with stitching on the CPU (``sw_device=cuda, device=cpu``), then fully on the
CPU — saying so through ``Progress.log``.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import time
from typing import Optional

import torch

from MedAILib.core.errors import ModelError
from MedAILib.core.progress import CancelToken, Progress


def is_oom(err: BaseException) -> bool:
    if isinstance(err, getattr(torch, "OutOfMemoryError", ())) or isinstance(err, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


def window_total(inferer, spatial_shape) -> Optional[int]:
    """Number of windows the sliding-window inferer cuts from ``spatial_shape`` (None for other inferers)."""
    from monai.data.utils import dense_patch_slices
    from monai.inferers import SlidingWindowInferer
    from monai.inferers.utils import _get_scan_interval
    from monai.utils import ensure_tuple_rep, fall_back_tuple

    if not isinstance(inferer, SlidingWindowInferer):
        return None
    roi = fall_back_tuple(inferer.roi_size, spatial_shape)
    padded = [max(s, r) for s, r in zip(spatial_shape, roi)]
    overlap = ensure_tuple_rep(inferer.overlap, len(spatial_shape))
    scan = _get_scan_interval(padded, roi, len(spatial_shape), overlap)
    return len(dense_patch_slices(padded, roi, scan))


def count_windows(inferer, spatial_shape) -> Optional[int]:
    """Number of predictor calls the sliding-window inferer will make (None for other inferers)."""
    n = window_total(inferer, spatial_shape)
    return None if n is None else math.ceil(n / max(1, int(inferer.sw_batch_size)))


def fallback_plan(device: torch.device, sw_batch_size: int) -> list:
    """Attempts in order: (sw_batch_size, sw_device, stitch_device, message). First = normal run."""
    plan = [(sw_batch_size, device, device, None)]
    b = sw_batch_size
    while b > 1:
        b = max(1, b // 2)
        plan.append((b, device, device, f"out of memory: retrying with {b} window(s) per batch"))
    if device.type != "cpu":
        plan.append((1, device, torch.device("cpu"),
                     f"out of memory: retrying with windows on {device.type} and stitching on the CPU"))
        plan.append((1, torch.device("cpu"), torch.device("cpu"), "out of memory: retrying fully on the CPU (slower)"))
    return plan


class _Predictor:
    """Calls the network for one batch of windows; reports progress and checks cancellation first."""

    def __init__(self, network, total, progress: Progress, cancel: CancelToken, amp: bool, device,
                 cpu_bf16: bool = False):
        self.network, self.total, self.progress, self.cancel = network, total, progress, cancel
        self.amp, self.device, self.calls, self.cpu_bf16 = amp, device, 0, cpu_bf16
        self.t0 = time.monotonic()

    def __call__(self, x, *args, **kwargs):
        self.cancel.check()
        if self.amp:
            ctx = torch.autocast(device_type="cuda", dtype=torch.float16)
        elif self.cpu_bf16:
            ctx = torch.autocast(device_type="cpu", dtype=torch.bfloat16)
        else:
            ctx = contextlib.nullcontext()
        with ctx:
            out = self.network(x.to(self.device), *args, **kwargs)
        out = out.float() if isinstance(out, torch.Tensor) else out
        self.calls += 1
        if self.progress is not None:
            if self.total:
                elapsed = time.monotonic() - self.t0
                left = elapsed / self.calls * (self.total - self.calls)
                self.progress.update(min(1.0, self.calls / self.total),
                                     f"window batch {self.calls}/{self.total} (about {left:.0f} s left)")
            else:
                self.progress.update(0.5, "running the network")
        return out


def cpu_bf16_requested() -> bool:
    """Opt-in bfloat16 autocast for windows run on the CPU (``MEDAI_CPU_BF16=1``). About 2-2.5x faster
    on CPUs with AVX512-BF16/AMX, but not bit-identical to float32 (see docs/performance.md)."""
    return os.environ.get("MEDAI_CPU_BF16", "").strip().lower() in ("1", "true", "yes", "on")


def run_inferer(inferer, network, inputs: torch.Tensor, device=torch.device("cpu"), progress: Optional[Progress] = None,
                cancel: Optional[CancelToken] = None, amp: Optional[bool] = None,
                cpu_bf16: Optional[bool] = None, stitch_device=None) -> torch.Tensor:
    """Run ``inferer(inputs, network)`` (inputs: B, C, *spatial on the CPU); returns float output on the CPU.

    ``cpu_bf16`` (default: ``MEDAI_CPU_BF16``) runs CPU windows under bfloat16 autocast (opt-in).
    ``stitch_device``: start with the sliding-window output on this device (the memory estimate's
    choice when the GPU cannot hold it); the out-of-memory fall-backs follow as usual."""
    from monai.inferers import SlidingWindowInferer

    device = torch.device(device)
    cancel = cancel or (progress.cancel if progress is not None else CancelToken())
    amp = (device.type == "cuda") if amp is None else amp
    cpu_bf16 = cpu_bf16_requested() if cpu_bf16 is None else bool(cpu_bf16)
    sliding = isinstance(inferer, SlidingWindowInferer)
    plan = fallback_plan(device, int(inferer.sw_batch_size)) if sliding else [(1, device, device, None)]
    if sliding and stitch_device is not None and torch.device(stitch_device) != device:
        plan = [(b, sw, torch.device(stitch_device), m) for b, sw, _, m in plan if sw == device] + \
            [p for p in plan if p[1] != device]
    if not sliding and device.type != "cpu":
        plan.append((1, torch.device("cpu"), torch.device("cpu"), "out of memory: retrying on the CPU (slower)"))
    last = None
    for sw_batch, sw_device, stitch_device, message in plan:
        if message and progress is not None:
            progress.log(message)
        run = copy.copy(inferer)
        if sliding:
            run.sw_batch_size, run.sw_device, run.device = sw_batch, sw_device, stitch_device
        total = count_windows(run, tuple(inputs.shape[2:])) if sliding else None
        net = network.to(sw_device) if isinstance(network, torch.nn.Module) else network
        predictor = _Predictor(net, total, progress, cancel, amp and sw_device.type == "cuda", sw_device,
                               cpu_bf16 and sw_device.type == "cpu")
        try:
            with torch.inference_mode():
                x = inputs if sliding else inputs.to(sw_device)
                out = run(x, predictor)
            if isinstance(out, (tuple, list)):
                out = out[0]
            elif isinstance(out, dict):
                out = next(iter(out.values()))
            return out.detach().to("cpu").float()
        except Exception as e:  # noqa: BLE001 - only OOM is retried, everything else re-raised
            if not is_oom(e):
                raise
            last = e
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    raise ModelError(f"not enough memory to run the model even with the smallest settings ({last})",
                     "close other programs, use --fast, or crop the image to the region of interest") from last
