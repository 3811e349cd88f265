"""Ceilings on what an input may unpack to, checked from headers before anything is allocated.

A 2 MB ``.nii.gz`` can announce 2 GiB of voxels and a 7 MB zip can unpack to 200 MB: reading them
"to see" already costs the memory or the disk. So images are measured from their header
(SimpleITK ``ImageFileReader.ReadImageInformation``) and packs from their member table (zip/tar
sizes summed) and refused above these limits, with a message naming the limit and how to raise it.

| environment variable | default | what |
| --- | --- | --- |
| ``MEDAI_MAX_IMAGE_VOXELS`` | 536870912 (2^29, e.g. 512 x 512 x 2048) | voxels of one image |
| ``MEDAI_MAX_IMAGE_BYTES`` | 4294967296 (4 GiB) | decompressed bytes of one image |
| ``MEDAI_MAX_PACK_BYTES`` | 4294967296 (4 GiB) | unpacked bytes of a model pack (zip/tar) |
| ``MEDAI_MAX_PACK_FILES`` | 20000 | files in a model pack |
| ``MEDAI_MAX_PACK_RATIO`` | 20 | unpacked / packed size of a pack larger than 64 MiB unpacked (model weights barely compress; a far higher ratio is a decompression bomb) |

Values are plain integers (bytes, voxels, a ratio). Why these defaults: a whole-body CT of
512 x 512 x 2048 voxels still fits, and at float64 that is the 4 GiB byte limit; Model Zoo bundles
are tens to a few hundred MB, most of it float32 weights that deflate barely shrinks (ratio near 1),
so a pack 20 times smaller than its content is not a model.
"""

from __future__ import annotations

import os

from MedAILib.core.errors import InputError, ModelError

DEFAULTS = {
    "MEDAI_MAX_IMAGE_VOXELS": 1 << 29,
    "MEDAI_MAX_IMAGE_BYTES": 4 << 30,
    "MEDAI_MAX_PACK_BYTES": 4 << 30,
    "MEDAI_MAX_PACK_FILES": 20000,
    "MEDAI_MAX_PACK_RATIO": 20,
}
RATIO_APPLIES_ABOVE = 64 << 20  # small packs (configs only) compress very well and harm nobody


def limit(name: str) -> int:
    """The current value of limit ``name`` (its environment variable, or the default)."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return DEFAULTS[name]
    try:
        value = int(float(raw.strip().replace("_", "")))
    except ValueError:
        raise InputError(f"{name}={raw!r} is not a number",
                         f"set {name} to a whole number (default {DEFAULTS[name]}) or unset it") from None
    if value <= 0:
        raise InputError(f"{name}={raw!r} must be positive", f"set {name} to a positive whole number or unset it")
    return value


def _gib(n: float) -> str:
    if n >= 1 << 30:
        return f"{n / 1024 ** 3:.2f} GiB"
    if n >= 1 << 20:
        return f"{n / 1024 ** 2:.1f} MiB"
    return f"{int(n):,} bytes"


def _raise_hint(name: str, needed: int) -> str:
    suggestion = max(needed, DEFAULTS[name]) * 2
    if name.startswith("MEDAI_MAX_PACK"):
        return (f"get the pack from its official source; if you trust it and have the disk space, raise the limit, "
                f"e.g. `export {name}={suggestion}`")
    return (f"if the image really is this large and this computer has the memory, raise the limit, e.g. "
            f"`export {name}={suggestion}`; otherwise crop or downsample it, or get the file again (its header "
            "may be wrong)")


def check_image_size(name: str, size, bytes_per_voxel: int) -> None:
    """Refuse an image whose header announces more voxels or bytes than the limits allow.

    ``size``: the dimensions from the header (any number of axes); ``bytes_per_voxel``: all
    components of one voxel."""
    voxels = 1
    for s in size:
        voxels *= int(s)
    nbytes = voxels * int(bytes_per_voxel)
    dims = " x ".join(str(int(s)) for s in size)
    max_voxels = limit("MEDAI_MAX_IMAGE_VOXELS")
    if voxels > max_voxels:
        raise InputError(f"{name} is too large: its header announces {dims} = {voxels:,} voxels "
                         f"({_gib(nbytes)} decompressed), over the limit of {max_voxels:,} voxels "
                         f"(MEDAI_MAX_IMAGE_VOXELS); nothing was loaded",
                         _raise_hint("MEDAI_MAX_IMAGE_VOXELS", voxels))
    max_bytes = limit("MEDAI_MAX_IMAGE_BYTES")
    if nbytes > max_bytes:
        raise InputError(f"{name} is too large: its header announces {dims} voxels = {_gib(nbytes)} decompressed, "
                         f"over the limit of {_gib(max_bytes)} (MEDAI_MAX_IMAGE_BYTES); nothing was loaded",
                         _raise_hint("MEDAI_MAX_IMAGE_BYTES", nbytes))


def check_pack_size(name: str, member_sizes, packed_size: int) -> int:
    """Refuse a model pack whose members (sizes from the zip/tar table) unpack to more than the
    limits allow; returns the total unpacked size."""
    sizes = [int(s) for s in member_sizes]
    total = sum(sizes)
    max_files = limit("MEDAI_MAX_PACK_FILES")
    if len(sizes) > max_files:
        raise ModelError(f"model pack {name} holds {len(sizes):,} files, over the limit of {max_files:,} "
                         "(MEDAI_MAX_PACK_FILES); nothing was unpacked", _raise_hint("MEDAI_MAX_PACK_FILES", len(sizes)))
    max_bytes = limit("MEDAI_MAX_PACK_BYTES")
    if total > max_bytes:
        raise ModelError(f"model pack {name} would unpack to {_gib(total)}, over the limit of {_gib(max_bytes)} "
                         "(MEDAI_MAX_PACK_BYTES); nothing was unpacked", _raise_hint("MEDAI_MAX_PACK_BYTES", total))
    if total > RATIO_APPLIES_ABOVE and packed_size > 0:
        ratio = total / packed_size
        max_ratio = limit("MEDAI_MAX_PACK_RATIO")
        if ratio > max_ratio:
            raise ModelError(
                f"model pack {name} is {_gib(packed_size)} but would unpack to {_gib(total)} ({ratio:.0f} times "
                f"larger, over the limit of {max_ratio} times, MEDAI_MAX_PACK_RATIO): model weights barely "
                "compress, so this looks like a decompression bomb; nothing was unpacked",
                f"get the pack from its official source; if you trust it, raise the limit, e.g. "
                f"`export MEDAI_MAX_PACK_RATIO={int(ratio) + 1}`")
    return total


def physical_memory_bytes() -> int:
    """Total RAM of this computer (os.sysconf; psutil is not a dependency). 0 when unknown."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # not POSIX (Windows): unknown
        return 0
