"""What a click costs with the warm engine (issue 17): ``python Testing/Benchmarks/bench_warm_engine.py``
(also ``make bench`` / ``run_benchmarks.py --sections warm``).

Every figure is measured in this one run, compared quantities interleaved (medians of
``--repeats``), on the shipped hippocampus model and real MSD hippocampus MRI, through the
MedAISegment Logic on real MRML (Testing/slicer_real):

- warm click: a click while the warm engine runs (node -> file -> engine job -> segmentation node)
  vs the same work in this process (``medai segment`` called in-process on the same input file the
  click's job reads, the model kept loaded as the engine keeps it: read, pre-process, infer,
  post-process, write). Target: ratio <= 1.5.
- cold first click (the click that starts the warm engine) vs a one-shot click (a fresh ``medai``
  process per click, the fall-back).
- 20 consecutive clicks on 20 cases vs one ``medai segment`` process over the same 20 files
  (target: within 1.3x), with the engine already warm and starting cold.
- one-shot ``medai segment`` (whole process: interpreter, imports, run, exit) vs MONAI's own
  runner (``monai.bundle.run``, whole process): time and peak memory, labels compared.

Prints a Markdown table; ``--out`` also writes the JSON. Timings, not tests: nothing here passes
or fails on a figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
for _p in (REPO / "MedAI", REPO / "Testing" / "tests", HERE):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

HIPPO = "hippocampus_unet"
BUNDLE = REPO / "MedAI" / "MedAILib" / "resources" / "Models" / HIPPO


def _median(xs):
    xs = [x for x in xs if x is not None]
    return round(statistics.median(xs), 3) if xs else None


def _r(x, n=3):
    return None if x is None else round(float(x), n)


def _cases(n: int) -> list:
    from MedAILib.core.paths import data_dir

    folder = data_dir() / "msd-hippocampus" / "imagesTr"
    files = sorted(folder.glob("hippocampus_*.nii.gz"))[:n]
    if len(files) < n:
        raise SystemExit(f"need {n} hippocampus cases in {folder} (MEDAI_DATA_DIR)")
    return files


def _timed_process(cmd, env) -> dict:
    """Wall time and peak resident memory (ru_maxrss of that child alone) of one whole process."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    err = p.stderr.read()
    p.stderr.close()
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise RuntimeError(f"{cmd[:4]}... exit {p.returncode}: {err[-1500:]}")
    return {"s": wall, "peak_mb": usage.ru_maxrss / 1024.0}


def _slicer():
    """Slicer's real core (slicer-core, Testing/slicer_real), as the Slicer-side tests use it."""
    from slicer_support import real

    return real.activate(), "real MRML (slicer-core)", real.reset


class Clicks:
    """Clicks of MedAISegment's Logic, as its Apply button makes them (``wait=True`` to time them)."""

    def __init__(self, slicer):
        import MedAISegment

        self.slicer, self.logic = slicer, MedAISegment.MedAISegmentLogic()

    def click(self, volume, where: str) -> float:
        from MedAISlicerLib import engine_client

        engine_client.settings.runOn = where
        t = time.perf_counter()
        run = self.logic.process([volume], None, HIPPO, device="cpu", wait=True, timeout=900)
        seconds = time.perf_counter() - t
        assert run.status == "done", run.errorText
        self.slicer.mrmlScene.RemoveNode(run.outputSegmentation)
        return seconds


def in_process_seconds(case: Path, out: Path) -> float:
    """``medai segment`` run in this process with everything loaded: the work of one click."""
    import contextlib
    import io

    from MedAILib.cli import main

    if out.exists():
        out.unlink()
    t = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        rc = main(["segment", str(case), "-o", str(out), "--model", HIPPO, "--device", "cpu", "--progress", "none"])
    seconds = time.perf_counter() - t
    assert rc == 0
    return seconds


