"""Modality-conversion GAN (pix2pix family, MONAI UNet + PatchDiscriminator): paired source -> target images."""

from ..synthesis.train import add_arguments, run  # noqa: F401  (the trainer lives with the synthesis engine)
