"""Sequences (4D / cine): the 4D readers/writers on the real Sunnybrook cine, contours rasterised onto
their frames, per-frame segmentation (batched, smoothed) and ``medai segment-sequence`` end to end."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from MedAILib.core.errors import InputError
from MedAILib.io import from_sitk, write_image
from MedAILib.io.sequences import Sequence, read_dicom_cine, read_sequence, write_sequence

CINE = "sunnybrook-cine"
PATIENT = "SCD0000101"


@pytest.fixture(scope="module")
def cine(data_dir) -> Sequence:
    return read_dicom_cine(data_dir / CINE / "dicoms" / PATIENT)


def test_cine_reader_sorts_by_position_and_trigger_time(cine, data_dir):
    assert cine.n_frames == 20 and cine.frames[0].size_ijk == (256, 256, 12)
    np.testing.assert_allclose(cine.frames[0].spacing, [1.367188, 1.367188, 10.0], atol=1e-4)  # not SliceLocation's 5-7 mm
    assert np.all(np.diff(cine.index_values) > 0) and cine.index_unit == "ms"
    # an independent reader: SimpleITK/GDCM on the files of one frame gives the same voxels and geometry
    for t in (0, 13):
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(cine.metadata["files"][t])
        ref = from_sitk(reader.Execute())
        np.testing.assert_array_equal(ref.array, cine.frames[t].array)
        np.testing.assert_allclose(ref.ijk_to_ras, cine.frames[t].ijk_to_ras, atol=1e-3)
    # the files of a slice really are one position; frames of a slice really are ordered by trigger time
    import pydicom

    times = [float(pydicom.dcmread(f, stop_before_pixels=True).TriggerTime) for f in
             [cine.metadata["files"][t][5] for t in range(20)]]
    assert times == sorted(times)


@pytest.mark.parametrize("suffix", [".nii.gz", ".seq.nrrd"])
def test_4d_write_read_round_trip(cine, tmp_path, suffix):
    small = Sequence([crop(f, (0, 12), (100, 140), (90, 150)) for f in cine.frames[:5]], cine.index_values[:5],
                     cine.index_name, cine.index_unit)
    p = write_sequence(small, tmp_path / f"cine{suffix}")
    back = read_sequence(p)
    assert back.n_frames == 5
    np.testing.assert_array_equal(back.array(), small.array())
    np.testing.assert_allclose(back.ijk_to_ras, small.ijk_to_ras, atol=1e-4)
    np.testing.assert_allclose(back.index_values, small.index_values, rtol=1e-4)
    assert back.index_unit == "ms"


def crop(volume, ks, js, is_):
    """A KJI crop of ``volume``; its origin moves to the first kept voxel."""
    from MedAILib.core.volume import Volume

    m = volume.ijk_to_ras.copy()
    m[:3, 3] = volume.ijk_to_ras_points([[is_[0], js[0], ks[0]]])[0]
    return Volume(volume.array[ks[0]:ks[1], js[0]:js[1], is_[0]:is_[1]].copy(), m)


def test_bad_sequences_get_one_line_errors(cine, tmp_path, data_dir):
    three_d = tmp_path / "one.nii.gz"
    write_image(cine.frames[0], three_d)
    with pytest.raises(InputError, match="not a sequence of 3D frames"):
        read_sequence(three_d)
    folder = tmp_path / "cut"
    folder.mkdir()
    for n in range(1, 61):  # slices 1-3, all 20 frames
        shutil.copy(data_dir / CINE / "dicoms" / PATIENT / f"{n}.dcm", folder / f"{n}.dcm")
    (folder / "7.dcm").unlink()  # one image of slice 1 missing
    with pytest.raises(InputError, match="different numbers of frames"):
        read_dicom_cine(folder)
    with pytest.raises(InputError, match="does not exist"):
        read_sequence(tmp_path / "missing.nii.gz")


def test_contours_land_on_the_blood_pool(data_dir):
    from scipy.ndimage import binary_dilation

    from MedAILib.tasks.sequences.cine_lv import load_case, patients

    counts = {}
    for pid in patients(data_dir / CINE):
        case = load_case(data_dir / CINE, pid)
        counts[case.case] = len(case.masks)
        assert case.phases["ED"] != case.phases["ES"]
        for (t, k), m in list(case.masks.items())[:6]:
            img = case.sequence.frames[t].array[k].astype(float)
            ring = binary_dilation(m, iterations=4) & ~binary_dilation(m, iterations=1)
            # bright-blood cine: inside the endocardial contour is brighter than the myocardium around it
            assert img[m].mean() > 1.3 * img[ring].mean(), (case.case, t, k)
    assert counts == {"SC-HF-I-1": 18, "SC-HF-I-2": 18, "SC-HF-I-4": 20, "SC-HF-I-5": 18, "SC-HF-I-6": 22}


# --- per-frame segmentation ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lv_bundle(tmp_path_factory):
    """A bundle with the LV model's exact configs and random weights (small filters)."""
    from MedAILib.tasks.sequences import trainer

    torch.manual_seed(0)
    filters = [4, 8, 16, 32]
    net = trainer.build_network(filters)
    return trainer.write_bundle(tmp_path_factory.mktemp("lv") / "bundle", net.state_dict(), {"random": True},
                                filters=filters)


