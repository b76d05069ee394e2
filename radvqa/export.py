"""Export a generated dataset to the formats VLM trainers and evaluators read.

- ``llava``: LLaVA conversation JSON (one JSON array per config/split), ``<image>`` in the
  first human turn; one conversation per question, or per image with ``group="image"``.
- ``sharegpt``: messages-style JSONL (``messages`` with role/content, ``images``), plus a
  LLaMA-Factory ``dataset_info.json`` registering every file.
- ``hf-parquet``: parquet shards in the released RadImageNet-VQA layout (``conversations`` and
  ``metadata`` for alignment/instruct; ``question``, ``choices``, ``answer``,
  ``question_type``, ``metadata`` for benchmark) with a dataset card declaring the features;
  image bytes are embedded (``embed=False``: absolute image paths). Every file also carries the
  ``datasets`` features in its schema metadata, so one file loads with a decoded ``Image`` alone.
- ``llava-eval``: the benchmark as LLaVA's ``model_vqa`` question file (JSONL of
  ``{question_id, image, text}``).
- ``lmms-eval``: a task folder (``radvqa.yaml`` and ``utils.py``) over an hf-parquet export of the
  benchmark in the same folder, for ``lmms-eval --include_path DEST --tasks radvqa``.
- ``vlmevalkit``: the benchmark as VLMEvalKit custom-dataset TSVs with base64 images:
  ``radvqa_mcq.tsv`` (multiple choice, and closed questions as A. yes / B. no) and
  ``radvqa_open.tsv`` (open questions).

Image paths in llava, sharegpt and llava-eval files are absolute (the root joined to the record's
relative path), so a trainer finds them from any working folder; ``relative=True`` keeps them
relative to the RadImageNet copy (LLaVA's ``--image_folder``, LLaMA-Factory's ``media_dir``).

Every export streams: records are read shard by shard and written as they come; only the
records of one image are held at a time. Files are written under temporary names.
"""

from __future__ import annotations

import base64
import csv
import os
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from .dataset_files import Part, Where, at, check_digests, dataset_parts, iter_rows, load_manifest
from .errors import ConfigError, DatasetError, MissingDependencyError, OutputError, SourceError, did_you_mean
from .generate import LETTERS
from .progress import NullProgress, ProgressBar
from .ownership import check_output, claim_output, read_record, undo_on_failure
from .writers import temporary, write_bytes_atomic, write_json

FORMATS = ("llava", "sharegpt", "hf-parquet", "vlmevalkit", "llava-eval", "lmms-eval")
BENCHMARK_ONLY = ("vlmevalkit", "llava-eval", "lmms-eval")  # evaluation formats: the benchmark config alone
PATH_FORMATS = ("llava", "sharegpt", "llava-eval")  # formats that write image paths (absolute or --relative)
GROUPS = ("question", "image")
EXPORT_RECORD = "radvqa-export.json"  # the files an export wrote (what --overwrite removes)
MCQ_TSV = "radvqa_mcq.tsv"
OPEN_TSV = "radvqa_open.tsv"
LLAVA_EVAL_FILE = "radvqa_questions.jsonl"
LMMS_TASK = "radvqa"
LLAMAFACTORY_ARGS = "llamafactory_data.yaml"
PARQUET_SHARD_ROWS = {True: 10_000, False: 500_000}  # rows per parquet file with / without image bytes
ROW_GROUP = 1_000
IMAGE_ROW_GROUP = 100  # as `datasets` writes image datasets: row groups stay small enough to page through
METADATA_FIELDS = ("content_type", "correct_text", "is_abnormal", "location", "modality", "pathology", "question_id")
Record = dict[str, Any]


@dataclass
class ExportResult:
    """What an export wrote."""

    dest: Path
    format: str
    files: list[Path] = field(default_factory=list)
    records: int = 0
    rows: int = 0
    seconds: float = 0.0

    def lines(self) -> list[str]:
        """Human-readable summary."""
        rate = self.records / self.seconds if self.seconds else 0.0
        return [
            f"exported {self.records:,} records as {self.rows:,} {self.format} rows into {len(self.files)} files "
            f"in {self.dest} ({self.seconds:.1f} s, {rate:,.0f} records/s)"
        ]


