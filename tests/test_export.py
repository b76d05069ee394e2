"""`radvqa export`: every format parsed back, hf-parquet loaded with the real `datasets` library."""

from __future__ import annotations

import base64
import hashlib
import csv
import io
import json
import os
import shutil
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml
from export_fixtures import bench_dataset, config_records, hf_offline  # noqa: F401
from PIL import Image
from typer.testing import CliRunner

from radvqa.cli import app
from radvqa.config import Config
from radvqa.dataset import generate_dataset
from radvqa.dataset_files import load_manifest
from radvqa.errors import MissingDependencyError
from radvqa.export import MCQ_TSV, OPEN_TSV, export_dataset, question_stem
from radvqa.taxonomy import Taxonomy
from radvqa.templates import TemplateSet

runner = CliRunner()
PARTS = [
    ("alignment", "train"),
    ("alignment", "val"),
    ("instruct", "train"),
    ("instruct", "val"),
    ("benchmark", "test"),
]


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def source_root(out: Path) -> Path:
    return Path(load_manifest(out)["source"]["root"])


# ---------------------------------------------------------------- hf-parquet


@pytest.fixture(scope="module")
def parquet_with_images(bench_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("pq") / "with-images"
    code, output = run("export", bench_dataset, "--format", "hf-parquet", "-o", dest)  # images from the manifest's root
    assert code == 0, output
    return dest


def test_hf_parquet_loads_like_the_released_dataset(
    bench_dataset: Path, parquet_with_images: Path, hf_offline: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datasets

    root = source_root(bench_dataset)
    monkeypatch.chdir(tmp_path)  # a trainer's working folder is anywhere but the copy
    assert "Image bytes are embedded in the parquet files" in (parquet_with_images / "README.md").read_text()
    for config, split in PARTS:
        records = config_records(bench_dataset, config, split)
        table = datasets.load_dataset(str(parquet_with_images), config, split=split, cache_dir=str(hf_offline))
        assert table.num_rows == len(records)
        assert isinstance(table.features["image"], datasets.Image)
        meta = table.features["metadata"]
        assert list(meta) == [
            "content_type",
            "correct_text",
            "is_abnormal",
            "location",
            "modality",
            "pathology",
            "question_id",
        ]
        if config == "benchmark":
            assert table.column_names == ["image", "question", "choices", "answer", "question_type", "metadata"]
            assert table.features["choices"] == datasets.List(datasets.Value("string"))
        else:
            assert table.column_names == ["image", "conversations", "metadata"]
        for i in (0, 3, len(records) - 1):
            row, record = table[i], records[i]
            assert row["metadata"]["question_id"] == record["id"]
            assert row["metadata"]["location"] == record["region"]
            assert row["metadata"]["is_abnormal"] == record["is_abnormal"]
            assert row["metadata"]["content_type"] == record["task"]
            if config == "alignment":
                assert row["metadata"]["correct_text"] is None
            else:
                assert row["metadata"]["correct_text"] == record["answer_text"]
            with Image.open(root / record["image"]) as source:
                assert row["image"].size == source.size
                assert row["image"].tobytes() == source.tobytes()
            if config == "benchmark":
                assert row["question"] == question_stem(record)
                # as released: options on multiple-choice rows, null elsewhere
                assert row["choices"] == (record["choices"] if record["question_type"] == "multiple_choice" else None)
                assert row["answer"] == record["answer"]
                assert row["question_type"] == record["question_type"]
            else:
                human, gpt = row["conversations"]
                assert human == {"from": "human", "value": "<image>\n" + record["question"]}
                assert gpt == {"from": "gpt", "value": record["answer"]}


def test_single_parquet_files_decode_images_without_the_card(
    bench_dataset: Path, parquet_with_images: Path, hf_offline: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datasets
    import pyarrow.parquet as pq

    root = source_root(bench_dataset)
    monkeypatch.chdir(tmp_path)
    for config, split in (("benchmark", "test"), ("alignment", "train")):
        (shard,) = sorted((parquet_with_images / config).glob(f"{split}-*.parquet"))
        assert b"huggingface" in pq.read_schema(shard).metadata
        alone = tmp_path / f"{config}.parquet"  # one file, no README card beside it
        shutil.copy(shard, alone)
        table = datasets.load_dataset("parquet", data_files=alone.name, split="train", cache_dir=str(hf_offline))
        assert isinstance(table.features["image"], datasets.Image)
        records = config_records(bench_dataset, config, split)
        row = table[len(records) - 1]
        with Image.open(root / records[-1]["image"]) as source:
            assert row["image"].tobytes() == source.tobytes()
        assert row["metadata"]["question_id"] == records[-1]["id"]
        if config == "benchmark":
            kinds = {r["question_type"] for r in records}
            assert kinds == {"open", "closed", "multiple_choice"}
            for i, record in enumerate(records[:9]):
                expected = record["choices"] if record["question_type"] == "multiple_choice" else None
                assert table[i]["choices"] == expected
        else:
            assert row["conversations"][1]["value"] == records[-1]["answer"]
            assert row["metadata"]["correct_text"] is None  # captions carry no option text, as released


def test_hf_parquet_no_embed_writes_absolute_paths_and_shards(
    bench_dataset: Path, tmp_path: Path, hf_offline: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datasets

    dest = tmp_path / "pq"
    code, output = run(
        "export", bench_dataset, "-f", "hf-parquet", "-o", dest, "--shard-size", "1000", "--only", "instruct",
        "--no-embed",
    )
    assert code == 0, output
    assert "absolute paths" in (dest / "README.md").read_text()
    records = config_records(bench_dataset, "instruct", "train")
    shards = sorted((dest / "instruct").glob("train-*.parquet"))
    n = -(-len(records) // 1000)
    assert [p.name for p in shards] == [f"train-{i:05d}-of-{n:05d}.parquet" for i in range(n)]
    assert not (dest / "alignment").exists() and (dest / "manifest.json").is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    table = datasets.load_dataset(str(dest), "instruct", split="train", cache_dir=str(hf_offline))
    assert table.num_rows == len(records)
    last = records[-1]
    with Image.open(source_root(bench_dataset) / last["image"]) as source:
        assert table[len(records) - 1]["image"].tobytes() == source.tobytes()
    raw = table.cast_column("image", datasets.Image(decode=False))[len(records) - 1]["image"]
    assert raw == {"bytes": None, "path": str((source_root(bench_dataset) / last["image"]).resolve())}


def test_question_stem_drops_the_option_lines_only() -> None:
    record = {
        "question": "Which region?\nA. hip\nB. knee\nC. spine\nD. brain",
        "choices": ["hip", "knee", "spine", "brain"],
    }
    assert question_stem(record) == "Which region?"
    assert question_stem({"question": "Is it normal?", "choices": []}) == "Is it normal?"
    odd = {"question": "Which?\nA. x", "choices": ["y"]}
    assert question_stem(odd) == odd["question"]


# ---------------------------------------------------------------- llava / sharegpt


def test_llava_one_conversation_per_question(bench_dataset: Path, tmp_path: Path) -> None:
    dest = tmp_path / "llava"
    code, output = run("export", bench_dataset, "-f", "llava", "-o", dest)
    assert code == 0, output
    root = source_root(bench_dataset).resolve()
    for config, split in PARTS:
        records = config_records(bench_dataset, config, split)
        items = json.loads((dest / f"{config}_{split}.json").read_text())
        assert len(items) == len(records)
        for item, record in zip(items, records):
            # absolute by default: LLaVA joins --image_folder with it and gets the path itself
            assert item["id"] == record["id"] and item["image"] == str(root / record["image"])
            assert item["conversations"] == [
                {"from": "human", "value": "<image>\n" + record["question"]},
                {"from": "gpt", "value": record["answer"]},
            ]


def test_llava_group_image_survives_shard_boundaries(
    sample_copy: Path, config: Config, taxonomy: Taxonomy, templates: TemplateSet, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    generate_dataset(sample_copy, out, config.with_overrides(shard_size=400), taxonomy, templates)
    assert len(list(out.glob("instruct/train-*.jsonl"))) > 2  # 400 is not a multiple of 9: images straddle shards
    dest = tmp_path / "llava"
    code, output = run("export", out, "-f", "llava", "--group", "image", "-o", dest, "--root", sample_copy)
    assert code == 0, output
    records = config_records(out, "instruct", "train")
    items = json.loads((dest / "instruct_train.json").read_text())
    assert len(items) == len(records) // 9 == load_manifest(out)["records"]["alignment"]["train"]
    for item in items[:50]:
        turns = item["conversations"]
        assert len(turns) == 18
        assert [t["from"] for t in turns] == ["human", "gpt"] * 9
        assert turns[0]["value"].startswith("<image>\n")
        assert sum("<image>" in t["value"] for t in turns) == 1
        assert Path(item["image"]).is_absolute() and Path(item["image"]).is_file()
        assert len(item["id"]) == 16
    # Turn order: no question's text names the answer of a later question, and the closed pair
    # does not always come yes first.
    by_image: dict[str, dict[str, dict]] = {}
    for r in records:
        by_image.setdefault(r["id"].split("-")[0], {})[r["question"]] = r
    first_closed: Counter[bool] = Counter()
    for item in items:
        mine = by_image[item["id"]]
        asked = [mine[t["value"].removeprefix("<image>\n")] for t in item["conversations"][::2]]
        for i, record in enumerate(asked):
            later = [r["answer_text"].lower() for r in asked[i + 1 :] if r["question_type"] != "closed"]
            text = record["question"].lower()
            if record["question_type"] != "multiple_choice":
                assert not any(f" {a} " in f" {text} " or f" {a}?" in f" {text}" for a in later if a not in ("yes", "no")), (
                    record["slot"], text, later)
        slots = [r["slot"] for r in asked]
        assert slots.index("anatomy_open") < slots.index("abnormality_closed") < slots.index("pathology_open")
        assert max(slots.index("pathology_open"), slots.index("pathology_mc")) < min(
            slots.index("pathology_closed_yes"), slots.index("pathology_closed_no"))
        first_closed[slots.index("pathology_closed_yes") < slots.index("pathology_closed_no")] += 1
    assert first_closed[True] > 0.3 * len(items) and first_closed[False] > 0.3 * len(items)


def test_llava_relative_keeps_paths_relative_to_the_copy(bench_dataset: Path, tmp_path: Path) -> None:
    code, output = run("export", bench_dataset, "-f", "llava", "-o", tmp_path / "l", "--relative", "--only", "benchmark")
    assert code == 0, output
    items = json.loads((tmp_path / "l" / "benchmark_test.json").read_text())
    records = config_records(bench_dataset, "benchmark", "test")
    assert [i["image"] for i in items] == [r["image"] for r in records]
    assert not Path(items[0]["image"]).is_absolute()


def test_sharegpt_relative_writes_llamafactory_media_dir(bench_dataset: Path, tmp_path: Path) -> None:
    import yaml

    dest = tmp_path / "s"
    code, output = run("export", bench_dataset, "-f", "sharegpt", "-o", dest, "--relative", "--only", "benchmark")
    assert code == 0, output
    args = yaml.safe_load((dest / "llamafactory_data.yaml").read_text())
    assert args == {
        "dataset_dir": str(dest.resolve()),
        "media_dir": str(source_root(bench_dataset).resolve()),
        "dataset": "radvqa_benchmark_test",
    }
    item = json.loads((dest / "benchmark_test.jsonl").read_text().splitlines()[0])
    assert not Path(item["images"][0]).is_absolute()
    assert (Path(args["media_dir"]) / item["images"][0]).is_file()


def test_sharegpt_messages_and_llamafactory_info(bench_dataset: Path, tmp_path: Path) -> None:
    dest = tmp_path / "sharegpt"
    root = source_root(bench_dataset)
    code, output = run("export", bench_dataset, "-f", "sharegpt", "-o", dest, "--group", "image", "--root", root)
    assert code == 0, output
    info = json.loads((dest / "dataset_info.json").read_text())
    assert set(info) == {f"radvqa_{c}_{s}" for c, s in PARTS}
    for config, split in PARTS:
        entry = info[f"radvqa_{config}_{split}"]
        assert entry["formatting"] == "sharegpt" and entry["columns"] == {"messages": "messages", "images": "images"}
        lines = (dest / entry["file_name"]).read_text().splitlines()
        records = config_records(bench_dataset, config, split)
        per_image = 1 if config == "alignment" else 9
        assert len(lines) == len(records) // per_image
        for line in lines[:20]:
            item = json.loads(line)
            roles = [m["role"] for m in item["messages"]]
            assert roles == ["user", "assistant"] * per_image
            assert sum(m["content"].count("<image>") for m in item["messages"]) == len(item["images"]) == 1
            assert item["messages"][0]["content"].startswith("<image>")
            assert Path(item["images"][0]).is_absolute() and Path(item["images"][0]).is_file()


# ---------------------------------------------------------------- vlmevalkit


def read_tsv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def resolve_images(rows: list[dict[str, str]]) -> dict[str, bytes]:
    """VLMEvalKit's rule: an image cell of <= 64 characters is the index of the row holding the image."""
    cells = {row["index"]: row["image"] for row in rows}
    out = {}
    for index, cell in cells.items():
        if len(cell) <= 64:
            assert len(cells[cell]) > 64
            cell = cells[cell]
        out[index] = base64.b64decode(cell)
    return out


def test_vlmevalkit_tsvs_decode_and_match_the_benchmark(bench_dataset: Path, tmp_path: Path) -> None:
    dest = tmp_path / "vlm"
    code, output = run("export", bench_dataset, "-f", "vlmevalkit", "-o", dest)  # root from the manifest
    assert code == 0, output
    records = {r["id"]: r for r in config_records(bench_dataset, "benchmark", "test")}
    mcq, open_ = read_tsv(dest / MCQ_TSV), read_tsv(dest / OPEN_TSV)
    assert len(mcq) + len(open_) == len(records)
    assert {r["id"] for r in mcq} | {r["id"] for r in open_} == set(records)
    assert len({r["index"] for r in mcq + open_}) == len(records)
    root = source_root(bench_dataset)
    for rows in (mcq, open_):
        images = resolve_images(rows)
        for row in rows[:60]:
            record = records[row["id"]]
            decoded = Image.open(io.BytesIO(images[row["index"]]))
            with Image.open(root / record["image"]) as source:
                assert decoded.size == source.size and decoded.tobytes() == source.tobytes()
            assert "\n" not in row["question"]
    for row in mcq:
        record = records[row["id"]]
        assert row["category"] == record["task"] and row["l2-category"] == record["question_type"]
        if record["question_type"] == "multiple_choice":
            assert [row[letter] for letter in "ABCD"] == record["choices"]
            assert row["answer"] == record["answer"]
            assert row["question"] == question_stem(record) != record["question"]
        else:
            assert (row["A"], row["B"], row["C"], row["D"]) == ("yes", "no", "", "")
            assert row["answer"] == ("A" if record["answer"] == "yes" else "B")
    assert all(records[r["id"]]["question_type"] == "open" and r["answer"] == records[r["id"]]["answer"] for r in open_)
    # rows after the first of each image point back to it instead of repeating the base64
    assert sum(len(r["image"]) <= 64 for r in mcq) > len(mcq) // 2


def test_vlmevalkit_needs_a_benchmark(bench_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(bench_dataset, out)
    shutil.rmtree(out / "benchmark")
    code, output = run("export", out, "-f", "vlmevalkit", "-o", tmp_path / "v")
    assert code == 1 and "no test-*.jsonl shards, but the manifest lists" in output
    manifest = load_manifest(out)
    manifest["records"].pop("benchmark")
    (out / "manifest.json").write_text(json.dumps(manifest))
    code, output = run("export", out, "-f", "vlmevalkit", "-o", tmp_path / "v")
    assert code == 1 and "no benchmark (benchmark/test-*.jsonl) to export" in output


# ---------------------------------------------------------------- llava-eval, lmms-eval


def test_llava_eval_is_a_model_vqa_question_file(bench_dataset: Path, tmp_path: Path) -> None:
    dest = tmp_path / "le"
    code, output = run("export", bench_dataset, "-f", "llava-eval", "-o", dest)
    assert code == 0, output
    # LLaVA's model_vqa: json.loads per line; line["question_id"], line["image"], line["text"];
    # Image.open(os.path.join(args.image_folder, line["image"]))
    questions = [json.loads(q) for q in (dest / "radvqa_questions.jsonl").read_text().splitlines()]
    records = config_records(bench_dataset, "benchmark", "test")
    assert [q["question_id"] for q in questions] == [r["id"] for r in records]
    for question, record in zip(questions, records):
        with Image.open(os.path.join("/some/other/folder", question["image"])) as image:
            image.convert("RGB")
        assert question["text"].startswith(record["question"])
        assert question["category"] == record["task"]
    mc = next(q for q, r in zip(questions, records) if r["question_type"] == "multiple_choice")
    assert mc["text"].endswith("Answer with the option's letter from the given choices directly.")


class _TaskLoader(yaml.SafeLoader):
    """lmms-eval's task YAML loader: ``!function module.name`` resolves in the YAML's folder."""


def _load_task(path: Path) -> dict:
    import importlib.util

    def function(loader: yaml.SafeLoader, node: yaml.Node) -> object:
        module_name, name = loader.construct_scalar(node).rsplit(".", 1)  # type: ignore[arg-type]
        spec = importlib.util.spec_from_file_location(module_name, path.parent / f"{module_name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return getattr(module, name)

    _TaskLoader.add_constructor("!function", function)
    return yaml.load(path.read_text(), Loader=_TaskLoader)


def test_lmms_eval_task_folder_loads_and_scores(
    bench_dataset: Path, tmp_path: Path, hf_offline: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datasets

    dest = tmp_path / "task"
    code, output = run("export", bench_dataset, "-f", "lmms-eval", "-o", dest)
    assert code == 0, output
    assert sorted(p.name for p in dest.iterdir()) == [
        "README.md", "benchmark", "manifest.json", "radvqa-export.json", "radvqa.yaml", "utils.py"
    ]
    monkeypatch.chdir(tmp_path)
    task = _load_task(dest / "radvqa.yaml")
    assert task["task"] == "radvqa" and task["output_type"] == "generate_until"
    docs = datasets.load_dataset(
        task["dataset_path"], task["dataset_name"], split=task["test_split"], cache_dir=str(hf_offline)
    )
    records = config_records(bench_dataset, "benchmark", "test")
    assert docs.num_rows == len(records)
    kwargs = task["lmms_eval_specific_kwargs"]["default"]
    scores = []
    for doc, record in zip(docs, records):
        (image,) = task["doc_to_visual"](doc)
        assert image.mode == "RGB"
        text = task["doc_to_text"](doc, kwargs)
        assert text.startswith(question_stem(record))
        if record["question_type"] == "multiple_choice":
            assert "\nA. " + record["choices"][0] in text
        target = task["doc_to_target"](doc)
        result = task["process_results"](doc, [target])["radvqa_exact_match"]
        assert result["question_id"] == record["id"]
        scores.append(result)
    assert task["metric_list"][0]["aggregation"](scores) == 100.0


# ---------------------------------------------------------------- errors and safety


def test_export_refuses_a_non_empty_folder_unless_overwrite(bench_dataset: Path, tmp_path: Path) -> None:
    dest = tmp_path / "llava"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    for extra in ((), ("--overwrite",)):  # no export record: never replaced
        code, output = run("export", bench_dataset, "-f", "llava", "-o", dest, "--only", "alignment", *extra)
        assert code == 1 and output == f"ERROR: {dest}: folder is not empty and holds no radvqa record (notes.txt); " \
            "radvqa only replaces what it wrote: choose an empty or new folder\n"
    assert sorted(p.name for p in dest.iterdir()) == ["notes.txt"]
    (dest / "notes.txt").unlink()
    assert run("export", bench_dataset, "-f", "llava", "-o", dest)[0] == 0
    (dest / "notes.txt").write_text("mine")
    code, output = run("export", bench_dataset, "-f", "llava", "-o", dest, "--only", "alignment")
    assert code == 1 and "not empty; pass --overwrite" in output
    code, output = run("export", bench_dataset, "-f", "llava", "-o", dest, "--only", "alignment", "--overwrite")
    assert code == 0, output
    assert (dest / "notes.txt").read_text() == "mine"  # only the files the record lists are replaced
    assert sorted(p.name for p in dest.iterdir()) == [
        "alignment_train.json", "alignment_val.json", "notes.txt", "radvqa-export.json"
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-f", "lava"], "unknown format 'lava' (did you mean 'llava'?)"),
        (["-f", "hf-parquet", "--group", "image"], "--group image applies to llava and sharegpt"),
        (["-f", "llava", "--group", "images"], "unknown --group 'images' (did you mean 'image'?)"),
        (["-f", "llava", "--only", "instrukt"], "unknown config 'instrukt' (did you mean 'instruct'?)"),
        (["-f", "llava", "--root", "/nonexistent/radimagenet"], "RadImageNet copy not found"),
        (["-f", "hf-parquet", "--relative"], "--relative applies to llava, sharegpt, llava-eval, not hf-parquet"),
        (["-f", "llava", "--no-embed"], "--no-embed applies to hf-parquet and lmms-eval, not llava"),
        (["-f", "llava-eval", "--only", "instruct"], "the llava-eval export holds the benchmark only"),
    ],
)
def test_export_bad_options_are_one_line_errors(
    bench_dataset: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    code, output = run("export", bench_dataset, "-o", tmp_path / "x", *args)
    assert code == 1
    assert message in output
    assert "Traceback" not in output


def test_export_into_the_dataset_itself_is_refused(bench_dataset: Path) -> None:
    code, output = run("export", bench_dataset, "-f", "llava", "-o", bench_dataset, "--overwrite")
    assert code == 1 and "is the dataset itself" in output
    assert (bench_dataset / "alignment").is_dir()


def test_export_names_a_malformed_line_and_a_missing_image(bench_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(bench_dataset, out)
    shard = sorted(out.glob("benchmark/test-*.jsonl"))[0]
    lines = shard.read_text().splitlines()
    lines[4] = lines[4][:-5]
    shard.write_text("\n".join(lines) + "\n")
    code, output = run("export", out, "-f", "sharegpt", "-o", tmp_path / "s")
    assert code == 1 and output == (
        f"ERROR: {shard}: sha256 differs from {out / 'manifest.json'}; the shard changed after generate "
        "(regenerate the dataset)\n"
    )
    assert not (tmp_path / "s").exists()  # checked before anything was written, though benchmark comes last
    manifest = json.loads((out / "manifest.json").read_text())
    for entry in manifest["shards"]:  # a manifest that agrees: the malformed line itself is named
        entry["sha256"] = hashlib.sha256((out / entry["path"]).read_bytes()).hexdigest()
    (out / "manifest.json").write_text(json.dumps(manifest))
    code, output = run("export", out, "-f", "sharegpt", "-o", tmp_path / "s")
    assert code == 1 and f"{shard}:5: not a JSON record" in output
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == []  # the configs before it were removed

    root = tmp_path / "empty-root"
    root.mkdir()
    code, output = run(
        "export", bench_dataset, "-f", "hf-parquet", "-o", tmp_path / "p", "--root", root, "--only", "alignment"
    )
    assert code == 1 and "cannot read the image of record" in output and "alignment/train-" in output
    assert not list((tmp_path / "p").rglob("*.parquet"))  # nothing half-written keeps a final name


def test_export_without_manifest_names_the_file(tmp_path: Path) -> None:
    code, output = run("export", tmp_path, "-f", "llava", "-o", tmp_path / "x")
    assert code == 1 and "manifest.json: not found" in output


def test_hf_parquet_without_pyarrow_names_the_extra(
    bench_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(MissingDependencyError) as error:
        export_dataset(bench_dataset, tmp_path / "p", "hf-parquet")
    assert "radvqa[export]" in (error.value.hint or "")
    assert not (tmp_path / "p").exists()  # checked before anything is written


class RecordingBar:
    """A progress bar that remembers its total and every update."""

    def __init__(self, total: int, desc: str) -> None:
        self.total, self.desc, self.updates = total, desc, []

    def update(self, n: int = 1) -> None:
        self.updates.append(n)

    def close(self) -> None:
        pass

    def __enter__(self) -> RecordingBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


@pytest.mark.parametrize("fmt", ["llava", "sharegpt", "hf-parquet", "vlmevalkit", "llava-eval", "lmms-eval"])
def test_export_reports_progress_up_to_its_total(bench_dataset: Path, tmp_path: Path, fmt: str) -> None:
    bars: list[RecordingBar] = []

    def progress(total: int, desc: str) -> RecordingBar:
        bars.append(RecordingBar(total, desc))
        return bars[-1]

    result = export_dataset(bench_dataset, tmp_path / fmt, fmt, progress=progress)
    (bar,) = bars
    assert bar.desc == f"export {fmt}"
    assert sum(bar.updates) == bar.total == result.records > 0
    assert all(path.exists() for path in result.files)
    assert not list((tmp_path / fmt).rglob(".*.tmp*"))
