"""A small slicer.parameterNodeWrapper that stores values the way Slicer's does (serializers.py,
wrapper.py): int/float/str/Path as str(value), bool as "True"/"False", MRML nodes as a node
reference plus an empty parameter of the same name; defaults are written into the node on
construction; validators raise ValueError, a wrong type raises TypeError.

Covered: int, float, str, bool, pathlib paths, vtkMRMLNode subclasses and Optional/Union of them,
the validators and Default. Not covered (raise at decoration time): list/tuple/dict, enums,
parameterPack, qt.QColor. ``connectGui`` binds the widget doubles of ``slicer_real.widgets`` (node
selectors and check boxes named by their SlicerParameterName property), both ways, as Slicer's
GUI connectors do for those widget kinds.
"""

import pathlib
import types
import typing

import slicer

__all__ = ["parameterNodeWrapper", "isParameterNodeWrapper", "Default", "Validator", "NotNone", "IsInstance",
           "WithinRange", "Minimum", "Maximum", "Choice", "Exclude"]


class Default:
    def __init__(self, value=None, *, generator=None):
        self._value, self.generator = value, generator

    @property
    def value(self):
        return self.generator() if self.generator else self._value


class Validator:
    def validate(self, value):
        raise NotImplementedError


class NotNone(Validator):
    def validate(self, value):
        if value is None:
            raise ValueError("Value must not be None")


class IsInstance(Validator):
    def __init__(self, classtype):
        self.classtype = classtype

    def validate(self, value):
        if value is not None and not isinstance(value, self.classtype):
            raise TypeError(f"Value must be of type '{self.classtype}', is type '{type(value)}' value '{value}'")


class WithinRange(Validator):
    def __init__(self, minimum, maximum):
        self.minimum, self.maximum = minimum, maximum

    def validate(self, value):
        if not self.minimum <= value <= self.maximum:
            raise ValueError(f"Value must be within range [{self.minimum}, {self.maximum}], is {value}")


class Minimum(Validator):
    def __init__(self, minimum):
        self.minimum = minimum

    def validate(self, value):
        if value < self.minimum:
            raise ValueError(f"Value must be greater than {self.minimum}, is {value}")


class Maximum(Validator):
    def __init__(self, maximum):
        self.maximum = maximum

    def validate(self, value):
        if value > self.maximum:
            raise ValueError(f"Value must be less than {self.maximum}, is {value}")


class Choice(Validator):
    def __init__(self, choices):
        self.choices = choices

    def validate(self, value):
        if value not in self.choices:
            raise ValueError(f"Value is {value}, but must be in one of the following: {self.choices}")


class Exclude(Validator):
    def __init__(self, excludedValues):
        self.excludedValues = excludedValues

    def validate(self, value):
        if value in self.excludedValues:
            raise ValueError(f"Value is {value}, but must not be an excluded value: {self.excludedValues}")


_PATHS = (pathlib.Path, pathlib.PosixPath, pathlib.WindowsPath, pathlib.PurePath, pathlib.PurePosixPath,
          pathlib.PureWindowsPath)


def _isNode(t):
    return isinstance(t, type) and issubclass(t, slicer.vtkMRMLNode)


class _Param:
    """One parameter: (de)serialisation + validators, as Slicer's serializer for that type."""

    def __init__(self, name, annotated, cls):
        base, extras = annotated, []
        if typing.get_origin(annotated) is typing.Annotated:
            base, *extras = typing.get_args(annotated)
        self.name = name
        self.validators = [e for e in extras if isinstance(e, Validator)]
        defaults = [e for e in extras if isinstance(e, Default)]
        args = typing.get_args(base) if typing.get_origin(base) in (typing.Union, types.UnionType) else ()
        if args and all(_isNode(a) or a is type(None) for a in args):  # Union/Optional of node types
            self.kind, self.validators = "node", [IsInstance(tuple(a for a in args if a is not type(None)))] + self.validators
        elif _isNode(base):
            self.kind, self.validators = "node", [IsInstance(base)] + self.validators
        elif base in (int, float, str, bool) or base in _PATHS:
            ok = (int, float) if base is float else base
            self.kind, self.validators = base, [NotNone(), IsInstance(ok)] + self.validators
        else:
            raise TypeError(f"slicer_real parameterNodeWrapper: unsupported type for {cls.__name__}.{name}: {annotated}")
        if name in cls.__dict__:
            self.default = Default(cls.__dict__[name])
        elif defaults:
            self.default = defaults[0]
        else:
            self.default = Default({"node": None, int: 0, float: 0, str: "", bool: False}.get(self.kind)
                                   if self.kind not in _PATHS else self.kind())

    def isIn(self, node, key):
        return node.HasParameter(key)

    def write(self, node, key, value):
        for v in self.validators:
            v.validate(value)
        if self.kind == "node":
            node.SetParameter(key, "")
            node.SetNodeReferenceID(key, value.GetID() if value is not None else None)
        elif self.kind is bool:
            node.SetParameter(key, "True" if value else "False")
        else:
            node.SetParameter(key, str(value))

    def read(self, node, key):
        if self.kind == "node":
            return node.GetNodeReference(key)
        if self.kind is bool:
            return node.GetParameter(key) == "True"
        return self.kind(node.GetParameter(key))


