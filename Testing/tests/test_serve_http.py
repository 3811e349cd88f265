"""`medai serve --port` on 127.0.0.1: several clients, one queue, results identical to local runs.

Real hippocampus MRI and the shipped model. The server is a separate process started and stopped
by this module (SIGINT, then kill after a bounded wait)."""

import http.client
import json
import threading
import urllib.parse
from pathlib import Path

import numpy as np
import pytest

from serve_support import HIPPO, HttpServer, big_volume, big_volume_flags, engine_env, hippo_cases, labels, one_shot

N_JOBS = 10
SEG = ["--model", HIPPO, "--device", "cpu", "--progress", "json"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return engine_env(tmp_path_factory.mktemp("home"))


@pytest.fixture(scope="module")
def server(env, tmp_path_factory):
    s = HttpServer(env, tmp_path_factory.mktemp("server"), "--max-upload-mb", "4", "--max-jobs-per-client", "30",
                   "--max-queue", "60", "--keep-results-s", "120", "--idle-release-s", "5")
    yield s
    s.stop()
    assert s.proc.returncode is not None
    assert not s.work_dir.exists() or not any(s.work_dir.iterdir()), "job files were left behind"


@pytest.fixture(scope="module")
def local(env, data_dir, tmp_path_factory):
    """The 10 cases segmented locally by one one-shot `medai segment` (the reference)."""
    out = tmp_path_factory.mktemp("local")
    cases = hippo_cases(data_dir, N_JOBS)
    p = one_shot(["segment", *cases, "-o", out, *SEG], env)
    assert p.returncode == 0, p.stderr
    return {c.name.split(".")[0]: labels(out / (c.name.split(".")[0] + ".seg.nrrd")) for c in cases}


def _nrrd(path: Path, folder: Path) -> Path:
    """What a client sends: the input as a compressed NRRD."""
    from MedAILib.io import read_image, write_image

    folder.mkdir(parents=True, exist_ok=True)
    target = folder / (path.name.split(".")[0] + ".nrrd")
    write_image(read_image(path), target, compress=True)
    return target


def _seg_job(client, nrrd: Path):
    name = nrrd.stem
    return client.create(["segment", f"@in/{nrrd.name}", "-o", f"@out/{name}.seg.nrrd", *SEG], {nrrd.name: str(nrrd)})


def _follow(job, results: Path):
    """Envelopes until the end, then the result downloaded; returns (messages, result path or None)."""
    msgs = list(job.events())
    path = None
    if job.end["state"] == "done":
        results.mkdir(parents=True, exist_ok=True)
        (name,) = job.end["outputs"]
        path = job.download(name, results / name)
    job.delete()
    return msgs, path


def test_two_clients_ten_jobs_each_fair_order_own_cancel_identical_results(server, local, data_dir, tmp_path):
    cases = hippo_cases(data_dir, N_JOBS)
    inputs = [_nrrd(c, tmp_path / "upload") for c in cases]
    a, b, c = server.client(client_id="client-a"), server.client(client_id="client-b"), server.client(client_id="client-c")
    for cl in (a, b, c):
        assert cl.hello()["version"]
    # Client C's long job occupies the engine while A and B queue theirs.
    big = _nrrd(big_volume(data_dir, tmp_path), tmp_path / "upload")
    blocker = c.create(["segment", f"@in/{big.name}", "-o", "@out/big.seg.nrrd", *SEG, *big_volume_flags()],
                       {big.name: str(big)})
    c_msgs, streamed = [], threading.Event()

    def follow_c():
        for m in blocker.events():
            c_msgs.append(m)
            if "window batch" in m.get("out", ""):
                streamed.set()  # progress arrives while the job runs

    tc = threading.Thread(target=follow_c, daemon=True)
    tc.start()
    assert streamed.wait(300), "no progress was streamed"
    jobs = {"client-a": [], "client-b": []}

    def submit(cl, key):
        for nrrd in inputs:
            jobs[key].append(_seg_job(cl, nrrd))

    threads = [threading.Thread(target=submit, args=(cl, k)) for cl, k in ((a, "client-a"), (b, "client-b"))]
    [t.start() for t in threads]
    [t.join(300) for t in threads]
    assert all(len(v) == N_JOBS for v in jobs.values())
    extra = _seg_job(a, inputs[0])  # A's own queued job, cancelled by A below
    # B may not cancel C's job; C cancels it; A cancels its extra job.
    from MedAILib.client.remote import RemoteError

    with pytest.raises(RemoteError, match="belongs to another client"):
        b._json("POST", f"/v1/jobs/{blocker.id}/cancel")
    blocker.cancel()
    extra.cancel()
    tc.join(120)
    assert blocker.end["state"] == "cancelled" and blocker.end["returncode"] == 130
    blocker.delete()
    extra_msgs, extra_result = _follow(extra, tmp_path / "extra")
    assert extra.end["state"] == "cancelled" and extra_result is None
    # every job of A and B completes, with the local labels, byte for byte
    starts = []
    for key, client_jobs in jobs.items():
        for nrrd, job in zip(inputs, client_jobs):
            msgs, result = _follow(job, tmp_path / key)
            assert job.end["state"] == "done", [m.get("out") for m in msgs][-5:]
            assert labels(result).tobytes() == local[nrrd.stem].tobytes(), f"{key} {nrrd.stem} differs from local"
            starts += [(m["seq"], key) for m in msgs if m.get("engine") == "started"]
    order = [k for _, k in sorted(starts)]
    # Both queues were full when C's job ended: the engine served A and B in turn.
    assert all(order[i] != order[i + 1] for i in range(len(order) - 1)), order


def test_progress_events_are_the_cli_events(server, data_dir, tmp_path):
    from MedAILib.core import events

    nrrd = _nrrd(hippo_cases(data_dir, 1)[0], tmp_path)
    msgs, result = _follow(_seg_job(server.client(), nrrd), tmp_path / "r")
    evts = [events.parse_line(m["out"]) for m in msgs if "out" in m]
    kinds = [e["event"] for e in evts if e]
    assert kinds[-1] == "done" and {"case_start", "progress", "case_done"} <= set(kinds)
    done = [e for e in evts if e and e["event"] == "case_done"][0]
    # the server's own folders never reach the client: results are named as @out/NAME
    assert done["output"] == f"@out/{nrrd.stem}.seg.nrrd" and str(server.work_dir) not in json.dumps(msgs)


def test_refusals_are_clear(server, data_dir, tmp_path, monkeypatch):
    from MedAILib import __version__
    from MedAILib.client.remote import RemoteError
    from MedAILib.server import protocol

    with pytest.raises(RemoteError, match="refused the token") as e:
        server.client(token="not-the-token").hello()
    assert "token" in e.value.hint
    # version mismatch: the message names both versions
    monkeypatch.setattr(protocol, "engine_version", lambda: "9.9.9")
    with pytest.raises(RemoteError) as e:
        server.client().hello()
    assert "9.9.9" in e.value.message and __version__ in e.value.message and e.value.status == 409
    monkeypatch.undo()
    # an input over the upload limit (4 MiB): the client says so before sending ...
    from MedAILib.core.volume import Volume
    from MedAILib.io import write_image

    noise = tmp_path / "noise.nrrd"
    write_image(Volume(np.random.default_rng(0).integers(0, 255, (200, 200, 200), dtype=np.uint8), np.eye(4)), noise)
    with pytest.raises(RemoteError, match="larger than the server's upload limit of 4 MiB"):
        server.client().create(["segment", "@in/noise.nrrd", "-o", "@out/n.seg.nrrd", *SEG], {"noise.nrrd": str(noise)})
    # ... and the server refuses it itself, with or without a declared length
    cl = server.client()
    job_id = cl._json("POST", "/v1/jobs", {"argv": ["segment", "@in/noise.nrrd", "-o", "@out/n.seg.nrrd"],
                                           "inputs": ["noise.nrrd"]})["job"]
    for chunked in (False, True):
        status, body = _raw_put(server.url, f"/v1/jobs/{job_id}/inputs/noise.nrrd", noise.read_bytes(), cl, chunked)
        assert status == 413 and "upload limit of 4 MiB" in body["message"], body
    cl._json("DELETE", f"/v1/jobs/{job_id}")
    # files of the server and code-running options are refused before the job is queued
    for argv, inputs, match in [
            (["segment", "/etc/hostname", "-o", "@out/x.seg.nrrd"], {}, "only files uploaded with the job"),
            (["segment", "@in/a.nrrd", "-o", "/tmp/x.seg.nrrd"], {"a.nrrd": noise}, "only files uploaded"),
            (["segment", "@in/a.nrrd", "-o", "@out/x.seg.nrrd", "--trust", "/tmp"], {"a.nrrd": noise}, "--trust"),
            (["segment", "@in/a.nrrd", "-o", "@out/x.seg.nrrd", "--model", str(tmp_path)], {"a.nrrd": noise},
             "bundle folders cannot be sent"),
            (["segment", "@in/a.nrrd", "-o", "@out/../x.seg.nrrd"], {"a.nrrd": noise}, "plain file name"),
            (["info", "@in/a.nrrd"], {}, "segment")]:
        small = {k: str(_nrrd(data_dir / "msd-hippocampus" / "imagesTr" / "hippocampus_001.nii.gz", tmp_path / "s"))
                 for k in inputs}
        with pytest.raises(RemoteError, match=match.replace("(", r"\(")):
            server.client().create(argv, small)
    # a client's job limit
    few = server.client(client_id="greedy")
    made = [few._json("POST", "/v1/jobs", {"argv": ["segment"], "inputs": []})["job"] for _ in range(30)]
    with pytest.raises(RemoteError, match="30 jobs on this server"):
        few._json("POST", "/v1/jobs", {"argv": ["segment"], "inputs": []})
    for j in made:
        few._json("DELETE", f"/v1/jobs/{j}")


def _raw_put(url, path, data: bytes, client, chunked: bool):
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    headers = client._headers({"Content-Type": "application/octet-stream"})
    try:
        if chunked:
            conn.request("PUT", path, body=iter([data[i:i + 65536] for i in range(0, len(data), 65536)]),
                         headers=headers, encode_chunked=True)
        else:
            conn.request("PUT", path, body=data, headers=headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


def test_server_keeps_serving_after_a_job_fails_and_keeps_no_patient_data(server, data_dir, tmp_path):
    cl = server.client()
    garbage = tmp_path / "garbage.nrrd"
    garbage.write_bytes(b"NRRD0004\ntype: what\n\nnonsense")
    job = cl.create(["segment", "@in/garbage.nrrd", "-o", "@out/g.seg.nrrd", *SEG], {"garbage.nrrd": str(garbage)})
    msgs = list(job.events())
    assert job.end["state"] == "failed" and job.end["outputs"] == []
    assert any("garbage.nrrd" in m.get("out", "") for m in msgs)
    nrrd = _nrrd(hippo_cases(data_dir, 1)[0], tmp_path)
    job = _seg_job(cl, nrrd)
    list(job.events())
    assert job.end["state"] == "done"
    folder = server.work_dir / job.id
    assert not (folder / "in").exists(), "the input image was kept after the job"
    assert (folder / "out").is_dir()  # the result waits for its client ...
    job.download(job.end["outputs"][0], tmp_path / "r.seg.nrrd")
    job.delete()
    assert not folder.exists()  # ... and is gone once fetched and the job deleted


def test_cli_segment_with_server_matches_local(server, local, env, data_dir, tmp_path):
    cases = hippo_cases(data_dir, 3)
    out, report = tmp_path / "out", tmp_path / "report.json"
    p = one_shot(["segment", *cases, "-o", out, "--model", HIPPO, "--device", "cpu", "--progress", "json",
                  "--server", server.url, "--token-file", server.token_file, "--report", report], env)
    assert p.returncode == 0, p.stderr + p.stdout[-2000:]
    from MedAILib.core import events

    evts = [e for e in map(events.parse_line, p.stdout.splitlines()) if e]
    assert [e["event"] for e in evts if e["event"] != "progress"][0] == "case_start"
    assert [e["status"] for e in evts if e["event"] == "case_done"] == ["ok"] * 3
    for c in cases:
        name = c.name.split(".")[0]
        assert labels(out / f"{name}.seg.nrrd").tobytes() == local[name].tobytes()
    rows = json.loads(report.read_text())["cases"]
    assert [r["status"] for r in rows] == ["ok"] * 3 and all(r["server"] == server.url for r in rows)
    assert all(r["output"].startswith(str(out)) for r in rows)
    # existing outputs are not replaced without --overwrite (decided here, before anything is sent)
    p = one_shot(["segment", cases[0], "-o", out / f"{cases[0].name.split('.')[0]}.seg.nrrd", "--model", HIPPO,
                  "--server", server.url, "--token-file", server.token_file], env)
    assert p.returncode == 2 and "already exists" in p.stderr
    # a wrong token file: one clear line
    bad = tmp_path / "bad-token"
    bad.write_text("nope\n")
    p = one_shot(["segment", cases[0], "-o", tmp_path / "x.seg.nrrd", "--model", HIPPO,
                  "--server", server.url, "--token-file", bad], env)
    assert p.returncode != 0 and "refused the token" in p.stderr and "Traceback" not in p.stderr


def test_cli_detect_with_server_matches_local(server, env, data_dir, tmp_path):
    """`medai detect --server` (issue 17: every job command, not only segment): the shipped detector
    on a real LIDC CT series gives the boxes of the local one-shot run (the series travels as a
    compressed NRRD); an option naming a local file (--reference) is refused before anything is sent."""
    from MedAILib.tasks.detection import lidc

    series = lidc.series_dir(data_dir / "lidc-idri-subset", "LIDC-IDRI-0003")
    common = ["--model", "lidc_nodule_retinanet_tiny", "--device", "cpu", "--min-score", "0", "--max-boxes", "5",
              "--progress", "none"]
    local, remote = tmp_path / "local.json", tmp_path / "remote.json"
    p = one_shot(["detect", series, "-o", local, *common], env)
    assert p.returncode == 0, p.stderr
    p = one_shot(["detect", series, "-o", remote, *common, "--server", server.url, "--token-file", server.token_file],
                 env)
    assert p.returncode == 0, p.stderr
    a, b = json.loads(local.read_text())["boxes"], json.loads(remote.read_text())["boxes"]
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert x["score"] == pytest.approx(y["score"], abs=1e-4)
        assert np.allclose(x["center_ras_mm"], y["center_ras_mm"], atol=1e-2)
        assert x["voxel_min"] == y["voxel_min"] and x["voxel_max"] == y["voxel_max"]
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps({"boxes": a}))
    p = one_shot(["detect", series, "-o", tmp_path / "x.json", *common, "--reference", ref,
                  "--server", server.url, "--token-file", server.token_file], env)
    assert p.returncode != 0 and "--reference names a file on this computer" in p.stderr
