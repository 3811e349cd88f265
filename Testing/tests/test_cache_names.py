"""Model ids, pack names and output names (issue 14, MedAILib.core.names): one check before
anything touches the disk, and deletion only ever inside the model cache, links resolved.
Through the CLI (`...zip`, `--id ..`, `--id /abs/dir`, a linked model folder): the "names" scenarios
of Testing/badinputs/cli_scenarios.py."""

import os

import pytest

from bundle_factory import make_bundle, zip_bundle
from MedAILib.core.errors import InputError, ModelError
from MedAILib.core.names import check_name, name_problem
from MedAILib.models import cache, download
from MedAILib.models.catalogue import load_catalogue


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    h = tmp_path / "home"
    monkeypatch.setenv("MEDAI_HOME", str(h))
    (h / "models" / "keep").mkdir(parents=True)
    (h / "models" / "keep" / "f.txt").write_text("keep")
    (h / "notes.txt").write_text("user file")
    return h


def _intact(home):
    return (home / "notes.txt").read_text() == "user file" and (home / "models" / "keep" / "f.txt").exists()


@pytest.mark.parametrize("name", ["", " ", "..", ".", "/abs/dir", "a/b", "a\\b", "C:evil", "tab\there", "nul\0",
                                  " lead", "trail ", ".hidden", "x" * 256])
def test_names_that_are_not_one_plain_component_are_refused(name):
    assert name_problem(name)
    with pytest.raises(InputError, match="is not allowed"):
        check_name(name, "output name")


@pytest.mark.parametrize("name", ["spleen_ct_segmentation", "model-1.2", "Ünïcode", "a" * 255, "x.y.z"])
def test_plain_names_pass(name):
    assert check_name(name) == name


@pytest.mark.parametrize("model_id", ["..", "", "/tmp", "keep/..", "."])
def test_bundle_dir_and_remove_refuse_ids_that_leave_the_cache(model_id, home):
    with pytest.raises(ModelError, match="is not allowed"):
        cache.bundle_dir(model_id)
    with pytest.raises(ModelError):
        cache.remove_model(model_id)
    assert _intact(home)


def test_removal_only_inside_the_cache_links_resolved(home, tmp_path):
    victim = tmp_path / "victim"
    (victim / "sub").mkdir(parents=True)
    (victim / "sub" / "thesis.txt").write_text("work")
    os.symlink(victim, home / "models" / "linked")
    os.symlink(victim / "sub", home / "models" / "keep" / "inner")
    with pytest.raises(ModelError, match="not inside the model cache"):
        cache.remove_tree_in_cache(home / "models" / "linked" / "sub")  # resolves outside
    with pytest.raises(ModelError, match="not inside the model cache"):
        cache.remove_tree_in_cache(home / "models")  # the cache itself
    with pytest.raises(ModelError, match="not inside the model cache"):
        cache.remove_tree_in_cache(home / "models" / "..")
    cache.remove_tree_in_cache(home / "models" / "linked")  # the link goes, not what it points at
    assert not (home / "models" / "linked").exists() and (victim / "sub" / "thesis.txt").exists()
    cache.remove_tree_in_cache(home / "models" / "keep")  # a real folder with a link inside: the link only
    assert not (home / "models" / "keep").exists() and (victim / "sub" / "thesis.txt").exists()


def test_remove_model_deletes_exact_archive_names_only(home):
    dl = home / "downloads"
    dl.mkdir()
    for name in ("a.zip", "a.zip.part", "a.b.zip", "a_other.zip"):
        (dl / name).write_text("x")
    removed = cache.remove_model("a")
    assert sorted(os.path.basename(p) for p in removed) == ["a.zip", "a.zip.part"]
    assert (dl / "a.b.zip").exists() and (dl / "a_other.zip").exists()


@pytest.mark.parametrize("pack_name", ["...zip", ".zip", "...tar.gz", "..tgz"])
def test_pack_whose_name_gives_no_model_id_is_refused_before_unpacking(pack_name, home, tmp_path):
    pack = zip_bundle(make_bundle(tmp_path / "b"), tmp_path / "p.zip")
    pack = pack.rename(tmp_path / pack_name)
    with pytest.raises(ModelError, match="its file name gives the model id") as e:
        download.import_pack(pack, load_catalogue())
    assert "rename the pack" in e.value.hint and _intact(home)
    assert sorted(p.name for p in (home / "models").iterdir()) == ["keep"]


def test_install_archive_refuses_an_absolute_id(home, tmp_path):
    target = tmp_path / "abs"
    target.mkdir()
    (target / "mine.txt").write_text("x")
    pack = zip_bundle(make_bundle(tmp_path / "b"), tmp_path / "p.zip")
    with pytest.raises(ModelError, match="is not allowed"):
        download.install_archive(pack, str(target))
    assert (target / "mine.txt").exists() and _intact(home)


def test_models_add_api_refuses_parent_ids(home, tmp_path):
    """Not only the CLI: add_bundle itself (the Slicer module calls it) never writes outside the cache."""
    from MedAILib.models import modelzoo

    b = make_bundle(tmp_path / "B")
    for model_id in ("..", str(tmp_path / "abs")):
        with pytest.raises(ModelError, match="is not allowed"):
            modelzoo.add_bundle(str(b), assume_yes=True, model_id=model_id, say=lambda t: None)
    with pytest.raises(ModelError, match="is not allowed"):  # the folder's own name '..' as the id
        modelzoo.add_bundle(f"{b}/configs/..", assume_yes=True, say=lambda t: None)
    assert _intact(home) and not (tmp_path / "abs").exists()
