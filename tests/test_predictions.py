"""Prediction files as VLMEvalKit, LLaVA and lmms-eval write them, scored by `radvqa evaluate`."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest
from export_fixtures import bench_dataset, config_records  # noqa: F401
from typer.testing import CliRunner

from radvqa.cli import app
from radvqa.errors import EvaluateError
from radvqa.export import MCQ_TSV, OPEN_TSV
from radvqa.predictions import detect_format, load_predictions

runner = CliRunner()


def run(*args: object) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def evaluate_json(dataset: Path, tmp_path: Path, *predictions: Path, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    report = tmp_path / "scores.json"
    code, output = run("evaluate", dataset, *predictions, "--json", report, *extra)
    assert code == 0, output
    data: dict[str, Any] = json.loads(report.read_text())
    return data


@pytest.fixture(scope="module")
def records(bench_dataset: Path) -> list[dict[str, Any]]:
    return config_records(bench_dataset, "benchmark", "test")


@pytest.fixture(scope="module")
def vlmevalkit_export(bench_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("vlmevalkit") / "LMUData"
    code, output = run("export", bench_dataset, "-f", "vlmevalkit", "-o", dest)
    assert code == 0, output
    return dest


def vlmevalkit_predictions(tsv: Path, answer: str = "answer") -> pd.DataFrame:
    """What VLMEvalKit's inference writes: the dataset's rows without ``image``, plus ``prediction``."""
    data = pd.read_csv(tsv, sep="\t", dtype=str, keep_default_na=False)
    data["prediction"] = data[answer]
    data.pop("image")
    return data


def test_a_perfect_vlmevalkit_run_scores_100(
    bench_dataset: Path, vlmevalkit_export: Path, records: list[dict[str, Any]], tmp_path: Path
) -> None:
    mcq = vlmevalkit_predictions(vlmevalkit_export / MCQ_TSV)  # letters, closed ones as A (yes) / B (no)
    closed = mcq["l2-category"] == "closed"
    assert closed.any() and set(mcq.loc[closed, "prediction"]) == {"A", "B"}
    open_ = vlmevalkit_predictions(vlmevalkit_export / OPEN_TSV)
    mcq.to_csv(tmp_path / "model_radvqa_mcq.tsv", sep="\t", index=False)
    open_.to_excel(tmp_path / "model_radvqa_open.xlsx", index=False)
    report = evaluate_json(bench_dataset, tmp_path, tmp_path / "model_radvqa_mcq.tsv", tmp_path / "model_radvqa_open.xlsx")
    assert report["questions"] == len(records)
    assert report["overall"]["average"] == 100.0
    assert all(s["accuracy"] == 100.0 for s in report["overall"]["slots"].values())
    assert report["unparseable"] == 0 and report["missing"] == 0


def test_vlmevalkit_closed_letters_are_read_through_the_options(
    bench_dataset: Path, vlmevalkit_export: Path, tmp_path: Path
) -> None:
    mcq = vlmevalkit_predictions(vlmevalkit_export / MCQ_TSV)
    closed = mcq["l2-category"] == "closed"
    flipped = mcq.copy()
    flipped.loc[closed, "prediction"] = flipped.loc[closed, "answer"].map({"A": "B. no", "B": "A. yes"})
    flipped.to_csv(tmp_path / "flipped.tsv", sep="\t", index=False)
    report = evaluate_json(bench_dataset, tmp_path, tmp_path / "flipped.tsv", extra=("--allow-missing",))
    slots = report["overall"]["slots"]
    for slot in ("anatomy_closed_yes", "anatomy_closed_no", "pathology_closed_yes", "pathology_closed_no"):
        assert slots[slot]["accuracy"] == 0.0 and slots[slot]["total"] > 0
    assert slots["anatomy_mc"]["accuracy"] == slots["pathology_mc"]["accuracy"] == 100.0
    assert report["unparseable"] == 0


def test_vlmevalkit_rows_must_belong_to_the_benchmark(
    bench_dataset: Path, vlmevalkit_export: Path, records: list[dict[str, Any]], tmp_path: Path
) -> None:
    mcq = vlmevalkit_predictions(vlmevalkit_export / MCQ_TSV)
    shifted = mcq.copy()
    shifted.loc[0, "index"] = str(len(records) + 5)
    shifted.to_csv(tmp_path / "far.tsv", sep="\t", index=False)
    code, output = run("evaluate", bench_dataset, tmp_path / "far.tsv")
    assert code == 1 and f"far.tsv:row 2: index {len(records) + 5} is not a question of this benchmark" in output
    swapped = mcq.copy()
    swapped.loc[0, "id"] = mcq.loc[1, "id"]
    swapped.to_csv(tmp_path / "swapped.tsv", sep="\t", index=False)
    code, output = run("evaluate", bench_dataset, tmp_path / "swapped.tsv")
    assert code == 1 and "swapped.tsv:row 2: index" in output and "but the row's id is" in output
    mcq.drop(columns=["prediction"]).to_csv(tmp_path / "bare.tsv", sep="\t", index=False)
    code, output = run("evaluate", bench_dataset, tmp_path / "bare.tsv")
    assert code == 1 and "bare.tsv: no 'prediction' column" in output
    assert "Traceback" not in output


def llava_answer(record: dict[str, Any]) -> str:
    """A right answer in the shape a LLaVA model gives it."""
    if record["question_type"] == "multiple_choice":
        return str(record["answer"])
    if record["question_type"] == "closed":
        return str(record["answer"]).capitalize()
    return str(record["answer_text"]) + "."


def test_a_perfect_llava_answers_file_scores_100(
    bench_dataset: Path, records: list[dict[str, Any]], tmp_path: Path
) -> None:
    code, output = run("export", bench_dataset, "-f", "llava-eval", "-o", tmp_path / "q")
    assert code == 0, output
    by_id = {r["id"]: r for r in records}
    answers = tmp_path / "answers.jsonl"
    with open(answers, "w") as handle:  # as LLaVA's model_vqa writes it
        for line in (tmp_path / "q" / "radvqa_questions.jsonl").read_text().splitlines():
            question = json.loads(line)
            item = {
                "question_id": question["question_id"],
                "prompt": question["text"],
                "text": llava_answer(by_id[question["question_id"]]),
                "answer_id": "x",
                "model_id": "llava-v1.5-7b",
                "metadata": {},
            }
            handle.write(json.dumps(item) + "\n")
    assert detect_format(answers) == "llava"
    report = evaluate_json(bench_dataset, tmp_path, answers)
    assert report["overall"]["average"] == 100.0 and report["questions"] == len(records)


def test_lmms_eval_sample_logs_score_by_question_id_or_doc_id(
    bench_dataset: Path, records: list[dict[str, Any]], tmp_path: Path
) -> None:
    def sample(i: int, record: dict[str, Any], with_id: bool) -> dict[str, Any]:
        item: dict[str, Any] = {
            "doc_id": i,
            "target": record["answer"],
            "filtered_resps": [llava_answer(record)],
            "doc_hash": "0",
            "input": record["question"],
        }
        if with_id:
            item["radvqa_exact_match"] = {"question_id": record["id"], "score": 1.0}
        return item

    current = tmp_path / "20260101_samples_radvqa.jsonl"
    current.write_bytes(b"".join(orjson.dumps(sample(i, r, True)) + b"\n" for i, r in enumerate(records)))
    old = tmp_path / "radvqa.json"  # lmms-eval < 0.3: one JSON with a "logs" list, no question ids
    old.write_bytes(orjson.dumps({"args": {}, "logs": [sample(i, r, False) for i, r in enumerate(records)]}))
    for path in (current, old):
        assert detect_format(path) == "lmms-eval"
        report = evaluate_json(bench_dataset, tmp_path, path)
        assert report["overall"]["average"] == 100.0


def test_radvqa_jsonl_is_still_read_and_formats_can_be_forced(
    bench_dataset: Path, records: list[dict[str, Any]], tmp_path: Path
) -> None:
    own = tmp_path / "own.txt"
    own.write_bytes(b"".join(orjson.dumps({"id": r["id"], "prediction": llava_answer(r)}) + b"\n" for r in records))
    report = evaluate_json(bench_dataset, tmp_path, own, extra=("--format", "radvqa"))
    assert report["overall"]["average"] == 100.0
    code, output = run("evaluate", bench_dataset, own, "--format", "vlmevalkt")
    assert code == 1 and "unknown --format 'vlmevalkt'" in output


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("odd.jsonl", b'{"question": "x"}\n', "cannot tell which evaluator wrote this file"),
        ("broken.json", b"{not json", "neither JSON lines nor JSON"),
        ("llava.jsonl", b'{"question_id": "a", "text": "B"}\n{"question_id": "b"}\n', "llava.jsonl:2: a LLaVA answer"),
    ],
)
def test_unreadable_prediction_files_are_one_line_errors(
    bench_dataset: Path, tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    code, output = run("evaluate", bench_dataset, path)
    assert code == 1 and message in output and "Traceback" not in output


def test_the_same_question_in_two_files_is_refused(records: list[dict[str, Any]], tmp_path: Path) -> None:
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text(json.dumps({"question_id": records[0]["id"], "text": "yes"}) + "\n")
    second.write_text(json.dumps({"id": records[0]["id"], "prediction": "no"}) + "\n")
    with pytest.raises(EvaluateError, match="has a prediction in an earlier file too"):
        load_predictions([first, second], lambda: records)


def test_tsv_cells_with_tabs_survive_as_vlmevalkit_reads_them(vlmevalkit_export: Path) -> None:
    with open(vlmevalkit_export / MCQ_TSV, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    data = pd.read_csv(vlmevalkit_export / MCQ_TSV, sep="\t")  # VLMEvalKit's own load(): defaults
    assert len(data) == len(rows) and list(data["index"]) == [int(r["index"]) for r in rows]
