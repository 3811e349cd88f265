"""Real-MRML test harness: MedAI's Slicer-side code on slicer-core (Slicer's Qt-free core from PyPI).

Needs ``pip install slicer-core==5.13.31053.0 vtk==9.6.2``; see harness.py and
shared/slicer-api/real-mrml.md.
"""

from .harness import install, load_scripted_module, render_slice_png, reset  # noqa: F401
