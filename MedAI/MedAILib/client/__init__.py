"""Clients of the warm engine (``medai serve``): :mod:`.remote` talks to an HTTP server,
:mod:`.command` runs a ``medai segment|classify|synthesize`` command line on one (``--server``).
Standard library only, so the Slicer side uses the same code."""
