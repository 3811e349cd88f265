"""Check Slicer-facing source code against ../shared/slicer-api/slicer-api.json (facts read from
Slicer's own source). Used by test_slicer_api_usage.py.

What is checked, per call found with ``ast``:
- ``slicer.util.f(...)`` / ``slicer.mrmlScene.M(...)`` / ``slicer.vtkX.M(...)`` / ``slicer.app.m(...)``:
  the name exists, and the arguments bind to the recorded signature (Python functions) or fit the
  argument count of one recorded C++ overload (MRML/VTK methods);
- ``anything.Method(...)`` with a capitalised method name (the MRML/VTK naming style) on an object
  that is not an imported Python module: some recorded MRML/segmentation class (or VTK's vtkObject
  basics, or the real vtkMatrix4x4/vtkImageData/vtkCommand classes) has that method with a
  compatible argument count. Receivers are not typed statically, so this is a per-name check.
- ``slicer.X`` attributes (classes, enums such as ``slicer.mrmlScene.StartCloseEvent``) exist.
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import re
from pathlib import Path

FACTS = Path(os.environ.get("MEDAI_SLICER_API", Path(__file__).resolve().parents[4] / "shared" / "slicer-api" / "slicer-api.json"))


# Facts this repository adds (each with its source in Slicer's headers, checked on the real wheel)
# for classes the shared file does not record yet; the shared file wins where both have a class.
SUPPLEMENT = Path(__file__).with_name("slicer_api_supplement.json")


def load_facts(path=FACTS) -> dict:
    facts = json.loads(Path(path).read_text())
    extra = json.loads(SUPPLEMENT.read_text()) if SUPPLEMENT.is_file() else {}
    for section, classes in extra.items():
        if not section.startswith("_"):
            for name, spec in classes.items():
                facts.setdefault(section, {}).setdefault(name, spec)
    return facts


def _split_top(s: str) -> list:
    parts, depth, cur = [], 0, ""
    for ch in s:
        if ch in "<([{":
            depth += 1
        elif ch in ">)]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return [p.strip() for p in parts]


def cpp_arity(sig: str):
    """(required, maximum) positional arguments of one C++ declaration ``Name(args) -> T``."""
    sig = re.sub(r"^(static|virtual|signal)\s+", "", sig.strip())
    inner = sig[sig.index("(") + 1: sig.rindex(")")]
    params = [p for p in _split_top(inner) if p and p != "void"]
    return sum("=" not in p for p in params), len(params)


def python_signature(text: str) -> inspect.Signature:
    text = re.sub(r"^@\w+\s*", "", text.strip())
    text = text.split("  [")[0]
    tree = ast.parse(f"def _f{text}:\n    pass\n")
    args = tree.body[0].args  # defaults may name Slicer constants: only their presence matters
    args.defaults = [ast.Constant(None) for _ in args.defaults]
    args.kw_defaults = [None if d is None else ast.Constant(None) for d in args.kw_defaults]
    ns = {}
    exec(compile(ast.fix_missing_locations(ast.Module([ast.ImportFrom("__future__", [ast.alias("annotations")], 0),
                                                       *tree.body], [])), "<facts>", "exec"), ns)
    return inspect.signature(ns["_f"])


class Facts:
    def __init__(self, data: dict):
        self.data = data
        self.util = {k: python_signature(v) for k, v in data["slicer.util"]["functions"].items()}
        self.methods = {}  # method name -> [C++ declarations]
        for section in ("mrml_classes", "segmentation_and_logic_classes"):
            for cls, info in data[section].items():
                if isinstance(info, dict):
                    for m in info.get("methods", []):
                        for decl in m.split(" / "):
                            self._add(decl)
        for m in data["vtkMRMLScene"]["methods"]:
            self._add(m)
        for key in data["vtkObject_python_basics (VTK, general knowledge, not parsed)"]:
            self._add(key.split(" -> ")[0])
        self.scene_methods = {self._name(m): [] for m in data["vtkMRMLScene"]["methods"]}
        for m in data["vtkMRMLScene"]["methods"]:
            self.scene_methods[self._name(m)].append(m)
        self.scene_enums = {e for en in data["vtkMRMLScene"]["enums"] for e in en["members"]}
        self.classes = set(data["mrml_classes"]) | set(data["segmentation_and_logic_classes"]) | {"vtkMRMLScene"}
        self.app_text = json.dumps(data["slicer.app"])
        self.real_vtk = set()
        import vtk  # VTK classes are not in the facts: check against the real library Slicer also ships

        for cls in (vtk.vtkMatrix4x4, vtk.vtkImageData, vtk.vtkCommand):
            self.real_vtk |= {n for n in dir(cls) if n[:1].isupper()}

    @staticmethod
    def _name(decl):
        decl = re.sub(r"^(static|virtual|signal)\s+", "", decl.strip())
        return decl[: decl.index("(")].strip() if "(" in decl else decl.strip()

    def _add(self, decl):
        if "(" in decl:
            self.methods.setdefault(self._name(decl), []).append(decl)


def _dotted(node) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def _root(node):
    while isinstance(node, ast.Attribute):
        node = node.value
    if isinstance(node, ast.Call):
        return _root(node.func)
    return node.id if isinstance(node, ast.Name) else None


def check_source(source: str, facts: Facts, filename="<snippet>") -> list:
    """Problems found in ``source`` (empty list = every Slicer call is in the facts)."""
    tree = ast.parse(source, filename)
    modules = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            modules |= {(a.asname or a.name).split(".")[0] for a in n.names}
        elif isinstance(n, ast.ImportFrom) and n.module:
            modules |= {a.asname or a.name for a in n.names if a.name[:1].islower()}
    modules -= {"slicer"}
    problems = []

    def where(n):
        return f"{filename}:{n.lineno}"

    def arity_ok(decls, n):
        k = len(n.args)
        if any(isinstance(a, ast.Starred) for a in n.args) or n.keywords:
            return True
        return any(lo <= k <= hi for lo, hi in map(cpp_arity, decls))

    for n in ast.walk(tree):
        if isinstance(n, ast.Attribute) and not isinstance(getattr(n, "_parent_call", None), ast.Call):
            d = _dotted(n)
            if d.startswith("slicer.mrmlScene.") and d.count(".") == 2 and n.attr[:1].isupper():
                if n.attr not in facts.scene_methods and n.attr not in facts.scene_enums:
                    problems.append(f"{where(n)}: slicer.mrmlScene.{n.attr} is not in the facts")
            elif re.fullmatch(r"slicer\.vtk\w+", d) and n.attr not in facts.classes:
                problems.append(f"{where(n)}: class slicer.{n.attr} is not in the facts")
        if not isinstance(n, ast.Call) or not isinstance(n.func, ast.Attribute):
            continue
        d, name = _dotted(n.func), n.func.attr
        if d.startswith("slicer.util."):
            fn = d[len("slicer.util."):]
            if fn not in facts.util:
                problems.append(f"{where(n)}: slicer.util.{fn} does not exist in Slicer")
                continue
            try:
                facts.util[fn].bind(*[None] * len(n.args), **{k.arg: None for k in n.keywords if k.arg})
            except TypeError as e:
                problems.append(f"{where(n)}: slicer.util.{fn}{facts.util[fn]}: {e}")
        elif d.startswith("slicer.mrmlScene."):
            if name not in facts.scene_methods:
                problems.append(f"{where(n)}: vtkMRMLScene.{name} does not exist")
            elif not arity_ok(facts.scene_methods[name], n):
                problems.append(f"{where(n)}: vtkMRMLScene.{name} called with {len(n.args)} arguments")
        elif d.startswith("slicer.app."):
            if not re.search(rf"\b{re.escape(name)}\b", facts.app_text):
                problems.append(f"{where(n)}: slicer.app.{name} is not in the facts")
        elif name[:1].isupper() and not name.startswith("__"):
            root = _root(n.func)
            if root in modules or root in ("qt", "ctk"):
                if root == "vtk" and d.count(".") == 1:
                    import vtk

                    if not hasattr(vtk, name):
                        problems.append(f"{where(n)}: vtk.{name} does not exist")
                continue
            if root == "slicer" and d.count(".") == 1:  # slicer.vtkMRMLXNode() constructor
                if name not in facts.classes:
                    problems.append(f"{where(n)}: class slicer.{name} is not in the facts")
                continue
            decls = facts.methods.get(name)
            if decls is None:
                if name not in facts.real_vtk:
                    problems.append(f"{where(n)}: no Slicer/VTK class in the facts has a method {name}()")
            elif not arity_ok(decls, n):
                problems.append(f"{where(n)}: {name}() called with {len(n.args)} arguments; facts: {decls}")
    return problems