@pytest.fixture(scope="module")
def small_cine(cine) -> Sequence:
    """6 frames of the real cine, 4 slices, cropped around the heart (keeps the tests fast)."""
    frames = [crop(f, (4, 8), (60, 200), (50, 190)) for f in cine.frames[::4][:5]]
    return Sequence(frames, cine.index_values[::4][:5], cine.index_name, cine.index_unit)


def _load(bundle_path):
    from MedAILib.models import resolve_model

    return resolve_model(str(bundle_path), trust_paths=[str(bundle_path)])


def test_each_frame_equals_medai_segment_and_batching_changes_nothing(small_cine, lv_bundle, monkeypatch, tmp_path):
    monkeypatch.setenv("MEDAI_HOME", str(tmp_path / "home"))
    from MedAILib.core.progress import Progress
    from MedAILib.tasks.segmentation.pipeline import segment
    from MedAILib.tasks.sequences.pipeline import segment_sequence

    bundle = _load(lv_bundle)
    messages = []
    one = segment_sequence(small_cine, bundle, device="cpu", frames_per_batch=1)
    three = segment_sequence(small_cine, bundle, device="cpu", frames_per_batch=3,
                             progress=Progress(callback=lambda f, m, e: messages.append(m)))
    np.testing.assert_array_equal(one.labels.array(), three.labels.array())
    for t in (0, 3):
        ref = segment(small_cine.frames[t], bundle, device="cpu").labelmap
        assert np.mean(ref.array == one.labels.frames[t].array) > 0.999
    assert [f"frame {t}/5 segmented" for t in range(1, 6)] == [m for m in messages if m.endswith("segmented")]
    assert one.labels.n_frames == 5 and one.labels.frames[0].same_grid(small_cine.frames[0])
    assert [l.name for l in one.labels.labels] == ["left ventricle blood pool"]


def test_temporal_smoothing(small_cine, lv_bundle, monkeypatch, tmp_path):
    monkeypatch.setenv("MEDAI_HOME", str(tmp_path / "home"))
    from MedAILib.tasks.sequences.pipeline import segment_sequence

    bundle = _load(lv_bundle)
    plain = segment_sequence(small_cine, bundle, device="cpu").labels.array()
    # a vanishing sigma is the bundle's own post-processing (softmax, Invertd, argmax)
    tiny = segment_sequence(small_cine, bundle, device="cpu", temporal_sigma=1e-3).labels.array()
    assert np.mean(tiny == plain) > 0.999
    # a very wide cyclic window averages the whole cycle: every frame gets the same labels
    wide = segment_sequence(small_cine, bundle, device="cpu", temporal_sigma=50).labels.array()
    assert all(np.array_equal(wide[0], w) for w in wide[1:])
    assert not all(np.array_equal(plain[0], p) for p in plain[1:])  # the unsmoothed frames do differ
    # moderate smoothing lies between: fewer frame-to-frame changes than without
    mid = segment_sequence(small_cine, bundle, device="cpu", temporal_sigma=1.0).labels.array()
    flicker = lambda a: sum(int((a[t] != a[(t + 1) % len(a)]).sum()) for t in range(len(a)))  # noqa: E731
    assert flicker(mid) < flicker(plain)


