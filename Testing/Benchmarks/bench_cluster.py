"""Cohorts on Dask (issue 18): ``medai segment`` on real hippocampus cases in one process, then with
``--cluster local:1`` and ``--cluster local:2``; labels compared voxel by voxel with the one-process
run; throughput from 1 to 2 workers; and whether each worker keeps its model loaded between cases (the
cases submitted to a scheduler the benchmark starts itself, ``--cluster tcp://...``, then each worker's
bundle cache asked how often it loaded the model).

Each run is a fresh ``medai`` process (the shipped hippocampus model, CPU). Reported per run: wall
time of the whole command (start-up, cluster start, workers importing torch/MONAI, all cases) and the
steady throughput (cases per second between the first and the last finished case, when workers are
warm), read from the command's own "k/N cases done" lines as they are printed.

Run alone: ``python Testing/Benchmarks/bench_cluster.py [--cases 20] [--out DIR]``; in ``make bench``
it is the ``cluster`` section of run_benchmarks.py.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_support as bs  # noqa: E402

DONE_LINE = re.compile(r"(?:case (\d+)/(\d+) \S+: done|(\d+)/(\d+) cases done)")


def hippocampus_cases(n: int) -> list:
    from MedAILib.core.paths import data_dir

    folder = data_dir() / "msd-hippocampus" / "imagesTr"
    files = sorted(folder.glob("hippocampus_*.nii.gz"))[:n]
    if len(files) < n:
        raise FileNotFoundError(f"{folder} holds {len(files)} hippocampus cases, {n} needed (MEDAI_DATA_DIR)")
    return files


def run_medai(files, out: Path, env: dict, cluster=None, timeout=1800) -> dict:
    """One ``medai segment`` over ``files``; wall time and the times cases were reported done."""
    args = [sys.executable, "-m", "MedAILib.cli", "segment", *map(str, files), "-o", str(out), "--device", "cpu",
            "--progress", "bar", "--report", str(out.with_suffix(".json"))]
    if cluster:
        args += ["--cluster", cluster]
    t0 = time.monotonic()
    p = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    done_at = []
    for line in p.stderr:
        m = DONE_LINE.search(line)
        if m and (m.group(3) or not cluster):  # cluster: the "k/N cases done" lines; one process: per case
            done_at.append(time.monotonic() - t0)
    rc = p.wait(timeout)
    wall = time.monotonic() - t0
    if rc != 0:
        raise RuntimeError(f"medai segment{' --cluster ' + cluster if cluster else ''} failed with exit status {rc}")
    steady = (len(done_at) - 1) / (done_at[-1] - done_at[0]) if len(done_at) > 1 and done_at[-1] > done_at[0] else None
    rows = json.loads(out.with_suffix(".json").read_text())["cases"]
    return {"wall_s": wall, "cases": len(files), "done_at_s": done_at, "steady_cases_per_s": steady,
            "cases_per_s_overall": len(files) / wall, "workers": sorted({r.get("worker") for r in rows if r.get("worker")})}


def same_labels(a: Path, b: Path) -> dict:
    import numpy as np

    from MedAILib.io import read_segmentation

    names = sorted(p.name for p in a.glob("*.seg.nrrd"))
    other = sorted(p.name for p in b.glob("*.seg.nrrd"))
    differing = [n for n in names if n in other and not np.array_equal(read_segmentation(a / n).array,
                                                                       read_segmentation(b / n).array)]
    return {"identical": names == other and not differing, "files": len(names), "differing": differing,
            "missing": sorted(set(names) ^ set(other))}


def warm_model_check(files, work: Path, env: dict, n_workers: int = 2) -> dict:
    """The cases on a scheduler started here (``--cluster tcp://``); then each worker's bundle cache:
    how many times it loaded the model and how many cases it served from the loaded one."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None,
                           env={k: env[k] for k in ("MEDAI_HOME", "PYTHONPATH", "OMP_NUM_THREADS") if k in env})
    client = Client(cluster)
    try:
        run = run_medai(files, work / "warm_tcp", env, cluster.scheduler_address)

        def cache_stats():
            import MedAILib.models.bundle as bundle_mod

            c = bundle_mod.bundle_cache
            return None if c is None else {"loads": c.misses, "hits": c.hits}

        stats = client.run(cache_stats)
    finally:
        client.close()
        cluster.close()
    loads = [s["loads"] if s else None for s in stats.values()]
    hits = [s["hits"] if s else None for s in stats.values()]
    return {"workers": len(stats), "loads_per_worker": loads, "cache_hits_per_worker": hits, "cases": len(files),
            "wall_s": run["wall_s"], "loaded_once_per_worker": all(x == 1 for x in loads),
            "every_case_accounted": sum(x or 0 for x in loads) + sum(x or 0 for x in hits) == len(files)}


