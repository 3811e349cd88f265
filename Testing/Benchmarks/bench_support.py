"""Shared pieces of the benchmark suite: paths, bench bundles, synthetic volumes, memory readings,
timing helpers, and the subprocess workers (``python bench_support.py <worker> ...``).

Workers run in fresh interpreters so that peak memory (VmHWM) and start-up costs belong to one
measurement only. Every worker prints one JSON line (prefixed ``BENCH_RESULT``) on stdout.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
for _p in (REPO / "MedAI", REPO / "Testing" / "tests"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

RESULT_TAG = "BENCH_RESULT "
SHIPPED = REPO / "MedAI" / "MedAILib" / "resources" / "Models" / "hippocampus_unet"
# Modules both runners need; workers import them before the "without start-up" clock starts.
COMMON_IMPORTS = ("torch", "numpy", "nibabel", "SimpleITK", "monai", "monai.transforms", "monai.inferers",
                  "monai.networks.nets", "monai.data", "monai.bundle", "monai.engines", "monai.handlers", "ignite",
                  "MedAILib.cli", "MedAILib.tasks.segmentation.command", "MedAILib.tasks.segmentation.pipeline", "MedAILib.models", "MedAILib.io",
                  "MedAILib.runtime")


def set_threads(n: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(n)
    os.environ["MKL_NUM_THREADS"] = str(n)
    import torch

    torch.set_num_threads(n)


def thread_env(n: int, medai_home: str) -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(n), MKL_NUM_THREADS=str(n), MEDAI_HOME=str(medai_home), PYTHONWARNINGS="ignore")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "MedAI"), str(REPO / "Testing" / "tests"),
                                         env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def peak_rss_mb() -> float:
    """Peak resident memory of this process (VmHWM; ru_maxrss as a fall-back), MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def load_average() -> list:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        flags = next((l for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("flags")), "")
    except OSError:
        flags = ""
    import platform

    import monai
    import torch

    mem_gb = None
    try:
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": mem_gb, "avx512_bf16": "avx512_bf16" in flags,
            "python": platform.python_version(), "torch": torch.__version__, "monai": monai.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


# --- bundles -------------------------------------------------------------------------------------

SEGRESNET_DEF = {"_target_": "SegResNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 3,
                 "init_filters": 16, "blocks_down": [1, 2, 2, 4], "blocks_up": [1, 1, 1]}


def _shipped_network_def():
    """The shipped model's network: its bundle config when it has weights, else the trainer's DynUNet."""
    cfg = SHIPPED / "configs" / "inference.json"
    if (SHIPPED / "models" / "model.pt").exists() and cfg.exists():
        return json.loads(cfg.read_text())["network_def"], "shipped"
    from MedAILib.tasks.segmentation import trainer as seg

    try:
        return seg.network_def("dynunet"), "random"
    except TypeError:  # older trainer signature: DynUNet only
        return seg.network_def(), "random"


def _has_skimage() -> bool:
    import importlib.util

    return importlib.util.find_spec("skimage") is not None


def make_bench_bundle(folder, kind: str = "shipped") -> dict:
    """A bundle in ``folder``: ``shipped`` = the hippocampus model's config (its weights when they exist,
    random weights of the same architecture otherwise); ``segresnet`` = a larger random-weight network.
    Returns a description for the report."""
    import bundle_factory as bf
    import torch

    folder = Path(folder)
    notes = []
    if kind == "shipped":
        from MedAILib.tasks.segmentation import trainer as seg

        net_def, weights = _shipped_network_def()
        bf.make_bundle(folder, network_def=net_def, seed=0)  # writes metadata + random weights
        cfg = seg.inference_config(net_def)
        if not _has_skimage():  # MONAI's KeepLargestConnectedComponentd needs scikit-image
            steps = cfg["postprocessing"]["transforms"]
            cfg["postprocessing"]["transforms"] = [t for t in steps if "KeepLargest" not in t["_target_"]]
            notes.append("KeepLargestConnectedComponentd removed from postprocessing (scikit-image not installed)")
        cfg["initialize"] = []  # print_config() is console noise, not part of the workflow being timed
        cfg["device"] = "$torch.device('cpu')"
        cfg["evaluator"]["amp"] = False
        (folder / "configs" / "inference.json").write_text(json.dumps(cfg, indent=2))
        if weights == "shipped":
            torch.save(torch.load(SHIPPED / "models" / "model.pt", map_location="cpu", weights_only=True),
                       folder / "models" / "model.pt")
        inf = cfg["inferer"]
    elif kind == "segresnet":
        net_def, weights = SEGRESNET_DEF, "random"
        bf.make_bundle(folder, network_def=net_def, roi_size=(96, 96, 96), sw_batch_size=2, seed=0)
        inf = json.loads((folder / "configs" / "inference.json").read_text())["inferer"]
    else:
        raise ValueError(kind)
    return {"kind": kind, "network": net_def["_target_"], "weights": weights, "roi_size": inf["roi_size"],
            "sw_batch_size": inf["sw_batch_size"], "overlap": inf["overlap"], "mode": inf.get("mode", "constant"),
            "notes": notes}


