"""Issue 18: the streamed model space takes every stored pixel type (uint16 DICOM series included) and
the whole-labelmap steps after it (label filter, per-segment statistics) work a slab at a time with
the numbers of their whole-volume versions."""

from __future__ import annotations

import numpy as np
import pytest

from spleen_bundle import ct_volume, spleen_ct_bundle, spleen_network_def

from MedAILib.core.volume import Volume

SMALL_NET = spleen_network_def(channels=(4, 8, 16), strides=(2, 2), num_res_units=1)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from MedAILib.models import load_bundle, trust

    folder = spleen_ct_bundle(tmp_path_factory.mktemp("b") / "ct", roi_size=(32, 32, 32), sw_batch_size=2,
                              network_def=SMALL_NET)
    trust.trust(folder, reason="test")
    return folder, load_bundle(folder)


def _u16(vol: Volume) -> Volume:
    return Volume((vol.array.astype(np.int32) + 1024).clip(0, 65535).astype(np.uint16), vol.ijk_to_ras)


@pytest.mark.parametrize("spacing", [(0.8, 0.9, 1.5), (1.5, 1.5, 2.0)], ids=["resampled", "unchanged grid"])
def test_uint16_input_streams_with_the_labels_of_float32_and_of_monai(bundle, monkeypatch, spacing):
    folder, bundle = bundle
    """A uint16 volume (MR and some CT series are stored so): streamed labels == MONAI's eager path on the
    same values == the streamed labels of the same values as float32 (the bundle shifts by 1024 HU:
    ScaleIntensityRange on the stored values, so only dtype differs)."""
    from MedAILib.tasks.segmentation.pipeline import segment

    u = _u16(ct_volume((20, 36, 32), spacing=spacing, flip_lps=True))
    f = Volume(u.array.astype(np.float32), u.ijk_to_ras)
    got = {}
    for name, vol, streaming in (("u16", u, "1"), ("u16 eager", u, "0"), ("f32", f, "1")):
        monkeypatch.setenv("MEDAI_STREAMING", streaming)
        got[name] = segment([vol], bundle, device="cpu").labelmap.array
    assert 0 < np.count_nonzero(got["u16"]) < got["u16"].size
    assert np.array_equal(got["u16"], got["u16 eager"]) and np.array_equal(got["u16"], got["f32"])


def test_uint16_dicom_series_segments_from_the_command_line(tmp_path, bundle, monkeypatch):
    """A uint16 CT DICOM series written by SimpleITK, read and segmented by ``medai segment`` (streamed)."""
    import SimpleITK as sitk

    from MedAILib.cli import main
    from MedAILib.io import read_image, read_segmentation
    from MedAILib.tasks.segmentation.pipeline import segment

    folder, bundle = bundle
    folder = str(folder)
    vol = _u16(ct_volume((12, 36, 32), spacing=(0.8, 0.9, 1.5)))
    series = tmp_path / "dicom"
    series.mkdir()
    img = sitk.GetImageFromArray(vol.array)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(vol.array.shape[0]):
        s = img[:, :, k]
        for tag, value in (("0008|0060", "CT"), ("0020|000d", "1.2.826.0.1.3680043.8.498.1"),
                           ("0020|000e", "1.2.826.0.1.3680043.8.498.2"), ("0020|0013", str(k + 1)),
                           ("0020|0032", f"0\\0\\{1.5 * k}"), ("0020|0037", "1\\0\\0\\0\\1\\0"),
                           ("0028|0030", "0.9\\0.8"), ("0018|0050", "1.5")):
            s.SetMetaData(tag, value)
        writer.SetFileName(str(series / f"{k:03d}.dcm"))
        writer.Execute(s)
    read = read_image(series)
    assert read.array.dtype == np.uint16 and read.array.shape == vol.array.shape
    monkeypatch.setenv("MEDAI_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MEDAI_STREAMING", "1")
    out = tmp_path / "seg.nrrd"
    assert main(["segment", str(series), "-o", str(out), "--model", folder, "--trust", folder, "--device", "cpu",
                 "--progress", "none"]) == 0
    labels = read_segmentation(out).array
    expected = segment([read], bundle, device="cpu").labelmap.array
    assert labels.shape == vol.array.shape and np.array_equal(labels, expected) and np.count_nonzero(labels)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16, np.int32])
def test_label_filter_by_slab_is_isin(dtype, monkeypatch):
    from MedAILib.tasks.segmentation import pipeline

    rng = np.random.default_rng(0)
    info = np.iinfo(dtype)
    arr = rng.integers(max(info.min, -300), min(info.max, 300) + 1, size=(37, 21, 19)).astype(dtype)
    keep = {0, 1, 2, 255, 7, 299, -1, -299, 70000}
    ref = arr.copy()
    ref[~np.isin(ref, [v for v in keep if info.min <= v <= info.max])] = 0
    pipeline._zero_unless(arr, keep)
    assert np.array_equal(arr, ref)


def test_statistics_by_slab_equal_whole_volume_numbers(monkeypatch):
    """Counts, bounding boxes and intensity sums over slabs == one pass over the whole volume."""
    from scipy import ndimage

    import MedAILib.tasks.segmentation.statistics as st

    rng = np.random.default_rng(1)
    shape = (40, 30, 20)
    labels = np.zeros(shape, dtype=np.uint8)
    labels[3:9, 4:10, 2:5] = 1
    labels[30:38, 1:3, 10:19] = 3
    labels[0, 0, 0] = 3
    image = rng.normal(50, 10, shape).astype(np.float32)
    ref = Volume(labels, np.diag([0.8, 0.9, 1.5, 1.0]))
    img = Volume(image, ref.ijk_to_ras)
    rows_one = st.segment_statistics(ref, [img])
    monkeypatch.setattr(st, "SLAB_VOXELS", 2 * 30 * 20)  # slabs of 2 slices
    rows_slabs = st.segment_statistics(ref, [img])
    assert rows_slabs == rows_one
    by_value = {r["value"]: r for r in rows_one}
    assert by_value[1]["voxels"] == 6 * 6 * 3 and by_value[3]["voxels"] == 8 * 2 * 9 + 1
    box = ndimage.find_objects(labels)[2]
    assert by_value[3]["bbox_ijk"] == {"min": [box[2].start, box[1].start, box[0].start],
                                       "max": [box[2].stop - 1, box[1].stop - 1, box[0].stop - 1]}
    assert by_value[1]["intensity"]["input_1"]["mean"] == pytest.approx(float(image[labels == 1].mean()), abs=1e-4)
