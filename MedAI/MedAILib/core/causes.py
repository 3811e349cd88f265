"""The cause of a failed file operation in words: permission, disk full, read-only, missing,
a folder where a file was expected (and the reverse), too large for memory.

Why one place: the same ``OSError`` reaches the user from a reader, a writer, a pack import or the
CLI's last-resort handler, and each must name the file and the real cause, never "corrupt" for a
permission problem nor "internal error" for a full disk.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path
from typing import Optional

from MedAILib.core.errors import InputError, MedAIError, OutputError

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _free(folder) -> str:
    try:
        return f"{shutil.disk_usage(folder).free / 1e6:.0f} MB free"
    except OSError:
        return "free space unknown"


def describe_os_error(error: OSError, path=None, action: str = "read") -> tuple:
    """(message, hint) for ``error`` raised while ``action``-ing ``path`` (``error.filename`` if not given)."""
    target = Path(path if path is not None else (error.filename or "the file"))
    where = str(target)
    code = error.errno
    if code in _NO_SPACE:
        folder = target.parent if target.suffix else target
        return (f"the disk is full: could not {action} {where} ({_free(folder)})",
                "free some space on that disk (or raise your quota), or use another disk, then run the command again")
    if code in (errno.EACCES, errno.EPERM):
        return (f"permission denied: cannot {action} {where}",
                "check the file and folder permissions (ls -l), or choose a location you can "
                + ("read" if action == "read" else "write to"))
    if code == errno.EROFS:
        return (f"cannot {action} {where}: it is on a read-only file system",
                "choose a location on a writable disk")
    if code == errno.ENOENT:
        return (f"{where} does not exist", "check the path (and that the drive or share is mounted)")
    if code == errno.EISDIR:
        return (f"{where} is a folder, not a file", "give the path of a file")
    if code == errno.ENOTDIR:
        return (f"cannot {action} {where}: a part of that path is a file, not a folder",
                "check the path: a file has the name a folder needs")
    if code == errno.EEXIST:
        return (f"cannot {action} {where}: something with that name already exists", "choose another name")
    if code == errno.ENAMETOOLONG:
        return (f"cannot {action} {where}: the name is too long for the file system", "use a shorter name or path")
    if code in (errno.EIO,):
        return (f"input/output error while trying to {action} {where} (a failing disk or a dropped network share?)",
                "check the disk or the connection and run the command again")
    reason = error.strerror or type(error).__name__
    return (f"cannot {action} {where}: {reason}", "check the path, the disk and the permissions")


def error_from_os(error: OSError, path=None, action: str = "read") -> MedAIError:
    """A one-line MedAIError for ``error``: OutputError when writing, InputError otherwise."""
    message, hint = describe_os_error(error, path, action)
    cls = OutputError if action in ("write", "create", "replace", "delete", "install") else InputError
    return cls(message, hint)


def error_from_memory(name: str, what: Optional[str] = None) -> InputError:
    """A one-line message for an allocation failure (MemoryError, ITK's bad_alloc) while loading ``name``."""
    return InputError(f"{name} is too large to load: this computer ran out of memory"
                      + (f" ({what})" if what else ""),
                      "close other programs, crop or downsample the image on a bigger computer, or use a "
                      "computer with more memory")
