"""Noise with the physics of the modality, added to real images.

- MR magnitude images are the modulus of a complex signal with Gaussian noise in each channel, so
  their noise is Rician: ``|x + n1 + i n2|``, ``n1, n2 ~ N(0, sigma)`` (Gudbjartsson & Patz 1995). It
  biases dark regions upwards, which a Gaussian model misses.
- Low-dose CT: photon counts in the projections are Poisson. The slice (HU) becomes attenuation
  (mu = mu_water (1 + HU/1000)), is projected (``skimage.transform.radon``), counts
  ``N ~ Poisson(I0 exp(-p))`` are drawn at the reduced dose ``I0``, and the noise this adds to the
  line integrals is reconstructed with filtered back-projection (``iradon``, ramp filter) and added
  to the original image (noise insertion: the original's resolution is kept, only the extra
  low-dose noise is added; e.g. Yu et al., Med. Phys. 39(5), 2012).
"""

from __future__ import annotations

import numpy as np

MU_WATER_PER_MM = 0.0192  # linear attenuation of water at ~70 keV (1/mm)


def rician(magnitude: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    m = np.asarray(magnitude, np.float64)
    return np.hypot(m + rng.normal(0.0, sigma, m.shape), rng.normal(0.0, sigma, m.shape)).astype(np.float32)


def low_dose_ct_slice(hu: np.ndarray, pixel_mm: float, photons: float, rng: np.random.Generator,
                      n_angles: int = 360) -> np.ndarray:
    """One axial slice (HU) with the extra noise of a scan with ``photons`` incident photons per ray."""
    from skimage.transform import iradon, radon

    hu = np.asarray(hu, np.float64)
    size = max(hu.shape)
    pad = [((size - s) // 2, size - s - (size - s) // 2) for s in hu.shape]
    mu = np.clip(MU_WATER_PER_MM * (1.0 + np.pad(hu, pad, constant_values=-1000.0) / 1000.0), 0, None)
    theta = np.linspace(0.0, 180.0, n_angles, endpoint=False)
    p = radon(mu, theta=theta, circle=False) * pixel_mm  # line integrals (dimensionless)
    counts = rng.poisson(photons * np.exp(-p))
    p_noisy = -np.log(np.maximum(counts, 1) / photons)
    noise_mu = iradon((p_noisy - p) / pixel_mm, theta=theta, filter_name="ramp", circle=False,
                      output_size=size)
    noise_hu = 1000.0 * noise_mu / MU_WATER_PER_MM
    sl = tuple(slice(a, a + s) for (a, _), s in zip(pad, hu.shape))
    return (hu + noise_hu[sl]).astype(np.float32)
