"""MedAILib: the MedAI engine.

Pure Python (numpy, torch, MONAI, SimpleITK). It never imports ``slicer``, ``qt`` or ``ctk``:
the Slicer modules translate MRML nodes to :class:`~MedAILib.core.volume.Volume` and call into it.
"""

__version__ = "0.1.0"

# Loaded on first use (``MedAILib.Volume``): importing the package must not import numpy, so that
# `medai models list` and the Slicer side's light imports start fast.
_LAZY = {"MedAIError": "MedAILib.core.errors", "LabelInfo": "MedAILib.core.volume", "Volume": "MedAILib.core.volume"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
