"""Reading and writing images and segmentations. Every path in and out of MedAILib goes through here."""

from MedAILib.io.images import from_sitk, read_image, to_sitk, write_image, SUPPORTED_IMAGE_SUFFIXES  # noqa: F401
from MedAILib.io.dicom import DicomSeries, list_dicom_series, read_dicom_series  # noqa: F401
from MedAILib.io.segmentations import read_segmentation, write_segmentation  # noqa: F401