def _medai(args, env, command="segment-sequence"):
    return subprocess.run([sys.executable, "-m", "MedAILib.cli", *([command] if command else []), *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=900)


def test_cli_segment_sequence_4d_nifti(small_cine, lv_bundle, tmp_path, medai_env):
    env = dict(medai_env, MEDAI_HOME=str(tmp_path / "home"))
    src = write_sequence(small_cine, tmp_path / "cine4d.nii.gz")
    out, report, png = tmp_path / "labels.nii.gz", tmp_path / "r.json", tmp_path / "p.png"
    r = _medai([src, "-o", out, "--model", lv_bundle, "--trust", lv_bundle, "--frames-per-batch", "2",
                "--temporal-smoothing", "1", "--ef-label", "left ventricle blood pool", "--report", report,
                "--preview", png, "--progress", "none", "--device", "cpu"], env)
    assert r.returncode == 0, r.stderr
    labels = read_sequence(out)
    assert labels.n_frames == 5 and labels.frames[0].same_grid(small_cine.frames[0], atol=1e-3)
    row = json.loads(report.read_text())["cases"][0]
    vols = row["label_volumes_ml"]["left ventricle blood pool"]
    voxel_ml = float(np.prod(small_cine.frames[0].spacing)) / 1000
    np.testing.assert_allclose(vols, [float((f.array == 1).sum()) * voxel_ml for f in labels.frames], rtol=1e-3)
    assert row["ejection"]["edv_ml"] == pytest.approx(max(vols)) and row["frames"] == 5
    assert png.stat().st_size > 5000
    again = _medai([src, "-o", out, "--model", lv_bundle, "--trust", lv_bundle], env)
    assert again.returncode == 2 and "already exists" in again.stderr
    bad = _medai([src, "-o", tmp_path / "x.nii.gz", "--model", lv_bundle, "--trust", lv_bundle,
                  "--ef-label", "liver"], env)
    assert bad.returncode != 0 and "no label liver" in bad.stderr


def test_cli_segment_sequence_dicom_cine_to_slicer_sequence(data_dir, lv_bundle, tmp_path, medai_env):
    env = dict(medai_env, MEDAI_HOME=str(tmp_path / "home"))
    folder = tmp_path / "cine"
    folder.mkdir()
    src = data_dir / CINE / "dicoms" / PATIENT
    for n in range(81, 161):  # slices 5-8 (files 81-160), all 20 frames
        shutil.copy(src / f"{n}.dcm", folder / f"{n}.dcm")
    out = tmp_path / "lv.seq.nrrd"
    r = _medai([folder, "-o", out, "--format", "seq.nrrd", "--model", lv_bundle, "--trust", lv_bundle,
                "--progress", "json", "--device", "cpu"], env)
    assert r.returncode == 0, r.stderr
    assert "Invalid value for VR UI" not in r.stderr  # pydicom's complaints about old UIDs are not shown
    events = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
    frame_msgs = {e["message"] for e in events if e.get("event") == "progress" and "segmented" in e.get("message", "")}
    assert {f"frame {t}/20 segmented" for t in range(1, 21)} <= frame_msgs
    labels = read_sequence(out)
    assert labels.n_frames == 20 and labels.frames[0].size_ijk == (256, 256, 4)
    assert labels.index_unit == "ms" and np.all(np.diff(labels.index_values) > 0)


def test_cli_segment_on_a_4d_image_segments_every_frame(small_cine, lv_bundle, tmp_path, medai_env):
    """`medai segment` itself accepts a 4D image (issue 20.1): a 4D label file with --format nii.gz,
    the same labels as segment-sequence; without a 4D-capable format, and mixed 3D/4D inputs, it
    refuses with a message naming the file."""
    env = dict(medai_env, MEDAI_HOME=str(tmp_path / "home"))
    src = write_sequence(small_cine, tmp_path / "cine4d.nii.gz")
    common = ["--model", lv_bundle, "--trust", lv_bundle, "--progress", "none", "--device", "cpu"]
    out = tmp_path / "seg4d.nii.gz"
    r = _medai(["segment", src, "-o", out, "--format", "nii.gz", *common], env, command=None)
    assert r.returncode == 0, r.stderr
    ref = tmp_path / "ref4d.nii.gz"
    assert _medai([src, "-o", ref, *common], env).returncode == 0
    got, want = read_sequence(out), read_sequence(ref)
    assert got.n_frames == 5 and all(np.array_equal(a.array, b.array) for a, b in zip(got.frames, want.frames))
    no_fmt = _medai(["segment", src, "-o", tmp_path / "x.seg.nrrd", *common], env, command=None)
    assert no_fmt.returncode != 0 and "cine4d.nii.gz is 4D" in no_fmt.stderr and "--format nii.gz" in no_fmt.stderr
    frame3d = tmp_path / "frame.nii.gz"
    from MedAILib.io import write_image

    write_image(small_cine.frames[0], frame3d)
    mixed = _medai(["segment", src, frame3d, "-o", tmp_path / "mixed", "--format", "nii.gz", *common], env,
                   command=None)
    assert mixed.returncode != 0 and "other inputs are not" in mixed.stderr


def _temporal_bundle(folder, k=3):
    """A temporal bundle (frames as channels, ``medai.temporal_frames`` = k) whose network is a 1x1x1
    convolution: logit(label 1) - logit(background) = next frame - previous frame. Label 1 marks
    where the intensity is rising over time, which no single frame can tell."""
    import sys as _sys

    _sys.path.insert(0, str(Path(__file__).parent))
    from bundle_factory import make_bundle

    conv = {"_target_": "torch.nn.Conv3d", "in_channels": k, "out_channels": 2, "kernel_size": 1, "bias": False}
    make_bundle(folder, labels=("background", "rising"), inputs=tuple(f"frame{o:+d}" for o in range(-(k // 2), k // 2 + 1)),
                intensity=None, network_def=conv, invert_in_postprocessing=True)
    w = torch.zeros(2, k, 1, 1, 1)
    w[1, -1], w[1, 0] = 1.0, -1.0
    torch.save({"weight": w}, Path(folder) / "models" / "model.pt")
    meta = json.loads((Path(folder) / "configs" / "metadata.json").read_text())
    meta["medai"] = {"temporal_frames": k}
    (Path(folder) / "configs" / "metadata.json").write_text(json.dumps(meta))
    return Path(folder)


def test_temporal_model_gets_neighbouring_frames_as_channels(tmp_path, monkeypatch):
    """Issue 20.1: a bundle that declares temporal_frames gets frames t-1, t, t+1 as its channels
    (wrapped around for a cycle, clamped otherwise); its labels depend on the neighbours."""
    monkeypatch.setenv("MEDAI_HOME", str(tmp_path / "home"))
    from MedAILib.tasks.sequences.pipeline import frame_window, segment_sequence, temporal_frames

    assert frame_window(0, 5, 3, True) == [4, 0, 1] and frame_window(0, 5, 3, False) == [0, 0, 1]
    assert frame_window(4, 5, 3, False) == [3, 4, 4]
    k, j, i = np.mgrid[0:12, 0:20, 0:20]
    ball = ((i - 10) ** 2 + (j - 10) ** 2 + ((k - 6) * 1.5) ** 2) <= 36
    gains = [1.0, 2.0, 4.0, 3.0, 2.5]  # next - previous: cyclic - + + - -, clamped at the ends + + + - -
    texture = (ball * 100.0 + 20.0 + 10.0 * np.sin(i / 3.0) * np.cos(j / 4.0) + k).astype(np.float32)  # > 0
    seq = Sequence.from_array(np.stack([texture * g for g in gains]), np.diag([1.0, 1.0, 1.5, 1.0]))
    bundle = _load(_temporal_bundle(tmp_path / "temporal"))
    assert temporal_frames(bundle) == 3
    for cyclic, rising in ((True, [0, 1, 1, 0, 0]), (False, [1, 1, 1, 0, 0])):
        out = segment_sequence(seq, bundle, device="cpu", frames_per_batch=2, cyclic=cyclic)
        for t, r in enumerate(rising):  # every voxel brightens or darkens with its frame's neighbours
            assert (out.labels.frames[t].array == r).mean() > 0.99, (cyclic, t)
        assert out.labels.metadata["temporal_frames"] == 3
    # a declaration that does not fit the network is refused with the model named
    bad = _temporal_bundle(tmp_path / "bad")
    meta = json.loads((bad / "configs" / "metadata.json").read_text())
    meta["medai"]["temporal_frames"] = 5
    (bad / "configs" / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="declares 5 temporal frames but its network takes 3"):
        segment_sequence(seq, _load(bad), device="cpu")
