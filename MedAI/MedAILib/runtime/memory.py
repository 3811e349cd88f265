"""How much memory a segmentation run will need, measured before it starts, and what to do if it won't fit.

The network's own forward pass is *simulated* on PyTorch's ``meta`` device: tensors there carry shape
and dtype but no data, so a 96³ SwinUNETR window costs milliseconds and no memory. While it runs,
a dispatch hook adds up the bytes of every tensor the forward pass creates and subtracts them when
Python frees them, which gives the true peak of live activations for one window under ``no_grad``
(skip connections held for the decoder included). The rest is arithmetic:

- device: weights + ``sw_batch_size`` x peak window activations + the sliding-window output and
  count buffers (C x voxels in model space) + the input in model space;
- host RAM: input in model space + the probabilities and their inverted copy (post-processing) +
  the label map on the original grid.

Volume size in model space = input voxels x (input spacing / model spacing) per axis.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import weakref
from typing import Optional, Sequence

import numpy as np
import torch

log = logging.getLogger(__name__)

MB = 1024 * 1024
SAFETY = 1.2  # allocator fragmentation, cuDNN workspaces, MONAI/numpy temporaries


@dataclasses.dataclass
class Estimate:
    parameters: int
    weights_bytes: int
    window_activation_bytes: int      # peak live activations of ONE window (batch 1)
    model_space_shape: tuple          # (I, J, K) voxels the network sees
    device: str
    device_bytes: int                 # expected peak on the compute device
    host_bytes: int                   # expected peak in RAM for pre/post-processing
    available_device_bytes: Optional[int]
    available_host_bytes: Optional[int]
    fits: bool
    suggestions: list

    def summary(self) -> str:
        def mb(b):
            return "unknown" if b is None else f"{b / MB:,.0f} MB"

        dev = "RAM" if self.device == "cpu" else self.device
        lines = [f"memory estimate: {self.parameters / 1e6:.2f} M parameters; model-space volume "
                 f"{'x'.join(str(s) for s in self.model_space_shape)}; needs ~{mb(self.device_bytes)} on {dev} "
                 f"(available {mb(self.available_device_bytes)})"
                 + ("" if self.device == "cpu" else f", ~{mb(self.host_bytes)} RAM (available {mb(self.available_host_bytes)})")]
        lines += [f"  suggestion: {s}" for s in self.suggestions]
        return "\n".join(lines)


# --- measuring the network -------------------------------------------------------------------
class _LiveBytes(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts bytes of live tensors created during a forward pass (works on the meta device).

    Backend scratch memory (cuDNN workspaces, CPU im2col/oneDNN buffers) is not a tensor and is not
    counted. Measured on CPU at 96^3, one window: MONAI UNet (spleen bundle's) 37 MB of tensors vs
    ~266 MB peak RSS growth; SegResNet (BraTS bundle's) 234 MB vs ~409 MB. ``conv_workspace`` adds
    each convolution's im2col buffer (an upper bound where PyTorch uses im2col: UNet 209 MB, but
    SegResNet 1.7 GB, where oneDNN needs far less), so it is off by default. The estimate is therefore
    a floor for the network part; the output buffers, which dominate large volumes, are exact.
    """

    def __init__(self, conv_workspace: bool = False):
        super().__init__()
        self.live = 0
        self.peak = 0
        self.conv_workspace = conv_workspace

    def _release(self, n):
        self.live -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if self.conv_workspace and func._schema.name == "aten::convolution" and isinstance(out, torch.Tensor):
            self.peak = max(self.peak, self.live + out.numel() * out.element_size() + _columns_bytes(args, out))
        if func._schema.name.endswith("_") or "out" in (kwargs or {}):
            return out  # in place: no new memory
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(t, torch.Tensor) and t._base is None and not func._schema.name.startswith("aten::view"):
                n = t.numel() * t.element_size()
                self.live += n
                self.peak = max(self.peak, self.live)
                weakref.finalize(t, self._release, n)
        return out


