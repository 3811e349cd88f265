"""Slicer-side helpers shared by the MedAI, MedAISegment and MedAIFusion modules.

- ``process``: run the ``medai`` engine in a separate process and read its JSON progress lines.
- ``nodes``: MRML nodes <-> MedAILib ``Volume`` and result files (translation only, no computation).

Installed with the MedAI module (its folder is on ``sys.path`` inside Slicer).
"""
