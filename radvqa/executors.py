"""One way to run independent tasks: in this process, a local process pool, or a Dask cluster.

Shaped after img2dataset's distributor: a task is an idempotent unit (a shard, a batch of
files) that writes under a temporary name and renames; the worker-side wrapper returns an
:class:`Outcome` instead of raising, and one loop here retries failed or lost tasks a bounded
number of times, counts progress and owns the interrupt lifecycle:

* SIGINT / SIGTERM: stop submitting, cancel what is pending, end the workers, remove the
  run's temporaries and raise :class:`Interrupted` (the CLI prints one line, exits 130 / 143).
  While that cleanup runs, further signals are ignored, so a second Ctrl-C cannot leave a
  traceback or a hang.
* Local workers ignore SIGINT (the parent decides) and exit by themselves when the parent
  dies: their task pipe reaches EOF, and a watcher thread sees the parent pid change while a
  task runs. Dask's own worker processes exit when their nanny's pipe closes.
* Workers must see the run's paths (ROOT, OUT) where the parent does: the first task on
  each worker checks them and fails the run with one line naming the path it cannot see.

Backends: ``local`` (default; ``workers`` 1 runs in this process, the byte-identity reference)
and ``dask`` (``dask.distributed``: a LocalCluster of ``workers`` processes, or an existing
scheduler from ``--scheduler`` / ``DASK_SCHEDULER_ADDRESS``; extra ``radvqa[dask]``).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
import traceback
import warnings
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from types import FrameType
from typing import Any, Generic, TypeVar

from .errors import ConfigError, MissingDependencyError, RadVQAError
from .progress import NullProgress, ProgressBar

EXECUTORS = ("local", "dask")
SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"
CLUSTER_BATCH = 8  # Dask tasks carry this many times the local pool's units
DEFAULT_RETRIES = 2  # extra tries of a task that raised or whose worker was lost
_PARENT_POLL = 0.5  # seconds between a local worker's checks that its parent is alive
_STOP_TIMEOUT = 3.0  # seconds to wait for ended workers before killing them
_CLOSE_TIMEOUT = 30.0  # seconds a finished run waits for a LocalCluster to close
_TEMPORARY = ".tmp"  # writers.temporary(): ``.NAME.tmpPID``

T = TypeVar("T")
R = TypeVar("R")


class Interrupted(RadVQAError):
    """The run was stopped by SIGINT or SIGTERM; ``exit_code`` is 128 + the signal number."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """Shell convention: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + self.signum


class TaskError(RadVQAError):
    """A task failed on every try, or a worker cannot see the run's paths."""


