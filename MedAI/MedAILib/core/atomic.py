"""Write files so that a partial file never looks complete: temp name in the same folder, then rename."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import uuid
from pathlib import Path

# Multi-part suffixes that writers (SimpleITK, slicerio) read to pick the format.
_COMPOUND = (".nii.gz", ".seg.nrrd", ".seg.nhdr", ".tar.gz")


def full_suffix(path) -> str:
    name = Path(path).name.lower()
    for s in _COMPOUND:
        if name.endswith(s):
            return Path(path).name[-len(s):]
    return Path(path).suffix


@contextlib.contextmanager
def atomic_output(path):
    """Yield a temporary path next to ``path`` with the same suffix; rename it into place on success.

    On any error the temporary file is removed, so a crash, a full disk or a cancel never leaves a
    half-written file under the final name. A file that did not exist when the write began is
    created exclusively: if another program (or another medai run) created it meanwhile, it is
    not replaced and an ``OutputError`` says so. Replacing a file that existed is the caller's
    decision (``--overwrite``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = full_suffix(path)
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    tmp = path.with_name(f".{stem}.partial-{uuid.uuid4().hex[:8]}{suffix}")
    existed = os.path.lexists(path)
    try:
        yield tmp
        _verify_complete(tmp, path)
        if existed:
            os.replace(tmp, path)
        else:
            _publish_new(tmp, path)
    except OSError as e:
        if e.errno in _NO_SPACE:
            raise disk_full_error(path) from e
        if e.errno == errno.EROFS:
            from MedAILib.core.errors import OutputError

            raise OutputError(f"cannot write {path.name}: the folder {path.parent} is read-only",
                              "choose an output folder you can write to (-o)") from e
        raise
    except Exception:
        if _disk_nearly_full(path.parent):  # writers that report a full disk as their own error type
            raise disk_full_error(path) from None
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


def _publish_new(tmp: Path, path: Path) -> None:
    """Give ``tmp`` the name ``path`` only if no file has that name: a hard link is created
    atomically or not at all (no window in which two writers both see the name free)."""
    try:
        os.link(tmp, path)
        return
    except FileExistsError:
        pass
    except OSError as e:
        if e.errno in _NO_SPACE or e.errno == errno.EROFS:
            raise
        # No hard links on this file system (FAT, some network shares): check, then rename.
        if not os.path.lexists(path):
            os.replace(tmp, path)
            return
    from MedAILib.core.errors import OutputError

    raise OutputError(f"{path} was created by another program (or another medai run) while this one was "
                      "writing it; it was not replaced",
                      "run one command per output, or use --overwrite to replace it")


def is_complete(path) -> bool:
    """True when ``path`` is a file that a finished write left: not empty, and a ``.gz`` file
    decompresses to its end marker, a ``.nii`` holds every voxel its header announces (what
    ``atomic_output`` checks before it gives a file its final name)."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return False
    from MedAILib.core.errors import OutputError

    try:
        _verify_complete(path, path)
    except OutputError:
        return False
    return True


def _disk_nearly_full(folder, margin: int = 1 << 20) -> bool:
    try:
        return shutil.disk_usage(folder).free < margin
    except OSError:
        return False


def _verify_complete(tmp: Path, path: Path) -> None:
    """Some writers (ITK's NIfTI writer) only print an error when the disk fills up and leave a cut-off
    file: a gzip file must decompress to its end-of-stream marker before it gets its final name."""
    if not tmp.exists():
        return  # the writer wrote nothing: os.replace reports it
    if tmp.name.lower().endswith(".nii"):
        _verify_nifti_size(tmp, path)
    if tmp.name.lower().endswith(".gz"):
        import gzip
        import zlib

        try:
            with gzip.open(tmp, "rb") as f:
                while f.read(1 << 22):
                    pass
        except (EOFError, OSError, zlib.error) as e:
            if _disk_nearly_full(path.parent) or tmp.stat().st_size == 0:
                raise disk_full_error(path) from e
            from MedAILib.core.errors import OutputError

            raise OutputError(f"writing {path.name} produced a damaged file ({e}); nothing was left under that name",
                              "check the disk and run the command again") from e


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def disk_full_error(path):
    """The message for a full disk: which file, where, how much is free, what to do."""
    from MedAILib.core.errors import OutputError

    path = Path(path)
    try:
        free = f"{shutil.disk_usage(path.parent).free / 1e6:.0f} MB free"
    except OSError:
        free = "free space unknown"
    return OutputError(f"the disk is full: could not write {path.name} in {path.parent} ({free}); "
                       "nothing was left under that name",
                       "free some space on that disk (or raise your quota), or write to another disk "
                       "with -o, then run the command again")


def _verify_nifti_size(tmp: Path, path: Path) -> None:
    """An uncompressed NIfTI must hold every voxel its header announces."""
    import nibabel as nib
    import numpy as np

    try:
        hdr = nib.load(str(tmp)).header
        expected = int(hdr["vox_offset"]) + int(np.prod(hdr.get_data_shape())) * int(hdr["bitpix"]) // 8
    except Exception:  # noqa: BLE001 - an unreadable header is as bad as a short file
        expected = None
    if expected is not None and tmp.stat().st_size >= expected:
        return
    if _disk_nearly_full(path.parent):
        raise disk_full_error(path)
    from MedAILib.core.errors import OutputError

    raise OutputError(f"writing {path.name} produced an incomplete file; nothing was left under that name",
                      "check the disk and run the command again")
