"""Qt-less stand-in for PythonQt's ``qt`` module (installed as ``qt`` by slicer_real.harness).

Only non-widget helpers that Slicer's own ``slicer.util`` calls from Logic code exist here
(``tempDirectory`` uses QDir/QFileInfo/QLocale/QDateTime; ``confirm*Display`` use QMessageBox
button values; modules use Qt.Checked...), plus the two non-widget objects the modules' Widget
classes make: ``QTimer`` (no event loop: it fires only when a test calls ``fire()``) and
``QListWidgetItem``. Enum values are Qt 5's. Any widget class raises AttributeError: widgets come
from the .ui file as the doubles of ``slicer_real.widgets`` (``headless_widgets()``).
"""

import datetime
import os


class Qt:
    Unchecked, PartiallyChecked, Checked = 0, 1, 2
    ItemIsSelectable, ItemIsEditable, ItemIsUserCheckable, ItemIsEnabled = 1, 2, 16, 32
    UserRole = 256
    WaitCursor = 3
    ShiftModifier = 0x02000000


class QMessageBox:
    NoButton, Ok, Yes, No, Retry, Close, Cancel = 0, 0x400, 0x4000, 0x10000, 0x80000, 0x200000, 0x400000
    NoIcon, Information, Warning, Critical, Question = 0, 1, 2, 3, 4


class QIcon:
    """ScriptedLoadableModule.__init__ sets parent.icon = qt.QIcon(path) when an icon file exists."""

    def __init__(self, path=""):
        self.path = path

    def isNull(self):
        return not self.path


class QDir:
    def __init__(self, path=""):
        self._path = os.path.abspath(path.absolutePath() if isinstance(path, QDir) else (path or "."))

    def absolutePath(self):
        return self._path

    def mkpath(self, path):
        os.makedirs(path, exist_ok=True)
        return True


class QFileInfo:
    def __init__(self, directory, name=None):
        base = directory.absolutePath() if isinstance(directory, QDir) else str(directory)
        self._path = os.path.join(base, name) if name is not None else base

    def absoluteFilePath(self):
        return os.path.abspath(self._path)


class QDateTime:
    def __init__(self, value):
        self._value = value

    @staticmethod
    def currentDateTime():
        return QDateTime(datetime.datetime.now())


class QLocale:
    English, UnitedStates = 31, 225

    def __init__(self, *args):
        pass

    def toString(self, value, fmt):
        """The one format slicer.util.tempDirectory asks for: 'yyyy-MM-dd_hh+mm+ss.zzz'."""
        if fmt != "yyyy-MM-dd_hh+mm+ss.zzz":
            raise NotImplementedError(f"qt shim: QLocale.toString format {fmt!r}")
        d = value._value
        return d.strftime("%Y-%m-%d_%H+%M+%S.") + f"{d.microsecond // 1000:03d}"


class QTimer:
    """A timer without an event loop: ``start()``/``stop()``/``isActive()`` as Qt's; the connected
    ``timeout()`` slots run when a test calls ``fire()`` (what Qt's event loop would do)."""

    def __init__(self, parent=None):
        self.interval, self._active, self._slots = 0, False, []

    def setInterval(self, msec):
        self.interval = int(msec)

    def connect(self, signal, slot):
        if signal != "timeout()":
            raise AttributeError(f"QTimer has no signal {signal!r}")
        self._slots.append(slot)
        return True

    def start(self, msec=None):
        if msec is not None:
            self.interval = int(msec)
        self._active = True

    def stop(self):
        self._active = False

    def isActive(self):
        return self._active

    def fire(self):
        if self._active:
            for slot in list(self._slots):
                slot()


def __getattr__(name):
    if name == "QListWidgetItem":  # the double that slicer_real.widgets' list widget holds
        from slicer_real.widgets import ListWidgetItem

        return ListWidgetItem
    raise AttributeError(f"qt.{name}: slicer_real has no Qt (only MRML and Logic run here, not Widget code)")
