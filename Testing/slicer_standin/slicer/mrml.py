"""Stand-in MRML scene, nodes and segmentation classes (testing only; not Slicer).

Behaviour follows ../../../../shared/slicer-api/slicer-api.json: names and argument lists match the
C++ declarations there; image data and matrices are real VTK objects.
"""

from __future__ import annotations

import itertools

import numpy as np
import vtk

ModifiedEvent = vtk.vtkCommand.ModifiedEvent


class _Observable:
    """Just enough of vtkObject's observer API (AddObserver/RemoveObserver/Modified/InvokeEvent)."""

    def __init__(self):
        self._observers = {}
        self._tags = itertools.count(1)

    def AddObserver(self, event, callback, priority=0.0):
        tag = next(self._tags)
        self._observers[tag] = (event, callback)
        return tag

    def RemoveObserver(self, tag):
        self._observers.pop(tag, None)

    def InvokeEvent(self, event, callData=None):
        for ev, cb in list(self._observers.values()):
            if ev in (event, vtk.vtkCommand.AnyEvent):
                cb(self, event)

    def Modified(self):
        self.InvokeEvent(ModifiedEvent)

    def GetClassName(self):
        return type(self).__name__

    def IsA(self, className):
        return any(c.__name__ == className for c in type(self).__mro__)


class vtkMRMLNode(_Observable):
    def __init__(self):
        super().__init__()
        self._id = None
        self._name = ""
        self._attributes = {}
        self._references = {}
        self._scene = None

    def GetID(self):
        return self._id

    def GetName(self):
        return self._name

    def SetName(self, name):
        self._name = str(name)
        self.Modified()

    def GetScene(self):
        return self._scene

    def SetAttribute(self, name, value):
        self._attributes[name] = value

    def GetAttribute(self, name):
        return self._attributes.get(name)

    def SetNodeReferenceID(self, referenceRole, referencedNodeID):
        self._references[referenceRole] = referencedNodeID
        self.Modified()
        return self._scene.GetNodeByID(referencedNodeID) if self._scene and referencedNodeID else None

    def GetNodeReferenceID(self, referenceRole):
        return self._references.get(referenceRole)

    def GetNodeReference(self, referenceRole):
        nid = self._references.get(referenceRole)
        return self._scene.GetNodeByID(nid) if (self._scene and nid) else None

    def CreateDefaultDisplayNodes(self):
        pass


class vtkMRMLTransformableNode(vtkMRMLNode):
    def SetAndObserveTransformNodeID(self, transformNodeID):
        self._references["transform"] = transformNodeID
        return True

    def GetTransformNodeID(self):
        return self._references.get("transform")

    def GetParentTransformNode(self):
        return self.GetNodeReference("transform")


class vtkMRMLVolumeNode(vtkMRMLTransformableNode):
    def __init__(self):
        super().__init__()
        self._image = None
        self._ijk_to_ras = vtk.vtkMatrix4x4()

    def SetAndObserveImageData(self, imageData):
        self._image = imageData
        self.Modified()

    def GetImageData(self):
        return self._image

    def GetIJKToRASMatrix(self, mat):
        # Like Slicer: fills the matrix passed in, returns None.
        mat.DeepCopy(self._ijk_to_ras)

    def SetIJKToRASMatrix(self, mat):
        self._ijk_to_ras.DeepCopy(mat)
        self.Modified()

    def GetRASToIJKMatrix(self, mat):
        mat.DeepCopy(self._ijk_to_ras)
        mat.Invert()

    def GetSpacing(self):
        m = np.array([[self._ijk_to_ras.GetElement(r, c) for c in range(3)] for r in range(3)])
        return tuple(float(s) for s in np.linalg.norm(m, axis=0))

    def GetOrigin(self):
        return tuple(self._ijk_to_ras.GetElement(r, 3) for r in range(3))