class _Signalled(BaseException):
    """Raised in the main thread by the SIGTERM handler (SIGINT raises KeyboardInterrupt)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@dataclass(frozen=True)
class ExecutorSpec:
    """Where tasks run: ``local`` or ``dask``, with how many workers, or which scheduler."""

    kind: str = "local"
    workers: int = 1
    scheduler: str | None = None
    retries: int = DEFAULT_RETRIES

    def check(self) -> None:
        """One-line errors for an unknown backend, a bad worker count or a stray --scheduler."""
        if self.kind not in EXECUTORS:
            raise ConfigError(f"--executor: '{self.kind}' is not one of {', '.join(EXECUTORS)}")
        if self.workers < 1:
            raise ConfigError(f"--workers: {self.workers} must be at least 1")
        if self.scheduler and self.kind != "dask":
            raise ConfigError("--scheduler: only used with --executor dask")

    @property
    def address(self) -> str | None:
        """The Dask scheduler to join (flag first, then the environment); None starts a LocalCluster."""
        return self.scheduler or os.environ.get(SCHEDULER_ENV) or None


@dataclass(frozen=True)
class Outcome:
    """What a worker sends back: a value, or an error message (``fatal``: do not retry).

    ``raised`` carries a RadVQAError from the task so the caller sees its own error class.
    """

    value: Any = None
    error: str | None = None
    fatal: bool = False
    raised: RadVQAError | None = None


@dataclass
class Job(Generic[T, R]):
    """Tasks sharing one function and one read-only object (sent to each worker once).

    ``fn(shared, task)`` runs on a worker; ``weight(task, result)`` is the progress it adds;
    ``unit`` names what a finished task is in the interrupt line ("shards written").
    """

    fn: Callable[[Any, T], R]
    tasks: Sequence[tuple[Hashable, T]]
    shared: Any = None
    weight: Callable[[T, R], int] | None = None
    unit: str = "tasks done"


# --- worker side ----------------------------------------------------------------------------

_SEEN: set[str] = set()  # paths this worker process has already checked


def _unseen(paths: Sequence[str]) -> str | None:
    for path in paths:
        if path not in _SEEN:
            if not os.path.exists(path):
                return path
            _SEEN.add(path)
    return None


def call(fn: Callable[[Any, Any], Any], shared: Any, task: Any, paths: Sequence[str] = ()) -> Outcome:
    """Run one task on a worker and return its Outcome; never raises (except on interrupts)."""
    missing = _unseen(paths)
    if missing is not None:
        return Outcome(
            error=f"worker on {socket.gethostname()} cannot see {missing}: workers need ROOT and OUT "
            "at the same paths (a shared filesystem)",
            fatal=True,
        )
    try:
        return Outcome(value=fn(shared, task))
    except RadVQAError as error:  # the input's fault: the same on every try
        return Outcome(error=str(error), fatal=True, raised=error)
    except Exception as error:  # noqa: BLE001 - reported (and retried) by the parent's loop
        lines = traceback.format_exception_only(type(error), error)
        return Outcome(error=lines[-1].strip())


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(_PARENT_POLL)
        if os.getppid() != parent:
            os._exit(1)


def _worker_main(conn: Connection, parent: int) -> None:
    """A local worker: ignore SIGINT, run tasks from the pipe, exit on EOF or when the parent dies."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    shared: dict[int, Any] = {}
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message[0] == "shared":
            shared[message[1]] = message[2]
            continue
        _, key, fn, token, task, paths = message
        outcome = call(fn, shared.get(token), task, paths)
        try:
            conn.send((key, outcome))
        except (OSError, ValueError):
            return
        except Exception as error:  # noqa: BLE001 - an unpicklable result is the task's failure
            conn.send((key, Outcome(error=f"cannot send the result back ({error})")))


# --- backends -------------------------------------------------------------------------------


class _Backend:
    """Submit keyed tasks, then collect (key, Outcome) pairs as they finish."""

    capacity = 1 << 30  # tasks in flight at once

    def share(self, token: int, shared: Any) -> None:
        """Make ``shared`` available to the tasks of job ``token``."""

    def submit(self, key: int, fn: Callable[[Any, Any], Any], token: int, task: Any, paths: Sequence[str]) -> None:
        """Start one task."""
        raise NotImplementedError

    def next(self) -> tuple[int, Outcome]:
        """Block until a task finishes (or is lost: an Outcome with an error)."""
        raise NotImplementedError

    def close(self, abort: bool = False) -> None:
        """End the workers (``abort``: now, dropping what runs)."""


class _InProcess(_Backend):
    """workers=1: run each task here, when its result is asked for (the reference output)."""

    capacity = 1

    def __init__(self) -> None:
        self._shared: dict[int, Any] = {}
        self._queue: deque[tuple[int, Callable[[Any, Any], Any], int, Any]] = deque()

    def share(self, token: int, shared: Any) -> None:
        self._shared[token] = shared

    def submit(self, key: int, fn: Callable[[Any, Any], Any], token: int, task: Any, paths: Sequence[str]) -> None:
        self._queue.append((key, fn, token, task))

    def next(self) -> tuple[int, Outcome]:
        key, fn, token, task = self._queue.popleft()
        return key, call(fn, self._shared[token], task)


@dataclass
class _Worker:
    process: Any
    conn: Connection
    tokens: set[int] = field(default_factory=set)  # jobs whose shared object this worker holds
    busy: int | None = None


