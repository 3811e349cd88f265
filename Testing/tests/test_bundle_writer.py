"""The one bundle writer: complete-or-absent folders, no silent replacement, loadable weights."""

import json

import pytest
import torch

from MedAILib.core.errors import OutputError
from MedAILib.models.bundle_writer import write_bundle


def _write(out, **kw):
    return write_bundle(out, {"network_def": {"_target_": "torch.nn.Identity"}}, {"version": "0.1.0"},
                        {"w": torch.ones(2)}, card="# card\n", license_text="CC0\n", **kw)


def test_layout_and_weights(tmp_path):
    out = _write(tmp_path / "b", extra_files={"docs/log.json": {"a": 1}, "configs/x.txt": "x"})
    assert json.loads((out / "configs" / "metadata.json").read_text())["version"] == "0.1.0"
    assert torch.equal(torch.load(out / "models" / "model.pt", weights_only=True)["w"], torch.ones(2))
    assert (out / "docs" / "README.md").read_text() == "# card\n" and (out / "LICENSE").read_text() == "CC0\n"
    assert json.loads((out / "docs" / "log.json").read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["b"]  # no staging folder left behind


def test_existing_folder_refused_without_overwrite(tmp_path):
    out = _write(tmp_path / "b")
    (out / "mine.txt").write_text("keep")
    with pytest.raises(OutputError, match="already exists"):
        _write(out, overwrite=False)
    assert (out / "mine.txt").read_text() == "keep"
    _write(out, overwrite=True)
    assert not (out / "mine.txt").exists() and (out / "models" / "model.pt").is_file()


def test_failure_midway_leaves_old_bundle_and_no_partial(tmp_path):
    out = _write(tmp_path / "b")
    with pytest.raises(ValueError):
        _write(out, extra_files={"../../escape.txt": "x"})
    assert (out / "models" / "model.pt").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
