"""Each performance switch keeps outputs identical (or within a stated tolerance for bfloat16).

- CPU bfloat16 autocast: off by default (output bit-identical to float32); when opted in
  (``MEDAI_CPU_BF16=1`` or ``cpu_bf16=True``) probabilities stay within 0.05 of float32 and labels
  agree on >= 97% of voxels (random-weight networks have many near-ties; trained ones agree more).
- class argmax one channel at a time (``MedAILib.runtime.argmax``) instead of ``torch.argmax`` over dim 0:
  identical labels, dtype and metadata, ties and NaN included; whole segmentation identical.
- the network output handed to post-processing in a list that is emptied (freed mid-way):
  identical labels to passing the tensor itself.
- .seg.nrrd written with gzip level 1 instead of 9: the file reads back identical.
- the Slicer Logic's temporary engine input written uncompressed: the engine reads the same volume.
- the benchmark's smoke run (``--quick``) writes its JSON with every section.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bundle_factory import make_bundle
from MedAILib.core.volume import LabelInfo, Volume

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def small_bundle(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDAI_HOME", str(tmp_path / "home"))
    from MedAILib.models import trust
    from MedAILib.models.bundle import load_bundle

    folder = make_bundle(tmp_path / "b", roi_size=(32, 32, 32), sw_batch_size=2, seed=3,
                         network_def={"_target_": "UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 3,
                                      "channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 1,
                                      "norm": "instance"})
    trust.trust(folder)
    return load_bundle(folder)


def _image(bundle):
    from MedAILib.runtime.model_space import to_model_space

    rng = np.random.default_rng(1)
    arr = rng.normal(100, 30, size=(40, 36, 44)).astype(np.float32)
    arr[10:30, 8:28, 12:32] += 120  # a bright block so the network sees structure, not only noise
    m = np.diag([1.1, 0.9, 1.2, 1.0])
    return to_model_space([Volume(arr, m)], bundle)["image"].as_tensor()[None]


def test_cpu_bf16_is_opt_in_and_within_tolerance(small_bundle, monkeypatch):
    from MedAILib.runtime.inferer import run_inferer

    monkeypatch.delenv("MEDAI_CPU_BF16", raising=False)
    image = _image(small_bundle)
    net, inf = small_bundle.network, small_bundle.inferer
    default = run_inferer(inf, net, image, torch.device("cpu"))
    fp32 = run_inferer(inf, net, image, torch.device("cpu"), cpu_bf16=False)
    assert torch.equal(default, fp32), "bfloat16 must be opt-in: the default path is float32"
    bf16 = run_inferer(inf, net, image, torch.device("cpu"), cpu_bf16=True)
    assert bf16.dtype == torch.float32 and bf16.shape == fp32.shape
    assert not torch.equal(bf16, fp32), "autocast did not engage"
    p32, p16 = torch.softmax(fp32, 1), torch.softmax(bf16, 1)
    assert float((p32 - p16).abs().max()) < 0.05
    agree = float((p32.argmax(1) == p16.argmax(1)).float().mean())
    assert agree >= 0.97, f"labels agree on only {agree:.4f} of voxels"
    monkeypatch.setenv("MEDAI_CPU_BF16", "1")
    assert torch.equal(run_inferer(inf, net, image, torch.device("cpu")), bf16)


def test_channel_argmax_matches_torch_argmax_exactly():
    from monai.data import MetaTensor
    from monai.transforms import AsDiscreted

    from MedAILib.runtime.argmax import FastArgmaxd, channel_argmax, is_plain_argmax

    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        x = torch.randn(4, 17, 19, 23, generator=g, dtype=dtype)
        x[:, 0, 0, :6] = 0.25  # ties everywhere in this row: first index wins
        x[1:3, 1, 1, :4] = 9.0  # tie between classes 1 and 2
        assert torch.equal(channel_argmax(x), torch.argmax(x, dim=0, keepdim=True))
        x[2, 5, 5, 5] = float("nan")  # torch.argmax treats NaN as the maximum
        assert torch.equal(channel_argmax(x), torch.argmax(x, dim=0, keepdim=True))
    mt = MetaTensor(torch.randn(3, 11, 12, 13, generator=g), affine=torch.diag(torch.tensor([2.0, 3.0, 4.0, 1.0])))
    plain = AsDiscreted(keys="pred", argmax=True)
    assert is_plain_argmax(plain)
    assert not is_plain_argmax(AsDiscreted(keys="pred", argmax=True, to_onehot=3))
    assert not is_plain_argmax(AsDiscreted(keys="pred", argmax=True, threshold=0.5))
    assert not is_plain_argmax(AsDiscreted(keys="pred", argmax=False))
    a, b = plain({"pred": mt.clone()})["pred"], FastArgmaxd(plain)({"pred": mt.clone()})["pred"]
    assert type(a) is type(b) and a.dtype == b.dtype and torch.equal(a.as_tensor(), b.as_tensor())
    assert torch.equal(a.affine, b.affine) and len(a.applied_operations) == len(b.applied_operations)


def test_segmentation_identical_with_and_without_fast_argmax(small_bundle, monkeypatch):
    import MedAILib.runtime.argmax as fast
    from MedAILib.tasks.segmentation.pipeline import segment

    rng = np.random.default_rng(5)
    arr = rng.normal(100, 30, size=(30, 34, 38)).astype(np.float32)
    arr[8:22, 8:26, 10:30] += 150
    vol = Volume(arr, np.diag([1.2, 0.8, 1.1, 1.0]))
    after = segment([vol], small_bundle, device="cpu").labelmap.array
    monkeypatch.setattr(fast, "is_plain_argmax", lambda t: False)  # MONAI's own AsDiscreted
    monkeypatch.setattr(fast, "channel_argmax", lambda x: torch.argmax(x, dim=0, keepdim=True))
    before = segment([vol], small_bundle, device="cpu").labelmap.array
    assert after.dtype == before.dtype and after.shape == arr.shape
    np.testing.assert_array_equal(after, before)
    assert (after > 0).any()


def test_postprocess_releasing_logits_gives_identical_labels(small_bundle):
    from MedAILib.runtime.model_space import to_model_space
    from MedAILib.tasks.segmentation.pipeline import _postprocess

    rng = np.random.default_rng(6)
    vol = Volume(rng.normal(0, 1, size=(26, 30, 34)).astype(np.float32), np.diag([1.3, 0.7, 1.1, 1.0]))
    data = to_model_space([vol], small_bundle)
    logits = torch.randn((3, *data["image"].shape[1:]), generator=torch.Generator().manual_seed(0))
    kept = _postprocess(small_bundle, data, logits.clone())
    held = [logits.clone()]
    released = _postprocess(small_bundle, data, held)
    assert held == [] and np.array_equal(np.asarray(kept), np.asarray(released))
    # streamed post-processing returns KJI labels; the whole-volume path (1, *IJK)
    assert tuple(kept.shape) == tuple(vol.size_ijk[::-1]) or tuple(kept.shape[1:]) == vol.size_ijk


def test_seg_nrrd_fast_gzip_reads_back_identical(tmp_path, monkeypatch):
    from MedAILib.io import read_segmentation, segmentations, write_segmentation

    rng = np.random.default_rng(2)
    arr = np.zeros((30, 40, 50), np.uint8)
    arr[5:20, 10:30, 10:40] = 1
    arr[rng.random(arr.shape) < 0.05] = 2  # noisy labels: the case where gzip level matters most
    m = np.array([[0, 0.8, 0, -3], [1.1, 0, 0, 4], [0, 0, -2.0, 5], [0, 0, 0, 1]], float)
    labels = [LabelInfo(1, "Liver", (0.8, 0.3, 0.2)), LabelInfo(2, "Spleen", (0.1, 0.5, 0.9))]
    vol = Volume(arr, m, labels=labels)
    fast = write_segmentation(vol, tmp_path / "fast.seg.nrrd")
    assert segmentations.SEG_NRRD_GZIP_LEVEL == 1
    monkeypatch.setattr(segmentations, "SEG_NRRD_GZIP_LEVEL", 9)  # slicerio's own default: the "before"
    slow = write_segmentation(vol, tmp_path / "slow.seg.nrrd")
    a, b = read_segmentation(fast), read_segmentation(slow)
    np.testing.assert_array_equal(a.array, b.array)
    np.testing.assert_array_equal(a.array, arr)
    np.testing.assert_allclose(a.ijk_to_ras, b.ijk_to_ras)
    assert [(l.value, l.name, tuple(l.color)) for l in a.labels] == [(l.value, l.name, tuple(l.color)) for l in b.labels]
    import nrrd

    ha, hb = nrrd.read_header(str(fast)), nrrd.read_header(str(slow))
    # same header (segment names, colours, geometry); only the compressed bytes differ
    assert ha.keys() == hb.keys()
    for k in ha:
        assert np.array_equal(ha[k], hb[k]) if isinstance(ha[k], np.ndarray) else ha[k] == hb[k], k


def test_engine_input_written_uncompressed_reads_back_identical(tmp_path):
    sys.path.insert(0, str(REPO / "Testing" / "tests"))
    from slicer_support import real  # real MRML (slicer-core)

    slicer = real.activate()
    try:
        from MedAILib.io import read_image, write_image
        from MedAISlicerLib import nodes

        rng = np.random.default_rng(4)
        arr = rng.normal(0, 300, (12, 20, 16)).astype(np.int16)
        from conftest import oblique_ijk_to_ras

        node = slicer.util.addVolumeFromArray(arr, oblique_ijk_to_ras(), "ct")
        raw = nodes.write_input_volume(node, tmp_path, "input0")
        gz = write_image(nodes.volume_from_node(node), tmp_path / "gz.nrrd", compress=True)
        import nrrd

        assert nrrd.read_header(str(raw))["encoding"] == "raw"
        a, b = read_image(raw), read_image(gz)
        np.testing.assert_array_equal(a.array, b.array)
        np.testing.assert_array_equal(a.array, arr)
        np.testing.assert_allclose(a.ijk_to_ras, b.ijk_to_ras, atol=1e-9)
    finally:
        real.reset()


@pytest.mark.slow  # four fresh interpreters (torch + MONAI imports): ~40 s idle, 2 min on a loaded 2-core machine
def test_benchmark_quick_smoke(tmp_path):
    """The benchmark suite runs end to end and writes every section (no timing assertions)."""
    out = tmp_path / "bench"
    p = subprocess.run([sys.executable, str(REPO / "Testing" / "Benchmarks" / "run_benchmarks.py"), "--quick",
                        "--out", str(out), "--label", "smoke"], capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    result = json.loads((out / "bench.json").read_text())
    sys.path.insert(0, str(REPO / "Testing" / "Benchmarks"))
    from run_benchmarks import SECTIONS

    assert set(result["sections"]) == set(SECTIONS)  # every section, those added later included
    for name, section in result["sections"].items():
        assert "error" not in section, f"{name}: {section.get('error')}"
    o = result["sections"]["overhead"]["cases"][0]
    assert o["e2e_s"] > 0 and o["bare_forward_s"] > 0 and o["ratio"] > 0
    m = result["sections"]["monai"]["cases"][0]
    assert m["labels"]["identical"], m["labels"]
    assert result["sections"]["scale"]["rows"] and "peak_rss_mb" in result["sections"]["scale"]["rows"][0]
    assert result["sections"]["slicer"]["status"] == ["done"]
    if not torch.cuda.is_available():
        assert "skipped" in result["sections"]["gpu"]
    md = (out / "bench.md").read_text()
    assert "Overhead" in md and "MONAI" in md and "Scale" in md and "Slicer" in md


def test_releasing_model_space_voxels_before_postprocessing_gives_identical_labels(small_bundle, monkeypatch):
    """segment() frees the model-space image's voxels before post-processing (round 2); Invertd needs
    only its metadata and transform trace. Same labels as keeping them, on an anisotropic grid."""
    import MedAILib.tasks.segmentation.pipeline as seg

    rng = np.random.default_rng(8)
    arr = rng.normal(100, 30, size=(30, 26, 34)).astype(np.float32)
    arr[8:22, 6:20, 10:26] += 120
    vol = Volume(arr, np.diag([1.3, 0.7, 1.1, 1.0]))
    calls = []
    real = seg.release_image_voxels

    def spy(data, bundle):
        out = real(data, bundle)
        calls.append(out["image"].untyped_storage().nbytes())
        return out

    monkeypatch.setattr(seg, "release_image_voxels", spy)
    released = seg.segment([vol], small_bundle, device="cpu").labelmap.array
    assert calls and calls[0] <= 8, "the voxels were not released"
    monkeypatch.setattr(seg, "release_image_voxels", lambda data, bundle: data)
    kept = seg.segment([vol], small_bundle, device="cpu").labelmap.array
    np.testing.assert_array_equal(released, kept)
    assert (kept > 0).any()


def test_image_voxels_kept_when_postprocessing_reads_them(small_bundle):
    from monai.transforms import Compose, CopyItemsd

    from MedAILib.runtime.model_space import to_model_space
    from MedAILib.tasks.segmentation.pipeline import release_image_voxels

    data = to_model_space([Volume(np.ones((8, 9, 10), np.float32), np.eye(4))], small_bundle)
    released = release_image_voxels(data, small_bundle)["image"]
    assert released.untyped_storage().nbytes() <= 8 and released.shape == data["image"].shape

    class Reading:  # a bundle whose post-processing copies the image
        postprocessing = Compose([CopyItemsd(keys="image", names="image_copy"),
                                  *small_bundle.postprocessing.transforms])

    assert release_image_voxels(data, Reading())["image"] is data["image"]
