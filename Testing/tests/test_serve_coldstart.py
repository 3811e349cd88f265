"""Start-up of the one-shot `medai`: only the called subcommand's module is imported, and the light
commands import none of the heavy libraries (what they import is checked, not how long it takes:
figures are in Testing/Benchmarks/bench_warm_engine.py and docs/performance.md)."""

import json
import subprocess
import sys

import pytest

from serve_support import REPO, engine_env

PROBE = ("import contextlib, io, json, sys\n"
         "from MedAILib.cli import main\n"
         "with contextlib.redirect_stdout(io.StringIO()):\n"
         "    code = main(sys.argv[1:])\n"
         "print(json.dumps({'code': code, 'modules': sorted(sys.modules)}))\n")


def _modules(args, env):
    p = subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], env=env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    return out["code"], set(out["modules"])


HEAVY = {"torch", "monai", "ignite", "scipy", "SimpleITK", "slicerio", "pydicom", "highdicom", "nibabel",
         "jsonschema", "fastapi", "uvicorn"}


def test_models_list_imports_no_heavy_library_and_no_other_command(tmp_path):
    env = engine_env(tmp_path / "home")
    _modules(["models", "list"], env)  # the first run validates the catalogue once (then remembered)
    code, modules = _modules(["models", "list"], env)
    assert code == 0
    assert not {m.split(".")[0] for m in modules} & HEAVY, sorted({m.split(".")[0] for m in modules} & HEAVY)
    assert "numpy" not in modules
    others = [m for m in modules if m.endswith(".command") or m in ("MedAILib.cli.info", "MedAILib.cli.serve")]
    assert others == [], others


def test_info_reads_a_nifti_with_numpy_and_simpleitk_only(tmp_path, data_dir):
    env = engine_env(tmp_path / "home")
    code, modules = _modules(["info", data_dir / "msd-hippocampus" / "imagesTr" / "hippocampus_001.nii.gz"], env)
    assert code == 0
    tops = {m.split(".")[0] for m in modules}
    assert not tops & {"torch", "monai", "ignite", "scipy", "slicerio", "pydicom", "highdicom", "nibabel", "jsonschema",
                       "fastapi"}, tops & HEAVY
    assert "SimpleITK" in tops  # it reads the image


def test_every_subcommand_is_found_in_its_own_module():
    """The lazy parser reads a command's module from its source; it must agree with the full parser."""
    import argparse

    from MedAILib import cli

    full = cli.build_parser()
    names = next(a for a in full._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name in names:
        module = cli._module_of(name)
        assert module is not None, f"no single module registers {name!r}"
        one = cli.build_parser(name)
        choices = next(a for a in one._actions if isinstance(a, argparse._SubParsersAction)).choices
        assert name in choices and len(choices) <= 3, (name, list(choices))  # that module's own command(s)
    assert cli._module_of("no-such-command") is None


@pytest.mark.parametrize("argv", [["--help"], ["segment", "--help"], ["nonsense"]])
def test_help_and_unknown_commands_still_work(argv, tmp_path):
    p = subprocess.run([sys.executable, "-m", "MedAILib.cli", *argv], env=engine_env(tmp_path / "h"),
                       capture_output=True, text=True, timeout=120, cwd=REPO)
    if argv == ["nonsense"]:
        assert p.returncode == 2 and "invalid choice" in p.stderr and "segment" in p.stderr
    else:
        assert p.returncode == 0 and "usage: medai" in p.stdout