# ---------------------------------------------------------------- helpers


class ImageReader:
    """Reads image files under a root; keeps only the last image (a record group shares one)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._last: tuple[str, bytes] | None = None

    def read(self, record: Record, where: Where) -> bytes:
        """The bytes of ``record['image']`` under the root; a missing file names the record."""
        relative: str = record["image"]
        if self._last is not None and self._last[0] == relative:
            return self._last[1]
        path = self.root / relative
        try:
            data: bytes = path.read_bytes()
        except OSError as error:
            raise SourceError(
                f"{path}: cannot read the image of record {record.get('id', '?')} ({at(where)}): {error.strerror}",
                hint="pass --root with the RadImageNet copy the dataset was generated from",
            ) from None
        self._last = (relative, data)
        return data


def question_stem(record: Record) -> str:
    """The question without its trailing "A. option" lines (multiple choice), else the question."""
    question: str = record["question"]
    choices = record.get("choices") or []
    if not choices:
        return question
    lines = question.split("\n")
    tail = lines[-len(choices) :]
    expected = [f"{letter}. {choice}" for letter, choice in zip(LETTERS, choices)]
    if len(lines) > len(choices) and tail == expected:
        return "\n".join(lines[: -len(choices)]).rstrip()
    return question


def _located(part: Part) -> Iterator[tuple[Record, Where]]:
    for record, where in iter_rows(part.files):
        for name in ("id", "image", "question", "answer"):
            if name not in record:
                raise DatasetError(f"{at(where)}: record {record.get('id', '?')} has no '{name}' field")
        yield record, where


# Turn order within an image's conversation: no question's text may give away the answer of a
# later one. Anatomy first (pathology and abnormality questions name the region), open and multiple
# choice before the closed questions that name the answer; the closed yes/no pair in a per-image order.
TURN_ORDER = (
    "anatomy_open", "anatomy_mc", "anatomy_closed", "abnormality_closed", "pathology_open", "pathology_mc",
    "pathology_closed",
)


def turn_key(record: Record) -> tuple[int, int]:
    """Sort key of a question in its image's conversation (see TURN_ORDER)."""
    slot = str(record.get("slot", ""))
    family = slot.removesuffix("_yes").removesuffix("_no")
    rank = TURN_ORDER.index(family) if family in TURN_ORDER else len(TURN_ORDER)
    if family != slot:  # "yes" first for half the images, "no" first for the others
        flip = zlib.crc32(str(record["image"]).encode()) & 1
        return rank, int(slot.endswith("_yes")) ^ flip
    return rank, 0


def _grouped(part: Part, group: str) -> Iterator[list[tuple[Record, Where]]]:
    """Records one by one, or consecutive records of one image together in turn order (group == 'image')."""
    batch: list[tuple[Record, Where]] = []
    for item in _located(part):
        if group == "question":
            yield [item]
            continue
        if batch and batch[0][0]["image"] != item[0]["image"]:
            yield sorted(batch, key=lambda pair: turn_key(pair[0]))
            batch = []
        batch.append(item)
    if batch:
        yield sorted(batch, key=lambda pair: turn_key(pair[0]))


def _image_path(record: Record, root: Path | None) -> str:
    return str(root / record["image"]) if root is not None else str(record["image"])


def _check_count(part: Part, seen: int) -> None:
    if part.expected is not None and seen != part.expected:
        raise DatasetError(
            f"{part.config}/{part.split}: the manifest lists {part.expected:,} records but the shards hold {seen:,}"
        )


