"""The catalogue schema validator is built once per schema file version (docs/performance.md, round 2):
same verdicts and messages as ``jsonschema.validate``, the schema itself checked here instead of
on every run, and a changed schema file is picked up; a catalogue text already found valid against
the same schema text is not validated again (in-process set, marker file under MEDAI_HOME)."""

import json
import os

import jsonschema
import pytest

from MedAILib.models import catalogue as cat_mod
from MedAILib.core.errors import ModelError


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDAI_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(cat_mod, "_VALID_DIGESTS", set())
    return tmp_path / "home"


def test_catalogue_schema_is_valid():
    schema = json.loads(cat_mod.schema_path().read_text())
    jsonschema.validators.validator_for(schema).check_schema(schema)


def _shipped_doc():
    return json.loads((cat_mod.resources_dir() / "catalogue.json").read_text())


def test_same_verdict_and_message_as_jsonschema_validate(tmp_path):
    schema = json.loads(cat_mod.schema_path().read_text())
    good = _shipped_doc()
    path = tmp_path / "catalogue.json"
    path.write_text(json.dumps(good))
    assert [e.id for e in cat_mod.read_catalogue_file(path, "user")] == [m["id"] for m in good["models"]]
    bad = json.loads(json.dumps(good))
    bad["models"][0]["task"] = "dancing"
    del bad["models"][-1]["labels"]
    path.write_text(json.dumps(bad))
    with pytest.raises(jsonschema.ValidationError) as ref:
        jsonschema.validate(bad, schema)
    with pytest.raises(ModelError) as ours:
        cat_mod.read_catalogue_file(path, "user")
    assert ref.value.message in str(ours.value)
    where = "/".join(str(p) for p in ref.value.absolute_path)
    assert f"invalid at {where}" in str(ours.value)


def test_validator_is_cached_and_rebuilt_when_the_schema_changes(tmp_path):
    schema_file = tmp_path / "catalogue.schema.json"
    schema_file.write_text(json.dumps({"type": "object", "required": ["version"]}))
    v1 = cat_mod.catalogue_validator(schema_file)
    assert cat_mod.catalogue_validator(schema_file) is v1
    assert not v1.is_valid({})
    schema_file.write_text(json.dumps({"type": "object"}))
    os.utime(schema_file, ns=(1, 1))  # a different mtime even on coarse clocks
    v2 = cat_mod.catalogue_validator(schema_file)
    assert v2 is not v1 and v2.is_valid({})


def test_valid_text_is_validated_once_invalid_text_every_time(tmp_path, monkeypatch):
    good = _shipped_doc()
    path = tmp_path / "catalogue.json"
    path.write_text(json.dumps(good))
    calls = []
    real = cat_mod.catalogue_validator

    def counting(*a):
        calls.append(1)
        return real(*a)

    monkeypatch.setattr(cat_mod, "catalogue_validator", counting)
    cat_mod.read_catalogue_file(path, "user")
    assert len(calls) == 1
    cat_mod.read_catalogue_file(path, "user")
    monkeypatch.setattr(cat_mod, "_VALID_DIGESTS", set())  # a new process: the marker file answers
    cat_mod.read_catalogue_file(path, "user")
    assert len(calls) == 1
    bad = json.loads(json.dumps(good))
    bad["models"][0]["task"] = "dancing"
    path.write_text(json.dumps(bad))  # an edit changes the digest: validated again, and refused
    for _ in range(2):
        with pytest.raises(ModelError, match="invalid"):
            cat_mod.read_catalogue_file(path, "user")
    assert len(calls) == 3


def test_without_jsonschema_the_list_still_loads_and_is_validated_later(tmp_path, monkeypatch):
    """Slicer's first use, before the engine packages are installed: no jsonschema. The shipped
    catalogue still lists its models (shape checked), a malformed one is still refused, and the
    text is not remembered as valid (fully validated once jsonschema is there)."""
    import builtins
    import sys

    real_import = builtins.__import__

    def no_jsonschema(name, *a, **k):
        if name == "jsonschema" or name.startswith("jsonschema."):
            raise ImportError("No module named 'jsonschema'")
        return real_import(name, *a, **k)

    monkeypatch.delitem(sys.modules, "jsonschema", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_jsonschema)
    entries = cat_mod.read_catalogue_file(cat_mod.resources_dir() / "catalogue.json", "shipped")
    assert len(entries) == len(_shipped_doc()["models"]) > 0
    assert not cat_mod._VALID_DIGESTS
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"models": [{"name": "no id"}]}))
    with pytest.raises(ModelError, match="needs a 'models' list"):
        cat_mod.read_catalogue_file(bad, "user")
