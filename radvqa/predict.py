"""Run a served vision-language model on the benchmark: one fresh conversation per question.

Every question goes to an OpenAI-compatible ``/v1/chat/completions`` endpoint (vLLM, SGLang,
LM Studio, Ollama, TGI) through :mod:`radvqa.chat`: the system prompt, then one user turn with
the image as a base64 PNG data URL and the question with its per-type instruction from
``configs/predict.yaml``. No earlier turn is ever sent, so no answer can leak into another.

The output is JSONL, one ``{"id", "prediction", "model", "blind"}`` line per answered question,
appended as answers arrive (each line is one ``write`` on an ``O_APPEND`` descriptor). A rerun
reads the file first, skips the ids it already holds and appends the rest; a torn last line
(the machine died mid-write) is cut off before appending. Questions whose requests still fail
after their retries are left out, so a rerun asks them again. Replies are cached on disk under
a hash of (model, prompts, image, settings) like the judge's verdicts.

``--blind`` runs the text-only controls: ``none`` sends no image, ``blank`` a black image of the
same size, ``guess`` no image plus the "you cannot see the image" line.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson

from .resources import default_cache_dir
from .chat import ChatClient, DiskCache, api_key_from_env, cache_key, check_prompts
from .errors import PredictError
from .evaluate import benchmark_files, find_manifest, read_benchmark
from .progress import NullProgress, ProgressBar
from .resources import check_keys, default_path, load_yaml

BLIND_MODES = ("none", "blank", "guess")
QUESTION_TYPES = ("multiple_choice", "closed", "open")
API_KEY_VARIABLES = ("RADVQA_API_KEY", "OPENAI_API_KEY")
_KEYS = frozenset(
    {"system", "user", "instructions", "blind_guess", "temperature", "max_tokens", "timeout", "retries",
     "backoff", "concurrency", "stop_after_failures"}
)
_FIELDS = frozenset({"question", "instruction"})
_PNG = b"\x89PNG\r\n\x1a\n"
# A wrong URL, key or model name fails every question alike: stop at once.
_FATAL_STATUS = frozenset({401, 403, 404})


@dataclass(frozen=True)
class PredictSettings:
    """Prompts and request settings from ``configs/predict.yaml``."""

    system: str
    user: str
    instructions: dict[str, str]
    blind_guess: str
    temperature: float = 0.0
    max_tokens: int = 32
    timeout: float = 120.0
    retries: int = 4
    backoff: float = 2.0
    concurrency: int = 4
    stop_after_failures: int = 5
    source: str = "defaults"


def load_predict_settings(path: Path | None = None) -> PredictSettings:
    """Read and check a predict config (the packaged ``configs/predict.yaml`` when ``path`` is None)."""
    doc = load_yaml(Path(path) if path is not None else default_path("configs", "predict.yaml"), PredictError)
    data, where = doc.data, doc.source
    check_keys(data, _KEYS, where, PredictError, required={"system", "user", "instructions", "blind_guess"})
    check_prompts(data, where, PredictError, ("system", "user", "blind_guess"), _FIELDS, ("question", "instruction"))
    instructions = data["instructions"]
    if not isinstance(instructions, dict):
        raise PredictError(f"{where}: 'instructions' must map question types to text")
    check_keys(instructions, frozenset(QUESTION_TYPES), f"{where}: instructions", PredictError, set(QUESTION_TYPES))
    for kind, text in instructions.items():
        if not isinstance(text, str) or not text.strip():
            raise PredictError(f"{where}: instructions.{kind} must be non-empty text")
    try:
        settings = PredictSettings(
            system=data["system"],
            user=data["user"],
            instructions=dict(instructions),
            blind_guess=data["blind_guess"],
            temperature=float(data.get("temperature", 0.0)),
            max_tokens=int(data.get("max_tokens", 32)),
            timeout=float(data.get("timeout", 120.0)),
            retries=int(data.get("retries", 4)),
            backoff=float(data.get("backoff", 2.0)),
            concurrency=int(data.get("concurrency", 4)),
            stop_after_failures=int(data.get("stop_after_failures", 5)),
            source=where,
        )
    except (TypeError, ValueError) as exc:
        raise PredictError(f"{where}: bad number ({exc})")
    if (
        settings.retries < 0 or settings.backoff < 0 or settings.timeout <= 0 or settings.concurrency < 1
        or settings.max_tokens < 1 or settings.stop_after_failures < 1
    ):
        raise PredictError(
            f"{where}: retries and backoff must be >= 0, timeout > 0, concurrency, max_tokens and "
            "stop_after_failures >= 1"
        )
    return settings


# --- one request -------------------------------------------------------------------------------


def png_bytes(data: bytes, where: str) -> bytes:
    """The image as PNG bytes (PNG files pass through unchanged; others are re-encoded)."""
    if data.startswith(_PNG):
        return data
    return _encode(data, where, blank=False)


def blank_png(data: bytes, where: str) -> bytes:
    """A black PNG of the same size and mode as the image (the ``--blind blank`` control)."""
    return _encode(data, where, blank=True)


def _encode(data: bytes, where: str, blank: bool) -> bytes:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            out = Image.new(image.mode, image.size) if blank else image
            if out.mode not in ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"):
                out = out.convert("RGB")
            buffer = io.BytesIO()
            out.save(buffer, format="PNG")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise PredictError(f"{where}: not a readable image ({exc})")
    return buffer.getvalue()


def data_url(png: bytes) -> str:
    """A ``data:image/png;base64,...`` URL (RFC 2397) for PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def user_text(record: dict[str, Any], settings: PredictSettings, blind: str | None) -> str:
    """The user turn's text: the question and its type's instruction (after the guess line when blind=guess)."""
    instruction = settings.instructions[record["question_type"]]
    if blind == "guess":
        instruction = f"{settings.blind_guess} {instruction}"
    return settings.user.format(question=record["question"], instruction=instruction)


