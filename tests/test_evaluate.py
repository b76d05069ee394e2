"""radvqa evaluate: parsers case by case, perfect and all-wrong predictions, bad inputs."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from radvqa.cli import app
from radvqa.errors import EvaluateError
from radvqa.evaluate import (
    SLOTS,
    answer_key,
    benchmark_files,
    evaluate,
    normalise_answer,
    parse_choice,
    parse_yes_no,
    score,
)
from radvqa.taxonomy import Taxonomy

runner = CliRunner()
REGIONS = ["abdomen", "knee", "hip", "chest"]


def read(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def write(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))


def ensure_benchmark(dataset: Path) -> Path:
    """The dataset's benchmark shard; made from the val instruct shard when generate made none."""
    existing = sorted(dataset.glob("benchmark/test-*.jsonl"))
    if existing:
        return existing[0]
    (dataset / "benchmark").mkdir(exist_ok=True)
    rows = [r | {"split": "test"} for f in sorted(dataset.glob("instruct/val-*.jsonl")) for r in read(f)]
    target = dataset / "benchmark" / "test-00000-of-00001.jsonl"
    write(target, rows)
    return target


@pytest.fixture(scope="module")
def dataset(sample_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("evaluate") / "out"
    shutil.copytree(sample_dataset, copy)
    ensure_benchmark(copy)
    return copy


@pytest.fixture(scope="module")
def records(dataset: Path) -> list[dict[str, Any]]:
    return [r for f in benchmark_files(dataset) for r in read(f)]


def predictions_file(tmp_path: Path, rows: list[dict[str, Any]], name: str = "pred.jsonl") -> Path:
    path = tmp_path / name
    write(path, rows)
    return path


# --- multiple-choice parser: every case the issue names, and the traps ---------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("B", 1),
        ("(B)", 1),
        ("b", 1),
        ("B.", 1),
        ("[C]", 2),
        ("Answer: B. knee", 1),
        ("answer: b", 1),
        ("The answer is knee", 1),
        ("the answer is knee.", 1),
        ("KNEE", 1),
        ("B. knee", 1),
        ("b) knee", 1),
        ("(D) chest", 3),
        ("The correct option is (C).", 2),
        ("Option C", 2),
        ("I would choose D.", 3),
        ("After looking at the image, I pick C.", 2),
        ("**B**", 1),
        ("\\boxed{A}", 0),
        ("<think>A or B? the hip looks odd</think>The answer is D", 3),
        ("The image shows the chest region, with lungs visible.", 3),
        ("The answer is a knee.", 1),  # lower-case 'a' + word is an article, not option A
        ("knee joint", 1),  # a taxonomy synonym of the option
        ("It is the abdomen.", 0),
    ],
)
def test_parse_choice_reads_typical_outputs(text: str, expected: int, taxonomy: Taxonomy) -> None:
    key = answer_key(taxonomy)
    assert parse_choice(text, REGIONS, key.region_aliases) == expected


@pytest.mark.parametrize(
    "text",
    ["", "   ", "I am not sure", "either the knee or the hip", "Answer: B or C", "E", "The answer is E."],
)
def test_parse_choice_gives_up_when_ambiguous(text: str, taxonomy: Taxonomy) -> None:
    assert parse_choice(text, REGIONS, answer_key(taxonomy).region_aliases) is None


def test_parse_choice_prefers_the_longest_mention(taxonomy: Taxonomy) -> None:
    choices = ["soft tissue mass", "hematoma", "fracture", "no pathology seen"]
    key = answer_key(taxonomy)
    aliases = lambda text: key.pathology_aliases("knee", text)
    assert parse_choice("There is a soft tissue mass.", choices, aliases) == 0
    assert parse_choice("Unremarkable study.", choices, aliases) == 3  # synonym of "no pathology seen"
    assert parse_choice("The answer is none", choices, aliases) == 3


# --- closed parser --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Yes.", "yes"),
        ("yes", "yes"),
        ("YES", "yes"),
        ("no, it is not", "no"),
        ("No.", "no"),
        ("**No**", "no"),
        ("Answer: no", "no"),
        ("The answer is yes.", "yes"),
        ("Final answer: YES", "yes"),
        ("Yes, the knee is visible.", "yes"),
        ("I think the answer is no.", "no"),
        ("There is no lesion", None),  # prose without a yes/no first word is not guessed
        ("maybe", None),
        ("", None),
    ],
)
def test_parse_yes_no(text: str, expected: str | None) -> None:
    assert parse_yes_no(text) == expected


# --- open matcher ---------------------------------------------------------------------------


