"""Segment surfaces: one smoothed closed mesh per segment, written as STL or OBJ in RAS or LPS.

The mask is smoothed with a Gaussian (sigma ``smoothing_mm``) and its 0.5 iso-surface extracted by
marching cubes (scikit-image) on the voxel grid, then mapped to patient coordinates with the
labelmap's IJK->RAS (LPS through :mod:`MedAILib.core.geometry`). The coordinate system is in the
file name (``<segment>.<RAS|LPS>.stl``) and in the file itself (STL header, OBJ comment).
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np

from MedAILib.core import geometry
from MedAILib.core.atomic import atomic_output
from MedAILib.core.errors import InputError


def segment_mesh(labelmap, value: int, smoothing_mm: float = 1.0, space: str = "RAS") -> tuple:
    """(vertices N x 3 in ``space`` mm, triangles M x 3) of label ``value``; outward-facing normals."""
    from scipy import ndimage
    from skimage.measure import marching_cubes

    mask = np.asarray(labelmap.array) == value
    if not mask.any():
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
    spacing_kji = np.asarray(labelmap.spacing, float)[::-1]
    field = np.pad(mask.astype(np.float32), 2)  # closed surfaces at the volume's edge
    if smoothing_mm > 0:
        field = ndimage.gaussian_filter(field, sigma=smoothing_mm / spacing_kji)
    verts_kji, faces, _, _ = marching_cubes(field, level=0.5)
    verts_ijk = verts_kji[:, ::-1] - 2.0
    m = labelmap.ijk_to_ras if space == "RAS" else geometry.ijk_to_lps_from_ijk_to_ras(labelmap.ijk_to_ras)
    verts = verts_ijk @ m[:3, :3].T + m[:3, 3]
    # Outward normals whatever the grid's handedness: a closed surface with outward-facing triangles
    # has a positive signed volume (divergence theorem); turn the triangles if it is negative.
    t = verts[faces]
    if np.einsum("ij,ij->i", t[:, 0], np.cross(t[:, 1], t[:, 2])).sum() < 0:
        faces = faces[:, ::-1]
    return verts, faces.astype(np.int64)


def _write_stl(path: Path, verts, faces, header: str) -> None:
    tri = verts[faces]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    norm = np.linalg.norm(normals, axis=1, keepdims=True)
    normals = np.divide(normals, norm, out=np.zeros_like(normals), where=norm > 0)
    records = np.zeros(len(faces), dtype=[("n", "<f4", 3), ("v", "<f4", (3, 3)), ("attr", "<u2")])
    records["n"], records["v"] = normals, tri
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        f.write(header.encode("ascii", "replace")[:80].ljust(80, b" "))
        f.write(struct.pack("<I", len(faces)))
        f.write(records.tobytes())


def _write_obj(path: Path, verts, faces, header: str) -> None:
    with atomic_output(path) as tmp, open(tmp, "w") as f:
        f.write(f"# {header}\n")
        np.savetxt(f, verts, fmt="v %.4f %.4f %.4f")
        np.savetxt(f, faces + 1, fmt="f %d %d %d")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "segment"


def write_surfaces(labelmap, folder, space: str = "LPS", fmt: str = "stl", smoothing_mm: float = 1.0,
                   overwrite: bool = False) -> list:
    """One file per segment present in ``labelmap`` into ``folder``; returns the paths written."""
    space, fmt = space.upper(), fmt.lower()
    if space not in ("RAS", "LPS") or fmt not in ("stl", "obj"):
        raise InputError(f"surfaces: unknown space {space} or format {fmt}", "use RAS or LPS, and stl or obj")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    table = labelmap.label_table()
    written = []
    for value in sorted(int(v) for v in np.unique(labelmap.array) if v != 0):
        name = table[value].name if value in table else f"label_{value}"
        path = folder / f"{_safe(name)}.{space}.{fmt}"
        if path.exists() and not overwrite:
            raise InputError(f"{path} already exists", "use --overwrite to replace it, or another --surfaces folder")
        verts, faces = segment_mesh(labelmap, value, smoothing_mm, space)
        header = f"MedAI surface '{name}' (label {value}), coordinates {space} mm"
        (_write_stl if fmt == "stl" else _write_obj)(path, verts, faces, header)
        written.append(path)
    return written