class _LocalPool(_Backend):
    """Spawned worker processes fed one task at a time over a pipe each (no shared queue to wedge)."""

    def __init__(self, workers: int) -> None:
        self._context = multiprocessing.get_context("spawn")
        self._shared: dict[int, Any] = {}
        self._workers: list[_Worker] = []
        self._waiting: deque[tuple[int, Callable[[Any, Any], Any], int, Any, Sequence[str]]] = deque()
        self._lost: deque[tuple[int, Outcome]] = deque()
        self.capacity = 2 * workers
        for _ in range(workers):
            self._workers.append(self._start())

    def _start(self) -> _Worker:
        ours, theirs = self._context.Pipe()
        process = self._context.Process(target=_worker_main, args=(theirs, os.getpid()), daemon=True)
        with _sigint_ignored():  # a child spawned now never installs Python's KeyboardInterrupt
            process.start()
        theirs.close()
        return _Worker(process, ours)

    def share(self, token: int, shared: Any) -> None:
        self._shared[token] = shared

    def submit(self, key: int, fn: Callable[[Any, Any], Any], token: int, task: Any, paths: Sequence[str]) -> None:
        self._waiting.append((key, fn, token, task, paths))
        self._dispatch()

    def _dispatch(self) -> None:
        for worker in self._workers:
            if worker.busy is None and self._waiting:
                key, fn, token, task, paths = self._waiting.popleft()
                if token not in worker.tokens:
                    worker.conn.send(("shared", token, self._shared[token]))
                    worker.tokens.add(token)
                worker.conn.send(("task", key, fn, token, task, tuple(paths)))
                worker.busy = key

    def next(self) -> tuple[int, Outcome]:
        while not self._lost:
            busy = [w for w in self._workers if w.busy is not None]
            ready = wait([w.conn for w in busy] + [w.process.sentinel for w in busy])
            for worker in busy:
                if worker.conn in ready:
                    try:
                        key, outcome = worker.conn.recv()
                    except (EOFError, OSError):
                        continue  # died while sending: its sentinel is ready too
                    worker.busy = None
                    self._dispatch()
                    return key, outcome
            for index, worker in enumerate(self._workers):
                if worker.busy is not None and worker.process.sentinel in ready:
                    code = worker.process.exitcode
                    self._lost.append((worker.busy, Outcome(error=f"worker process lost (exit code {code})")))
                    worker.conn.close()
                    self._workers[index] = self._start()
            self._dispatch()
        return self._lost.popleft()

    def close(self, abort: bool = False) -> None:
        for worker in self._workers:
            worker.conn.close()  # EOF: an idle worker returns
            if abort and worker.process.is_alive():
                worker.process.terminate()
        deadline = time.monotonic() + _STOP_TIMEOUT
        for worker in self._workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(1.0)


