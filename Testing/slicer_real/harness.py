"""Run MedAI's Slicer-side code on REAL MRML: Slicer's Qt-free core from PyPI (slicer-core, which
pins vtk==9.6.2), set up as the Slicer application does (see shared/slicer-api/real-mrml.md).

``install()`` imports the real ``slicer`` package, builds the scene, application logic, module
logics and Red/Yellow/Green slice logics, and fills in what slicer-core leaves out:
``slicer.mrmlScene``, ``slicer.app`` (headless, testing mode), ``slicer.modules``, the readers
behind ``slicer.util.loadVolume``/``loadSegmentation``/``loadTransform``, the subject-hierarchy
items that Slicer's Qt plugin logic creates, and pure-Python ``slicer.ScriptedLoadableModule``,
``slicer.parameterNodeWrapper``, ``slicer.i18n``, ``qt`` and ``ctk`` (shims/, no widgets).
``render_slice_png()`` draws a slice view offscreen with Slicer's slice logic and displayable managers.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
import types
from collections import namedtuple
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Slicer's terminology files (Modules/Loadable/Terminologies/Resources), kept in shared/ beside the checkout.
TERMINOLOGIES = Path(os.environ.get("MEDAI_SLICER_TERMINOLOGIES")
                     or HERE.parents[2] / "shared" / "slicer-api" / "terminologies")

_harness = None


def _load_shim(name, modname):
    spec = importlib.util.spec_from_file_location(modname, HERE / "shims" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[modname] = module
    spec.loader.exec_module(module)
    return module


class _Module:
    """slicer.modules.<name>: the C++ module object; .logic() returns the real module logic."""

    def __init__(self, name, logic, path=""):
        self.name, self.title, self.path, self._logic = name, name, path, logic

    def logic(self):
        return self._logic


class _Environment:
    """QProcessEnvironment as slicer.util.startupEnvironment() reads it (keys(), value())."""

    def __init__(self, env):
        self._env = dict(env)

    def keys(self):
        return list(self._env)

    def value(self, key, default=""):
        return self._env.get(key, default)


class _IOManager:
    """qSlicerCoreIOManager: fileType() and loadNodes() dispatch to the module logics, doing what
    Slicer's readers do (qSlicerVolumesReader, qSlicerSegmentationsReader, qSlicerTransformsReader)."""

    _TRANSFORM_EXT = (".h5", ".hdf5", ".tfm", ".mat", ".txt", ".xfm")

    def __init__(self, h):
        self.h = h

    def fileType(self, fileName):
        name = str(fileName).lower()
        if name.endswith((".seg.nrrd", ".seg.nhdr", ".seg.vtm")):
            return "SegmentationFile"
        if name.endswith((".nrrd", ".nhdr")):  # generic nrrd: the segmentation reader looks at the header
            with open(fileName, "rb") as f:
                head = f.read(800).decode("latin-1")
            if "Segment0_ID:=" in head or "Segmentation_" in head:
                return "SegmentationFile"
        if name.endswith(self._TRANSFORM_EXT):
            return "TransformFile"
        return "VolumeFile"

    def loadNodes(self, fileType, properties, loadedNodes=None, userMessages=None):
        reader = {"VolumeFile": self._volume, "SegmentationFile": self._segmentation,
                  "TransformFile": self._transform}.get(fileType)
        if reader is None:
            raise NotImplementedError(f"slicer_real: no reader for file type {fileType!r}")
        node = reader(dict(properties), userMessages)
        if node is not None and loadedNodes is not None:
            loadedNodes.AddItem(node)
        return node is not None

    def _volume(self, p, messages):
        import vtk

        fileName = str(p["fileName"])
        name = p.get("name") or os.path.basename(fileName).split(".")[0]  # QFileInfo::baseName
        options = sum(bit for key, bit in (("labelmap", 1), ("center", 2), ("singleFile", 4),
                                           ("autoWindowLevel", 8), ("discardOrientation", 16)) if p.get(key))
        fileList = None
        if "fileNames" in p:
            fileList = vtk.vtkStringArray()
            for f in p["fileNames"]:
                fileList.InsertNextValue(str(f))
        node = self.h.volumes.AddArchetypeVolume(fileName, name, options, fileList, messages)
        if node is None:
            return None
        if p.get("colorNodeID") and node.GetDisplayNode():
            node.GetDisplayNode().SetAndObserveColorNodeID(p["colorNodeID"])
        if p.get("show", True):
            selection = self.h.app_logic.GetSelectionNode()
            if node.IsA("vtkMRMLLabelMapVolumeNode"):
                selection.SetActiveLabelVolumeID(node.GetID())
            else:
                selection.SetActiveVolumeID(node.GetID())
            self.h.app_logic.PropagateVolumeSelection()
        return node

    def _segmentation(self, p, messages):
        fileName = str(p["fileName"])
        if fileName.lower().endswith((".stl", ".obj")):
            raise NotImplementedError("slicer_real: STL/OBJ segmentation reading is not emulated")
        color = self.h.scene.GetNodeByID(p["colorNodeID"]) if p.get("colorNodeID") else None
        return self.h.segmentations.LoadSegmentationFromFile(fileName, bool(p.get("autoOpacities", True)),
                                                             p.get("name", ""), color, messages)

    def _transform(self, p, messages):
        node = self.h.transforms.AddTransform(str(p["fileName"]), self.h.scene, messages)
        if node is not None and p.get("name"):
            node.SetName(p["name"])
        return node