class _AtomicText:
    """A text/bytes file written under a temporary name and renamed on success."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = temporary(path)
        self.handle = open(self.tmp, "wb")

    def write(self, data: bytes) -> None:
        self.handle.write(data)

    def commit(self) -> None:
        self.handle.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.handle.close()
        if self.tmp.exists():
            self.tmp.unlink()


# ---------------------------------------------------------------- llava / sharegpt


def _llava_item(records: list[Record], image: str) -> dict[str, Any]:
    turns = []
    for i, record in enumerate(records):
        prefix = "<image>\n" if i == 0 else ""
        turns.append({"from": "human", "value": prefix + record["question"]})
        turns.append({"from": "gpt", "value": record["answer"]})
    return {"id": _item_id(records), "image": image, "conversations": turns}


def _sharegpt_item(records: list[Record], image: str) -> dict[str, Any]:
    messages = []
    for i, record in enumerate(records):
        prefix = "<image>" if i == 0 else ""
        messages.append({"role": "user", "content": prefix + record["question"]})
        messages.append({"role": "assistant", "content": record["answer"]})
    return {"id": _item_id(records), "messages": messages, "images": [image]}


def _item_id(records: list[Record]) -> str:
    """The record id for one question, the image part of the ids for a whole image."""
    first = records[0]["id"]
    return first if len(records) == 1 else first.split("-", 1)[0]


def _export_conversations(
    part: Part, dest: Path, fmt: str, group: str, root: Path | None, bar: ProgressBar, result: ExportResult
) -> Path:
    suffix = "json" if fmt == "llava" else "jsonl"
    path = dest / f"{part.config}_{part.split}.{suffix}"
    make = _llava_item if fmt == "llava" else _sharegpt_item
    out = _AtomicText(path)
    seen = 0
    try:
        if fmt == "llava":
            out.write(b"[")
        first = True
        for batch in _grouped(part, group):
            records = [r for r, _ in batch]
            item = orjson.dumps(make(records, _image_path(records[0], root)))
            if fmt == "llava":
                out.write((b"\n" if first else b",\n") + item)
            else:
                out.write(item + b"\n")
            first = False
            seen += len(records)
            result.rows += 1
            bar.update(len(records))
        if fmt == "llava":
            out.write(b"\n]\n")
        _check_count(part, seen)
        out.commit()
    finally:
        out.abort()
    result.records += seen
    return path


def _llamafactory_info(files: list[Path]) -> dict[str, Any]:
    """LLaMA-Factory ``dataset_info.json`` entries for the ShareGPT files."""
    return {
        f"radvqa_{path.stem}": {
            "file_name": path.name,
            "formatting": "sharegpt",
            "columns": {"messages": "messages", "images": "images"},
            "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"},
        }
        for path in files
    }


# ---------------------------------------------------------------- hf-parquet


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise MissingDependencyError(
            "the hf-parquet export needs pyarrow", hint="pip install 'radvqa[export]'"
        ) from None
    return pyarrow


def parquet_schema(pa: Any, benchmark: bool) -> Any:
    """The released RadImageNet-VQA schema (benchmark rows, or conversation rows), with HF features.

    The ``huggingface`` schema metadata is what ``datasets`` writes itself
    (``{"info": {"features": Features.to_dict()}}``): it makes a single file, loaded without the
    card, decode ``image`` as an Image instead of a ``{bytes, path}`` struct.
    """
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    metadata = pa.struct([(name, pa.bool_() if name == "is_abnormal" else pa.string()) for name in METADATA_FIELDS])
    if benchmark:
        fields = [
            ("image", image),
            ("question", pa.string()),
            ("choices", pa.list_(pa.string())),
            ("answer", pa.string()),
            ("question_type", pa.string()),
            ("metadata", metadata),
        ]
    else:
        turn = pa.struct([("from", pa.string()), ("value", pa.string())])
        fields = [("image", image), ("conversations", pa.list_(turn)), ("metadata", metadata)]
    info = {"info": {"features": hf_features(benchmark)}}
    return pa.schema(fields, metadata={b"huggingface": orjson.dumps(info)})


def _value(dtype: str) -> dict[str, str]:
    return {"dtype": dtype, "_type": "Value"}


def hf_features(benchmark: bool) -> dict[str, Any]:
    """``datasets.Features.to_dict()`` of :func:`parquet_schema`, in the spelling every release reads.

    ``choices`` is a ``Sequence`` of strings and ``conversations`` a plain list of structs: both
    decode to lists of the same values in ``datasets`` 3.x to 5.x (scripts/check_clients.py).
    """
    metadata = {name: _value("bool" if name == "is_abnormal" else "string") for name in METADATA_FIELDS}
    if benchmark:
        return {
            "image": {"_type": "Image"},
            "question": _value("string"),
            "choices": {"feature": _value("string"), "_type": "Sequence"},
            "answer": _value("string"),
            "question_type": _value("string"),
            "metadata": metadata,
        }
    return {
        "image": {"_type": "Image"},
        "conversations": [{"from": _value("string"), "value": _value("string")}],
        "metadata": metadata,
    }


def parquet_features(benchmark: bool) -> list[dict[str, Any]]:
    """The card's ``dataset_info.features`` for :func:`parquet_schema`."""
    metadata = [{"name": name, "dtype": "bool" if name == "is_abnormal" else "string"} for name in METADATA_FIELDS]
    if benchmark:
        return [
            {"name": "image", "dtype": "image"},
            {"name": "question", "dtype": "string"},
            {"name": "choices", "sequence": "string"},
            {"name": "answer", "dtype": "string"},
            {"name": "question_type", "dtype": "string"},
            {"name": "metadata", "struct": metadata},
        ]
    return [
        {"name": "image", "dtype": "image"},
        {"name": "conversations", "list": [{"name": "from", "dtype": "string"}, {"name": "value", "dtype": "string"}]},
        {"name": "metadata", "struct": metadata},
    ]


