"""Task functions for tests/test_executors.py, importable by spawned and Dask workers.

Faults fire once per marker: the first try that creates ``marker`` (O_EXCL) fails, every
later try (on any worker) succeeds.
"""

from __future__ import annotations

import os
from pathlib import Path


def first_try(marker: Path) -> bool:
    """True for the one caller that creates ``marker``."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def square(offset: int, x: int) -> int:
    return x * x + offset


def raises_once(folder: str, x: int) -> int:
    if x == 3 and first_try(Path(folder) / "raised"):
        raise OSError("disk hiccup")
    return x * x


def always_raises(_: None, x: int) -> int:
    if x == 3:
        raise OSError("disk hiccup")
    return x * x


def dies_once(folder: str, x: int) -> int:
    if x == 3 and first_try(Path(folder) / "died"):
        os._exit(9)
    return x * x


def refuses(_: None, x: int) -> int:
    from radvqa.errors import SourceError

    raise SourceError(f"shard {x}: cannot read")


def pid(_: object, x: int) -> int:
    return os.getpid()


def install_fault(kind: str, folder: str) -> None:
    """On a Dask worker: make the first shard task anywhere raise (``raise``) or kill its process (``exit``)."""
    import radvqa.dataset as dataset

    real = dataset.run_task

    def faulty(task: object, plan: object) -> object:
        if first_try(Path(folder) / "fault"):
            if kind == "exit":
                os._exit(9)
            raise OSError("disk hiccup")
        return real(task, plan)  # type: ignore[arg-type]

    faulty.real = real  # type: ignore[attr-defined]
    dataset.run_task = faulty  # type: ignore[assignment]


def remove_fault() -> None:
    """Undo install_fault on this worker."""
    import radvqa.dataset as dataset

    dataset.run_task = getattr(dataset.run_task, "real", dataset.run_task)
