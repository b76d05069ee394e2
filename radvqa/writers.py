"""Files radvqa writes: sharded JSONL and JSON reports, always via a temporary name.

A shard only gets its final name once it is complete, so an interrupted run never leaves a
half-written shard that looks finished.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from .errors import OutputError

RUN_FILE = ".radvqa-run.json"  # a generate run's settings and planned files while unfinished (--resume)


@dataclass(frozen=True)
class ShardInfo:
    """A finished shard: its path relative to the dataset folder, record count, size, sha256."""

    path: str
    records: int
    bytes: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for the manifest."""
        return asdict(self)


def shard_name(split: str, index: int, total: int) -> str:
    """Hugging Face style shard name, e.g. ``train-00000-of-00003.jsonl``."""
    return f"{split}-{index:05d}-of-{total:05d}.jsonl"


def shard_count(records: int, shard_size: int) -> int:
    """Number of shards for ``records`` records (at least one, so every split has a file)."""
    return max(1, -(-records // shard_size))


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn an operating-system refusal to write ``path`` into one OutputError line."""
    try:
        yield
    except OSError as error:
        raise OutputError(f"{path}: cannot write ({error.strerror or error})") from None


def temporary(path: Path) -> Path:
    """The temporary sibling a file is written to before it is renamed."""
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def write_shard(path: Path, chunks: Iterable[tuple[bytes, int]], relative_to: Path) -> ShardInfo:
    """Write (bytes, record count) chunks to ``path`` atomically and return its ShardInfo."""
    digest = hashlib.sha256()
    records = size = 0
    tmp = temporary(path)
    try:
        with writing(path):
            with open(tmp, "wb") as handle:
                for data, count in chunks:
                    handle.write(data)
                    digest.update(data)
                    records += count
                    size += len(data)
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return ShardInfo(path.relative_to(relative_to).as_posix(), records, size, digest.hexdigest())


def read_shard_info(path: Path, relative_to: Path) -> ShardInfo:
    """The ShardInfo of a shard already on disk (records are its lines)."""
    digest = hashlib.sha256()
    records = size = 0
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
            records += block.count(b"\n")
            size += len(block)
    return ShardInfo(path.relative_to(relative_to).as_posix(), records, size, digest.hexdigest())


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write a whole file via a temporary name."""
    tmp = temporary(path)
    try:
        with writing(path):
            tmp.write_bytes(data)
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: Path, data: Any) -> None:
    """Write indented JSON atomically."""
    write_bytes_atomic(path, orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")


def write_report(path: Path, data: Any) -> None:
    """Write a ``--json`` report atomically, creating its folder (checked up front by the CLI)."""
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, data)
