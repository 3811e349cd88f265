"""Model Zoo bundles through `medai segment` give the SAME labels as MONAI's own bundle workflow.

Bundles are built in the Model Zoo layout with random weights (Testing/tests/modelzoo_bundles.py) and
run twice on the same real file(s): once with ``monai.bundle.run`` (SupervisedEvaluator + SaveImaged,
as the Model Zoo documents) and once with ``medai segment``; the label maps must be voxel-identical on
the same grid. Also: ``medai models add`` with trust refusal, multi-input alignment (inputs on different
grids), the override table for old bundles, and the shipped Model Zoo catalogue entries.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from modelzoo_bundles import (BRATS_INPUTS, ct_unet_bundle, mr_multi_input_bundle, old_unet_bundle,
                              run_monai_workflow)

from MedAILib.cli import main
from MedAILib.core.errors import ModelError
from MedAILib.io import read_image, write_image
from MedAILib.core.volume import Volume

warnings.filterwarnings("ignore", module="monai")
pytest.importorskip("ignite", reason="MONAI's bundle workflow (SupervisedEvaluator) needs pytorch-ignite")

CT = "totalsegmentator-example/example_ct_sm.nii.gz"
BRATS = "brainlesion-brats-examples/BraTS-GLI-00001-000/BraTS-GLI-00001-000-{}.nii.gz"
BRATS_FILES = ("t1c", "t1n", "t2w", "t2f")  # = T1c, T1, T2, FLAIR (the bundle's channel order)


@pytest.fixture(autouse=True)
def medai_home(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDAI_HOME", str(tmp_path / "medai_home"))
    return tmp_path / "medai_home"


def medai_segment(inputs, bundle, out: Path, *extra) -> Volume:
    rc = main(["segment", *map(str, inputs), "-o", str(out), "--model", str(bundle), "--trust", str(bundle),
               "--format", "nii.gz", "--progress", "none", "--device", "cpu", *extra])
    assert rc == 0, f"medai segment failed with exit status {rc}"
    return read_image(out)


def assert_identical(reference_file: Path, ours: Volume) -> None:
    ref = read_image(reference_file)
    assert ref.same_grid(ours), "labels are not on the same grid as MONAI's output"
    ref_labels = np.rint(ref.array).astype(np.int32)
    our_labels = ours.array.astype(np.int32)
    assert len(np.unique(ref_labels)) > 1, "degenerate test: MONAI predicted a single label"
    differ = int((ref_labels != our_labels).sum())
    assert differ == 0, f"{differ} of {ref_labels.size} voxels differ from MONAI's own workflow"


# --- (a) CT UNet with Spacingd/Orientationd/ScaleIntensityRanged, on real CT and an oblique volume --
def test_ct_unet_bundle_matches_monai_workflow(data_dir, tmp_path):
    bundle = ct_unet_bundle(tmp_path / "ct_bundle")
    image = data_dir / CT
    [monai_out] = run_monai_workflow(bundle, [str(image)], tmp_path / "monai")
    assert_identical(monai_out, medai_segment([image], bundle, tmp_path / "medai.nii.gz"))


def test_ct_unet_bundle_matches_on_oblique_flipped_grid(tmp_path):
    """Oblique, anisotropic, axis-flipped geometry: where orientation bugs show."""
    from conftest import oblique_ijk_to_ras

    rng = np.random.default_rng(3)
    arr = rng.normal(40, 80, size=(14, 30, 26)).astype(np.float32)
    arr[4:10, 8:22, 6:20] += 150  # a bright block so the classes are not all ties
    src = tmp_path / "oblique.nii.gz"
    write_image(Volume(arr, oblique_ijk_to_ras(spacing=(1.7, 2.2, 3.1))), src)
    bundle = ct_unet_bundle(tmp_path / "ct_bundle")
    [monai_out] = run_monai_workflow(bundle, [str(src)], tmp_path / "monai")
    assert_identical(monai_out, medai_segment([src], bundle, tmp_path / "medai.nii.gz"))


# --- (b) 4-input MR SegResNet on the four BraTS contrasts --------------------------------------------
@pytest.fixture(scope="module")
def brats_case(data_dir, tmp_path_factory):
    """The four contrasts of one BraTS case, cropped to the central 120x120x80 mm (speed), plus the
    4-input bundle and MONAI's own result for them."""
    import SimpleITK as sitk

    folder = tmp_path_factory.mktemp("brats")
    files = []
    for m in BRATS_FILES:
        img = sitk.ReadImage(str(data_dir / BRATS.format(m)))
        size = [120, 120, 80]
        start = [(n - s) // 2 for n, s in zip(img.GetSize(), size)]
        files.append(folder / f"case-{m}.nii.gz")
        sitk.WriteImage(sitk.RegionOfInterest(img, size, start), str(files[-1]))
    bundle = mr_multi_input_bundle(folder / "mr_bundle")
    [monai_out] = run_monai_workflow(bundle, [[str(f) for f in files]], folder / "monai")
    return files, bundle, monai_out


def test_multi_input_mr_segresnet_matches_monai_workflow(brats_case, tmp_path):
    files, bundle, monai_out = brats_case
    assert_identical(monai_out, medai_segment(files, bundle, tmp_path / "medai.nii.gz"))


def test_multi_input_on_different_grids_is_aligned(brats_case, tmp_path):
    """The T2 input handed over on another grid (same voxels with axes permuted and flipped, stored
    as float) is aligned to the first input and gives MONAI's labels for the aligned inputs."""
    import SimpleITK as sitk

    files, bundle, monai_out = brats_case
    moved = tmp_path / "t2w_reoriented.nii.gz"
    img = sitk.Cast(sitk.ReadImage(str(files[2])), sitk.sitkFloat32)
    sitk.WriteImage(sitk.PermuteAxes(sitk.DICOMOrient(img, "RAI"), [2, 0, 1]), str(moved))
    assert not read_image(moved).same_grid(read_image(files[0])), "test setup: grids should differ"
    ours = medai_segment([files[0], files[1], moved, files[3]], bundle, tmp_path / "medai.nii.gz",
                         "--assume-aligned")
    ref = read_image(monai_out)
    assert ref.same_grid(ours), "labels must come back on input 0's grid"
    # Not bit-identical: linear resampling leaves ~1e-11 residue on some exactly-zero background voxels,
    # which NormalizeIntensityd(nonzero=True) then counts as foreground (random weights amplify it).
    agree = float((np.rint(ref.array).astype(np.int32) == ours.array.astype(np.int32)).mean())
    assert agree >= 0.999, f"only {agree:.5f} of voxels agree with MONAI on the aligned inputs"
    # without alignment the T2 channel would be garbage: check the test can tell the difference
    scrambled = read_image(files[2])
    write_image(scrambled.with_array(np.ascontiguousarray(scrambled.array[::-1])), tmp_path / "t2_flipped.nii.gz")
    wrong = medai_segment([files[0], files[1], tmp_path / "t2_flipped.nii.gz", files[3]], bundle,
                          tmp_path / "medai_wrong.nii.gz")
    assert float((np.rint(ref.array).astype(np.int32) == wrong.array.astype(np.int32)).mean()) < agree


# --- (c) a config that imports the bundle's own scripts/ package ---------------------------------
def test_bundle_with_scripts_matches_monai_workflow(data_dir, tmp_path):
    bundle = ct_unet_bundle(tmp_path / "scripts_bundle", with_scripts=True)
    cfg = json.loads((bundle / "configs" / "inference.json").read_text())
    assert cfg["network_def"]["_target_"].startswith("scripts."), "test setup: network must come from scripts/"
    image = data_dir / CT
    [monai_out] = run_monai_workflow(bundle, [str(image)], tmp_path / "monai")
    assert_identical(monai_out, medai_segment([image], bundle, tmp_path / "medai.nii.gz"))


# --- override table ------------------------------------------------------------------------------
def test_old_bundle_fails_in_monai_but_runs_with_override(data_dir, tmp_path):
    """`dimensions=3` (removed from MONAI's UNet): MONAI's own run fails; MedAI applies the documented
    override in memory (the bundle on disk is untouched) and gives the labels of the fixed config."""
    old = old_unet_bundle(tmp_path / "old_bundle")
    on_disk = (old / "configs" / "inference.json").read_text()
    image = data_dir / CT
    with pytest.raises(Exception, match="dimensions"):
        run_monai_workflow(old, [str(image)], tmp_path / "monai_old")
    ours = medai_segment([image], old, tmp_path / "medai.nii.gz")
    assert (old / "configs" / "inference.json").read_text() == on_disk, "the bundle must not be edited"
    # the same bundle with the modern argument name, through MONAI: identical labels
    fixed = ct_unet_bundle(tmp_path / "fixed_bundle")
    [monai_out] = run_monai_workflow(fixed, [str(image)], tmp_path / "monai_fixed")
    assert_identical(monai_out, ours)


def test_override_table_reports_what_it_changed(tmp_path):
    from MedAILib.models import load_bundle, trust

    old = old_unet_bundle(tmp_path / "old_bundle")
    trust.trust(old)
    b = load_bundle(old)
    assert any("dimensions" in m and "spatial_dims" in m for m in b.overrides_applied)
    assert b.network is not None
    modern = load_bundle(trust.trust(ct_unet_bundle(tmp_path / "new")) and tmp_path / "new")
    assert modern.overrides_applied == []


# --- medai models add ------------------------------------------------------------------------------
def test_models_add_refuses_untrusted_and_registers_trusted(tmp_path, medai_home, capsys, monkeypatch):
    from bundle_factory import zip_bundle

    from MedAILib.models import load_catalogue
    from MedAILib.models.trust import trust_status

    bundle = mr_multi_input_bundle(tmp_path / "mr_bundle")
    archive = zip_bundle(bundle, tmp_path / "brats_like.zip", top="brats_like")
    monkeypatch.setattr("builtins.input", lambda prompt="": "n")
    rc = main(["models", "add", str(archive)])
    err = capsys.readouterr()
    assert rc != 0 and "not added" in err.err
    assert "T1c (MR), T1 (MR), T2 (MR), FLAIR (MR)" in err.out, "the prompt must show the declared inputs"
    assert "Python expression" in err.out, "the prompt must say the config can run code"
    assert not (medai_home / "models" / "brats_like").exists()
    assert "brats_like" not in load_catalogue()

    assert main(["models", "add", str(archive), "--yes"]) == 0
    entry = load_catalogue().get("brats_like")
    assert [i["name"] for i in entry.inputs] == list(BRATS_INPUTS)
    assert [i["channel"] for i in entry.inputs] == [0, 1, 2, 3]
    assert [(l["value"], l["name"]) for l in entry.labels] == [(1, "necrosis"), (2, "edema"), (3, "enhancing tumor")]
    folder = Path(entry.source["location"])
    assert trust_status(folder)[0]
    # a trusted bundle whose scripts/configs change afterwards is no longer trusted
    (folder / "configs" / "inference.json").write_text((folder / "configs" / "inference.json").read_text() + " ")
    assert not trust_status(folder)[0]


def test_models_add_without_a_terminal_never_trusts_silently(tmp_path, monkeypatch):
    from MedAILib.models import modelzoo

    def no_terminal(prompt=""):
        raise EOFError

    bundle = ct_unet_bundle(tmp_path / "ct_bundle")
    with pytest.raises(ModelError, match="did not trust"):
        modelzoo.add_bundle(str(bundle), ask=no_terminal, say=lambda s: None)


# --- shipped Model Zoo entries ------------------------------------------------------------------------
def _zoo_entries():
    from MedAILib.models.modelzoo import modelzoo_entries

    return {e["modelzoo_name"]: e for e in modelzoo_entries()}


def test_modelzoo_entries_are_valid_catalogue_entries():
    import jsonschema

    from MedAILib.models.catalogue import schema_path
    from MedAILib.models.checksums import check_hex

    entries = _zoo_entries()
    for name in ("spleen_ct_segmentation", "wholeBody_ct_segmentation", "renalStructures_CECT_segmentation",
                 "brats_mri_segmentation", "prostate_mri_anatomy", "pediatric_abdominal_ct_segmentation",
                 "wholeBrainSeg_Large_UNEST_segmentation", "swin_unetr_btcv_segmentation"):
        assert name in entries, name
    jsonschema.validate({"version": 1, "models": list(entries.values())}, json.loads(schema_path().read_text()))
    for e in entries.values():
        c = e["checksum"]
        assert check_hex(c["value"], c["algorithm"]), e["id"]
        if e["verified"]:
            assert e["source"]["url"].endswith(f"{e['modelzoo_name']}_v{e['version']}.zip")
            assert "model_info.json" in e["provenance"]["download"]
    brats = entries["brats_mri_segmentation"]
    assert [(i["name"], i["modality"]) for i in brats["inputs"]] == [("T1c", "MR"), ("T1", "MR"), ("T2", "MR"), ("FLAIR", "MR")]
    assert len(entries["wholeBody_ct_segmentation"]["labels"]) == 104
    spleen = entries["spleen_ct_segmentation"]["labels"][0]
    assert spleen["name"] == "spleen" and "SCT^78961009^Spleen" in spleen["terminology"]


def test_modelzoo_ref_resolution_and_unverified_refusal():
    from MedAILib.models import modelzoo

    entry = modelzoo.resolve_modelzoo_ref("modelzoo:spleen_ct_segmentation@0.5.9")
    assert entry["checksum"]["algorithm"] == "sha1"
    with pytest.raises(ModelError, match="checksum is unknown"):
        modelzoo.resolve_modelzoo_ref("modelzoo:spleen_ct_segmentation@9.9.9")
    with pytest.raises(ModelError, match="no verified download"):
        modelzoo.require_verified(dict(entry, verified=False))


def test_modelzoo_add_downloads_and_checks_publisher_sha1(tmp_path, monkeypatch):
    """`modelzoo:NAME@VERSION`: the archive is fetched from a local server and checked against the
    catalogue's SHA-1 (the Model Zoo's algorithm); a mismatching archive is refused."""
    import hashlib
    import http.server
    import threading

    from bundle_factory import zip_bundle

    from MedAILib.models import modelzoo
    from MedAILib.core.errors import DownloadError

    served = tmp_path / "srv"
    served.mkdir()
    archive = zip_bundle(ct_unet_bundle(tmp_path / "b"), served / "tiny_v0.1.0.zip", top="tiny")
    sha1 = hashlib.sha1(archive.read_bytes()).hexdigest()
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(served), **k)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/tiny_v0.1.0.zip"
        good = {"id": "tiny", "modelzoo_name": "tiny", "version": "0.1.0", "verified": True,
                "source": {"url": url, "format": "zip"}, "checksum": {"algorithm": "sha1", "value": sha1}}
        monkeypatch.setattr(modelzoo, "modelzoo_entries", lambda path=None: [good])
        assert main(["models", "add", "modelzoo:tiny@0.1.0", "--yes"]) == 0
        bad = dict(good, checksum={"algorithm": "sha1", "value": "0" * 40})
        monkeypatch.setattr(modelzoo, "modelzoo_entries", lambda path=None: [bad])
        with pytest.raises(DownloadError):
            modelzoo.add_bundle("modelzoo:tiny@0.1.0", assume_yes=True, say=lambda s: None,
                                download=_cli_downloader())
    finally:
        httpd.shutdown()


