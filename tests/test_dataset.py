import hashlib
from pathlib import Path

import orjson
import pytest

from radvqa import dataset
from radvqa.config import Config
from radvqa.dataset import generate_dataset
from radvqa.errors import OutputError
from radvqa.taxonomy import Taxonomy
from radvqa.templates import TemplateSet
from radvqa.writers import shard_count, shard_name


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
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(sample_copy, out, config, taxonomy, templates)
    # no shard, no temporary; only the record of what the run was writing, so --overwrite may clear it
    assert not list(out.rglob("*.jsonl")) and [p.name for p in out.rglob(".*")] == [dataset.PENDING]
    assert not (out / "manifest.json").exists()
    monkeypatch.undo()
    generate_dataset(sample_copy, out, config, taxonomy, templates, overwrite=True)
    assert (out / "manifest.json").is_file() and not (out / dataset.PENDING).exists()
