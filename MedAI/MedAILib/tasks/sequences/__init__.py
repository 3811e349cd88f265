"""Sequences (4D / cine): segment every frame of a 4D image or DICOM cine with a segmentation
bundle, in batches of frames, optionally with temporal smoothing; 4D label output.
The Sunnybrook left-ventricle model (trained here) and its evaluation live in :mod:`.cine_lv`,
:mod:`.trainer` and :mod:`.evaluate`."""
