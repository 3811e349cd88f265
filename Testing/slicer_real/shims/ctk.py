"""Qt-less stand-in for CTK's ``ctk`` module (installed as ``ctk`` by slicer_real.harness).

Importing works, because Slicer's ScriptedLoadableModule and module files import it; every CTK
class is a widget, so touching any attribute fails loudly.
"""


def __getattr__(name):
    raise AttributeError(f"ctk.{name}: slicer_real has no Qt/CTK (only MRML and Logic run here, not Widget code)")
