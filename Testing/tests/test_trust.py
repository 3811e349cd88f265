"""Trust (issue 14): the hash covers everything a bundle can execute or import (the whole folder but
its weights), compiled Python and links out of the folder are refused, and a damaged trust record
file means "untrusted" with a message naming it, never a crash.

The same through `medai segment`/`medai models trust` (planted .pyc that really runs, edited root
module, damaged trusted.json ...): the "trust" scenarios of Testing/badinputs/cli_scenarios.py."""

import json
import os
import py_compile
import sys

import pytest

from bundle_factory import make_bundle
from MedAILib.core.errors import ModelError
from MedAILib.models import trust
from MedAILib.models.bundle import load_bundle


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDAI_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def bundle(tmp_path):
    b = make_bundle(tmp_path / "b", with_scripts=True, roi_size=(16, 16, 16))
    (b / "docs").mkdir()
    (b / "docs" / "README.md").write_text("how to use\n")
    return b


@pytest.mark.parametrize("change", ["root_py", "new_root_py", "docs", "metadata", "scripts", "so_file", "subfolder"])
def test_any_non_weight_file_change_makes_it_untrusted(bundle, change):
    trust.trust(bundle)
    assert trust.trust_status(bundle)[0]
    target = {"root_py": bundle / "helpers.py", "new_root_py": bundle / "monai.py", "docs": bundle / "docs" / "README.md",
              "metadata": bundle / "configs" / "metadata.json", "scripts": bundle / "scripts" / "net.py",
              "so_file": bundle / "fast.cpython-311-x86_64-linux-gnu.so", "subfolder": bundle / "lib" / "x.py"}[change]
    if change == "root_py":  # exists at trust time, edited afterwards
        target.write_text("A = 1\n")
        trust.trust(bundle)
        assert trust.trust_status(bundle)[0]
    target.parent.mkdir(exist_ok=True)
    target.write_text((target.read_text() if target.exists() else "") + "\n# changed\n")
    ok, why = trust.trust_status(bundle)
    assert not ok and "changed since it was trusted" in why
    with pytest.raises(ModelError, match="changed since it was trusted"):
        load_bundle(bundle)


def test_weights_and_cache_marker_are_not_hashed(bundle):
    """Weights load with weights_only=True (no code) and are checksummed on their own; the hash
    leaving them out keeps trust checks fast for large Model Zoo weights."""
    trust.trust(bundle)
    (bundle / "models" / "model.pt").write_bytes((bundle / "models" / "model.pt").read_bytes() + b"\0")
    (bundle / "models" / "extra.ts").write_bytes(b"torchscript")
    (bundle / trust.CACHE_MARKER).write_text("{}")
    assert trust.trust_status(bundle)[0]


@pytest.mark.parametrize("where", ["scripts/__pycache__/net.cpython-311.pyc", "evil.pyc", "configs/x.pyo",
                                   "docs/__pycache__/a.pyc"])
def test_compiled_python_is_never_trusted(bundle, where):
    trust.trust(bundle)
    target = bundle / where
    target.parent.mkdir(parents=True, exist_ok=True)
    py_compile.compile(str(bundle / "scripts" / "net.py"), cfile=str(target))
    ok, why = trust.trust_status(bundle)
    assert not ok and "compiled Python" in why
    with pytest.raises(ModelError, match="compiled Python") as e:
        load_bundle(bundle)
    assert "delete the compiled files" in e.value.hint
    with pytest.raises(ModelError, match="refusing to trust"):  # and it cannot be trusted as it is
        trust.trust(bundle)


def test_links_leading_out_of_the_bundle_are_refused(bundle, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "mod.py").write_text("X = 1\n")
    os.symlink(outside, bundle / "scripts" / "ext")
    with pytest.raises(ModelError, match="leads out of the bundle"):
        trust.trust(bundle)
    (bundle / "scripts" / "ext").unlink()
    os.symlink(outside / "mod.py", bundle / "scripts" / "mod.py")
    with pytest.raises(ModelError, match="leads out of the bundle"):
        trust.trust(bundle)
    (bundle / "scripts" / "mod.py").unlink()
    os.symlink(bundle / "scripts" / "net.py", bundle / "scripts" / "alias.py")  # inside: fine, hashed
    assert trust.trust(bundle)


