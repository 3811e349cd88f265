"""Stand-in for slicer.parameterNodeWrapper (testing only; not Slicer).

Supports what MedAI declares: str / bool / int / float and MRML node attributes, defaults from class
attributes, ``Annotated[..., Choice(...)]`` validation, and the reserved helpers the modules call
(``parameterNode``, ``connectGui``/``disconnectGui`` are GUI-only and raise here).
"""

from __future__ import annotations

import typing

import slicer


class Choice:
    def __init__(self, choices):
        self.choices = list(choices)


class Default:
    def __init__(self, value=None, *, generator=None):
        self.value, self.generator = value, generator


class WithinRange:
    def __init__(self, minimum, maximum):
        self.minimum, self.maximum = minimum, maximum


def _unwrap(annotation):
    extras = []
    if typing.get_origin(annotation) is typing.Annotated:
        annotation, *extras = typing.get_args(annotation)
    return annotation, extras


def _is_node_type(t):
    args = typing.get_args(t)
    if args:
        return all(_is_node_type(a) for a in args if a is not type(None))
    return isinstance(t, type) and issubclass(t, slicer.vtkMRMLNode)


def _make_property(name, annotation, default):
    base, extras = _unwrap(annotation)
    choices = next((e.choices for e in extras if isinstance(e, Choice)), None)
    for e in extras:
        if isinstance(e, Default):
            default = e.generator() if e.generator else e.value

    if _is_node_type(base):
        def fget(self):
            return self.parameterNode.GetNodeReference(name)

        def fset(self, value):
            self.parameterNode.SetNodeReferenceID(name, value.GetID() if value is not None else None)
        return property(fget, fset), None

    conv = {bool: lambda s: s == "True", int: int, float: float, str: str}[base]

    def fget(self):
        return conv(self.parameterNode.GetParameter(name))

    def fset(self, value):
        if not isinstance(value, base) or (base is int and isinstance(value, bool)):
            raise TypeError(f"{name} must be {base.__name__}, not {type(value).__name__}")
        if choices is not None and value not in choices:
            raise ValueError(f"{name}={value!r} is not one of {choices}")
        self.parameterNode.SetParameter(name, str(value))
    if default is None:
        default = base()
    return property(fget, fset), default


def parameterNodeWrapper(classtype=None):
    def wrap(cls):
        hints = typing.get_type_hints(cls, include_extras=True)
        defaults = {}
        for name, annotation in hints.items():
            prop, default = _make_property(name, annotation, cls.__dict__.get(name))
            setattr(cls, name, prop)
            defaults[name] = default

        def __init__(self, parameterNode, prefix=None):
            self.parameterNode = parameterNode
            for n, d in defaults.items():
                if d is not None and not parameterNode.GetParameter(n):
                    setattr(self, n, d)

        def connectGui(self, gui):
            raise NotImplementedError("stand-in: no GUI")

        cls.__init__ = __init__
        cls.connectGui = connectGui
        cls.disconnectGui = connectGui
        cls.AddObserver = lambda self, *a, **k: self.parameterNode.AddObserver(*a, **k)
        cls.RemoveObserver = lambda self, tag: self.parameterNode.RemoveObserver(tag)
        cls.allParameters = property(lambda self: {n: getattr(self, n) for n in defaults})
        return cls

    return wrap(classtype) if classtype is not None else wrap