def run(threads: int = 1, repeats: int = 3, clicks: int = 20, quick: bool = False, work: Path | None = None) -> dict:
    if quick:
        repeats, clicks = 1, 3
    own = work is None
    work = Path(tempfile.mkdtemp(prefix="medai-bench-warm-")) if own else Path(work)
    os.environ.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONWARNINGS="ignore",
                      MEDAI_HOME=str(work / "medai-home"))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "MedAI"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    os.environ["PYTHONPATH"] = env["PYTHONPATH"]  # the engine processes the Logic starts see the same
    cases = _cases(max(clicks, 1))
    case = cases[0]
    result = {"threads": threads, "repeats": repeats, "clicks": clicks, "case": case.name}
    try:
        # 1. one-shot medai vs MONAI's runner: whole processes, alternating order, before this process
        # imports torch (nothing else competes for the CPU).
        shot = {"medai": [], "monai": []}
        outs = {}
        for r in range(0 if quick else repeats):  # --quick: the monai section covers it (smoke run)
            for tool in (("medai", "monai") if r % 2 == 0 else ("monai", "medai")):
                out = work / f"runner_{tool}_{r}"
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir(parents=True)
                if tool == "medai":
                    target = out / "seg.nii.gz"
                    cmd = [sys.executable, "-m", "MedAILib.cli", "segment", str(case), "-o", str(target), "--model",
                           HIPPO, "--format", "nii.gz", "--device", "cpu", "--progress", "none"]
                else:
                    cmd = [sys.executable, "-c", (
                        "from monai.bundle import run\n"
                        f"run(run_id='run', config_file={str(BUNDLE / 'configs' / 'inference.json')!r}, "
                        f"meta_file={str(BUNDLE / 'configs' / 'metadata.json')!r}, bundle_root={str(BUNDLE)!r}, "
                        f"datalist=[{str(case)!r}], output_dir={str(out)!r}, device=\"$torch.device('cpu')\")\n")]
                shot[tool].append(_timed_process(cmd, env))
                outs[tool] = target if tool == "medai" else next(out.rglob("*_seg.nii*"))
        from run_benchmarks import _labels_equal

        medai_s, monai_s = _median([x["s"] for x in shot["medai"]]), _median([x["s"] for x in shot["monai"]])
        result["one_shot_vs_monai"] = None if quick else {
            "medai_s": medai_s, "monai_s": monai_s, "speed_ratio": _r(monai_s / medai_s, 2),
            "medai_peak_mb": _median([x["peak_mb"] for x in shot["medai"]]),
            "monai_peak_mb": _median([x["peak_mb"] for x in shot["monai"]]),
            "labels": _labels_equal(outs["medai"], outs["monai"])}

        slicer, harness, reset = _slicer()
        result["harness"] = harness
        from MedAISlicerLib import engine_client

        clicker = Clicks(slicer)
        volumes = [slicer.util.loadVolume(str(c)) for c in cases[:clicks]]
        volume = volumes[0]
        # 2. cold first click (starts the warm engine) vs a one-shot click, alternating
        cold, oneshot = [], []
        for r in range(repeats):
            for kind in (("cold", "oneshot") if r % 2 == 0 else ("oneshot", "cold")):
                if kind == "cold":
                    engine_client.shutdown_warm_engine()
                    cold.append(clicker.click(volume, "warm"))
                else:
                    oneshot.append(clicker.click(volume, "oneshot"))
        result["cold_first_click_s"] = _median(cold)
        result["one_shot_click_s"] = _median(oneshot)
        result["cold_vs_one_shot"] = _r(result["cold_first_click_s"] / result["one_shot_click_s"], 2)
        # 3. warm clicks vs the same work in-process, alternating (the engine is warm from step 2). The
        # in-process run reads what a click's engine job reads: the node written as raw NRRD by the
        # Logic's own writer (a .nii.gz would add gzip and NIfTI checks the click does not pay).
        from MedAISlicerLib import nodes

        raw = nodes.write_volume(nodes.volume_view_from_node(volume), work, "click_input")
        # ... and, like the engine, keeps the model loaded between runs (MedAILib.server.bundles)
        from MedAILib.models import bundle as bundle_module
        from MedAILib.server.bundles import BundleCache

        bundle_module.bundle_cache = BundleCache()
        clicker.click(volume, "warm")
        in_process_seconds(raw, work / "inproc.seg.nrrd")  # this process: imports and model load once
        in_process_seconds(raw, work / "inproc.seg.nrrd")
        warm, inproc = [], []
        for r in range(max(5, 3 * repeats)):
            warm.append(clicker.click(volume, "warm"))
            inproc.append(in_process_seconds(raw, work / "inproc.seg.nrrd"))
        result["warm_click_s"] = _median(warm)
        result["in_process_s"] = _median(inproc)
        result["warm_click_over_in_process"] = _r(result["warm_click_s"] / result["in_process_s"], 2)
        # 4. N consecutive clicks on N cases vs one medai segment process over the same N files
        t = time.perf_counter()
        for v in volumes:
            clicker.click(v, "warm")
        warm_total = time.perf_counter() - t
        cold_total = None
        if not quick:
            engine_client.shutdown_warm_engine()
            t = time.perf_counter()
            for v in volumes:
                clicker.click(v, "warm")
            cold_total = time.perf_counter() - t
        batch_out = work / "batch"
        shutil.rmtree(batch_out, ignore_errors=True)
        batch = _timed_process([sys.executable, "-m", "MedAILib.cli", "segment", *map(str, cases[:clicks]), "-o",
                                str(batch_out), "--model", HIPPO, "--device", "cpu", "--progress", "none"], env)
        result["consecutive"] = {
            "clicks": len(volumes), "warm_engine_s": _r(warm_total), "starting_cold_s": _r(cold_total),
            "one_batch_process_s": _r(batch["s"]), "warm_over_batch": _r(warm_total / batch["s"], 2),
            "cold_over_batch": None if cold_total is None else _r(cold_total / batch["s"], 2)}
        engine_client.shutdown_warm_engine()
        reset()
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)
    return result