class _Dask(_Backend):
    """dask.distributed: tasks become futures; lost workers' tasks are rescheduled by Dask, then by us."""

    def __init__(self, spec: ExecutorSpec) -> None:
        try:
            from distributed import Client, LocalCluster, as_completed
        except ImportError:
            raise MissingDependencyError(
                "--executor dask needs dask.distributed", hint="pip install 'radvqa[dask]'"
            ) from None
        self._cluster = None
        address = spec.address
        # Dask logs lost workers and rescheduled keys; this loop reports what matters in one line.
        logging.getLogger("distributed").setLevel(logging.CRITICAL)
        with _sigint_ignored():
            try:
                if address:
                    self._client = Client(address, timeout="10s", set_as_default=False)
                else:
                    self._cluster = LocalCluster(
                        n_workers=spec.workers,
                        threads_per_worker=1,
                        processes=True,
                        dashboard_address=":0",
                        silence_logs=logging.CRITICAL,
                    )
                    self._client = Client(self._cluster, set_as_default=False)
            except (OSError, TimeoutError) as error:
                raise ConfigError(f"--scheduler {address}: cannot reach the Dask scheduler ({error})") from None
        # with_results: results are fetched in the client's event loop, not one blocking call each
        self._done = as_completed(loop=self._client.loop, with_results=True, raise_errors=False)
        self._futures: dict[Any, int] = {}
        self._shared: dict[int, Any] = {}
        self._objects: dict[int, Any] = {}

    def share(self, token: int, shared: Any) -> None:
        self._objects[token] = shared
        self._shared[token] = self._scatter(shared)

    def _scatter(self, shared: Any) -> Any:
        """One copy of ``shared`` on every worker; while workers come and go, one copy anywhere."""
        try:
            return self._client.scatter(shared, broadcast=True, hash=False)
        except ValueError:  # "Can not use replicate to delete data": the worker count changed meanwhile
            return self._client.scatter(shared, hash=False)

    def submit(self, key: int, fn: Callable[[Any, Any], Any], token: int, task: Any, paths: Sequence[str]) -> None:
        with warnings.catch_warnings():  # a shard's image list is its task: large by design
            warnings.filterwarnings("ignore", "Sending large graph", UserWarning)
            if _lost(self._shared[token]):  # lost with a dead worker: retries would be cancelled
                self._shared[token] = self._scatter(self._objects[token])
            future = self._client.submit(call, fn, self._shared[token], task, tuple(paths), pure=False)
        self._futures[future] = key
        self._done.add(future)

    def next(self) -> tuple[int, Outcome]:
        future, result = next(self._done)
        key = self._futures.pop(future)
        status = future.status
        future.release()
        if status == "finished" and isinstance(result, Outcome):
            return key, result
        return key, Outcome(error=f"task lost on the cluster ({status}: {result!r:.200})")

    def close(self, abort: bool = False) -> None:
        timeout = _STOP_TIMEOUT if abort else _CLOSE_TIMEOUT
        try:
            if abort and self._futures:
                self._client.cancel(list(self._futures), force=True)
            self._client.close(timeout=timeout)
            if self._cluster is not None:
                self._cluster.close(timeout=timeout)
        except Exception:  # noqa: BLE001 - best effort: a LocalCluster's workers exit with this process
            pass


def _lost(scattered: Any) -> bool:
    """Whether a scattered object (a future, or a dict or list of them: scatter splits those) is gone."""
    if isinstance(scattered, dict):
        scattered = list(scattered.values())
    futures = scattered if isinstance(scattered, list) else [scattered]
    return any(getattr(future, "status", "finished") != "finished" for future in futures)


# --- the one loop ---------------------------------------------------------------------------


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Ignore SIGINT (and SIGTERM) for a moment: while children start, and while cleaning up."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _raise_signalled(signum: int, frame: FrameType | None) -> None:
    raise _Signalled(signum)


