"""Fixtures shared by the card, stats and export tests: the sample dataset plus a benchmark."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest

from radvqa.card import write_card
from radvqa.dataset_files import load_manifest


def add_benchmark(out: Path) -> None:
    """Give ``out`` a benchmark config when generate did not write one: the val questions as "test"."""
    if list(out.glob("benchmark/test-*.jsonl")):
        return
    (out / "benchmark").mkdir(exist_ok=True)
    lines = []
    for shard in sorted(out.glob("instruct/val-*.jsonl")):
        for line in shard.read_bytes().splitlines():
            record = orjson.loads(line)
            record["split"] = "test"
            lines.append(orjson.dumps(record))
    (out / "benchmark" / "test-00000-of-00001.jsonl").write_bytes(b"\n".join(lines) + b"\n")


@pytest.fixture(scope="module")
def bench_dataset(tmp_path_factory: pytest.TempPathFactory, sample_dataset: Path) -> Path:
    """A copy of ``sample_dataset`` with a benchmark config and a card that declares it."""
    out = tmp_path_factory.mktemp("bench-dataset") / "out"
    shutil.copytree(sample_dataset, out)
    add_benchmark(out)
    write_card(out, load_manifest(out))
    return out


@pytest.fixture()
def hf_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Keep ``datasets`` off the network and out of the user's cache; returns a cache folder."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    import datasets.config
    import huggingface_hub.constants

    # both libraries read these variables once, at import: set the parsed flags too
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return tmp_path / "hf-cache"


def read_jsonl(paths: list[Path]) -> list[dict]:
    """Every record of some JSONL shards."""
    return [orjson.loads(line) for path in paths for line in path.read_bytes().splitlines() if line.strip()]


def config_records(out: Path, config: str, split: str) -> list[dict]:
    """The records of one config/split of a dataset folder."""
    return read_jsonl(sorted(out.glob(f"{config}/{split}-*.jsonl")))
