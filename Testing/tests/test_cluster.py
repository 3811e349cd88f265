"""Issue 18: ``medai segment ... --cluster local:N | tcp://...`` runs a batch's cases on Dask workers
(MedAILib/cli/cluster.py) with the batch runner's own rules.

Proven here with a small random-weight CT bundle and tiny CT-like cases (each test well under a
minute on two loaded cores): the labels are those of a single-process run; a failing case is
reported and the others finish; a worker killed mid-run has its cases finished by another (none
lost, none twice); ``--resume`` after the whole run was killed skips what was done.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from spleen_bundle import ct_volume, spleen_ct_bundle, spleen_network_def

pytest.importorskip("distributed")

REPO = Path(__file__).resolve().parents[2]
SMALL_NET = spleen_network_def(channels=(4, 8, 16), strides=(2, 2), num_res_units=1)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return spleen_ct_bundle(tmp_path_factory.mktemp("b") / "ct", roi_size=(32, 32, 32), sw_batch_size=2,
                            network_def=SMALL_NET)


@pytest.fixture(scope="module")
def shared_cluster():
    """Two worker processes started once for the module (and warmed: torch, MONAI and MedAI imported),
    so that each test pays for its cases, not for starting Python on a loaded machine."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    client = Client(cluster)
    client.run(_warm_up)
    yield cluster, client
    client.close()
    cluster.close()


def _warm_up():
    import MedAILib.tasks.segmentation.command  # noqa: F401 - imports torch, MONAI, SimpleITK
    import MedAILib.cli  # noqa: F401


def _cases(folder: Path, n: int, shape=(24, 48, 44)) -> Path:
    from MedAILib.io import write_image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        write_image(ct_volume(shape, spacing=(0.8, 0.9, 1.5), seed=i), folder / f"case_{i:02d}.nii.gz")
    return folder


def _env(tmp_path) -> dict:
    return dict(os.environ, MEDAI_HOME=str(tmp_path / "home"), OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore",
                PYTHONPATH=os.pathsep.join([str(REPO / "MedAI"), os.environ.get("PYTHONPATH", "")]))


def _medai(args, tmp_path, timeout=120, **kw):
    return subprocess.run([sys.executable, "-m", "MedAILib.cli", *map(str, args)], env=_env(tmp_path),
                          capture_output=True, text=True, timeout=timeout, **kw)


def _labels(folder: Path) -> dict:
    from MedAILib.io import read_segmentation

    return {p.name: read_segmentation(p).array for p in sorted(folder.glob("*.seg.nrrd"))}


