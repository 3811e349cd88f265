"""MRML nodes <-> MedAILib types and files. Translation only: no numerical work happens here.

Every Slicer call used here is listed in ../shared/slicer-api/slicer-api.json (checked by
Testing/tests/test_slicer_api_usage.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import slicer
import vtk

from MedAILib.core.volume import Volume


def volume_from_node(volumeNode) -> Volume:
    """A Volume holding a *copy* of the node's voxels (arrayFromVolume is a view: never hand it on)
    and its IJK->RAS matrix. The node's parent transform is not applied (see ``check_not_transformed``)."""
    array = np.array(slicer.util.arrayFromVolume(volumeNode), copy=True)
    m = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(m)  # fills m
    return Volume(array, slicer.util.arrayFromVTKMatrix(m), metadata={"name": volumeNode.GetName()})


def check_not_transformed(volumeNode) -> None:
    """Models run on the voxel grid; a volume under a (non-hardened) transform would give results
    placed differently from what the user sees, so ask for the transform to be hardened first."""
    if volumeNode.GetParentTransformNode() is not None:
        raise ValueError(f"'{volumeNode.GetName()}' is under a transform. Harden the transform "
                         "(Data module, right-click > Harden transform) and try again.")


def write_input_volume(volumeNode, folder, stem: str) -> Path:
    """Write the node to ``folder/stem.nrrd`` (uncompressed) for the engine's reader."""
    return write_volume(volume_from_node(volumeNode), folder, stem)


def write_volume(volume: Volume, folder, stem: str) -> Path:
    """Write ``volume`` to ``folder/stem.nrrd``, uncompressed: the file lives only until the run ends,
    and gzip would take seconds on a CT-sized volume (docs/performance.md). Safe on a worker thread:
    no MRML, and the voxels are written without holding Python's GIL for long."""
    from MedAILib.io.images import write_raw_nrrd

    return write_raw_nrrd(volume, Path(folder) / f"{stem}.nrrd")


def volume_view_from_node(volumeNode) -> Volume:
    """A Volume whose array is a *view* of the node's voxels (no copy) and its IJK->RAS matrix.

    For handing the voxels to a worker thread that writes them while the caller returns at once:
    the view keeps the underlying vtkDataArray alive even if the node gets new image data, and
    MedAI itself never edits an input node. Only an in-place edit of the same voxels during the
    write (tens of ms for a CT) could be seen half-done; copying on the main thread instead would
    cost that same time there (30-60 ms for 512x512x300 int16, measured)."""
    array = slicer.util.arrayFromVolume(volumeNode)
    m = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(m)  # fills m
    return Volume(array, slicer.util.arrayFromVTKMatrix(m), metadata={"name": volumeNode.GetName()})


def load_segmentation_file(path, name: str, referenceVolumeNode, into=None, replace=False):
    """Load a segmentation file written by the engine with Slicer's own reader
    (``slicer.util.loadSegmentation``): segment names, colours, label values and terminology are
    the ones the engine wrote (it applies the catalogue's label table once, in the engine).

    ``into`` None: the loaded node is the result, named ``name``. Otherwise its segments move into
    ``into`` (whose segments are removed first when ``replace``) and the loaded node is removed.
    Either way the segmentation's reference geometry is ``referenceVolumeNode`` when given (the
    engine writes results on that volume's grid), so the Segment Editor edits on its voxels.
    Returns the node.
    """
    loaded = slicer.util.loadSegmentation(str(path), {"name": name})
    try:
        target = loaded if into is None else into
        if into is not None:
            segmentation = into.GetSegmentation()
            if replace:
                segmentation.RemoveAllSegments()
            source = loaded.GetSegmentation()
            for segmentId in list(source.GetSegmentIDs()):
                segmentation.CopySegmentFromSegmentation(source, segmentId, True)
            slicer.mrmlScene.RemoveNode(loaded)
        if referenceVolumeNode is not None:
            target.SetReferenceImageGeometryParameterFromVolumeNode(referenceVolumeNode)
            target.SetNodeReferenceID(target.GetReferenceImageGeometryReferenceRole(), referenceVolumeNode.GetID())
        target.CreateDefaultDisplayNodes()
        return target
    except Exception:
        if loaded.GetScene() is not None and loaded is not into:
            slicer.mrmlScene.RemoveNode(loaded)
        raise


def load_volume_file(path, name: str, into=None, show=False):
    """Load a volume file written by the engine with Slicer's own reader (``slicer.util.loadVolume``).

    ``into`` None: the loaded node is the result, named ``name``. Otherwise ``into`` gets the loaded
    voxels and geometry and the loaded node is removed (``into`` keeps its name and display)."""
    loaded = slicer.util.loadVolume(str(path), {"name": name, "show": bool(show)})
    if into is None:
        return loaded
    m = vtk.vtkMatrix4x4()
    loaded.GetIJKToRASMatrix(m)
    into.SetAndObserveImageData(loaded.GetImageData())
    into.SetIJKToRASMatrix(m)
    slicer.mrmlScene.RemoveNode(loaded)
    return into


def write_segmentation_node(segmentationNode, folder, stem: str) -> Path:
    """Write ``segmentationNode`` with Slicer's own segmentation writer to ``folder/stem.seg.nrrd``
    (uncompressed: it lives only until the run ends). The file keeps each segment's label value,
    name, colour and terminology, which the engine reads. MRML: call it on Slicer's main thread."""
    path = Path(folder) / f"{stem}.seg.nrrd"
    storage = slicer.mrmlScene.CreateNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.UnRegister(None)  # owned by the Python variable (as Slicer's own scripts do)
    storage.SetFileName(str(path))
    storage.UseCompressionOff()
    if not storage.WriteData(segmentationNode):
        raise ValueError(f"Could not write '{segmentationNode.GetName()}' for the engine ({path}).")
    return path


