"""STAND-IN for 3D Slicer's ``slicer`` package, for tests on machines without Slicer.

This is not Slicer. It implements only what the MedAI modules call, on real VTK objects, following
the API facts in ../shared/slicer-api/. ``reset()`` gives a fresh scene and temporary folder.
"""

from __future__ import annotations

import tempfile
import types

from . import mrml
from .mrml import (  # noqa: F401  (exposed like Slicer's wrapped MRML classes)
    vtkMRMLLabelMapVolumeNode,
    vtkMRMLNode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLScene,
    vtkMRMLScriptedModuleNode,
    vtkMRMLSegmentationNode,
    vtkMRMLSubjectHierarchyNode,
    vtkSegment,
    vtkSegmentation,
)

IS_STANDIN = True


class _App:
    """slicer.app: only the members MedAI uses."""

    majorVersion = 5
    minorVersion = 12

    def __init__(self):
        self.temporaryPath = tempfile.mkdtemp(prefix="slicer-standin-tmp-")
        self.cachePath = self.temporaryPath
        self._testing = True

    def testingEnabled(self):
        return self._testing

    def processEvents(self):
        pass


app = _App()
mrmlScene = vtkMRMLScene()
modules = types.SimpleNamespace()
selfTests = {}


def reset():
    """Fresh scene and temporary folder (tests call this between cases)."""
    global app, mrmlScene
    app = _App()
    mrmlScene = vtkMRMLScene()
    mrml.vtkMRMLSubjectHierarchyNode._by_scene.clear()
    return mrmlScene


from . import util  # noqa: E402,F401  (after app/mrmlScene exist)
from . import i18n  # noqa: E402,F401