def _metadata(record: Record) -> dict[str, Any]:
    is_caption = record.get("question_type") == "caption"
    return {
        "content_type": record.get("task"),
        "correct_text": None if is_caption else record.get("answer_text", record["answer"]),
        "is_abnormal": record.get("is_abnormal"),
        "location": record.get("region"),
        "modality": record.get("modality"),
        "pathology": record.get("pathology"),
        "question_id": record["id"],
    }


def _parquet_row(record: Record, image: dict[str, Any], benchmark: bool) -> dict[str, Any]:
    if benchmark:
        return {
            "image": image,
            "question": question_stem(record),
            # as released: a list on multiple-choice rows, null on open and closed ones
            "choices": list(record["choices"]) if record.get("choices") else None,
            "answer": record["answer"],
            "question_type": record.get("question_type"),
            "metadata": _metadata(record),
        }
    conversation = [
        {"from": "human", "value": "<image>\n" + record["question"]},
        {"from": "gpt", "value": record["answer"]},
    ]
    return {"image": image, "conversations": conversation, "metadata": _metadata(record)}


def _count_rows(part: Part) -> int:
    if part.expected is not None:
        return part.expected
    total = 0
    for path in part.files:
        with open(path, "rb") as handle:
            total += sum(1 for line in handle if line.strip())
    return total


