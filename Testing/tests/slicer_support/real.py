"""Real Slicer for the Slicer-side tests: Slicer's Qt-free core from PyPI (slicer-core) set up by
Testing/slicer_real/harness.py as the Slicer application does, with the three MedAI module folders
on ``sys.path`` and their module objects registered (as Slicer's scripted-module loader does).

``activate()`` returns Slicer's own ``slicer`` package with a closed (empty) scene and a fresh
temporary folder; ``reset()`` closes the scene again (File > Close Scene).
"""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
MODULES = ("MedAI", "MedAISegment", "MedAIFusion")  # MedAI first: its folder holds MedAILib and MedAISlicerLib


def harness():
    if str(REPO / "Testing") not in sys.path:
        sys.path.insert(0, str(REPO / "Testing"))
    from slicer_real import harness as h

    return h


def activate():
    h = harness()
    h.install()
    import slicer

    for name in MODULES:
        if not hasattr(slicer.modules, f"{name}Instance"):
            h.load_scripted_module(REPO / name / f"{name}.py")
    h.reset()
    return slicer


def reset():
    harness().reset()
