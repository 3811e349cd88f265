"""Generator and discriminator of the denoising GAN (MONAI networks).

Generator: a residual U-Net, ``out = x + BasicUNet(x)`` (MONAI's ``BasicUNet``, 2D; it learns the
noise to remove). Its final 1x1 convolution starts at zero, so training starts from the identity
(the noisy image is a good first guess) instead of spending its first steps unlearning a random
residual. (MONAI's ``UNet`` was tried first: its top layer squeezes the output through one
instance-normalised channel, which loses the residual's scale; in a 6-minute run it barely moved
from the identity.) Discriminator: MONAI's ``PatchDiscriminator`` (pix2pix PatchGAN) on the pair
(noisy input, candidate clean image), so it judges whether the texture fits the input, not only
whether it looks clean (a conditional GAN).
"""

from __future__ import annotations

import torch
from monai.networks.nets import BasicUNet

FEATURES = (16, 16, 32, 64, 128, 16)


class ResidualDenoiser(BasicUNet):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        torch.nn.init.zeros_(self.final_conv.conv.weight if hasattr(self.final_conv, "conv") else self.final_conv.weight)
        bias = getattr(getattr(self.final_conv, "conv", self.final_conv), "bias", None)
        if bias is not None:
            torch.nn.init.zeros_(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + super().forward(x)


def generator_def(features=FEATURES) -> dict:
    return {"_target_": "MedAILib.tasks.denoising.networks.ResidualDenoiser", "spatial_dims": 2, "in_channels": 1,
            "out_channels": 1, "features": list(features), "norm": ["instance", {"affine": True}]}


def discriminator():
    from monai.networks.nets import PatchDiscriminator

    return PatchDiscriminator(spatial_dims=2, num_layers_d=3, channels=32, in_channels=2, out_channels=1,
                              norm="INSTANCE")
