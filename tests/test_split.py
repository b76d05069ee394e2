import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from radvqa.cli import app
from radvqa.config import Config
from radvqa.dataset import generate_dataset
from radvqa.errors import SplitError
from radvqa.sample import Quirks
from radvqa.source import read_source
from radvqa.split import (
    BENCHMARK,
    BenchmarkSettings,
    allocate,
    assign_splits,
    balanced_letters,
    read_splits,
    select_benchmark,
    split_copy,
    write_splits,
)
from radvqa.taxonomy import Taxonomy
from radvqa.templates import TemplateSet

runner = CliRunner()


@st.composite
def allocations(draw: st.DrawFn) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    pools = np.array(draw(st.lists(st.integers(1, 500), min_size=1, max_size=40)))
    lower = np.ones(len(pools), dtype=np.int64)
    total = draw(st.integers(int(lower.sum()), int(pools.sum())))
    return total, np.sqrt(pools), lower, pools


@settings(max_examples=200, deadline=None)
@given(allocations())
def test_allocation_respects_budget_coverage_and_pool(case: tuple[int, np.ndarray, np.ndarray, np.ndarray]) -> None:
    total, weights, lower, upper = case
    result = allocate(total, weights, lower, upper)
    assert result.sum() == total  # budget respected
    assert (result >= 1).all()  # every stratum at least one
    assert (result <= upper).all()  # never more than a stratum has


@settings(max_examples=100, deadline=None)
@given(allocations())
def test_allocation_is_monotone_in_weight(case: tuple[int, np.ndarray, np.ndarray, np.ndarray]) -> None:
    total, weights, lower, upper = case
    result = allocate(total, weights, lower, np.full(len(upper), total))
    order = np.argsort(weights, kind="stable")
    assert (np.diff(result[order]) >= -1).all()  # bigger pools never get clearly less


def test_allocation_refuses_impossible_bounds() -> None:
    with pytest.raises(ValueError):
        allocate(10, np.ones(3), np.ones(3, dtype=np.int64), np.array([2, 2, 2]))


@pytest.fixture(scope="module")
def shaped_table(shaped_copy: Path, taxonomy: Taxonomy, config: Config):
    table, _ = read_source(shaped_copy, taxonomy, config.split_ratios, with_sizes=True)
    return table


def test_explicit_size_covers_every_stratum_within_caps(shaped_table, shaped_copy: Path, taxonomy: Taxonomy) -> None:
    rows, report = select_benchmark(shaped_table, taxonomy, BenchmarkSettings(images=400), shaped_copy)
    assert len(rows) == 400 and report.images == 400
    chosen = shaped_table.iloc[rows]
    assert (chosen["split"] == "test").all()
    pool_classes = set(shaped_table.loc[shaped_table["split"] == "test", "class_index"])
    assert set(chosen["class_index"]) == pool_classes and report.strata_covered == len(pool_classes)
    per_region = Counter(chosen["region"])
    assert max(per_region.values()) <= 100, per_region
    names = {r.key: r.name for r in taxonomy.regions.values()}
    for region, n in per_region.items():
        answers = Counter(chosen.loc[chosen["region"] == region, "pathology"])
        if max(answers.values()) > n // 4:  # only where the small 1% pool cannot meet the cap
            assert any(f"answer cap in {names[region]}" in w for w in report.warnings), (region, answers)
    assert not any("region cap" in w for w in report.warnings)


def test_same_seed_same_split_other_seed_other_split(shaped_table, shaped_copy: Path, taxonomy: Taxonomy) -> None:
    a, _ = select_benchmark(shaped_table, taxonomy, BenchmarkSettings(images=300, seed=1), shaped_copy)
    b, _ = select_benchmark(shaped_table, taxonomy, BenchmarkSettings(images=300, seed=1), shaped_copy)
    c, _ = select_benchmark(shaped_table, taxonomy, BenchmarkSettings(images=300, seed=2), shaped_copy)
    assert (a == b).all() and set(a) != set(c)


def test_normal_fraction(shaped_table, shaped_copy: Path, taxonomy: Taxonomy) -> None:
    rows, report = select_benchmark(shaped_table, taxonomy, BenchmarkSettings(images=400, normal_fraction=0.2), shaped_copy)
    assert abs(report.normal_share - 0.2) < 0.03
    with pytest.raises(SplitError, match="outside \\[0, 0.25\\]"):
        select_benchmark(shaped_table, taxonomy, BenchmarkSettings(images=400, normal_fraction=0.4), shaped_copy)


def test_impossible_requests_are_clear_errors(shaped_table, shaped_copy: Path, taxonomy: Taxonomy) -> None:
    pool = int((shaped_table["split"] == "test").sum())
    with pytest.raises(SplitError, match=f"asked for 100000 benchmark images but the test pool has only {pool}"):
        select_benchmark(shaped_table, taxonomy, BenchmarkSettings(images=100000), shaped_copy)
    with pytest.raises(SplitError, match="cannot cover the 150 strata of the test pool; ask for at least 150"):
        select_benchmark(shaped_table, taxonomy, BenchmarkSettings(images=100), shaped_copy)


