"""Logic of the MedAI module's sections, one file per section (filled by the section's author):

- ``classify_logic.py``: "Classify" (``medai classify``; class probabilities table, saliency volume).
- ``synthesis_logic.py``: "Convert modality" (``medai synthesize``; new scalar volume).

Each runs the engine through ``MedAISlicerLib.process`` and converts nodes with ``MedAISlicerLib.nodes``.
"""
