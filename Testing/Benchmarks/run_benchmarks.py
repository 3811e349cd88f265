"""MedAI benchmark suite: ``make bench`` (or ``python Testing/Benchmarks/run_benchmarks.py``).

Sections (each figure the median of ``--repeats`` runs, compared quantities measured side by side,
interleaved, in the same run):

- overhead  end-to-end segmentation (the function ``medai segment`` runs per case: read, pre-process,
            infer, post-process, write) vs the bare forward passes of the same windows, same network
            and weights; plus one ``medai segment`` subprocess for information.
- monai     the same bundle through MONAI's own bundle runner (``monai.bundle.run`` of
            configs/inference.json: evaluator + SaveImaged) vs ``medai segment``, both in fresh
            processes on the same file with the same threads; labels must be identical.
- scale     seconds and peak resident memory (VmHWM of a fresh process) for growing volumes.
- slicer    the MedAISegment Logic (Slicer stand-in) running the real engine in its separate
            process: the longest block of the calling thread.
- gpu       mixed precision on/off and window batch sizes, when CUDA is present.
- warm      what a click costs with the warm engine (medai serve) through the Slicer Logic, 20 clicks vs
            one batch, one-shot medai vs MONAI's runner as whole processes (bench_warm_engine.py).
- memory    clinical size (512x512x300 CT, Model Zoo spleen configs): medai vs MONAI's runner, whole-process
            peak memory and time, labels compared; the memory estimate vs the measured peak at three sizes
            (bench_memory.py).
- cluster   20 real hippocampus cases: one process vs --cluster local:1 / local:2 (bench_cluster.py).

Writes ``bench.json`` and ``bench.md`` to ``--out`` (default runs/bench/). ``--quick`` is a smoke
run (< 1 min, tiny sizes, one repeat): it checks that everything runs, not how fast.
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

SECTIONS = ("overhead", "monai", "scale", "slicer", "gpu", "warm", "memory", "cluster")


# --- helpers ---------------------------------------------------------------------------------------

def _run_worker(args, env, timeout):
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, str(HERE / "bench_support.py"), *map(str, args)], env=env,
                       capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    line = next((l for l in p.stdout.splitlines() if l.startswith(bs.RESULT_TAG)), None)
    if p.returncode != 0 or line is None:
        raise RuntimeError(f"worker {args[0]} failed (exit {p.returncode}): {(p.stderr or p.stdout)[-1500:]}")
    out = json.loads(line[len(bs.RESULT_TAG):])
    out["wall_s"] = wall
    return out


def _r(x, n=3):
    return None if x is None else round(float(x), n)


class Context:
    def __init__(self, args, work: Path):
        self.args, self.work = args, work
        self.quick = args.quick
        self.repeats = 1 if args.quick else args.repeats
        self.threads = args.threads
        self.env = bs.thread_env(args.threads, work / "medai-home")
        self._bundles = {}

    def bundle(self, kind):
        if kind not in self._bundles:
            folder = self.work / f"bundle_{kind}"
            info = bs.make_bench_bundle(folder, kind)
            self._bundles[kind] = (folder, info)
        return self._bundles[kind]

    def cases(self):
        """(name, image file, Volume) for the overhead and MONAI sections."""
        from MedAILib.core.paths import data_dir
        from MedAILib.io import read_image

        out = []
        real = data_dir() / "msd-hippocampus" / "imagesTr" / "hippocampus_001.nii.gz"
        if real.exists() and not self.quick:
            out.append(("hippocampus_001 (real MR, 35x51x35)", real, read_image(real)))
        shape = (24, 28, 30) if self.quick else tuple(self.args.synthetic_size)
        vol = bs.synthetic_volume(shape, spacing=(0.9, 0.9, 1.2))
        path = bs.write_volume(vol, self.work / f"synthetic_{'x'.join(map(str, shape))}.nii.gz")
        from MedAILib.io import read_image as _ri

        out.append((f"synthetic {shape[2]}x{shape[1]}x{shape[0]} (IJK), 0.9x0.9x1.2 mm", path, _ri(path)))
        return out


# --- sections --------------------------------------------------------------------------------------

def section_overhead(ctx: Context) -> dict:
    import argparse as ap

    import torch

    from MedAILib.tasks.segmentation.command import run_case
    from MedAILib.runtime.inferer import run_inferer
    from MedAILib.io import read_image, write_segmentation
    from MedAILib.core.progress import Progress
    from MedAILib.runtime.model_space import to_model_space
    from MedAILib.tasks.segmentation.pipeline import _postprocess, labels_to_volume

    folder, info = ctx.bundle("shipped")
    t = time.perf_counter()
    bundle = bs.load_bench_bundle(folder)
    net, inferer = bundle.network, bundle.inferer
    _ = bundle.preprocessing, bundle.postprocessing
    load_s = time.perf_counter() - t
    rows = []
    for name, path, vol in ctx.cases():
        out_file = ctx.work / "overhead_out.seg.nrrd"
        args = ap.Namespace(device="cpu", structures=None, keep_largest=False, min_island_mm3=0.0)
        image = to_model_space([vol], bundle)["image"].as_tensor()[None]
        e2e, bare, bare16, stages = [], [], [], []
        n_windows = None
        for r in range(ctx.repeats + 1):  # run 0 warms caches (and gives the stage breakdown)
            order = ("e2e", "bare", "bf16") if r % 2 else ("bf16", "bare", "e2e")
            for what in order:
                if what == "bare":
                    s, n_windows = bs.bare_forward_seconds(net, image, inferer)
                    if r:
                        bare.append(s)
                elif what == "bf16":
                    s, _ = bs.bare_forward_seconds(net, image, inferer, bf16=True)
                    if r:
                        bare16.append(s)
                else:
                    t = time.perf_counter()
                    run_case([path], bundle, out_file, args, Progress())
                    if r:
                        e2e.append(time.perf_counter() - t)
            if r == 0:  # stage breakdown, the same calls run_case makes (segment() less validation)
                st = {}
                t = time.perf_counter(); v = read_image(path); st["read"] = time.perf_counter() - t  # noqa: E702
                t = time.perf_counter(); data = to_model_space([v], bundle); st["pre"] = time.perf_counter() - t  # noqa: E702,E501
                t = time.perf_counter()
                logits = run_inferer(inferer, net, data["image"].as_tensor()[None], torch.device("cpu"))[0]
                st["infer (sliding window)"] = time.perf_counter() - t
                t = time.perf_counter()
                lab = labels_to_volume(_postprocess(bundle, data, logits), v, bundle.labels)
                st["post"] = time.perf_counter() - t
                t = time.perf_counter(); write_segmentation(lab, out_file); st["write .seg.nrrd"] = time.perf_counter() - t  # noqa: E702,E501
                stages = {k: _r(x) for k, x in st.items()}
        # one CLI subprocess (information: includes interpreter start-up and imports)
        t = time.perf_counter()
        p = subprocess.CompletedProcess([], 0, "", "") if ctx.quick else subprocess.run([sys.executable, "-m", "MedAILib.cli", "segment", str(path), "-o",
                            str(ctx.work / "cli_out.seg.nrrd"), "--model", str(folder), "--trust", str(folder),
                            "--progress", "none", "--device", "cpu", "--overwrite"], env=ctx.env,
                           capture_output=True, text=True, timeout=900)
        cli_s = time.perf_counter() - t if p.returncode == 0 and not ctx.quick else None
        e, b = bs.median(e2e), bs.median(bare)
        # opt-in bfloat16 (MEDAI_CPU_BF16): speed of the same forward passes and agreement of the labels
        l32 = run_inferer(inferer, net, image, torch.device("cpu"), cpu_bf16=False)
        l16 = run_inferer(inferer, net, image, torch.device("cpu"), cpu_bf16=True)
        p32, p16 = torch.softmax(l32, 1), torch.softmax(l16, 1)
        bf16 = {"bare_forward_s": _r(bs.median(bare16)), "speedup": _r(b / bs.median(bare16), 2) if bare16 else None,
                "label_agreement": _r(float((p32.argmax(1) == p16.argmax(1)).float().mean()), 5),
                "max_prob_diff": _r(float((p32 - p16).abs().max()), 4)}
        rows.append({"case": name, "windows": n_windows, "e2e_s": _r(e), "bare_forward_s": _r(b), "cpu_bf16": bf16,
                     "ratio": _r(e / b if e and b else None), "target_ratio_max": 1.15,
                     "e2e_runs": [_r(x) for x in e2e], "bare_runs": [_r(x) for x in bare],
                     "stages_first_run_s": stages, "cli_subprocess_s": _r(cli_s),
                     "cli_error": None if p.returncode == 0 else p.stderr[-500:]})
    return {"bundle": info, "bundle_load_s": _r(load_s), "threads": ctx.threads, "cases": rows}


def _labels_equal(a_path, b_path) -> dict:
    import nibabel as nib
    import numpy as np

    a, b = nib.load(str(a_path)), nib.load(str(b_path))
    aa, ba = np.asarray(a.dataobj), np.asarray(b.dataobj)
    same_grid = aa.shape == ba.shape and np.allclose(a.affine, b.affine, atol=1e-4)
    equal = bool(same_grid and np.array_equal(aa.astype(np.int64), ba.astype(np.int64)))
    diff = int(np.count_nonzero(aa.astype(np.int64) != ba.astype(np.int64))) if aa.shape == ba.shape else None
    return {"identical": equal, "same_grid": bool(same_grid), "voxels_differing": diff,
            "labelled_voxels": int(np.count_nonzero(aa))}


def section_monai(ctx: Context) -> dict:
    folder, info = ctx.bundle("shipped")
    procs = 1 if ctx.quick else ctx.args.monai_processes
    warm = 1 if ctx.quick else max(1, ctx.repeats - 1)
    rows = []
    for ci, (name, path, _vol) in enumerate(ctx.cases()):
        runs = {"medai": [], "monai": []}
        outs = {}
        for r in range(procs):
            order = ("medai", "monai") if r % 2 == 0 else ("monai", "medai")
            for tool in order:
                outdir = ctx.work / f"runner_{ci}_{tool}_{r}"
                res = _run_worker(["runner", tool, folder, path, outdir, ctx.threads, warm], ctx.env, timeout=1800)
                # with start-up: interpreter start + imports + the first (cold) run + exit
                res["with_startup_s"] = res["wall_s"] - sum(res["warm_runs_s"])
                runs[tool].append(res)
                outs[tool] = res["output"]
        check = _labels_equal(outs["medai"], outs["monai"])
        fig = {}
        for tool, rs in runs.items():
            fig[tool] = {"with_startup_s": _r(bs.median([x["with_startup_s"] for x in rs])),
                         "without_startup_s": _r(bs.median([w for x in rs for w in x["warm_runs_s"]])),
                         "cold_run_s": _r(bs.median([x["cold_run_s"] for x in rs])),
                         "imports_s": _r(bs.median([x["import_s"] for x in rs])),
                         "peak_rss_mb": _r(bs.median([x["peak_rss_mb"] for x in rs]), 1)}
        ratio_with = fig["monai"]["with_startup_s"] / fig["medai"]["with_startup_s"]
        ratio_without = fig["monai"]["without_startup_s"] / fig["medai"]["without_startup_s"]
        rows.append({"case": name, **fig, "speedup_with_startup": _r(ratio_with, 2),
                     "speedup_without_startup": _r(ratio_without, 2), "target_speedup_min": 1.5, "labels": check,
                     "processes_per_tool": procs, "warm_runs_per_process": warm})
    return {"bundle": info, "threads": ctx.threads,
            "note": "both in fresh processes (alternating order), same file, same threads; both read the NIfTI and "
                    "write a NIfTI label file; each run is a complete invocation (bundle config parsed, network "
                    "built, weights loaded). 'with start-up' = interpreter start + imports + first run; 'without "
                    "start-up' = median of the later runs in the same process (imports done, caches warm).",
            "cases": rows}


def section_scale(ctx: Context) -> dict:
    if ctx.quick:
        sizes, kinds, cap = [(32, 32, 32)], ["shipped"], 10.0
    else:
        sizes = [tuple(s) for s in ctx.args.scale_sizes]
        kinds, cap = ctx.args.scale_networks, ctx.args.scale_cap
    rows = []
    for kind in kinds:
        folder, info = ctx.bundle(kind)
        for shape in sizes:
            runs = []
            for r in range(ctx.repeats):
                try:
                    res = _run_worker(["scale", folder, *shape, ctx.threads, cap], ctx.env, timeout=cap * 6 + 600)
                except (RuntimeError, subprocess.TimeoutExpired) as e:
                    runs.append({"error": str(e)[-800:]})
                    break
                runs.append(res)
                if res.get("extrapolated") or (res.get("seconds") or 0) > 20:
                    break  # one run of a long case is what fits in the benchmark's time
            ok = [x for x in runs if "error" not in x]
            if not ok:
                rows.append({"network": info["network"], "shape_kji": list(shape), "error": runs[-1]["error"]})
                continue
            first = ok[0]
            inp, model = first["input_mb"], first["model_mb"]
            peak = bs.median([x["peak_rss_mb"] for x in ok])
            base = bs.median([x["baseline_rss_mb"] for x in ok])
            row = {"network": info["network"], "weights": info["weights"], "shape_kji": list(shape),
                   "input_mb": _r(inp, 1), "model_mb": _r(model, 2), "runs": len(ok),
                   "extrapolated": bool(first.get("extrapolated")),
                   "seconds": _r(bs.median([x.get("seconds") for x in ok])),
                   "infer_s": _r(bs.median([x.get("infer_s") for x in ok])),
                   "seconds_est": _r(first.get("seconds_est")), "fraction_done": _r(first.get("fraction_done")),
                   "peak_rss_mb": _r(peak, 1), "baseline_rss_mb": _r(base, 1),
                   "peak_over_baseline_mb": _r(peak - base, 1),
                   "peak_over_baseline_x_input": _r((peak - base) / inp, 2),
                   "target_mb": _r(3 * inp + model, 1),
                   "within_target": bool(peak - base <= 3 * inp + model),
                   "note": first.get("note")}
            rows.append(row)
    return {"threads": ctx.threads, "time_cap_s": cap,
            "memory_note": "peak = VmHWM of a fresh process that segments an in-memory synthetic volume "
                           "(1 mm, so model space = input grid); baseline = RSS after imports and model load, "
                           "before the volume exists; target compares peak - baseline with 3 x input float32 + model",
            "bundles": {k: v[1] for k, v in ctx._bundles.items() if k in kinds}, "rows": rows}


def section_slicer(ctx: Context) -> dict:
    sys.path.insert(0, str(bs.REPO / "Testing" / "tests"))
    from slicer_support import real  # real MRML (slicer-core)

    slicer = real.activate()
    os.environ.update({k: ctx.env[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "MEDAI_HOME")})
    folder, _info = ctx.bundle("shipped")
    cat = ctx.work / "bench_catalogue.json"
    entry = {"id": "bench_model", "title": "Bench model", "task": "segmentation", "version": "0.1",
             "inputs": [{"name": "image", "modality": "MR"}], "input_count": 1,
             "labels": [{"value": 1, "name": "Anterior", "color": [0.9, 0.2, 0.1]},
                        {"value": 2, "name": "Posterior", "color": [0.1, 0.4, 0.9]}],
             "spatial": {"spacing": [1, 1, 1], "orientation": "RAS"}, "source": {"location": "Models/none"},
             "sha256": "0" * 64, "size_bytes": 1000, "licence": "none", "citation": "benchmark",
             "memory_mb": 10, "verified": False}
    cat.write_text(json.dumps({"version": 1, "models": [entry]}))
    _name, path, vol = ctx.cases()[-1]  # the synthetic volume: long enough to watch the caller
    node = slicer.util.addVolumeFromArray(vol.array, vol.ijk_to_ras, "bench")
    import MedAISegment

    logic = MedAISegment.MedAISegmentLogic()
    logic.enginePrefix = [sys.executable, str(HERE / "bench_support.py"), "engine", str(folder)]
    results = []
    for _ in range(min(ctx.repeats, 2)):
        t0 = time.perf_counter()
        run = logic.process([node], None, "bench_model", catalogue=cat, device="cpu", wait=False)
        start_s = time.perf_counter() - t0
        max_poll = max_gap = 0.0
        polls = 0
        last = time.perf_counter()
        while True:
            t = time.perf_counter()
            max_gap = max(max_gap, t - last)
            last = t
            still = run.poll()
            d = time.perf_counter() - t
            polls += 1
            if not still:
                final_s = d  # the last poll imports the result into the segmentation node
                break
            max_poll = max(max_poll, d)
            time.sleep(0.005)
        total = time.perf_counter() - t0
        results.append({"status": run.status, "start_s": start_s, "max_poll_s": max_poll, "max_gap_s": max_gap,
                        "final_import_s": final_s, "total_s": total, "polls": polls})
        if run.outputSegmentation is not None:
            slicer.mrmlScene.RemoveNode(run.outputSegmentation)
    # What start() does on the caller's thread for a CT-sized volume: write the input for the engine.
    from MedAISlicerLib import nodes

    ct_shape = (60, 128, 128) if ctx.quick else (300, 512, 512)
    import numpy as np

    ct = np.random.default_rng(0).normal(0, 300, ct_shape).astype(np.int16)
    ct_node = slicer.util.addVolumeFromArray(ct, None, "ct")
    ct_times, ct_runs = [], []
    for _ in range(1 if ctx.quick else 2):
        # the old path, for comparison: the whole write on the caller's thread
        t = time.perf_counter()
        f = nodes.write_input_volume(ct_node, ctx.work, "ct_input")
        ct_times.append(time.perf_counter() - t)
        f.unlink()
        # what start() costs now: the write happens in a worker thread; watch the caller until the
        # engine process has started (input written), then cancel the run
        t0 = time.perf_counter()
        run = logic.process([ct_node], None, "bench_model", catalogue=cat, device="cpu", wait=False)
        start_s = time.perf_counter() - t0
        max_poll = max_gap = 0.0
        last = time.perf_counter()
        while run.process._proc is None and run.poll() and time.perf_counter() - t0 < 60:
            t = time.perf_counter()
            max_gap = max(max_gap, t - last)
            last = t
            run.poll()
            max_poll = max(max_poll, time.perf_counter() - t)
            time.sleep(0.005)
        written_s = time.perf_counter() - t0
        t = time.perf_counter()
        run.cancel()
        cancel_s = time.perf_counter() - t
        run.wait()
        ct_runs.append({"start_s": start_s, "max_poll_s": max_poll, "max_gap_s": max_gap, "written_s": written_s,
                        "cancel_s": cancel_s})
    del ct
    real.reset()
    return {"volume": _name, "runs": results,
            "ct_input_write_ms": _r(1000 * bs.median(ct_times), 1),
            "ct_start_call_ms": _r(1000 * bs.median([r["start_s"] for r in ct_runs]), 1),
            "ct_max_block_while_writing_ms": _r(1000 * bs.median([r["max_poll_s"] for r in ct_runs]), 1),
            "ct_max_gap_while_writing_ms": _r(1000 * bs.median([r["max_gap_s"] for r in ct_runs]), 1),
            "ct_written_and_started_s": _r(bs.median([r["written_s"] for r in ct_runs]), 2),
            "ct_input_shape_ijk": list(reversed(ct_shape)), "status": [r["status"] for r in results],
            "max_block_during_run_ms": _r(1000 * bs.median([r["max_poll_s"] for r in results]), 1),
            "max_loop_gap_ms": _r(1000 * bs.median([r["max_gap_s"] for r in results]), 1),
            "start_call_ms": _r(1000 * bs.median([r["start_s"] for r in results]), 1),
            "final_import_ms": _r(1000 * bs.median([r["final_import_s"] for r in results]), 1),
            "total_s": _r(bs.median([r["total_s"] for r in results]), 2), "target_ms": 50,
            "note": "a loop on the calling thread: poll() then sleep 5 ms. 'during run' = longest poll() while "
                    "the engine works; 'loop gap' = longest time between loop iterations (includes the "
                    "5 ms sleep and OS scheduling on a loaded machine); start = writing the input and "
                    "starting the process; final import = reading the result into the segmentation node."}


def section_warm(ctx: Context) -> dict:
    """What a click costs with the warm engine: bench_warm_engine.py (issue 17)."""
    import bench_warm_engine

    return bench_warm_engine.run(ctx.threads, ctx.repeats, 3 if ctx.quick else 20, ctx.quick, ctx.work / "warm")


def section_gpu(ctx: Context) -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device on this machine (torch.cuda.is_available() is False)"}
    from MedAILib.runtime.inferer import run_inferer
    from MedAILib.runtime.model_space import to_model_space

    folder, info = ctx.bundle("segresnet")
    bundle = bs.load_bench_bundle(folder)
    vol = bs.synthetic_volume((64, 96, 96) if ctx.quick else (160, 256, 256))
    image = to_model_space([vol], bundle)["image"].as_tensor()[None]
    dev = torch.device("cuda")
    rows, ref = [], None
    for amp in (False, True):
        for b in ((1, 4) if ctx.quick else (1, 2, 4, 8)):
            inf = bundle.inferer
            inf.sw_batch_size = b
            times = []
            for _ in range(ctx.repeats + 1):
                torch.cuda.synchronize()
                t = time.perf_counter()
                out = run_inferer(inf, bundle.network, image, dev, amp=amp)
                torch.cuda.synchronize()
                times.append(time.perf_counter() - t)
            lab = out.argmax(1)
            if ref is None:
                ref = lab
            rows.append({"amp": amp, "sw_batch_size": b, "seconds": _r(bs.median(times[1:])),
                         "peak_vram_mb": _r(torch.cuda.max_memory_allocated() / 2**20, 1),
                         "label_agreement_vs_fp32_b1": _r(float((lab == ref).float().mean()), 6)})
            torch.cuda.reset_peak_memory_stats()
    return {"device": torch.cuda.get_device_name(0), "bundle": info, "rows": rows}


def section_memory(ctx: Context) -> dict:
    """Clinical size, side by side with MONAI's runner, and the memory estimate (bench_memory.py, issue 18)."""
    import bench_memory

    if ctx.quick:
        return bench_memory.run_section(ctx.work / "memory", ctx.threads, (40, 64, 64), [(40, 64, 64)], monai=False)
    return bench_memory.run_section(ctx.work / "memory", ctx.threads, tuple(ctx.args.memory_ct_size),
                                    [tuple(s) for s in ctx.args.memory_sizes])


