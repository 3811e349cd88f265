"""Why an image file cannot be read, in the user's terms: permission, wrong format for its
extension, truncated, a missing data file, or corrupt.

A reader (ITK) only says "could not read"; telling a person to "re-export a corrupt file" when the
file is merely unreadable by them (permissions), misnamed (an NRRD called ``.nii.gz``) or cut short
(an interrupted copy) sends them the wrong way. The checks here look at the first bytes and the
header only; they run after a read failed (or, for permissions, before reading).
"""

from __future__ import annotations

import gzip
import os
import re
import zlib
from pathlib import Path
from typing import Optional

from MedAILib.core.atomic import full_suffix
from MedAILib.core.causes import error_from_os
from MedAILib.core.errors import InputError

# format key -> (name for people, the extension to use)
FORMATS = {
    "nifti": ("NIfTI", ".nii.gz"), "nrrd": ("NRRD", ".nrrd"), "meta": ("MetaImage", ".mha"),
    "dicom": ("DICOM", ".dcm"), "png": ("PNG", ".png"), "jpeg": ("JPEG", ".jpg"), "tiff": ("TIFF", ".tif"),
    "pdf": ("PDF", ".pdf"), "zip": ("ZIP", ".zip"), "hdf5": ("HDF5", ".h5"), "gif": ("GIF", ".gif"),
    "bmp": ("BMP", ".bmp"), "json": ("JSON text", ".json"), "analyze": ("Analyze 7.5", ".hdr"),
}
BY_SUFFIX = {".nii": "nifti", ".nii.gz": "nifti", ".nrrd": "nrrd", ".nhdr": "nrrd", ".seg.nrrd": "nrrd",
             ".seg.nhdr": "nrrd", ".mha": "meta", ".mhd": "meta", ".dcm": "dicom"}
_META_TYPES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
               "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4,
               "MET_DOUBLE": 8}


def check_readable(path: Path) -> None:
    """Raise an InputError saying "permission denied" (or the real cause) when ``path`` cannot be
    opened: a reader would otherwise call the file corrupt."""
    try:
        if path.is_dir():
            os.listdir(path)
        else:
            with open(path, "rb") as f:
                f.read(1)
    except OSError as e:
        raise error_from_os(e, path, "read") from None


