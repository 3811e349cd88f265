"""Clinical-size memory (issue 18): ``medai segment`` vs MONAI's bundle runner on a CT, and the memory
estimate against the measured peak.

- side by side: the Model Zoo spleen bundle's configs (random weights, balanced so that both labels
  occur) on a CT-like int16 NIfTI (default 512x512x300 at 0.8x0.8x1.5 mm), ``medai segment`` and
  ``monai.bundle run`` each in a fresh process with the same threads: whole-process peak resident
  memory (VmHWM, what ``/usr/bin/time -v`` reports as maximum resident set size), wall time with
  and without imports, labels compared voxel by voxel.
- "model": a fresh process that imports, loads the bundle and runs one batch of windows (the memory
  that does not depend on the image: libraries, weights, activations). The target is
  ``peak <= 3 x the input as float32 + model``.
- estimate: for each size, the estimate ``medai`` computes before running (from the bundle and the
  input's header) against the measured peak of the case (VmHWM minus the resident memory just
  before the case's input is read), in the same ``medai segment`` run.

Run alone: ``python Testing/Benchmarks/bench_memory.py [--sizes 150x256x256 ...] [--out DIR]``; in
``make bench`` it is the ``memory`` section of run_benchmarks.py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_support as bs  # noqa: E402

MB = 2 ** 20
SPACING = (0.8, 0.8, 1.5)
CT_SIZE = (300, 512, 512)                                  # K, J, I
ESTIMATE_SIZES = [(150, 256, 256), (225, 384, 384), CT_SIZE]


def _status_mb(key: str) -> float:
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024.0
    raise KeyError(key)


# --- workers (fresh processes) -----------------------------------------------------------------------

def worker_model(argv) -> None:
    """``model BUNDLE THREADS``: imports, bundle load, one batch of windows (measured and cached for
    the runs that follow, as ``medai`` does on its first large run)."""
    bundle_dir, threads = argv[0], int(argv[1])
    import importlib
    import warnings

    warnings.filterwarnings("ignore")
    bs.set_threads(threads)
    for m in bs.COMMON_IMPORTS:
        importlib.import_module(m)
    rss_imports = _status_mb("VmRSS")
    bundle = bs.load_bench_bundle(bundle_dir)
    from MedAILib.runtime.memory import _channels, window_batch_bytes

    in_ch, _ = _channels(bundle)
    t = time.perf_counter()
    win, source = window_batch_bytes(bundle, in_ch, bundle.inferer.roi_size, bundle.inferer.sw_batch_size)
    bs._emit({"rss_after_imports_mb": rss_imports, "model_peak_mb": _status_mb("VmHWM"),
              "window_batch_mb": win / MB, "window_source": source, "probe_s": time.perf_counter() - t})


def worker_cli(argv) -> None:
    """``cli medai|monai BUNDLE IMAGE OUTDIR THREADS``: one complete invocation after the imports.
    For medai also the estimate it makes (from the header) and the case's own peak."""
    tool, bundle_dir, image, outdir, threads = argv[0], argv[1], Path(argv[2]), Path(argv[3]), int(argv[4])
    t_start = time.perf_counter()
    import importlib
    import warnings

    warnings.filterwarnings("ignore")
    bs.set_threads(threads)
    for m in bs.COMMON_IMPORTS:
        importlib.import_module(m)
    rss_imports = _status_mb("VmRSS")
    t_imported = time.perf_counter()
    outdir.mkdir(parents=True, exist_ok=True)
    extra = {}
    if tool == "medai":
        import MedAILib.runtime.memory as memory
        import MedAILib.tasks.segmentation.command as command
        from MedAILib.cli import main

        read = command._read_and_check
        estimate_run = memory.estimate_run

        def read_and_check(paths, spec):  # the case starts here: its input is read next
            extra["rss_case_start_mb"] = _status_mb("VmRSS")
            return read(paths, spec)

        def estimate(*a, **k):  # what segment() estimates before running, recorded for the table
            est = estimate_run(*a, **k)
            extra.update(estimate_mb=est.peak_bytes / MB, estimate_stage=est.peak_stage, strategy=est.strategy,
                         estimate_stages_mb={s: v / MB for s, v in est.stages.items()},
                         window_source=est.window_source, model_space=list(est.model_space_shape))
            return est

        command._read_and_check, memory.estimate_run = read_and_check, estimate
        out = outdir / (image.name.split(".")[0] + "_seg.nii.gz")
        t, cpu = time.perf_counter(), time.process_time()
        rc = main(["segment", str(image), "-o", str(out), "--model", bundle_dir, "--trust", bundle_dir,
                   "--format", "nii.gz", "--progress", "none", "--device", "cpu", "--overwrite"])
        run_s, run_cpu_s = time.perf_counter() - t, time.process_time() - cpu
        if rc != 0:
            raise SystemExit(f"medai segment failed with exit code {rc}")
    else:
        from monai.bundle import run

        t, cpu = time.perf_counter(), time.process_time()
        run(run_id="run", config_file=str(Path(bundle_dir) / "configs" / "inference.json"),
            meta_file=str(Path(bundle_dir) / "configs" / "metadata.json"), bundle_root=bundle_dir,
            datalist=[str(image)], output_dir=str(outdir), device="$torch.device('cpu')")
        run_s, run_cpu_s = time.perf_counter() - t, time.process_time() - cpu
        out = next(outdir.glob("*_seg.nii*"))
    peak = _status_mb("VmHWM")
    if "rss_case_start_mb" in extra:
        extra["case_peak_mb"] = peak - extra["rss_case_start_mb"]
    bs._emit({"tool": tool, "output": str(out), "peak_rss_mb": peak, "rss_after_imports_mb": rss_imports,
              "import_s": t_imported - t_start, "run_s": run_s, "run_cpu_s": run_cpu_s, **extra})


