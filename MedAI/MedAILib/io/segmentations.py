"""Labelmap I/O: Slicer ``.seg.nrrd`` (through slicerio) and plain labelmap images (.nii.gz, .nrrd)."""

from __future__ import annotations

import colorsys
import logging
from pathlib import Path

import numpy as np
import slicerio
# The terminology string <-> dict helpers are not re-exported at slicerio's top level.
from slicerio.segmentation import terminology_entry_from_string, terminology_entry_to_string

from MedAILib.core import geometry
from MedAILib.core.atomic import atomic_output, full_suffix
from MedAILib.core.causes import error_from_memory, error_from_os
from MedAILib.core.errors import InputError, MedAIError
from MedAILib.core.volume import LabelInfo, Volume

log = logging.getLogger(__name__)


def default_color(value: int) -> tuple:
    """A distinct, stable colour for a label value without one (golden-ratio hue steps)."""
    h = (value * 0.618033988749895) % 1.0
    return tuple(round(c, 4) for c in colorsys.hsv_to_rgb(h, 0.65, 0.95))


def _is_seg_file(path: Path) -> bool:
    return full_suffix(path).lower() in (".seg.nrrd", ".seg.nhdr")


def read_segmentation(path) -> Volume:
    """Read a labelmap Volume with its label table.

    ``.seg.nrrd``: segment names, colours, label values and terminology come from the file;
    overlapping segments (several layers) are given distinct label values. Other formats: label
    names default to ``label_<value>``.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist", "check the path")
    if not _is_seg_file(path):
        from MedAILib.io.images import read_image

        vol = read_image(path)
        if not np.issubdtype(vol.array.dtype, np.integer):
            if not np.allclose(vol.array, np.round(vol.array)):
                raise InputError(f"{path.name} holds non-integer values, so it is not a labelmap",
                                 "give a labelmap (integer label values) or a .seg.nrrd file")
            vol.array = np.round(vol.array).astype(np.int16)
        values = [int(v) for v in np.unique(vol.array) if v != 0]
        vol.labels = [LabelInfo(v, f"label_{v}", default_color(v)) for v in values]
        return vol
    from MedAILib.io.diagnose import check_readable, diagnose_unreadable
    from MedAILib.io.images import check_header_size

    check_readable(path)
    if path.is_file() and path.stat().st_size == 0:
        raise InputError(f"{path.name} is empty (0 bytes)", "the file was not written completely; save it again")
    if path.is_file():
        check_header_size(path)  # limits from the NRRD header, before slicerio allocates the voxels
    try:
        seg = slicerio.read_segmentation(str(path))
    except MemoryError:
        raise error_from_memory(path.name) from None
    except Exception as e:  # slicerio raises IOError/ValueError/nrrd errors for bad files
        cause = diagnose_unreadable(path, e) if path.is_file() and path.stat().st_size > 0 else None
        if cause is not None:
            raise cause from e
        raise InputError(f"{path.name} is not a readable segmentation file ({str(e)[:200]})",
                         "re-save it from Slicer (Segmentations > export) or check it was copied fully") from e
    voxels = np.asarray(seg["voxels"])
    segments = seg.get("segments", [])
    m = geometry.ijk_to_ras_from_ijk_to_lps(seg["ijkToLPS"])
    labels = []
    if voxels.ndim == 4:
        # Overlapping segments live in separate layers; flatten them into one labelmap with new values.
        out = np.zeros(voxels.shape[1:], dtype=np.uint16)
        for n, s in enumerate(segments, start=1):
            mask = voxels[s.get("layer", 0)] == s["labelValue"]
            if np.any(out[mask]):
                log.warning("segment %r overlaps another; overlapping voxels go to the later segment", s.get("name"))
            out[mask] = n
            labels.append(_label_from_segment(s, n))
        karray = out.transpose(2, 1, 0)
    else:
        karray = voxels.transpose(2, 1, 0)
        labels = [_label_from_segment(s, int(s["labelValue"])) for s in segments]
    return Volume(np.ascontiguousarray(karray), m, labels, {"source": str(path)})


def _label_from_segment(s: dict, value: int) -> LabelInfo:
    term = s.get("terminology")
    term_str = terminology_entry_to_string(term) if term else None
    color = tuple(s.get("color", default_color(value)))
    return LabelInfo(value, s.get("name", s.get("id", f"label_{value}")), color, term_str)


# gzip level for .seg.nrrd voxels. slicerio's default (9) spends ~10x the time of level 1 on label
# maps (2 s vs 0.2 s at 256^3) for files that stay tiny either way; the voxels read back identical.
SEG_NRRD_GZIP_LEVEL = 1


def write_segmentation(volume: Volume, path) -> Path:
    """Write a labelmap Volume as ``.seg.nrrd`` (segments with names, colours, terminology) or as a
    plain labelmap image (.nii.gz etc.). Atomic: a partial file never appears under ``path``."""
    path = Path(path)
    try:
        return _write_segmentation(volume, path)
    except MedAIError:
        raise
    except OSError as e:
        raise error_from_os(e, path, "write") from e


def _write_segmentation(volume: Volume, path: Path) -> Path:
    if not _is_seg_file(path):
        from MedAILib.io.images import write_image

        arr = volume.array
        if arr.dtype not in (np.uint8, np.int16, np.uint16, np.int32):
            arr = arr.astype(np.uint8 if arr.max(initial=0) < 256 else np.uint16)
        return write_image(volume.with_array(arr, labels=volume.labels), path)
    arr = np.asarray(volume.array)
    if not np.issubdtype(arr.dtype, np.integer):
        arr = np.round(arr).astype(np.int32)
    present = set(int(v) for v in np.unique(arr)) - {0}
    labels = list(volume.labels) if volume.labels is not None else []
    known = {l.value for l in labels}
    labels += [LabelInfo(v, f"label_{v}", default_color(v)) for v in sorted(present - known)]
    segments = []
    for n, l in enumerate(labels, start=1):
        seg = {"id": f"Segment_{l.value}", "labelValue": int(l.value), "layer": 0, "name": l.name,
               "color": [float(c) for c in l.color]}
        if l.terminology:
            seg["terminology"] = terminology_entry_from_string(l.terminology)
        segments.append(seg)
    dtype = np.uint8 if max([l.value for l in labels] + [int(arr.max(initial=0))]) < 256 else np.uint16
    segmentation = {
        "voxels": np.asarray(arr.transpose(2, 1, 0), dtype=dtype),
        "ijkToLPS": geometry.ijk_to_lps_from_ijk_to_ras(volume.ijk_to_ras),
        "segments": segments,
        "containedRepresentationNames": ["Binary labelmap"],
        "masterRepresentation": "Binary labelmap",
    }
    with atomic_output(path) as tmp:
        slicerio.write_segmentation(str(tmp), segmentation, compression_level=SEG_NRRD_GZIP_LEVEL)
    return path
