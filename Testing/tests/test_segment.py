"""Segment pipeline: model space and back on an oblique anisotropic grid, cancellation, OOM fall-back,
structures subset, preview; the shipped model on a real validation case when it exists."""

import json
import threading
import time

import numpy as np
import pytest
import torch

from bundle_factory import make_bundle
from conftest import oblique_ijk_to_ras
from MedAILib.models import load_bundle, trust
from MedAILib.core.errors import Cancelled, InputError
from MedAILib.runtime.inferer import fallback_plan, run_inferer
from MedAILib.core.progress import CancelToken, Progress
from MedAILib.runtime.model_space import from_model_space, labels_from_model_space, to_model_space
from MedAILib.tasks.segmentation.pipeline import segment
from MedAILib.core.volume import Volume


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDAI_HOME", str(tmp_path / "home"))


def _bundle(tmp_path, **kw):
    b = make_bundle(tmp_path / "bundle", **kw)
    trust.trust(b)
    return load_bundle(b)


def _phantom():
    """Two-label ellipsoid on an oblique, anisotropic, flipped grid."""
    shape = (26, 44, 60)  # K, J, I
    m = oblique_ijk_to_ras(spacing=(0.7, 1.1, 2.3))
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in shape[::-1]], indexing="ij"), -1).reshape(-1, 3)
    ras = ijk @ m[:3, :3].T + m[:3, 3]
    c = ras.mean(0)
    d = (ras - c) / np.array([16.0, 14.0, 12.0])
    inside = (d ** 2).sum(1) < 1
    lab = np.zeros(len(ras), np.uint8)
    lab[inside] = 1
    lab[inside & (ras[:, 1] > c[1])] = 2
    return Volume(lab.reshape(shape[::-1]).transpose(2, 1, 0).copy(), m)


def test_round_trip_oblique_anisotropic(tmp_path):
    lab = _phantom()
    bundle = _bundle(tmp_path, intensity=None)  # 1 mm RAS model space
    onehot = [lab.with_array((lab.array == k).astype(np.float32)) for k in range(3)]
    data = to_model_space(onehot, bundle)
    img = data["image"]
    assert np.allclose(np.linalg.norm(np.asarray(img.affine)[:3, :3], axis=0), 1.0, atol=1e-4)
    model_labels = torch.argmax(img.as_tensor(), dim=0, keepdim=True)
    # centroid in physical space is kept on the way in
    for k in (1, 2):
        ijk_in = np.argwhere(lab.array == k)[:, ::-1].mean(0)
        ijk_model = np.argwhere(model_labels[0].numpy() == k).mean(0)
        ras_in = lab.ijk_to_ras_points(ijk_in)[0]
        ras_model = (np.asarray(img.affine) @ np.r_[ijk_model, 1])[:3]
        assert np.linalg.norm(ras_in - ras_model) < 0.5
    back = labels_from_model_space(model_labels, data, bundle, n_classes=3)
    # streamed: a KJI array on the input grid; whole-volume path: a (1, *IJK) tensor
    back = back if isinstance(back, np.ndarray) else back[0].numpy().transpose(2, 1, 0)
    assert back.shape == lab.array.shape
    for k in (1, 2):
        a, b = lab.array == k, back == k
        dice = 2 * (a & b).sum() / (a.sum() + b.sum())
        assert dice >= 0.99, (k, dice)
        shift = np.abs(np.argwhere(a).mean(0) - np.argwhere(b).mean(0))
        assert np.all(shift < 0.5), (k, shift)
    # nearest-neighbour inverse of values keeps the exact grid too
    near = from_model_space(model_labels.float(), data, bundle, nearest=True)
    assert tuple(near.shape[1:]) == lab.size_ijk


def test_segment_returns_input_grid_with_labels(tmp_path):
    bundle = _bundle(tmp_path, pixdim=(1.5, 1.5, 1.5), invert_in_postprocessing=False)
    rng = np.random.default_rng(0)
    vol = Volume(rng.normal(100, 20, (20, 30, 40)).astype(np.float32), oblique_ijk_to_ras())
    events = []
    res = segment(vol, bundle, progress=Progress(callback=lambda f, m, e: events.append((f, m, e))))
    assert res.labelmap.same_grid(vol) and res.labelmap.labels[0].name == "anterior"
    fr = [f for f, _, _ in events if f is not None]
    assert fr == sorted(fr) and fr[-1] == 1.0
    assert any(e is not None for f, _, e in events if f and f < 1)  # time left reported
    only = segment(vol, bundle, structures=["posterior"])
    assert set(np.unique(only.labelmap.array)) <= {0, 2} and [l.name for l in only.labelmap.labels] == ["posterior"]
    with pytest.raises(InputError, match="choose from"):
        segment(vol, bundle, structures=["amygdala"])
    with pytest.raises(InputError, match="needs 1 input"):
        segment([vol, vol], bundle)
    kept = segment(vol, bundle, keep_largest=True, min_island_mm3=5)
    assert kept.labelmap.same_grid(vol)