def test_default_size(shaped_table, shaped_copy: Path, taxonomy: Taxonomy, sample_copy: Path, config: Config) -> None:
    rows, report = select_benchmark(shaped_table, taxonomy, BenchmarkSettings(), shaped_copy)
    assert len(rows) == 1000 and not any("region cap" in w for w in report.warnings)
    table, _ = read_source(sample_copy, taxonomy, config.split_ratios, with_sizes=True)
    rows, report = select_benchmark(table, taxonomy, BenchmarkSettings(), sample_copy)
    assert 150 <= len(rows) < 300 and report.requested == 1000
    assert "shrunk from 1000" in report.warnings[0]
    assert max(report.per_region.values()) <= len(rows) // 4


def test_duplicates_and_blank_images_never_enter_the_benchmark(
    sample_copy_with_quirks: tuple[Path, Quirks], taxonomy: Taxonomy, config: Config
) -> None:
    root, quirks = sample_copy_with_quirks
    table, splits, report, _, _ = split_copy(root, taxonomy, config.split_ratios, BenchmarkSettings())
    chosen = set(table.loc[splits == BENCHMARK, "image_id"])
    # the test copy of a byte-identical pair (its twin is in train, under another pathology)
    assert quirks.identical[1] not in chosen and quirks.blank not in chosen
    assert report.duplicates_excluded >= 1 and report.blank_excluded == 1
    assert any(quirks.identical[1] in e for e in report.examples)
    assert set(splits) == {"train", "val", BENCHMARK, "test_pool"}


def test_split_file_round_trip(tmp_path: Path, sample_copy: Path, taxonomy: Taxonomy, config: Config) -> None:
    table, splits, report, _, _ = split_copy(sample_copy, taxonomy, config.split_ratios, BenchmarkSettings(images=200))
    path = tmp_path / "splits.csv"
    write_splits(path, table, splits, taxonomy, report)
    saved, saved_report = read_splits(path)
    assert saved == dict(zip(table["image_id"], splits))
    assert saved_report is not None and saved_report["images"] == 200
    header = path.read_text().splitlines()[0]
    assert header == "image_id,image,split,stratum,label"
    path.write_text(path.read_text().replace(",benchmark,", ",bench,", 1))
    with pytest.raises(SplitError, match="row \\d+: unknown split 'bench'"):
        read_splits(path)


def test_balanced_letters() -> None:
    letters = balanced_letters(1001, 0, 1)
    assert sorted(Counter(letters.tolist()).values()) == [250, 250, 250, 251]
    assert not (letters == balanced_letters(1001, 0, 2)).all()


def test_generated_benchmark(sample_dataset: Path, taxonomy: Taxonomy) -> None:
    manifest = orjson.loads((sample_dataset / "manifest.json").read_bytes())
    lines = (sample_dataset / "benchmark" / "test-00000-of-00001.jsonl").read_bytes().splitlines()
    records = [orjson.loads(line) for line in lines]
    images = manifest["benchmark"]["images"]
    assert len(records) == 9 * images == manifest["records"]["benchmark"]["test"]
    kinds = Counter(r["question_type"] for r in records)
    assert kinds == {"closed": 5 * images, "multiple_choice": 2 * images, "open": 2 * images}
    assert all(".benchmark." in r["template_id"] and r["split"] == "test" for r in records)
    for slot in ("anatomy_mc", "pathology_mc"):
        letters = Counter(r["answer"] for r in records if r["slot"] == slot)
        assert max(letters.values()) - min(letters.values()) <= 1, (slot, letters)
    bench_images = {r["image"] for r in records}
    train_images = set()
    for path in (sample_dataset / "instruct").glob("*.jsonl"):
        train_images |= {orjson.loads(line)["image"] for line in path.read_bytes().splitlines()}
    assert not bench_images & train_images
    # no benchmark image shares its bytes with a train/val image
    root = Path(manifest["source"]["root"])
    bench_bytes = {(root / image).read_bytes() for image in bench_images}
    assert not any((root / image).read_bytes() in bench_bytes for image in train_images)


def test_generate_with_saved_splits_matches_default(
    tmp_path: Path, sample_copy: Path, sample_dataset: Path, taxonomy: Taxonomy, templates: TemplateSet, config: Config
) -> None:
    table, splits, report, _, _ = split_copy(sample_copy, taxonomy, config.split_ratios, BenchmarkSettings())
    write_splits(tmp_path / "s.csv", table, splits, taxonomy, report)
    out = tmp_path / "out"
    generate_dataset(sample_copy, out, config, taxonomy, templates, splits_file=tmp_path / "s.csv")
    for config_name in ("alignment", "instruct", "benchmark"):
        for path in (sample_dataset / config_name).glob("*.jsonl"):
            assert (out / config_name / path.name).read_bytes() == path.read_bytes()


