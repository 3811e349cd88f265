"""Classical pre-processing as first-class steps: N4 bias-field correction, denoising, intensity
normalisation, resampling and cropping to the body/brain mask (SimpleITK and MONAI).

:func:`MedAILib.tasks.preprocessing.pipeline.preprocess` runs the chosen steps on a Volume; the
``medai preprocess`` command (:mod:`.command`) and any task that offers pre-steps before its model
call it.
"""