def place_next_to(node, referenceNode) -> None:
    """Put ``node`` in the same subject-hierarchy folder (patient/study) as ``referenceNode``."""
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
    sh.SetItemParent(sh.GetItemByDataNode(node), sh.GetItemParent(sh.GetItemByDataNode(referenceNode)))


def segment_mask_volume(segmentationNode, segmentId, referenceVolumeNode) -> Volume:
    """One segment as a 0/1 uint8 Volume on ``referenceVolumeNode``'s grid: the engine then gets the
    mask on exactly the image's voxels. Exports from MRML, so call it on Slicer's main thread; the
    result is a private array that ``write_volume`` may write on a worker thread."""
    if segmentationNode.GetSegmentation().GetSegment(segmentId) is None:
        raise ValueError(f"'{segmentationNode.GetName()}' has no segment {segmentId!r}.")
    mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, referenceVolumeNode)
    if not np.any(mask):
        raise ValueError(f"The segment '{segmentationNode.GetSegmentation().GetSegment(segmentId).GetName()}' is "
                         "empty. Draw it first (Segment Editor).")
    reference = volume_view_from_node(referenceVolumeNode)  # only its geometry is used
    return reference.with_array((np.asarray(mask) > 0).astype(np.uint8))


def roi_bounds(roiNode) -> list:
    """An ROI markups node as ``[x0, y0, z0, x1, y1, z1]`` in RAS mm (its axis-aligned world bounds)."""
    bounds = [0.0] * 6
    roiNode.GetRASBounds(bounds)  # fills [xmin, xmax, ymin, ymax, zmin, zmax]
    return [bounds[0], bounds[2], bounds[4], bounds[1], bounds[3], bounds[5]]


COLOUR_TABLES = ("Warm1", "Rainbow", "Green", "Magenta", "Iron")


def show_colour_overlay(background, overlay, opacity=0.5, colourTable="Warm1", colourTableNode=None,
                        lowerThreshold=None):
    """Show ``overlay`` in colour over ``background`` in the slice views (foreground layer). Returns the
    colour table node (pass it back next time to reuse it). Uses only the scene's slice composite
    nodes (``setSliceViewerLayers``), so it also works without a main window.

    ``lowerThreshold``: values below it are not drawn (Slicer's display threshold makes them
    transparent), so a heat-map that is zero away from the structure does not tint the whole view."""
    if colourTable not in COLOUR_TABLES:
        raise ValueError(f"colour table must be one of {COLOUR_TABLES}")
    if overlay is None:
        raise ValueError("Choose the volume to overlay.")
    if colourTableNode is None or colourTableNode.GetScene() is None:
        colourTableNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLColorTableNode", "MedAI overlay colours")
    getattr(colourTableNode, f"SetTypeTo{colourTable}")()
    overlay.CreateDefaultDisplayNodes()
    display = overlay.GetDisplayNode()
    display.SetAndObserveColorNodeID(colourTableNode.GetID())
    if lowerThreshold is not None:
        display.SetAutoThreshold(0)
        display.SetThreshold(float(lowerThreshold), 1e30)
        display.ApplyThresholdOn()
    slicer.util.setSliceViewerLayers(background=background, foreground=overlay, foregroundOpacity=float(opacity))
    return colourTableNode


def read_report_row(path):
    """The one case row of a ``medai ... --report`` JSON written for a single-case run (None if absent)."""
    import json

    try:
        cases = json.loads(Path(path).read_text(encoding="utf-8")).get("cases") or []
    except (OSError, ValueError):
        return None
    return cases[0] if cases else None


# Columns of the statistics table: (title, key in a statistics row, type); intensity means follow.
STATISTICS_COLUMNS = (("Segment", "name", str), ("Label value", "value", int), ("Voxels", "voxels", int),
                      ("Volume (mL)", "volume_ml", float))


def statistics_table(rows, confidence=None, name="MedAI statistics"):
    """A vtkMRMLTableNode with one row per segment from the engine's per-segment statistics
    (volume, mean/std intensity per input, bounding box in RAS mm) and, with test-time
    augmentation, the per-segment confidence."""
    inputs = []
    for r in rows:
        for k in (r.get("intensity") or {}):
            if k not in inputs:
                inputs.append(k)
    columns = [(t, (lambda r, key=key: r.get(key)), kind) for t, key, kind in STATISTICS_COLUMNS]
    for k in inputs:
        for stat in ("mean", "std"):
            columns.append((f"{k} {stat}", lambda r, k=k, stat=stat: ((r.get("intensity") or {}).get(k) or {}).get(stat),
                            float))
    if confidence:
        columns.append(("Confidence", lambda r: confidence.get(r.get("name")), float))
    for axis, label in enumerate("RAS"):
        for end in ("min", "max"):
            columns.append((f"{label} {end} (mm)", lambda r, axis=axis, end=end: ((r.get("bbox_ras_mm") or {}).get(end)
                                                                                 or [None] * 3)[axis], float))
    table = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", name)
    for index, (title, _, kind) in enumerate(columns):
        table.AddColumn(None if kind is str else (vtk.vtkIntArray() if kind is int else vtk.vtkDoubleArray()))
        table.RenameColumn(index, title)
    for r in rows:
        row = table.AddEmptyRow()
        for index, (_, get, kind) in enumerate(columns):
            v = get(r)
            table.SetCellText(row, index, ("" if kind is str else "nan" if kind is float else "0") if v is None
                              else str(v))
    table.Modified()
    return table
