"""Qt-less doubles of the widgets in a module's .ui file, so a module's Widget class can run its own
``setup()`` and button handlers on real MRML (slicer-core has no Qt).

What a double does: it holds the properties the module reads and writes (``text``, ``enabled``,
``value``, ``checked``, ``toolTip``, ``visible``), the items of combo and list boxes, the current
node of MRML node selectors (real MRML nodes), and the signal connections the module makes
(``widget.connect("clicked(bool)", slot)``). A test "clicks" with ``button.click()`` or sets a
selector with ``setCurrentNode(node)``, which calls the connected slots as Qt would. Nothing is
drawn and there is no event loop: timers fire only when a test calls ``timer.fire()``.

``headless_widgets()`` makes ``slicer.util.loadUI`` / ``childWidgetVariables`` return these doubles
(read from the same .ui file Designer wrote) while it is active.
"""

from __future__ import annotations

import contextlib
import types
import xml.etree.ElementTree as ET


def _accepted(slot, offered: int) -> int:
    """How many of a signal's arguments PythonQt passes: as many as the Python slot takes
    (``connect("clicked(bool)", self.onApply)`` with ``def onApply(self)`` gets none)."""
    import inspect

    try:
        params = inspect.signature(slot).parameters.values()
    except (TypeError, ValueError):
        return offered
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return offered
    return min(offered, sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params))


class Widget:
    """QWidget: properties, dynamic properties, signal connections."""

    def __init__(self, name="", cls="QWidget", properties=None):
        self.objectName, self.className = name, cls
        self._slots, self._blocked, self._dynamic = {}, False, {}
        self.enabled, self.visible, self.toolTip, self.text = True, True, "", ""
        for key, value in (properties or {}).items():
            setattr(self, key, value)

    # signals ------------------------------------------------------------------------------------
    def connect(self, signal, slot):
        self._slots.setdefault(signal, []).append(slot)
        return True

    def disconnect(self, signal, slot=None):
        self._slots[signal] = [s for s in self._slots.get(signal, []) if slot is not None and s != slot]

    def emit(self, signal, *args):
        if not self._blocked:
            for slot in list(self._slots.get(signal, [])):
                slot(*args[:_accepted(slot, len(args))])

    def blockSignals(self, block):
        previous, self._blocked = self._blocked, bool(block)
        return previous

    # misc ---------------------------------------------------------------------------------------
    def property(self, name):
        return self._dynamic.get(name)

    def setProperty(self, name, value):
        self._dynamic[name] = value

    def hide(self):
        self.visible = False

    def show(self):
        self.visible = True

    def setMRMLScene(self, scene):
        self.mrmlScene = scene


class Button(Widget):
    def click(self):
        if self.enabled:
            self.emit("clicked(bool)", False)
            self.emit("clicked()")


class CheckBox(Widget):
    def __init__(self, *a, **k):
        self._checked = False
        super().__init__(*a, **k)

    @property
    def checked(self):
        return self._checked

    @checked.setter
    def checked(self, value):
        changed = bool(value) != self._checked
        self._checked = bool(value)
        if changed:
            self.emit("toggled(bool)", self._checked)


class Slider(Widget):
    def __init__(self, *a, **k):
        self._value = 0.0
        super().__init__(*a, **k)

    @property
    def value(self):
        return self._value

    @value.setter
    def value(self, v):
        self._value = v
        self.emit("valueChanged(double)", v)


class ProgressBar(Widget):
    value = 0


class LineEdit(Widget):
    placeholderText = ""


class PlainTextEdit(Widget):
    def __init__(self, *a, **k):
        self.plainText = ""
        super().__init__(*a, **k)

    def appendPlainText(self, text):
        self.plainText += ("\n" if self.plainText else "") + str(text)

    def clear(self):
        self.plainText = ""


class ComboBox(Widget):
    def __init__(self, *a, items=(), **k):
        self._items, self._index = [], -1
        super().__init__(*a, **k)
        for text in items:
            self.addItem(text)

    def addItem(self, text, data=None):
        self._items.append((str(text), data))
        if self._index < 0:
            self.currentIndex = 0

    def clear(self):
        self._items = []
        self.currentIndex = -1

    @property
    def count(self):
        return len(self._items)

    @property
    def currentIndex(self):
        return self._index

    @currentIndex.setter
    def currentIndex(self, i):
        i = i if 0 <= i < len(self._items) else -1
        changed = i != self._index
        self._index = i
        if changed:
            self.emit("currentIndexChanged(int)", i)

    @property
    def currentText(self):
        return self._items[self._index][0] if self._index >= 0 else ""

    @property
    def currentData(self):
        return self._items[self._index][1] if self._index >= 0 else None


