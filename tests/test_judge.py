"""The LLM judge against a fake OpenAI-compatible server on 127.0.0.1 (no network)."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from test_evaluate import ensure_benchmark, read, write
from typer.testing import CliRunner

from radvqa.cli import app
from radvqa.errors import JudgeError
from radvqa.evaluate import benchmark_files, evaluate
from radvqa.chat import chat_url
from radvqa.judge import Judge, JudgeSettings, load_judge_settings, parse_verdict

runner = CliRunner()


class FakeServer:
    """Answers chat completions: CORRECT when the reference's words all appear in the model answer."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.fail_next = 0  # answer this many requests with HTTP 503 first
        self.status = 200
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                if outer.fail_next > 0:
                    outer.fail_next -= 1
                    self.send_error(503, "busy")
                    return
                if outer.status != 200:
                    self.send_error(outer.status, "nope")
                    return
                user = body["messages"][-1]["content"]
                reference = user.split("Reference answer: ")[1].split("\n")[0].lower()
                prediction = user.split("Model answer: ")[1].split("\n")[0].lower()
                verdict = "CORRECT" if all(w in prediction for w in reference.split()) else "INCORRECT"
                reply = orjson.dumps({"choices": [{"message": {"role": "assistant", "content": verdict}}]})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> FakeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture()
def server() -> Iterator[FakeServer]:
    with FakeServer() as fake:
        yield fake


def fast_settings(**overrides: Any) -> JudgeSettings:
    base = load_judge_settings()
    values = {**base.__dict__, "backoff": 0.01, "timeout": 5.0, **overrides}
    return JudgeSettings(**values)