class _App:
    """slicer.app for a headless Slicer in testing mode (no main window, no layout manager)."""

    applicationName = "Slicer"
    documentationBaseUrl = "https://slicer.readthedocs.io/en/latest/"

    def __init__(self, h):
        from importlib.metadata import version

        self._h = h
        self._io = _IOManager(h)
        self.majorVersion, self.minorVersion = (int(x) for x in version("slicer-core").split(".")[:2])
        self.temporaryPath = tempfile.mkdtemp(prefix="slicer-real-tmp-")
        self.cachePath = os.path.join(self.temporaryPath, "cache")

    def mrmlScene(self):
        return self._h.scene

    def applicationLogic(self):
        return self._h.app_logic

    def coreIOManager(self):
        return self._io

    ioManager = coreIOManager

    def moduleLogic(self, name):
        return self._h.app_logic.GetModuleLogic(name)

    def testingEnabled(self):
        return True  # errorDisplay & co. log instead of showing popups, as in Slicer's self-tests

    def layoutManager(self):
        return None  # as Slicer started with --no-main-window

    def startupEnvironment(self):
        # Slicer's is the environment it was started with; here it is read now, so a test's
        # environment (MEDAI_HOME, a fake engine's mode) reaches the engine process as Slicer's would.
        return _Environment(os.environ)

    def translate(self, context, text):
        return text

    def moduleDocumentationUrl(self, moduleName):
        return f"{self.documentationBaseUrl}user_guide/modules/{moduleName.lower()}.html"

    def _noop(self, *args):  # no Qt event loop, cursor or render pausing: MRML/VTK events are synchronous
        pass

    processEvents = setOverrideCursor = restoreOverrideCursor = pauseRender = resumeRender = _noop


# Data-node classes that a Slicer subject-hierarchy plugin claims (most derived first) -> plugin name.
_SH_PLUGINS = (("vtkMRMLSegmentationNode", "Segmentations"), ("vtkMRMLLabelMapVolumeNode", "LabelMaps"),
               ("vtkMRMLVolumeNode", "Volumes"), ("vtkMRMLModelNode", "Models"), ("vtkMRMLMarkupsNode", "Markups"),
               ("vtkMRMLTransformNode", "Transforms"), ("vtkMRMLTableNode", "Tables"), ("vtkMRMLTextNode", "Texts"),
               ("vtkMRMLPlotChartNode", "Charts"), ("vtkMRMLPlotSeriesNode", "PlotSeries"))


def _sh_plugin(node):
    return next((plugin for cls, plugin in _SH_PLUGINS if node.IsA(cls)), None)


