"""File checksums in the algorithm a catalogue entry names (sha256, sha1, md5).

The MONAI Model Zoo publishes SHA-1 checksums for its bundle archives (its ``ci/update_model_info.py``
calls ``get_hash_func(hash_type="sha1")``), MONAI's own downloads use MD5 or SHA-256, and MedAI's own
catalogue uses SHA-256. A checksum is only as good as its source, so the algorithm is always stated
with the value, never guessed at verification time.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

SUPPORTED = ("sha256", "sha1", "md5", "sha512")
_HEX_LENGTH = {"md5": 32, "sha1": 40, "sha256": 64, "sha512": 128}


def digest_file(path, algorithm: str = "sha256", chunk: int = 1 << 20) -> str:
    """Hex digest of a file's bytes with ``algorithm`` (one of :data:`SUPPORTED`)."""
    algorithm = normalise_algorithm(algorithm)
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def normalise_algorithm(name: str) -> str:
    """'SHA-256', 'sha256' -> 'sha256'; raises ValueError for anything unsupported."""
    key = str(name).lower().replace("-", "").replace("_", "")
    if key not in SUPPORTED:
        raise ValueError(f"unsupported hash algorithm {name!r}; supported: {', '.join(SUPPORTED)}")
    return key


def check_hex(value: str, algorithm: str) -> bool:
    """Whether ``value`` looks like a digest of ``algorithm`` (right length, hex only)."""
    algorithm = normalise_algorithm(algorithm)
    v = str(value).lower()
    return len(v) == _HEX_LENGTH[algorithm] and all(c in "0123456789abcdef" for c in v)


def verify_file(path, expected: str, algorithm: str = "sha256") -> bool:
    """True when the file's digest equals ``expected`` (case-insensitive)."""
    return Path(path).is_file() and digest_file(path, algorithm) == str(expected).lower()
