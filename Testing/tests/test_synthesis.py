"""Modality conversion (GAN): image metrics, whole-volume inference (no seams, input grid kept),
out-of-distribution warning, training smoke run + resume, and the `medai synthesize` CLI."""

import csv
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from MedAILib.core.paths import REPO_ROOT
from MedAILib.io import read_image, write_image
from MedAILib.tasks.synthesis.metrics import image_metrics, mae, psnr, ssim
from MedAILib.tasks.synthesis.bundle import SynthesisBundle, find_bundle
from MedAILib.tasks.synthesis.pipeline import predict_slices, synthesize
from MedAILib.tasks.synthesis.pairs import find_pairs
from MedAILib.tasks.synthesis.preprocess import head_mask, model_space_arrays, slice_stacks
from MedAILib.core.volume import Volume

BUNDLE = REPO_ROOT / "MedAI" / "MedAILib" / "resources" / "Models" / "t2_to_flair_gan"
TCIA = "tcia-brain-tumor-progression-dicom"


# ------------------------------------------------------------------------------------ metrics
def test_metrics_on_known_examples():
    rng = np.random.default_rng(0)
    ref = rng.uniform(0, 10, (3, 16, 16)).astype(np.float32)
    same = image_metrics(ref, ref)
    assert same["mae"] == 0.0 and math.isinf(same["psnr"]) and same["ssim"] == pytest.approx(1.0)
    # A constant error c: MAE = c, PSNR = 20 log10(range / c) (MSE = c^2).
    rng_ = float(ref.max() - ref.min())
    assert mae(ref + 0.5, ref) == pytest.approx(0.5)
    assert psnr(ref + 0.5, ref) == pytest.approx(20 * math.log10(rng_ / 0.5), rel=1e-4)
    assert psnr(ref + 0.5, ref, data_range=5.0) == pytest.approx(20 * math.log10(5.0 / 0.5), rel=1e-4)
    # Worse images score lower SSIM.
    assert ssim(ref + rng.normal(0, 3, ref.shape), ref) < ssim(ref + rng.normal(0, 0.3, ref.shape), ref) < 1.0
    # Errors outside the mask do not count.
    mask = np.zeros(ref.shape, bool)
    mask[:, 4:12, 4:12] = True
    bad = ref.copy()
    bad[~mask] += 100.0
    assert mae(bad, ref, mask) == 0.0 and math.isinf(psnr(bad, ref, mask))
    with pytest.raises(ValueError):
        mae(ref, ref[:, :8])


# ------------------------------------------------------------------------------- pairs finding
def test_pairs_from_tcia_dicom_and_synthrad_folders(data_dir, tmp_path):
    pairs = {p.case: p for p in find_pairs(data_dir / TCIA, "T2", "FLAIR")}
    assert set(pairs) == {"PGBM-003", "PGBM-006"}
    assert "T2reg" in pairs["PGBM-003"].source and "FLAIRreg" in pairs["PGBM-003"].target
    for case in ("c1", "c2"):
        (tmp_path / case).mkdir()
        for name in ("mr.nii.gz", "ct.nii.gz", "mask.nii.gz"):
            (tmp_path / case / name).write_bytes(b"")
    sr = find_pairs(tmp_path, "MR", "CT")
    assert [p.case for p in sr] == ["c1", "c2"] and sr[0].source.endswith("mr.nii.gz")
    assert sr[0].target.endswith("ct.nii.gz") and sr[0].mask.endswith("mask.nii.gz")


# ------------------------------------------------------------------- shipped model on real data
@pytest.fixture(scope="module")
def shipped():
    if not (BUNDLE / "models" / "model.pt").exists():
        pytest.fail(f"shipped bundle missing: {BUNDLE}")
    return SynthesisBundle(BUNDLE)


@pytest.fixture(scope="module")
def val_pair(data_dir, shipped):
    # a whole-head TCIA patient (thick slices, not skull-stripped): the input the seeds' clinicians give
    pair = {p.case: p for p in find_pairs(data_dir / TCIA, "T2", "FLAIR")}["PGBM-003"]
    return pair.load()


@pytest.fixture(scope="module")
def val_result(val_pair, shipped):
    return synthesize(val_pair[0], shipped)


