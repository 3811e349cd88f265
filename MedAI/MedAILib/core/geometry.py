"""The one place where file-space (LPS) geometry becomes RAS and back.

ITK, DICOM and NRRD describe images in LPS; Slicer and MedAI's :class:`Volume` use RAS. Every
reader and writer goes through :func:`ijk_to_ras_from_lps` / :func:`lps_from_ijk_to_ras`; nothing
else in MedAILib flips axes.
"""

from __future__ import annotations

import numpy as np

# diag(-1, -1, 1): flips L<->R and P<->A; its own inverse.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def ijk_to_ras_from_lps(spacing, origin_lps, direction_lps) -> np.ndarray:
    """4x4 IJK->RAS matrix from ITK-style spacing, origin (LPS) and 3x3 direction (LPS, columns = axes)."""
    spacing = np.asarray(spacing, dtype=np.float64).reshape(3)
    direction = np.asarray(direction_lps, dtype=np.float64).reshape(3, 3)
    origin = np.asarray(origin_lps, dtype=np.float64).reshape(3)
    m = np.eye(4)
    m[:3, :3] = LPS_TO_RAS @ direction @ np.diag(spacing)
    m[:3, 3] = LPS_TO_RAS @ origin
    return m


def lps_from_ijk_to_ras(ijk_to_ras):
    """Inverse of :func:`ijk_to_ras_from_lps`: (spacing, origin_lps, direction_lps 3x3)."""
    m = np.asarray(ijk_to_ras, dtype=np.float64)
    spacing = np.linalg.norm(m[:3, :3], axis=0)
    if np.any(spacing <= 0):
        raise ValueError("IJK->RAS matrix has a zero-length axis")
    direction_ras = m[:3, :3] / spacing
    direction_lps = LPS_TO_RAS @ direction_ras
    origin_lps = LPS_TO_RAS @ m[:3, 3]
    return spacing, origin_lps, direction_lps


def spacing_of(ijk_to_ras) -> np.ndarray:
    """Voxel size along I, J, K in mm."""
    return np.linalg.norm(np.asarray(ijk_to_ras, dtype=np.float64)[:3, :3], axis=0)


def direction_of(ijk_to_ras) -> np.ndarray:
    """3x3 RAS direction cosines (columns = I, J, K axes)."""
    m = np.asarray(ijk_to_ras, dtype=np.float64)
    return m[:3, :3] / spacing_of(m)


def axis_codes(ijk_to_ras) -> str:
    """Closest anatomical axis codes of I, J, K in RAS terms, e.g. ``"RAS"``, ``"LPS"``, ``"LAS"``.

    Each letter is the direction in which the index *increases* (nibabel's convention).
    """
    d = direction_of(ijk_to_ras)
    pos, neg = "RAS", "LPI"
    codes = []
    for col in range(3):
        axis = int(np.argmax(np.abs(d[:, col])))
        codes.append(pos[axis] if d[axis, col] > 0 else neg[axis])
    return "".join(codes)


def is_oblique(ijk_to_ras, tol: float = 1e-4) -> bool:
    """True when the image axes are not aligned with the patient axes."""
    d = np.abs(direction_of(ijk_to_ras))
    return bool(np.any((d > tol) & (d < 1 - tol)))


def ijk_to_ras_points(ijk_to_ras, ijk) -> np.ndarray:
    """RAS positions (N, 3) of voxel indices given as (N, 3) in I, J, K order."""
    ijk = np.atleast_2d(np.asarray(ijk, dtype=np.float64))
    m = np.asarray(ijk_to_ras, dtype=np.float64)
    return ijk @ m[:3, :3].T + m[:3, 3]


def ras_to_ijk_points(ijk_to_ras, ras) -> np.ndarray:
    """Continuous voxel indices (N, 3) in I, J, K order of RAS positions (N, 3)."""
    ras = np.atleast_2d(np.asarray(ras, dtype=np.float64))
    inv = np.linalg.inv(np.asarray(ijk_to_ras, dtype=np.float64))
    return ras @ inv[:3, :3].T + inv[:3, 3]


def ijk_to_ras_from_ijk_to_lps(ijk_to_lps) -> np.ndarray:
    """4x4 IJK->RAS from a 4x4 IJK->LPS matrix (NRRD/slicerio style); the same flip as above."""
    flip = np.eye(4)
    flip[:3, :3] = LPS_TO_RAS
    return flip @ np.asarray(ijk_to_lps, dtype=np.float64)


def ijk_to_lps_from_ijk_to_ras(ijk_to_ras) -> np.ndarray:
    """4x4 IJK->LPS from IJK->RAS (the flip is its own inverse)."""
    return ijk_to_ras_from_ijk_to_lps(ijk_to_ras)
