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

    def __init__(self, conv_workspace=False):
        super().__init__()
        self.live = 0
        self.peak = 0
        self.conv_workspace = conv_workspace  # True: every convolution; "transposed": transposed ones only

    def _release(self, n):
        self.live -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if self.conv_workspace and func._schema.name == "aten::convolution" and isinstance(out, torch.Tensor) \
                and (self.conv_workspace is True or bool(args[6])):
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
                            dtype: torch.dtype = torch.float32, conv_workspace=False, batch: int = 1) -> int:
    """Peak bytes of live tensors for one forward pass of a (batch, C, *roi) window batch, simulated on
    'meta'. ``conv_workspace``: see :class:`_LiveBytes`."""
    import copy

    try:
        net = copy.deepcopy(network).to("meta").eval()
        x = torch.empty((int(batch), in_channels, *[int(r) for r in roi_size]), device="meta", dtype=dtype)
        counter = _LiveBytes(conv_workspace)
        with torch.no_grad(), counter:
            y = net(x)
            del y
        return int(counter.peak)
    except Exception as e:  # an op without a meta kernel: fall back to a rough feature-map rule
        log.debug("meta simulation failed (%s); using the parameter-count rule", e)
        voxels = math.prod(int(r) for r in roi_size)
        width = max(16, int(sum(p.numel() for p in network.parameters()) ** (1 / 3)))
        return int(batch * voxels * width * 4 * torch.finfo(dtype).bits // 8)


def model_space_shape(size_ijk: Sequence[int], spacing: Sequence[float],
                      target_spacing: Optional[Sequence[float]]) -> tuple:
    if not target_spacing:
        return tuple(int(s) for s in size_ijk)
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(size_ijk, spacing, target_spacing))


# --- handing freed memory back ----------------------------------------------------------------
_LIBC = None


def release_free_memory() -> None:
    """Ask the C allocator to return freed heap memory to the system (glibc ``malloc_trim``).

    Why: after a large block is freed, glibc raises its mmap threshold (up to 32 MB), so the next
    slabs and temporaries of that size come from the heap, whose freed pages stay counted in the
    process's memory until trimmed. Called between the stages of a run (a few ms); a no-op elsewhere.
    """
    global _LIBC
    if _LIBC is None:
        try:
            import ctypes
            import ctypes.util

            lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _LIBC = lib if hasattr(lib, "malloc_trim") else False
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


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


# --- the whole run, stage by stage (host RAM) --------------------------------------------------------
#
# What a segmentation holds at each stage, above what the process held before the case (bytes;
# N input voxels, M model-space voxels, C classes, Cin input channels). Measured at three CT sizes
# with the Model Zoo spleen configs (docs/performance.md, "Clinical size"), streamed path:
#   read      the input as read + the reader's copy (SimpleITK image -> numpy)
#   forward   input + model-space image + MONAI's intensity transforms on it (~3 more copies)
#   network   input + model-space image + sliding-window output and count map + one window batch
#   post      input + logits and their softmax (model space) + labels (1 byte/voxel) + slabs
#   write     input + labels + the writer's copy + the per-segment statistics' slab
INTENSITY_COPIES = 3              # transient model-space copies of MONAI's eager intensity transforms
STATISTICS_SLAB = 1 << 20         # voxels per slab of the per-segment statistics (int64, int32, 2 float64)
REFUSE_MARGIN = 1.25              # refuse only beyond the estimate's error (+-25 %) ...
MEMORY_CHECK_ENV = "MEDAI_MEMORY_CHECK"  # ... and never with MEDAI_MEMORY_CHECK=warn (or off)


@dataclasses.dataclass
class RunEstimate:
    stages: dict                  # stage -> expected peak bytes above the memory held before the case
    input_bytes: int              # the input arrays as read (held through every stage)
    strategy: str                 # "slab by slab" or "whole volume (MONAI)"
    model_space_shape: tuple
    window_bytes: int             # one batch of windows through the network
    window_source: str            # "measured" (cached per bundle and machine) or "simulated"
    device: str
    device_bytes: Optional[int]   # on a GPU: weights + window batch + sliding-window buffers
    available_bytes: Optional[int] = None
    available_device_bytes: Optional[int] = None

    @property
    def peak_stage(self) -> str:
        return max(self.stages, key=self.stages.get)

    @property
    def peak_bytes(self) -> int:
        return int(max(self.stages.values()))

    def needed_now(self, input_resident: bool) -> int:
        """What must still be found in RAM (the input's bytes are already there once it was read)."""
        return self.peak_bytes - (self.input_bytes if input_resident else 0)

    def summary(self) -> str:
        stages = ", ".join(f"{k} {v / MB:,.0f}" for k, v in self.stages.items())
        avail = "unknown" if self.available_bytes is None else f"{self.available_bytes / MB:,.0f} MB"
        return (f"memory estimate ({self.strategy}): peak ~{self.peak_bytes / MB:,.0f} MB above the process "
                f"({self.peak_stage}; stages MB: {stages}; model space {'x'.join(map(str, self.model_space_shape))}, "
                f"window batch {self.window_bytes / MB:,.0f} MB {self.window_source}); RAM available {avail}")