def messages_for(record: dict[str, Any], settings: PredictSettings, png: bytes | None, blind: str | None) -> list[dict[str, Any]]:
    """A fresh conversation for one question: system prompt, then one user turn (image first, when sent)."""
    text = {"type": "text", "text": user_text(record, settings, blind)}
    content: list[dict[str, Any]] = [text]
    if png is not None:
        content.insert(0, {"type": "image_url", "image_url": {"url": data_url(png)}})
    return [{"role": "system", "content": settings.system}, {"role": "user", "content": content}]


class Predictor:
    """Answers one benchmark record at a time, through the cache then the endpoint."""

    def __init__(
        self,
        endpoint: str,
        model: str,
        settings: PredictSettings,
        root: Path | None,
        blind: str | None,
        cache_dir: Path | None,
        api_key: str | None,
    ) -> None:
        self.settings = settings
        self.model = model
        self.root = root
        self.blind = blind
        self.client = ChatClient(
            endpoint,
            model,
            timeout=settings.timeout,
            retries=settings.retries,
            backoff=settings.backoff,
            api_key=api_key,
            error=PredictError,
            label="endpoint",
            flag="--endpoint",
        )
        self.cache = DiskCache(cache_dir if cache_dir is not None else default_cache_dir("predict"), PredictError)
        self.cached = 0
        self._lock = threading.Lock()

    def image(self, record: dict[str, Any]) -> bytes | None:
        """The PNG sent with a record (None for the no-image controls)."""
        if self.blind in ("none", "guess"):
            return None
        assert self.root is not None
        path = self.root / str(record["image"])
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise PredictError(f"{path}: cannot read the image of {record['id']} ({exc.strerror or exc})")
        return blank_png(data, str(path)) if self.blind == "blank" else png_bytes(data, str(path))

    def answer(self, record: dict[str, Any]) -> str:
        """The model's reply to one question (from the cache when asked before)."""
        png = self.image(record)
        s = self.settings
        key = cache_key(
            [self.model, s.system, user_text(record, s, self.blind), hashlib.sha256(png).hexdigest() if png else None,
             s.temperature, s.max_tokens]
        )
        entry = self.cache.get(key)
        if entry is not None and isinstance(entry.get("reply"), str):
            with self._lock:
                self.cached += 1
            return str(entry["reply"])
        reply = self.client.complete(messages_for(record, s, png, self.blind), s.temperature, s.max_tokens)
        self.cache.put(key, {"reply": reply, "model": self.model})
        return reply


