"""Shared fixtures: the real taxonomy, a sample RadImageNet copy and a dataset generated from it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from radvqa.config import Config, load_config
from radvqa.dataset import generate_dataset
from radvqa.sample import Quirks, build_sample
from radvqa.taxonomy import Taxonomy, load_taxonomy
from radvqa.templates import TemplateSet, load_templates

REPO = Path(__file__).resolve().parent.parent

# CI runs the property tests on a fixed example sequence (no flakes between identical commits);
# a developer's run explores new examples each time and replays any failure it found.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")
# A copy of shared/radimagenet/labels.csv: the 165 real RadImageNet classes with their quirks.
LABELS_CSV = REPO / "tests" / "data" / "radimagenet_labels.csv"


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """radvqa's cache of verified files (radvqa.file_cache) in a folder of the run, not ~/.cache."""
    folder = tmp_path_factory.mktemp("xdg-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(folder))  # subprocesses (the real CLI) inherit it
        yield folder


@pytest.fixture(scope="session")
def taxonomy() -> Taxonomy:
    return load_taxonomy()


@pytest.fixture(scope="session")
def templates() -> TemplateSet:
    return load_templates()


@pytest.fixture(scope="session")
def config() -> Config:
    return load_config()


@pytest.fixture(scope="session")
def sample_copy_with_quirks(tmp_path_factory: pytest.TempPathFactory, taxonomy: Taxonomy) -> tuple[Path, Quirks]:
    root = tmp_path_factory.mktemp("sample-copy")
    quirks = build_sample(root, taxonomy)
    assert quirks is not None
    return root, quirks


@pytest.fixture(scope="session")
def sample_copy(sample_copy_with_quirks: tuple[Path, Quirks]) -> Path:
    """A RadImageNet-shaped copy: all 150 classes, three CSVs, planted quirks. Do not modify."""
    return sample_copy_with_quirks[0]


@pytest.fixture(scope="session")
def sample_dataset(
    tmp_path_factory: pytest.TempPathFactory,
    sample_copy: Path,
    config: Config,
    taxonomy: Taxonomy,
    templates: TemplateSet,
) -> Path:
    """A dataset generated from ``sample_copy`` with default settings. Do not modify: copy it."""
    out = tmp_path_factory.mktemp("sample-dataset") / "out"
    generate_dataset(sample_copy, out, config, taxonomy, templates)
    return out


def shaped_counts(taxonomy: Taxonomy, scale: float) -> dict[int, int]:
    """Class sizes with RadImageNet's real imbalance (scripts/radimagenet_counts.csv), scaled."""
    import csv

    counts = {}
    lines = (REPO / "scripts" / "radimagenet_counts.csv").read_text().splitlines()
    for row in csv.DictReader(line for line in lines if not line.startswith("#")):
        cls = taxonomy.resolve(row["modality"], row["anatomy"], row["pathology"])
        assert cls is not None
        counts[cls.index] = max(4, round(int(row["count"]) * scale))
    return counts


@pytest.fixture(scope="session")
def shaped_copy(tmp_path_factory: pytest.TempPathFactory, taxonomy: Taxonomy) -> Path:
    """A RadImageNet-shaped copy with the real class imbalance at 1% scale (~9k images)."""
    from radvqa.sample import placeholder_png, write_copy

    root = tmp_path_factory.mktemp("shaped-copy")
    write_copy(root, taxonomy, shaped_counts(taxonomy, 0.01), image_bytes=placeholder_png, quirks=False)
    return root


def build_tiny_copy(root: Path, taxonomy: Taxonomy, per_class: int = 10) -> Path:
    """A RadImageNet-shaped copy of two classes in each of three regions: quick to generate from."""
    from radvqa.sample import write_copy

    chosen: dict[str, list[int]] = {}
    for cls in taxonomy.classes:
        if cls.region in ("lung", "knee", "brain") and len(chosen.setdefault(cls.region, [])) < 2:
            chosen[cls.region].append(cls.index)
    write_copy(root, taxonomy, {i: per_class for ids in chosen.values() for i in ids}, quirks=False)
    return root


@pytest.fixture
def tiny_copy(tmp_path: Path, taxonomy: Taxonomy) -> Path:
    """A fresh six-class copy in tmp_path/copy (tests may modify it)."""
    return build_tiny_copy(tmp_path / "copy", taxonomy)


@pytest.fixture(scope="session")
def dask_cluster() -> Iterator[str]:
    """One real 2-process Dask LocalCluster for every cluster test: its scheduler address."""
    from distributed import LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()
