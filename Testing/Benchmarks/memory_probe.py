"""Peak memory of ``segment()`` without the network (docs/performance.md, round 2, (a)).

``memory_probe.py keep|release N SPACING_MM``: a fresh process loads the shipped hippocampus bundle,
replaces the network by fixed random logits of the model-grid shape (so the figure is everything but
the network's own activations), segments a synthetic N^3 float32 volume at SPACING_MM and prints one
JSON line: peak (VmHWM) minus the RSS after imports and bundle load, its ratio to the input's size, and
the SHA-1 of the labels. ``keep`` disables the release of the model-space voxels before
post-processing (the behaviour before round 2) to compare; the SHA-1 must not change.
"""

import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))


def _status(key: str) -> float:
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024.0
    raise KeyError(key)


def main(argv) -> None:
    mode, n, spacing = argv[0], int(argv[1]), float(argv[2])
    os.environ.setdefault("MEDAI_HOME", tempfile.mkdtemp(prefix="medai-probe-"))
    import torch

    torch.set_num_threads(1)
    import bench_support as bs
    import MedAILib.tasks.segmentation.pipeline as seg
    from MedAILib.models import trust
    from MedAILib.models.bundle import load_bundle

    folder = REPO / "MedAI" / "MedAILib" / "resources" / "Models" / "hippocampus_unet"
    trust.trust(folder, reason="memory probe")
    bundle = load_bundle(folder)

    def fake_network(inferer, network, x, *args, **kwargs):
        return torch.randn((1, len(bundle.labels) + 1, *x.shape[2:]), generator=torch.Generator().manual_seed(0))

    import MedAILib.runtime.inferer as inference

    seg.run_inferer = inference.run_inferer = fake_network
    if mode == "keep":
        seg.release_image_voxels = lambda data, bundle: data
    base = _status("VmRSS")
    vol = bs.synthetic_volume((n, n, n), spacing=(spacing,) * 3)
    t = time.perf_counter()
    res = seg.segment([vol], bundle, device="cpu")
    input_mb = n ** 3 * 4 / 2 ** 20
    peak = _status("VmHWM") - base
    print(json.dumps({"mode": mode, "n": n, "spacing": spacing, "input_mb": input_mb,
                      "peak_minus_base_mb": round(peak, 1), "ratio": round(peak / input_mb, 2),
                      "s": round(time.perf_counter() - t, 2),
                      "labels_sha1": hashlib.sha1(res.labelmap.array.tobytes()).hexdigest()[:12]}))


if __name__ == "__main__":
    main(sys.argv[1:])