class Harness:
    """The real scene and logics; ``slicer.mrmlScene is harness.scene``."""

    def __init__(self):
        import slicer
        import vtk

        self.slicer = slicer
        self.scene = scene = slicer.vtkMRMLScene()
        crosshair = slicer.vtkMRMLCrosshairNode()  # qSlicerCoreApplication adds the first crosshair
        crosshair.SetCrosshairName("default")
        scene.AddNode(crosshair)
        self.app_logic = slicer.vtkSlicerApplicationLogic()
        self.app_logic.SetMRMLScene(scene)  # also adds selection/interaction nodes, slice orientation presets
        self.app_logic.SetSliceLogics(vtk.vtkCollection())
        self.app_logic.SetViewLogics(vtk.vtkCollection())

        # Module logics, set up as qSlicerAbstractCoreModule does: app logic, share dir, scene.
        # Colors first: its logic adds the default colour nodes and becomes the app's colour logic.
        self.logics = {}
        for name, cls, share in (("Colors", "vtkSlicerColorLogic", None),
                                 ("Volumes", "vtkSlicerVolumesLogic", None),
                                 ("Terminologies", "vtkSlicerTerminologiesModuleLogic", TERMINOLOGIES),
                                 ("Segmentations", "vtkSlicerSegmentationsModuleLogic", None),
                                 ("SubjectHierarchy", "vtkSlicerSubjectHierarchyModuleLogic", None),
                                 ("Data", "vtkSlicerDataModuleLogic", None),
                                 ("Markups", "vtkSlicerMarkupsLogic", None),
                                 ("Transforms", "vtkSlicerTransformLogic", None),
                                 ("Tables", "vtkSlicerTablesLogic", None),
                                 ("Sequences", "vtkSlicerSequencesLogic", None)):
            if not hasattr(slicer, cls):
                continue  # "where available" in this slicer-core build
            logic = getattr(slicer, cls)()
            logic.SetMRMLApplicationLogic(self.app_logic)
            if share is not None:
                logic.SetModuleShareDirectory(str(share))
            logic.SetMRMLScene(scene)
            self.app_logic.SetModuleLogic(name, logic)
            if name == "Colors":
                self.app_logic.SetColorLogic(logic)
            self.logics[name] = logic
        self.volumes = self.logics["Volumes"]
        self.segmentations = self.logics["Segmentations"]
        self.terminologies = self.logics["Terminologies"]
        self.transforms = self.logics["Transforms"]

        # Slicer's default layout: three slice views, each with its slice logic.
        # Orientation and label as vtkMRMLLayoutLogic gives them in the conventional layout.
        self.slice_logics = {}
        for name, orientation, label in (("Red", "Axial", "R"), ("Yellow", "Sagittal", "Y"), ("Green", "Coronal", "G")):
            logic = slicer.vtkMRMLSliceLogic()
            logic.SetMRMLScene(scene)
            logic.SetMRMLApplicationLogic(self.app_logic)
            sliceNode = logic.AddSliceNode(name)
            sliceNode.SetDefaultOrientation(orientation)
            sliceNode.SetOrientation(orientation)
            sliceNode.SetLayoutLabel(label)
            self.app_logic.GetSliceLogics().AddItem(logic)
            self.slice_logics[name] = logic

        self._observe_subject_hierarchy()
        slicer.vtkMRMLSubjectHierarchyNode.ResolveSubjectHierarchy(scene)

    # --- subject hierarchy: what qSlicerSubjectHierarchyPluginLogic does on scene events ---------
    def _observe_subject_hierarchy(self):
        import vtk

        slicer, scene = self.slicer, self.scene

        @vtk.calldata_type(vtk.VTK_OBJECT)
        def onNodeAdded(caller, event, node):
            if node is None or scene.IsImporting() or node.GetHideFromEditors():
                return
            if node.IsA("vtkMRMLSubjectHierarchyNode"):
                slicer.vtkMRMLSubjectHierarchyNode.ResolveSubjectHierarchy(scene)
            else:
                self._add_to_subject_hierarchy(node)

        @vtk.calldata_type(vtk.VTK_OBJECT)
        def onNodeAboutToBeRemoved(caller, event, node):
            if node is None or scene.IsClosing() or node.IsA("vtkMRMLSubjectHierarchyNode"):
                return
            sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
            item = sh.GetItemByDataNode(node) if sh else 0
            if item:
                sh.RemoveItem(item, False, False)

        def onImportOrCloseEnded(caller, event):
            slicer.vtkMRMLSubjectHierarchyNode.ResolveSubjectHierarchy(scene)
            for i in range(scene.GetNumberOfNodes()):
                node = scene.GetNthNode(i)
                if not node.GetHideFromEditors():
                    self._add_to_subject_hierarchy(node)

        scene.AddObserver(scene.NodeAddedEvent, onNodeAdded)
        scene.AddObserver(scene.NodeAboutToBeRemovedEvent, onNodeAboutToBeRemoved)
        scene.AddObserver(scene.EndImportEvent, onImportOrCloseEnded)
        scene.AddObserver(scene.EndCloseEvent, onImportOrCloseEnded)

    def _add_to_subject_hierarchy(self, node):
        plugin = _sh_plugin(node)
        if plugin is None:
            return
        sh = self.slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(self.scene)
        if sh and not sh.GetItemByDataNode(node):
            sh.CreateItem(sh.GetSceneItemID(), node, plugin)

    def reset(self):
        """File > Close Scene: Clear(0) keeps singletons (slice, selection, default colour nodes).
        Tests also get a fresh, empty ``slicer.app.temporaryPath`` (the old one is removed)."""
        import shutil

        import slicer

        self.scene.Clear(0)
        app = getattr(slicer, "app", None)
        if isinstance(app, _App):
            shutil.rmtree(app.temporaryPath, ignore_errors=True)
            app.temporaryPath = tempfile.mkdtemp(prefix="slicer-real-tmp-")
            app.cachePath = os.path.join(app.temporaryPath, "cache")
        return self.scene