def test_normalise_answer_strips_lead_ins_articles_and_punctuation() -> None:
    assert normalise_answer("The answer is: A Pulmonary nodule.") == "pulmonary nodule"
    assert normalise_answer("  Ankle/Foot!  ") == "ankle foot"
    assert normalise_answer("This image shows the knee") == "knee"


def open_record(task: str, answer: str, region: str) -> dict[str, Any]:
    return {"question_type": "open", "task": task, "answer": answer, "region": region, "choices": []}


@pytest.mark.parametrize(
    "record, prediction, correct",
    [
        (open_record("anatomy", "chest", "chest"), "Chest.", True),
        (open_record("anatomy", "chest", "chest"), "the thorax", True),  # region synonym
        (open_record("anatomy", "ankle and foot", "ankle and foot"), "Foot and ankle", True),
        (open_record("anatomy", "chest", "chest"), "abdomen", False),
        (open_record("pathology", "pulmonary nodule", "chest"), "Lung nodule", True),  # pathology synonym
        (open_record("pathology", "pulmonary nodule", "chest"), "The answer is a pulmonary nodule.", True),
        (open_record("pathology", "pulmonary nodule", "chest"), "bronchiectasis", False),
        (open_record("pathology", "no pathology seen", "brain"), "No abnormality", True),  # normal synonyms
        (open_record("pathology", "no pathology seen", "brain"), "Normal.", True),
        (open_record("pathology", "no pathology seen", "brain"), "edema", False),
    ],
)
def test_open_answers_match_display_names_and_synonyms(
    record: dict[str, Any], prediction: str, correct: bool, taxonomy: Taxonomy
) -> None:
    outcome = score(record, prediction, answer_key(taxonomy))
    assert outcome.correct is correct
    assert outcome.parsed


# --- whole benchmark --------------------------------------------------------------------------


def perfect(record: dict[str, Any]) -> str:
    if record["question_type"] == "multiple_choice":
        return f"Answer: {record['answer']}. {record['answer_text']}"
    if record["question_type"] == "closed":
        return record["answer"].upper() + "."
    return f"The answer is {record['answer']}."


def wrong(record: dict[str, Any]) -> str:
    if record["question_type"] == "multiple_choice":
        return "ABCD"[("ABCD".index(record["answer"]) + 1) % 4]
    if record["question_type"] == "closed":
        return "No." if record["answer"] == "yes" else "Yes."
    if record["task"] == "anatomy":
        return "brain" if record["answer"] != "brain" else "knee"
    return "pulmonary nodule" if record["answer"] != "pulmonary nodule" else "edema"


