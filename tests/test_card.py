"""The dataset card: every config loads with the real `datasets` library, offline, with clean features."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from export_fixtures import bench_dataset, config_records, hf_offline  # noqa: F401

from radvqa.card import render_card, write_card
from radvqa.dataset_files import dataset_parts, load_manifest
from radvqa.stats import compute_stats

RECORD_FIELDS = [
    "id",
    "image",
    "split",
    "task",
    "slot",
    "question_type",
    "question",
    "choices",
    "answer",
    "answer_text",
    "modality",
    "region",
    "pathology",
    "label",
    "is_abnormal",
    "template_id",
]


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_every_config_loads_with_datasets_offline(bench_dataset: Path, hf_offline: Path) -> None:
    import datasets

    manifest = load_manifest(bench_dataset)
    expected = {(c, s): n for c, splits in manifest["records"].items() for s, n in splits.items()}
    expected[("benchmark", "test")] = len(config_records(bench_dataset, "benchmark", "test"))
    loaded = {}
    for config in ("alignment", "instruct", "benchmark"):
        dataset = datasets.load_dataset(str(bench_dataset), config, cache_dir=str(hf_offline))
        for split, table in dataset.items():
            loaded[(config, split)] = table.num_rows
            assert table.column_names == RECORD_FIELDS
            # an all-empty choices column must still be a list of strings, the same in every config
            assert table.features["choices"] == datasets.List(datasets.Value("string"))
            assert table.features["is_abnormal"] == datasets.Value("bool")
            first = config_records(bench_dataset, config, split)[0]
            assert table[0] == first
    assert loaded == expected


def test_card_states_source_settings_counts_license_and_citation(bench_dataset: Path) -> None:
    card = (bench_dataset / "README.md").read_text()
    manifest = load_manifest(bench_dataset)
    matter = front_matter(card)
    names = [c["config_name"] for c in matter["configs"]]
    assert names == ["alignment", "instruct", "benchmark"]
    benchmark = matter["configs"][2]["data_files"]
    assert benchmark == [{"split": "test", "path": "benchmark/test-*.jsonl"}]
    assert [i["config_name"] for i in matter["dataset_info"]] == names
    assert manifest["source"]["root"] in card
    assert f"seed **{manifest['seed']}**" in card
    assert f"| instruct | train | {manifest['records']['instruct']['train']:,} |" in card
    assert "RadImageNet's data-use terms" in card
    assert "2512.17396" in card and "@article{mei2022radimagenet" in card
    assert "## Benchmark" in card and "Correct-letter balance" in card
    # the region table adds up to the number of training images
    region_rows = card.split("### Images per region")[1].split("###")[0]
    train_total = sum(
        int(line.split("|")[2].replace(",", ""))
        for line in region_rows.splitlines()
        if line.startswith("| ") and "---" not in line and "region" not in line
    )
    assert train_total == manifest["records"]["alignment"]["train"]


def test_card_reads_the_benchmark_rule_from_the_manifest(bench_dataset: Path) -> None:
    manifest = load_manifest(bench_dataset) | {
        "benchmark": {
            "rule": "Take one image per class, then fill by largest remainder.",
            "images": 151,
            "per_region": {"knee": 3, "hip": 2},
            "normal_share": 0.0625,
        }
    }
    stats = compute_stats(bench_dataset, manifest, configs=("alignment", "benchmark"))
    card = render_card(manifest, stats, parts=dataset_parts(bench_dataset, manifest))
    section = card.split("## Benchmark")[1]
    assert "Selection rule: Take one image per class, then fill by largest remainder." in section
    assert "- **images**: 151" in section
    assert "- **per region**: knee 3, hip 2" in section
    assert "- **normal share**: 0.0625" in section


def test_card_without_benchmark_states_the_rule(bench_dataset: Path, tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "out"
    shutil.copytree(bench_dataset, out)
    shutil.rmtree(out / "benchmark")
    manifest = load_manifest(out)
    manifest["records"].pop("benchmark", None)
    manifest["slots"].pop("test", None)
    manifest.pop("benchmark", None)
    write_card(out, manifest)
    card = (out / "README.md").read_text()
    assert "This dataset has no benchmark config" in card
    assert [c["config_name"] for c in front_matter(card)["configs"]] == ["alignment", "instruct"]


def test_write_card_embeds_charts_found_in_stats(bench_dataset: Path, tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "out"
    shutil.copytree(bench_dataset, out)
    (out / "stats").mkdir()
    for name in ("classes", "regions"):
        (out / "stats" / f"{name}.png").write_bytes(b"png")
    write_card(out, load_manifest(out))
    card = (out / "README.md").read_text()
    assert card.index("![regions](stats/regions.png)") < card.index("![classes](stats/classes.png)")


def test_card_needs_a_manifest(tmp_path: Path) -> None:
    from radvqa.errors import DatasetError

    with pytest.raises(DatasetError, match="manifest.json: not found"):
        load_manifest(tmp_path)
