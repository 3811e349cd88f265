"""Loaded bundles kept between jobs (the warm engine's model cache).

Installed into :mod:`MedAILib.models.bundle` (``bundle_cache``), so a job's ``resolve_model`` gets
the already-built network, transforms and inferer instead of parsing the config and reading the
weights again. Trust is still checked on every job (before the cache is asked). A cached bundle
is keyed by its folder, ``--fast`` and the size and modification time of every file of its
configs/ and models/, so a changed bundle is loaded afresh (and its weights' checksum checked
again). Each device worker has its own entries: a network is never moved between devices while
another job uses it.

Bounded two ways: at most ``max_models`` bundles, and the cached networks' parameters at most
``max_bytes`` (least recently used first out). :meth:`release_devices` moves idle networks back
to the CPU and returns the GPU's cached blocks to the driver.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
from pathlib import Path

log = logging.getLogger(__name__)


def default_cache_bytes() -> int:
    """A quarter of the computer's memory, at most 8 GiB (4 GiB when the memory is unknown)."""
    from MedAILib.core.limits import physical_memory_bytes

    return min((physical_memory_bytes() or 16 << 30) // 4, 8 << 30)


def _fingerprint(folder: Path) -> tuple:
    items = []
    for sub in ("configs", "models", "scripts"):
        d = folder / sub
        if d.is_dir():
            for f in sorted(d.rglob("*")):
                if f.is_file():
                    st = f.stat()
                    items.append((str(f.relative_to(folder)), st.st_size, st.st_mtime_ns))
    return tuple(items)


def network_bytes(bundle) -> int:
    net = getattr(bundle, "_network", None)
    if net is None:
        return 0
    try:
        return sum(t.numel() * t.element_size() for t in list(net.parameters()) + list(net.buffers()))
    except Exception:  # noqa: BLE001 - a network without parameters() counts as 0
        return 0


class BundleCache:
    def __init__(self, max_bytes: int | None = None, max_models: int = 4):
        self.max_bytes = default_cache_bytes() if max_bytes is None else int(max_bytes)
        self.max_models = int(max_models)
        self._entries: "collections.OrderedDict" = collections.OrderedDict()
        self._lock = threading.RLock()
        self._local = threading.local()
        self.hits = self.misses = self.evictions = 0

    @contextlib.contextmanager
    def partition(self, name: str):
        """Bundles loaded in this block (a device worker's job) belong to ``name``."""
        previous = getattr(self._local, "name", "")
        self._local.name = name
        try:
            yield
        finally:
            self._local.name = previous

    def get(self, path, entry, fast: bool, load):
        """The cached bundle for (path, entry, fast) in the caller's partition, else ``load()``."""
        folder = Path(path).resolve()
        key = (getattr(self._local, "name", ""), str(folder), bool(fast),
               getattr(entry, "id", None), _fingerprint(folder))
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self.hits += 1
                return self._entries[key]
        bundle = load()
        with self._lock:
            self.misses += 1
            # An older version of the same bundle (its files changed) is dropped at once.
            for old in [k for k in self._entries if k[:4] == key[:4]]:
                del self._entries[old]
            self._entries[key] = bundle
            self.trim(keep=key)
        return bundle

    def trim(self, keep=None) -> None:
        """Drop least recently used bundles until within both bounds (never ``keep``)."""
        with self._lock:
            while len(self._entries) > 1:
                total = sum(network_bytes(b) for b in self._entries.values())
                if len(self._entries) <= self.max_models and total <= self.max_bytes:
                    break
                oldest = next(iter(self._entries))
                if oldest == keep:
                    break
                del self._entries[oldest]
                self.evictions += 1

    def release_devices(self, partition: str | None = None) -> int:
        """Move the networks of ``partition`` (all when None) to the CPU and empty the GPU's cache.
        Returns how many networks were moved."""
        moved = 0
        with self._lock:
            bundles = [b for k, b in self._entries.items() if partition is None or k[0] == partition]
        for b in bundles:
            net = getattr(b, "_network", None)
            if net is None:
                continue
            try:
                p = next(iter(net.parameters()), None)
            except Exception:  # noqa: BLE001
                p = None
            if p is not None and p.device.type != "cpu":
                net.to("cpu")
                moved += 1
        import sys

        torch = sys.modules.get("torch")  # never import torch only to release it
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.empty_cache()
        return moved

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def status(self) -> dict:
        with self._lock:
            return {"models": [{"partition": k[0], "path": k[1], "fast": k[2], "model": k[3],
                                "bytes": network_bytes(b)} for k, b in self._entries.items()],
                    "max_models": self.max_models, "max_bytes": self.max_bytes,
                    "hits": self.hits, "misses": self.misses, "evictions": self.evictions}
