"""The MONAI Model Zoo spleen CT bundle's configuration (spleen_ct_segmentation 0.5.x: UNet 16-256 with
residual units and batch norm, 1.5x1.5x2.0 mm, ScaleIntensityRanged -57..164 HU, 96^3 windows, batch 4,
overlap 0.5; softmax, Invertd, argmax) with random weights, and CT-like test volumes.

Used by the clinical-size memory tests and benchmarks (issue 18): the reference run is this bundle on
a 512x512x300 int16 CT at 0.8x0.8x1.5 mm. ``roi_size``/``sw_batch_size``/``channels`` can be shrunk
for tests that must stay fast; the transforms stay the Model Zoo's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SPLEEN_LABELS = ("background", "spleen")


def spleen_network_def(channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units: int = 2) -> dict:
    return {"_target_": "UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": len(SPLEEN_LABELS),
            "channels": list(channels), "strides": list(strides), "num_res_units": num_res_units, "norm": "batch"}


def spleen_ct_bundle(folder, roi_size=(96, 96, 96), sw_batch_size: int = 4, overlap: float = 0.5,
                     pixdim=(1.5, 1.5, 2.0), network_def: dict = None, seed: int = 0,
                     nearest_inverse: bool = False) -> Path:
    """Write the spleen bundle's configs (the Model Zoo's transforms) with random weights to ``folder``."""
    import torch
    from bundle_factory import inference_config, metadata
    from monai.bundle import ConfigParser

    folder = Path(folder)
    (folder / "configs").mkdir(parents=True, exist_ok=True)
    (folder / "models").mkdir(parents=True, exist_ok=True)
    net_def = network_def or spleen_network_def()
    cfg = inference_config(net_def, pixdim=pixdim, roi_size=roi_size, sw_batch_size=sw_batch_size,
                           intensity="scalerange", overlap=overlap)
    if nearest_inverse:
        for t in cfg["postprocessing"]["transforms"]:
            if t["_target_"] == "Invertd":
                t["nearest_interp"] = True
    cfg["initialize"] = []
    (folder / "configs" / "inference.json").write_text(json.dumps(cfg, indent=2))
    meta = metadata(SPLEEN_LABELS, modality="CT", name="spleen_ct_segmentation (configs, random weights)")
    (folder / "configs" / "metadata.json").write_text(json.dumps(meta, indent=2))
    torch.manual_seed(seed)
    net = ConfigParser({"network_def": net_def}).get_parsed_content("network_def").eval()
    _balance(net)
    torch.save(net.state_dict(), folder / "models" / "model.pt")
    return folder


def _balance(net) -> None:
    """Shift the last layer's class-1 bias so that about half of a CT-like patch is labelled: random
    weights otherwise label (nearly) every voxel the same, and a label comparison without boundaries
    would prove nothing."""
    import torch

    vol = ct_volume((48, 64, 64), spacing=(1.5, 1.5, 2.0), seed=123)
    x = torch.from_numpy(np.clip((vol.array.astype(np.float32) + 57) / 221, 0, 1).transpose(2, 1, 0).copy())
    with torch.no_grad():
        y = net(x[None, None])
        bias = [p for name, p in net.named_parameters() if name.endswith("bias") and p.shape == (y.shape[1],)][-1]
        bias[1] -= float((y[0, 1] - y[0, 0]).median())


def ct_volume(shape_kji=(300, 512, 512), spacing=(0.8, 0.8, 1.5), seed: int = 0, flip_lps: bool = False):
    """A CT-like int16 Volume (air -1000, a body ellipse of soft tissue ~40 HU with a denser organ
    blob, noise) of ``shape_kji`` at ``spacing`` (I, J, K mm). ``flip_lps`` stores it with the first
    two axes reversed (as DICOM-derived files are), so the bundle's Orientationd has work to do."""
    from MedAILib.core.volume import Volume

    rng = np.random.default_rng(seed)
    k, j, i = shape_kji
    arr = np.full((k, j, i), -1000, dtype=np.int16)
    yy = ((np.arange(j, dtype=np.float32) - j / 2) / (0.42 * j))[:, None]
    xx = ((np.arange(i, dtype=np.float32) - i / 2) / (0.46 * i))[None, :]
    body = (xx ** 2 + yy ** 2) < 1.0
    organ = ((xx - 0.35) ** 2 / 0.04 + (yy + 0.1) ** 2 / 0.06) < 1.0
    noise = rng.normal(0, 25, size=(j, i)).astype(np.float32)
    for z in range(k):  # slice by slice: no float copy of the whole volume
        s = np.where(body, 40 + noise, -1000 + noise * 0.2)
        if abs(z - k / 2) < k / 3:
            s = np.where(organ, 120 + noise, s)
        arr[z] = np.clip(np.rint(s + 5 * np.sin(z / 7.0)), -1024, 3071).astype(np.int16)
        noise = np.roll(noise, 3, axis=1)
    m = np.diag([spacing[0], spacing[1], spacing[2], 1.0])
    m[:3, 3] = [-0.5 * i * spacing[0], -0.5 * j * spacing[1], -0.5 * k * spacing[2]]
    if flip_lps:
        m[0, 0], m[1, 1] = -spacing[0], -spacing[1]
        m[:2, 3] = [0.5 * i * spacing[0], 0.5 * j * spacing[1]]
    return Volume(arr, m, metadata={"source": f"ct{tuple(shape_kji)}"})
