"""`medai segment` / `medai models` through the CLI: batch with a corrupt case (partial exit), overwrite
protection, --progress json lines, report, untrusted bundle refused."""

import contextlib
import io
import json
import subprocess
import sys

import numpy as np
import pytest

from bundle_factory import make_bundle
from conftest import oblique_ijk_to_ras
from MedAILib.cli import main
from MedAILib.io import write_image
from MedAILib.core.volume import Volume


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDAI_HOME", str(tmp_path / "home"))
    return None


def medai(env, *args):
    """Run the CLI in this process (importing torch/MONAI per subprocess costs ~10 s on 2 cores);
    one test below still runs it as a real subprocess."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in args])
    return subprocess.CompletedProcess(args, rc, out.getvalue(), err.getvalue())


def test_cli_subprocess_refuses_untrusted_bundle(tmp_path, medai_env):
    bundle = make_bundle(tmp_path / "bundle")
    img = tmp_path / "x.nii.gz"
    write_image(Volume(np.ones((4, 5, 6), np.float32), np.eye(4)), img)
    r = subprocess.run([sys.executable, "-m", "MedAILib.cli", "segment", str(img), "-o", str(tmp_path / "o"),
                        "--model", str(bundle), "--progress", "json"],
                       env=dict(medai_env, MEDAI_HOME=str(tmp_path / "home")), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "--trust" in r.stderr and "Traceback" not in r.stderr
    assert json.loads(r.stdout.splitlines()[-1])["event"] == "error"
    assert not (tmp_path / "o").exists()


def test_batch_partial_overwrite_json_report(tmp_path, env):
    bundle = make_bundle(tmp_path / "bundle")
    cases = tmp_path / "cases"
    cases.mkdir()
    rng = np.random.default_rng(1)
    for n in range(2):
        write_image(Volume(rng.normal(50, 10, (18, 22, 26)).astype(np.float32), oblique_ijk_to_ras()),
                    cases / f"case{n}.nii.gz")
    (cases / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    out = tmp_path / "out"
    r = medai(env, "segment", cases, "-o", out, "--model", bundle)
    assert r.returncode == 2 and "--trust" in r.stderr and "Traceback" not in r.stderr
    r = medai(env, "segment", cases, "-o", out, "--model", bundle, "--trust", bundle, "--progress", "json",
              "--report", tmp_path / "report.csv")
    assert r.returncode == 3, r.stderr
    events = [json.loads(l) for l in r.stdout.splitlines() if l.strip()]
    kinds = {e["event"] for e in events}
    assert {"progress", "case_done", "done"} <= kinds
    assert all(0 <= e["fraction"] <= 1 and "eta_s" in e for e in events if e["event"] == "progress")
    done = events[-1]
    assert done["event"] == "done" and done["failed"] == ["broken"] and len(done["outputs"]) == 2
    assert sorted(p.name for p in out.iterdir()) == ["case0.seg.nrrd", "case1.seg.nrrd"]
    report = (tmp_path / "report.csv").read_text()
    assert "broken" in report and "failed" in report and "anterior_ml" in report
    # existing outputs are not overwritten without --overwrite
    before = (out / "case0.seg.nrrd").stat().st_mtime_ns
    r = medai(env, "segment", cases / "case0.nii.gz", "-o", out / "case0.seg.nrrd", "--model", bundle)
    assert r.returncode == 2 and "already exists" in r.stderr
    assert (out / "case0.seg.nrrd").stat().st_mtime_ns == before
    r = medai(env, "segment", cases / "case0.nii.gz", "-o", out / "case0.seg.nrrd", "--model", bundle,
              "--overwrite", "--format", "seg.nrrd", "--preview", tmp_path / "p.png", "--report", tmp_path / "r.json",
              "--progress", "none")
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path / "r.json").read_text())["cases"][0]
    assert rep["status"] == "ok" and rep["device"] == "cpu" and set(rep["label_volumes_ml"]) == {"anterior", "posterior"}
    assert (tmp_path / "p.png").stat().st_size > 1000
    from MedAILib.io import read_segmentation

    seg = read_segmentation(out / "case0.seg.nrrd")
    assert np.allclose(seg.ijk_to_ras, oblique_ijk_to_ras(), atol=1e-4)


def test_models_list_show_and_unknown(env):
    r = medai(env, "models", "list", "--json")
    assert r.returncode == 0 and any(m["id"] == "hippocampus_unet" for m in json.loads(r.stdout))
    r = medai(env, "models", "show", "hippocampus_unet")
    assert r.returncode == 0 and "SCT^5366008" in r.stdout  # Hippocampus in Slicer's DICOM master list
    r = medai(env, "models", "show", "nope")
    assert r.returncode == 2 and "no model called" in r.stderr