def test_benchmark_with_other_size(tmp_path: Path, shaped_copy: Path, taxonomy: Taxonomy, templates: TemplateSet, config: Config) -> None:
    out = tmp_path / "out"
    generate_dataset(shaped_copy, out, config.with_overrides(benchmark_images=320), taxonomy, templates)
    lines = (out / "benchmark" / "test-00000-of-00001.jsonl").read_bytes().splitlines()
    assert len(lines) == 9 * 320


def test_conflict_groups_are_capped_so_the_benchmark_is_exactly_exchangeable(
    shaped_table, shaped_copy: Path, taxonomy: Taxonomy, config: Config
) -> None:
    """No group of answers that may not share an option set above 25% of its region; then the fit is exact."""
    from radvqa.dataset import class_counts
    from radvqa.generate import fit_draws

    rows, report = select_benchmark(shaped_table, taxonomy, BenchmarkSettings(images=400), shaped_copy)
    chosen = shaped_table.iloc[rows]
    names = {r.key: r.name for r in taxonomy.regions.values()}
    relaxed = {r for r in names if any(f"answer cap in {names[r]}" in w for w in report.warnings)}
    exchange = fit_draws(taxonomy, config, class_counts(chosen, taxonomy)).exchange
    assert exchange["anatomy_mc"]["all"] < 1e-9 and exchange["anatomy_closed"]["all"] < 1e-9
    for key, region in taxonomy.regions.items():
        mine = chosen[chosen["region"] == key]
        budget = len(mine)
        answers = Counter(mine["pathology"])
        for group in region.conflicts.items():
            members = {group[0], *group[1]}
            for a in members:
                for b in region.conflicts_of(a) & members:
                    assert answers[a] + answers[b] <= budget // 4 or key in relaxed, (key, a, b, answers)
        if key not in relaxed:
            assert exchange["pathology_mc"][key] < 1e-9 and exchange["pathology_closed"][key] < 1e-9, key
    assert len(relaxed) < len(names)


def test_per_slot_layout(tmp_path: Path, taxonomy: Taxonomy, templates: TemplateSet, config: Config) -> None:
    """Nine disjoint image sets with the same classes, one slot each; nothing links two questions."""
    from radvqa.audit import audit_dataset
    from radvqa.generate import INSTRUCT_SLOTS
    from radvqa.sample import write_copy

    copy = tmp_path / "copy"
    write_copy(copy, taxonomy, {c.index: 24 for c in taxonomy.classes}, quirks=False, shares=(0.1, 0.5))
    per_slot = config.with_overrides(benchmark_layout="per-slot")
    out = tmp_path / "out"
    result = generate_dataset(copy, out, per_slot, taxonomy, templates)
    records = [orjson.loads(line) for line in (out / "benchmark" / "test-00000-of-00001.jsonl").read_bytes().splitlines()]
    size = result.benchmark["set_size"]
    assert size >= 150 and len(records) == 9 * size
    images = Counter(r["image"] for r in records)
    assert max(images.values()) == 1  # every image is asked exactly one question
    by_slot = {slot: [r for r in records if r["slot"] == slot] for slot in INSTRUCT_SLOTS}
    composition = {slot: Counter(r["label"] for r in rs) for slot, rs in by_slot.items()}
    assert all(c == composition["anatomy_open"] for c in composition.values())
    for slot in ("anatomy_mc", "pathology_mc"):
        letters = Counter(r["answer"] for r in by_slot[slot])
        assert max(letters.values()) - min(letters.values()) <= 1
    report = audit_dataset(out)
    assert all(not e.cross for e in report.evaluations if e.source == "benchmark")
    # The same layout through a split file gives the same benchmark, byte for byte.
    splits = tmp_path / "splits.csv"
    assert runner.invoke(app, ["split", str(copy), "-o", str(splits), "--benchmark-layout", "per-slot"]).exit_code == 0
    again = tmp_path / "again"
    generate_dataset(copy, again, config, taxonomy, templates, splits_file=splits)
    assert (again / "benchmark" / "test-00000-of-00001.jsonl").read_bytes() == (
        out / "benchmark" / "test-00000-of-00001.jsonl"
    ).read_bytes()


def test_per_slot_layout_needs_nine_images_per_class(sample_copy: Path, taxonomy: Taxonomy, config: Config) -> None:
    with pytest.raises(SplitError, match="too small for 9 disjoint benchmark sets"):
        split_copy(sample_copy, taxonomy, config.split_ratios, BenchmarkSettings(layout="per-slot"))


def test_split_usable_counts_agree(tmp_path: Path, sample_copy: Path) -> None:
    import re

    from typer.testing import CliRunner

    from radvqa.cli import app

    result = CliRunner().invoke(app, ["split", str(sample_copy), "-o", str(tmp_path / "s.csv")])
    assert result.exit_code == 0, result.output
    shrunk = re.search(r"the test pool has only (\d+) usable images", result.output)
    pool = re.search(r"from a test pool of (\d+) \((\d+) usable\)", result.output)
    assert shrunk and pool and shrunk[1] == pool[2]  # one "usable" figure, and the pool it comes from
    assert int(pool[1]) - int(pool[2]) == 2  # the planted blank image and byte-identical twin
