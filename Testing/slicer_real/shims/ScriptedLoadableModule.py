"""slicer.ScriptedLoadableModule without Qt, behaving as Slicer's Base/Python/slicer/ScriptedLoadableModule.py.

Module, Logic and Test classes do what Slicer's do (parameter-node singleton, selfTests
registration, messageDelay handling). The Widget class cannot be built: it needs a Qt parent.
"""

import importlib
import logging
import os
import unittest

import qt  # noqa: F401  (Slicer's module imports these too; here they are the harness shims)
import ctk  # noqa: F401
import vtk  # noqa: F401

import slicer

__all__ = ["ScriptedLoadableModule", "ScriptedLoadableModuleWidget", "ScriptedLoadableModuleLogic",
           "ScriptedLoadableModuleTest"]


class ScriptedLoadableModule:
    def __init__(self, parent):
        super().__init__()
        self.parent = parent
        self.moduleName = self.__class__.__name__
        parent.title = ""
        parent.categories = []
        parent.dependencies = []
        parent.contributors = ["(template authors)"]
        parent.helpText = "This module was created from a template and the help section has not yet been updated."
        parent.acknowledgementText = "This work is supported by NA-MIC, NAC, BIRN, NCIGT, and the Slicer Community."
        moduleDir = os.path.dirname(self.parent.path)
        for ext in (".svg", ".png"):
            iconPath = os.path.join(moduleDir, "Resources/Icons", self.moduleName + ext)
            if os.path.isfile(iconPath):
                parent.icon = qt.QIcon(iconPath)
                break
        if not hasattr(slicer, "selfTests"):
            slicer.selfTests = {}
        slicer.selfTests[self.moduleName] = self.runTest

    def resourcePath(self, filename):
        return os.path.join(os.path.dirname(self.parent.path), "Resources", filename)

    def getDefaultModuleDocumentationLink(self, docPage=None):
        url = slicer.app.documentationBaseUrl + docPage if docPage else slicer.app.moduleDocumentationUrl(self.moduleName)
        return f'<p>For more information see the <a href="{url}">online documentation</a>.</p>'

    def runTest(self, msec=100, **kwargs):
        module = importlib.import_module(self.__module__)
        className = self.moduleName + "Test"
        try:
            TestCaseClass = getattr(module, className)
        except AttributeError:
            raise AssertionError(f"Test case class not found: {self.__module__}.{className} ")
        testCase = TestCaseClass()
        testCase.messageDelay = msec
        testCase.runTest(**kwargs)


class _Layout:
    """The module panel's layout: keeps what setup() adds (widget doubles; nothing is drawn)."""

    def __init__(self):
        self.widgets = []

    def addWidget(self, widget, *args):
        self.widgets.append(widget)

    def addStretch(self, *args):
        pass


class _Panel:
    """The module panel (a qMRMLWidget in Slicer): ``isEntered`` as the module manager sets it."""

    def __init__(self):
        self.isEntered = False
        self._layout = _Layout()

    def layout(self):
        return self._layout


class ScriptedLoadableModuleWidget:
    """As Slicer's, on a panel double: ``setup()`` adds nothing of its own (no reload/test buttons:
    developer mode off). The module's own setup() then loads its .ui file, which works only inside
    ``slicer_real.widgets.headless_widgets()`` (the .ui file's widget doubles)."""

    def __init__(self, parent=None):
        self.parent = parent if parent is not None else _Panel()
        self.layout = self.parent.layout()
        self.moduleName = self.__class__.__name__
        if self.moduleName.endswith("Widget"):
            self.moduleName = self.moduleName[:-6]
        self.developerMode = False

    def resourcePath(self, filename):
        moduleDir = os.path.dirname(getattr(slicer.modules, self.moduleName.lower()).path)
        return os.path.join(moduleDir, "Resources", filename)

    def setup(self):
        pass

    def cleanup(self):
        pass

    def enter(self):
        pass

    def exit(self):
        pass


class ScriptedLoadableModuleLogic:
    def __init__(self, parent=None):
        super().__init__()
        self.moduleName = self.__class__.__name__
        if self.moduleName.endswith("Logic"):
            self.moduleName = self.moduleName[:-5]
        self.isSingletonParameterNode = True

    def getParameterNode(self):
        if self.isSingletonParameterNode:
            parameterNode = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
            if parameterNode:
                if parameterNode.GetAttribute("ModuleName") != self.moduleName:
                    parameterNode.SetAttribute("ModuleName", self.moduleName)
                return parameterNode
        else:
            for parameterNode in self.getAllParameterNodes():
                return parameterNode
        return slicer.mrmlScene.AddNode(self.createParameterNode())

    def getAllParameterNodes(self):
        scene = slicer.mrmlScene
        nodes = (scene.GetNthNodeByClass(i, "vtkMRMLScriptedModuleNode")
                 for i in range(scene.GetNumberOfNodesByClass("vtkMRMLScriptedModuleNode")))
        return [n for n in nodes if n.GetAttribute("ModuleName") == self.moduleName]

    def createParameterNode(self):
        if slicer.mrmlScene is None:
            return
        node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
        node.UnRegister(None)  # owned by the Python variable now (as in Slicer)
        if self.isSingletonParameterNode:
            node.SetSingletonTag(self.moduleName)
        node.SetAttribute("ModuleName", self.moduleName)
        node.SetName(slicer.mrmlScene.GenerateUniqueName(self.moduleName))
        return node


class ScriptedLoadableModuleTest(unittest.TestCase):
    def __init__(self, *args, **kwargs):
        self.moduleTestNames = []
        super().__init__(*args, **kwargs)
        super(unittest.TestCase, self).__init__()
        self.enableScreenshots = False
        self.screenshotScaleFactor = 1.0
        if not self.moduleTestNames:  # Slicer 5.12: every callable whose name contains "test"
            self.moduleTestNames = [m for m in dir(self) if "test" in m and callable(getattr(self, m))]

    def delayDisplay(self, message, requestedDelay=None, msec=None):
        if hasattr(self, "messageDelay"):
            msec = self.messageDelay
        if msec is None:
            msec = requestedDelay
        if msec is None:
            msec = 100
        slicer.util.delayDisplay(message, msec)  # < 400 ms: logs and processEvents(), no popup

    def takeScreenshot(self, name, description, type=-1):
        self.delayDisplay(description)
        if self.enableScreenshots:
            raise NotImplementedError("slicer_real: no layout manager to grab (use harness.render_slice_png)")

    def setUp(self):
        return

    def tearDown(self):
        return

    def runTest(self):
        if not self.moduleTestNames:
            logging.warning("No test is defined in " + self.__class__.__name__)
            return
        self.setUpClass()
        for name in self.moduleTestNames:
            self.setUp()
            logging.info(f"Running {name}")
            getattr(self, name)()
            self.tearDown()
        self.tearDownClass()