class vtkMRMLScalarVolumeNode(vtkMRMLVolumeNode):
    def CreateDefaultDisplayNodes(self):
        if self._references.get("display") is None and self._scene is not None:
            display = self._scene.AddNewNodeByClass("vtkMRMLScalarVolumeDisplayNode")
            self._references["display"] = display.GetID()

    def GetDisplayNode(self):
        return self.GetNodeReference("display")

    def GetVolumeDisplayNode(self):
        return self.GetDisplayNode()

    def GetScalarVolumeDisplayNode(self):
        return self.GetDisplayNode()


class vtkMRMLScalarVolumeDisplayNode(vtkMRMLNode):
    """Only the colour table reference and window/level (what MedAIFusion sets)."""

    def __init__(self):
        super().__init__()
        self._color_node_id = None
        self._window_level = None

    def SetAndObserveColorNodeID(self, ColorNodeID):
        self._color_node_id = ColorNodeID
        self.Modified()

    def GetColorNodeID(self):
        return self._color_node_id

    def GetColorNode(self):
        return self._scene.GetNodeByID(self._color_node_id) if (self._scene and self._color_node_id) else None

    def SetWindowLevelMinMax(self, min, max):  # noqa: A002 (Slicer's argument names)
        self._window_level = (float(min), float(max))


class vtkMRMLColorTableNode(vtkMRMLNode):
    """Records which built-in table type was chosen (Slicer fills the lookup table from it)."""

    def __init__(self):
        super().__init__()
        self._type = None

    def __getattr__(self, name):
        if name.startswith("SetTypeTo"):
            def set_type():
                self._type = name[len("SetTypeTo"):]
            return set_type
        raise AttributeError(name)

    def GetTypeAsString(self):
        return self._type or ""


class vtkMRMLLinearTransformNode(vtkMRMLTransformableNode):
    """A linear transform node holding its to-parent matrix (a real vtkMatrix4x4)."""

    def __init__(self):
        super().__init__()
        self._to_parent = vtk.vtkMatrix4x4()

    def IsLinear(self):
        return 1

    def GetMatrixTransformToParent(self, matrix=None):
        if matrix is None:
            return self._to_parent
        matrix.DeepCopy(self._to_parent)
        return 1

    def GetMatrixTransformFromParent(self, matrix=None):
        inv = vtk.vtkMatrix4x4()
        inv.DeepCopy(self._to_parent)
        inv.Invert()
        if matrix is None:
            return inv
        matrix.DeepCopy(inv)
        return 1

    def SetMatrixTransformToParent(self, matrix):
        self._to_parent.DeepCopy(matrix)
        self.Modified()

    def SetMatrixTransformFromParent(self, matrix):
        inv = vtk.vtkMatrix4x4()
        inv.DeepCopy(matrix)
        inv.Invert()
        self.SetMatrixTransformToParent(inv)


class vtkMRMLLabelMapVolumeNode(vtkMRMLVolumeNode):
    pass


class vtkMRMLScriptedModuleNode(vtkMRMLNode):
    def __init__(self):
        super().__init__()
        self._parameters = {}

    def SetParameter(self, name, value):
        self._parameters[name] = str(value)
        self.Modified()

    def GetParameter(self, name):
        return self._parameters.get(name, "")

    def UnsetParameter(self, name):
        self._parameters.pop(name, None)

    def GetParameterNames(self):
        return list(self._parameters)


class vtkSegment(_Observable):
    def __init__(self):
        super().__init__()
        self._name = ""
        self._color = (0.5, 0.5, 0.5)
        self._tags = {}
        self.labelmap = None  # stand-in storage: binary KJI array on the reference grid

    @staticmethod
    def GetTerminologyEntryTagName():
        return "TerminologyEntry"

    def GetName(self):
        return self._name

    def SetName(self, name):
        self._name = str(name)

    def GetColor(self):
        return self._color

    def SetColor(self, *color):
        if len(color) == 1:
            color = tuple(color[0])
        if len(color) != 3:
            raise TypeError("SetColor takes (r, g, b) or a 3-sequence")
        self._color = tuple(float(c) for c in color)

    def SetTag(self, tag, value):
        self._tags[str(tag)] = str(value)

    def GetTag(self, tag, value=None):
        # C++ GetTag(tag, std::string& value) -> bool. Python callers of the real API cannot receive
        # the string through that out-argument, which is why MedAI reads tags back only in tests.
        return tag in self._tags

    def GetTerminology(self):
        return self._tags.get(self.GetTerminologyEntryTagName(), "")

    def SetTerminology(self, terminologyEntry):
        self.SetTag(self.GetTerminologyEntryTagName(), terminologyEntry)


