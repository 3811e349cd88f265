"""The warm engine (`medai serve`, stdio transport, as the Slicer side starts it) on real
hippocampus MRI: results byte-identical to the one-shot `medai segment`, the same events, models
kept loaded, cancel within one window batch, a failing job leaves the engine serving, the engine
ends with its parent, GPU/idle release runs. Fair order and the model cache's bounds are checked
on the objects themselves."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from serve_support import HIPPO, StdioEngine, big_volume, big_volume_flags, engine_env, labels, one_shot


@pytest.fixture
def env(tmp_path):
    return engine_env(tmp_path / "home")


@pytest.fixture
def engine(env):
    e = StdioEngine(env, "--idle-release-s", "1")
    yield e
    e.stop()
    assert e.proc.returncode == 0, "".join(e.stderr[-20:])


def _events(lines):
    from MedAILib.core import events

    return [e for e in (events.parse_line(l) for l in lines) if e is not None]


def _shape(evts):
    """The events without what differs between any two runs (times, paths)."""
    keep = ("event", "case", "status", "index", "total", "cases", "label_volumes_ml", "warnings", "device")
    return [{k: v for k, v in e.items() if k in keep} for e in evts if e["event"] != "progress"]


def test_warm_job_is_byte_identical_to_one_shot_and_models_stay_loaded(engine, env, data_dir, tmp_path):
    case = data_dir / "msd-hippocampus" / "imagesTr" / "hippocampus_003.nii.gz"
    common = ["--model", HIPPO, "--device", "cpu", "--progress", "json"]
    p = one_shot(["segment", case, "-o", tmp_path / "oneshot.seg.nrrd", *common], env)
    assert p.returncode == 0, p.stderr
    ends, outs = [], []
    for i in range(2):
        end, lines = engine.run(f"j{i}", ["segment", case, "-o", tmp_path / f"warm{i}.seg.nrrd", *common])
        assert end["state"] == "done" and end["returncode"] == 0, lines
        ends.append(end)
        outs.append(lines)
    reference = labels(tmp_path / "oneshot.seg.nrrd")
    for i in range(2):
        got = labels(tmp_path / f"warm{i}.seg.nrrd")
        assert got.dtype == reference.dtype and got.tobytes() == reference.tobytes()
    # the same event sequence as the one-shot process printed
    assert _shape(_events(outs[0])) == _shape(_events(p.stdout.splitlines()))
    assert _shape(_events(outs[1])) == _shape(_events(outs[0]))
    engine.send(op="status")
    status = engine.next(lambda m: m.get("engine") == "status")
    cache = status["cache"]
    assert cache["misses"] == 1 and cache["hits"] == 1, cache  # the second job reused the loaded model
    assert [m["model"] for m in cache["models"]] == [HIPPO]


def test_cancel_takes_effect_within_one_window_batch(engine, data_dir, tmp_path):
    big = big_volume(data_dir, tmp_path)
    out = tmp_path / "big.seg.nrrd"
    engine.send(op="submit", job="long", argv=["segment", str(big), "-o", str(out), "--model", HIPPO,
                                                "--device", "cpu", "--progress", "json", *big_volume_flags()])
    seen = []
    engine.next(lambda m: "window batch 2/" in m.get("out", ""), timeout=300, seen=seen)
    total = int(json.loads([m for m in seen if "window batch 2/" in m.get("out", "")][0]["out"])["message"]
                .split("window batch 2/")[1].split()[0])
    assert total >= 10, "the volume must need many window batches"
    engine.send(op="cancel", job="long")
    after = []
    end = engine.next(lambda m: m.get("engine") == "end", timeout=120, seen=after)
    batches_after = [m for m in after if "window batch" in m.get("out", "")]
    assert end["state"] == "cancelled" and end["returncode"] == 130
    assert len(batches_after) <= 1, f"{len(batches_after)} window batches ran after the cancel"
    assert not out.exists() and not list(tmp_path.glob(".big*partial*"))
    cancelled = [e for e in _events([m["out"] for m in after if "out" in m]) if e["event"] == "error"]
    assert cancelled and cancelled[-1].get("cancelled") is True
    # the engine goes on serving
    end, _ = engine.run("after", ["segment", data_dir / "msd-hippocampus" / "imagesTr" / "hippocampus_001.nii.gz",
                                  "-o", tmp_path / "after.seg.nrrd", "--model", HIPPO, "--device", "cpu",
                                  "--progress", "json"])
    assert end["state"] == "done"


def test_failing_jobs_leave_the_engine_serving(engine, data_dir, tmp_path):
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"\x1f\x8b not really a gzip file")
    end, lines = engine.run("bad-file", ["segment", broken, "-o", tmp_path / "x.seg.nrrd", "--model", HIPPO,
                                         "--progress", "json"])
    assert end["state"] == "failed" and end["returncode"] != 0
    done = [e for e in _events(lines) if e["event"] == "case_done"]
    assert done and done[0]["status"] == "failed" and "broken.nii.gz" in done[0]["error"]
    end, lines = engine.run("bad-option", ["segment", broken, "-o", tmp_path / "x.seg.nrrd", "--no-such-option"])
    assert end["state"] == "failed" and end["returncode"] == 2
    assert any("no-such-option" in l for l in lines)  # argparse's message reaches the client
    end, lines = engine.run("no-model", ["segment", data_dir / "msd-hippocampus" / "imagesTr" / "hippocampus_001.nii.gz",
                                         "-o", tmp_path / "y.seg.nrrd", "--model", "no_such_model", "--progress", "json"])
    assert end["state"] == "failed"
    assert any(e["event"] == "error" and "no_such_model" in e["message"] for e in _events(lines))
    end, _ = engine.run("good", ["segment", data_dir / "msd-hippocampus" / "imagesTr" / "hippocampus_001.nii.gz",
                                 "-o", tmp_path / "good.seg.nrrd", "--model", HIPPO, "--device", "cpu",
                                 "--progress", "json"])
    assert end["state"] == "done" and (tmp_path / "good.seg.nrrd").is_file()
    engine.send(op="submit", job="other-command", argv=["models", "list"])
    refused = engine.next(lambda m: m.get("engine") == "refused")
    assert "segment" in refused["message"]


def test_idle_engine_releases_and_keeps_serving(engine, data_dir, tmp_path):
    case = data_dir / "msd-hippocampus" / "imagesTr" / "hippocampus_001.nii.gz"
    end, _ = engine.run("a", ["segment", case, "-o", tmp_path / "a.seg.nrrd", "--model", HIPPO, "--device", "cpu",
                              "--progress", "json"])
    assert end["state"] == "done"
    deadline = time.monotonic() + 30
    while True:
        engine.send(op="status")
        status = engine.next(lambda m: m.get("engine") == "status")
        if status["idle_releases"] >= 1:
            break
        assert time.monotonic() < deadline, "the idle release never ran"
        time.sleep(0.5)
    end, _ = engine.run("b", ["segment", case, "-o", tmp_path / "b.seg.nrrd", "--model", HIPPO, "--device", "cpu",
                              "--progress", "json"])
    assert end["state"] == "done"
    assert labels(tmp_path / "a.seg.nrrd").tobytes() == labels(tmp_path / "b.seg.nrrd").tobytes()


def test_version_mismatch_is_refused_naming_both_versions(engine):
    from MedAILib import __version__

    engine.send(op="hello", version="0.0.1", protocol=1)
    refused = engine.next(lambda m: m.get("engine") in ("refused", "hello"))
    assert refused["engine"] == "refused"
    assert "0.0.1" in refused["message"] and __version__ in refused["message"]
    engine.send(op="hello", version=__version__, protocol=1)
    assert engine.next(lambda m: m.get("engine") in ("refused", "hello"))["engine"] == "hello"


def test_engine_exits_when_its_parent_process_ends(env, tmp_path):
    # The parent starts the engine with --parent-pid and dies; the engine's stdin stays open (this
    # test holds it), so only the parent watch can end it.
    r, w = os.pipe()
    parent = subprocess.Popen([sys.executable, "-c", (
        "import os, subprocess, sys, time\n"
        f"p = subprocess.Popen([sys.executable, '-m', 'MedAILib.cli', 'serve', '--no-warmup', '--parent-pid', str(os.getpid())], stdin={r}, stdout=subprocess.PIPE, pass_fds=({r},))\n"
        "print(p.pid, flush=True)\n"
        "print(p.stdout.readline().decode().strip(), flush=True)\n"
        "time.sleep(600)\n")], env=env, stdout=subprocess.PIPE, text=True, pass_fds=(r,))
    os.close(r)
    try:
        child = int(parent.stdout.readline())
        assert json.loads(parent.stdout.readline())["engine"] == "ready"
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 20
        while _alive(child):
            assert time.monotonic() < deadline, "the engine outlived its parent"
            time.sleep(0.2)
    finally:
        os.close(w)
        if parent.poll() is None:
            parent.kill()
        try:
            os.kill(child, signal.SIGKILL)
        except (ProcessLookupError, NameError, UnboundLocalError):
            pass


def _alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie has ended
        return f.read().split()[2] != "Z"


# --- the parts on their own ---------------------------------------------------------------------------

def test_fair_queue_serves_clients_in_turn():
    from MedAILib.server.engine import FairQueue, Job

    q = FairQueue()
    a = [Job(["segment"], client="a", job_id=f"a{i}") for i in range(4)]
    b = [Job(["segment"], client="b", job_id=f"b{i}") for i in range(2)]
    for j in a[:3]:
        q.put(j)
    q.put(b[0])
    q.put(a[3])
    q.put(b[1])
    assert [j.id for j in q.order()] == ["a0", "b0", "a1", "b1", "a2", "a3"]
    assert [q.pop().id for _ in range(len(q))] == ["a0", "b0", "a1", "b1", "a2", "a3"]
    q.put(a[0])
    q.put(b[0])
    assert q.remove(a[0]) and [j.id for j in q.order()] == ["b0"]


def test_model_cache_reuses_and_evicts_by_count_and_memory(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDAI_HOME", str(tmp_path / "home"))
    from MedAILib.models import bundle as bundle_module
    from MedAILib.server.bundles import BundleCache, network_bytes

    cache = BundleCache(max_bytes=1 << 40, max_models=1)
    monkeypatch.setattr(bundle_module, "bundle_cache", cache)
    first = bundle_module.resolve_model(HIPPO)
    assert bundle_module.resolve_model(HIPPO) is first and cache.hits == 1
    first.network  # noqa: B018 - load the weights
    other = bundle_module.resolve_model("adrenal_classifier", task="classification")
    assert other is not first and cache.evictions == 1  # only one model may stay
    assert bundle_module.resolve_model(HIPPO) is not first  # it was evicted: loaded afresh
    # a bound in bytes: the loaded network does not fit, so the older entry goes
    cache2 = BundleCache(max_bytes=1, max_models=10)
    monkeypatch.setattr(bundle_module, "bundle_cache", cache2)
    a = bundle_module.resolve_model(HIPPO)
    a.network  # noqa: B018
    assert network_bytes(a) > 1
    bundle_module.resolve_model("adrenal_classifier", task="classification")
    assert len(cache2.status()["models"]) == 1 and cache2.evictions == 1
    # a partition per device: the same bundle is a different entry on another device
    with cache2.partition("cuda:0"):
        c = bundle_module.resolve_model(HIPPO)
    assert c is not a
