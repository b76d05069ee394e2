"""An LLM judge for open answers through any OpenAI-compatible chat-completions endpoint.

Standard library only (``urllib.request``): no client package to install. Each verdict is
binary (CORRECT / INCORRECT); replies are cached on disk under a hash of (model, prompts,
question, reference, prediction), so rerunning an evaluation asks nothing twice and gives the
same numbers. Transient failures (connection errors, HTTP 408/409/429/5xx) are retried with
exponential backoff; anything else is a one-line JudgeError.
"""

from __future__ import annotations

import hashlib
import os
import string
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from .errors import JudgeError
from .progress import NullProgress, ProgressBar
from .resources import check_keys, default_path, load_yaml
from .writers import write_bytes_atomic

_KEYS = frozenset({"system", "user", "temperature", "max_tokens", "timeout", "retries", "backoff", "workers"})
_FIELDS = frozenset({"question", "reference", "prediction"})
_RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
_CORRECT = frozenset({"correct", "yes", "true"})
_INCORRECT = frozenset({"incorrect", "no", "false", "wrong"})
API_KEY_VARIABLES = ("RADVQA_JUDGE_API_KEY", "OPENAI_API_KEY")


@dataclass(frozen=True)
class JudgeSettings:
    """Prompts and request settings from ``configs/judge.yaml``."""

    system: str
    user: str
    temperature: float = 0.0
    max_tokens: int = 8
    timeout: float = 60.0
    retries: int = 4
    backoff: float = 2.0
    workers: int = 4
    source: str = "defaults"


