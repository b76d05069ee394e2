"""Read a generated dataset folder: its manifest and its JSONL shards, streamed in order.

Every reader of an OUT folder (card, stats, export) goes through here, so a missing
manifest or a malformed line is reported the same way: one line naming the file and row.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from .errors import DatasetError

CONFIG_ORDER = ("alignment", "instruct", "benchmark")
SPLIT_ORDER = ("train", "val", "test")


@dataclass(frozen=True)
class Part:
    """One config/split of a dataset: its shards in order and the record count the manifest promises."""

    config: str
    split: str
    files: tuple[Path, ...]
    expected: int | None

    @property
    def glob(self) -> str:
        """The data_files glob, relative to the dataset folder."""
        return f"{self.config}/{self.split}-*.jsonl"


def load_manifest(out: Path) -> dict[str, Any]:
    """The dataset's manifest.json as a dict."""
    path = Path(out) / "manifest.json"
    if not path.is_file():
        raise DatasetError(f"{path}: not found; is {out} a folder written by 'radvqa generate'?")
    try:
        data = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as error:
        raise DatasetError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(data, dict) or not isinstance(data.get("records"), dict):
        raise DatasetError(f"{path}: no 'records' table; is this a radvqa manifest?")
    return data


def order_key(name: str, order: tuple[str, ...]) -> tuple[int, str]:
    """Sort key: known names in ``order`` first, in that order, then the rest by name."""
    return (order.index(name) if name in order else len(order), name)


def dataset_parts(out: Path, manifest: dict[str, Any], configs: tuple[str, ...] | None = None) -> list[Part]:
    """Every config/split in the manifest (plus a benchmark found on disk), in a stable order."""
    out = Path(out)
    splits: dict[str, dict[str, int | None]] = {
        config: dict(counts) for config, counts in manifest["records"].items() if isinstance(counts, dict)
    }
    for path in sorted(out.glob("benchmark/test-*.jsonl")):  # the benchmark may predate its manifest entry
        splits.setdefault("benchmark", {}).setdefault("test", None)
        break
    parts = []
    for config in sorted(splits, key=lambda c: order_key(c, CONFIG_ORDER)):
        if configs is not None and config not in configs:
            continue
        for split in sorted(splits[config], key=lambda s: order_key(s, SPLIT_ORDER)):
            files = tuple(sorted(out.glob(f"{config}/{split}-*.jsonl")))
            expected = splits[config][split]
            if not files and expected:
                raise DatasetError(
                    f"{out / config}: no {split}-*.jsonl shards, but the manifest lists {expected} records"
                )
            parts.append(Part(config, split, files, expected))
    return parts


Where = tuple[Path, int]  # (shard, line number): formatted only when an error names it


def at(where: Where) -> str:
    """ "file:row" for an error message."""
    return f"{where[0]}:{where[1]}"


def iter_rows(files: tuple[Path, ...] | list[Path]) -> Iterator[tuple[dict[str, Any], Where]]:
    """(record, (file, row)) for every line of the shards in order; a malformed line raises DatasetError."""
    loads, error_type = orjson.loads, orjson.JSONDecodeError
    for path in files:
        with open(path, "rb") as handle:
            for row, line in enumerate(handle, 1):
                try:
                    record = loads(line)
                except error_type as error:
                    if not line.strip():
                        continue
                    raise DatasetError(f"{path}:{row}: not a JSON record ({error})") from None
                if not isinstance(record, dict):
                    raise DatasetError(f"{path}:{row}: not a JSON object")
                yield record, (path, row)


def iter_records(files: tuple[Path, ...] | list[Path]) -> Iterator[dict[str, Any]]:
    """Records of the shards in order, one dict per line."""
    for record, _ in iter_rows(files):
        yield record


def check_digests(out: Path, manifest: dict[str, Any], parts: list[Part]) -> None:
    """Raise DatasetError naming the first shard of ``parts`` whose sha256 differs from the manifest.

    Read before an export writes anything, so a corrupt shard never leaves a half-done export.
    """
    import hashlib

    listed = {str(s.get("path")): s.get("sha256") for s in manifest.get("shards", []) if isinstance(s, dict)}
    for part in parts:
        for path in part.files:
            expected = listed.get(path.relative_to(out).as_posix())
            if expected is None:
                continue  # a shard the manifest predates (an old benchmark): counts are still checked
            digest = hashlib.sha256()
            with open(path, "rb") as handle:
                while block := handle.read(1 << 20):
                    digest.update(block)
            if digest.hexdigest() != expected:
                raise DatasetError(
                    f"{path}: sha256 differs from {Path(out) / 'manifest.json'}; the shard changed after "
                    "generate (regenerate the dataset)"
                )