def header_volumes(size_ijk: Sequence[int], ijk_to_ras, dtype, n_inputs: int = 1) -> list:
    """Stand-ins for the inputs built from a header (shape, geometry, dtype) only: their arrays are
    broadcast zeros (no memory), enough for MONAI's lazy planning of the model space."""
    from types import SimpleNamespace

    kji = tuple(int(s) for s in size_ijk)[::-1]
    arr = np.broadcast_to(np.zeros((), dtype=np.dtype(dtype)), kji)
    return [SimpleNamespace(array=arr, ijk_to_ras=np.asarray(ijk_to_ras, dtype=float), metadata={})
            for _ in range(int(n_inputs))]


def _rss_bytes() -> Optional[int]:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def measure_window_bytes(network: torch.nn.Module, in_channels: int, roi_size: Sequence[int], batch: int,
                         device: str = "cpu") -> Optional[int]:
    """Memory one batch of windows really takes on ``device`` (activations, convolution workspaces,
    the output): two forward passes on zeros (one on CUDA), peak resident memory sampled every millisecond on the
    CPU (``max_memory_allocated`` on CUDA), plus the sliding window's copies around a batch. None where
    it cannot be measured (no /proc)."""
    import threading

    x = torch.zeros((int(batch), int(in_channels), *[int(r) for r in roi_size]))
    if device.startswith("cuda"):
        dev = torch.device(device)
        net = network.to(dev)
        torch.cuda.synchronize(dev)
        base = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16):
            y = net(x.to(dev))
        torch.cuda.synchronize(dev)
        del y
        return int(torch.cuda.max_memory_allocated(dev) - base)
    if _rss_bytes() is None:
        return None
    release_free_memory()
    base = _rss_bytes()
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes() or 0)
            done.wait(0.001)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        # Two batches, as the sliding window runs them one after the other: the allocator's pages
        # kept from the first plus the second's are the steady peak (~10 % above one pass alone).
        for _ in range(2):
            with torch.inference_mode():
                y = network(x)
            peak[0] = max(peak[0], _rss_bytes() or 0)
            del y
    finally:
        done.set()
        t.join()
    release_free_memory()
    # MONAI's sliding window around each batch: the windows copied out of the image, and the output
    # weighted by the importance map (two copies of the output batch)
    out_ch = int(getattr(network, "out_channels", 0) or 2)
    stitching = int(batch) * (int(in_channels) + 2 * out_ch) * math.prod(int(r) for r in roi_size) * 4
    return max(0, int(peak[0] - base)) + stitching


WINDOW_MEASURE_VERSION = 2  # how measure_window_bytes measures (2: two batches + stitching copies)


def _window_cache_key(bundle, in_channels: int, roi, batch: int, device: str) -> Optional[str]:
    import hashlib
    import platform

    try:
        w = bundle.weights_path
        st = w.stat()
        parts = [str(w.resolve()), st.st_size, st.st_mtime_ns]
    except Exception:  # noqa: BLE001 - no weights file: no cache
        return None
    parts += [WINDOW_MEASURE_VERSION, type(bundle.network).__name__, in_channels, list(map(int, roi)), int(batch), device.split(":")[0],
              torch.__version__, torch.get_num_threads(), platform.machine(), platform.processor()]
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:32]


def window_batch_bytes(bundle, in_channels: int, roi, batch: int, device: str = "cpu") -> tuple:
    """(bytes, "measured" | "simulated") of one batch of windows: measured once per bundle, machine and
    torch (cached under MEDAI_HOME/cache/memory); the meta-device simulation x 1.5 where it cannot be."""
    import json

    key = _window_cache_key(bundle, in_channels, roi, batch, device)
    path = None
    if key is not None:
        from MedAILib.models.cache import medai_home

        path = medai_home() / "cache" / "memory" / f"{key}.json"
        try:
            return int(json.loads(path.read_text(encoding="utf-8"))["window_bytes"]), "measured"
        except (OSError, ValueError, KeyError, TypeError):
            pass
    try:
        measured = measure_window_bytes(bundle.network, in_channels, roi, batch, device)
    except Exception as e:  # noqa: BLE001 - an estimate must never break a run
        log.debug("window batch not measured: %s", e)
        measured = None
    if measured is None:
        sim = window_activation_bytes(bundle.network, in_channels, roi, batch=batch, conv_workspace="transposed")
        return int(1.5 * sim), "simulated"
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}")
            tmp.write_text(json.dumps({"window_bytes": measured}), encoding="utf-8")
            os.replace(tmp, path)
        except OSError:
            pass
    return measured, "measured"


def _channels(bundle) -> tuple:
    net = bundle.network
    in_ch = int(getattr(net, "in_channels", 0) or len(getattr(bundle, "input_names", [])) or 1)
    out_ch = int(getattr(net, "out_channels", 0) or (len(getattr(bundle, "output_channel_names", []) or []) or 2))
    return in_ch, out_ch