def test_running_a_trusted_bundle_writes_no_bytecode_into_it(bundle):
    """The bundle's scripts are imported to build the network; Python must not leave a __pycache__
    behind (it would make the bundle untrusted on the next run)."""
    trust.trust(bundle)
    saved = sys.dont_write_bytecode
    try:
        sys.dont_write_bytecode = False
        net = load_bundle(bundle).network
    finally:
        sys.dont_write_bytecode = saved
    assert type(net).__name__ == "UNet"
    assert not any(p.name == "__pycache__" for p in bundle.rglob("*"))
    assert trust.trust_status(bundle)[0]


@pytest.mark.parametrize("content,why", [
    (b"[]", "JSON list"), (b'{"bundles": []}', '"bundles" is a JSON list'), (b"", "not valid JSON"),
    (b"\xff\xfe\x00garbage\x81", "not text"), (b"{not json", "not valid JSON"), (b"42", "JSON number")])
def test_damaged_trust_record_file_means_untrusted_with_a_message(bundle, home, content, why):
    trust.trust(bundle)
    store = home / "trusted.json"
    store.write_bytes(content)
    ok, reason = trust.trust_status(bundle)
    assert not ok and str(store) in reason and "damaged" in reason and why in reason
    with pytest.raises(ModelError, match="is damaged"):
        load_bundle(bundle)


def test_trust_store_folder_and_bad_record(bundle, home):
    trust.trust(bundle)
    store = home / "trusted.json"
    doc = json.loads(store.read_text())
    doc["bundles"][str(bundle.resolve())] = ["not", "a", "record"]
    store.write_text(json.dumps(doc))
    ok, reason = trust.trust_status(bundle)
    assert not ok and "record" in reason and "damaged" in reason
    store.unlink()
    store.mkdir()
    ok, reason = trust.trust_status(bundle)
    assert not ok and "is a folder" in reason


def test_trusting_again_sets_the_damaged_file_aside(bundle, home):
    store = home / "trusted.json"
    home.mkdir(parents=True, exist_ok=True)
    store.write_text("[]")
    trust.trust(bundle)
    assert trust.trust_status(bundle)[0]
    aside = list(home.glob("trusted.json.damaged-*"))
    assert len(aside) == 1 and aside[0].read_text() == "[]" and trust.last_set_aside == aside[0]


def test_records_from_the_older_configs_only_hash_must_be_trusted_again(bundle, home):
    home.mkdir(parents=True, exist_ok=True)
    (home / "trusted.json").write_text(json.dumps(
        {"bundles": {str(bundle.resolve()): {"configs_sha256": "0" * 64, "reason": "old"}}}))
    ok, why = trust.trust_status(bundle)
    assert not ok and "older MedAI" in why


def test_cli_trust_reports_the_set_aside_file(bundle, home, capsys):
    from MedAILib.cli import main

    home.mkdir(parents=True, exist_ok=True)
    (home / "trusted.json").write_bytes(os.urandom(64) + b"\xff")
    assert main(["models", "trust", str(bundle)]) == 0
    err = capsys.readouterr().err
    assert "damaged trust record file was set aside" in err


def test_cached_catalogue_model_with_changed_files_is_rebuilt_from_its_verified_archive(tmp_path, home):
    """A downloaded catalogue model whose cached files changed (or whose trust record predates the
    whole-bundle hash) is never run as it is: ensure_model re-extracts it from the archive whose
    checksum the catalogue publishes, offline."""
    import hashlib

    from bundle_factory import zip_bundle
    from MedAILib.models import download
    from MedAILib.models.catalogue import load_catalogue

    z = zip_bundle(make_bundle(tmp_path / "src"), tmp_path / "zoo_model.zip", top="zoo_model")
    shipped = load_catalogue().get("hippocampus_unet").raw
    entry = dict(shipped, id="zoo_model", source={"url": "https://models.invalid/zoo_model.zip", "format": "zip"},
                 sha256=hashlib.sha256(z.read_bytes()).hexdigest(), size_bytes=z.stat().st_size)
    home.mkdir(parents=True, exist_ok=True)
    (home / "catalogue.json").write_text(json.dumps({"version": 1, "models": [entry]}))
    entry = load_catalogue().get("zoo_model")
    download.archive_path(entry).parent.mkdir(parents=True, exist_ok=True)
    download.archive_path(entry).write_bytes(z.read_bytes())
    folder = download.ensure_model(entry, allow_download=False)
    assert trust.trust_status(folder)[0]
    (folder / "sitecustom.py").write_text("import os\n")  # planted next to the configs
    assert not trust.trust_status(folder)[0]
    assert download.ensure_model(entry, allow_download=False) == folder
    assert not (folder / "sitecustom.py").exists() and trust.trust_status(folder)[0]