def _cli_downloader():
    from MedAILib.models import download, modelzoo

    def _dl(entry, folder):
        algorithm, value = modelzoo.expected_checksum(entry)
        return download.download_file(entry["source"]["url"], Path(folder) / "a.zip", value, None,
                                      algorithm=algorithm, show_bar=False)
    return _dl


# --- terminology and resource estimate ---------------------------------------------------------------
def test_terminology_mapping():
    from MedAILib.models.terminology import lookup

    assert lookup("spleen")["code"] == "78961009"
    right = lookup("kidney_right")                               # word order and '_' ignored
    assert right["code"] == "64033007" and right["laterality"][0] == "24028007"  # Kidney + Right (Slicer's list)
    assert lookup("Left Kideny")["laterality"][0] == "7771000"  # a typo found in a real bundle
    adrenal = lookup("adrenal_gland_left")
    assert adrenal["code"] == "23451007" and adrenal["laterality"][0] == "7771000"
    assert lookup("tumour")["code"] == "108369006"
    assert lookup("lung_upper_lobe_left") is None                # not in the table: left unmapped
    assert lookup("Right-Hippocampus") is None


def test_memory_estimate_is_exact_for_a_known_network_and_suggests_when_too_big():
    import torch

    from MedAILib.runtime.memory import estimate, window_activation_bytes

    net = torch.nn.Sequential(torch.nn.Conv3d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(8, 2, 3, padding=1))
    # conv1 output and relu output are alive together: 2 x 8 x 32^3 float32
    assert window_activation_bytes(net, 1, (32, 32, 32)) == 2 * 8 * 32 ** 3 * 4
    small = estimate(net, 1, 2, (32, 32, 32), (64, 64, 64), (1, 1, 1), (2, 2, 2), device="cuda:0",
                     available_device=1 << 30, available_host=1 << 30)
    assert small.fits and small.model_space_shape == (32, 32, 32) and not small.suggestions
    big = estimate(net, 1, 2, (32, 32, 32), (512, 512, 400), (0.7, 0.7, 1.0), (0.7, 0.7, 1.0), sw_batch_size=4,
                   device="cuda:0", has_fast_mode=True, available_device=64 << 20, available_host=1 << 34)
    assert not big.fits
    text = " ".join(big.suggestions)
    assert "--device cpu" in text and "--fast" in text and "crop" in text


