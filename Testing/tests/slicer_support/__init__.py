"""Helpers for the Slicer-module tests (stand-in set-up, a scripted fake engine)."""
