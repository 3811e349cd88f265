"""Helpers for the Slicer-module tests: real Slicer set-up (slicer-core), geometry and slice-view
readings, Slicer's terminology, a scripted fake engine."""
