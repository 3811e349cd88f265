"""Bundle loading with MONAI's ConfigParser, trust refusal, weights_only, catalogue validation."""

import json
import os
import pickle

import pytest
import torch

from bundle_factory import make_bundle
from MedAILib.models import load_bundle, load_catalogue, trust
from MedAILib.models.bundle import load_weights
from MedAILib.core.errors import ModelError


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDAI_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_untrusted_bundle_refused_then_trusted(tmp_path):
    b = make_bundle(tmp_path / "b")
    with pytest.raises(ModelError, match="--trust"):
        load_bundle(b)
    trust.trust(b)
    bundle = load_bundle(b)
    assert bundle.output_channel_names == {0: "background", 1: "anterior", 2: "posterior"}
    assert [l.name for l in bundle.labels] == ["anterior", "posterior"]
    assert bundle.input_names == ["image"]
    net = bundle.network
    assert not net.training
    assert type(bundle.inferer).__name__ == "SlidingWindowInferer"
    assert [type(t).__name__ for t in bundle.preprocessing.transforms][0] == "LoadImaged"


def test_edited_config_is_untrusted_again(tmp_path):
    b = make_bundle(tmp_path / "b")
    trust.trust(b)
    assert trust.trust_status(b)[0]
    cfg = b / "configs" / "inference.json"
    cfg.write_text(cfg.read_text().replace('"overlap": 0.25', '"overlap": 0.5'))
    ok, why = trust.trust_status(b)
    assert not ok and "changed" in why
    with pytest.raises(ModelError, match="changed"):
        load_bundle(b)


def test_bundle_with_scripts_folder(tmp_path):
    b = make_bundle(tmp_path / "s", with_scripts=True)
    trust.trust(b)
    net = load_bundle(b).network
    assert type(net).__name__ == "UNet"


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > " + os.environ.get("MEDAI_HOME", "/tmp") + "/pwned",))


def test_malicious_pickle_refused(tmp_path, home):
    b = make_bundle(tmp_path / "b")
    torch.save({"weight": _Evil()}, b / "models" / "model.pt")  # torch.save pickles the object
    with pytest.raises(ModelError, match="refusing to load weights"):
        load_weights(b / "models" / "model.pt")
    trust.trust(b)
    with pytest.raises(ModelError, match="refusing"):
        load_bundle(b).network
    assert not (home / "pwned").exists()
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(ModelError):
        load_weights(raw)


def test_wrong_weights_refused(tmp_path):
    b = make_bundle(tmp_path / "b")
    torch.save({"nope": torch.zeros(3)}, b / "models" / "model.pt")
    trust.trust(b)
    with pytest.raises(ModelError, match="do not fit"):
        load_bundle(b).network


def test_shipped_catalogue_is_valid_and_has_terminology():
    cat = load_catalogue()
    e = cat.get("hippocampus_unet")
    assert e.is_shipped and e.input_count == 1
    terms = [l.terminology for l in e.label_infos]
    # Slicer's DICOM master list code; the part (anterior/posterior) is in the name: no such modifier exists
    assert all("DICOM master list~SCT^123037004^Anatomical Structure~SCT^5366008^Hippocampus~^^~" in t for t in terms)
    with pytest.raises(ModelError, match="no model called"):
        cat.get("nonexistent")


def test_user_catalogue_merged_and_validated(home):
    home.mkdir(parents=True, exist_ok=True)
    shipped = json.loads((load_catalogue().get("hippocampus_unet").shipped_path().parents[1] / "catalogue.json").read_text())
    entry = dict(shipped["models"][0], id="my_model", source={"url": "https://example.org/m.zip"},
                 sha256="0" * 64, size_bytes=10, memory_mb=10)
    (home / "catalogue.json").write_text(json.dumps({"version": 1, "models": [entry]}))
    cat = load_catalogue()
    assert "my_model" in cat and "hippocampus_unet" in cat and cat.get("my_model").origin == "user"
    entry["task"] = "dancing"
    (home / "catalogue.json").write_text(json.dumps({"version": 1, "models": [entry]}))
    with pytest.raises(ModelError, match="invalid"):
        load_catalogue()


def test_shipped_weights_checked_against_catalogue_sha256(tmp_path, monkeypatch):
    """Every shipped catalogue model has a SHA-256, and a damaged model.pt is refused before it loads."""
    import shutil

    from MedAILib.models import resolve_model
    from MedAILib.models.cache import sha256_file
    from MedAILib.models.catalogue import load_catalogue
    from MedAILib.core.paths import resources_dir
    from MedAILib.core.errors import ModelError

    shipped = [e for e in load_catalogue() if e.is_shipped]
    assert shipped
    for e in shipped:
        assert e.raw.get("sha256") == sha256_file(e.shipped_path() / "models" / "model.pt"), e.id
    copy = tmp_path / "Resources"
    shutil.copytree(resources_dir(), copy)
    with open(copy / "Models" / "hippocampus_unet" / "models" / "model.pt", "ab") as f:
        f.write(b"x")
    monkeypatch.setenv("MEDAI_RESOURCES", str(copy))
    with pytest.raises(ModelError, match="catalogue checksum"):
        resolve_model("hippocampus_unet").network()
