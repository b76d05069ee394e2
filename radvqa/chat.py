"""One client for OpenAI-compatible chat-completions endpoints, shared by the judge and predict.

Standard library only (``urllib.request``): no client package to install, and it reaches vLLM,
SGLang, LM Studio, Ollama and TGI alike. Transient failures (connection errors, timeouts, HTTP
408/409/429/5xx and replies that are not a chat completion) are retried with exponential
backoff, honouring a 429's ``Retry-After``; anything else fails at once. Replies can be kept
in a :class:`DiskCache` keyed by a hash of everything that shapes the request, so a rerun asks
nothing twice. The API key is read from an environment variable and never appears in a
message.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import string
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from .errors import EndpointError, RadVQAError
from .writers import write_bytes_atomic

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


def check_prompts(
    data: dict[str, Any], where: str, error: type[RadVQAError], texts: Sequence[str],
    allowed: frozenset[str], required: Sequence[str],
) -> None:
    """Check a prompt config: ``texts`` non-empty, and the ``user`` template using only ``allowed``
    placeholders and every ``required`` one (the judge's and predict's YAML share these rules)."""
    for name in texts:
        if not isinstance(data[name], str) or not data[name].strip():
            raise error(f"{where}: '{name}' must be non-empty text")
    try:
        used = {f for _, f, _, _ in string.Formatter().parse(data["user"]) if f is not None}
    except ValueError as exc:
        raise error(f"{where}: 'user' is not a valid template ({exc})")
    unknown = used - allowed
    if unknown:
        raise error(f"{where}: 'user' uses unknown placeholder '{sorted(unknown)[0]}' (allowed: {', '.join(sorted(allowed))})")
    if not set(required) <= used:
        raise error(f"{where}: 'user' must contain " + " and ".join("{" + name + "}" for name in required))
_MAX_RETRY_AFTER = 60.0


def chat_url(url: str) -> str:
    """The chat-completions URL for a base URL ("http://host:8000/v1" -> ".../v1/chat/completions")."""
    url = url.rstrip("/")
    return url if url.endswith("/chat/completions") else f"{url}/chat/completions"


def api_key_from_env(variables: Sequence[str]) -> str | None:
    """The first non-empty environment variable among ``variables``."""
    return next((os.environ[v] for v in variables if os.environ.get(v)), None)


def cache_key(payload: Any) -> str:
    """sha256 of a JSON-serialisable payload."""
    return hashlib.sha256(orjson.dumps(payload)).hexdigest()


class DiskCache:
    """JSON entries under ``DIR/ab/abcd....json``; a damaged entry reads as missing."""

    def __init__(self, folder: Path, error: type[EndpointError]) -> None:
        self.folder = Path(folder)
        self.error = error

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The entry stored under ``key``, or None."""
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            entry = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return None  # asked again and rewritten
        return entry if isinstance(entry, dict) else None

    def put(self, key: str, entry: dict[str, Any]) -> None:
        """Store ``entry`` under ``key`` (atomically)."""
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(path, orjson.dumps(entry))
        except OSError as exc:
            raise self.error(f"{self.folder}: cannot write the cache ({exc.strerror or exc})")


class ChatClient:
    """POST chat completions to one endpoint with retries; thread-safe counters."""

    def __init__(
        self,
        url: str,
        model: str,
        *,
        timeout: float,
        retries: int,
        backoff: float,
        api_key: str | None,
        error: type[EndpointError],
        label: str,
        flag: str,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise error(f"{flag} {url}: expected an http:// or https:// URL")
        self.url = chat_url(url)
        self.model = model
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.api_key = api_key
        self.error = error
        self.label = label
        self._lock = threading.Lock()
        self.requests = 0
        self.retried = 0

    def complete(self, messages: list[dict[str, Any]], temperature: float, max_tokens: int) -> str:
        """The assistant's reply text to ``messages`` (retrying transient failures)."""
        body = orjson.dumps(
            {"model": self.model, "messages": messages, "temperature": temperature, "max_tokens": max_tokens}
        )
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        problem = "no attempt"
        wait = 0.0
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(max(wait, self.backoff * 2 ** (attempt - 1)))
                with self._lock:
                    self.retried += 1
            wait = 0.0
            with self._lock:
                self.requests += 1
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    raw = response.read()
            except urllib.error.HTTPError as exc:
                exc.close()  # the error carries the open response
                problem = f"HTTP {exc.code} {exc.reason}"
                if exc.code in RETRY_STATUS:
                    wait = _retry_after(exc.headers.get("Retry-After") if exc.headers else None)
                    continue
                raise self.error(f"{self.label} {self.url}: {problem}", status=exc.code)
            except (TimeoutError, urllib.error.URLError, ConnectionError, http.client.HTTPException) as exc:
                problem = str(getattr(exc, "reason", exc)) or type(exc).__name__
                continue
            content = reply_content(raw)
            if content is None:
                problem = "reply is not an OpenAI-style chat completion"
                continue
            return content
        raise self.error(f"{self.label} {self.url}: failed after {self.retries + 1} attempts ({problem})")


def reply_content(raw: bytes) -> str | None:
    """The first choice's message text of a chat-completion body, or None when it is not one."""
    try:
        data = orjson.loads(raw)
        content = data["choices"][0]["message"]["content"]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        return None
    if content is None:
        return ""
    return content if isinstance(content, str) else None


def _retry_after(value: str | None) -> float:
    """Seconds from a Retry-After header (RFC 9110 section 10.2.3, delay-seconds form), capped."""
    try:
        return min(max(float(value), 0.0), _MAX_RETRY_AFTER) if value else 0.0
    except ValueError:
        return 0.0
