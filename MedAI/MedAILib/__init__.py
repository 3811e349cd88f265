"""MedAILib: the MedAI engine.

Pure Python (numpy, torch, MONAI, SimpleITK). It never imports ``slicer``, ``qt`` or ``ctk``:
the Slicer modules translate MRML nodes to :class:`~MedAILib.volume.Volume` and call into it.
"""

__version__ = "0.1.0"

from .errors import MedAIError  # noqa: F401
from .volume import LabelInfo, Volume  # noqa: F401
