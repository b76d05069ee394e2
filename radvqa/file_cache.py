"""Which image files of a copy were found sound before: their lstat keys, kept between runs.

Checking a file's signature costs an open, fstat, read and close (about 10 µs, far more when
its first page has left memory); an lstat costs about 3 µs. A file whose device, inode, size,
modification and change times all equal those of a file verified before holds the same bytes
(writing a file moves its change time, which no user call can set back), so a rerun on the
same copy only lstats it. The cache holds 64-bit hashes of those five numbers, nothing about
names, under ``$XDG_CACHE_HOME/radvqa`` (``~/.cache/radvqa``), one file per copy; a cache that
cannot be read or written is ignored.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np

from .errors import OutputError
from .resources import default_cache_dir
from .writers import write_bytes_atomic

_PREFIX = "checked-v1-"
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)  # splitmix64's finaliser


def cache_path(data_dir: Path) -> Path:
    """The cache file of one copy (named by a hash of its real path, not the path itself)."""
    digest = hashlib.blake2b(os.fsencode(os.path.realpath(data_dir)), digest_size=16).hexdigest()
    return default_cache_dir(f"{_PREFIX}{digest}.npy")  # beside the judge and predict caches


def _mix(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(30))
    h = h * _M1
    h = h ^ (h >> np.uint64(27))
    h = h * _M2
    return h ^ (h >> np.uint64(31))


def stat_keys(fields: np.ndarray) -> np.ndarray:
    """One 64-bit key per row of (device, inode, size, mtime_ns, ctime_ns); a row of zeros gives 0."""
    fields = np.asarray(fields, dtype=np.int64).reshape(-1, 5).astype(np.uint64)
    h = np.zeros(len(fields), dtype=np.uint64)
    for column in range(5):
        h = _mix(h ^ fields[:, column])
    h[~fields.any(axis=1)] = 0
    return h


def load_known(data_dir: Path) -> np.ndarray:
    """The sorted keys verified by an earlier run on this copy (empty when there is none)."""
    try:
        keys = np.load(cache_path(data_dir), allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return np.zeros(0, dtype=np.uint64)
    if keys.dtype != np.uint64 or keys.ndim != 1:
        return np.zeros(0, dtype=np.uint64)
    return keys


def save_known(data_dir: Path, keys: np.ndarray) -> None:
    """Replace the copy's cache with ``keys`` (the sound files of this run), atomically; never raises."""
    buffer = io.BytesIO()
    np.save(buffer, np.unique(keys[keys != 0]), allow_pickle=False)
    path = cache_path(data_dir)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, buffer.getvalue())
    except (OSError, OutputError):  # a cache that cannot be written costs the next run time, nothing else
        pass
