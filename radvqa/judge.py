"""An LLM judge for open answers through any OpenAI-compatible chat-completions endpoint.

Requests go through :mod:`radvqa.chat` (standard library only, retries and backoff). Each verdict is
binary (CORRECT / INCORRECT); replies are cached on disk under a hash of (model, prompts,
question, reference, prediction), so rerunning an evaluation asks nothing twice and gives the
same numbers. A request that still fails after its retries is a one-line JudgeError.
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .resources import default_cache_dir
from .chat import ChatClient, DiskCache, api_key_from_env, cache_key, check_prompts
from .errors import JudgeError
from .progress import NullProgress, ProgressBar
from .resources import check_keys, default_path, load_yaml

_KEYS = frozenset({"system", "user", "temperature", "max_tokens", "timeout", "retries", "backoff", "workers"})
_FIELDS = frozenset({"question", "reference", "prediction"})
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
    check_prompts(data, doc.source, JudgeError, ("system", "user"), _FIELDS, ("reference", "prediction"))
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
        self.settings = settings or load_judge_settings()
        self.client = ChatClient(
            url,
            model,
            timeout=self.settings.timeout,
            retries=self.settings.retries,
            backoff=self.settings.backoff,
            api_key=api_key if api_key is not None else api_key_from_env(API_KEY_VARIABLES),
            error=JudgeError,
            label="judge",
            flag="--judge",
        )
        self.url = self.client.url
        self.model = model
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir("judge")
        self.cache = DiskCache(self.cache_dir, JudgeError)
        self._lock = threading.Lock()
        self.answers = self.asked = self.cached = self.unclear = 0

    @property
    def requests(self) -> int:
        """HTTP requests sent so far (retries included)."""
        return self.client.requests

    def cache_key(self, question: str, reference: str, prediction: str) -> str:
        """sha256 of (model, prompts, question, reference, prediction)."""
        return cache_key([self.model, self.settings.system, self.settings.user, question, reference, prediction])

    def verdict(self, question: str, reference: str, prediction: str) -> bool | None:
        """The judge's verdict on one answer (from the cache when asked before)."""
        key = self.cache_key(question, reference, prediction)
        with self._lock:
            self.asked += 1
        entry = self.cache.get(key)
        if entry is not None and "verdict" in entry and entry["verdict"] in (True, False, None):
            with self._lock:
                self.cached += 1
                self.unclear += entry["verdict"] is None
            return entry["verdict"]  # type: ignore[no-any-return]
        user = self.settings.user.format(question=question, reference=reference, prediction=prediction)
        messages = [{"role": "system", "content": self.settings.system}, {"role": "user", "content": user}]
        reply = self.client.complete(messages, self.settings.temperature, self.settings.max_tokens)
        result = parse_verdict(reply)
        self.cache.put(key, {"verdict": result, "reply": reply, "model": self.model})
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
