"""Load YAML files: the defaults shipped in the package, or a user's own file."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, did_you_mean


@dataclass(frozen=True)
class YamlDocument:
    """A parsed YAML mapping with where it came from (for messages) and its sha256."""

    data: dict[str, Any]
    source: str
    sha256: str


def default_path(kind: str, name: str) -> Path:
    """Path of a default file shipped in the package (kind: 'configs' or 'templates')."""
    return Path(str(resources.files("radvqa") / "data" / kind / name))


def default_cache_dir(kind: str) -> Path:
    """``$XDG_CACHE_HOME/radvqa/KIND`` (``~/.cache/radvqa/KIND`` by default): a cache folder or file."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "radvqa" / kind


def load_yaml(path: Path, error: type[ConfigError] | type[Exception] = ConfigError) -> YamlDocument:
    """Read a YAML mapping, turning unreadable or malformed files into one-line errors."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror or exc})")
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise error(f"{path}:{where}: malformed YAML: {problem}")
    if not isinstance(data, dict):
        raise error(f"{path}: expected a mapping at the top level")
    return YamlDocument(data=data, source=str(path), sha256=hashlib.sha256(raw).hexdigest())


def check_keys(
    mapping: dict[str, Any],
    allowed: set[str] | frozenset[str],
    where: str,
    error: type[Exception] = ConfigError,
    required: set[str] | frozenset[str] = frozenset(),
) -> None:
    """Reject unknown keys with a did-you-mean hint, and missing required keys."""
    for key in mapping:
        if key not in allowed:
            raise error(f"{where}: unknown key '{key}'{did_you_mean(str(key), allowed)}")
    for key in sorted(required):
        if key not in mapping:
            raise error(f"{where}: missing key '{key}'")