def test_shipped_bundle_format(shipped):
    assert (BUNDLE / "models" / "model.pt").stat().st_size <= 10 * 1024 * 1024
    state = torch.load(BUNDLE / "models" / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert "network_data_format" in shipped.metadata
    assert shipped.inference["network_def"]["_target_"].endswith("UNet")
    assert (BUNDLE / "docs" / "README.md").exists() and (BUNDLE / "LICENSE").exists()
    assert shipped.training_stats["features"]
    assert find_bundle("t2_to_flair_gan").path.resolve() == BUNDLE.resolve()


def test_output_on_input_grid_and_in_distribution(val_pair, val_result, shipped):
    t2 = val_pair[0]
    out = val_result.volume
    assert out.same_grid(t2, atol=1e-6) and np.array_equal(out.ijk_to_ras, t2.ijk_to_ras)
    assert out.array.dtype == np.float32 and np.isfinite(out.array).all()
    assert out.metadata["units"] == shipped.cfg["output_units"] and out.metadata["units"].startswith("FLAIR in")
    # Every slice is converted (no single-slice limit): the head has signal in each slice.
    mask = head_mask(t2)
    for k in range(t2.shape[0]):
        if mask[k].sum() > 100:
            assert out.array[k][mask[k]].std() > 0.1
    assert val_result.ood.in_distribution, val_result.ood.message()


def test_no_seams_between_windows(val_pair, shipped):
    """Sliding windows (two overlaps, two sizes) and the whole slice at once must agree inside the head,
    and the windowed result must have no step at the window borders that the whole-slice result lacks."""
    from MedAILib.tasks.synthesis.pipeline import network_multiple

    img, src, mask = model_space_arrays(val_pair[0], shipped.cfg)
    stacks = slice_stacks(src, shipped.cfg["slices"])[8:11]
    net = shipped.network()
    mult = network_multiple(shipped.inference["network_def"])
    whole = predict_slices(net, stacks, None, multiple=mult)
    m = mask[8:11]
    spread = whole[m].std()
    for roi, overlap in ((96, 0.5), (96, 0.75), (64, 0.5)):
        tiled = predict_slices(net, stacks, (roi, roi), overlap=overlap, multiple=mult)
        assert np.abs(tiled - whole)[m].mean() < 0.02 * spread, (roi, overlap)
        step = int(roi * (1 - overlap)) // mult * mult
        for axis in (1, 2):  # window borders along rows and along columns
            d_tiled = np.abs(np.diff(tiled, axis=axis))
            d_whole = np.abs(np.diff(whole, axis=axis))
            mm = m[:, 1:, :] if axis == 1 else m[:, :, 1:]
            for b in range(step, tiled.shape[axis] - 1, step):
                idx = (slice(None), b - 1, slice(None)) if axis == 1 else (slice(None), slice(None), b - 1)
                sel = mm[idx]
                if sel.sum() > 50:
                    assert np.abs(d_tiled[idx] - d_whole[idx])[sel].mean() < 0.05 * spread, (roi, overlap, axis, b)


def test_ood_warns_on_ct_and_noise(data_dir, shipped, val_pair):
    ct = read_image(data_dir / "totalsegmentator-example" / "example_ct_sm.nii.gz")
    r = synthesize(ct, shipped)
    assert not r.ood.in_distribution and "UNLIKE THE TRAINING DATA" in r.ood.message()
    assert r.volume.same_grid(ct)
    noise = val_pair[0].with_array(np.random.default_rng(1).uniform(0, 1000, val_pair[0].shape).astype(np.float32))
    assert not synthesize(noise, shipped).ood.in_distribution


# --------------------------------------------------------------------- training smoke + resume
def _phantom_case(folder, seed):
    """A small synthetic MR/CT pair (SynthRAD layout): an ellipsoid 'head' with a bright core."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[0:6, 0:40, 0:40]
    r = ((y - 20) / 15.0) ** 2 + ((x - 20) / 12.0) ** 2
    head = r < 1
    mr = np.where(head, 300 + 200 * (r < 0.3), 0) + rng.normal(0, 5, head.shape)
    ct = np.where(head, 40 + 900 * (r > 0.8), -1000)
    m = np.diag([1.5, 1.5, 4.0, 1.0])
    folder.mkdir(parents=True)
    write_image(Volume(mr.astype(np.float32), m), folder / "mr.nii.gz")
    write_image(Volume(ct.astype(np.int16), m), folder / "ct.nii.gz")
    write_image(Volume(head.astype(np.uint8), m), folder / "mask.nii.gz")  # SynthRAD's optional mask


def _medai(env, *args, cwd=None):
    return subprocess.run([sys.executable, "-m", "MedAILib.cli", *map(str, args)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    from MedAILib.tasks.synthesis import trainer as train

    root = tmp_path_factory.mktemp("synthrad")
    for i, case in enumerate(("a", "b")):
        _phantom_case(root / "pairs" / case, i)
    out = root / "bundle"
    base = ["--pairs", str(root / "pairs"), "--source", "MR", "--target", "CT", "--out", str(out),
            "--val-cases", "b", "--iters-per-epoch", "2", "--batch-size", "2", "--patch", "32",
            "--channels", "4,8", "--pixel-mm", "1.5", "--threads", "1"]
    assert train.main(base + ["--epochs", "1"]) == 0
    first = torch.load(out / "models" / "model.pt", weights_only=True)
    assert train.main(base + ["--epochs", "2", "--resume"]) == 0
    return root, out, first


def test_training_smoke_bundle_and_resume(tiny_bundle):
    root, out, first = tiny_bundle
    b = SynthesisBundle(out)
    assert b.target == "CT" and b.cfg["output_units"] == "HU"
    state = torch.load(out / "models" / "model.pt", weights_only=True)
    assert set(state) == set(first)
    assert any(not torch.equal(state[k], first[k]) for k in state)  # the resumed epoch trained further
    rows = list(csv.DictReader(open(out / "train_log.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert (out / "samples" / "epoch_001.png").exists() and (out / "samples" / "epoch_002.png").exists()
    assert b.metadata["training"]["epochs"] == 2 and "b" in b.metadata["validation"]
    ck = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert ck["epoch"] == 2
    res = synthesize(read_image(root / "pairs" / "b" / "mr.nii.gz"), b)
    assert res.volume.metadata["units"] == "HU" and res.volume.metadata["modality"] == "CT"


def test_cli_end_to_end(tiny_bundle, medai_env, tmp_path, capsys):
    from MedAILib.cli import main

    root, bundle, _ = tiny_bundle
    mr, ct = root / "pairs" / "a" / "mr.nii.gz", root / "pairs" / "a" / "ct.nii.gz"
    out = tmp_path / "sct.nii.gz"
    assert main(["synthesize", str(mr), "-o", str(out), "--model", str(bundle), "--reference", str(ct)]) == 0
    text = capsys.readouterr().out
    assert "MAE" in text and "PSNR" in text and "SSIM" in text
    assert read_image(out).same_grid(read_image(mr))
    # preview PNG next to the output: three rows (input, output, real target) of axial slices
    from PIL import Image

    preview = tmp_path / "sct_preview.png"
    assert str(preview) in text and Image.open(preview).size[1] > Image.open(preview).size[0] * 0.8
    assert main(["synthesize", str(mr), "-o", str(tmp_path / "np.nii.gz"), "--model", str(bundle),
                 "--no-preview"]) == 0
    capsys.readouterr()
    assert (tmp_path / "np.nii.gz").exists() and not (tmp_path / "np_preview.png").exists()
    # `medai evaluate image` scores the written file the same way (head mask of the source).
    mae_printed = float(text.split("MAE ")[1].split()[0])
    assert main(["evaluate", "image", str(out), str(ct), "--source", str(mr), "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["mae"] == pytest.approx(mae_printed, abs=1e-3) and set(scored) >= {"psnr", "ssim"}
    before = out.stat().st_mtime_ns
    assert main(["synthesize", str(mr), "-o", str(out), "--model", str(bundle)]) != 0
    assert "--overwrite" in capsys.readouterr().err and out.stat().st_mtime_ns == before
    # Batch with JSON progress, run as a separate process the way Slicer runs it: a missing input
    # fails alone, the other case is written.
    r = _medai(medai_env, "synthesize", mr, tmp_path / "missing.nii.gz", "-o", tmp_path / "batch",
               "--model", bundle, "--progress", "json")
    events = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    kinds = [e["event"] for e in events]
    # one event vocabulary and one exit rule for every batch command (issue 13): a partial batch
    # exits 3 and a failed case is a case_done with status "failed", as in `medai segment`
    assert r.returncode == 3 and "progress" in kinds
    assert [e["case"] for e in events if e["event"] == "case_done" and e["status"] == "failed"] == ["missing"]
    # the converted image and its preview PNG (input / output) for the one case that ran
    assert events[-1]["event"] == "done" and sorted(events[-1]["outputs"]) == sorted(
        [str(tmp_path / "batch" / "mr_ct.nii.gz"), str(tmp_path / "batch" / "mr_ct_preview.png")])
    assert events[-1]["failed"] == ["missing"]
    assert (tmp_path / "batch" / "mr_ct.nii.gz").exists()
    assert not [p for p in (tmp_path / "batch").iterdir() if "partial" in p.name]


def test_catalogue_checksum_protects_the_shipped_weights(tmp_path, monkeypatch):
    """A shipped bundle whose weights differ from the catalogue's sha256 is refused."""
    import shutil

    from MedAILib.core.errors import ModelError

    res = tmp_path / "Resources"
    shutil.copytree(REPO_ROOT / "MedAI" / "MedAILib" / "resources", res, ignore=shutil.ignore_patterns("*.png", "hippocampus_unet"))
    monkeypatch.setenv("MEDAI_RESOURCES", str(res))
    assert find_bundle("t2_to_flair_gan").path == res / "Models" / "t2_to_flair_gan"
    with open(res / "Models" / "t2_to_flair_gan" / "models" / "model.pt", "ab") as f:
        f.write(b"tampered")
    with pytest.raises(ModelError, match="checksum"):
        find_bundle("t2_to_flair_gan")