def markdown(r: dict) -> str:
    o, c = r["one_shot_vs_monai"], r["consecutive"]
    rows = [
        "## Warm engine: what a click costs (bench_warm_engine.py)\n",
        f"{r['case']} (shipped {HIPPO}), CPU, {r['threads']} thread(s), medians of {r['repeats']}+ interleaved runs; "
        f"Slicer Logic on {r['harness']}.\n",
        "| measure | seconds | ratio | target |",
        "| --- | --- | --- | --- |",
        f"| warm click (engine running) | {r['warm_click_s']} | **{r['warm_click_over_in_process']}x** the in-process "
        f"work ({r['in_process_s']} s) | <= 1.5 |",
        f"| cold first click (starts the engine) | {r['cold_first_click_s']} | **{r['cold_vs_one_shot']}x** a one-shot "
        f"click ({r['one_shot_click_s']} s) | <= 1.0 |",
        f"| {c['clicks']} consecutive clicks, engine warm | {c['warm_engine_s']} | **{c['warm_over_batch']}x** one "
        f"{c['clicks']}-case `medai segment` process ({c['one_batch_process_s']} s) | <= 1.3 |",
        f"| {c['clicks']} consecutive clicks, engine starting cold | {c['starting_cold_s']} | "
        + (f"**{c['cold_over_batch']}x** the same batch process | |" if c["cold_over_batch"] is not None
           else "not measured (--quick) | |")]
    if o is not None:  # not in --quick
        lab = o["labels"]
        rows += [
            f"| one-shot `medai segment`, whole process | {o['medai_s']} | MONAI's runner {o['monai_s']} s: "
            f"**{o['speed_ratio']}x** | >= 1.0 |",
            f"| peak memory, MiB | medai {o['medai_peak_mb']} | MONAI {o['monai_peak_mb']} "
            f"({_r(o['medai_peak_mb'] - o['monai_peak_mb'], 1)} MiB more) | <= +50 |",
            "",
            f"Labels medai vs MONAI runner: identical {lab['identical']} ({lab['voxels_differing']} voxels differ of "
            f"{lab['labelled_voxels']} labelled)."]
    return "\n".join(rows) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads everywhere (default 1)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--clicks", type=int, default=20, help="consecutive clicks (cases) for the batch comparison")
    p.add_argument("--quick", action="store_true", help="smoke run: one repeat, 3 clicks, no MONAI runner and no "
                   "cold 3-click series (figures not meaningful)")
    p.add_argument("--out", help="also write the figures as JSON here")
    args = p.parse_args(argv)
    import warnings

    warnings.filterwarnings("ignore")
    t0 = time.perf_counter()
    result = run(args.threads, args.repeats, args.clicks, args.quick)
    result["total_s"] = _r(time.perf_counter() - t0, 1)
    result["load_average"] = list(os.getloadavg())
    print(markdown(result))
    print(f"(total {result['total_s']} s, load average {[round(x, 2) for x in result['load_average']]})")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
