"""Progress bars through one helper: tqdm on a terminal, a silent stand-in elsewhere.

Core loops call ``bar.update(n)`` unconditionally; whether anything is drawn is decided
once, here (sqlite-utils' null-progress-bar habit).
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any, Protocol


class ProgressBar(Protocol):
    """The part of tqdm's interface that radvqa uses."""

    def update(self, n: int = 1) -> Any: ...

    def close(self) -> None: ...

    def __enter__(self) -> ProgressBar: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Any: ...


class NullProgress:
    """A progress bar that draws nothing."""

    def update(self, n: int = 1) -> None:
        """Ignore progress."""

    def close(self) -> None:
        """Nothing to close."""

    def __enter__(self) -> NullProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def progress_bar(total: int | None, desc: str, quiet: bool = False, unit: str = "it") -> ProgressBar:
    """Return a tqdm bar on an interactive stderr, else a NullProgress."""
    if quiet or not sys.stderr.isatty():
        return NullProgress()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, leave=False, file=sys.stderr)
