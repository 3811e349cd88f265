"""Placeholder for CTK (``ctk``) module (testing stand-in: there is no Qt here).

Importing works so module files load; touching any attribute fails loudly, because the tests never
run Widget code.
"""


def __getattr__(name):
    raise AttributeError(f"ctk.{name}: the Slicer stand-in has no Qt (Widget code is not run in tests)")
