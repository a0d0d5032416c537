"""A cache of decoded images, so that a dataset whose decoding is slow loads fast the second time.

Entries are uncompressed ``.npz`` files of uint8 arrays under
``unlearnkit._cache.cache_root() / "datasets"``, written atomically. The key covers the source
(its resolved path, and the size and modification time of every file it is made of), the
loader's options and a format version, so an edited source or different options never hit a
stale entry. A corrupt entry is deleted and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from unlearnkit._cache import cache_root
from unlearnkit.models.checkpoint import atomic_write

__all__ = ["cache_dir", "cache_key", "load_cached", "save_cached", "source_fingerprint"]

#: Bumped whenever the layout of cached arrays changes.
_VERSION = 1


def cache_dir() -> Path:
    """The folder of decoded-dataset entries: ``cache_root() / "datasets"``."""
    return cache_root() / "datasets"


def _walk(folder: Path) -> Iterable[tuple[str, int, int]]:
    stack = [folder]
    while stack:
        current = stack.pop()
        try:
            entries = list(os.scandir(current))
        except OSError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                stack.append(Path(entry.path))
            elif entry.is_file():
                st = entry.stat()
                yield os.path.relpath(entry.path, folder), st.st_size, st.st_mtime_ns


def source_fingerprint(paths: Iterable[Path]) -> list:
    """What identifies the bytes of ``paths``: for a file its size and modification time, for a
    folder those of every file below it (a digest of the sorted listing)."""
    out: list = []
    for p in paths:
        p = Path(p).resolve()
        if p.is_file():
            st = p.stat()
            out.append([str(p), st.st_size, st.st_mtime_ns])
        elif p.is_dir():
            listing = sorted(_walk(p))
            digest = hashlib.sha256(json.dumps(listing).encode()).hexdigest()
            out.append([str(p), len(listing), digest])
        else:
            out.append([str(p), None, None])
    return out


def cache_key(name: str, sources: Iterable[Path], options: dict) -> str:
    """A hex key for dataset ``name`` decoded from ``sources`` with ``options``."""
    payload = {
        "version": _VERSION,
        "name": name,
        "sources": source_fingerprint(sources),
        "options": options,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _entry(name: str, key: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
    return cache_dir() / f"{safe}-{key[:24]}.npz"


def load_cached(name: str, key: str) -> dict[str, np.ndarray] | None:
    """The arrays cached under ``key``, or ``None`` if there are none (or the entry is corrupt)."""
    path = _entry(name, key)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        path.unlink(missing_ok=True)
        return None


def save_cached(name: str, key: str, arrays: dict[str, np.ndarray]) -> Path:
    """Store ``arrays`` under ``key``, atomically; returns the entry's path."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    return atomic_write(_entry(name, key), write)
