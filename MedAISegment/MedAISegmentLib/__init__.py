"""Logic of the MedAISegment module, behind small interfaces (MedAISegment.py is a thin shell).

- ``models``: the catalogue's segmentation models as the GUI shows them.
- ``run``: one segmentation run (inputs -> temporary files -> ``medai segment`` process -> segmentation node).
- ``dependencies``: first-use install of torch (PyTorch extension) and the engine's pinned packages.
"""
