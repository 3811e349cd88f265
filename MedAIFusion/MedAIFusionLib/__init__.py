"""Logic of the MedAIFusion module (registration, fused display, multi-input models), filled by its
author: one file per concern (e.g. ``registration_logic.py``, ``fusion_logic.py``), each running
``medai register`` / ``medai fuse`` through ``MedAISlicerLib.process``."""
