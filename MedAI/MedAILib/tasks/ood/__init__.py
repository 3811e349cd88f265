"""Out-of-distribution check by autoencoder reconstruction error (:mod:`autoencoder`).

Pipelines call :func:`check_input` (bundle folder + input Volume or file); it returns None when the
bundle carries no OOD model, else a dict with the score and a warning message when the input is
unlike the training images.
"""

from MedAILib.tasks.ood.autoencoder import check_input, load_ood, ood_warning, score_volumes, train_ood  # noqa: F401