def test_perfect_predictions_score_100_everywhere(dataset: Path, records: list[dict[str, Any]], tmp_path: Path) -> None:
    pred = predictions_file(tmp_path, [{"id": r["id"], "prediction": perfect(r)} for r in records])
    out = tmp_path / "report.json"
    result = runner.invoke(app, ["evaluate", str(dataset), str(pred), "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = orjson.loads(out.read_bytes())
    assert report["questions"] == len(records)
    assert all(v["accuracy"] == 100.0 for v in report["overall"]["slots"].values())
    assert report["overall"]["average"] == 100.0
    for table in list(report["by_region"].values()) + list(report["by_modality"].values()):
        assert table["average"] == 100.0
        assert all(v["accuracy"] in (100.0, None) for v in table["slots"].values())
    assert set(report["by_modality"]) == {"CT", "MRI"}
    assert len(report["by_region"]) == 8
    assert report["missing"] == 0 and report["unparseable"] == 0
    assert "anat MC" in result.output and "average" in result.output


def test_all_wrong_predictions_score_0(dataset: Path, records: list[dict[str, Any]], tmp_path: Path) -> None:
    pred = predictions_file(tmp_path, [{"id": r["id"], "prediction": wrong(r)} for r in records])
    report = evaluate(dataset, pred)
    assert all(report.overall.slots[s].accuracy == 0.0 for s in SLOTS)
    assert report.overall.average == 0.0
    assert sum(report.unparseable.values()) == 0


def test_unparseable_answers_are_wrong_and_counted(dataset: Path, records: list[dict[str, Any]], tmp_path: Path) -> None:
    rows = [{"id": r["id"], "prediction": perfect(r)} for r in records]
    mc = [i for i, r in enumerate(records) if r["question_type"] == "multiple_choice"][:3]
    closed = [i for i, r in enumerate(records) if r["slot"] == "abnormality_closed"][:2]
    for i in mc + closed:
        rows[i]["prediction"] = "I cannot tell from this image."
    report = evaluate(dataset, predictions_file(tmp_path, rows))
    assert sum(report.unparseable.values()) == 5
    assert report.unparseable["abnormality_closed"] == 2
    tally = report.overall.slots["abnormality_closed"]
    assert tally.correct == tally.total - 2


def test_missing_predictions_fail_unless_allowed(dataset: Path, records: list[dict[str, Any]], tmp_path: Path) -> None:
    rows = [{"id": r["id"], "prediction": perfect(r)} for r in records[10:]]
    pred = predictions_file(tmp_path, rows)
    result = runner.invoke(app, ["evaluate", str(dataset), str(pred)])
    assert result.exit_code == 1
    assert "10 of" in result.output and "--allow-missing" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(app, ["evaluate", str(dataset), str(pred), "--allow-missing"])
    assert result.exit_code == 0, result.output
    assert "missing predictions: 10" in result.output
    report = evaluate(dataset, pred, allow_missing=True)
    assert sum(t.total for t in report.overall.slots.values()) == len(records)
    assert sum(t.correct for t in report.overall.slots.values()) == len(records) - 10


def test_benchmark_file_path_works_like_the_folder(dataset: Path, records: list[dict[str, Any]], tmp_path: Path) -> None:
    pred = predictions_file(tmp_path, [{"id": r["id"], "prediction": perfect(r)} for r in records])
    report = evaluate(benchmark_files(dataset)[0], pred)
    assert report.overall.average == 100.0


@pytest.mark.parametrize(
    "content, message",
    [
        (b'{"id": "x", "prediction": "B"}\nnot json\n', "pred.jsonl:2: not valid JSON"),
        (b'{"prediction": "B"}\n', "pred.jsonl:1: missing or non-string 'id'"),
        (b'{"id": "x"}\n', "pred.jsonl:1: missing 'prediction'"),
        (b'{"id": "x", "prediction": ["B"]}\n', "pred.jsonl:1: 'prediction' must be text"),
        (b'{"id": "x", "prediction": "B"}\n{"id": "x", "prediction": "C"}\n', "pred.jsonl:2: id 'x' appears twice"),
        (b'{"id": "not-in-benchmark", "prediction": "B"}\n', "ids are not in the benchmark"),
    ],
)
def test_bad_predictions_are_one_line_errors(dataset: Path, tmp_path: Path, content: bytes, message: str) -> None:
    pred = tmp_path / "pred.jsonl"
    pred.write_bytes(content)
    result = runner.invoke(app, ["evaluate", str(dataset), str(pred), "--allow-missing"])
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output


def test_bad_benchmark_is_an_error_naming_the_line(tmp_path: Path, records: list[dict[str, Any]]) -> None:
    bench = tmp_path / "bench.jsonl"
    broken = dict(records[3])
    del broken["answer"]
    write(bench, records[:3] + [broken])
    pred = predictions_file(tmp_path, [])
    with pytest.raises(EvaluateError, match=r"bench.jsonl:4: missing field 'answer'"):
        evaluate(bench, pred, allow_missing=True)
    with pytest.raises(EvaluateError, match="no benchmark/test-"):
        benchmark_files(tmp_path)


def test_judge_options_go_together(dataset: Path, tmp_path: Path) -> None:
    pred = predictions_file(tmp_path, [])
    result = runner.invoke(app, ["evaluate", str(dataset), str(pred), "--judge", "http://127.0.0.1:1/v1"])
    assert result.exit_code == 2


def test_the_datasets_own_taxonomy_gives_the_synonyms(dataset: Path, tmp_path: Path) -> None:
    custom = tmp_path / "custom"
    shutil.copytree(dataset, custom)
    manifest = orjson.loads((custom / "manifest.json").read_bytes())
    manifest["taxonomy"]["data"]["regions"]["chest"]["synonyms"].append("ribcage area")
    (custom / "manifest.json").write_bytes(orjson.dumps(manifest))
    rows = read(benchmark_files(custom)[0])
    chest = [r for r in rows if r["slot"] == "anatomy_open" and r["region"] == "chest"]
    assert chest
    pred = predictions_file(tmp_path, [{"id": r["id"], "prediction": "Ribcage area."} for r in chest])
    mine = evaluate(custom, pred, allow_missing=True)
    assert mine.overall.slots["anatomy_open"].correct == len(chest)
    default = evaluate(benchmark_files(dataset)[0], pred, allow_missing=True)
    assert default.overall.slots["anatomy_open"].correct == 0


# --- richer columns: balanced, paired, normal/abnormal rows, intervals, blind, compare, html ---


def yes_sayer(record: dict[str, Any]) -> str:
    """Right on open and multiple choice, "yes" to every closed question."""
    return "Yes." if record["question_type"] == "closed" else perfect(record)


def test_always_yes_is_exposed_by_balanced_and_paired_columns(
    dataset: Path, records: list[dict[str, Any]], tmp_path: Path
) -> None:
    pred = predictions_file(tmp_path, [{"id": r["id"], "prediction": yes_sayer(r)} for r in records])
    report = evaluate(dataset, pred, replicates=200)
    assert report.metrics is not None
    rows = {(r.table, r.name, r.subset): r for r in report.metrics.rows}
    overall = rows[("overall", "all", "all")].values
    abnormality = [r for r in records if r["slot"] == "abnormality_closed"]
    prevalence = 100.0 * sum(r["answer"] == "yes" for r in abnormality) / len(abnormality)
    assert 0 < prevalence < 100
    assert overall["abnormality_closed"].value == pytest.approx(prevalence)
    assert overall["abnormality_balanced"].value == pytest.approx(50.0)  # sensitivity 100, specificity 0
    assert overall["anatomy_closed_yes"].value == 100.0 and overall["anatomy_closed_no"].value == 0.0
    assert overall["anatomy_paired"].value == 0.0 and overall["pathology_paired"].value == 0.0
    # Split by image: "yes, abnormal" is right on every abnormal image and wrong on every normal one.
    normal, abnormal = rows[("overall", "all", "normal")], rows[("overall", "all", "abnormal")]
    assert normal.values["abnormality_closed"].value == 0.0 and abnormal.values["abnormality_closed"].value == 100.0
    assert normal.values["abnormality_balanced"].value is None  # one class only
    images = {r["image"]: r["is_abnormal"] for r in records}
    assert normal.images == sum(not a for a in images.values()) and abnormal.images == sum(images.values())
    for (table, name, subset), row in rows.items():
        if table == "region" and subset == "all":
            assert rows.get((table, name, "abnormal")) is not None  # every region has its split rows
    low, high = overall["abnormality_closed"].low, overall["abnormality_closed"].high
    assert low is not None and high is not None and low < prevalence < high
    text = "\n".join(report.lines())
    assert "abn bal" in text and "anat pair" in text and "  normal" in text and "95% intervals" in text


def test_blind_compare_and_html_from_the_cli(dataset: Path, records: list[dict[str, Any]], tmp_path: Path) -> None:
    seen = predictions_file(tmp_path, [{"id": r["id"], "prediction": perfect(r)} for r in records], "seen.jsonl")
    blind = predictions_file(tmp_path, [{"id": r["id"], "prediction": wrong(r)} for r in records], "blind.jsonl")
    out, page = tmp_path / "report.json", tmp_path / "report.html"
    args = ["evaluate", str(dataset), str(seen), "--blind", str(blind), "--compare", str(seen), "--json", str(out),
            "--html", str(page), "--bootstrap", "100", "--seed", "3"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = orjson.loads(out.read_bytes())["metrics"]
    assert metrics["bootstrap"] == {"replicates": 100, "seed": 3, "unit": "image", "level": 95.0}
    overall = next(r for r in metrics["rows"] if r["table"] == "overall" and r["subset"] == "all")
    for column in metrics["columns"]:
        # all right with the image, all wrong without: a 100-point gain, nothing above chance
        assert overall["gain"][column]["value"] == 100.0, column
        assert overall["leakage"][column]["value"] == 0.0
        assert overall["difference"][column] == {"value": 0.0, "low": 0.0, "high": 0.0}
    assert "gain" in result.output and "difference" in result.output
    html = page.read_text()
    assert html.count("<svg") == 13 and "<script" not in html and "<link" not in html
    assert html.replace('xmlns="http://www.w3.org/2000/svg"', "").count("http") == 0  # nothing fetched
    assert "abn bal" in html and "normal images" in html
    again = tmp_path / "again.json"
    assert runner.invoke(app, args[:7] + ["--json", str(again), "--bootstrap", "100", "--seed", "3"]).exit_code == 0
    assert orjson.loads(again.read_bytes())["metrics"] == metrics  # seeded: the same intervals


def test_blind_file_must_cover_the_benchmark(dataset: Path, records: list[dict[str, Any]], tmp_path: Path) -> None:
    seen = predictions_file(tmp_path, [{"id": r["id"], "prediction": perfect(r)} for r in records], "seen.jsonl")
    blind = predictions_file(tmp_path, [{"id": r["id"], "prediction": "A"} for r in records[:5]], "blind.jsonl")
    result = runner.invoke(app, ["evaluate", str(dataset), str(seen), "--blind", str(blind)])
    assert result.exit_code == 1 and "blind.jsonl" in result.output and "have no prediction" in result.output
