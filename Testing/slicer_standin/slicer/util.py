"""Stand-in for the parts of ``slicer.util`` MedAI uses (testing only; not Slicer).

Signatures equal those in slicer-api.json ``slicer.util.functions``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import vtk
from vtkmodules.util import numpy_support

import slicer

# Records for tests: what would have been installed / shown.
pip_installs = []
messages = []


# --- arrays and matrices ------------------------------------------------------------------
def arrayFromVolume(volumeNode):
    """A KJI *view* of the node's voxels (changing it changes the volume, as in Slicer)."""
    image = volumeNode.GetImageData()
    dims = list(image.GetDimensions())
    comps = image.GetNumberOfScalarComponents()
    shape = tuple(reversed(dims)) + ((comps,) if comps > 1 else ())
    return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(shape)


def updateVolumeFromArray(volumeNode, narray):
    narray = np.ascontiguousarray(narray)
    image = vtk.vtkImageData()
    image.SetDimensions(narray.shape[2], narray.shape[1], narray.shape[0])
    scalars = numpy_support.numpy_to_vtk(narray.ravel(), deep=True)
    image.GetPointData().SetScalars(scalars)
    volumeNode.SetAndObserveImageData(image)


def arrayFromVTKMatrix(vmatrix):
    return np.array([[vmatrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def vtkMatrixFromArray(narray):
    m = vtk.vtkMatrix4x4()
    updateVTKMatrixFromArray(m, narray)
    return m


def updateVTKMatrixFromArray(vmatrix, narray):
    narray = np.asarray(narray, dtype=float)
    for r in range(4):
        for c in range(4):
            vmatrix.SetElement(r, c, narray[r, c])


def addVolumeFromArray(narray, ijkToRAS=None, name=None, nodeClassName=None):
    node = slicer.mrmlScene.AddNewNodeByClass(nodeClassName or "vtkMRMLScalarVolumeNode", name or "")
    if ijkToRAS is not None:
        node.SetIJKToRASMatrix(vtkMatrixFromArray(ijkToRAS))
    updateVolumeFromArray(node, narray)
    node.CreateDefaultDisplayNodes()
    return node


def _check_reference(segmentationNode, referenceVolumeNode, shape):
    if referenceVolumeNode is None:
        raise ValueError("stand-in: pass referenceVolumeNode")
    if tuple(arrayFromVolume(referenceVolumeNode).shape[:3]) != tuple(shape):
        raise ValueError("array shape does not match the reference volume")


def updateSegmentBinaryLabelmapFromArray(narray, segmentationNode, segmentId, referenceVolumeNode=None):
    _check_reference(segmentationNode, referenceVolumeNode, narray.shape)
    seg = segmentationNode.GetSegmentation().GetSegment(segmentId)
    if seg is None:
        raise ValueError(f"no segment {segmentId!r}")
    m = vtk.vtkMatrix4x4()
    referenceVolumeNode.GetIJKToRASMatrix(m)
    seg.labelmap = (np.array(narray, dtype=np.uint8, copy=True), arrayFromVTKMatrix(m))


def arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, referenceVolumeNode=None):
    seg = segmentationNode.GetSegmentation().GetSegment(segmentId)
    _check_reference(segmentationNode, referenceVolumeNode, seg.labelmap[0].shape)
    m = vtk.vtkMatrix4x4()
    referenceVolumeNode.GetIJKToRASMatrix(m)
    if not np.allclose(arrayFromVTKMatrix(m), seg.labelmap[1]):
        raise NotImplementedError("stand-in does not resample segments to another grid")
    return seg.labelmap[0].copy()


# --- nodes ---------------------------------------------------------------------------------
def getNodesByClass(className, scene=None):
    return (scene or slicer.mrmlScene).GetNodesByClass(className)


def getNode(pattern="*", index=0, scene=None):
    scene = scene or slicer.mrmlScene
    node = scene.GetNodeByID(pattern)
    if node is None:
        matches = [n for n in scene._nodes.values() if n.GetName() == pattern]
        if not matches:
            raise slicer.util.MRMLNodeNotFoundException(pattern)
        node = matches[index]
    return node


class MRMLNodeNotFoundException(Exception):
    pass


def loadVolume(filename, properties={}, returnNode=False):
    from MedAILib.io import read_image  # stand-in reads files with the engine's reader

    vol = read_image(filename)
    name = properties.get("name") or Path(filename).name.split(".")[0]
    return addVolumeFromArray(vol.array, vol.ijk_to_ras, name)


def loadLabelVolume(filename, properties={}, returnNode=False):
    from MedAILib.io import read_image

    vol = read_image(filename)
    name = properties.get("name") or Path(filename).name.split(".")[0]
    return addVolumeFromArray(vol.array, vol.ijk_to_ras, name, "vtkMRMLLabelMapVolumeNode")


def loadTransform(filename, returnNode=False):
    """Like Slicer for a linear ITK transform file: LPS -> RAS, and the file's (resampling)
    transform becomes the node's FROM-parent transform. Written here from SimpleITK directly,
    independent of MedAILib, so the engine's own conversion is checked against it."""
    import SimpleITK as sitk

    t = sitk.ReadTransform(str(filename))
    if t.GetName() == "CompositeTransform":
        t = t.GetNthTransform(0)
    t = t.Downcast()
    a = np.array(t.GetMatrix()).reshape(3, 3)
    c = np.array(t.GetCenter())
    offset = np.array(t.GetTranslation()) + c - a @ c
    lps = np.eye(4)
    lps[:3, :3], lps[:3, 3] = a, offset
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode", Path(filename).name.split(".")[0])
    node.SetMatrixTransformFromParent(vtkMatrixFromArray(flip @ lps @ flip))
    return node


def arrayFromTransformMatrix(transformNode, toWorld=False):
    m = vtk.vtkMatrix4x4()
    transformNode.GetMatrixTransformToParent(m)
    return arrayFromVTKMatrix(m)


sliceViewerLayers = {}  # what setSliceViewerLayers was last asked to show (tests read it)


def setSliceViewerLayers(background="keep-current", foreground="keep-current", label="keep-current",
                         foregroundOpacity=None, labelOpacity=None, fit=False, rotateToVolumePlane=False):
    for key, value in (("background", background), ("foreground", foreground), ("label", label)):
        if value != "keep-current":
            sliceViewerLayers[key] = value.GetID() if hasattr(value, "GetID") else value
    if foregroundOpacity is not None:
        sliceViewerLayers["foregroundOpacity"] = float(foregroundOpacity)
    if labelOpacity is not None:
        sliceViewerLayers["labelOpacity"] = float(labelOpacity)


# --- files, processes, packages ------------------------------------------------------------
def tempDirectory(key="__SlicerTemp__", tempDir=None, includeDateTime=True):
    base = Path(tempDir or slicer.app.temporaryPath)
    base.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d_%H+%M+%S") if includeDateTime else ""
    return tempfile.mkdtemp(prefix=f"{key}{stamp}", dir=str(base))


def startupEnvironment():
    return dict(os.environ)


def launchConsoleProcess(args, useStartupEnvironment=True, updateEnvironment=None, cwd=None,
                         blocking=True, logCallback=None, completedCallback=None):
    env = startupEnvironment() if useStartupEnvironment else dict(os.environ)
    env.update(updateEnvironment or {})
    return subprocess.Popen(args, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True)


def pip_install(requirements, **kwargs):
    pip_installs.append(requirements)


# --- messages ------------------------------------------------------------------------------
def _record(kind, text, **kwargs):
    messages.append((kind, text, kwargs))
    logging.info("%s: %s", kind, text)


def errorDisplay(text, windowTitle=None, parent=None, standardButtons=None, **kwargs):
    _record("error", text, **kwargs)


def warningDisplay(text, windowTitle=None, parent=None, standardButtons=None, **kwargs):
    _record("warning", text, **kwargs)


def infoDisplay(text, windowTitle=None, parent=None, standardButtons=None, **kwargs):
    _record("info", text, **kwargs)


def confirmOkCancelDisplay(text, windowTitle=None, parent=None, **kwargs):
    _record("confirm", text, **kwargs)
    return True  # as in Slicer's testing mode


def delayDisplay(message, autoCloseMsec=1000, parent=None, **kwargs):
    _record("delay", message)


@contextlib.contextmanager
def tryWithErrorDisplay(message=None, show=True, waitCursor=False):
    try:
        yield
    except Exception as e:
        _record("error", f"{message}\n\n{e}")
        raise


def modulePath(moduleName):
    return getattr(slicer.modules, moduleName.lower()).path


class VTKObservationMixin:
    def __init__(self):
        self.Observations = []

    def addObserver(self, obj, event, method, group="none", priority=0.0):
        self.Observations.append((obj, event, method, obj.AddObserver(event, method, priority)))

    def removeObserver(self, obj, event, method):
        for o in list(self.Observations):
            if o[0] is obj and o[1] == event and o[2] == method:
                obj.RemoveObserver(o[3])
                self.Observations.remove(o)

    def removeObservers(self, method=None):
        for o in list(self.Observations):
            if method is None or o[2] == method:
                o[0].RemoveObserver(o[3])
                self.Observations.remove(o)

    def hasObserver(self, obj, event, method):
        return any(o[0] is obj and o[1] == event and o[2] == method for o in self.Observations)
