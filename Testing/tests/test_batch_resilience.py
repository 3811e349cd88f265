"""Batch resilience (issue 9, item 5): 50 cases, 5 of them broken (corrupt, empty, NaN, 2D, complex
voxels). One `medai segment` run in a subprocess, as a cron/HPC job would call it: the 45 good cases
are segmented, the 5 are reported with their reasons (report.json and the JSON progress events),
nothing else is written, inputs are untouched, and the exit status is 3 (partial).
"""

import hashlib
import json
import subprocess
import sys

import numpy as np
import SimpleITK as sitk

from bundle_factory import make_bundle
from MedAILib.io import read_segmentation, write_image
from MedAILib.core.volume import Volume

N_GOOD = 45
# case name -> words the reported reason must contain (what is wrong, in the user's terms)
BROKEN = {
    "broken_corrupt": ("broken_corrupt", "corrupt"),
    "broken_empty": ("empty",),
    "broken_nan": ("NaN",),
    "broken_2d": ("2D",),
    "broken_complex": ("complex",),
}


def _make_cases(folder):
    folder.mkdir()
    rng = np.random.default_rng(7)
    affine = np.diag([1.2, 1.0, 0.9, 1.0])
    for n in range(N_GOOD):
        write_image(Volume(rng.normal(60, 12, (10, 12, 14)).astype(np.float32), affine), folder / f"case{n:02d}.nii.gz")
    good = (folder / "case00.nii.gz").read_bytes()
    (folder / "broken_corrupt.nii.gz").write_bytes(good[:40] + b"\x00garbage" * 20)  # gzip header, then junk
    (folder / "broken_empty.nii.gz").write_bytes(b"")
    nan = rng.normal(60, 12, (10, 12, 14)).astype(np.float32)
    nan[3:5, 2:4, :] = np.nan
    write_image(Volume(nan, affine), folder / "broken_nan.nii.gz")
    sitk.WriteImage(sitk.GetImageFromArray(rng.normal(size=(20, 30)).astype(np.float32)), str(folder / "broken_2d.nii.gz"))
    cplx = (rng.normal(size=(10, 12, 14)) + 1j * rng.normal(size=(10, 12, 14))).astype(np.complex64)
    sitk.WriteImage(sitk.GetImageFromArray(cplx), str(folder / "broken_complex.nii.gz"))
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in folder.iterdir()}


def test_fifty_cases_five_broken_finishes_the_rest_and_exits_partial(tmp_path, medai_env):
    cases = tmp_path / "cases"
    hashes = _make_cases(cases)
    assert len(hashes) == N_GOOD + len(BROKEN) == 50
    bundle = make_bundle(tmp_path / "bundle", roi_size=(16, 16, 16))
    out, report = tmp_path / "out", tmp_path / "report.json"
    r = subprocess.run([sys.executable, "-m", "MedAILib.cli", "segment", str(cases), "-o", str(out),
                        "--model", str(bundle), "--trust", str(bundle), "--progress", "json", "--report", str(report)],
                       env=dict(medai_env, MEDAI_HOME=str(tmp_path / "home"), OMP_NUM_THREADS="1"),
                       capture_output=True, text=True, timeout=400)
    assert r.returncode == 3, r.stderr[-3000:]  # partial: some cases failed, some succeeded
    assert "Traceback" not in r.stdout + r.stderr
    # the 45 good cases were all segmented, on their own grids; nothing else is in the output folder
    written = sorted(p.name for p in out.iterdir())
    assert written == [f"case{n:02d}.seg.nrrd" for n in range(N_GOOD)], written
    seg = read_segmentation(out / "case17.seg.nrrd")
    assert seg.array.shape == (10, 12, 14) and np.allclose(seg.spacing, (1.2, 1.0, 0.9))
    # the report: one row per case, the 5 broken ones failed with their reason
    rows = {row["case"]: row for row in json.loads(report.read_text())["cases"]}
    assert len(rows) == 50
    assert sorted(k for k, v in rows.items() if v["status"] == "ok") == [f"case{n:02d}" for n in range(N_GOOD)]
    for name, words in BROKEN.items():
        row = rows[name]
        assert row["status"] == "failed" and row["output"] is None, row
        for w in words:
            assert w in row["error"], (name, row["error"])
        assert "Traceback" not in row["error"] and "internal error" not in row["error"], row["error"]
    # the JSON protocol says the same (the Slicer module and scripts read it)
    events = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
    done = events[-1]
    assert done["event"] == "done" and sorted(done["failed"]) == sorted(BROKEN) and len(done["outputs"]) == N_GOOD
    failed_events = {e["case"]: e["error"] for e in events if e["event"] == "case_done" and e["status"] == "failed"}
    assert set(failed_events) == set(BROKEN)
    # inputs untouched, none of them renamed or deleted
    assert {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in cases.iterdir()} == hashes
    for name, row in sorted(rows.items()):
        if row["status"] != "ok":
            print(f"{name}: {row['error']}")  # shown with -s: the reasons a person reads