def load_judge_settings(path: Path | None = None) -> JudgeSettings:
    """Read and check a judge config (the packaged ``configs/judge.yaml`` when ``path`` is None)."""
    doc = load_yaml(Path(path) if path is not None else default_path("configs", "judge.yaml"), JudgeError)
    data = doc.data
    check_keys(data, _KEYS, doc.source, JudgeError, required={"system", "user"})
    for name in ("system", "user"):
        if not isinstance(data[name], str) or not data[name].strip():
            raise JudgeError(f"{doc.source}: '{name}' must be non-empty text")
    try:
        used = {f for _, f, _, _ in string.Formatter().parse(data["user"]) if f is not None}
    except ValueError as exc:
        raise JudgeError(f"{doc.source}: 'user' is not a valid template ({exc})")
    unknown = used - _FIELDS
    if unknown:
        raise JudgeError(f"{doc.source}: 'user' uses unknown placeholder '{sorted(unknown)[0]}' (allowed: {', '.join(sorted(_FIELDS))})")
    if not {"reference", "prediction"} <= used:
        raise JudgeError(f"{doc.source}: 'user' must contain {{reference}} and {{prediction}}")
    try:
        settings = JudgeSettings(
            system=data["system"],
            user=data["user"],
            temperature=float(data.get("temperature", 0.0)),
            max_tokens=int(data.get("max_tokens", 8)),
            timeout=float(data.get("timeout", 60.0)),
            retries=int(data.get("retries", 4)),
            backoff=float(data.get("backoff", 2.0)),
            workers=int(data.get("workers", 4)),
            source=doc.source,
        )
    except (TypeError, ValueError) as exc:
        raise JudgeError(f"{doc.source}: bad number ({exc})")
    if settings.retries < 0 or settings.workers < 1 or settings.timeout <= 0 or settings.backoff < 0:
        raise JudgeError(f"{doc.source}: retries and backoff must be >= 0, workers >= 1, timeout > 0")
    return settings


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/radvqa/judge`` (``~/.cache/radvqa/judge`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "radvqa" / "judge"


def chat_url(url: str) -> str:
    """The chat-completions URL for a base URL ("http://host:8000/v1" -> ".../v1/chat/completions")."""
    url = url.rstrip("/")
    return url if url.endswith("/chat/completions") else f"{url}/chat/completions"


def parse_verdict(reply: str) -> bool | None:
    """True for CORRECT, False for INCORRECT, None when the reply says neither first."""
    words = "".join(c if c.isalnum() else " " for c in reply.lower()).split()
    if not words:
        return None
    if words[0] in _CORRECT:
        return True
    if words[0] in _INCORRECT:
        return False
    return None


class Judge:
    """Binary verdicts from an OpenAI-compatible chat endpoint, cached on disk."""

    def __init__(
        self,
        url: str,
        model: str,
        settings: JudgeSettings | None = None,
        cache_dir: Path | None = None,
        api_key: str | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise JudgeError(f"--judge {url}: expected an http:// or https:// URL")
        self.url = chat_url(url)
        self.model = model
        self.settings = settings or load_judge_settings()
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.api_key = api_key if api_key is not None else next(
            (os.environ[v] for v in API_KEY_VARIABLES if os.environ.get(v)), None
        )
        self._lock = threading.Lock()
        self.answers = self.asked = self.cached = self.requests = self.unclear = 0

    def cache_key(self, question: str, reference: str, prediction: str) -> str:
        """sha256 of (model, prompts, question, reference, prediction)."""
        payload = [self.model, self.settings.system, self.settings.user, question, reference, prediction]
        return hashlib.sha256(orjson.dumps(payload)).hexdigest()

    def _cache_path(self, key: str) -> Path:
        return self.cache_dir / key[:2] / f"{key}.json"

    def verdict(self, question: str, reference: str, prediction: str) -> bool | None:
        """The judge's verdict on one answer (from the cache when asked before)."""
        key = self.cache_key(question, reference, prediction)
        path = self._cache_path(key)
        with self._lock:
            self.asked += 1
        if path.is_file():
            try:
                entry = orjson.loads(path.read_bytes())
                with self._lock:
                    self.cached += 1
                    self.unclear += entry["verdict"] is None
                return entry["verdict"]  # type: ignore[no-any-return]
            except (OSError, orjson.JSONDecodeError, KeyError, TypeError):
                pass  # a damaged cache entry is asked again and rewritten
        user = self.settings.user.format(question=question, reference=reference, prediction=prediction)
        reply = self._ask(user)
        result = parse_verdict(reply)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(path, orjson.dumps({"verdict": result, "reply": reply, "model": self.model}))
        except OSError as exc:
            raise JudgeError(f"{self.cache_dir}: cannot write the judge cache ({exc.strerror or exc})")
        with self._lock:
            self.unclear += result is None
        return result

    def verdicts(self, items: list[tuple[str, str, str]], progress: ProgressBar | None = None) -> list[bool | None]:
        """Verdicts for (question, reference, prediction) triples, in order; each distinct triple asked once."""
        bar = progress or NullProgress()
        counts = Counter(items)
        unique = list(counts)
        self.answers += len(items)

        def one(item: tuple[str, str, str]) -> bool | None:
            result = self.verdict(*item)
            bar.update(counts[item])
            return result

        if self.settings.workers <= 1 or len(unique) <= 1:
            found = [one(item) for item in unique]
        else:
            with ThreadPoolExecutor(self.settings.workers) as pool:
                found = list(pool.map(one, unique))
        table = dict(zip(unique, found))
        return [table[item] for item in items]

    def stats(self) -> dict[str, Any]:
        """Counters for the evaluation report."""
        return {
            "url": self.url,
            "model": self.model,
            "prompt": self.settings.source,
            "answers": self.answers,
            "asked": self.asked,
            "cached": self.cached,
            "requests": self.requests,
            "unclear": self.unclear,
        }

    def _ask(self, user: str) -> str:
        body = orjson.dumps(
            {
                "model": self.model,
                "messages": [
                    {"role": "system", "content": self.settings.system},
                    {"role": "user", "content": user},
                ],
                "temperature": self.settings.temperature,
                "max_tokens": self.settings.max_tokens,
            }
        )
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        problem = "no attempt"
        for attempt in range(self.settings.retries + 1):
            if attempt:
                time.sleep(self.settings.backoff * 2 ** (attempt - 1))
            with self._lock:
                self.requests += 1
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.settings.timeout) as response:
                    raw = response.read()
            except urllib.error.HTTPError as exc:
                problem = f"HTTP {exc.code} {exc.reason}"
                if exc.code in _RETRY_STATUS:
                    continue
                raise JudgeError(f"judge {self.url}: {problem}")
            except (TimeoutError, urllib.error.URLError, ConnectionError) as exc:
                problem = str(getattr(exc, "reason", exc))
                continue
            return _content(raw, self.url)
        raise JudgeError(f"judge {self.url}: failed after {self.settings.retries + 1} attempts ({problem})")


def _content(raw: bytes, url: str) -> str:
    try:
        data = orjson.loads(raw)
        content = data["choices"][0]["message"]["content"]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        raise JudgeError(f"judge {url}: reply is not an OpenAI-style chat completion")
    return content if isinstance(content, str) else ""
