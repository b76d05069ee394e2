"""Who owns an output: ``--overwrite`` removes exactly what radvqa's previous run there recorded.

Every command that writes a folder keeps a record of the files it wrote (generate: its
manifest, plus a pending list while it runs; export: ``radvqa-export.json``; make-sample:
``radvqa-sample.json``; ingest-dicom: its state file). A non-empty folder without such a record
is refused, even with ``--overwrite``, naming what is there: radvqa never deletes a file it
cannot show it wrote. Destinations are checked before any work (a path under a file, a folder
where a file must go, a read-only folder), so a bad ``-o``/``--json`` fails in one line up front.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

import orjson

from .errors import OutputError
from .source import printable

# Reads a folder's record: the relative paths a previous radvqa run wrote there, None when none.
OwnedFiles = Callable[[Path], "list[str] | None"]
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.tmp\d+$")  # writers.temporary()
_SHOWN = 3


def read_record(path: Path, key: str = "files") -> list[str] | None:
    """The ``key`` list of a JSON record file, or None when it is absent or not a radvqa record."""
    try:
        data: Any = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        return None
    return [str(item) for item in data[key]]


def safe_relative(paths: Iterable[str]) -> list[str]:
    """The paths that stay inside their folder (a hostile record cannot point elsewhere)."""
    kept = []
    for path in paths:
        pure = PurePosixPath(path)
        if path and not pure.is_absolute() and ".." not in pure.parts and "\\" not in path:
            kept.append(pure.as_posix())
    return kept


def describe(folder: Path) -> str:
    """'a, b, c and 4 more': what a folder holds, for a refusal message."""
    names = sorted(printable(name) for name in os.listdir(folder))
    shown = ", ".join(names[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def check_folder_destination(out: Path, what: str = "output folder") -> None:
    """Raise OutputError unless ``out`` is, or can be created as, a writable folder."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder; give a folder for the {what}")
    _check_creatable(out)


def check_file_destination(path: Path, flag: str) -> None:
    """Raise OutputError unless ``path`` can be written as a file (checked before the work)."""
    if path.is_dir():
        raise OutputError(f"{flag} {path}: is a folder; give a file name")
    if path.exists() and not path.is_file():
        raise OutputError(f"{flag} {path}: exists and is not a regular file")
    _check_creatable(path.parent, flag)


def _check_creatable(folder: Path, flag: str = "") -> None:
    """The nearest existing ancestor of ``folder`` must be a writable folder."""
    label = f"{flag} " if flag else ""
    probe = folder.absolute()
    while not probe.exists():
        if probe.is_symlink():
            raise OutputError(f"{label}{folder}: {probe} is a dangling link")
        probe = probe.parent
    if not probe.is_dir():
        raise OutputError(f"{label}{folder}: cannot be created, {probe} is a file")
    if not os.access(probe, os.W_OK | os.X_OK):
        where = "" if probe == folder.absolute() else f"cannot be created, {probe} is "
        raise OutputError(f"{label}{folder}: {where}not writable")


def check_output(
    out: Path, overwrite: bool, owned: OwnedFiles, what: str = "output folder", record: str = "record"
) -> list[str]:
    """Raise unless ``out`` may be written; return the files a rerun removes (relative, safe).

    ``record`` names what the refusal says is missing ("record", or "gallery").
    """
    check_folder_destination(out, what)
    if not out.exists() or not any(out.iterdir()):
        return []
    listed = owned(out)
    if listed is None:
        raise OutputError(
            f"{out}: folder is not empty and holds no radvqa {record} ({describe(out)}); "
            "radvqa only replaces what it wrote: choose an empty or new folder"
        )
    if not overwrite:
        raise OutputError(f"{out}: folder is not empty; pass --overwrite to replace a previous output")
    return safe_relative(listed)


def claim_output(
    out: Path, overwrite: bool, owned: OwnedFiles, what: str = "output folder", record: str = "record"
) -> list[str]:
    """Check ``out``, remove the files the previous run recorded (and its temporaries), create it.

    Folders left empty by the removal go too; anything else in ``out`` is kept. Returns the
    removed paths.
    """
    listed = check_output(out, overwrite, owned, what, record)
    names = set(listed)
    removed = []
    folders: set[Path] = set()
    inside: dict[Path, bool] = {}  # per folder: still inside ``out`` once links are resolved
    real_out = out.resolve()
    for rel in listed:
        target = out / rel
        if target.parent not in inside:
            inside[target.parent] = target.parent.resolve().is_relative_to(real_out)
        if not inside[target.parent]:
            continue  # a folder link in the way: what it points to is not ours
        if target.is_file() or target.is_symlink():
            _unlink(target)
            removed.append(rel)
        folders.update(p for p in target.parents if p != out and out in p.parents)
    for folder in {out, *folders}:  # temporaries of listed files (an interrupted write)
        if not folder.is_dir():
            continue
        for name in os.listdir(folder):
            match = _TEMPORARY.match(name)
            rel = (folder / match["name"]).relative_to(out).as_posix() if match else ""
            if match and rel in names:
                _unlink(folder / name)
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"{out}: cannot create ({error.strerror})") from None
    return removed


def _files(folder: Path) -> set[str]:
    return {os.path.join(d, n) for d, _, names in os.walk(folder) for n in names}


@contextmanager
def undo_on_failure(folder: Path) -> Iterator[None]:
    """Remove every file and folder that appears in ``folder`` if the block fails (Ctrl-C too)."""
    files_before = _files(folder)
    folders_before = {d for d, _, _ in os.walk(folder)}
    try:
        yield
    except BaseException:
        for path in _files(folder) - files_before:
            os.unlink(path)
        for path in sorted({d for d, _, _ in os.walk(folder)} - folders_before, key=len, reverse=True):
            if not os.listdir(path):
                os.rmdir(path)
        raise


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError as error:
        raise OutputError(f"{path}: cannot remove ({error.strerror})") from None
