"""Geometry of MRML nodes as real Slicer reports it (for the Slicer-side tests).

Results are compared by world position (RAS): Slicer's reader and MedAILib's reader agree on every
voxel's RAS position, but not always index for index (a left-handed NIfTI is read by Slicer with
its K axis flipped; ../shared/slicer-api/real-mrml.md).
"""

import numpy as np


def ijk_to_ras(node) -> np.ndarray:
    import vtk

    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def reference_geometry(segmentationNode):
    """(shape KJI, IJK->RAS) of the segmentation's reference image geometry (what the Segment
    Editor edits on), read back through Slicer's own converter."""
    import slicer
    import vtk

    name = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    text = segmentationNode.GetSegmentation().GetConversionParameter(name)
    image = slicer.vtkOrientedImageData()
    assert slicer.vtkSegmentationConverter.DeserializeImageGeometry(text, image), text
    m = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(m)
    e = image.GetExtent()
    shape = (e[5] - e[4] + 1, e[3] - e[2] + 1, e[1] - e[0] + 1)
    return shape, np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def voxel_ras(node, kji) -> np.ndarray:
    """RAS positions (N, 3) of voxel indices ``kji`` (N, 3) of a volume node."""
    kji = np.asarray(kji, float).reshape(-1, 3)
    ijk1 = np.c_[kji[:, ::-1], np.ones(len(kji))]
    return (ijk_to_ras(node) @ ijk1.T).T[:, :3]


def dice(a, b) -> float:
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    return 2.0 * (a & b).sum() / max(1, a.sum() + b.sum())


def corners_ras(node) -> np.ndarray:
    """World positions of the 8 corner voxels of a volume node, sorted (so the same world grid gives
    the same array whichever way a reader ordered its axes)."""
    import slicer

    shape = slicer.util.arrayFromVolume(node).shape
    kji = np.array([[k, j, i] for k in (0, shape[0] - 1) for j in (0, shape[1] - 1) for i in (0, shape[2] - 1)])
    return np.array(sorted(map(tuple, np.round(voxel_ras(node, kji), 3))))


def same_world_grid(a, b, atol=1e-3) -> bool:
    """Two volume nodes have their voxels at the same world positions (same shape as a set of axes
    lengths, same corner positions): true also when one reader flipped an axis (left-handed files)."""
    import slicer

    sa, sb = slicer.util.arrayFromVolume(a).shape, slicer.util.arrayFromVolume(b).shape
    return sorted(sa) == sorted(sb) and np.allclose(corners_ras(a), corners_ras(b), atol=atol)