# --- the output file ---------------------------------------------------------------------------


def read_answered(path: Path, model: str, blind: str | None) -> tuple[set[str], int]:
    """Ids already in a predictions file, and the byte length of its complete lines.

    A last line without its newline that does not parse is a torn write: its bytes are not
    counted, so the caller cuts them off. Lines made with another model or blind mode are
    refused: one file holds one run.
    """
    if not path.exists():
        return set(), 0
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PredictError(f"{path}: cannot read ({exc.strerror or exc})")
    answered: set[str] = set()
    keep = 0
    lines = raw.split(b"\n")
    for number, line in enumerate(lines, 1):
        last = number == len(lines)
        if line.strip():
            try:
                item = orjson.loads(line)
            except orjson.JSONDecodeError:
                if last:
                    break  # torn last line
                raise PredictError(f"{path}:{number}: not valid JSON; not a predictions file from radvqa predict?")
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                raise PredictError(f"{path}:{number}: expected an object with an 'id'")
            if item.get("model") != model or item.get("blind") != blind:
                raise PredictError(
                    f"{path}:{number}: made with model {item.get('model')!r}, blind {item.get('blind')!r}, "
                    f"not {model!r}, blind {blind!r}",
                    hint="write each run to its own -o file",
                )
            answered.add(item["id"])
        keep += len(line) + (0 if last else 1)
    return answered, keep


@dataclass
class PredictResult:
    """What one ``radvqa predict`` run did."""

    output: Path
    questions: int = 0
    already: int = 0
    answered: int = 0
    cached: int = 0
    requests: int = 0
    retried: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)
    repaired: bool = False

    def lines(self) -> list[str]:
        """Summary for the terminal."""
        out = [
            f"{self.answered} answers written to {self.output} ({self.already} of {self.questions} were already there; "
            f"{self.cached} from cache, {self.requests} requests, {self.retried} retries)"
        ]
        if self.repaired:
            out.append("cut off a torn last line left by an interrupted run")
        return out


def dataset_root(benchmark: Path) -> Path | None:
    """The RadImageNet copy recorded in the dataset's manifest (``source.root``), if any."""
    found = find_manifest(benchmark)
    if found is None:
        return None
    source = found[1].get("source")
    root = source.get("root") if isinstance(source, dict) else None
    return Path(root) if isinstance(root, str) and root else None