def _export_parquet(
    part: Part,
    dest: Path,
    images: ImageReader,
    embed: bool,
    shard_rows: int,
    bar: ProgressBar,
    result: ExportResult,
) -> list[Path]:
    pa = _pyarrow()
    import pyarrow.parquet as pq

    benchmark = part.config == "benchmark"
    schema = parquet_schema(pa, benchmark)
    row_group = IMAGE_ROW_GROUP if embed else ROW_GROUP
    total = _count_rows(part)
    shards = max(1, -(-total // shard_rows))
    folder = dest / part.config
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{part.split}-{i:05d}-of-{shards:05d}.parquet" for i in range(shards)]
    written: list[Path] = []
    writer: Any = None
    tmp: Path | None = None
    batch: list[dict[str, Any]] = []
    seen = 0

    def flush() -> None:
        if batch:
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
            batch.clear()

    try:
        for record, where in _located(part):
            shard = min(seen // shard_rows, shards - 1)
            if writer is None or len(written) <= shard:
                if writer is not None:
                    flush()
                    writer.close()
                    assert tmp is not None
                    os.replace(tmp, written[-1])
                written.append(paths[shard])
                tmp = temporary(paths[shard])
                writer = pq.ParquetWriter(tmp, schema, compression="zstd")
            if embed:
                image = {"bytes": images.read(record, where), "path": record["image"]}
            else:
                image = {"bytes": None, "path": _image_path(record, images.root)}
            batch.append(_parquet_row(record, image, benchmark))
            seen += 1
            if len(batch) >= row_group:
                flush()
                bar.update(row_group)
        if writer is None:  # an empty split still gets its (empty) shard
            written.append(paths[0])
            tmp = temporary(paths[0])
            writer = pq.ParquetWriter(tmp, schema, compression="zstd")
        pending = len(batch)
        flush()
        bar.update(pending)
        writer.close()
        writer = None
        _check_count(part, seen)
        assert tmp is not None
        os.replace(tmp, written[-1])
    finally:
        if writer is not None:
            writer.close()
        if tmp is not None and tmp.exists():
            tmp.unlink()
    result.records += seen
    result.rows += seen
    return written


# ---------------------------------------------------------------- vlmevalkit


_TSV_META = ("id", "slot", "question_type", "modality", "region", "pathology", "is_abnormal", "source_image")
MCQ_COLUMNS = ("index", "image", "question", *LETTERS, "answer", "category", "l2-category", *_TSV_META)
OPEN_COLUMNS = ("index", "image", "question", "answer", "category", "l2-category", *_TSV_META)


class _TsvFile:
    """One VLMEvalKit TSV: the first row of an image carries its base64, later rows point to that row."""

    def __init__(self, path: Path, columns: tuple[str, ...]) -> None:
        self.file = _AtomicText(path)
        self.columns = columns
        self.rows = 0
        self._image: tuple[str, int] | None = None
        self._buffer: list[list[str]] = []
        self._write([list(columns)])

    def _write(self, rows: list[list[str]]) -> None:
        import io

        text = io.StringIO()
        csv.writer(text, delimiter="\t", lineterminator="\n").writerows(rows)
        self.file.write(text.getvalue().encode())

    def add(self, index: int, record: Record, data: bytes, values: dict[str, str]) -> None:
        # VLMEvalKit resolves an image cell of <= 64 characters as the index of another row.
        if self._image is not None and self._image[0] == record["image"]:
            image = str(self._image[1])
        else:
            image = base64.b64encode(data).decode("ascii")
            self._image = (record["image"], index)
        row = {
            "index": str(index),
            "image": image,
            "question": question_stem(record),
            "category": str(record.get("task", "")),
            "l2-category": str(record.get("question_type", "")),
            "id": record["id"],
            "slot": str(record.get("slot", "")),
            "question_type": str(record.get("question_type", "")),
            "modality": str(record.get("modality", "")),
            "region": str(record.get("region", "")),
            "pathology": str(record.get("pathology", "")),
            "is_abnormal": str(record.get("is_abnormal", "")),
            "source_image": record["image"],
        } | values
        self._buffer.append([_tsv_cell(row.get(c, "")) for c in self.columns])
        self.rows += 1
        if len(self._buffer) >= ROW_GROUP:
            self._write(self._buffer)
            self._buffer = []

    def commit(self) -> None:
        self._write(self._buffer)
        self._buffer = []
        self.file.commit()

    def abort(self) -> None:
        self.file.abort()


def _tsv_cell(value: str) -> str:
    # One line per row keeps the TSV readable by any reader, quoted or not.
    return value.replace("\t", " ").replace("\r", " ").replace("\n", " ")


def _export_vlmevalkit(
    parts: list[Part], dest: Path, images: ImageReader, bar: ProgressBar, result: ExportResult
) -> list[Path]:
    mcq = _TsvFile(dest / MCQ_TSV, MCQ_COLUMNS)
    open_ = _TsvFile(dest / OPEN_TSV, OPEN_COLUMNS)
    index = 0
    try:
        for part in parts:
            seen = 0
            for record, where in _located(part):
                data = images.read(record, where)
                qtype = record.get("question_type")
                answer = str(record["answer"])
                if qtype == "multiple_choice":
                    choices = list(record.get("choices") or [])
                    values = {letter: str(c) for letter, c in zip(LETTERS, choices)} | {"answer": answer}
                    mcq.add(index, record, data, values)
                elif qtype == "closed":
                    if answer not in ("yes", "no"):
                        raise DatasetError(
                            f"{at(where)}: closed question {record['id']} has answer {answer!r}, not yes/no"
                        )
                    mcq.add(index, record, data, {"A": "yes", "B": "no", "answer": "A" if answer == "yes" else "B"})
                else:
                    open_.add(index, record, data, {"answer": answer})
                index += 1
                seen += 1
                bar.update(1)
            _check_count(part, seen)
            result.records += seen
        mcq.commit()
        open_.commit()
    finally:
        mcq.abort()
        open_.abort()
    result.rows = mcq.rows + open_.rows
    return [dest / MCQ_TSV, dest / OPEN_TSV]


# ---------------------------------------------------------------- llava-eval, lmms-eval

# LLaVA's evaluation question files end each question with the answer format it was trained on
# (LLaVA docs/Evaluation.md, e.g. the MMBench and VQAv2 question files).
LLAVA_EVAL_SUFFIX = {
    "multiple_choice": "\nAnswer with the option's letter from the given choices directly.",
    "closed": "\nAnswer the question using a single word or phrase.",
    "open": "\nAnswer the question using a single word or phrase.",
}


def _export_llava_eval(part: Part, dest: Path, root: Path | None, bar: ProgressBar, result: ExportResult) -> Path:
    """LLaVA ``model_vqa`` questions: one ``{question_id, image, text, category}`` line per question."""
    path = dest / LLAVA_EVAL_FILE
    out = _AtomicText(path)
    seen = 0
    try:
        for record, _ in _located(part):
            text = record["question"] + LLAVA_EVAL_SUFFIX.get(str(record.get("question_type")), "")
            item = {
                "question_id": record["id"],
                "image": _image_path(record, root),
                "text": text,
                "category": record.get("task"),
            }
            out.write(orjson.dumps(item) + b"\n")
            seen += 1
            bar.update(1)
        _check_count(part, seen)
        out.commit()
    finally:
        out.abort()
    result.records += seen
    result.rows += seen
    return path


def lmms_task_yaml(dataset_path: Path) -> str:
    """The lmms-eval task config over the hf-parquet benchmark at ``dataset_path`` (lmms-eval's task YAML keys)."""
    return f"""# lmms-eval task over the radvqa benchmark; written by `radvqa export --format lmms-eval`.
# lmms-eval --include_path THIS_FOLDER --tasks {LMMS_TASK} --log_samples ...
# then: radvqa evaluate DATASET SAMPLES.jsonl
task: {LMMS_TASK}
dataset_path: {_yaml_text(str(dataset_path))}
dataset_name: benchmark
test_split: test
output_type: generate_until
doc_to_visual: !function utils.radvqa_doc_to_visual
doc_to_text: !function utils.radvqa_doc_to_text
doc_to_target: !function utils.radvqa_doc_to_target
generation_kwargs:
  max_new_tokens: 64
  temperature: 0
  do_sample: false
process_results: !function utils.radvqa_process_results
metric_list:
  - metric: radvqa_exact_match
    aggregation: !function utils.radvqa_aggregate
    higher_is_better: true
lmms_eval_specific_kwargs:
  default:
    pre_prompt: ""
    post_prompt: {_yaml_text(LLAVA_EVAL_SUFFIX['open'])}
    mc_post_prompt: {_yaml_text(LLAVA_EVAL_SUFFIX['multiple_choice'])}
metadata:
  version: 0.0
"""


def _yaml_text(text: str) -> str:
    return orjson.dumps(text).decode()  # a JSON string is a valid double-quoted YAML scalar


def _write_lmms_task(dest: Path) -> list[Path]:
    from importlib.resources import files

    utils = files("radvqa").joinpath("data/lmms_eval/utils.py").read_bytes()
    write_bytes_atomic(dest / f"{LMMS_TASK}.yaml", lmms_task_yaml(dest.resolve()).encode())
    write_bytes_atomic(dest / "utils.py", utils)
    return [dest / f"{LMMS_TASK}.yaml", dest / "utils.py"]


# ---------------------------------------------------------------- entry point


def export_files(dest: Path) -> list[str] | None:
    """The files a previous export wrote in ``dest`` (from its record), None when none is there."""
    files = read_record(Path(dest) / EXPORT_RECORD)
    return None if files is None else files + [EXPORT_RECORD]


def _check_choice(value: str, choices: tuple[str, ...], what: str) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {what} '{value}'{did_you_mean(value, choices)}; choose from {', '.join(choices)}")


def _check_flags(fmt: str, group: str, relative: bool, embed: bool) -> None:
    """Options that do not apply to the format are refused before any work."""
    _check_choice(fmt, FORMATS, "format")
    _check_choice(group, GROUPS, "--group")
    if group == "image" and fmt not in ("llava", "sharegpt"):
        raise ConfigError(f"--group image applies to llava and sharegpt, not {fmt}")
    if relative and fmt not in PATH_FORMATS:
        raise ConfigError(f"--relative applies to {', '.join(PATH_FORMATS)}, not {fmt}")
    if not embed and fmt not in ("hf-parquet", "lmms-eval"):
        raise ConfigError(f"--no-embed applies to hf-parquet and lmms-eval, not {fmt}")


def _llamafactory_args(dest: Path, root: Path, files: list[Path]) -> str:
    """The data arguments of a LLaMA-Factory training config for a --relative sharegpt export."""
    names = ",".join(f"radvqa_{path.stem}" for path in files)
    return (
        "# LLaMA-Factory data arguments for this export (image paths are relative to media_dir);\n"
        "# copy these lines into your training YAML. Written by `radvqa export --format sharegpt --relative`.\n"
        f"dataset_dir: {_yaml_text(str(dest.resolve()))}\n"
        f"media_dir: {_yaml_text(str(root))}\n"
        f"dataset: {_yaml_text(names)}\n"
    )


def export_dataset(
    out: Path,
    dest: Path,
    fmt: str,
    group: str = "question",
    root: Path | None = None,
    configs: tuple[str, ...] | None = None,
    shard_rows: int | None = None,
    overwrite: bool = False,
    progress: Callable[[int, str], ProgressBar] | None = None,
    relative: bool = False,
    embed: bool = True,
) -> ExportResult:
    """Export the dataset at ``out`` to ``dest`` in format ``fmt`` (see the module docstring).

    ``root`` is the RadImageNet copy (default: the manifest's source root) that images are read
    from and absolute paths point into; ``relative`` keeps paths relative to it, ``embed=False``
    makes hf-parquet reference images by absolute path instead of embedding their bytes.
    """
    started = time.perf_counter()
    out, dest = Path(out), Path(dest)
    _check_flags(fmt, group, relative, embed)
    if shard_rows is not None and shard_rows < 1:
        raise ConfigError(f"--shard-size must be at least 1, not {shard_rows}")
    manifest = load_manifest(out)
    available = [p.config for p in dataset_parts(out, manifest)]
    for name in configs or ():
        _check_choice(name, tuple(dict.fromkeys(available)), "config")
    if fmt in BENCHMARK_ONLY:
        if configs and set(configs) != {"benchmark"}:
            raise ConfigError(f"the {fmt} export holds the benchmark only; drop --only")
        configs = ("benchmark",)
    parts = dataset_parts(out, manifest, configs)
    if not parts:
        missing = "no benchmark (benchmark/test-*.jsonl)" if fmt in BENCHMARK_ONLY else "no records"
        raise DatasetError(f"{out}: {missing} to export")
    if dest.resolve() == out.resolve():
        raise OutputError(f"{dest}: is the dataset itself; export into another folder")
    if root is None:
        root = Path(str(manifest.get("source", {}).get("root", "")))
    if not relative and not Path(root).is_dir():  # relative paths need no copy at hand
        raise SourceError(
            f"{root}: RadImageNet copy not found", hint="pass --root with the folder holding radiology_ai/"
        )
    absolute = Path(root).resolve()
    if fmt in ("hf-parquet", "lmms-eval"):
        _pyarrow()
    check_output(dest, overwrite, export_files, "export folder")
    check_digests(out, manifest, parts)
    claim_output(dest, overwrite, export_files, "export folder")
    result = ExportResult(dest=dest, format=fmt)
    with undo_on_failure(dest):  # nothing half-done: a failed export leaves none of its files
        _export(out, dest, fmt, group, parts, manifest, shard_rows, progress, result, absolute, relative, embed)
        files = [f.relative_to(dest).as_posix() for f in result.files]
        write_json(dest / EXPORT_RECORD, {"format": f"radvqa-export-{fmt}", "files": files})
    result.seconds = time.perf_counter() - started
    return result


def _export(
    out: Path,
    dest: Path,
    fmt: str,
    group: str,
    parts: list[Part],
    manifest: dict[str, Any],
    shard_rows: int | None,
    progress: Callable[[int, str], ProgressBar] | None,
    result: ExportResult,
    absolute: Path,
    relative: bool,
    embed: bool,
) -> None:
    bar = progress(sum(_count_rows(p) for p in parts), f"export {fmt}") if progress else NullProgress()
    paths = None if relative else absolute
    with bar:
        if fmt in ("llava", "sharegpt"):
            for part in parts:
                result.files.append(_export_conversations(part, dest, fmt, group, paths, bar, result))
            if fmt == "sharegpt":
                write_json(dest / "dataset_info.json", _llamafactory_info(result.files))
                if relative:
                    text = _llamafactory_args(dest, absolute, result.files)
                    write_bytes_atomic(dest / LLAMAFACTORY_ARGS, text.encode())
                    result.files.append(dest / LLAMAFACTORY_ARGS)
                result.files.append(dest / "dataset_info.json")
        elif fmt in ("hf-parquet", "lmms-eval"):
            reader = ImageReader(absolute)
            rows = shard_rows or PARQUET_SHARD_ROWS[embed]
            for part in parts:
                result.files += _export_parquet(part, dest, reader, embed, rows, bar, result)
            _write_parquet_card(out, dest, manifest, parts, embed)
            result.files += [dest / "README.md", dest / "manifest.json"]
            if fmt == "lmms-eval":
                result.files += _write_lmms_task(dest)
        elif fmt == "llava-eval":
            result.files.append(_export_llava_eval(parts[0], dest, paths, bar, result))
        else:
            result.files += _export_vlmevalkit(parts, dest, ImageReader(absolute), bar, result)


def _write_parquet_card(out: Path, dest: Path, manifest: dict[str, Any], parts: list[Part], embedded: bool) -> None:
    from .card import render_card
    from .stats import compute_stats

    stats = compute_stats(out, manifest, configs=("alignment", "benchmark"))
    features = {p.config: parquet_features(p.config == "benchmark") for p in parts}
    images = (
        "Image bytes are embedded in the parquet files (`image` column)."
        if embedded
        else "The `image` column holds absolute paths into the RadImageNet copy (exported with --no-embed)."
    )
    text = render_card(manifest, stats, features, parts, "parquet", images=images)
    write_bytes_atomic(dest / "README.md", text.encode())
    write_json(dest / "manifest.json", manifest)