def install():
    """Import slicer-core's ``slicer``, build the real scene once and wire the module globals.

    Idempotent: later calls return the same Harness.
    """
    global _harness
    if _harness is not None:
        return _harness
    if not os.environ.get("DISPLAY"):
        # No X server: let VTK open an EGL (Mesa) window directly instead of warning about X first.
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

    for name in ("qt", "ctk"):  # PythonQt modules: Slicer's ScriptedLoadableModule and util import them
        if name not in sys.modules:
            _load_shim(name, name)
    import slicer  # slicer-core's meta-package: vtkMRML*, vtkSlicer*Logic, slicer.util

    if not hasattr(slicer, "vtkMRMLScene"):
        raise RuntimeError(f"{slicer.__file__} is not slicer-core's slicer package")
    h = Harness()
    slicer.mrmlScene = h.scene
    slicer.app = _App(h)
    slicer.modules = types.SimpleNamespace(**{name.lower(): _Module(name, logic) for name, logic in h.logics.items()})
    slicer.selfTests = getattr(slicer, "selfTests", {})
    for name in ("i18n", "ScriptedLoadableModule", "parameterNodeWrapper"):  # after slicer.app exists
        setattr(slicer, name, _load_shim(name, f"slicer.{name}"))
    _harness = h
    return h


def reset():
    """Close the scene (between tests): harness.install().reset()."""
    return install().reset()


def load_scripted_module(pyfile):
    """Import a scripted module file as Slicer's loader does: module name = file name, its folder on
    sys.path, ``<Name>(parent)`` built with a parent holding ``path``; registered as
    ``slicer.modules.<name lowercase>`` and ``slicer.modules.<Name>Instance``. Returns the Python module."""
    import slicer

    install()
    pyfile = Path(pyfile).resolve()
    name = pyfile.stem
    if str(pyfile.parent) not in sys.path:
        sys.path.insert(0, str(pyfile.parent))
    module = importlib.import_module(name)
    parent = types.SimpleNamespace(path=str(pyfile), name=name)
    instance = getattr(module, name)(parent)
    setattr(slicer.modules, name.lower(), _Module(name, None, str(pyfile)))
    getattr(slicer.modules, name.lower()).title = parent.title
    setattr(slicer.modules, f"{name}Instance", instance)
    return module


SliceRender = namedtuple("SliceRender", "path rgb ras_to_pixel")


