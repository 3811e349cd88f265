"""Qt-less stand-in for PythonQt's ``qt`` module (installed as ``qt`` by slicer_real.harness).

Only non-widget helpers that Slicer's own ``slicer.util`` calls from Logic code exist here
(``tempDirectory`` uses QDir/QFileInfo/QLocale/QDateTime; ``confirm*Display`` use QMessageBox
button values; modules use Qt.Checked...). Enum values are Qt 5's. Any widget class raises
AttributeError, because there is no GUI: Widget code is not run against this harness.
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


def __getattr__(name):
    raise AttributeError(f"qt.{name}: slicer_real has no Qt (only MRML and Logic run here, not Widget code)")
