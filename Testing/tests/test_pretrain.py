"""`medai pretrain` (issue 19): self-supervised pre-training on unlabelled volumes whose bundle
initialises `medai train segmentation --init` (every layer but the output head).

Small real hippocampus crops from MEDAI_DATA_DIR, a tiny network and one step: the path, not the
figures (those are in docs/training.md).
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from MedAILib.core.errors import InputError
from MedAILib.tasks.pretraining import ssl


@pytest.fixture
def home(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDAI_HOME", str(tmp_path / "medai-home"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return tmp_path / "medai-home"


def _images(data_dir, n=4):
    return sorted((data_dir / "msd-hippocampus" / "imagesTr").glob("hippocampus_0*.nii.gz"))[:n]


def test_unlabelled_inputs_checked_and_named(tmp_path, data_dir):
    files = _images(data_dir, 2)
    dl = tmp_path / "unlabelled.json"
    dl.write_text(json.dumps({"unlabelled": [{"image": str(files[0])}, {"image": "missing.nii.gz"}]}))
    with pytest.raises(InputError, match=r"missing\.nii\.gz does not exist"):
        ssl.list_images(datalist=dl)
    dl.write_text(json.dumps([str(files[0]), [str(files[0]), str(files[1])]]))
    with pytest.raises(InputError, match="different numbers of channel files"):
        ssl.list_images(datalist=dl)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no image file"):
        ssl.list_images(images=tmp_path / "empty")
    # labels in a labelled datalist are ignored; relative paths are relative to the file
    dl.write_text(json.dumps({"training": [{"image": files[0].name, "label": "whatever"}]}))
    (tmp_path / files[0].name).write_bytes(files[0].read_bytes())
    assert ssl.list_images(datalist=dl) == [{"image": str(tmp_path / files[0].name)}]


def test_encoder_keys_split_a_monai_unet_into_down_path_and_decoder():
    from monai.networks.nets import UNet

    net = UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(4, 8, 16), strides=(2, 2), num_res_units=2)
    sd = net.state_dict()
    enc = ssl.encoder_keys(sd)
    dec = [k for k in sd if k not in enc]
    assert any(k.startswith("model.0.") for k in enc) and any(k.startswith("model.1.submodule.1.") for k in enc)
    assert all(k.startswith("model.2.") or ".submodule.2." in k or k.startswith("model.1.submodule.2.") for k in dec)
    assert not any(k.startswith("model.2.") for k in enc) and dec  # the output head is never "encoder"


def test_pretrain_bundle_initialises_segmentation_training(tmp_path, home, data_dir):
    from MedAILib.models import trust
    from MedAILib.tasks.segmentation import init_weights, own_data
    from MedAILib.tasks.segmentation.trainer import build_network

    items = ssl.list_images(files=_images(data_dir))
    out = tmp_path / "pre"
    info = ssl.pretrain(items, out, epochs=2, steps_per_epoch=1, batch_size=2, base_filters=4,
                        max_patch=[16, 16, 16], command="test", keep="all")
    assert info["epochs_run"] == 2 and np.isfinite(info["final_loss"])
    assert (out / "docs" / "pretrain_log.csv").read_text().count("\n") == 3
    assert trust.trust_status(out)[0]  # the user made it: trusted, so --init may load it
    with pytest.raises(InputError, match="already exists"):
        ssl.pretrain(items, out, epochs=1, steps_per_epoch=1, batch_size=2, base_filters=4, max_patch=[16, 16, 16])
    # what `medai train segmentation --init PRE` does with it: same UNet and window, new 3-class head
    src = init_weights.init_source(str(out))
    assert src["roi_size"] == info["plan"]["patch"]
    assert src["net_def"] == own_data.network_def(info["plan"], 1)
    net = build_network(init_weights.adapt_net_def(src["net_def"], 1, 3))
    rep = init_weights.load_matching(net, src["state_dict"], str(out))
    assert rep["tensors_fresh"] > 0 and all(k.startswith("model.2.") for k in rep["fresh"])
    sd = torch.load(out / "models" / "model.pt", weights_only=True)
    torch.testing.assert_close(net.state_dict()["model.0.conv.unit0.conv.weight"], sd["model.0.conv.unit0.conv.weight"])
    # the default keeps the encoder only: the decoder starts fresh too
    enc = ssl.pretrain(items, tmp_path / "enc", epochs=1, steps_per_epoch=1, batch_size=2, base_filters=4,
                       max_patch=[16, 16, 16])
    assert enc["keep"] == "encoder"
    sd_enc = torch.load(tmp_path / "enc" / "models" / "model.pt", weights_only=True)
    assert set(sd_enc) == set(ssl.encoder_keys(sd)) and len(sd_enc) < len(sd)
    net2 = build_network(init_weights.adapt_net_def(init_weights.init_source(str(tmp_path / "enc"))["net_def"], 1, 3))
    rep2 = init_weights.load_matching(net2, sd_enc, "enc")
    assert rep2["tensors_loaded"] == len(sd_enc) and rep2["tensors_fresh"] == len(net2.state_dict()) - len(sd_enc)
    with pytest.raises(InputError, match="unknown --keep"):
        ssl.pretrain(items, tmp_path / "x", keep="decoder")
