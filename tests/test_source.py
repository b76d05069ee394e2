import shutil
from pathlib import Path

import numpy as np
import pytest

from radvqa.config import Config
from radvqa.errors import SourceError
from radvqa.sample import Quirks, write_copy
from radvqa.source import hash_split, path_hash, read_source
from radvqa.taxonomy import Taxonomy


@pytest.fixture(scope="module")
def read_sample(sample_copy_with_quirks: tuple[Path, Quirks], taxonomy: Taxonomy, config: Config):
    root, quirks = sample_copy_with_quirks
    table, report = read_source(root, taxonomy, config.split_ratios)
    return table, report, quirks


def test_table_columns_and_order(read_sample) -> None:
    table, report, _ = read_sample
    assert list(table.columns) == [
        "image_id", "image", "split", "class_index", "modality", "anatomy", "pathology", "region", "key",
    ]
    assert table["image_id"].is_monotonic_increasing
    assert table["image_id"].is_unique and table["key"].is_unique
    assert (table["image"] == "radiology_ai/" + table["image_id"]).all()
    assert set(table["split"]) == {"train", "val", "test"}
    assert report.images == len(table)
    assert set(table["class_index"]) == set(range(150))  # every class present


def test_quirks_are_reported_and_skipped(read_sample) -> None:
    table, report, quirks = read_sample
    ids = set(table["image_id"])
    assert report.skipped["CSV row whose image file is missing"] == 1
    assert report.examples["CSV row whose image file is missing"] == [quirks.missing_file.split("/", 1)[1]]
    assert report.skipped["ultrasound (not part of the VQA dataset)"] == 2
    assert report.skipped["unknown class folder (not in the taxonomy)"] == 1
    assert not any(i.startswith("US/") for i in ids)
    assert quirks.unknown_class not in ids
    assert any("labelled af-normal" in w for w in report.warnings)
    # the mislabelled image is kept, classed by its folder
    row = table[table["image_id"] == quirks.wrong_label].iloc[0]
    assert row["pathology"] == "Plantar_plate_tear"


def test_same_name_in_two_folders_are_two_images(read_sample) -> None:
    table, _, quirks = read_sample
    ids = set(table["image_id"])
    assert set(quirks.shared_name) <= ids
    regions = set(table[table["image_id"].isin(quirks.shared_name)]["region"])
    assert regions == {"hip", "shoulder"}


def test_backslash_and_short_paths_are_located(read_sample) -> None:
    table, _, quirks = read_sample
    row = table[table["image_id"] == quirks.short_path].iloc[0]
    assert row["split"] == "val" and row["region"] == "spine"


def test_summary_lines_mention_counts(read_sample) -> None:
    _, report, _ = read_sample
    text = "\n".join(report.lines())
    assert "images used:" in text and "skipped 1: CSV row whose image file is missing" in text


def test_without_csvs_splits_come_from_path_hash(tmp_path: Path, sample_copy: Path, taxonomy: Taxonomy, config: Config) -> None:
    root = tmp_path / "copy"
    shutil.copytree(sample_copy / "radiology_ai", root / "radiology_ai")
    table, report = read_source(root, taxonomy, config.split_ratios)
    assert "hash" in report.split_source
    again, _ = read_source(root, taxonomy, config.split_ratios)
    assert (table["split"] == again["split"]).all()
    expected = hash_split(path_hash(table["image_id"].tolist()), config.split_ratios)
    assert (table["split"].to_numpy() == expected).all()
    share = (table["split"] == "train").mean()
    assert 0.8 < share < 0.97


def test_hash_split_follows_ratios() -> None:
    keys = path_hash([f"CT/abd/normal/{i}.png" for i in range(20000)])
    splits = hash_split(keys, {"train": 0.5, "val": 0.25, "test": 0.25})
    shares = {s: float(np.mean(splits == s)) for s in ("train", "val", "test")}
    assert abs(shares["train"] - 0.5) < 0.02 and abs(shares["test"] - 0.25) < 0.02


def test_root_may_be_radiology_ai_or_a_renamed_folder(tmp_path: Path, taxonomy: Taxonomy, config: Config) -> None:
    base = tmp_path / "base"
    write_copy(base, taxonomy, {0: 5, 40: 5}, quirks=False)
    direct, _ = read_source(base / "radiology_ai", taxonomy, config.split_ratios)
    assert len(direct) == 10 and direct["image"].iloc[0].startswith("CT/")
    (base / "radiology_ai").rename(base / "RadImageNet_v1")
    renamed, report = read_source(base, taxonomy, config.split_ratios)
    assert len(renamed) == 10 and renamed["image"].iloc[0].startswith("RadImageNet_v1/CT/")
    assert (renamed["split"].to_numpy() == direct["split"].to_numpy()).all()


