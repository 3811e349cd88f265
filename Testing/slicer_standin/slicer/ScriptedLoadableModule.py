"""Stand-in base classes of slicer.ScriptedLoadableModule (testing only; not Slicer)."""

from __future__ import annotations

import os
import unittest

import slicer

__all__ = ["ScriptedLoadableModule", "ScriptedLoadableModuleWidget", "ScriptedLoadableModuleLogic",
           "ScriptedLoadableModuleTest"]


class ScriptedLoadableModule:
    def __init__(self, parent):
        self.parent = parent
        self.moduleName = self.__class__.__name__
        parent.title = ""
        parent.categories = []
        parent.dependencies = []
        parent.contributors = ["(template author)"]
        parent.helpText = ""
        parent.acknowledgementText = ""
        slicer.selfTests[self.moduleName] = self.runTest

    def resourcePath(self, filename):
        return os.path.join(os.path.dirname(self.parent.path), "Resources", filename)

    def runTest(self, msec=100, **kwargs):
        import importlib

        module = importlib.import_module(self.moduleName)
        test = getattr(module, self.moduleName + "Test")()
        test.runTest(**kwargs)


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None):
        raise NotImplementedError("the Slicer stand-in cannot build widgets (no Qt)")


class ScriptedLoadableModuleLogic:
    def __init__(self, parent=None):
        self.moduleName = self.__class__.__name__
        if self.moduleName.endswith("Logic"):
            self.moduleName = self.moduleName[: -len("Logic")]
        self.isSingletonParameterNode = True

    def getParameterNode(self):
        for node in slicer.mrmlScene.GetNodesByClass("vtkMRMLScriptedModuleNode"):
            if node.GetAttribute("ModuleName") == self.moduleName:
                return node
        node = self.createParameterNode()
        return slicer.mrmlScene.AddNode(node)

    def createParameterNode(self):
        node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
        node.SetAttribute("ModuleName", self.moduleName)
        node.SetName(self.moduleName)
        return node


class ScriptedLoadableModuleTest(unittest.TestCase):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.messageDelay = 0

    def delayDisplay(self, message, requestedDelay=None, msec=None):
        slicer.util.delayDisplay(message)

    def setUp(self):
        pass

    def tearDown(self):
        pass

    def runTest(self):
        pass
