"""Put the Slicer stand-in (Testing/slicer_standin) and the module folders on sys.path."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
PATHS = [REPO / "Testing" / "slicer_standin", REPO / "MedAI", REPO / "MedAISegment", REPO / "MedAIFusion"]


def activate():
    for p in reversed(PATHS):
        if str(p) not in sys.path:
            sys.path.insert(0, str(p))
    import slicer

    assert getattr(slicer, "IS_STANDIN", False), "a real slicer module shadows the stand-in"
    slicer.reset()
    return slicer
