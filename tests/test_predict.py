"""radvqa predict against a scripted OpenAI-compatible server on 127.0.0.1 (no network)."""

from __future__ import annotations

import base64
import hashlib
import io
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from PIL import Image
from test_evaluate import ensure_benchmark, read, write
from typer.testing import CliRunner

from radvqa.cli import app
from radvqa.errors import PredictError
from radvqa.evaluate import evaluate
from radvqa.predict import (
    PredictSettings,
    load_predict_settings,
    predict,
    read_answered,
)

runner = CliRunner()
IMAGES = 6  # benchmark images in the small test benchmark (9 questions each)


def right_answer(record: dict[str, Any]) -> str:
    return str(record["answer"]) if record["question_type"] != "open" else str(record["answer_text"])


class ScriptedServer:
    """Chat completions answered from a script: one action per request, then ``default``.

    Actions: right (the record's answer), wrong, malformed (200 but not a completion), slow
    (sleeps past the client's timeout, then answers right), 500, 429 (with Retry-After: 0), 401.
    """

    def __init__(self, records: list[dict[str, Any]], root: Path) -> None:
        self.requests: list[dict[str, Any]] = []
        self.script: list[str] = []
        self.default = "right"
        self.fail_text: str | None = None  # questions containing this always get HTTP 500
        self.lock = threading.Lock()
        self.table = [
            (r["question"], hashlib.sha256((root / r["image"]).read_bytes()).hexdigest(), right_answer(r)) for r in records
        ]
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    outer.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                    action = outer.script.pop(0) if outer.script else outer.default
                text, image = _parts(body)
                if outer.fail_text is not None and outer.fail_text in text:
                    action = "500"
                if action in ("500", "401"):
                    self.send_error(int(action), "scripted")
                    return
                if action == "429":
                    self.send_response(429)
                    self.send_header("Retry-After", "0")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if action == "slow":
                    time.sleep(0.6)
                if action == "malformed":
                    self._reply(b"<html>bad gateway</html>")
                    return
                answer = outer.answer(text, image) if action in ("right", "slow") else "I am not sure."
                self._reply(orjson.dumps({"choices": [{"message": {"role": "assistant", "content": answer}}]}))

            def _reply(self, data: bytes) -> None:
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (the slow action)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def answer(self, text: str, image: bytes | None) -> str:
        digest = hashlib.sha256(image).hexdigest() if image is not None else None
        found = [a for q, h, a in self.table if text.startswith(q) and (digest is None or h == digest)]
        return found[0] if found else "no idea"

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def _parts(body: dict[str, Any]) -> tuple[str, bytes | None]:
    """The user turn's text and its decoded image (None when no image was sent)."""
    content = body["messages"][-1]["content"]
    text = next(c["text"] for c in content if c["type"] == "text")
    urls = [c["image_url"]["url"] for c in content if c["type"] == "image_url"]
    image = base64.b64decode(urls[0].split(",", 1)[1]) if urls else None
    return text, image


