"""Per-image random streams: counter-based, vectorised, independent of batching.

Each image's random numbers depend only on the seed and the image's 64-bit key (a hash of
its id), never on which worker or batch handles it, so any ``--workers`` and
``--shard-size`` give byte-identical output. SplitMix64 (Steele, Lea & Flood 2014) is used
as a counter-based generator: uniform j of an image is mix(key + (j + 1) * GAMMA).
"""

from __future__ import annotations

import numpy as np

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = (np.uint64(s) for s in (30, 27, 31, 11))
_TO_UNIT = 1.0 / (1 << 53)


def mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser over a uint64 array (wrapping arithmetic)."""
    z = x ^ (x >> _S30)
    z = z * _M1
    z = z ^ (z >> _S27)
    z = z * _M2
    return z ^ (z >> _S31)


def image_keys(path_keys: np.ndarray, seed: int, purpose: int = 0) -> np.ndarray:
    """Mix the seed (and a purpose tag) into per-image path hashes."""
    salt = mix(np.array([seed * 0x10001 + purpose], dtype=np.uint64))
    return mix(np.asarray(path_keys, dtype=np.uint64) ^ salt)


def uniforms(keys: np.ndarray, count: int) -> np.ndarray:
    """A (len(keys), count) array of uniforms in [0, 1): column j is stream j of each image."""
    steps = np.arange(1, count + 1, dtype=np.uint64) * _GAMMA
    raw = mix(keys[:, None] + steps[None, :])
    return (raw >> _S11).astype(np.float64) * _TO_UNIT
