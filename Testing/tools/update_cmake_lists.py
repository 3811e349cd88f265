#!/usr/bin/env python3
"""Rewrite the generated file lists in each module's CMakeLists.txt.

Other helpers keep adding files (every MedAILib/**.py must be packaged), so the lists between the
marker comments ``# BEGIN GENERATED <KIND>`` / ``# END GENERATED <KIND>`` are produced from the files
git knows (tracked, or untracked and not ignored):
- SCRIPTS: every .py under the module folder (not under Testing/);
- RESOURCES: every other file under the module folder (not CMakeLists.txt, not Testing/), which
  includes the engine's package data MedAI/MedAILib/resources/.

Usage: ``python Testing/tools/update_cmake_lists.py [--check]`` (--check: exit 1 if a list is stale).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODULES = ["MedAI", "MedAISegment", "MedAIFusion"]
MARKER = re.compile(r"(?P<indent>[ \t]*)# BEGIN GENERATED (?P<kind>[A-Z_]+)[^\n]*\n(?P<body>.*?)(?P=indent)# END GENERATED (?P=kind)",
                    re.S)


def known_files(folder: str) -> list:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", folder],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout.split("\n")
    return sorted(p for p in out if p and (REPO / p).is_file())


def lists_for(module: str) -> dict:
    scripts, resources = [], []
    for p in known_files(module):
        rel = p[len(module) + 1:]
        if rel == "CMakeLists.txt" or rel.startswith("Testing/"):
            continue
        (scripts if rel.endswith(".py") else resources).append(rel)
    lists = {"SCRIPTS": scripts, "RESOURCES": resources}
    return lists


def rewrite(text: str, lists: dict) -> str:
    def repl(m):
        kind, indent = m.group("kind"), m.group("indent")
        if kind not in lists:
            return m.group(0)
        body = "".join(f"{indent}{n}\n" for n in lists[kind])
        return f"{indent}# BEGIN GENERATED {kind} (Testing/tools/update_cmake_lists.py)\n{body}{indent}# END GENERATED {kind}"
    return MARKER.sub(repl, text)


def main(argv) -> int:
    stale = []
    for module in MODULES:
        path = REPO / module / "CMakeLists.txt"
        old = path.read_text()
        new = rewrite(old, lists_for(module))
        if new != old:
            stale.append(str(path.relative_to(REPO)))
            if "--check" not in argv:
                path.write_text(new)
    if stale:
        print(("stale: " if "--check" in argv else "updated: ") + ", ".join(stale))
    return 1 if (stale and "--check" in argv) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