class vtkSegmentation(_Observable):
    def __init__(self):
        super().__init__()
        self._segments = {}  # id -> vtkSegment (insertion-ordered)
        self._random = np.random.default_rng()

    def AddEmptySegment(self, segmentId="", segmentName="", color=None):
        if not segmentId or segmentId in self._segments:
            # Slicer generates a random-suffixed id: ids are not names.
            segmentId = f"{segmentId or 'Segment'}_{self._random.integers(1 << 30)}"
        seg = vtkSegment()
        seg.SetName(segmentName or segmentId)
        if color is not None:
            seg.SetColor(tuple(color))
        self._segments[segmentId] = seg
        self.Modified()
        return segmentId

    def GetSegment(self, segmentId):
        return self._segments.get(segmentId)

    def GetNumberOfSegments(self):
        return len(self._segments)

    def GetNthSegmentID(self, index):
        return list(self._segments)[index]

    def GetNthSegment(self, index):
        return list(self._segments.values())[index]

    def GetSegmentIDs(self):
        return list(self._segments)

    def GetSegmentIdBySegmentName(self, name):
        for sid, seg in self._segments.items():
            if seg.GetName().lower() == str(name).lower():
                return sid
        return ""

    def RemoveSegment(self, segment):
        if isinstance(segment, vtkSegment):
            segment = next((k for k, v in self._segments.items() if v is segment), None)
        self._segments.pop(segment, None)
        self.Modified()

    def RemoveAllSegments(self):
        self._segments.clear()
        self.Modified()


class vtkMRMLSegmentationNode(vtkMRMLTransformableNode):
    def __init__(self):
        super().__init__()
        self._segmentation = vtkSegmentation()
        self.referenceGeometry = None  # stand-in: (shape KJI, 4x4 IJK->RAS) set from a volume

    def GetSegmentation(self):
        return self._segmentation

    @staticmethod
    def GetReferenceImageGeometryReferenceRole():
        return "referenceImageGeometryRef"

    def SetReferenceImageGeometryParameterFromVolumeNode(self, volumeNode):
        from . import util

        m = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASMatrix(m)
        self.referenceGeometry = (util.arrayFromVolume(volumeNode).shape[:3], util.arrayFromVTKMatrix(m))

    def CreateClosedSurfaceRepresentation(self):
        return True


class vtkMRMLSubjectHierarchyNode(vtkMRMLNode):
    """Items are integers; the scene item is 1; every data node gets an item under the scene."""

    _by_scene = {}

    def __init__(self):
        super().__init__()
        self._parents = {}
        self._items = {}

    @staticmethod
    def GetSubjectHierarchyNode(scene):
        sh = vtkMRMLSubjectHierarchyNode._by_scene.get(id(scene))
        if sh is None:
            sh = vtkMRMLSubjectHierarchyNode()
            vtkMRMLSubjectHierarchyNode._by_scene[id(scene)] = sh
        return sh

    def GetSceneItemID(self):
        return 1

    def GetItemByDataNode(self, dataNode):
        if dataNode is None:
            return 0
        key = id(dataNode)
        if key not in self._items:
            self._items[key] = len(self._items) + 2
            self._parents[self._items[key]] = 1
        return self._items[key]

    def GetItemParent(self, itemID):
        return self._parents.get(itemID, 0)

    def SetItemParent(self, itemID, parentItemID, enableCircularCheck=True):
        self._parents[itemID] = parentItemID