# --- the section ---------------------------------------------------------------------------------------

def _worker(args, env, timeout):
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, str(Path(__file__)), *map(str, args)], env=env, capture_output=True,
                       text=True, timeout=timeout)
    line = next((l for l in p.stdout.splitlines() if l.startswith(bs.RESULT_TAG)), None)
    if p.returncode != 0 or line is None:
        raise RuntimeError(f"worker {args[0]} failed (exit {p.returncode}): {(p.stderr or p.stdout)[-1500:]}")
    out = json.loads(line[len(bs.RESULT_TAG):])
    out["wall_s"] = time.perf_counter() - t0
    return out


def make_spleen_bundle(folder) -> Path:
    from spleen_bundle import spleen_ct_bundle

    return spleen_ct_bundle(folder)


def write_ct(shape_kji, path) -> Path:
    from spleen_bundle import ct_volume

    from MedAILib.io import write_image

    write_image(ct_volume(shape_kji, SPACING), path, compress=False)
    return Path(path)


def compare_labels(a_path, b_path) -> dict:
    import nibabel as nib
    import numpy as np

    a, b = nib.load(str(a_path)), nib.load(str(b_path))
    aa = np.rint(np.asarray(a.dataobj)).astype(np.int64)
    ba = np.rint(np.asarray(b.dataobj)).astype(np.int64)
    same_grid = aa.shape == ba.shape and np.allclose(a.affine, b.affine, atol=1e-4)
    diff = int(np.count_nonzero(aa != ba)) if aa.shape == ba.shape else None
    return {"identical": bool(same_grid and diff == 0), "same_grid": bool(same_grid), "voxels_differing": diff,
            "voxels": int(aa.size), "labelled_voxels": int(np.count_nonzero(aa))}


def run_section(work: Path, threads: int = 1, ct_size=CT_SIZE, estimate_sizes=None, monai: bool = True) -> dict:
    """The memory section: side by side at ``ct_size`` and the estimate at ``estimate_sizes``."""
    estimate_sizes = [tuple(s) for s in (estimate_sizes if estimate_sizes is not None else ESTIMATE_SIZES)]
    work.mkdir(parents=True, exist_ok=True)
    env = bs.thread_env(threads, work / "medai-home")
    bundle = make_spleen_bundle(work / "spleen_bundle")
    model = _worker(["model", bundle, threads], env, timeout=1800)
    sizes = sorted({tuple(ct_size), *estimate_sizes}, key=lambda s: s[0] * s[1] * s[2])
    runs = {}
    for shape in sizes:
        image = write_ct(shape, work / f"ct_{'x'.join(map(str, shape))}.nii")
        tools = ("monai", "medai") if (monai and shape == tuple(ct_size)) else ("medai",)
        for tool in tools:
            runs[(shape, tool)] = _worker(["cli", tool, bundle, image, work / f"out_{tool}_{shape[0]}", threads], env,
                                          timeout=7200)
        image.unlink()
    input_mb = lambda s: s[0] * s[1] * s[2] * 4 / MB  # noqa: E731 - the input as float32
    model_mb = model["model_peak_mb"]
    side = None
    if monai:
        a, b = runs[(tuple(ct_size), "medai")], runs[(tuple(ct_size), "monai")]
        side = {"size_ijk": list(ct_size[::-1]), "spacing_mm": list(SPACING), "input_f32_mb": input_mb(ct_size),
                "labels": compare_labels(a["output"], b["output"]), "model_mb": model_mb,
                "target_mb": 3 * input_mb(ct_size) + model_mb}
        for name, r in (("medai", a), ("monai", b)):
            side[name] = {"peak_rss_mb": r["peak_rss_mb"], "peak_x_input": r["peak_rss_mb"] / input_mb(ct_size),
                          "within_target": r["peak_rss_mb"] <= side["target_mb"], "run_s": r["run_s"],
                          "run_cpu_s": r["run_cpu_s"],
                          "with_imports_s": r["wall_s"], "import_s": r["import_s"],
                          "rss_after_imports_mb": r["rss_after_imports_mb"]}
        side["wall_ratio_run"] = a["run_s"] / b["run_s"]
        side["wall_ratio_with_imports"] = a["wall_s"] / b["wall_s"]
        side["cpu_ratio_run"] = a["run_cpu_s"] / b["run_cpu_s"]  # what load on a shared machine does not change
        side["peak_ratio"] = a["peak_rss_mb"] / b["peak_rss_mb"]
    rows = []
    for shape in estimate_sizes:
        r = runs[(shape, "medai")]
        rows.append({"size_ijk": list(shape[::-1]), "input_f32_mb": input_mb(shape), "estimate_mb": r.get("estimate_mb"),
                     "measured_case_peak_mb": r.get("case_peak_mb"), "estimate_stage": r.get("estimate_stage"),
                     "estimate_stages_mb": r.get("estimate_stages_mb"), "strategy": r.get("strategy"),
                     "window_source": r.get("window_source"), "model_space": r.get("model_space"),
                     "error_pct": (100 * (r["estimate_mb"] - r["case_peak_mb"]) / r["case_peak_mb"]
                                   if r.get("estimate_mb") and r.get("case_peak_mb") else None),
                     "whole_peak_mb": r["peak_rss_mb"], "run_s": r["run_s"]})
    return {"threads": threads, "model": model, "side_by_side": side, "estimate": rows,
            "note": "fresh process per run; peak = VmHWM of the whole process (= /usr/bin/time maximum resident set "
                    "size); model = peak of a process that imports, loads the bundle and runs one batch of windows; "
                    "estimate = what medai computes from the bundle and the input header before running, measured = "
                    "VmHWM minus the resident memory when the case starts (before its input is read)."}


