"""Issue 18: the memory a segmentation will need, estimated before running from the bundle and the
input's header (runtime/memory.py: estimate_run / check_run), and what a run does with it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from spleen_bundle import ct_volume, spleen_ct_bundle, spleen_network_def

from MedAILib.core.errors import InputError

SMALL_NET = spleen_network_def(channels=(4, 8, 16), strides=(2, 2), num_res_units=1)
GB = 1 << 30


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from MedAILib.models import load_bundle, trust

    folder = spleen_ct_bundle(tmp_path_factory.mktemp("b") / "ct", roi_size=(32, 32, 32), sw_batch_size=2,
                              network_def=SMALL_NET)
    trust.trust(folder, reason="test")
    return load_bundle(folder)


def test_the_estimate_needs_only_the_header_and_knows_monais_model_grid(bundle):
    """No voxel is allocated for a 512x512x300 header; the model-space grid is the one MONAI's own
    preprocessing produces (checked on a small image with the same geometry rule)."""
    from MedAILib.runtime.memory import _rss_bytes, estimate_run
    from MedAILib.runtime.model_space import to_model_space

    small = ct_volume((22, 40, 36), spacing=(0.8, 0.9, 1.5), flip_lps=True)
    est = estimate_run(bundle, small.size_ijk, small.ijk_to_ras, np.int16, measure=False)
    assert est.model_space_shape == tuple(to_model_space([small], bundle, streaming=False)["image"].shape[1:])
    before = _rss_bytes()
    ct = ct_volume((2, 2, 2), spacing=(0.8, 0.8, 1.5))  # geometry only; the size comes from the header
    big = estimate_run(bundle, (512, 512, 300), ct.ijk_to_ras, np.int16, measure=False)
    assert _rss_bytes() - before < 64 << 20
    assert big.model_space_shape == (274, 274, 225) and big.input_bytes == 512 * 512 * 300 * 2
    assert big.strategy == "slab by slab" and set(big.stages) == {"read", "forward", "network", "post", "write"}
    whole = estimate_run(bundle, (512, 512, 300), ct.ijk_to_ras, np.int16, measure=False, streamed=False)
    assert whole.strategy.startswith("whole volume") and whole.peak_bytes > 3 * big.peak_bytes


def test_the_window_batch_is_measured_once_per_bundle_and_machine(bundle, tmp_path, monkeypatch):
    import MedAILib.runtime.memory as memory

    monkeypatch.setenv("MEDAI_HOME", str(tmp_path / "home"))
    calls = []

    def measure(network, in_channels, roi, batch, device="cpu"):
        calls.append(batch)
        return 123 << 20

    monkeypatch.setattr(memory, "measure_window_bytes", measure)
    first = memory.window_batch_bytes(bundle, 1, (32, 32, 32), 2)
    second = memory.window_batch_bytes(bundle, 1, (32, 32, 32), 2)
    assert first == second == (123 << 20, "measured") and calls == [2]
    assert len(list((tmp_path / "home" / "cache" / "memory").glob("*.json"))) == 1
    # an image that fills a single window is estimated with a batch of one window
    tiny = ct_volume((12, 20, 18), spacing=(1.5, 1.5, 2.0))
    memory.estimate_run(bundle, tiny.size_ijk, tiny.ijk_to_ras, np.int16)
    assert calls == [2, 1]


def test_a_real_window_batch_measurement_sees_the_activations(bundle):
    from MedAILib.runtime.memory import measure_window_bytes

    if not os.path.exists("/proc/self/statm"):
        pytest.skip("needs /proc")
    one = measure_window_bytes(bundle.network, 1, (64, 64, 64), 1)
    four = measure_window_bytes(bundle.network, 1, (64, 64, 64), 4)
    assert 0 < one < four  # more windows per batch, more memory (first feature maps: 4 ch x 32^3 floats)


def _estimate(peak_gb, input_gb=0.5, available_gb=4.0):
    from MedAILib.runtime.memory import RunEstimate

    return RunEstimate({"read": int(input_gb * 2 * GB), "network": int(peak_gb * GB)}, int(input_gb * GB),
                       "slab by slab", (10, 10, 10), 1, "measured", "cpu", None, int(available_gb * GB), None)


def test_refuse_only_beyond_the_estimates_error_and_warn_when_tight(monkeypatch):
    import MedAILib.runtime.memory as memory

    monkeypatch.setattr(memory, "swap_free", lambda: 0)
    monkeypatch.delenv("MEDAI_MEMORY_CHECK", raising=False)
    assert memory.check_run(_estimate(3.0))[0] == "fits"           # 2.5 GB still to find, 4 free
    assert memory.check_run(_estimate(5.0))[0] == "tight"          # 4.5 GB: within the estimate's +-25 %
    verdict, text = memory.check_run(_estimate(8.0))               # 7.5 GB > 1.25 x 4
    assert verdict == "refuse" and "7.5 GB" in text and "4.0 GB is available" in text and "network" in text
    monkeypatch.setattr(memory, "swap_free", lambda: 8 * GB)       # swap would take it: slow, not refused
    assert memory.check_run(_estimate(8.0))[0] == "tight"
    monkeypatch.setattr(memory, "swap_free", lambda: 0)
    monkeypatch.setenv("MEDAI_MEMORY_CHECK", "warn")
    assert memory.check_run(_estimate(8.0))[0] == "tight"


def test_a_run_that_cannot_fit_is_refused_before_any_work_naming_the_file(bundle, monkeypatch):
    import MedAILib.runtime.memory as memory
    import MedAILib.runtime.model_space as model_space
    from MedAILib.tasks.segmentation.pipeline import segment

    vol = ct_volume((24, 40, 36), spacing=(0.8, 0.9, 1.5))
    vol.metadata["source"] = "/data/patient7/ct.nii.gz"
    monkeypatch.setattr(memory, "available_ram", lambda: 4 << 20)
    monkeypatch.setattr(memory, "swap_free", lambda: 0)
    monkeypatch.setattr(model_space, "to_model_space", lambda *a, **k: pytest.fail("work started"))
    with pytest.raises(InputError) as e:
        segment([vol], bundle, device="cpu")
    assert e.value.message.startswith("ct.nii.gz: not enough memory") and "MEDAI_MEMORY_CHECK=warn" in e.value.hint


PROBE = textwrap.dedent("""
    import json, sys, warnings
    warnings.filterwarnings("ignore")
    import numpy as np, torch
    torch.set_num_threads(1)
    from spleen_bundle import ct_volume, spleen_ct_bundle, spleen_network_def
    from MedAILib.cli import main
    from MedAILib.io import write_image
    import MedAILib.runtime.memory as memory
    import MedAILib.tasks.segmentation.command as command
    net = spleen_network_def(channels=(4, 8, 16), strides=(2, 2), num_res_units=1)
    folder = str(spleen_ct_bundle(sys.argv[1] + "/b", roi_size=(48, 48, 48), sw_batch_size=2, network_def=net))
    write_image(ct_volume((20, 40, 40)), sys.argv[1] + "/small.nii", compress=False)
    write_image(ct_volume((150, 256, 256), spacing=(0.8, 0.8, 1.5)), sys.argv[1] + "/ct.nii", compress=False)
    common = ["--model", folder, "--trust", folder, "--device", "cpu", "--progress", "none", "--overwrite"]
    main(["segment", sys.argv[1] + "/small.nii", "-o", sys.argv[1] + "/small.seg.nrrd", *common])  # imports, caches
    def status(key):
        return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key))
    seen = {}
    read, estimate_run = command._read_and_check, memory.estimate_run
    def read_and_check(paths, spec):  # the case starts: measure from here
        memory.release_free_memory()
        open("/proc/self/clear_refs", "w").write("5")
        seen["base"] = status("VmRSS")
        return read(paths, spec)
    def estimate(*a, **k):
        est = estimate_run(*a, **k)
        seen.update(estimate=est.peak_bytes, stage=est.peak_stage)
        return est
    command._read_and_check, memory.estimate_run = read_and_check, estimate
    assert main(["segment", sys.argv[1] + "/ct.nii", "-o", sys.argv[1] + "/ct.seg.nrrd", *common]) == 0
    print(json.dumps({"estimate": seen["estimate"], "measured": status("VmHWM") - seen["base"], "stage": seen["stage"]}))
""")


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc peak-memory reset")
def test_the_estimate_is_within_25_percent_of_the_measured_peak(tmp_path):
    """``medai segment`` of a 256x256x150 CT (fresh process): the estimate made before the case vs the
    case's own peak, from reading its input to writing its outputs (clinical sizes: the benchmark)."""
    here = Path(__file__).resolve().parent
    env = dict(os.environ, MEDAI_HOME=str(tmp_path / "home"), OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(here.parents[1] / "MedAI"), str(here)]))
    p = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path)], env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    error = (out["estimate"] - out["measured"]) / out["measured"]
    assert abs(error) <= 0.25, f"estimate {out['estimate'] >> 20} MB vs measured {out['measured'] >> 20} MB " \
                               f"({100 * error:+.0f} %, {out['stage']})"