def test_segment_warns_before_running_when_memory_will_not_fit(tmp_path, monkeypatch):
    from conftest import oblique_ijk_to_ras

    from MedAILib.models import load_bundle, trust
    from MedAILib.runtime import memory as est_mod
    from MedAILib.core.progress import Progress
    from MedAILib.tasks.segmentation.pipeline import segment

    bundle_dir = ct_unet_bundle(tmp_path / "ct_bundle")
    trust.trust(bundle_dir)
    vol = Volume(np.random.default_rng(0).normal(0, 100, (12, 20, 18)).astype(np.float32), oblique_ijk_to_ras())
    logs = []
    progress = Progress(callback=lambda f, m, e: logs.append(m) if f is None else None)
    assert est_mod.clearly_fits(load_bundle(bundle_dir), vol) or est_mod.available_ram() < est_mod.SMALL_FREE_BYTES
    segment([vol], load_bundle(bundle_dir), device="cpu", progress=progress)
    assert not any("memory estimate" in m for m in logs), "a small job fits: no warning"
    monkeypatch.setattr(est_mod, "available_ram", lambda: 1 << 20)  # pretend 1 MB free, no swap
    monkeypatch.setattr(est_mod, "swap_free", lambda: 0)
    from MedAILib.core.errors import InputError

    with pytest.raises(InputError) as refused:  # issue 18: refused before running, not killed half-way
        segment([vol], load_bundle(bundle_dir), device="cpu", progress=progress)
    assert "not enough memory" in refused.value.message and "RAM" in refused.value.message
    assert "crop" in refused.value.hint and "MEDAI_MEMORY_CHECK=warn" in refused.value.hint
    monkeypatch.setenv("MEDAI_MEMORY_CHECK", "warn")  # the way to run it anyway: a warning, then the run
    segment([vol], load_bundle(bundle_dir), device="cpu", progress=progress)
    warning = [m for m in logs if "may run out of memory" in m]
    assert warning and "crop" in warning[0] and "RAM" in warning[0]