def _head(path: Path, n: int = 2048) -> tuple:
    """(first ``n`` bytes, gzip-compressed?) — of the decompressed stream for a gzip file."""
    with open(path, "rb") as f:
        raw = f.read(n)
    if raw[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as g:
                return g.read(n), True
        except (OSError, EOFError, zlib.error):
            return raw, True
    return raw, False


def sniff_format(path: Path) -> Optional[str]:
    """The format key (see FORMATS) the file's content shows, or None when the bytes say nothing."""
    try:
        head, _ = _head(path)
    except OSError:
        return None
    if len(head) >= 348 and int.from_bytes(head[:4], "little") in (348, 540) or \
            len(head) >= 348 and int.from_bytes(head[:4], "big") in (348, 540):
        if head[344:348] in (b"n+1\0", b"ni1\0") or head[4:8] in (b"n+2\0", b"ni2\0"):
            return "nifti"
        return "analyze"
    if head.startswith(b"NRRD000"):
        return "nrrd"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    text = head[:400].decode("latin-1")
    if re.search(r"(?m)^\s*(ObjectType|NDims)\s*=", text):
        return "meta"
    for magic, key in ((b"\x89PNG", "png"), (b"\xff\xd8\xff", "jpeg"), (b"II*\0", "tiff"), (b"MM\0*", "tiff"),
                       (b"%PDF", "pdf"), (b"PK\x03\x04", "zip"), (b"\x89HDF", "hdf5"), (b"GIF8", "gif")):
        if head.startswith(magic):
            return key
    if head.startswith(b"BM") and len(head) > 14:
        return "bmp"
    if head.lstrip()[:1] in (b"{", b"[") and b"\0" not in head:
        return "json"
    return None


def _wrong_format(path: Path, found: str, expected: Optional[str]) -> InputError:
    fname, fsuffix = FORMATS[found]
    ename = f", not {FORMATS[expected][0]}" if expected else ""
    return InputError(f"{path.name} is a {fname} file{ename}: wrong format for its extension "
                      f"{full_suffix(path) or '(none)'}",
                      f"rename it to end in {fsuffix}" + (" and open it again" if found in BY_SUFFIX.values()
                                                          else ", or give the image itself (NIfTI, NRRD, "
                                                               "MetaImage or a DICOM folder)"))


def _nrrd_truncation(path: Path) -> Optional[InputError]:
    """Compare the data an NRRD header announces with what the file holds."""
    import numpy as np

    try:
        import nrrd
        from nrrd.reader import _determine_datatype

        with open(path, "rb") as f:
            raw = f.read(1 << 16)
        end = raw.find(b"\n\n")
        if end < 0 and len(raw) < (1 << 16):  # a detached header (.nhdr) may end without a blank line
            end = len(raw.rstrip(b"\n"))
        if end < 0:
            return None
        header = nrrd.read_header([l.decode("latin-1") for l in raw[:end].split(b"\n")])
        if "data file" in header or "datafile" in header or "line skip" in header or "byte skip" in header:
            return _detached_missing(path, header.get("data file") or header.get("datafile"))
        expected = int(np.prod(header["sizes"])) * _determine_datatype(header).itemsize
        offset = end + 2
    except Exception:  # noqa: BLE001 - a header pynrrd cannot parse: the caller says "corrupt"
        return None
    encoding = str(header.get("encoding", "raw")).lower()
    if encoding == "raw":
        got = path.stat().st_size - offset
    elif encoding in ("gzip", "gz"):
        got, complete = _inflate_count(path, offset, expected, wbits=16 + zlib.MAX_WBITS)
        if not complete and got < expected:
            return _truncated(path, got, expected, compressed=True)
    else:
        return None
    return _truncated(path, got, expected) if got < expected else None


def _meta_truncation(path: Path) -> Optional[InputError]:
    """Compare the data a MetaImage (.mha/.mhd) header announces with what the file holds."""
    try:
        with open(path, "rb") as f:
            raw = f.read(1 << 16)
        m = re.search(rb"(?m)^\s*ElementDataFile\s*=\s*(.*?)\s*$", raw)
        if not m:
            return None
        fields = dict((k.strip().lower(), v.strip()) for k, v in
                      (l.split("=", 1) for l in raw[:m.start()].decode("latin-1").splitlines() if "=" in l))
        data_file = m.group(1).decode("latin-1")
        offset = m.end() + 1 if raw[m.end():m.end() + 1] == b"\n" else m.end()
        dims = [int(x) for x in fields["dimsize"].split()]
        itemsize = _META_TYPES[fields["elementtype"].upper()] * int(fields.get("elementnumberofchannels", "1"))
        expected = itemsize
        for d in dims:
            expected *= d
        compressed = fields.get("compresseddata", "false").lower() == "true"
    except Exception:  # noqa: BLE001 - not a header we understand: the caller says "corrupt"
        return None
    if data_file.upper() != "LOCAL":
        return _detached_missing(path, data_file)
    if compressed:
        got, complete = _inflate_count(path, offset, expected, wbits=zlib.MAX_WBITS)
        if not complete and got < expected:
            return _truncated(path, got, expected, compressed=True)
        return None
    got = path.stat().st_size - offset
    return _truncated(path, got, expected) if got < expected else None


def _detached_missing(path: Path, data_file) -> Optional[InputError]:
    if not data_file or str(data_file).upper() == "LOCAL" or "%" in str(data_file) or str(data_file).startswith("LIST"):
        return None
    data = Path(str(data_file).split()[0])
    data = data if data.is_absolute() else path.parent / data
    if not data.exists():
        return InputError(f"{path.name} is only a header: its data file {data.name} (named in the header) is missing",
                          f"copy {data.name} into {data.parent} next to {path.name}, or export a single-file "
                          "image (.nrrd, .mha, .nii.gz)")
    return None


def _inflate_count(path: Path, offset: int, expected: int, wbits: int) -> tuple:
    """(decompressed bytes, stream complete?) of a zlib/gzip stream from ``offset``, stopping at ``expected``."""
    d = zlib.decompressobj(wbits)
    got = 0
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            while got < expected:
                block = f.read(1 << 16)
                if not block:
                    break
                got += len(d.decompress(block, max(1, expected - got)))
                while d.unconsumed_tail and got < expected:
                    got += len(d.decompress(d.unconsumed_tail, max(1, expected - got)))
                if d.eof:
                    return got, True
    except zlib.error:
        return got, False
    return got, d.eof or got >= expected


def _truncated(path: Path, got: int, expected: int, compressed: bool = False) -> InputError:
    what = "its compressed data ends early" if compressed else "the file ends early"
    return InputError(f"{path.name} is truncated ({what}: {max(got, 0):,} of {expected:,} bytes of image data)",
                      "the file was not copied or written completely; copy or export it again")


def diagnose_unreadable(path: Path, error: Exception, reader_said: str = "") -> Optional[InputError]:
    """The real cause of a failed read of ``path``, or None when nothing more specific than
    "corrupt" can be said."""
    path = Path(path)
    try:
        check_readable(path)
    except InputError as e:
        return e
    expected = BY_SUFFIX.get(full_suffix(path).lower())
    found = sniff_format(path)
    if found is not None and expected is not None and found != expected:
        return _wrong_format(path, found, expected)
    if found in ("nifti", "nrrd", "meta", "dicom") and expected is None:
        return _wrong_format(path, found, None)
    if expected == "nrrd" and found == "nrrd":
        cause = _nrrd_truncation(path)
        if cause is not None:
            return cause
    if expected == "meta" and found == "meta":
        cause = _meta_truncation(path)
        if cause is not None:
            return cause
    if expected is not None and found is None:
        name = FORMATS[expected][0]
        return InputError(f"{path.name} could not be read: it does not start like a {name} file (the file is "
                          "corrupt, or not an image at all)",
                          "check that it is the right file; copy or export it again"
                          + (f" (reader said: {reader_said})" if reader_said else ""))
    return None
