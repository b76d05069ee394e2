"""`radvqa stats`: counts that add up, balance tables, markdown report and PNG charts."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from export_fixtures import bench_dataset, config_records  # noqa: F401
from PIL import Image
from typer.testing import CliRunner

from radvqa.cli import app
from radvqa.dataset_files import load_manifest
from radvqa.errors import DatasetError
from radvqa.stats import compute_stats, tables, to_markdown, to_text

runner = CliRunner()


@pytest.fixture(scope="module")
def stats(bench_dataset: Path):  # type: ignore[no-untyped-def]
    return compute_stats(bench_dataset)


def table(stats, key: str):  # type: ignore[no-untyped-def]
    return next(t for t in tables(stats) if t.key == key)


def number(cell: str) -> int:
    return int(cell.split(" ")[0].replace(",", ""))


def test_counts_add_up_to_the_manifest(bench_dataset: Path, stats) -> None:  # type: ignore[no-untyped-def]
    manifest = load_manifest(bench_dataset)
    bench = config_records(bench_dataset, "benchmark", "test")
    for config, splits in manifest["records"].items():
        for split, n in splits.items():
            assert stats.records[(config, split)] == n
    assert stats.records[("benchmark", "test")] == len(bench)
    regions = table(stats, "regions")
    assert regions.headers == ("region", "train", "val", "test", "total")
    column = {h: i for i, h in enumerate(regions.headers)}
    for split, config in (("train", "alignment"), ("val", "alignment")):
        assert sum(number(r[column[split]]) for r in regions.rows) == manifest["records"][config][split]
    assert sum(number(r[column["test"]]) for r in regions.rows) == len(bench) // 9
    classes = table(stats, "pathologies")
    assert sum(number(r[-1]) for r in classes.rows) == sum(number(r[-1]) for r in regions.rows)
    assert len({(r[0], r[1], r[2]) for r in classes.rows}) == len(classes.rows)
    slots = table(stats, "slots")
    train = {r[0]: number(r[2]) for r in slots.rows}
    assert train == manifest["slots"]["train"]


def test_balance_tables(bench_dataset: Path, stats) -> None:  # type: ignore[no-untyped-def]
    images = load_manifest(bench_dataset)["records"]["alignment"]["train"]
    letters = table(stats, "letters")
    for row in letters.rows:
        counts = [number(c) for c in row[3:]]
        assert len(counts) == 4
        if row[:2] == ("instruct", "train"):
            assert sum(counts) == images
            assert all(abs(c / images - 0.25) < 0.05 for c in counts)
    closed = {(r[0], r[1], r[2]): r for r in table(stats, "closed").rows}
    assert closed[("instruct", "train", "anatomy")][5] == "50.0%"
    normal = table(stats, "normal")
    first = normal.rows[0]
    assert first[:2] == ("train", "all regions")
    assert number(first[3]) == sum(
        1 for r in config_records(bench_dataset, "alignment", "train") if not r["is_abnormal"]
    )
    bench = {r[0]: r[1] for r in table(stats, "benchmark").rows}
    assert number(bench["images"]) == len(config_records(bench_dataset, "benchmark", "test")) // 9


def test_renderers(stats) -> None:  # type: ignore[no-untyped-def]
    splits = table(stats, "splits")
    markdown = to_markdown(splits)
    assert markdown.startswith("### Records per config and split\n")
    assert "| config | split | images | records |\n| --- | --- | ---: | ---: |" in markdown
    text = to_text(splits).splitlines()
    assert text[0] == "Records per config and split"
    assert len({len(line) for line in text[1:3]}) == 1  # header and rule line up


def test_stats_command_writes_report_charts_and_refreshes_the_card(bench_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(bench_dataset, out)
    result = runner.invoke(app, ["stats", str(out)])
    assert result.exit_code == 0, result.output
    assert "Correct-letter balance (multiple choice)" in result.output
    assert "Benchmark strata" in result.output
    report = out / "stats"
    markdown = (report / "stats.md").read_text()
    for name in ("regions", "normal", "balance", "classes"):
        png = report / f"{name}.png"
        with Image.open(png) as image:
            image.verify()
        with Image.open(png) as image:
            assert image.format == "PNG"
            assert image.width >= 600 and image.height >= 300
            assert len(image.getcolors(1 << 20) or range(1000)) > 20  # an actual picture, not a blank canvas
        assert f"![{name}]({name}.png)" in markdown
        assert f"![{name}](stats/{name}.png)" in (out / "README.md").read_text()
    assert "### Yes/no balance (closed questions)" in markdown


def test_stats_into_another_folder_leaves_the_dataset_alone(bench_dataset: Path, tmp_path: Path) -> None:
    card = (bench_dataset / "README.md").read_bytes()
    result = runner.invoke(app, ["stats", str(bench_dataset), "-o", str(tmp_path / "report"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == [
        "balance.png",
        "classes.png",
        "normal.png",
        "regions.png",
        "stats.md",
    ]
    assert not (bench_dataset / "stats").exists()
    assert (bench_dataset / "README.md").read_bytes() == card


def test_stats_names_a_record_without_a_field(bench_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(bench_dataset, out)
    shard = sorted(out.glob("instruct/val-*.jsonl"))[0]
    lines = shard.read_text().splitlines()
    lines[2] = lines[2].replace('"slot":', '"slit":')
    shard.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=rf"{shard.name}:3: record has no 'slot' field"):
        compute_stats(out)
    result = runner.invoke(app, ["stats", str(out), "-o", str(tmp_path / "r")])
    assert result.exit_code == 1 and ":3: record has no 'slot' field" in result.output


def test_stats_without_matplotlib_prints_tables_and_names_the_extra(
    bench_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    result = runner.invoke(app, ["stats", str(bench_dataset), "-o", str(tmp_path / "report"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "Correct-letter balance (multiple choice)" in result.stdout and "Benchmark strata" in result.stdout
    assert result.stderr.strip() == "note: no PNG charts, matplotlib is not installed (pip install 'radvqa[stats]')"
    assert [p.name for p in (tmp_path / "report").iterdir()] == ["stats.md"]
    assert "![" not in (tmp_path / "report" / "stats.md").read_text()