def test_cancel_stops_within_a_second(tmp_path):
    bundle = _bundle(tmp_path, roi_size=(16, 16, 16), sw_batch_size=1)
    net = bundle.network

    class Slow(torch.nn.Module):
        def forward(self, x):
            time.sleep(0.05)
            return net(x)

    token = CancelToken()
    threading.Timer(0.3, token.cancel).start()
    t0 = time.monotonic()
    with pytest.raises(Cancelled):
        run_inferer(bundle.inferer, Slow(), torch.rand(1, 1, 96, 96, 96), progress=Progress(cancel=token))
    assert time.monotonic() - t0 < 1.3  # 0.3 s until cancel + at most one window


def test_oom_fallback_on_cpu(tmp_path):
    bundle = _bundle(tmp_path, sw_batch_size=4)
    net = bundle.network
    calls = {"n": 0}

    class Flaky(torch.nn.Module):
        def forward(self, x):
            calls["n"] += 1
            if calls["n"] <= 2:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return net(x)

    logs = []
    x = torch.rand(1, 1, 40, 40, 40)
    out = run_inferer(bundle.inferer, Flaky(), x, progress=Progress(callback=lambda f, m, e: logs.append(m) if f is None else None))
    ref = run_inferer(bundle.inferer, net, x)
    assert torch.allclose(out, ref, atol=1e-5)
    assert any("2 window" in m for m in logs) and any("1 window" in m for m in logs)
    plan = fallback_plan(torch.device("cuda"), 4)
    assert [(p[0], p[1].type, p[2].type) for p in plan] == [
        (4, "cuda", "cuda"), (2, "cuda", "cuda"), (1, "cuda", "cuda"), (1, "cuda", "cpu"), (1, "cpu", "cpu")]


def test_fast_mode_needs_catalogue_permission(tmp_path):
    from MedAILib.models.bundle import Bundle
    from MedAILib.core.errors import ModelError

    b = make_bundle(tmp_path / "f")
    with pytest.raises(ModelError, match="no fast mode"):
        Bundle(b, fast=True)

    class Entry:
        fast_spacing = [2.0, 2.0, 2.0]
        label_infos = []

    fast = Bundle(b, entry=Entry(), fast=True)
    vol = Volume(np.random.rand(20, 30, 40).astype(np.float32), oblique_ijk_to_ras())
    assert np.allclose(np.linalg.norm(np.asarray(to_model_space([vol], fast)["image"].affine)[:3, :3], axis=0), 2.0)


def test_preview_png(tmp_path):
    from PIL import Image

    from MedAILib.io.preview import overlay_png

    lab = _phantom()
    lab.labels = [__import__("MedAILib").LabelInfo(1, "a", (1, 0, 0)), __import__("MedAILib").LabelInfo(2, "b", (0, 0, 1))]
    img = lab.with_array(lab.array.astype(np.float32) * 50 + 10)
    p = overlay_png(img, tmp_path / "p.png", labelmap=lab, heatmap=img, n_slices=2)
    im = np.asarray(Image.open(p).convert("RGB"))
    assert im.shape[0] > 100 and (im[..., 0] > 150).sum() > 50  # red label visible


def test_shipped_model_on_real_validation_case(data_dir):
    from MedAILib.models import resolve_model
    from MedAILib.models.catalogue import load_catalogue
    from MedAILib.io import read_image, read_segmentation

    entry = load_catalogue().get("hippocampus_unet")
    case = json.loads((entry.shipped_path() / "split.json").read_text())["validation"][0]
    img = read_image(data_dir / "msd-hippocampus" / "imagesTr" / f"{case}.nii.gz")
    ref = read_segmentation(data_dir / "msd-hippocampus" / "labelsTr" / f"{case}.nii.gz")
    res = segment(img, resolve_model("hippocampus_unet"), device="cpu")
    for v in (1, 2):
        a, b = res.labelmap.array == v, ref.array == v
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) >= 0.8


def test_bundle_postprocessing_keep_largest_component_runs(tmp_path):
    """Model Zoo bundles (e.g. spleen CT) end their post-processing with KeepLargestConnectedComponentd,
    which needs scikit-image: the bundle's own step must run, and leave one piece per applied label."""
    from scipy import ndimage

    folder = make_bundle(tmp_path / "kl", labels=("background", "organ"), intensity=None)
    cfg_path = folder / "configs" / "inference.json"
    cfg = json.loads(cfg_path.read_text())
    post = cfg["postprocessing"]["transforms"]
    at = next(i for i, t in enumerate(post) if t["_target_"] == "AsDiscreted") + 1
    post.insert(at, {"_target_": "KeepLargestConnectedComponentd", "keys": "pred", "applied_labels": [1]})
    cfg_path.write_text(json.dumps(cfg))
    trust.trust(folder)
    rng = np.random.default_rng(1)
    vol = Volume(rng.normal(0, 1, (24, 28, 30)).astype(np.float32), np.eye(4))
    out = segment([vol], load_bundle(folder)).labelmap
    assert out.same_grid(vol)
    assert (out.array == 1).any()
    # MONAI keeps the largest piece under full (26-)connectivity
    assert ndimage.label(out.array == 1, structure=np.ones((3, 3, 3)))[1] == 1