def predict(
    benchmark: Path,
    output: Path,
    endpoint: str,
    model: str,
    *,
    root: Path | None = None,
    blind: str | None = None,
    concurrency: int | None = None,
    settings: PredictSettings | None = None,
    cache_dir: Path | None = None,
    api_key: str | None = None,
    progress: Callable[[int, str], ProgressBar] | None = None,
) -> PredictResult:
    """Ask the model every benchmark question not yet in ``output`` and append its answers."""
    settings = settings or load_predict_settings()
    if concurrency is not None:
        if concurrency < 1:
            raise PredictError(f"--concurrency {concurrency}: must be at least 1")
        settings = replace(settings, concurrency=concurrency)
    if blind is not None and blind not in BLIND_MODES:
        raise PredictError(f"--blind {blind}: expected one of {', '.join(BLIND_MODES)}")
    if not model.strip():
        raise PredictError("--model: must not be empty")
    output = Path(output)
    if output.is_dir() or not output.parent.is_dir():
        raise PredictError(f"-o {output}: must be a file in an existing folder")
    records = list(read_benchmark(benchmark_files(Path(benchmark))))
    for record in records:
        if record["question_type"] not in QUESTION_TYPES:
            raise PredictError(f"{benchmark}: record {record['id']} has unknown question_type {record['question_type']!r}")
    needs_image = blind not in ("none", "guess")
    if needs_image:
        root = Path(root) if root is not None else dataset_root(Path(benchmark))
        if root is None or not root.is_dir():
            raise PredictError(
                f"{root or benchmark}: RadImageNet copy not found",
                hint="pass --root with the folder holding radiology_ai/",
            )
        missing = next((r for r in records if not (root / str(r["image"])).is_file()), None)
        if missing is not None:
            raise PredictError(
                f"{root / str(missing['image'])}: image of {missing['id']} not found",
                hint="pass --root with the RadImageNet copy the dataset was generated from",
            )
    predictor = Predictor(
        endpoint, model, settings, root if needs_image else None, blind, cache_dir,
        api_key if api_key is not None else api_key_from_env(API_KEY_VARIABLES),
    )
    answered, keep = read_answered(output, model, blind)
    result = PredictResult(output=output, questions=len(records), already=len(answered))
    if output.exists() and keep < output.stat().st_size:
        os.truncate(output, keep)
        result.repaired = True
    todo = [r for r in records if r["id"] not in answered]
    bar = progress(len(todo), "predict") if progress and todo else NullProgress()
    with bar:
        _run(todo, predictor, output, settings, result, bar)
    result.cached = predictor.cached
    result.requests = predictor.client.requests
    result.retried = predictor.client.retried
    if result.failed:
        raise PredictError(
            f"{result.failed} of {len(todo)} questions got no answer (e.g. {result.failures[0]}); "
            f"{result.answered} answers were written to {output}",
            hint="rerun the same command to ask the missing ones again",
        )
    return result


def _run(
    todo: list[dict[str, Any]],
    predictor: Predictor,
    output: Path,
    settings: PredictSettings,
    result: PredictResult,
    bar: ProgressBar,
) -> None:
    """Answer ``todo`` with ``settings.concurrency`` requests in flight, appending lines as they come."""
    if not todo:
        return
    fd = os.open(output, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    pool = ThreadPoolExecutor(settings.concurrency)
    pending: dict[Future[str], dict[str, Any]] = {}
    queue = iter(todo)
    in_a_row = 0
    try:
        while True:
            # A bounded window: memory stays flat and an interrupt leaves little work in flight.
            while len(pending) < 2 * settings.concurrency:
                record = next(queue, None)
                if record is None:
                    break
                pending[pool.submit(predictor.answer, record)] = record
            if not pending:
                return
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                record = pending.pop(future)
                try:
                    reply = future.result()
                except PredictError as exc:
                    if exc.status in _FATAL_STATUS:
                        raise
                    result.failed += 1
                    in_a_row += 1
                    if len(result.failures) < 3:
                        result.failures.append(f"{record['id']}: {exc}")
                    if in_a_row >= settings.stop_after_failures:
                        raise PredictError(
                            f"stopped after {in_a_row} questions in a row failed (last: {record['id']}: {exc}); "
                            f"{result.answered} answers were written to {output}",
                            hint="check the endpoint, then rerun the same command to resume",
                        ) from None
                    continue
                in_a_row = 0
                line = orjson.dumps(
                    {"id": record["id"], "prediction": reply, "model": predictor.model, "blind": predictor.blind}
                ) + b"\n"
                _write_all(fd, line)
                result.answered += 1
                bar.update(1)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    """Append ``data``: one ``write`` call for a line (a short write, rare, is finished at once)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