def test_mr_abd_alias_folder(tmp_path: Path, taxonomy: Taxonomy, config: Config) -> None:
    mriabd = taxonomy.resolve("MR", "mriabd", "renal_lesion")
    write_copy(tmp_path, taxonomy, {mriabd.index: 4}, quirks=False)
    data = tmp_path / "radiology_ai" / "MR"
    (data / "mriabd").rename(data / "abd")
    for csv in tmp_path.glob("*.csv"):
        csv.write_text(csv.read_text().replace("MR/mriabd/", "MR/abd/"))
    table, report = read_source(tmp_path, taxonomy, config.split_ratios)
    assert len(table) == 4 and set(table["region"]) == {"abdomen"}
    assert set(table["class_index"]) == {mriabd.index}


def test_errors_name_the_problem(tmp_path: Path, taxonomy: Taxonomy, config: Config) -> None:
    with pytest.raises(SourceError, match="not a folder"):
        read_source(tmp_path / "absent", taxonomy, config.split_ratios)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no folder with CT/, MR/ or US/"):
        read_source(tmp_path / "empty", taxonomy, config.split_ratios)
    write_copy(tmp_path / "bad", taxonomy, {0: 3}, quirks=False)
    (tmp_path / "bad" / "RadiologyAI_train.csv").write_text("file,label\nx,y\n")
    with pytest.raises(SourceError, match=r"RadiologyAI_train.csv: no 'filename' column"):
        read_source(tmp_path / "bad", taxonomy, config.split_ratios)


# ---- a hostile copy: links, undecodable names, files that are not images (issue 11) ----------

from typer.testing import CliRunner  # noqa: E402

from radvqa.cli import app  # noqa: E402


def _generate(copy: Path, out: Path, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["generate", str(copy), "-o", str(out), *extra])
    return result.exit_code, result.output


def _records(out: Path) -> list[dict]:
    import json

    return [json.loads(line) for shard in sorted(out.rglob("*.jsonl")) for line in shard.read_text().splitlines()]


def _class_folder(copy: Path) -> Path:
    return sorted(p for p in (copy / "radiology_ai" / "MR").glob("*/*") if any(p.iterdir()))[0]


def test_a_folder_link_loop_is_not_followed(tmp_path: Path, tiny_copy: Path) -> None:
    code, plain = _generate(tiny_copy, tmp_path / "plain", "--quiet")
    assert code == 0, plain
    anatomy = _class_folder(tiny_copy).parent
    (anatomy / "up").symlink_to("../../..")  # radiology_ai/MR/<anatomy>/up -> the copy root: a loop
    code, output = _generate(tiny_copy, tmp_path / "out")
    assert code == 0, output
    assert f"skipped 1: folder link not followed (a loop would list the copy again) (e.g. MR/{anatomy.name}/up)" in output
    assert "images used: 40 " in output
    assert len(_records(tmp_path / "out")) == len(_records(tmp_path / "plain"))


@pytest.mark.parametrize("with_csvs", [True, False])
def test_an_undecodable_name_is_skipped_and_shown_escaped(tmp_path: Path, tiny_copy: Path, with_csvs: bool) -> None:
    import json
    import os

    folder = _class_folder(tiny_copy)
    os.close(os.open(os.fsencode(folder) + b"/bad\xff.png", os.O_CREAT | os.O_WRONLY))
    if not with_csvs:
        for csv in tiny_copy.glob("RadiologyAI_*.csv"):
            csv.unlink()
    code, output = _generate(tiny_copy, tmp_path / "out")
    assert code == 0, output
    shown = f"MR/{folder.parent.name}/{folder.name}/bad\\xff.png"
    assert f"skipped 1: name is not valid UTF-8 (shown escaped) (e.g. {shown})" in output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["source"]["examples"]["name is not valid UTF-8 (shown escaped)"] == [shown]
    assert manifest["source"]["images"] == 40


def test_dangling_links_and_broken_files_never_become_records(tmp_path: Path, tiny_copy: Path) -> None:
    folder = _class_folder(tiny_copy)
    rel = folder.relative_to(tiny_copy).as_posix()
    (folder / "gone.png").symlink_to("no-such-file.png")
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.png").write_text("this is not a picture\n")
    (folder / "folder.png").mkdir()
    real = sorted(folder.glob("*0.png"))[0]
    (folder / "link.png").symlink_to(real.name)  # a link to a real image is an image
    with open(tiny_copy / "RadiologyAI_train.csv", "a") as handle:
        for name in ("gone", "empty", "text", "folder", "link"):
            handle.write(f"{rel}/{name}.png,x\n")
    code, output = _generate(tiny_copy, tmp_path / "out")
    assert code == 0, output
    short = rel.split("/", 1)[1]
    assert f"skipped 1: dangling link (e.g. {short}/gone.png)" in output
    assert (
        "skipped 3: not an image file (empty, wrong signature or not a regular file) "
        f"(e.g. {short}/empty.png, {short}/folder.png, {short}/text.png)"
    ) in output
    assert "image file is missing" not in output  # each file counted once, under its real reason
    images = {record["image"] for record in _records(tmp_path / "out")}
    assert f"{rel}/link.png" in images
    assert not {f"{rel}/{name}.png" for name in ("gone", "empty", "text", "folder")} & images