def load_bench_bundle(folder):
    from MedAILib.models import trust
    from MedAILib.models.bundle import load_bundle

    trust.trust(folder, reason="benchmark bundle")
    return load_bundle(folder)


# --- volumes -------------------------------------------------------------------------------------

def synthetic_volume(shape_kji, spacing=(1.0, 1.0, 1.0), seed: int = 0):
    """A smooth random volume (MR-like intensities 0..1000) on an axis-aligned grid (KJI shape)."""
    import numpy as np

    from MedAILib.core.volume import Volume

    rng = np.random.default_rng(seed)
    k, j, i = shape_kji
    # A few low-frequency blobs plus noise; cheap even at 512x512x300 (outer sums, float32 throughout).
    z = np.linspace(0, 1, k, dtype=np.float32)[:, None, None]
    y = np.linspace(0, 1, j, dtype=np.float32)[None, :, None]
    x = np.linspace(0, 1, i, dtype=np.float32)[None, None, :]
    arr = np.empty((k, j, i), dtype=np.float32)
    arr[...] = 300 * np.sin(6 * z) + 250 * np.cos(5 * y) + 200 * np.sin(7 * x + 1)
    arr += rng.normal(0, 30, size=(1, j, i)).astype(np.float32)  # cheap "texture", broadcast over slices
    arr += 500
    m = np.diag([spacing[0], spacing[1], spacing[2], 1.0])
    m[:3, 3] = [-10.0, 20.0, -5.0]
    return Volume(arr, m, metadata={"source": f"synthetic{tuple(shape_kji)}"})


def write_volume(volume, path) -> Path:
    from MedAILib.io import write_image

    write_image(volume, path)
    return Path(path)


# --- bare network over the same windows --------------------------------------------------------