class ListWidgetItem:
    """QListWidgetItem (also qt.QListWidgetItem in the harness's qt shim)."""

    def __init__(self, text=""):
        self._text, self._flags, self._state, self.listWidget = str(text), 0, 0, None

    def text(self):
        return self._text

    def flags(self):
        return self._flags

    def setFlags(self, flags):
        self._flags = flags

    def checkState(self):
        return self._state

    def setCheckState(self, state):
        changed = state != self._state
        self._state = state
        if changed and self.listWidget is not None:
            self.listWidget.emit("itemChanged(QListWidgetItem*)", self)


class ListWidget(Widget):
    def __init__(self, *a, **k):
        self._items = []
        super().__init__(*a, **k)

    def addItem(self, item):
        item = item if isinstance(item, ListWidgetItem) else ListWidgetItem(item)
        item.listWidget = self
        self._items.append(item)

    def clear(self):
        self._items = []

    @property
    def count(self):
        return len(self._items)

    def item(self, i):
        return self._items[i]


class NodeComboBox(Widget):
    """qMRMLNodeComboBox: the current node is a real MRML node (or None)."""

    def __init__(self, *a, nodeTypes=(), **k):
        self._node = None
        self.nodeTypes = list(nodeTypes)
        super().__init__(*a, **k)

    def currentNode(self):
        if self._node is not None and self._node.GetScene() is None:  # removed from the scene
            self._node = None
        return self._node

    def setCurrentNode(self, node):
        if node is not None and self.nodeTypes and not any(node.IsA(t) for t in self.nodeTypes):
            raise TypeError(f"{self.objectName} takes {self.nodeTypes}, not {node.GetClassName()}")
        changed = node is not self._node
        self._node = node
        if changed:
            self.emit("currentNodeChanged(vtkMRMLNode*)", node)
            self.emit("currentNodeChanged(bool)", node is not None)

    def currentNodeID(self):
        node = self.currentNode()
        return node.GetID() if node is not None else ""


class SegmentSelector(NodeComboBox):
    """qMRMLSegmentSelectorWidget: a segmentation node and one of its segment IDs."""

    def __init__(self, *a, **k):
        self._segment = ""
        super().__init__(*a, nodeTypes=("vtkMRMLSegmentationNode",), **k)

    def currentSegmentID(self):
        return self._segment

    def setCurrentSegmentID(self, segmentId):
        self._segment = segmentId or ""


CLASSES = {"QPushButton": Button, "QToolButton": Button, "ctkCollapsibleButton": Widget, "QCheckBox": CheckBox,
           "ctkCheckBox": CheckBox, "QRadioButton": CheckBox, "QComboBox": ComboBox, "ctkComboBox": ComboBox,
           "QListWidget": ListWidget, "QProgressBar": ProgressBar, "QLineEdit": LineEdit,
           "QPlainTextEdit": PlainTextEdit, "QTextEdit": PlainTextEdit, "ctkSliderWidget": Slider, "QSlider": Slider,
           "QSpinBox": Slider, "QDoubleSpinBox": Slider, "qMRMLNodeComboBox": NodeComboBox,
           "qMRMLSegmentSelectorWidget": SegmentSelector}


def _value(prop):
    for tag, convert in (("string", str), ("bool", lambda s: s == "true"), ("number", float), ("double", float)):
        el = prop.find(tag)
        if el is not None:
            return convert(el.text or "")
    el = prop.find("stringlist")
    if el is not None:
        return [s.text for s in el.findall("string")]
    return None


def load_ui(path):
    """The top-level double of a .ui file; its children are in ``.children`` by objectName."""
    root = ET.parse(path).getroot().find("widget")
    children = {}
    for w in root.iter("widget"):
        cls, name = w.get("class"), w.get("name")
        props = {p.get("name"): _value(p) for p in w.findall("property")}
        dynamic = {k: props.pop(k) for k in list(props) if k == "SlicerParameterName"}
        known = {k: v for k, v in props.items() if k in ("text", "enabled", "toolTip", "checked", "value", "placeholderText")
                 and v is not None}
        extra = {}
        if cls in ("QComboBox", "ctkComboBox"):
            extra["items"] = [_value(i.find("property")) for i in w.findall("item")]
        if cls == "qMRMLNodeComboBox":
            extra["nodeTypes"] = props.get("nodeTypes") or ()
        double = CLASSES.get(cls, Widget)(name, cls, **extra)
        for k, v in known.items():
            if k == "value" and cls == "QProgressBar":
                v = int(v)
            setattr(double, k, v)
        for k, v in dynamic.items():
            double.setProperty(k, v)
        children[name] = double
    top = children.pop(root.get("name"))
    top.children = children
    return top


@contextlib.contextmanager
def headless_widgets():
    """While active, ``slicer.util.loadUI(path)`` returns the .ui file's doubles and
    ``childWidgetVariables(ui)`` a namespace of them by objectName (what the modules' setup() uses)."""
    import slicer

    saved = slicer.util.loadUI, slicer.util.childWidgetVariables
    slicer.util.loadUI = load_ui
    slicer.util.childWidgetVariables = lambda top: types.SimpleNamespace(**top.children)
    try:
        yield
    finally:
        slicer.util.loadUI, slicer.util.childWidgetVariables = saved
