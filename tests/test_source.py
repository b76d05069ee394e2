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


# ---- the signature check: every kind of entry, cold first pages, batches on workers ----------

import errno  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402

from radvqa import source  # noqa: E402
from radvqa.executors import Executor, ExecutorSpec  # noqa: E402
from radvqa.sample import placeholder_png  # noqa: E402


def _odd_folder(data_dir: Path) -> dict[str, int]:
    """A class folder holding every kind of entry the walk can meet; name -> expected outcome."""
    folder = data_dir / "MR" / "knee" / "normal"
    folder.mkdir(parents=True)
    png = placeholder_png(7)
    expected = {}
    for i in range(5):  # real images around each odd one: a stale buffer would pass them
        (folder / f"a{i}.png").write_bytes(png)
        expected[f"a{i}.png"] = len(png)
    (folder / "b-short.png").write_bytes(png[:3])  # a prefix of the signature, read after a real PNG
    (folder / "b-text.png").write_text("not a picture\n")
    (folder / "b-empty.png").write_bytes(b"")
    (folder / "b-folder.png").mkdir()
    os.mkfifo(folder / "b-fifo.png")
    (folder / "b-gone.png").symlink_to("nothing-here.png")
    (folder / "b-to-folder.png").symlink_to("b-folder.png")
    (folder / "c-link.png").symlink_to("a0.png")
    (folder / "d.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(60))
    (folder / "d-not.jpg").write_bytes(png)  # a PNG named .jpg: the wrong signature for its name
    expected.update({
        "b-short.png": 0, "b-text.png": 0, "b-empty.png": 0, "b-folder.png": 0, "b-fifo.png": 0,
        "b-gone.png": -1, "b-to-folder.png": 0, "c-link.png": len(png), "d.jpg": 64, "d-not.jpg": 0,
    })
    with socket.socket(socket.AF_UNIX) as server:
        here = os.getcwd()
        os.chdir(folder)  # a relative name: a socket path may not exceed 108 bytes
        try:
            server.bind("b-socket.png")
        finally:
            os.chdir(here)
    expected["b-socket.png"] = 0
    return expected


def _ids(expected: dict[str, int]) -> list[str]:
    return sorted(f"MR/knee/normal/{name}" for name in expected)


def test_image_sizes_knows_every_kind_of_entry(tmp_path: Path) -> None:
    expected = _odd_folder(tmp_path)
    listing = source.walk_images(tmp_path)
    assert listing.images == set(_ids(expected))
    sizes = source.image_sizes(tmp_path, _ids(expected))
    assert dict(zip(_ids(expected), sizes.tolist())) == {f"MR/knee/normal/{n}": v for n, v in expected.items()}


def test_cold_first_pages_are_read_later_with_the_same_result(tmp_path: Path, monkeypatch) -> None:
    """Every first page 'not in memory' (RWF_NOWAIT says EAGAIN): files wait in flight, then are read."""
    expected = _odd_folder(tmp_path)
    ids = _ids(expected)
    warm = source.image_sizes(tmp_path, ids)
    opened: list[int] = []
    real_open = os.open

    def counting_open(*args, **kwargs):
        handle = real_open(*args, **kwargs)
        opened.append(handle)
        return handle

    def cold(handle, buffers, offset, flags):
        assert flags == os.RWF_NOWAIT
        raise BlockingIOError(errno.EAGAIN, "not in the page cache")

    monkeypatch.setattr(source, "_IN_FLIGHT", 3)
    monkeypatch.setattr(source.os, "preadv", cold)
    monkeypatch.setattr(source.os, "open", counting_open)
    assert source.image_sizes(tmp_path, ids).tolist() == warm.tolist()
    for handle in opened:  # every file closed, the cold ones too
        with pytest.raises(OSError):
            os.fstat(handle)


def test_a_file_system_without_nowait_reads_blocking(tmp_path: Path, monkeypatch) -> None:
    expected = _odd_folder(tmp_path)
    ids = _ids(expected)
    warm = source.image_sizes(tmp_path, ids)
    calls = []

    def unsupported(handle, buffers, offset, flags):
        calls.append(flags)
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(source.os, "preadv", unsupported)
    assert source.image_sizes(tmp_path, ids).tolist() == warm.tolist()
    assert len(calls) == 1  # asked once, then plain reads


def test_batches_on_two_workers_match_this_process(tmp_path: Path, taxonomy: Taxonomy, monkeypatch) -> None:
    copy = tmp_path / "copy"
    write_copy(copy, taxonomy, {cls.index: 30 for cls in taxonomy.classes[:40]}, image_bytes=placeholder_png)
    data_dir = copy / "radiology_ai"
    ids = sorted(i for i in source.walk_images(data_dir).images if not i.startswith("US/"))
    (data_dir / ids[7]).write_text("broken\n")  # one bad file, in the first batch
    alone = source.check_images(data_dir, ids)
    monkeypatch.setattr(source, "_BATCH", 100)
    with Executor(ExecutorSpec(workers=2), paths=(copy,)) as pool:
        spread = source.check_images(data_dir, ids, pool)
    assert spread.tolist() == alone.tolist()
    assert (alone <= 0).sum() == 1 and alone[7] == 0


def test_a_folder_that_cannot_be_read_is_one_clear_error(tmp_path: Path, monkeypatch) -> None:
    expected = _odd_folder(tmp_path)
    folder = tmp_path / "MR" / "knee" / "normal"
    real_listdir = os.listdir

    def denied(path):
        if Path(path) == folder:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_listdir(path)

    monkeypatch.setattr(source.os, "listdir", denied)  # as for a non-root user after chmod 0
    with pytest.raises(SourceError, match=rf"^{folder}: cannot list this folder \(Permission denied\)$"):
        source.walk_images(tmp_path)
    monkeypatch.undo()
    ids = _ids(expected)
    shutil.rmtree(folder)  # gone between the listing and the check
    with pytest.raises(SourceError, match=rf"^{folder}: cannot open this folder \(No such file or directory\)$"):
        source.image_sizes(tmp_path, ids)


# --- the cache of verified files (radvqa.file_cache) ---------------------------------------

import time  # noqa: E402

from radvqa import file_cache  # noqa: E402


def test_a_rerun_opens_only_files_changed_since_they_were_verified(tmp_path: Path, taxonomy: Taxonomy, monkeypatch) -> None:
    copy = tmp_path / "copy"
    write_copy(copy, taxonomy, {cls.index: 5 for cls in taxonomy.classes[:20]}, image_bytes=placeholder_png, quirks=False)
    data_dir = copy / "radiology_ai"
    first, _ = source.read_source(copy, taxonomy, {"train": 0.8, "val": 0.1, "test": 0.1}, with_sizes=True)
    assert file_cache.cache_path(data_dir).is_file() and str(data_dir) not in str(file_cache.cache_path(data_dir))
    opened: list[str] = []
    real = source.image_sizes

    def counting(data_dir, ids, stats=None):
        opened.extend(ids)
        return real(data_dir, ids, stats)

    monkeypatch.setattr(source, "image_sizes", counting)
    again, _ = source.read_source(copy, taxonomy, {"train": 0.8, "val": 0.1, "test": 0.1}, with_sizes=True)
    assert opened == [] and again.equals(first)
    # Same size, same modification time, other bytes: the change time still moved.
    victim = first["image_id"].iloc[3]
    path = data_dir / victim
    before = path.stat()
    time.sleep(0.05)  # past the file system's timestamp granularity
    path.write_bytes(b"x" * before.st_size)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    third, report = source.read_source(copy, taxonomy, {"train": 0.8, "val": 0.1, "test": 0.1}, with_sizes=True)
    assert opened == [victim] and victim not in set(third["image_id"]) and len(third) == len(first) - 1
    assert report.skipped[source.NOT_AN_IMAGE] == 1


def test_a_cache_that_cannot_be_written_is_no_error(tmp_path: Path, taxonomy: Taxonomy, monkeypatch) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    copy = tmp_path / "copy"
    write_copy(copy, taxonomy, {cls.index: 3 for cls in taxonomy.classes[:5]}, image_bytes=placeholder_png, quirks=False)
    table, _ = source.read_source(copy, taxonomy, {"train": 0.8, "val": 0.1, "test": 0.1})
    assert len(table) == 15 and blocker.read_text() == "x"
