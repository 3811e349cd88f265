"""MedAILib: the MedAI engine.

Pure Python (numpy, torch, MONAI, SimpleITK). It never imports ``slicer``, ``qt`` or ``ctk``:
the Slicer modules translate MRML nodes to :class:`~MedAILib.core.volume.Volume` and call into it.
"""

__version__ = "0.1.0"

from MedAILib.core.errors import MedAIError  # noqa: F401
from MedAILib.core.volume import LabelInfo, Volume  # noqa: F401
