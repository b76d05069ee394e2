"""One error hierarchy: every mistake a user can make surfaces as a RadVQAError subclass.

The CLI prints ``str(error)`` on one line (plus ``error.hint`` when set) and exits 1;
anything else is a bug and gets a traceback only with ``--debug``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class RadVQAError(Exception):
    """Base class for errors caused by input, configuration or environment."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class ConfigError(RadVQAError):
    """A configuration or taxonomy file is malformed or has unknown keys."""


class TemplateError(RadVQAError):
    """A template file is malformed, lacks a slot or uses an unknown placeholder."""


class SourceError(RadVQAError):
    """The RadImageNet copy cannot be read (missing folder, unreadable CSV...)."""


class OutputError(RadVQAError):
    """The output location cannot be used (non-empty without --overwrite, ...)."""


class SplitError(RadVQAError):
    """A split or benchmark request cannot be satisfied by the data."""


class DatasetError(RadVQAError):
    """A generated dataset folder cannot be read (no manifest, missing shards, a malformed record).

    Validation commands exit 2 on it: nothing could be checked.
    """


class MissingDependencyError(RadVQAError):
    """An optional back-end is not installed; the message names the extra to install."""


class EvaluateError(RadVQAError):
    """A benchmark, predictions or dataset file cannot be scored or audited."""


class EndpointError(RadVQAError):
    """An OpenAI-compatible chat endpoint failed; ``status`` is the HTTP status when it answered."""

    def __init__(self, message: str, hint: str | None = None, status: int | None = None) -> None:
        super().__init__(message, hint)
        self.status = status


class JudgeError(EndpointError):
    """The LLM judge endpoint failed, answered malformed data, or its config is wrong."""


class PredictError(EndpointError):
    """``radvqa predict`` cannot run: a bad config, image, output file or model endpoint."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean 'x'?)' for the closest choice, or '' when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