@pytest.fixture(scope="module")
def dataset(sample_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("judge") / "out"
    shutil.copytree(sample_dataset, copy)
    ensure_benchmark(copy)
    return copy


def paraphrase(record: dict[str, Any]) -> str:
    """Right answers; open ones in words the rule-based matcher does not accept."""
    if record["question_type"] == "multiple_choice":
        return record["answer"]
    if record["question_type"] == "closed":
        return record["answer"]
    return f"I believe this shows {record['answer']} on the image"


def test_judge_scores_open_answers_and_second_run_is_a_cache_hit(
    server: FakeServer, dataset: Path, tmp_path: Path
) -> None:
    records = [r for f in benchmark_files(dataset) for r in read(f)]
    rows = [{"id": r["id"], "prediction": paraphrase(r)} for r in records]
    open_ids = [i for i, r in enumerate(records) if r["question_type"] == "open"]
    for i in open_ids[:4]:  # a few wrong open answers the judge must reject
        rows[i]["prediction"] = "I believe this shows zebra stripes"
    pred = tmp_path / "pred.jsonl"
    write(pred, rows)
    cache = tmp_path / "cache"
    out = tmp_path / "report.json"
    args = ["evaluate", str(dataset), str(pred), "--judge", server.url, "--judge-model", "fake-judge",
            "--judge-cache", str(cache), "--json", str(out)]

    without = evaluate(dataset, pred)
    assert without.overall.slots["pathology_open"].accuracy == 0.0  # the rules alone reject the prose

    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    first = orjson.loads(out.read_bytes())
    distinct = {(records[i]["question"], records[i]["answer"], rows[i]["prediction"]) for i in open_ids}
    assert len(server.requests) == len(distinct)  # each distinct (question, reference, answer) asked once
    assert server.requests[0]["path"] == "/v1/chat/completions"
    assert server.requests[0]["body"]["model"] == "fake-judge"
    assert server.requests[0]["body"]["temperature"] == 0
    open_total = sum(first["overall"]["slots"][s]["total"] for s in ("anatomy_open", "pathology_open"))
    open_correct = sum(first["overall"]["slots"][s]["correct"] for s in ("anatomy_open", "pathology_open"))
    assert open_correct == open_total - 4
    assert first["judge"]["answers"] == len(open_ids) and first["judge"]["cached"] == 0

    seen = len(server.requests)
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    second = orjson.loads(out.read_bytes())
    assert len(server.requests) == seen  # every verdict came from the cache
    assert second["judge"]["cached"] == len(distinct) and second["judge"]["requests"] == 0
    assert second["overall"] == first["overall"]


def test_rule_matches_never_reach_the_judge(server: FakeServer, dataset: Path, tmp_path: Path) -> None:
    records = [r for f in benchmark_files(dataset) for r in read(f)]
    pred = tmp_path / "pred.jsonl"
    write(pred, [{"id": r["id"], "prediction": r["answer"]} for r in records])
    judge = Judge(server.url, "fake", fast_settings(), tmp_path / "cache")
    report = evaluate(dataset, pred, judge=judge)
    assert report.overall.average == 100.0
    assert server.requests == []


def test_transient_errors_are_retried(server: FakeServer, tmp_path: Path) -> None:
    server.fail_next = 2
    judge = Judge(server.url, "fake", fast_settings(retries=3, workers=1), tmp_path / "cache", api_key="k")
    assert judge.verdict("Which region?", "knee", "the knee") is True
    assert len(server.requests) == 3
    assert server.requests[-1]["auth"] == "Bearer k"


def test_retries_run_out_with_a_one_line_error(server: FakeServer, tmp_path: Path) -> None:
    server.fail_next = 10
    judge = Judge(server.url, "fake", fast_settings(retries=1, workers=1), tmp_path / "cache")
    with pytest.raises(JudgeError, match="failed after 2 attempts"):
        judge.verdict("q", "knee", "knee")


def test_client_errors_are_not_retried(server: FakeServer, tmp_path: Path) -> None:
    server.status = 401
    judge = Judge(server.url, "fake", fast_settings(retries=3, workers=1), tmp_path / "cache")
    with pytest.raises(JudgeError, match="HTTP 401"):
        judge.verdict("q", "knee", "knee")
    assert len(server.requests) == 1


def test_unreachable_judge_is_a_one_line_cli_error(dataset: Path, tmp_path: Path) -> None:
    records = [r for f in benchmark_files(dataset) for r in read(f)]
    pred = tmp_path / "pred.jsonl"
    write(pred, [{"id": r["id"], "prediction": "something else entirely"} for r in records])
    config = tmp_path / "judge.yaml"
    config.write_text(
        "system: grade\nuser: '{question} {reference} {prediction}'\nretries: 0\nbackoff: 0\ntimeout: 2\n"
    )
    with FakeServer() as fake:
        url = fake.url  # the port is closed once the server stops
    result = runner.invoke(
        app,
        ["evaluate", str(dataset), str(pred), "--judge", url, "--judge-model", "m", "--judge-config", str(config),
         "--judge-cache", str(tmp_path / "cache")],
    )
    assert result.exit_code == 1
    assert "failed after 1 attempts" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "text, message",
    [
        ("system: s\nuser: '{reference} {prediction}'\ncolour: red\n", "unknown key 'colour'"),
        ("system: s\nuser: '{reference} {answer}'\n", "unknown placeholder 'answer'"),
        ("system: s\nuser: '{question}'\n", "must contain {reference} and {prediction}"),
        ("user: '{reference} {prediction}'\n", "missing key 'system'"),
        ("system: s\nuser: '{reference} {prediction}'\nworkers: 0\n", "workers >= 1"),
    ],
)
def test_bad_judge_config(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "judge.yaml"
    path.write_text(text)
    with pytest.raises(JudgeError, match=message):
        load_judge_settings(path)


def test_helpers() -> None:
    assert chat_url("http://h:1/v1/") == "http://h:1/v1/chat/completions"
    assert chat_url("http://h:1/v1/chat/completions") == "http://h:1/v1/chat/completions"
    assert parse_verdict("CORRECT") is True
    assert parse_verdict("Incorrect.") is False
    assert parse_verdict("I think so") is None
    with pytest.raises(JudgeError, match="http"):
        Judge("ftp://x", "m")


def test_cache_key_depends_on_every_input(tmp_path: Path) -> None:
    judge = Judge("http://127.0.0.1:9/v1", "m1", fast_settings(), tmp_path)
    other = Judge("http://127.0.0.1:9/v1", "m2", fast_settings(), tmp_path)
    base = judge.cache_key("q", "r", "p")
    assert base == judge.cache_key("q", "r", "p")
    assert len({base, other.cache_key("q", "r", "p"), judge.cache_key("q2", "r", "p"),
                judge.cache_key("q", "r2", "p"), judge.cache_key("q", "r", "p2")}) == 5