def section_cluster(ctx: Context) -> dict:
    """Real hippocampus cases: one process vs --cluster local:1 / local:2 (bench_cluster.py, issue 18)."""
    import bench_cluster

    if ctx.quick:  # smoke: 2 cases, no separate warm-model check
        return bench_cluster.run_section(ctx.work / "cluster", 2, warm=False)
    return bench_cluster.run_section(ctx.work / "cluster", ctx.args.cluster_cases)


# --- report ----------------------------------------------------------------------------------------

def markdown(result: dict) -> str:
    m, L = result["machine"], []
    L.append(f"# MedAI benchmark ({result['label']})\n")
    L.append(f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; torch {m['torch']}, MONAI {m['monai']}, "
             f"Python {m['python']}; threads {result['threads']}; load average before {result['load_before']}, "
             f"after {result['load_after']}; {result['date']}; total {result['total_s']:.0f} s"
             + (" (--quick: smoke run, figures not meaningful)" if result["quick"] else "") + "\n")
    s = result["sections"]
    if "overhead" in s and "error" not in s["overhead"]:
        o = s["overhead"]
        L.append(f"## Overhead vs the bare network ({o['bundle']['network']}, {o['bundle']['weights']} weights; "
                 f"target ratio <= 1.15)\n")
        L.append("| case | windows | end-to-end s | bare forward s | ratio | stages (first run) s | CLI subprocess s |")
        L.append("| --- | --- | --- | --- | --- | --- | --- |")
        for c in o["cases"]:
            st = ", ".join(f"{k} {v}" for k, v in c["stages_first_run_s"].items())
            L.append(f"| {c['case']} | {c['windows']} | {c['e2e_s']} | {c['bare_forward_s']} | **{c['ratio']}** | "
                     f"{st} | {c['cli_subprocess_s']} |")
        L.append(f"\nBundle load (config parse + weights): {o['bundle_load_s']} s, once per process.\n")
        L.append("Opt-in bfloat16 autocast on the CPU (MEDAI_CPU_BF16=1), same windows (labels compared with float32; "
                 f"{o['bundle']['weights']} weights):\n")
        L.append("| case | bare forward float32 s | bare forward bf16 s | speed-up | label agreement | max prob. diff |")
        L.append("| --- | --- | --- | --- | --- | --- |")
        for c in o["cases"]:
            h = c["cpu_bf16"]
            L.append(f"| {c['case']} | {c['bare_forward_s']} | {h['bare_forward_s']} | {h['speedup']}x | "
                     f"{h['label_agreement']} | {h['max_prob_diff']} |")
        L.append("")
    if "monai" in s and "error" not in s["monai"]:
        o = s["monai"]
        L.append("## vs MONAI's bundle runner (monai.bundle run: evaluator + SaveImaged; target >= 1.5x)\n")
        L.append("| case | MedAI s (with / without start-up) | MONAI s (with / without) | speed-up with | speed-up "
                 "without | labels identical | peak RSS MB MedAI / MONAI |")
        L.append("| --- | --- | --- | --- | --- | --- | --- |")
        for c in o["cases"]:
            a, b = c["medai"], c["monai"]
            lab = c["labels"]
            ident = "yes" if lab["identical"] else f"NO ({lab['voxels_differing']} voxels differ)"
            L.append(f"| {c['case']} | {a['with_startup_s']} / {a['without_startup_s']} | {b['with_startup_s']} / "
                     f"{b['without_startup_s']} | **{c['speedup_with_startup']}x** | **{c['speedup_without_startup']}x** "
                     f"| {ident} | {a['peak_rss_mb']} / {b['peak_rss_mb']} |")
        L.append(f"\n{o['note']}\n")
    if "scale" in s and "error" not in s["scale"]:
        o = s["scale"]
        L.append(f"## Scale (fresh process per size; time cap {o['time_cap_s']} s on the network part)\n")
        L.append("| network | size (IJK) | input MB | seconds | peak RSS MB | peak - baseline MB | (peak - baseline) "
                 "/ input | target MB (3 x input + model) | within |")
        L.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in o["rows"]:
            size = "x".join(map(str, reversed(r["shape_kji"])))
            if "error" in r:
                L.append(f"| {r['network']} | {size} | | failed: {r['error'][:80]} | | | | | |")
                continue
            secs = (f"~{r['seconds_est']} (extrapolated from {100 * r['fraction_done']:.1f}% of windows)"
                    if r["extrapolated"] else f"{r['seconds']} (n={r['runs']})")
            within = ("yes" if r["within_target"] else "no") + (" (lower bound)" if r["extrapolated"] else "")
            L.append(f"| {r['network']} | {size} | {r['input_mb']} | {secs} | {r['peak_rss_mb']} | "
                     f"{r['peak_over_baseline_mb']} | {r['peak_over_baseline_x_input']} | {r['target_mb']} | {within} |")
        L.append(f"\n{o['memory_note']}\n")
    if "slicer" in s and "error" not in s["slicer"]:
        o = s["slicer"]
        L.append("## Slicer responsiveness (MedAISegment Logic, stand-in, real engine process; target < 50 ms)\n")
        L.append("| volume | status | longest block during run ms | longest loop gap ms | start call ms | "
                 "final import ms | total s |")
        L.append("| --- | --- | --- | --- | --- | --- | --- |")
        L.append(f"| {o['volume']} | {','.join(o['status'])} | **{o['max_block_during_run_ms']}** | "
                 f"{o['max_loop_gap_ms']} | {o['start_call_ms']} | {o['final_import_ms']} | {o['total_s']} |")
        if "ct_input_write_ms" in o:
            L.append(f"\nstart() on a CT-sized volume ({'x'.join(map(str, o['ct_input_shape_ijk']))} int16): writing the "
                     f"engine's input file on the caller's thread would take {o['ct_input_write_ms']} ms"
                     + (f"; start() now returns in **{o['ct_start_call_ms']} ms** and the write runs in a worker "
                        f"thread: longest poll() block meanwhile **{o['ct_max_block_while_writing_ms']} ms**, "
                        f"longest loop gap {o['ct_max_gap_while_writing_ms']} ms, engine started after "
                        f"{o['ct_written_and_started_s']} s." if "ct_start_call_ms" in o else "."))
        L.append(f"\n{o['note']}\n")
    if "gpu" in s:
        o = s["gpu"]
        L.append("## GPU\n")
        if "skipped" in o:
            L.append(f"Skipped: {o['skipped']}\n")
        elif "error" not in o:
            L.append(f"{o['device']}\n\n| AMP | window batch | seconds | peak VRAM MB | label agreement vs fp32 |")
            L.append("| --- | --- | --- | --- | --- |")
            for r in o["rows"]:
                L.append(f"| {r['amp']} | {r['sw_batch_size']} | {r['seconds']} | {r['peak_vram_mb']} | "
                         f"{r['label_agreement_vs_fp32_b1']} |")
    if "warm" in s and "error" not in s["warm"]:
        import bench_warm_engine

        L.append(bench_warm_engine.markdown(s["warm"]))
    if "memory" in s and "error" not in s["memory"]:
        import bench_memory

        L += bench_memory.markdown(s["memory"])
    if "cluster" in s and "error" not in s["cluster"]:
        import bench_cluster

        L += bench_cluster.markdown(s["cluster"])
    for name, o in s.items():
        if "error" in o:
            L.append(f"## {name}: FAILED\n\n```\n{o['error']}\n```\n")
    return "\n".join(L) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(bs.REPO / "runs" / "bench"), help="output folder (default runs/bench/)")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, one repeat (< 1 min)")
    p.add_argument("--label", default="current", help="name of this run in the report (e.g. before, after)")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--repeats", type=int, default=3, help="runs per figure (median reported)")
    p.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads for every runner (default 1)")
    p.add_argument("--synthetic-size", type=int, nargs=3, default=[48, 48, 48], metavar=("K", "J", "I"),
                   help="synthetic volume for the overhead/MONAI/Slicer sections (KJI)")
    p.add_argument("--scale-sizes", type=lambda s: tuple(int(x) for x in s.split("x")), nargs="+",
                   default=[(64, 64, 64), (128, 128, 128), (256, 256, 256), (300, 512, 512)],
                   help="KxJxI sizes for the scale section")
    p.add_argument("--monai-processes", type=int, default=2, help="fresh processes per runner in the MONAI section")
    p.add_argument("--scale-networks", nargs="+", default=["shipped", "segresnet"], choices=["shipped", "segresnet"])
    p.add_argument("--scale-cap", type=float, default=10.0, help="seconds of network time per scale case before "
                   "the run is stopped and extrapolated")
    p.add_argument("--memory-ct-size", type=lambda s: tuple(int(x) for x in s.split("x")), default=(300, 512, 512),
                   help="KxJxI of the clinical-size CT in the memory section (side by side with MONAI's runner)")
    p.add_argument("--memory-sizes", type=lambda s: tuple(int(x) for x in s.split("x")), nargs="+",
                   default=[(150, 256, 256), (225, 384, 384), (300, 512, 512)],
                   help="KxJxI sizes of the memory estimate rows")
    p.add_argument("--cluster-cases", type=int, default=20, help="real hippocampus cases in the cluster section")
    p.add_argument("--render", metavar="JSON", help="only rewrite the Markdown table of an earlier bench.json")
    args = p.parse_args(argv)
    if args.render:
        result = json.loads(Path(args.render).read_text())
        md = Path(args.render).with_suffix(".md")
        md.write_text(markdown(result))
        print(md.read_text())
        return 0
    sections = [x.strip() for x in args.sections.split(",") if x.strip()]
    bad = [x for x in sections if x not in SECTIONS]
    if bad:
        p.error(f"unknown section(s) {bad}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import warnings

    warnings.filterwarnings("ignore")
    bs.set_threads(args.threads)
    t0 = time.perf_counter()
    result = {"label": args.label, "quick": args.quick, "threads": args.threads,
              "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": bs.machine(), "load_before": bs.load_average(),
              "sections": {}}
    with tempfile.TemporaryDirectory(prefix="medai-bench-") as tmp:
        ctx = Context(args, Path(tmp))
        os.environ["MEDAI_HOME"] = str(ctx.work / "medai-home")
        for name in sections:
            ts = time.perf_counter()
            print(f"[bench] {name} ...", file=sys.stderr, flush=True)
            try:
                result["sections"][name] = globals()[f"section_{name}"](ctx)
            except Exception as e:  # noqa: BLE001 - one failed section must not hide the others
                import traceback

                result["sections"][name] = {"error": f"{type(e).__name__}: {e}\n{traceback.format_exc()[-2000:]}"}
            result["sections"][name]["section_s"] = _r(time.perf_counter() - ts, 1)
            print(f"[bench] {name} done in {time.perf_counter() - ts:.0f} s (load {bs.load_average()})",
                  file=sys.stderr, flush=True)
    result["load_after"] = bs.load_average()
    result["total_s"] = time.perf_counter() - t0
    (out / "bench.json").write_text(json.dumps(result, indent=2))
    (out / "bench.md").write_text(markdown(result))
    print(markdown(result))
    print(f"wrote {out / 'bench.json'} and {out / 'bench.md'}", file=sys.stderr)
    failed = [n for n, o in result["sections"].items() if "error" in o]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
