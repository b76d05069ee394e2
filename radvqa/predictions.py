"""Read the prediction files evaluators write, as question id -> model output, for `radvqa evaluate`.

Formats (detected from the file, or named with ``--format``):

* ``radvqa``: JSONL of ``{"id": ..., "prediction": ...}`` (:func:`radvqa.evaluate.read_predictions`);
* ``vlmevalkit``: VLMEvalKit's prediction table (``{model}_{dataset}.xlsx``, ``.tsv`` or ``.csv``):
  the exported TSV's columns less ``image``, plus ``prediction``. Rows are matched by ``index``
  (the question's position in the benchmark, as ``radvqa export --format vlmevalkit`` numbers
  them; an ``id`` column, when present, must agree). Closed questions were asked as
  ``A. yes / B. no``, so a letter there is mapped back through the row's ``A``/``B`` options;
* ``llava``: LLaVA ``model_vqa`` answers JSONL (``{"question_id", "text", ...}``), the question
  ids being the benchmark ids that ``--format llava-eval`` wrote;
* ``lmms-eval``: the ``--log_samples`` file (``*_samples_radvqa.jsonl``, one sample per line, or
  older JSON with a ``logs`` list): the radvqa task's metric carries the ``question_id``; without
  it ``doc_id`` is the question's position in the benchmark. The text is ``filtered_resps``.

VLMEvalKit's two files (MCQ and open) or several lmms-eval logs can be given together.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from .errors import EvaluateError, MissingDependencyError

PREDICTION_FORMATS = ("radvqa", "vlmevalkit", "llava", "lmms-eval")
TABLE_SUFFIXES = (".xlsx", ".xls", ".tsv", ".csv")
Record = dict[str, Any]
Predictions = dict[str, str | None]


def _first_object(path: Path) -> Any:
    """The first JSON value of a JSONL file (its first non-blank line), or of a whole JSON file."""
    try:
        with open(path, "rb") as handle:
            for line in handle:
                if line.strip():
                    try:
                        return orjson.loads(line)
                    except orjson.JSONDecodeError:
                        break
            else:
                return None
        return orjson.loads(path.read_bytes())  # a pretty-printed JSON file
    except OSError as exc:
        raise EvaluateError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except orjson.JSONDecodeError as exc:
        raise EvaluateError(f"{path}: neither JSON lines nor JSON ({exc})") from None


def detect_format(path: Path) -> str:
    """Which evaluator wrote ``path``: one of :data:`PREDICTION_FORMATS`, from its suffix and first record."""
    path = Path(path)
    if path.suffix.lower() in TABLE_SUFFIXES:
        return "vlmevalkit"
    first = _first_object(path)
    if first is None:
        return "radvqa"  # an empty file: no predictions of our own format
    if isinstance(first, dict) and isinstance(first.get("logs"), list):
        return "lmms-eval"
    if isinstance(first, list):
        first = first[0] if first else None
    if isinstance(first, dict):
        if "doc_id" in first:
            return "lmms-eval"
        if "question_id" in first and "text" in first:
            return "llava"
        if "id" in first or "prediction" in first:
            return "radvqa"  # radvqa's reader names what the line lacks
    raise EvaluateError(
        f"{path}: cannot tell which evaluator wrote this file",
        hint="pass --format " + " | ".join(PREDICTION_FORMATS),
    )


def _add(predictions: Predictions, path: Path, where: str, ident: str, text: str | None) -> None:
    if ident in predictions:
        raise EvaluateError(f"{path}:{where}: question '{ident}' has a prediction already")
    predictions[ident] = text


def _by_position(records: list[Record], path: Path, where: str, value: Any, what: str) -> Record:
    try:
        position = int(str(value).strip())
    except ValueError:
        raise EvaluateError(f"{path}:{where}: {what} {value!r} is not a number") from None
    if not 0 <= position < len(records):
        raise EvaluateError(
            f"{path}:{where}: {what} {position} is not a question of this benchmark ({len(records)} questions)",
            hint="score predictions against the benchmark they were exported from",
        )
    return records[position]


# --- VLMEvalKit ---------------------------------------------------------------------------


def _read_table(path: Path) -> Any:
    import pandas as pd

    options: dict[str, Any] = {"dtype": str, "keep_default_na": False}
    try:
        if path.suffix.lower() in (".xlsx", ".xls"):
            try:
                import openpyxl  # noqa: F401
            except ImportError:
                raise MissingDependencyError(
                    f"{path}: reading VLMEvalKit .xlsx predictions needs openpyxl",
                    hint="pip install 'radvqa[eval]', or have VLMEvalKit write tsv (PRED_FORMAT=tsv)",
                ) from None
            return pd.read_excel(path, **options)
        return pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",", **options)
    except (OSError, ValueError) as exc:
        raise EvaluateError(f"{path}: cannot read as a VLMEvalKit prediction table ({exc})") from None


def _closed_answer(prediction: str, row: dict[str, Any]) -> str:
    """A closed question's answer: a letter (or option text) mapped through the row's A/B options."""
    from .evaluate import parse_choice

    options = [str(row.get(letter) or "").strip() for letter in ("A", "B")]
    if not all(options):
        options = ["yes", "no"]  # what radvqa's vlmevalkit export offers
    index = parse_choice(prediction, options)
    return options[index] if index is not None else prediction


def read_vlmevalkit(path: Path, records: list[Record]) -> Predictions:
    """id -> prediction from a VLMEvalKit prediction table (rows by ``index``; closed letters to yes/no)."""
    table = _read_table(path)
    for column in ("index", "prediction"):
        if column not in table.columns:
            raise EvaluateError(
                f"{path}: no '{column}' column; columns are {', '.join(map(str, table.columns))}",
                hint="pass VLMEvalKit's {model}_{dataset}.xlsx/.tsv prediction file",
            )
    predictions: Predictions = {}
    for number, row in enumerate(table.to_dict("records"), 2):  # row 1 is the header
        where = f"row {number}"
        record = _by_position(records, path, where, row["index"], "index")
        ident = str(row.get("id") or "").strip()
        if ident and ident != record["id"]:
            raise EvaluateError(
                f"{path}:{where}: index {row['index']} is question '{record['id']}' in the benchmark, "
                f"but the row's id is '{ident}'",
                hint="score predictions against the benchmark they were exported from",
            )
        text = str(row["prediction"])
        if record["question_type"] == "closed":
            text = _closed_answer(text, row)
        _add(predictions, path, where, record["id"], text)
    return predictions


# --- LLaVA --------------------------------------------------------------------------------


def _jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    from .evaluate import read_jsonl

    return read_jsonl(path)


def read_llava(path: Path) -> Predictions:
    """id -> prediction from LLaVA ``model_vqa`` answers (``question_id``, ``text``)."""
    predictions: Predictions = {}
    for number, item in _jsonl(path):
        if "question_id" not in item or "text" not in item:
            raise EvaluateError(f"{path}:{number}: a LLaVA answer needs 'question_id' and 'text'")
        text = item["text"]
        _add(predictions, path, str(number), str(item["question_id"]), None if text is None else str(text))
    return predictions


# --- lmms-eval ------------------------------------------------------------------------------


def _samples(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    first = _first_object(path)
    if isinstance(first, dict) and isinstance(first.get("logs"), list):  # lmms-eval before 0.3: one JSON
        for i, sample in enumerate(first["logs"]):
            if not isinstance(sample, dict):
                raise EvaluateError(f"{path}: logs[{i}] is not an object")
            yield f"logs[{i}]", sample
        return
    for number, item in _jsonl(path):
        yield str(number), item


def _response(value: Any) -> str | None:
    """The model's text from ``filtered_resps`` / ``resps``: a string, possibly nested in lists."""
    while isinstance(value, list):
        if not value:
            return None
        value = value[0]
    return None if value is None else str(value)