def window_batches(image, inferer):
    """The sliding-window inferer's windows of ``image`` (1, C, *spatial), batched as it batches them."""
    import torch
    import torch.nn.functional as F
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval
    from monai.utils import ensure_tuple_rep, fall_back_tuple

    spatial = tuple(image.shape[2:])
    roi = fall_back_tuple(inferer.roi_size, spatial)
    pad = []
    for s, r in zip(reversed(spatial), reversed(roi)):  # MONAI pads symmetrically up to the roi size
        diff = max(r - s, 0)
        pad += [diff // 2, diff - diff // 2]
    if any(pad):
        image = F.pad(image, pad, mode="constant", value=0.0)
    padded = tuple(image.shape[2:])
    scan = _get_scan_interval(padded, roi, len(spatial), ensure_tuple_rep(inferer.overlap, len(spatial)))
    slices = dense_patch_slices(padded, roi, scan)
    b = max(1, int(inferer.sw_batch_size))
    for n in range(0, len(slices), b):
        yield torch.cat([image[(slice(None), slice(None)) + tuple(s)] for s in slices[n:n + b]])


def bare_forward_seconds(network, image, inferer, bf16: bool = False) -> tuple:
    """Seconds spent in the network's forward passes only (windows prepared outside the clock)."""
    import contextlib

    import torch

    total, n = 0.0, 0
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with torch.inference_mode(), ctx:
        for batch in window_batches(image, inferer):
            batch = batch.contiguous()
            t = time.perf_counter()
            network(batch)
            total += time.perf_counter() - t
            n += batch.shape[0]
    return total, n


# --- workers ---------------------------------------------------------------------------------------

def _emit(obj) -> None:
    print(RESULT_TAG + json.dumps(obj), flush=True)


def worker_runner(argv) -> None:
    """``runner medai|monai BUNDLE IMAGE OUTDIR THREADS WARM``: import everything first (start-up), then
    run once cold and ``WARM`` more times in the same process (each run a complete invocation)."""
    tool, bundle, image, outdir = argv[0], Path(argv[1]), Path(argv[2]), Path(argv[3])
    threads, warm = int(argv[4]), int(argv[5])
    t_start = time.perf_counter()
    import importlib
    import shutil
    import warnings

    warnings.filterwarnings("ignore")
    set_threads(threads)
    for m in COMMON_IMPORTS:
        importlib.import_module(m)
    t_imported = time.perf_counter()
    runs = []
    for n in range(1 + warm):
        shutil.rmtree(outdir, ignore_errors=True)
        outdir.mkdir(parents=True)
        t = time.perf_counter()
        if tool == "medai":
            from MedAILib.cli import main

            out = outdir / (image.name.split(".")[0] + "_seg.nii.gz")
            rc = main(["segment", str(image), "-o", str(out), "--model", str(bundle), "--trust", str(bundle),
                       "--format", "nii.gz", "--progress", "none", "--device", "cpu", "--overwrite"])
            if rc != 0:
                raise SystemExit(f"medai segment failed with exit code {rc}")
        else:
            from monai.bundle import run

            run(run_id="run", config_file=str(bundle / "configs" / "inference.json"),
                meta_file=str(bundle / "configs" / "metadata.json"), bundle_root=str(bundle),
                datalist=[str(image)], output_dir=str(outdir), device="$torch.device('cpu')")
            out = next(outdir.glob("*_seg.nii*"))
        runs.append(time.perf_counter() - t)
    _emit({"import_s": t_imported - t_start, "cold_run_s": runs[0], "warm_runs_s": runs[1:], "output": str(out),
           "peak_rss_mb": peak_rss_mb()})


def worker_scale(argv) -> None:
    """``scale BUNDLE K J I THREADS CAP_S``: segment a synthetic volume in memory; seconds + peak memory.

    When the network part passes CAP_S, the run is cancelled at the next window batch and the
    inference time is extrapolated from the fraction of windows done (reported as such)."""
    bundle_dir, shape, threads, cap = Path(argv[0]), tuple(int(x) for x in argv[1:4]), int(argv[4]), float(argv[5])
    import warnings

    warnings.filterwarnings("ignore")
    set_threads(threads)
    import numpy as np
    import torch

    from MedAILib.core.errors import Cancelled
    from MedAILib.core.progress import CancelToken, Progress
    from MedAILib.tasks.segmentation.pipeline import segment

    bundle = load_bench_bundle(bundle_dir)
    net = bundle.network
    model_mb = sum(p.numel() * p.element_size() for p in net.parameters()) / 2**20
    # Warm-up on a tiny volume: lazily imported libraries and one-time buffers are not per-volume costs.
    segment([synthetic_volume((16, 16, 16))], bundle, device="cpu")
    import gc

    gc.collect()
    base_mb = current_rss_mb()
    vol = synthetic_volume(shape)
    input_mb = vol.array.nbytes / 2**20
    state = {"stage": "pre", "t_infer0": None, "fraction": 0.0, "t_infer_last": None}
    token = CancelToken()

    def cb(fraction, message, eta):
        now = time.perf_counter()
        if fraction is None:
            return
        if message.startswith("running ") or message.startswith("window batch"):
            if state["t_infer0"] is None:
                state["t_infer0"] = now
            state["stage"] = "infer"
            if message.startswith("window batch"):
                state["fraction"], state["t_infer_last"] = (fraction - 0.1) / 0.8, now
                if now - state["t_infer0"] > cap and state["fraction"] < 1.0:
                    token.cancel()
        elif message.startswith("post-processing"):
            state["stage"] = "post"
            state["t_post0"] = now

    t0 = time.perf_counter()
    finished = True
    try:
        res = segment([vol], bundle, device="cpu", progress=Progress(callback=cb, cancel=token), cancel=token)
        labels = int(np.count_nonzero(res.labelmap.array))
    except Cancelled:
        finished, labels = False, None
    t1 = time.perf_counter()
    out = {"shape_kji": list(shape), "voxels": int(np.prod(shape)), "input_mb": input_mb, "model_mb": model_mb,
           "baseline_rss_mb": base_mb, "peak_rss_mb": peak_rss_mb(), "finished": finished, "threads": threads,
           "torch_threads": torch.get_num_threads(), "nonzero_labels": labels}
    if finished:
        out.update(seconds=t1 - t0, extrapolated=False,
                   infer_s=(state.get("t_post0", t1) - state["t_infer0"]) if state["t_infer0"] else None)
    else:
        frac = max(state["fraction"], 1e-6)
        infer_done = state["t_infer_last"] - state["t_infer0"]
        pre_s = state["t_infer0"] - t0
        infer_est = infer_done / frac
        out.update(seconds=None, extrapolated=True, fraction_done=frac, pre_s=pre_s, infer_est_s=infer_est,
                   seconds_est=pre_s + infer_est, note="cancelled after the time cap; inference time extrapolated "
                   "from the fraction of windows done; post-processing not included; peak memory is a lower bound")
    _emit(out)


def worker_engine(argv) -> None:
    """Engine prefix for the Slicer responsiveness run: ``engine BUNDLE segment ... --model ID ...``.
    The catalogue id the Logic passes is replaced by the bench bundle folder (trusted); the rest is
    the real ``medai`` CLI in this (separate) process."""
    bundle, args = argv[0], list(argv[1:])
    if "--model" in args:
        i = args.index("--model")
        args[i + 1] = bundle
    args += ["--trust", bundle]
    from MedAILib.cli import main

    raise SystemExit(main(args))


if __name__ == "__main__":
    {"runner": worker_runner, "scale": worker_scale, "engine": worker_engine}[sys.argv[1]](sys.argv[2:])