def run_section(work: Path, n_cases: int = 20, threads: int = 0, warm: bool = True) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    files = hippocampus_cases(n_cases)
    env = dict(os.environ, MEDAI_HOME=str(work / "medai-home"), PYTHONWARNINGS="ignore")
    env["PYTHONPATH"] = os.pathsep.join([str(bs.REPO / "MedAI"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    runs = {}
    for name, cluster in (("one process", None), ("local:1", "local:1"), ("local:2", "local:2")):
        runs[name] = run_medai(files, work / name.replace(" ", "_").replace(":", "_"), env, cluster)
    checks = {name: same_labels(work / "one_process", work / name.replace(":", "_"))
              for name in ("local:1", "local:2")}
    one, two = runs["local:1"], runs["local:2"]
    warm = warm_model_check(files, work, env) if warm else None
    scaling = {"steady": (two["steady_cases_per_s"] / one["steady_cases_per_s"]
                          if two["steady_cases_per_s"] and one["steady_cases_per_s"] else None),
               "overall": two["cases_per_s_overall"] / one["cases_per_s_overall"]}
    return {"cases": n_cases, "cpu_count": os.cpu_count(), "runs": runs, "labels_vs_one_process": checks,
            "scaling_1_to_2_workers": scaling, "model_kept_loaded": warm,
            "note": "fresh medai process per run (shipped hippocampus model, CPU); wall = whole command incl. start-up, "
                    "cluster start and workers' imports; steady = cases/s between the first and last finished case; "
                    "local:N uses N worker processes with min(cpu_count/N, OMP_NUM_THREADS) torch threads each; "
                    "threads per process: " + (str(threads) if threads else "default") + "."}


def markdown(o: dict) -> list:
    L = [f"## Cohort on Dask: {o['cases']} real hippocampus cases, {o['cpu_count']} cores\n",
         "| run | wall s | cases/s overall | cases/s steady | workers used | labels vs one process |",
         "| --- | --- | --- | --- | --- | --- |"]
    for name, r in o["runs"].items():
        chk = o["labels_vs_one_process"].get(name)
        ident = "—" if chk is None else ("identical" if chk["identical"] else
                                         f"DIFFER ({len(chk['differing'])} files, missing {chk['missing']})")
        steady = f"{r['steady_cases_per_s']:.2f}" if r["steady_cases_per_s"] else "n/a"
        L.append(f"| {name} | {r['wall_s']:.1f} | {r['cases_per_s_overall']:.2f} | {steady} | "
                 f"{len(r['workers']) or 1} | {ident} |")
    s = o["scaling_1_to_2_workers"]
    steady = f"{s['steady']:.2f}x" if s["steady"] else "n/a"
    L.append(f"\nThroughput 1 -> 2 workers: **{steady}** steady, {s['overall']:.2f}x overall (start-up included).\n")
    w = o.get("model_kept_loaded")
    if w:
        L.append(f"Model kept loaded between cases ({w['cases']} cases on {w['workers']} workers of a scheduler "
                 f"started by the benchmark, --cluster tcp://...): model loads per worker {w['loads_per_worker']}, "
                 f"cases served by the already loaded model {w['cache_hits_per_worker']} -> loaded once per worker: "
                 f"**{'yes' if w['loaded_once_per_worker'] else 'NO'}**.\n")
    L.append(o["note"] + "\n")
    return L


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(bs.REPO / "runs" / "bench" / "cluster"))
    p.add_argument("--cases", type=int, default=20)
    p.add_argument("--threads", type=int, default=1, help="torch threads per process/worker (OMP_NUM_THREADS; 0: "
                   "each run's default, i.e. cores / workers)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="medai-bench-cluster-") as tmp:
        res = run_section(Path(tmp), args.cases, args.threads)
    res["load_after"] = bs.load_average()
    (out / "cluster.json").write_text(json.dumps(res, indent=2))
    text = "\n".join(markdown(res))
    (out / "cluster.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