@pytest.fixture(scope="module")
def bench(sample_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset folder whose benchmark holds the first IMAGES images' questions."""
    folder = tmp_path_factory.mktemp("predict") / "out"
    folder.mkdir()
    shutil.copy(sample_dataset / "manifest.json", folder / "manifest.json")
    full = ensure_benchmark(shutil.copytree(sample_dataset, folder.parent / "full"))
    rows = read(full)
    images = list(dict.fromkeys(r["image"] for r in rows))[:IMAGES]
    (folder / "benchmark").mkdir()
    write(folder / "benchmark" / "test-00000-of-00001.jsonl", [r for r in rows if r["image"] in images])
    return folder


@pytest.fixture(scope="module")
def records(bench: Path) -> list[dict[str, Any]]:
    return read(bench / "benchmark" / "test-00000-of-00001.jsonl")


@pytest.fixture(scope="module")
def root(bench: Path) -> Path:
    return Path(orjson.loads((bench / "manifest.json").read_bytes())["source"]["root"])


@pytest.fixture()
def server(records: list[dict[str, Any]], root: Path) -> Iterator[ScriptedServer]:
    with ScriptedServer(records, root) as fake:
        yield fake


def fast(**overrides: Any) -> PredictSettings:
    return replace(load_predict_settings(), **({"backoff": 0.01, "timeout": 5.0} | overrides))


def run(server: ScriptedServer, bench: Path, out: Path, cache: Path, **kwargs: Any) -> Any:
    settings = kwargs.pop("settings", fast())
    return predict(bench, out, server.url, "vlm", settings=settings, cache_dir=cache, **kwargs)


def test_each_question_is_a_fresh_conversation_with_its_own_image(
    server: ScriptedServer, bench: Path, records: list[dict[str, Any]], root: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RADVQA_API_KEY", "sekret-key")
    out = tmp_path / "pred.jsonl"
    result = runner.invoke(
        app, ["predict", str(bench), "--endpoint", server.url, "--model", "vlm", "-o", str(out),
              "--cache", str(tmp_path / "cache"), "--concurrency", "3"],
    )
    assert result.exit_code == 0, result.output
    assert "sekret-key" not in result.output
    assert len(server.requests) == len(records)
    settings = load_predict_settings()
    by_text = {}
    for request in server.requests:
        body = request["body"]
        assert request["path"] == "/v1/chat/completions"
        assert request["auth"] == "Bearer sekret-key"
        assert body["model"] == "vlm" and body["temperature"] == 0
        assert [m["role"] for m in body["messages"]] == ["system", "user"]  # nothing from earlier questions
        assert body["messages"][0]["content"] == settings.system
        content = body["messages"][1]["content"]
        assert [c["type"] for c in content] == ["image_url", "text"]  # exactly one image
        assert content[0]["image_url"]["url"].startswith("data:image/png;base64,")
        text, image = _parts(body)
        by_text.setdefault(text, []).append(image)
    for record in records:
        instruction = settings.instructions[record["question_type"]]
        text = f"{record['question']}\n\n{instruction}"
        assert (root / record["image"]).read_bytes() in by_text[text]
    assert "letter" in settings.instructions["multiple_choice"] and "yes or no" in settings.instructions["closed"]
    lines = read(out)
    assert sorted(x["id"] for x in lines) == sorted(r["id"] for r in records)
    assert all(x["model"] == "vlm" and x["blind"] is None for x in lines)
    report = evaluate(bench, out)
    assert report.overall.average == 100.0


def test_transient_failures_are_retried_and_wrong_answers_kept(
    server: ScriptedServer, bench: Path, records: list[dict[str, Any]], tmp_path: Path
) -> None:
    server.script = ["429", "500", "malformed", "slow", "wrong"]
    out = tmp_path / "pred.jsonl"
    result = run(server, bench, out, tmp_path / "cache", settings=fast(timeout=0.3, retries=4), concurrency=1)
    # One question met 429, 500, malformed, then a timeout: four retries; the next got "wrong".
    assert result.answered == len(records) and result.retried == 4
    assert len(server.requests) == len(records) + 4
    predictions = [x["prediction"] for x in read(out)]
    assert predictions.count("I am not sure.") == 1
    report = evaluate(bench, out)
    assert sum(t.correct for t in report.overall.slots.values()) == len(records) - 1


def test_failed_questions_are_left_out_and_a_rerun_finishes_the_file(
    server: ScriptedServer, bench: Path, records: list[dict[str, Any]], tmp_path: Path
) -> None:
    target = next(r for r in records if r["question_type"] == "open")
    server.fail_text = target["question"]
    failing = [r for r in records if r["question"] == target["question"]]
    out = tmp_path / "pred.jsonl"
    with pytest.raises(PredictError, match=f"{len(failing)} of {len(records)} questions got no answer"):
        run(server, bench, out, tmp_path / "cache", settings=fast(retries=1, stop_after_failures=99))
    assert len(read(out)) == len(records) - len(failing)
    with out.open("ab") as handle:
        handle.write(b'{"id": "half a li')  # an interrupted write
    server.fail_text = None
    server.requests.clear()
    result = run(server, bench, out, tmp_path / "cache")
    assert result.repaired and result.already == len(records) - len(failing)
    assert len(server.requests) == len(failing)  # only the missing ones are asked
    ids = [x["id"] for x in read(out)]
    assert sorted(ids) == sorted(r["id"] for r in records)
    assert evaluate(bench, out).overall.average == 100.0


def test_replies_are_cached_across_runs(server: ScriptedServer, bench: Path, records: list[dict[str, Any]], tmp_path: Path) -> None:
    run(server, bench, tmp_path / "a.jsonl", tmp_path / "cache")
    server.requests.clear()
    result = run(server, bench, tmp_path / "b.jsonl", tmp_path / "cache")
    assert server.requests == [] and result.cached == len(records)
    def key(x: dict[str, Any]) -> str:
        return str(x["id"])

    assert sorted(read(tmp_path / "a.jsonl"), key=key) == sorted(read(tmp_path / "b.jsonl"), key=key)


def test_blind_controls(server: ScriptedServer, bench: Path, records: list[dict[str, Any]], root: Path, tmp_path: Path) -> None:
    settings = load_predict_settings()
    sizes = set()
    for record in records:
        with Image.open(root / record["image"]) as source:
            sizes.add(source.size)
    for mode in ("none", "guess", "blank"):
        server.requests.clear()
        out = tmp_path / f"{mode}.jsonl"
        run(server, bench, out, tmp_path / "cache", blind=mode, concurrency=1)
        assert len(read(out)) == len(records) and all(x["blind"] == mode for x in read(out))
        # Without the image, the same question text on two images is one request (the cache answers the second).
        texts = {_parts(r["body"])[0] for r in server.requests}
        assert len(server.requests) == len(texts) < len(records)
        for request in server.requests:
            text, image = _parts(request["body"])
            assert (settings.blind_guess in text) == (mode == "guess")
            if mode == "blank":
                assert image is not None
                with Image.open(io.BytesIO(image)) as blank:
                    assert blank.getextrema() in ((0, 0), ((0, 0), (0, 0), (0, 0)))
                    assert blank.size in sizes
            else:
                assert image is None
    # A blind run needs no images: a missing copy is no error.
    server.requests.clear()
    run(server, bench, tmp_path / "none2.jsonl", tmp_path / "cache2", blind="none", root=tmp_path / "nowhere")
    assert len(read(tmp_path / "none2.jsonl")) == len(records)


def test_a_wrong_key_stops_at_once(server: ScriptedServer, bench: Path, tmp_path: Path) -> None:
    server.default = "401"
    with pytest.raises(PredictError, match="HTTP 401"):
        run(server, bench, tmp_path / "p.jsonl", tmp_path / "cache", concurrency=1)
    assert len(server.requests) <= 2  # the in-flight window, no retries


def test_a_dead_endpoint_stops_after_failures_in_a_row(server: ScriptedServer, bench: Path, tmp_path: Path) -> None:
    server.default = "500"
    with pytest.raises(PredictError, match="stopped after 2 questions in a row"):
        run(server, bench, tmp_path / "p.jsonl", tmp_path / "cache", settings=fast(retries=1, stop_after_failures=2),
            concurrency=1)
    assert len(server.requests) <= 2 * 2 + 2


def test_resume_refuses_another_models_file(server: ScriptedServer, bench: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.jsonl"
    write(out, [{"id": "x", "prediction": "A", "model": "other", "blind": None}])
    with pytest.raises(PredictError, match="made with model 'other'"):
        run(server, bench, out, tmp_path / "cache")
    assert server.requests == []


def test_read_answered_keeps_a_complete_last_line_without_newline(tmp_path: Path) -> None:
    out = tmp_path / "p.jsonl"
    out.write_bytes(b'{"id": "a", "model": "m", "blind": null}\n{"id": "b", "model": "m", "blind": null}')
    assert read_answered(out, "m", None) == ({"a", "b"}, out.stat().st_size)
    out.write_bytes(b'{"id": "a", "model": "m", "blind": null}\n{"id": "b", "mo')
    assert read_answered(out, "m", None) == ({"a"}, 41)


def test_cli_errors_are_one_line(server: ScriptedServer, bench: Path, tmp_path: Path) -> None:
    base = ["predict", str(bench), "--endpoint", server.url, "--model", "vlm", "-o", str(tmp_path / "p.jsonl")]
    result = runner.invoke(app, base + ["--root", str(tmp_path / "nowhere")])
    assert result.exit_code == 1 and "RadImageNet copy not found" in result.output
    result = runner.invoke(app, base + ["--blind", "maybe"])
    assert result.exit_code == 2
    result = runner.invoke(app, ["predict", str(bench), "--endpoint", "localhost:8000", "--model", "m", "-o",
                                 str(tmp_path / "p.jsonl")])
    assert result.exit_code == 1 and "expected an http:// or https:// URL" in result.output
    assert server.requests == []


@pytest.mark.parametrize(
    "text, message",
    [
        ("system: s\nuser: '{question} {instruction}'\ninstructions: {closed: a, open: b, multiple_choice: c}\n"
         "blind_guess: g\ntemprature: 0\n", "did you mean 'temperature'"),
        ("system: s\nuser: '{question} {instruction}'\ninstructions: {closed: a, open: b}\nblind_guess: g\n",
         "missing key 'multiple_choice'"),
        ("system: s\nuser: '{question} {answer}'\ninstructions: {closed: a, open: b, multiple_choice: c}\n"
         "blind_guess: g\n", "unknown placeholder 'answer'"),
        ("system: s\nuser: '{question} {instruction}'\ninstructions: {closed: a, open: b, multiple_choice: c}\n"
         "blind_guess: g\nconcurrency: 0\n", "concurrency"),
    ],
)
def test_bad_predict_config(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "predict.yaml"
    path.write_text(text)
    with pytest.raises(PredictError, match=message):
        load_predict_settings(path)