def markdown(o: dict) -> list:
    L = []
    s = o.get("side_by_side")
    if s:
        m, a = s["medai"], s["monai"]
        lab = s["labels"]
        ident = "yes" if lab["identical"] else f"NO ({lab['voxels_differing']} of {lab['voxels']} voxels differ)"
        L.append(f"## Clinical size: spleen bundle configs, {'x'.join(map(str, s['size_ijk']))} int16 at "
                 f"{'x'.join(map(str, s['spacing_mm']))} mm (target: peak <= 3 x input + model, time <= MONAI's)\n")
        L.append("| runner | peak RSS MB | peak / float32 input | within 3 x input + model | run s | run CPU s | "
                 "with imports s |")
        L.append("| --- | --- | --- | --- | --- | --- | --- |")
        for name, r in (("medai segment", m), ("MONAI bundle run", a)):
            L.append(f"| {name} | {r['peak_rss_mb']:.0f} | {r['peak_x_input']:.2f} | "
                     f"{'yes' if r['within_target'] else 'no'} ({s['target_mb']:.0f} MB) | {r['run_s']:.1f} | "
                     f"{r.get('run_cpu_s', float('nan')):.1f} | {r['with_imports_s']:.1f} |")
        L.append(f"\nInput float32 {s['input_f32_mb']:.0f} MB; model (imports + weights + one window batch, "
                 f"whole process) {s['model_mb']:.0f} MB. MedAI / MONAI: peak **{s['peak_ratio']:.2f}x**, wall time "
                 f"**{s['wall_ratio_run']:.2f}x** (run), {s['wall_ratio_with_imports']:.2f}x (with imports), CPU time "
                 f"**{s.get('cpu_ratio_run', float('nan')):.2f}x** (run, this process; less sensitive to other load than wall time); labels "
                 f"identical: **{ident}** ({lab['labelled_voxels']} labelled voxels).\n")
    if o.get("estimate"):
        L.append("## Memory estimate vs measured (medai segment, same run; target within +-25 %)\n")
        L.append("| size (IJK) | input f32 MB | model space | estimate MB | measured MB | error | peak stage "
                 "(estimate) | window batch | whole-process peak MB | run s |")
        L.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in o["estimate"]:
            err = f"{r['error_pct']:+.1f} %" if r["error_pct"] is not None else "n/a"
            L.append(f"| {'x'.join(map(str, r['size_ijk']))} | {r['input_f32_mb']:.0f} | "
                     f"{'x'.join(map(str, r['model_space'] or []))} | {r['estimate_mb'] or 0:.0f} | "
                     f"{r['measured_case_peak_mb'] or 0:.0f} | **{err}** | {r['estimate_stage']} | {r['window_source']} "
                     f"| {r['whole_peak_mb']:.0f} | {r['run_s']:.1f} |")
        L.append("")
    L.append(o["note"] + "\n")
    return L


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(bs.REPO / "runs" / "bench" / "memory"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--ct-size", type=lambda s: tuple(int(x) for x in s.split("x")), default=CT_SIZE, help="KxJxI")
    p.add_argument("--sizes", type=lambda s: tuple(int(x) for x in s.split("x")), nargs="+", default=ESTIMATE_SIZES,
                   help="KxJxI sizes for the estimate rows")
    p.add_argument("--no-monai", action="store_true", help="estimate rows only")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="medai-bench-memory-") as tmp:
        res = run_section(Path(tmp), args.threads, args.ct_size, args.sizes, monai=not args.no_monai)
    res["machine"], res["load_after"] = bs.machine(), bs.load_average()
    (out / "memory.json").write_text(json.dumps(res, indent=2))
    text = "\n".join(markdown(res))
    (out / "memory.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("model", "cli"):
        {"model": worker_model, "cli": worker_cli}[sys.argv[1]](sys.argv[2:])
    else:
        sys.exit(main())