def test_labels_from_metadata_argmax_and_sigmoid():
    from MedAILib.models.modelzoo import labels_from_metadata

    def meta(names):
        return {"network_data_format": {"outputs": {"pred": {"channel_def": {str(i): n for i, n in enumerate(names)}}}}}

    argmax = labels_from_metadata(meta(["background", "liver", "spleen"]))
    assert [(l["value"], l["name"]) for l in argmax] == [(1, "liver"), (2, "spleen")]
    assert "SCT^10200004^Liver" in argmax[0]["terminology"]
    sigmoid = labels_from_metadata(meta(["Tumor core", "Whole tumor", "Enhancing tumor"]), "sigmoid")
    assert [(l["value"], l["name"]) for l in sigmoid] == [(1, "Tumor core"), (2, "Whole tumor"), (3, "Enhancing tumor")]
    assert len({tuple(l["color"]) for l in argmax + sigmoid}) >= 3


def test_swin_unetr_img_size_override_like_the_btcv_bundle(tmp_path):
    """swin_unetr_btcv_segmentation's config passes img_size, which SwinUNETR no longer accepts."""
    from bundle_factory import make_bundle

    from MedAILib.models import load_bundle, trust

    swin = {"_target_": "SwinUNETR", "in_channels": 1, "out_channels": 3, "feature_size": 12,
            "depths": [1, 1, 1, 1], "num_heads": [1, 2, 3, 6]}
    folder = make_bundle(tmp_path / "swin", labels=("background", "spleen", "liver"), roi_size=(32, 32, 32),
                         network_def=swin)
    cfg_path = folder / "configs" / "inference.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["network_def"]["img_size"] = [32, 32, 32]
    cfg_path.write_text(json.dumps(cfg))
    trust.trust(folder)
    b = load_bundle(folder)
    assert any("img_size" in m for m in b.overrides_applied)
    assert type(b.network).__name__ == "SwinUNETR"
    assert "img_size" in json.loads(cfg_path.read_text())["network_def"], "the bundle on disk is untouched"