def render_slice_png(volumeNode, overlay=None, view="Red", path=None, offset_ras=None, size=(256, 256),
                     foreground=None, foreground_opacity=0.5, field_of_view_mm=None):
    """Render slice view ``view`` offscreen as Slicer draws it and write a PNG (if ``path``).

    ``overlay``: a vtkMRMLSegmentationNode (drawn by vtkMRMLSegmentationsDisplayableManager2D) or a
    labelmap volume (the slice's label layer). ``foreground``: a volume shown over the background
    with ``foreground_opacity`` (its display node's colour table, e.g. a heat-map). ``offset_ras``: a
    number (slice offset in mm) or an R,A,S point the slice must pass through. The field of view is
    fitted to the background volume, or ``field_of_view_mm`` wide and centred on the ``offset_ras`` point.
    Returns SliceRender(path, rgb array [rows top-down, cols, 3], ras_to_pixel(r, a, s) -> (row, col)).
    """
    import numpy as np
    import slicer
    import vtk
    from vtk.util.numpy_support import vtk_to_numpy

    h = install()
    width, height = size
    logic = h.slice_logics[view]
    sliceNode, composite = logic.GetSliceNode(), logic.GetSliceCompositeNode()
    composite.SetBackgroundVolumeID(volumeNode.GetID() if volumeNode else None)
    composite.SetForegroundVolumeID(foreground.GetID() if foreground is not None else None)
    composite.SetForegroundOpacity(float(foreground_opacity))
    isLabel = overlay is not None and overlay.IsA("vtkMRMLLabelMapVolumeNode")
    composite.SetLabelVolumeID(overlay.GetID() if isLabel else None)
    if overlay is not None and overlay.IsA("vtkMRMLSegmentationNode"):
        overlay.CreateDefaultDisplayNodes()
        overlay.GetDisplayNode().SetVisibility(True)
    sliceNode.SetDimensions(width, height, 1)
    logic.FitSliceToBackground(width, height)
    if offset_ras is not None:
        if np.ndim(offset_ras) == 0:
            logic.SetSliceOffset(float(offset_ras))
        else:
            sliceNode.JumpSliceByOffsetting(*(float(x) for x in offset_ras))
            if field_of_view_mm:
                fov = sliceNode.GetFieldOfView()
                sliceNode.SetFieldOfView(float(field_of_view_mm), float(field_of_view_mm) * height / width, fov[2])
                sliceNode.JumpSliceByCentering(*(float(x) for x in offset_ras))
    # The events that refresh the layers in Slicer's GUI do not fire here (real-mrml.md): do it by hand.
    for layer in (logic.GetBackgroundLayer(), logic.GetForegroundLayer(), logic.GetLabelLayer()):
        if layer is not None:
            layer.UpdateTransforms()
    logic.UpdateImageData()

    renderer = vtk.vtkRenderer()
    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetSize(width, height)
    window.AddRenderer(renderer)
    interactor = vtk.vtkGenericRenderWindowInteractor()  # displayable managers dereference the interactor
    interactor.SetRenderWindow(window)
    mapper = vtk.vtkImageMapper()  # the slice logic's output is already RGBA 0..255
    mapper.SetInputConnection(logic.GetImageDataConnection())
    mapper.SetColorWindow(255)
    mapper.SetColorLevel(127.5)
    actor = vtk.vtkActor2D()
    actor.SetMapper(mapper)
    renderer.AddViewProp(actor)

    factory = slicer.vtkMRMLSliceViewDisplayableManagerFactory.GetInstance()
    factory.SetMRMLApplicationLogic(h.app_logic)
    if not factory.IsDisplayableManagerRegistered("vtkMRMLSegmentationsDisplayableManager2D"):
        factory.RegisterDisplayableManager("vtkMRMLSegmentationsDisplayableManager2D")
    group = slicer.vtkMRMLDisplayableManagerGroup()
    group.Initialize(factory, renderer)
    group.SetMRMLDisplayableNode(sliceNode)
    try:
        window.Render()
        grab = vtk.vtkWindowToImageFilter()
        grab.SetInput(window)
        grab.Update()
        image = grab.GetOutput()
        if path is not None:
            writer = vtk.vtkPNGWriter()
            writer.SetFileName(str(path))
            writer.SetInputData(image)
            writer.Write()
        nx, ny, _ = image.GetDimensions()
        pixels = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(ny, nx, -1)[::-1, :, :3].copy()
    finally:
        group.SetMRMLDisplayableNode(None)
        window.Finalize()

    rasToXY = vtk.vtkMatrix4x4()
    vtk.vtkMatrix4x4.Invert(sliceNode.GetXYToRAS(), rasToXY)

    def ras_to_pixel(r, a, s):
        x, y, _, _ = rasToXY.MultiplyPoint((r, a, s, 1.0))
        return int(round(ny - 1 - y)), int(round(x))

    return SliceRender(str(path) if path is not None else None, pixels, ras_to_pixel)
