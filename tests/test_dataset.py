import hashlib
from pathlib import Path

import orjson
import pytest

from radvqa import dataset
from radvqa.config import Config
from radvqa.dataset import generate_dataset
from radvqa.errors import OutputError
from radvqa.executors import Interrupted
from radvqa.taxonomy import Taxonomy
from radvqa.templates import TemplateSet
from radvqa.writers import RUN_FILE, shard_count, shard_name


def concatenated(out: Path, config: str) -> bytes:
    return b"".join(p.read_bytes() for p in sorted((out / config).glob("*.jsonl")))


def test_shard_names() -> None:
    assert shard_name("train", 0, 3) == "train-00000-of-00003.jsonl"
    assert shard_count(0, 10) == 1 and shard_count(10, 10) == 1 and shard_count(11, 10) == 2


def test_layout_and_manifest(sample_dataset: Path) -> None:
    manifest = orjson.loads((sample_dataset / "manifest.json").read_bytes())
    names = sorted(p.relative_to(sample_dataset).as_posix() for p in sample_dataset.rglob("*.jsonl"))
    assert names == [
        "alignment/train-00000-of-00001.jsonl",
        "alignment/val-00000-of-00001.jsonl",
        "benchmark/test-00000-of-00001.jsonl",
        "instruct/train-00000-of-00001.jsonl",
        "instruct/val-00000-of-00001.jsonl",
    ]
    for shard in manifest["shards"]:
        data = (sample_dataset / shard["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == shard["sha256"]
        assert data.count(b"\n") == shard["records"] and len(data) == shard["bytes"]
    images = manifest["source"]["per_split"]
    assert manifest["records"]["alignment"] == {"train": images["train"], "val": images["val"]}
    assert manifest["records"]["instruct"] == {"train": 9 * images["train"], "val": 9 * images["val"]}
    assert manifest["slots"]["train"]["pathology_mc"] == images["train"]
    assert manifest["seed"] == 0 and manifest["config"]["no_pathology_option_rate"] == "matched"
    assert manifest["taxonomy"]["data"]["regions"]["knee"]["name"] == "knee"
    assert not list(sample_dataset.rglob(".*tmp*"))
    card = (sample_dataset / "README.md").read_text()
    assert card.startswith("---\nconfigs:") and "instruct/train-*.jsonl" in card


def test_same_output_for_any_workers_and_shard_size(
    tmp_path: Path, sample_copy: Path, config: Config, taxonomy: Taxonomy, templates: TemplateSet
) -> None:
    runs = {
        "one": config,
        "two": config.with_overrides(workers=2, shard_size=1000),
        "odd": config.with_overrides(shard_size=777),
    }
    outputs = {}
    for name, settings in runs.items():
        generate_dataset(sample_copy, tmp_path / name, settings, taxonomy, templates)
        outputs[name] = {c: concatenated(tmp_path / name, c) for c in ("alignment", "instruct", "benchmark")}
    assert outputs["one"] == outputs["two"] == outputs["odd"]
    assert len(list((tmp_path / "odd" / "instruct").glob("train-*-of-*.jsonl"))) > 5
    first = (tmp_path / "odd" / "instruct" / "train-00000-of-00013.jsonl").read_bytes()
    assert first.count(b"\n") == 777


def test_seed_changes_output(tmp_path: Path, sample_copy: Path, config: Config, taxonomy: Taxonomy, templates: TemplateSet) -> None:
    generate_dataset(sample_copy, tmp_path / "a", config, taxonomy, templates)
    generate_dataset(sample_copy, tmp_path / "b", config.with_overrides(seed=1), taxonomy, templates)
    assert concatenated(tmp_path / "a", "instruct") != concatenated(tmp_path / "b", "instruct")


def test_refuses_non_empty_output_and_keeps_user_files(
    tmp_path: Path, sample_copy: Path, config: Config, taxonomy: Taxonomy, templates: TemplateSet
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    for overwrite in (False, True):  # no radvqa manifest: never replaced, even with --overwrite
        with pytest.raises(OutputError, match=r"not empty and holds no radvqa record \(notes.txt\)"):
            generate_dataset(sample_copy, out, config, taxonomy, templates, overwrite=overwrite)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    (out / "notes.txt").unlink()
    generate_dataset(sample_copy, out, config.with_overrides(shard_size=5000), taxonomy, templates)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="not empty; pass --overwrite"):
        generate_dataset(sample_copy, out, config, taxonomy, templates)
    generate_dataset(sample_copy, out, config, taxonomy, templates, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"
    # the earlier run's differently-named shards are gone
    assert sorted(p.name for p in (out / "benchmark").iterdir()) == ["test-00000-of-00001.jsonl"]
    assert sorted(p.name for p in (out / "instruct").iterdir()) == [
        "train-00000-of-00001.jsonl", "val-00000-of-00001.jsonl",
    ]


def test_interrupted_shard_leaves_no_finished_looking_file(
    tmp_path: Path, sample_copy: Path, config: Config, taxonomy: Taxonomy, templates: TemplateSet,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_chunks = dataset._chunks

    def failing_chunks(lines):
        for i, chunk in enumerate(real_chunks(lines)):
            if i == 1:
                raise KeyboardInterrupt
            yield chunk

    monkeypatch.setattr(dataset, "_CHUNK", 100)
    monkeypatch.setattr(dataset, "_chunks", failing_chunks)
    out = tmp_path / "out"
    with pytest.raises(Interrupted, match="interrupted: 0 of 5 shards written; rerun with --resume") as stop:
        generate_dataset(sample_copy, out, config, taxonomy, templates)
    assert stop.value.exit_code == 130
    assert not list(out.rglob("*.jsonl")) and not list(out.rglob(".*tmp*"))
    assert not (out / "manifest.json").exists() and (out / RUN_FILE).is_file()
    monkeypatch.undo()
    generate_dataset(sample_copy, out, config, taxonomy, templates, overwrite=True)  # the run file marks it ours
    assert (out / "manifest.json").is_file() and not (out / RUN_FILE).exists()


# ---- degenerate results and split files (issue 11) ---------------------------------------------

from typer.testing import CliRunner  # noqa: E402

from radvqa.cli import app  # noqa: E402


def _cli(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def test_an_ultrasound_only_copy_is_an_error(tmp_path: Path) -> None:
    from radvqa.sample import png_bytes

    folder = tmp_path / "copy" / "radiology_ai" / "US" / "usabd" / "kidney"
    folder.mkdir(parents=True)
    for i in range(3):
        (folder / f"k{i}.png").write_bytes(png_bytes(i))
    code, output = _cli("generate", tmp_path / "copy", "-o", tmp_path / "out")
    assert (code, output) == (
        1, f"ERROR: {tmp_path / 'copy' / 'radiology_ai'}: no usable CT/MRI image (3 ultrasound (not part of the "
        "VQA dataset))\n",
    )
    assert not (tmp_path / "out").exists()


def test_a_header_only_test_csv_is_an_empty_benchmark_error(tmp_path: Path, tiny_copy: Path) -> None:
    (tiny_copy / "RadiologyAI_test.csv").write_text("filename,label\n")
    code, output = _cli("generate", tiny_copy, "-o", tmp_path / "out")
    assert code == 1 and output.splitlines() == [
        "ERROR: the benchmark is empty: the test pool has 0 usable images",
        "hint: add test images (RadiologyAI_test.csv), or pass --benchmark-images 0 for no benchmark",
    ]
    assert not (tmp_path / "out").exists()


def test_a_benchmark_missing_a_region_of_the_test_pool_is_an_error(tmp_path: Path, tiny_copy: Path) -> None:
    import csv

    rows = list(csv.reader((tiny_copy / "RadiologyAI_test.csv").read_text().splitlines()))[1:]
    knee = [name for name, _ in rows if "/knee/" in name]
    assert knee
    for name in knee:  # a PNG signature, then garbage: passes the walk, fails decoding
        (tiny_copy / name).write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    out = tmp_path / "out"
    code, output = _cli("generate", tiny_copy, "-o", out, "--quiet")
    assert (code, output) == (
        1, "ERROR: the benchmark has no image of 1 region(s) the test pool has (knee): their candidates are "
        "unreadable, blank or duplicated; repair or remove those files\n",
    )
    assert not (out / "manifest.json").exists() and (out / RUN_FILE).is_file()
    code, output = _cli("generate", tiny_copy, "-o", out, "--quiet", "--overwrite", "--benchmark-images", "0")
    assert code == 0, output  # the refused run's files are radvqa's: --overwrite replaces them
    assert not (out / RUN_FILE).exists()


def test_a_split_file_must_cover_the_copy(tmp_path: Path, tiny_copy: Path) -> None:
    splits = tmp_path / "splits.csv"
    assert _cli("split", tiny_copy, "-o", splits, "--quiet")[0] == 0
    code, output = _cli("generate", tiny_copy, "-o", tmp_path / "good", "--splits", splits)
    assert code == 0, output
    assert "images used: 40 (train 28, val 4, benchmark 4, test_pool 4)" in output  # what the records say
    assert "alignment: train 28, val 4 records" in output
    lines = splits.read_text().splitlines()
    short = tmp_path / "short.csv"
    short.write_text("\n".join(lines[:-3]) + "\n")
    code, output = _cli("generate", tiny_copy, "-o", tmp_path / "out", "--splits", short)
    assert (code, output) == (
        1, f"ERROR: {short}: 3 of the copy's 40 usable images are not in it and it names 0 images the copy lacks "
        "(at most 0, 1%, allowed); was it made for another copy? run `radvqa split` on this one\n",
    )
    other = tmp_path / "other.csv"
    other.write_text("\n".join(lines + [f"CT/x/normal/other{i}.png,radiology_ai/CT/x/normal/other{i}.png,train,s,l"
                                        for i in range(5)]) + "\n")
    code, output = _cli("generate", tiny_copy, "-o", tmp_path / "out", "--splits", other)
    assert code == 1 and "0 of the copy's 40 usable images are not in it and it names 5 images the copy lacks" in output
    assert not (tmp_path / "out").exists()
    code, output = _cli("generate", tiny_copy, "-o", tmp_path / "out", "--splits", tmp_path / "nope.csv")
    assert (code, output) == (1, f"ERROR: --splits {tmp_path / 'nope.csv'}: not found (write it with `radvqa split`)\n")