@contextmanager
def signals() -> Iterator[None]:
    """Turn SIGTERM into an exception like SIGINT's, so both unwind through the same cleanup."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_signalled)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def signal_number(error: BaseException) -> int | None:
    """SIGINT / SIGTERM for an interrupt exception (KeyboardInterrupt, SIGTERM's), else None."""
    if isinstance(error, KeyboardInterrupt):
        return int(signal.SIGINT)
    if isinstance(error, _Signalled):
        return error.signum
    return None


def remove_temporaries(folders: Iterable[Path]) -> int:
    """Delete the ``.NAME.tmpPID`` files radvqa's writers leave when a worker is ended mid-write."""
    removed = 0
    for folder in folders:
        if not folder.is_dir():
            continue
        for dirpath, _, filenames in os.walk(folder):
            for name in filenames:
                if name.startswith(".") and _TEMPORARY in name:
                    try:
                        os.unlink(os.path.join(dirpath, name))
                        removed += 1
                    except FileNotFoundError:
                        pass
    return removed


@dataclass
class Executor:
    """An open set of workers; :meth:`run` maps jobs over it (ingest reuses one for two steps)."""

    spec: ExecutorSpec = field(default_factory=ExecutorSpec)
    paths: Sequence[Path] = ()  # must be visible to every worker (ROOT, OUT)
    temporaries: Sequence[Path] = ()  # folders whose temporaries an interrupt removes
    rerun: str = ""  # advice in the interrupt line, e.g. "rerun with --resume" (set per step)
    _backend: _Backend | None = field(default=None, init=False, repr=False)
    _tokens: int = field(default=0, init=False, repr=False)

    @property
    def in_process(self) -> bool:
        """True when tasks run in this process (one local worker): nothing to gain by splitting work."""
        return self.spec.kind != "dask" and self.spec.workers <= 1

    @property
    def per_task(self) -> int:
        """How many small units (files) to put in one task: Dask costs milliseconds per task."""
        return CLUSTER_BATCH if self.spec.kind == "dask" else 1

    def __enter__(self) -> Executor:
        self.spec.check()
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        self.close(abort=kind is not None)

    def _open(self) -> _Backend:
        if self._backend is None:
            if self.spec.kind == "dask":
                self._backend = _Dask(self.spec)
            elif self.in_process:
                self._backend = _InProcess()
            else:
                self._backend = _LocalPool(self.spec.workers)
        return self._backend

    def close(self, abort: bool = False) -> None:
        """End the workers (``abort``: without waiting for running tasks)."""
        if self._backend is not None:
            backend, self._backend = self._backend, None
            with _sigint_ignored():
                backend.close(abort)

    def run(self, jobs: Iterable[Job[Any, Any]], bar: ProgressBar | None = None) -> Iterator[tuple[Hashable, Any]]:
        """Yield (task id, result) as tasks finish; jobs are pulled (and submitted) one after another.

        The next job is taken from ``jobs`` once the previous one is queued, so work the caller
        does to build it overlaps with the workers. Results come in completion order.
        """
        bar = bar or NullProgress()
        paths = [str(Path(p).resolve()) for p in self.paths if Path(p).exists()]  # what this process sees
        tasks: list[tuple[Job[Any, Any], int, int]] = []  # key -> (job, index, token)
        waiting: deque[int] = deque()
        running: set[int] = set()
        tries: dict[int, int] = {}
        pending = iter(jobs)
        finished, unit = 0, "tasks done"
        try:
            backend = self._open()
            while True:
                job = next(pending, None)
                if job is not None:
                    self._tokens += 1
                    backend.share(self._tokens, job.shared)
                    waiting.extend(range(len(tasks), len(tasks) + len(job.tasks)))
                    tasks.extend((job, index, self._tokens) for index in range(len(job.tasks)))
                    unit = job.unit
                while waiting and len(running) < backend.capacity:
                    key = waiting.popleft()
                    job, index, token = tasks[key]
                    backend.submit(key, job.fn, token, job.tasks[index][1], paths)
                    running.add(key)
                if job is not None:
                    continue  # take the next job before waiting for results
                if not running:
                    return
                key, outcome = backend.next()
                running.discard(key)
                job, index, _ = tasks[key]
                task_id, task = job.tasks[index]
                if outcome.error is None:
                    finished += 1
                    bar.update(job.weight(task, outcome.value) if job.weight else 1)
                    yield task_id, outcome.value
                elif outcome.fatal:
                    raise outcome.raised or TaskError(outcome.error)
                elif tries.get(key, 1) > self.spec.retries:
                    raise TaskError(f"task {task_id} failed {tries[key]} times; last: {outcome.error}")
                else:
                    tries[key] = tries.get(key, 1) + 1
                    waiting.appendleft(key)
        except (KeyboardInterrupt, _Signalled) as stop:
            with _sigint_ignored():
                self.close(abort=True)
                remove_temporaries(self.temporaries)
            signum = signal_number(stop) or int(signal.SIGINT)
            line = f"interrupted: {finished} of {len(tasks)} {unit}"
            raise Interrupted(line + (f"; {self.rerun}" if self.rerun else ""), signum) from None


def run_tasks(executor: Executor, job: Job[Any, R], bar: ProgressBar | None = None) -> list[R]:
    """Every result of one job, in task order (whatever order the workers finished in)."""
    order = {task_id: i for i, (task_id, _) in enumerate(job.tasks)}
    results: list[Any] = [None] * len(job.tasks)
    for task_id, result in executor.run([job], bar):
        results[order[task_id]] = result
    return results
