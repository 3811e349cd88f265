"""One check for every name MedAI turns into a path: model ids, pack names, output names.

A name becomes ONE path component under a folder MedAI owns (``MEDAI_HOME/models/<id>``, an output
folder). Joined with ``/`` a name like ``..`` or ``/abs/dir`` would point elsewhere, and a later
``rmtree`` of it deletes whatever is there (``models/..`` is the whole ``MEDAI_HOME``). So a name is
refused, before anything touches the disk, when it is empty or blank, ``.`` or ``..`` (or starts
with ``.``: hidden names are MedAI's temporary files), holds a path
separator (``/`` or ``\\``), a drive (``C:``), a control character or NUL, starts or ends with a space,
or is longer than 255 bytes (one file name on every common file system).
"""

from __future__ import annotations

from MedAILib.core.errors import InputError

MAX_BYTES = 255


def name_problem(name) -> str:
    """Why ``name`` cannot be one path component ('' when it can)."""
    if not isinstance(name, str):
        return f"it is not text ({type(name).__name__})"
    if not name or not name.strip():
        return "it is empty"
    if name in (".", ".."):
        return f"{name!r} means a folder itself or its parent, not a name"
    if name.startswith("."):
        return "it starts with '.' (hidden names are kept for MedAI's temporary files)"
    if "/" in name or "\\" in name:
        return "it holds a path separator (/ or \\); absolute paths and sub-folders are not names"
    if len(name) >= 2 and name[1] == ":" and name[0].isalpha():
        return "it starts with a drive letter"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "it holds a control character"
    if name != name.strip():
        return "it starts or ends with a space"
    if len(name.encode("utf-8", "surrogateescape")) > MAX_BYTES:
        return f"it is longer than {MAX_BYTES} bytes"
    return ""


def check_name(name, what: str = "name", error=InputError, hint: str = "") -> str:
    """Return ``name`` when it is a safe single path component; raise ``error`` naming ``what`` otherwise."""
    problem = name_problem(name)
    if problem:
        raise error(f"{what} {name!r} is not allowed: {problem}",
                    hint or "use a plain name of letters, digits, '-', '_' and '.' (for example my_model)")
    return name