def _visible(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


# --- without a cluster ----------------------------------------------------------------------------------

def test_cluster_spec_is_checked_before_anything_runs():
    import argparse

    from MedAILib.cli.cluster import cluster_spec

    assert cluster_spec("local:2") == "local:2" and cluster_spec("local") == "local"
    assert cluster_spec("tcp://10.0.0.5:8786") == "tcp://10.0.0.5:8786"
    for bad in ("local:0", "slurm", "10.0.0.5:8786", "local:x"):
        with pytest.raises(argparse.ArgumentTypeError):
            cluster_spec(bad)


def test_a_case_runs_as_a_one_case_command_with_the_results_options(tmp_path, bundle, monkeypatch):
    """Options that change the result travel (paths made absolute); the batch's own options do not."""
    from MedAILib.cli import build_parser
    from MedAILib.cli.batch import Case
    from MedAILib.cli.cluster import case_argv, case_options

    monkeypatch.chdir(bundle.parent)
    args = build_parser("segment").parse_args(
        ["segment", "in", "-o", "out", "--model", bundle.name, "--structures", "spleen", "--keep-largest",
         "--report", "r.json", "--resume", "--cluster", "local:2", "--device", "cpu"])
    options = case_options("segment", args)
    assert options == ["--model", str(bundle.resolve()), "--structures", "spleen", "--keep-largest",
                       "--device", "cpu"]
    case = Case(0, "a", [Path("in/a.nii.gz")], outputs={"output": Path("out/a.seg.nrrd")})
    argv = case_argv("segment", case, options)
    assert argv[:4] == ["segment", str(Path("in/a.nii.gz").resolve()), "--output", str(Path("out/a.seg.nrrd").resolve())]
    assert argv[-3:] == ["--progress", "json", "--overwrite"] and "--report" not in argv and "--cluster" not in argv


# --- on a local cluster ----------------------------------------------------------------------------------

def test_local_cluster_gives_the_single_process_labels_and_reports_a_failing_case(tmp_path, bundle, monkeypatch):
    from MedAILib.cli import main

    inputs = _cases(tmp_path / "in", 4)
    (inputs / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")  # fails; the others must finish
    common = ["--model", str(bundle), "--trust", str(bundle), "--device", "cpu"]
    monkeypatch.setenv("MEDAI_HOME", str(tmp_path / "home"))
    assert main(["segment", str(inputs), "-o", str(tmp_path / "single"), *common, "--progress", "none"]) == 3
    report = tmp_path / "cluster.json"
    run = _medai(["segment", inputs, "-o", tmp_path / "cluster", *common, "--progress", "bar", "--cluster", "local:2",
                  "--report", report], tmp_path, timeout=180)
    assert run.returncode == 3, run.stderr[-2000:]  # partial: one case failed, the others done
    rows = {r["case"]: r for r in json.loads(report.read_text())["cases"]}
    assert sorted(rows) == ["broken", "case_00", "case_01", "case_02", "case_03"]
    assert rows["broken"]["status"] == "failed" and "broken" in rows["broken"]["error"]
    assert all(rows[f"case_0{i}"]["status"] == "ok" and rows[f"case_0{i}"]["worker"] for i in range(4))
    assert all(rows[f"case_0{i}"]["output"] == str(tmp_path / "cluster" / f"case_0{i}.seg.nrrd") for i in range(4))
    assert json.loads(report.read_text())["status"] == "partial"
    a, b = _labels(tmp_path / "single"), _labels(tmp_path / "cluster")
    assert sorted(a) == sorted(b) == [f"case_0{i}.seg.nrrd" for i in range(4)]
    assert all(np.array_equal(a[k], b[k]) for k in a) and any(np.count_nonzero(v) for v in a.values())
    assert "5/5 cases done" in run.stderr and "cases done, about" in run.stderr  # done / total, time left
    assert "case_02: done" in run.stderr and "INFO" not in run.stderr


def _cache_stats():
    import MedAILib.models.bundle as bundle_mod

    c = bundle_mod.bundle_cache
    return {"pid": os.getpid(), "loads": c.misses if c else 0, "hits": c.hits if c else 0}


def test_each_worker_loads_the_model_once_and_keeps_it_for_its_next_cases(tmp_path, bundle, shared_cluster):
    cluster, client = shared_cluster
    client.wait_for_workers(2, timeout=120)
    before = client.run(_cache_stats)
    n = 5
    report = tmp_path / "r.json"
    run = _medai(["segment", _cases(tmp_path / "in", n), "-o", tmp_path / "out", "--model", bundle, "--trust",
                  bundle, "--device", "cpu", "--progress", "none", "--report", report, "--cluster",
                  cluster.scheduler_address], tmp_path, timeout=180)
    assert run.returncode == 0, run.stderr[-2000:]
    after = client.run(_cache_stats)
    rows = _report_rows(report)
    assert len(rows) == n and all(r["status"] == "ok" for r in rows)
    for address, a in after.items():
        b = before.get(address, {"loads": 0, "hits": 0})
        ran = sum(1 for r in rows if r["worker_pid"] == a["pid"])
        loads, hits = a["loads"] - b["loads"], a["hits"] - b["hits"]
        assert loads + hits == ran, (address, loads, hits, ran)  # each case asked the cache once
        assert loads == (1 if ran and b["loads"] == 0 else 0), (address, loads, ran)  # loaded once per worker
    assert sum(a["hits"] - before.get(k, {"hits": 0})["hits"] for k, a in after.items()) >= n - 2


def test_a_worker_killed_mid_run_has_its_cases_finished_elsewhere(tmp_path, bundle, shared_cluster):
    cluster, client = shared_cluster
    n = 10  # enough cases, each large enough (~1 s), that a quiet machine does not finish before the kill
    inputs = _cases(tmp_path / "in", n, shape=(56, 88, 80))
    report = tmp_path / "r.json"
    killed = {}

    def kill_a_busy_worker():
        deadline = time.monotonic() + 150
        seen = {}
        while time.monotonic() < deadline and not killed:
            done = [r for r in _report_rows(report) if r["status"] == "ok"]
            now = time.monotonic()
            for address, keys in client.processing().items():
                for key in keys:
                    first = seen.setdefault((address, str(key)), now)
                    # one case finished (the run is under way) and this worker has held this case for
                    # 0.3 s: it is running it now; kill the worker in the middle of that case
                    if done and now - first > 0.3 and not killed:
                        pids = client.run(os.getpid)
                        killed.update(address=address, keys=list(keys), pid=pids[address], at=time.time())
                        os.kill(pids[address], signal.SIGKILL)
            time.sleep(0.1)

    watcher = threading.Thread(target=kill_a_busy_worker, daemon=True)
    watcher.start()
    run = _medai(["segment", inputs, "-o", tmp_path / "out", "--model", bundle, "--trust", bundle, "--device",
                  "cpu", "--progress", "none", "--report", report, "--cluster", cluster.scheduler_address],
                 tmp_path, timeout=240)
    watcher.join(5)
    assert killed, "no worker was killed (the run ended before one case was reported?)"
    assert run.returncode == 0, run.stderr[-3000:]
    rows = _report_rows(report)
    assert sorted(r["case"] for r in rows) == [f"case_{i:02d}" for i in range(n)]  # each case once
    assert all(r["status"] == "ok" for r in rows)
    held = {int(str(k).split("-")[2]) for k in killed["keys"]}  # keys: medai-segment-<case index>-<run>
    moved = [r for r in rows if int(r["case"][-2:]) in held and r["worker_pid"] != killed["pid"]]
    assert moved, "the killed worker's cases were finished by another worker process"
    assert _visible(tmp_path / "out") == [f"case_{i:02d}.seg.nrrd" for i in range(n)]  # none lost, none extra


def _report_rows(report: Path) -> list:
    try:
        return json.loads(report.read_text())["cases"]
    except (OSError, ValueError, KeyError):
        return []


def test_resume_after_the_run_was_killed_skips_the_finished_cases(tmp_path, bundle, shared_cluster):
    """The command itself is killed (SIGKILL) mid-batch; run again with --resume, it skips exactly the
    cases whose complete outputs exist and runs the rest."""
    from MedAILib.core.atomic import is_complete

    cluster, client = shared_cluster
    client.wait_for_workers(2, timeout=120)
    n = 6
    inputs = _cases(tmp_path / "in", n, shape=(40, 64, 60))
    out = tmp_path / "out"
    args = [sys.executable, "-m", "MedAILib.cli", "segment", str(inputs), "-o", str(out), "--model", str(bundle),
            "--trust", str(bundle), "--device", "cpu", "--progress", "none", "--report", str(tmp_path / "r.json"),
            "--cluster", cluster.scheduler_address]
    first = subprocess.Popen(args, env=_env(tmp_path), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and first.poll() is None:
            if len([p for p in out.glob("*.seg.nrrd")]) >= 2:
                break
            time.sleep(0.1)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the command (its cases still on the cluster are dropped)
        first.wait(30)
    deadline = time.monotonic() + 60  # cases the workers were running when the command died still finish
    while any(client.processing().values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    done_before = sorted(p.name for p in out.glob("*.seg.nrrd"))
    assert 2 <= len(done_before) < n, done_before
    assert all(is_complete(out / name) for name in done_before)  # killed: nothing half-written under a final name
    again = _medai(args[3:] + ["--resume"], tmp_path, timeout=180)
    assert again.returncode == 0, again.stderr[-3000:]
    rows = {r["case"]: r for r in _report_rows(tmp_path / "r.json")}
    skipped = sorted(f"{c}.seg.nrrd" for c, r in rows.items() if r["status"] == "skipped")
    # skipped: what was done when the command died, and any case a worker was still running then and
    # finished afterwards (Dask cannot stop a running case); the others ran now
    assert set(done_before) <= set(skipped) and all(r["status"] in ("ok", "skipped") for r in rows.values())
    assert any(r["status"] == "ok" for r in rows.values())
    assert _visible(out) == [f"case_{i:02d}.seg.nrrd" for i in range(n)]
    assert all(is_complete(out / f"case_{i:02d}.seg.nrrd") for i in range(n))


def test_the_documented_jobqueue_script_starts_a_cluster_medai_can_use(tmp_path, bundle):
    """docs/cluster.md's script, with dask-jobqueue's local job backend (the SLURM/PBS kinds differ only
    in how the job is submitted: their job scripts are checked with --print-job-script)."""
    pytest.importorskip("dask_jobqueue")
    script = REPO / "Testing" / "tools" / "medai_dask_cluster.py"
    slurm = subprocess.run([sys.executable, script, "slurm", "--cores", "4", "--queue", "gpu", "--account", "p1",
                            "--job-extra=--gres=gpu:1", "--port", "0", "--print-job-script"], env=_env(tmp_path),
                           capture_output=True, text=True, timeout=60)
    assert slurm.returncode == 0, slurm.stderr[-1500:]
    for line in ("#SBATCH -p gpu", "#SBATCH -A p1", "#SBATCH --cpus-per-task=4", "#SBATCH --gres=gpu:1",
                 "export OMP_NUM_THREADS=4", f"{sys.executable} -m distributed.cli.dask_worker", "--nthreads 1"):
        assert line in slurm.stdout, line
    address_file = tmp_path / "scheduler.txt"
    server = subprocess.Popen([sys.executable, script, "local", "--jobs", "1", "--cores", "1", "--memory", "4GB",
                               "--port", "0", "--address-file", address_file], env=_env(tmp_path),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not address_file.exists() and time.monotonic() < deadline and server.poll() is None:
            time.sleep(0.2)
        address = address_file.read_text().strip()
        inputs = _cases(tmp_path / "in", 2)
        run = _medai(["segment", inputs, "-o", tmp_path / "out", "--model", bundle, "--trust", bundle, "--device",
                      "cpu", "--progress", "none", "--cluster", address], tmp_path, timeout=150)
        assert run.returncode == 0, run.stderr[-2000:]
        assert _visible(tmp_path / "out") == ["case_00.seg.nrrd", "case_01.seg.nrrd"]
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def test_the_slurm_example_script_is_valid_bash_and_names_what_is_missing(tmp_path):
    """docs/examples/slurm_cohort.sh (run end to end with KIND=local by hand, docs/cluster.md): valid
    bash, and without COHORT it stops at once saying so, before anything starts."""
    script = REPO / "docs" / "examples" / "slurm_cohort.sh"
    assert subprocess.run(["bash", "-n", script], capture_output=True).returncode == 0
    env = {k: v for k, v in _env(tmp_path).items() if k not in ("COHORT", "OUT")}
    p = subprocess.run(["bash", script], env=env, capture_output=True, text=True, timeout=30)
    assert p.returncode != 0 and "COHORT" in p.stderr


def test_local_workers_take_cores_over_n_threads_capped_by_omp_num_threads(monkeypatch):
    import distributed

    import MedAILib.cli.cluster as cl

    made = {}

    class FakeCluster:
        def __init__(self, **kw):
            made.update(kw)

    monkeypatch.setattr(distributed, "LocalCluster", FakeCluster)
    monkeypatch.setattr(distributed, "Client", lambda cluster: "client")
    monkeypatch.setattr(cl.os, "cpu_count", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert cl.connect("local:2", 10)[2] == 4 and made["env"] == {"OMP_NUM_THREADS": "4"} and made["n_workers"] == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert cl.connect("local:2", 10)[2] == 1 and made["env"] == {"OMP_NUM_THREADS": "1"}
    monkeypatch.setenv("OMP_NUM_THREADS", "16")
    assert cl.connect("local:4", 10)[2] == 2
