"""Real-MRML test harness: MedAI's Slicer-side code on slicer-core (Slicer's Qt-free core from PyPI).

Needs slicer-core and the vtk it pins (pyproject.toml's ``test`` extra; ``make venv`` installs them);
see harness.py and shared/slicer-api/real-mrml.md.
"""

from .harness import install, load_scripted_module, render_slice_png, reset  # noqa: F401