def estimate_run(bundle, size_ijk: Sequence[int], ijk_to_ras, dtype, n_inputs: int = 1, device: str = "cpu",
                 streamed: Optional[bool] = None, measure: bool = True) -> RunEstimate:
    """Expected peak memory of segmenting an input with this header (size, IJK->RAS, dtype) with
    ``bundle``, stage by stage, for the strategy the run will use (slab by slab where the bundle's
    preprocessing allows it). ``measure=False`` simulates the window batch instead of measuring it."""
    from MedAILib.runtime import streaming as st
    from MedAILib.runtime.model_space import streaming_enabled, volume_meta

    n_vox = math.prod(int(s) for s in size_ijk)
    in_bytes = int(n_inputs) * n_vox * np.dtype(dtype).itemsize
    in_ch, out_ch = _channels(bundle)
    roi = [int(r) for r in (getattr(bundle.inferer, "roi_size", None) or [96, 96, 96])]
    sw = int(getattr(bundle.inferer, "sw_batch_size", 1) or 1)
    use_stream = streaming_enabled() if streamed is None else streamed
    suffix = True
    try:
        sp, _ = st.plan(header_volumes(size_ijk, ijk_to_ras, dtype, n_inputs), bundle, volume_meta)
        shape, suffix = sp.out_size, bool(sp.suffix)
    except st.Unsupported:
        use_stream = False
        t = bundle.spacing_transform_config() if hasattr(bundle, "spacing_transform_config") else None
        target = t.get("pixdim") if t else None
        ijk = np.asarray(ijk_to_ras, dtype=float)[:3, :3]
        shape = model_space_shape(size_ijk, np.linalg.norm(ijk, axis=0).tolist(),
                                  target if isinstance(target, (list, tuple)) and len(target) == 3 else None)
    m = math.prod(shape)
    padded = math.prod(max(a, r) for a, r in zip(shape, roi))
    from MedAILib.runtime.inferer import window_total

    n_windows = window_total(bundle.inferer, tuple(shape))
    sw = max(1, min(sw, n_windows)) if n_windows else sw  # a small image fills fewer windows than a batch
    if measure:
        win, source = window_batch_bytes(bundle, in_ch, roi, sw, "cpu" if device == "cpu" else device)
    else:
        win, source = int(1.5 * window_activation_bytes(bundle.network, in_ch, roi, batch=sw,
                                                        conv_workspace="transposed")), "simulated"
    f32 = 4
    image = in_ch * m * f32
    sliding = (out_ch + 1) * padded * f32 + (in_ch * padded * f32 if padded > m else 0)
    slabs = (1 << 18) * (10 + out_ch) * 8  # one slab's grid, base rows and values (slab_resample)
    on_cpu = device == "cpu"
    stages = {"read": 2 * in_bytes}
    if use_stream:
        stages["forward"] = in_bytes + image * (1 + (INTENSITY_COPIES if suffix else 0)) + slabs
        stages["network"] = in_bytes + image + (sliding + win if on_cpu else 0)
        stages["post"] = in_bytes + 2 * out_ch * m * f32 + n_vox + slabs
    else:  # MONAI's eager path: float32 and float64 copies of the input, dense float64 grids
        stages["forward"] = in_bytes + in_ch * n_vox * (f32 + 8) + m * 3 * 8 + in_ch * m * (8 + f32)
        stages["network"] = in_bytes + image + (sliding + win if on_cpu else 0)
        stages["post"] = in_bytes + out_ch * m * (f32 + 8) + n_vox * 3 * 8 + out_ch * n_vox * (8 + f32) + n_vox * 8
    stages["write"] = in_bytes + 2 * n_vox + min(n_vox, STATISTICS_SLAB) * 28  # labels, writer, statistics
    device_bytes = None
    if not on_cpu:
        weights = sum(p.numel() * p.element_size() for p in bundle.network.parameters())
        device_bytes = int(weights + win + sliding + image)
    return RunEstimate({k: int(v) for k, v in stages.items()}, int(in_bytes),
                       "slab by slab" if use_stream else "whole volume (MONAI)", tuple(int(s) for s in shape),
                       int(win), source, device, device_bytes, available_ram(),
                       None if on_cpu else available_device_memory(device))


def swap_free() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("SwapFree:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def check_run(est: RunEstimate, input_resident: bool = True) -> tuple:
    """(verdict, message): "fits", "tight" (needs more than is free now but within the estimate's
    error, or swap would take it: run, with a warning) or "refuse" (more than 1.25 x free RAM + swap;
    ``MEDAI_MEMORY_CHECK=warn`` turns a refusal into a warning)."""
    need = est.needed_now(input_resident)
    avail = est.available_bytes
    if avail is None:
        return "fits", ""
    mode = os.environ.get(MEMORY_CHECK_ENV, "refuse").strip().lower()
    if mode == "off" or need <= avail:
        return "fits", ""
    gb = 1024 ** 3
    text = (f"this image needs about {need / gb:.1f} GB of RAM ({est.peak_stage} stage, {est.strategy}) "
            f"but {avail / gb:.1f} GB is available")
    if need > REFUSE_MARGIN * (avail + swap_free()) and mode != "warn":
        return "refuse", text
    return "tight", text
