"""Reading and writing images and segmentations. Every path in and out of MedAILib goes through here.

The names below load their module on first use: reading a NIfTI file must not import slicerio or
pydicom (start-up time of every ``medai`` command and of the warm engine's clients)."""

import importlib

_NAMES = {
    "MedAILib.io.images": ("from_sitk", "read_image", "to_sitk", "write_image", "SUPPORTED_IMAGE_SUFFIXES"),
    "MedAILib.io.dicom": ("DicomSeries", "list_dicom_series", "read_dicom_series"),
    "MedAILib.io.segmentations": ("read_segmentation", "write_segmentation"),
}
_MODULE_OF = {name: module for module, names in _NAMES.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value
