"""slicer.i18n as in Slicer (Base/Python/slicer/i18n.py): tr() finds the caller's context and calls
translate(), which asks slicer.app.translate(); the harness app has no translator, so text comes
back unchanged, as in an English Slicer."""

import os
import sys


def translate(context, text):
    try:
        from slicer import app
    except ImportError:
        return text
    return app.translate(context, text)


def getContext(sourceFile):
    """<package>.<file> when the file's folder has an __init__.py, else the file name without .py."""
    if os.path.isfile(sourceFile):
        name = os.path.basename(sourceFile).replace(".py", "")
        folder = os.path.dirname(sourceFile)
        return f"{os.path.basename(folder)}.{name}" if os.path.isfile(os.path.join(folder, "__init__.py")) else name
    return os.path.basename(sourceFile)


def tr(text):
    return translate(getContext(sys._getframe(1).f_code.co_filename), text)