def test_yaml_bundle_is_described_and_loads(tmp_path):
    """Newer Model Zoo bundles (e.g. pediatric_abdominal_ct_segmentation) ship configs/inference.yaml."""
    import yaml

    from MedAILib.models import load_bundle, modelzoo, trust

    folder = ct_unet_bundle(tmp_path / "yaml_bundle")
    cfg = json.loads((folder / "configs" / "inference.json").read_text())
    (folder / "configs" / "inference.yaml").write_text(yaml.safe_dump(cfg))
    (folder / "configs" / "inference.json").unlink()
    entry = modelzoo.entry_from_bundle(folder)
    assert entry["spatial"]["spacing"] == [2.5, 3.0, 4.0] and entry["spatial"]["orientation"] == "RAS"
    assert entry["spatial"]["intensity_window"] == [-57, 164]
    trust.trust(folder)
    assert load_bundle(folder).network is not None


def test_bundle_loading_each_input_under_its_own_key_gets_one_input_per_key(tmp_path):
    """Like renalStructures_CECT_segmentation: LoadImaged(keys=[artery, vein, excret, label])."""
    from MedAILib.models import modelzoo

    folder = ct_unet_bundle(tmp_path / "phases")
    cfg = json.loads((folder / "configs" / "inference.json").read_text())
    cfg["preprocessing"]["transforms"][0]["keys"] = ["artery", "vein", "excret", "label"]
    (folder / "configs" / "inference.json").write_text(json.dumps(cfg))
    entry = modelzoo.entry_from_bundle(folder)
    assert [(i["name"], i["modality"], i["channel"]) for i in entry["inputs"]] == \
        [("artery", "CT", 0), ("vein", "CT", 1), ("excret", "CT", 2)]
    assert entry["input_count"] == 3


def test_weights_named_by_the_configs_checkpoint_loader(tmp_path):
    """pediatric_abdominal_ct_segmentation keeps its weights in models/dynunet_FT.pt."""
    import torch

    from MedAILib.models import load_bundle, trust

    folder = ct_unet_bundle(tmp_path / "ckpt")
    (folder / "models" / "model.pt").rename(folder / "models" / "dynunet_FT.pt")
    cfg = json.loads((folder / "configs" / "inference.json").read_text())
    cfg["handlers"][0]["load_path"] = "$@bundle_root + '/models/dynunet_FT.pt'"
    (folder / "configs" / "inference.json").write_text(json.dumps(cfg))
    trust.trust(folder)
    b = load_bundle(folder)
    assert b.weights_path.name == "dynunet_FT.pt"
    expected = torch.load(folder / "models" / "dynunet_FT.pt", weights_only=True)
    assert all(torch.equal(v, expected[k]) for k, v in b.network.state_dict().items() if k in expected)