def _columns_bytes(args, out: torch.Tensor) -> int:
    """im2col/col2im buffer of one convolution call (per sample, as PyTorch's CPU kernels loop)."""
    x, w = args[0], args[1]
    transposed, groups = bool(args[6]), int(args[8])
    kernel = math.prod(int(k) for k in w.shape[2:])
    if transposed:  # columns: (C_out * k) x input voxels
        rows, cols = int(w.shape[1]) * groups * kernel, math.prod(int(s) for s in x.shape[2:])
    else:           # columns: (C_in / groups * k) x output voxels
        rows, cols = int(w.shape[1]) * kernel, math.prod(int(s) for s in out.shape[2:])
    return rows * cols * out.element_size()


def window_activation_bytes(network: torch.nn.Module, in_channels: int, roi_size: Sequence[int],
                            dtype: torch.dtype = torch.float32, conv_workspace: bool = False) -> int:
    """Peak bytes of live tensors for one forward pass of a (1, C, *roi) window, simulated on 'meta'."""
    import copy

    try:
        net = copy.deepcopy(network).to("meta").eval()
        x = torch.empty((1, in_channels, *[int(r) for r in roi_size]), device="meta", dtype=dtype)
        counter = _LiveBytes(conv_workspace)
        with torch.no_grad(), counter:
            y = net(x)
            del y
        return int(counter.peak)
    except Exception as e:  # an op without a meta kernel: fall back to a rough feature-map rule
        log.debug("meta simulation failed (%s); using the parameter-count rule", e)
        voxels = math.prod(int(r) for r in roi_size)
        width = max(16, int(sum(p.numel() for p in network.parameters()) ** (1 / 3)))
        return int(voxels * width * 4 * torch.finfo(dtype).bits // 8)


def model_space_shape(size_ijk: Sequence[int], spacing: Sequence[float],
                      target_spacing: Optional[Sequence[float]]) -> tuple:
    if not target_spacing:
        return tuple(int(s) for s in size_ijk)
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(size_ijk, spacing, target_spacing))


# --- what is available -----------------------------------------------------------------------
def available_ram() -> Optional[int]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def available_device_memory(device: str) -> Optional[int]:
    if device == "cpu":
        return available_ram()
    if device.startswith("cuda") and torch.cuda.is_available():
        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    return None  # MPS shares system memory; no reliable free figure


# --- the estimate ----------------------------------------------------------------------------
def estimate(network: torch.nn.Module, in_channels: int, out_channels: int, roi_size: Sequence[int],
             size_ijk: Sequence[int], spacing: Sequence[float], target_spacing: Optional[Sequence[float]] = None,
             sw_batch_size: int = 1, device: str = "cpu", amp: bool = False, has_fast_mode: bool = False,
             available_device: Optional[int] = None, available_host: Optional[int] = None) -> Estimate:
    """Expected peak memory of a sliding-window segmentation and suggestions when it will not fit.

    ``available_*`` override the measured free memory (for tests and "what if" questions).
    """
    dtype = torch.float16 if amp and device != "cpu" else torch.float32
    params = sum(p.numel() for p in network.parameters())
    weights = params * 4
    act = window_activation_bytes(network, in_channels, roi_size, dtype)
    shape = model_space_shape(size_ijk, spacing, target_spacing)
    # The window never exceeds the padded volume; smaller volumes are padded up to roi_size.
    voxels = math.prod(max(a, int(r)) for a, r in zip(shape, roi_size))
    sw_batch = max(1, int(sw_batch_size))
    out_buffers = (out_channels + 1) * voxels * 4          # MONAI accumulates output + count map in float32
    inp = in_channels * voxels * 4
    device_bytes = int(SAFETY * (weights + sw_batch * act + out_buffers + inp))
    original = math.prod(int(s) for s in size_ijk)
    host_bytes = int(SAFETY * (inp + 2 * out_channels * voxels * 4 + out_channels * original * 4 + original * 2))
    if device == "cpu":
        device_bytes, host_bytes = device_bytes + host_bytes, device_bytes + host_bytes
    avail_dev = available_device if available_device is not None else available_device_memory(device)
    avail_host = available_host if available_host is not None else available_ram()
    dev_ok = avail_dev is None or device_bytes <= avail_dev
    host_ok = avail_host is None or host_bytes <= avail_host
    suggestions = []
    if not dev_ok and device != "cpu":
        suggestions.append(f"it will not fit in {device} memory: run with --device cpu (slower, uses RAM)"
                           + (f", or keep {device} with a smaller window batch (sw_batch_size 1 needs "
                              f"~{(device_bytes - (sw_batch - 1) * act * SAFETY) / MB:,.0f} MB)" if sw_batch > 1 else ""))
    if not (dev_ok and host_ok):
        if has_fast_mode:
            suggestions.append("use --fast (coarser spacing: several times fewer voxels)")
        suggestions.append(f"crop the image to the region of interest first (the model sees "
                           f"{'x'.join(map(str, shape))} voxels)")
        if not host_ok or device == "cpu":
            suggestions.append("close other programs or use a machine with more RAM")
    return Estimate(params, weights, act, shape, device, device_bytes, host_bytes, avail_dev, avail_host,
                    bool(dev_ok and host_ok), suggestions)


