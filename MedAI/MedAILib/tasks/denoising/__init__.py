"""Denoising with a conditional GAN (a residual U-Net generator judged by a PatchGAN discriminator
that sees the noisy input too), trained on real images with noise of the right physics
(:mod:`.noise`: Rician for MR magnitude, low-dose Poisson counts in the projections for CT), and
compared with the classical filters of :mod:`MedAILib.tasks.preprocessing`."""
