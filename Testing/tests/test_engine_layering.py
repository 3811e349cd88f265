"""The engine's import structure: no import cycle, and layers only import downwards.

Layers (lowest first): core -> io -> models, runtime -> tasks -> cli, server, client (each task's
``command`` module is its CLI and belongs to the cli layer). A module may import
its own layer and the ones below, never one above; lazy (function-level) imports count too, because
they hide the same dependency. Nothing in the engine imports Slicer, Qt or CTK.
"""

from __future__ import annotations

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[2] / "MedAI" / "MedAILib"
LAYER = {"core": 0, "resources": 0, "io": 1, "models": 2, "runtime": 2, "tasks": 3, "client": 4, "server": 4, "cli": 4}
# models and runtime are one layer: runtime runs what models load, and models' loader needs runtime's device.


def module_name(path: Path) -> str:
    rel = path.relative_to(ENGINE.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path):
    """(imported module, top_level) for every MedAILib import in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    top = set(id(n) for n in tree.body)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "MedAILib":
            for alias in node.names:
                yield f"{node.module}.{alias.name}", id(node) in top
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in ("MedAILib", "slicer", "qt", "ctk"):
                    yield alias.name, id(node) in top


def engine_modules() -> dict:
    return {module_name(p): p for p in ENGINE.rglob("*.py") if "__pycache__" not in p.parts}


def resolve(name: str, modules: dict) -> str:
    """The engine module an import refers to (``MedAILib.x.y.func`` -> ``MedAILib.x.y``)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name


def layer(mod: str) -> int:
    parts = mod.split(".")
    if parts[-1] == "command":
        return LAYER["cli"]
    return LAYER.get(parts[1], 0) if len(parts) > 1 else 0


def test_no_gui_imports_in_the_engine():
    bad = [(m, n) for m, p in engine_modules().items() for n, _ in imports(p) if n.split(".")[0] in ("slicer", "qt", "ctk")]
    assert bad == []


# Known upward imports still to remove (each is a lazy import of a CLI helper from task code: the
# case/argument helpers should move below cli/). Listed so that no NEW one can appear unnoticed,
# and so that removing one fails here until it is taken off this list.
KNOWN_UPWARD = {
    "MedAILib.tasks.classification.evaluate -> MedAILib.tasks.segmentation.command",
    "MedAILib.tasks.preprocessing.pipeline -> MedAILib.cli.batch",
    "MedAILib.tasks.segmentation.clinical -> MedAILib.cli.batch",
    "MedAILib.tasks.segmentation.studies -> MedAILib.cli.batch",
}


def test_layers_only_import_downwards():
    modules = engine_modules()
    bad = set()
    for mod, path in modules.items():
        for name, _ in imports(path):
            target = resolve(name, modules)
            if target and target != "MedAILib" and layer(target) > layer(mod):
                bad.add(f"{mod} -> {target}")
    assert bad - KNOWN_UPWARD == set(), "new upward imports:\n" + "\n".join(sorted(bad - KNOWN_UPWARD))
    assert KNOWN_UPWARD - bad == set(), "fixed: take these off KNOWN_UPWARD:\n" + "\n".join(sorted(KNOWN_UPWARD - bad))


def test_no_import_cycle_at_module_level():
    modules = engine_modules()
    graph = {m: set() for m in modules}
    for mod, path in modules.items():
        for name, top in imports(path):
            target = resolve(name, modules)
            if top and target and target != mod and target != "MedAILib":
                graph[mod].add(target)
    # A package imports its parents' __init__ implicitly; that is not a cycle of ours.
    state, cycles = {}, []

    def visit(m, stack):
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append(" -> ".join(stack[stack.index(n):] + [n]))
            elif n not in state:
                visit(n, stack)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
    assert cycles == []


def test_every_module_imports_in_a_fresh_interpreter():
    """Import every engine module, lowest layer first, in one fresh interpreter: a missing or broken
    import anywhere (also in modules no test happens to load) fails here."""
    import subprocess
    import sys

    names = sorted((m for m in engine_modules() if not m.endswith("__main__")), key=lambda m: (layer(m), m))
    code = ("import importlib, sys, traceback\nbad = []\nfor n in sys.argv[1:]:\n"
            "    try:\n        importlib.import_module(n)\n"
            "    except Exception as e:\n        bad.append(f'{n}: {type(e).__name__}: {e}')\n"
            "print('\\n'.join(bad))\nsys.exit(1 if bad else 0)\n")
    r = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