SMALL_VOXELS = 128 ** 3      # window and model-space volume at most this ...
SMALL_PARAMETERS = 20_000_000  # ... for a network at most this big ...
SMALL_FREE_BYTES = 4 << 30     # ... with this much free memory: cannot run out, skip the simulation


def clearly_fits(bundle, volume, device: str = "cpu") -> bool:
    """Cheap pre-check so small jobs do not pay for the simulation (its first call costs ~1-3 s)."""
    inferer = bundle.inferer
    roi = getattr(inferer, "roi_size", None)
    t = bundle.spacing_transform_config() if hasattr(bundle, "spacing_transform_config") else None
    target = t.get("pixdim") if t else None
    if not roi or (target is not None and not (isinstance(target, (list, tuple)) and len(target) == 3)):
        return False
    shape = model_space_shape(volume.size_ijk, np.asarray(volume.spacing).tolist(), target)
    params = sum(p.numel() for p in bundle.network.parameters())
    free = available_device_memory(device)
    sw = int(getattr(inferer, "sw_batch_size", 1) or 1)
    return (sw * math.prod(int(r) for r in roi) <= SMALL_VOXELS and math.prod(shape) <= SMALL_VOXELS
            and params <= SMALL_PARAMETERS and free is not None and free >= SMALL_FREE_BYTES)


def estimate_for_bundle(bundle, volume, device: str = "cpu", amp: bool = False,
                        sw_batch_size: Optional[int] = None) -> Estimate:
    """Estimate for running ``bundle`` (MedAILib.models.Bundle) on ``volume`` (the first input)."""
    net = bundle.network
    inferer = bundle.inferer
    roi = getattr(inferer, "roi_size", None) or [96, 96, 96]
    sw = sw_batch_size or getattr(inferer, "sw_batch_size", 1)
    in_ch = int(getattr(net, "in_channels", 0) or len(getattr(bundle, "input_names", [])) or 1)
    out_ch = int(getattr(net, "out_channels", 0) or (len(bundle.output_channel_names) or 2))
    t = bundle.spacing_transform_config() if hasattr(bundle, "spacing_transform_config") else None
    target = t.get("pixdim") if t else None
    if target is not None and not (isinstance(target, (list, tuple)) and len(target) == 3):
        target = None
    fast = bool(getattr(getattr(bundle, "entry", None), "fast_spacing", None)) if bundle.entry is not None else False
    return estimate(net, in_ch, out_ch, roi, volume.size_ijk, np.asarray(volume.spacing).tolist(), target,
                    sw, device, amp, fast)