def read_lmms_eval(path: Path, records: list[Record]) -> Predictions:
    """id -> prediction from an lmms-eval samples log (``question_id`` in a metric, else ``doc_id``)."""
    predictions: Predictions = {}
    for where, sample in _samples(path):
        if "doc_id" not in sample:
            raise EvaluateError(f"{path}:{where}: an lmms-eval sample needs 'doc_id'")
        ident = next(
            (str(v["question_id"]) for v in sample.values() if isinstance(v, dict) and "question_id" in v), None
        )
        if ident is None:
            ident = _by_position(records, path, where, sample["doc_id"], "doc_id")["id"]
        text = _response(sample.get("filtered_resps", sample.get("resps")))
        _add(predictions, path, where, ident, text)
    return predictions


# --- all of them --------------------------------------------------------------------------


def load_predictions(
    paths: Sequence[Path], benchmark: Callable[[], Iterable[Record]], fmt: str | None = None
) -> Predictions:
    """id -> prediction text (None = missing) from one or more prediction files of any known format.

    ``benchmark`` yields the benchmark records in order; it is only called for formats that refer
    to questions by position (VLMEvalKit ``index``, lmms-eval ``doc_id``).
    """
    from .evaluate import read_predictions

    if fmt is not None and fmt not in PREDICTION_FORMATS:
        raise EvaluateError(f"unknown --format '{fmt}'; choose from {', '.join(PREDICTION_FORMATS)}")
    records: list[Record] | None = None

    def ordered() -> list[Record]:
        nonlocal records
        if records is None:
            records = list(benchmark())
        return records

    merged: Predictions = {}
    for path in map(Path, paths):
        if not path.is_file():
            raise EvaluateError(f"{path}: no such prediction file")
        kind = fmt or detect_format(path)
        if kind == "radvqa":
            found = read_predictions(path)
        elif kind == "vlmevalkit":
            found = read_vlmevalkit(path, ordered())
        elif kind == "llava":
            found = read_llava(path)
        else:
            found = read_lmms_eval(path, ordered())
        twice = next((i for i in found if i in merged), None)
        if twice is not None:
            raise EvaluateError(f"{path}: question '{twice}' has a prediction in an earlier file too")
        merged.update(found)
    return merged