class vtkMRMLTableNode(vtkMRMLNode):
    """A real vtkTable of string columns (Slicer's default column type for AddColumn())."""

    def __init__(self):
        super().__init__()
        self._table = vtk.vtkTable()

    def GetTable(self):
        return self._table

    def RemoveAllColumns(self):
        while self._table.GetNumberOfColumns():
            self._table.RemoveColumn(0)
        return True

    def AddColumn(self, column=None):
        if column is None:
            column = vtk.vtkStringArray()
            column.SetNumberOfValues(self._table.GetNumberOfRows())
        self._table.AddColumn(column)
        return column

    def RenameColumn(self, columnIndex, newName):
        self._table.GetColumn(columnIndex).SetName(newName)
        return True

    def AddEmptyRow(self):
        self._table.InsertNextBlankRow()
        return self._table.GetNumberOfRows() - 1

    def SetCellText(self, rowIndex, columnIndex, text):
        self._table.GetColumn(columnIndex).SetValue(rowIndex, str(text))
        return True

    def GetCellText(self, rowIndex, columnIndex):
        return str(self._table.GetColumn(columnIndex).GetValue(rowIndex))

    def GetNumberOfRows(self):
        return self._table.GetNumberOfRows()

    def GetNumberOfColumns(self):
        return self._table.GetNumberOfColumns()

    def GetColumnName(self, columnIndex):
        return self._table.GetColumn(columnIndex).GetName() or ""


class vtkMRMLMarkupsROINode(vtkMRMLTransformableNode):
    """An axis-aligned ROI box: centre (SetXYZ) and half sizes (SetRadiusXYZ), as in Slicer."""

    def __init__(self):
        super().__init__()
        self._xyz, self._radius = [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]

    def SetXYZ(self, x, y, z):
        self._xyz = [float(x), float(y), float(z)]

    def SetRadiusXYZ(self, x, y, z):
        self._radius = [float(x), float(y), float(z)]

    def GetRASBounds(self, bounds):
        for a in range(3):
            bounds[2 * a] = self._xyz[a] - self._radius[a]
            bounds[2 * a + 1] = self._xyz[a] + self._radius[a]


NODE_CLASSES = {c.__name__: c for c in (
    vtkMRMLNode, vtkMRMLScalarVolumeNode, vtkMRMLLabelMapVolumeNode, vtkMRMLScriptedModuleNode,
    vtkMRMLSegmentationNode, vtkMRMLSubjectHierarchyNode,
    vtkMRMLScalarVolumeDisplayNode, vtkMRMLColorTableNode, vtkMRMLLinearTransformNode,
    vtkMRMLTableNode, vtkMRMLMarkupsROINode,
)}


class vtkMRMLScene(_Observable):
    StartCloseEvent = 66000
    EndCloseEvent = 66001
    NodeAddedEvent = 66002
    NodeRemovedEvent = 66003

    def __init__(self):
        super().__init__()
        self._nodes = {}
        self._counter = itertools.count(1)

    def CreateNodeByClass(self, className):
        return NODE_CLASSES[className]()

    def AddNode(self, nodeToAdd):
        cls = type(nodeToAdd).__name__
        nodeToAdd._id = f"{cls}{next(self._counter)}"
        if not nodeToAdd.GetName():
            nodeToAdd._name = cls.replace("vtkMRML", "").replace("Node", "")
        nodeToAdd._scene = self
        self._nodes[nodeToAdd._id] = nodeToAdd
        self.InvokeEvent(self.NodeAddedEvent, nodeToAdd)
        return nodeToAdd

    def AddNewNodeByClass(self, className, nodeBaseName=""):
        node = self.CreateNodeByClass(className)
        if nodeBaseName:
            node._name = nodeBaseName
        return self.AddNode(node)

    def RemoveNode(self, n):
        if n is not None and self._nodes.pop(n.GetID(), None) is not None:
            n._scene = None
            self.InvokeEvent(self.NodeRemovedEvent, n)

    def GetNodeByID(self, name):
        return self._nodes.get(name)

    def GetNodesByClass(self, className):
        return [n for n in self._nodes.values() if n.IsA(className)]

    def GetNumberOfNodes(self):
        return len(self._nodes)

    def Clear(self, removeSingletons=0):
        self.InvokeEvent(self.StartCloseEvent)
        self._nodes.clear()
        self.InvokeEvent(self.EndCloseEvent)