_RESERVED = ("allParameters", "default", "dataType", "getValue", "setValue", "connectGui", "connectParametersToGui",
             "disconnectGui", "StartModify", "EndModify", "AddObserver", "RemoveObserver", "Modified", "isCached")


def _processClass(cls):
    params = {n: _Param(n, t, cls) for n, t in typing.get_type_hints(cls, include_extras=True).items()}
    for name in params:
        setattr(cls, name, property(lambda self, n=name: self.getValue(n), lambda self, v, n=name: self.setValue(n, v)))
    for name in _RESERVED:
        if hasattr(cls, name):
            raise ValueError(f"Cannot use reserved name '{name}' in a parameterNodeWrapper")

    def __init__(self, parameterNode, prefix=None):
        self.parameterNode, self._prefix = parameterNode, prefix or ""
        for n, p in params.items():
            if not p.isIn(parameterNode, self._prefix + n):
                p.write(parameterNode, self._prefix + n, p.default.value)

    def _check(n):
        if n not in params:
            raise ValueError(f"Cannot find a param with the given name: {n}")
        return params[n]

    def getValue(self, n):
        return _check(n).read(self.parameterNode, self._prefix + n)

    def setValue(self, n, v):
        with slicer.util.NodeModify(self.parameterNode):
            _check(n).write(self.parameterNode, self._prefix + n, v)

    connections = {}

    def connectGui(self, gui):
        import vtk

        widgets = list(vars(gui).values()) if not hasattr(gui, "property") else [gui]
        bound = []
        for w in widgets:
            name = w.property("SlicerParameterName") if hasattr(w, "property") else None
            if not name:
                continue
            _check(name)
            if hasattr(w, "setCurrentNode"):
                signal, read = "currentNodeChanged(vtkMRMLNode*)", lambda w: w.currentNode()
                write = lambda w, v: w.setCurrentNode(v)  # noqa: E731
            elif hasattr(w, "checked"):
                signal, read = "toggled(bool)", lambda w: w.checked
                write = lambda w, v: setattr(w, "checked", bool(v))  # noqa: E731
            else:
                raise NotImplementedError(f"slicer_real: no GUI connector for {type(w).__name__} ({name})")
            slot = lambda *args, n=name, w=w, read=read: self.setValue(n, read(w))  # noqa: E731
            w.connect(signal, slot)
            bound.append((w, signal, slot, name, write))

        def update(*args):
            for w, _, _, n, write in bound:
                was = w.blockSignals(True)
                write(w, self.getValue(n))
                w.blockSignals(was)

        update()
        tag = self.parameterNode.AddObserver(vtk.vtkCommand.ModifiedEvent, update)
        connections[tag] = bound
        return tag

    def disconnectGui(self, tag):
        for w, signal, slot, _, _ in connections.pop(tag, []):
            w.disconnect(signal, slot)
        if tag is not None:
            self.parameterNode.RemoveObserver(tag)

    cls.__init__ = __init__
    cls.allParameters = params
    cls._is_parameter_node_wrapper = True
    cls.default = lambda self, n: _check(n).default
    cls.isCached = lambda self, n: (_check(n), False)[1]
    cls.dataType = staticmethod(lambda n: typing.get_type_hints(cls, include_extras=True)[_check(n).name])
    cls.getValue, cls.setValue = getValue, setValue
    cls.connectGui = cls.connectParametersToGui = connectGui
    cls.disconnectGui = disconnectGui
    cls.StartModify = lambda self: self.parameterNode.StartModify()
    cls.EndModify = lambda self, wasModified: self.parameterNode.EndModify(wasModified)
    cls.AddObserver = lambda self, event, callback, priority=0.0: self.parameterNode.AddObserver(event, callback, priority)
    cls.RemoveObserver = lambda self, tag: self.parameterNode.RemoveObserver(tag)
    cls.Modified = lambda self: self.parameterNode.Modified()
    return cls


def parameterNodeWrapper(classtype=None):
    return _processClass(classtype) if classtype is not None else _processClass


def isParameterNodeWrapper(classOrObj):
    return getattr(classOrObj, "_is_parameter_node_wrapper", False)
