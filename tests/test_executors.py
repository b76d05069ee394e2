"""The executor: retries, lost workers, the path check, Dask against local, real signals."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

import executor_tasks as tasks
from dicom_helpers import ct_file, write_labels
from radvqa.cli import app
from radvqa.errors import MissingDependencyError, SourceError
from radvqa.executors import Executor, ExecutorSpec, Job, TaskError, run_tasks
from radvqa.sample import build_sample
from radvqa.taxonomy import Taxonomy
from radvqa.writers import RUN_FILE

runner = CliRunner()
RADVQA = Path(sys.executable).parent / "radvqa"


def dataset_files(out: Path) -> dict[str, bytes]:
    """Every shard's bytes and the manifest's shard list (the rest names OUT itself)."""
    files = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.glob("*/*.jsonl"))}
    files["manifest shards"] = orjson.dumps(orjson.loads((out / "manifest.json").read_bytes())["shards"])
    return files


def cli(*args: str) -> None:
    result = runner.invoke(app, [*args])
    assert result.exit_code == 0, result.output


# --- local backend --------------------------------------------------------------------------


def test_in_process_retries_a_task_that_raised(tmp_path: Path) -> None:
    with Executor() as pool:
        assert run_tasks(pool, Job(tasks.raises_once, [(i, i) for i in range(6)], str(tmp_path))) == [
            i * i for i in range(6)
        ]
    assert (tmp_path / "raised").exists()


def test_retries_are_bounded() -> None:
    job = Job(tasks.always_raises, [(i, i) for i in range(6)], None)
    with Executor(ExecutorSpec(retries=1)) as pool, pytest.raises(TaskError, match="task 3 failed 2 times; last: OSError: disk hiccup"):
        run_tasks(pool, job)


def test_local_pool_retries_replaces_a_killed_worker_and_checks_paths(tmp_path: Path) -> None:
    """One pool of 2 spawned workers: a path they cannot see, a task raising once, a worker dying mid-task."""
    shared = tmp_path / "shared"
    shared.mkdir()

    def jobs() -> Iterator[Job[int, int]]:
        shutil.rmtree(shared)  # seen by this process when the run starts, gone when workers look
        yield Job(tasks.square, [(0, 0)], 0)

    with Executor(ExecutorSpec(workers=2), paths=(shared,)) as pool:
        with pytest.raises(TaskError, match=f"cannot see {shared}: workers need ROOT and OUT at the same paths"):
            list(pool.run(jobs()))
        assert run_tasks(pool, Job(tasks.raises_once, [(i, i) for i in range(6)], str(tmp_path))) == [
            i * i for i in range(6)
        ]
        pids = set(run_tasks(pool, Job(tasks.pid, [(i, i) for i in range(4)], None)))
        assert run_tasks(pool, Job(tasks.dies_once, [(i, i) for i in range(6)], str(tmp_path))) == [
            i * i for i in range(6)
        ]
        assert pids != set(run_tasks(pool, Job(tasks.pid, [(i, i) for i in range(8)], None)))  # one was replaced
        with pytest.raises(SourceError, match="shard 1: cannot read"):  # the input's fault: its own class, no retry
            run_tasks(pool, Job(tasks.refuses, [(1, 1)], None))
    assert (tmp_path / "raised").exists() and (tmp_path / "died").exists()


def test_dask_missing_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)
    with Executor(ExecutorSpec("dask")) as pool, pytest.raises(MissingDependencyError) as error:
        run_tasks(pool, Job(tasks.square, [(0, 0)], 0))
    assert error.value.hint == "pip install 'radvqa[dask]'"


def test_bad_executor_options_are_one_line() -> None:
    result = runner.invoke(app, ["validate", ".", "--executor", "spark"])
    assert result.exit_code == 1 and "ERROR: --executor: 'spark' is not one of local, dask" in result.output


# --- the Dask backend on one shared 2-worker LocalCluster -----------------------------------


@pytest.fixture()
def reference(tmp_path_factory: pytest.TempPathFactory, sample_copy: Path) -> Path:
    out = tmp_path_factory.mktemp("reference") / "out"
    cli("generate", str(sample_copy), "-o", str(out), "--shard-size", "3000", "--quiet")
    return out


@pytest.mark.parametrize("fault", ["raise", "exit"])
def test_dask_generate_matches_local_despite_a_fault(
    tmp_path: Path, sample_copy: Path, reference: Path, dask_cluster: str, fault: str
) -> None:
    """A task that raises on its first try is retried; a worker process that dies is survived."""
    from distributed import Client

    with Client(dask_cluster, set_as_default=False) as client:
        client.run(tasks.install_fault, fault, str(tmp_path))
        try:
            out = tmp_path / "out"
            cli("generate", str(sample_copy), "-o", str(out), "--shard-size", "3000", "--quiet",
                "--executor", "dask", "--scheduler", dask_cluster)
        finally:
            client.run(tasks.remove_fault)
    assert (tmp_path / "fault").exists()  # the fault fired
    assert dataset_files(out) == dataset_files(reference)
    assert not list(out.rglob(".*tmp*")) and not (out / ".radvqa-run.json").exists()


def test_dask_generate_survives_a_refused_broadcast(
    tmp_path: Path, sample_copy: Path, reference: Path, dask_cluster: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While workers come and go the scheduler can refuse to replicate; one copy of the shared data does."""
    from distributed import Client

    real, refused = Client.scatter, []

    def scatter(self, data, *args, broadcast=False, **kwargs):
        if broadcast:
            refused.append(1)
            raise ValueError("Can not use replicate to delete data")  # distributed's own words
        return real(self, data, *args, **kwargs)

    monkeypatch.setattr(Client, "scatter", scatter)
    out = tmp_path / "out"
    cli("generate", str(sample_copy), "-o", str(out), "--shard-size", "3000", "--quiet",
        "--executor", "dask", "--scheduler", dask_cluster)
    assert refused and dataset_files(out) == dataset_files(reference)


def test_dask_validate_report_matches_local(tmp_path: Path, sample_dataset: Path, dask_cluster: str) -> None:
    reports = {}
    dask = ["--executor", "dask", "--scheduler", dask_cluster, "--workers", "2"]
    for name, extra in {"local": [], "dask": dask}.items():
        result = runner.invoke(app, ["validate", str(sample_dataset), "--json", str(tmp_path / name), *extra])
        assert result.exit_code == 0, result.output
        report = orjson.loads((tmp_path / name).read_bytes())
        report.pop("seconds")
        reports[name] = report
    assert reports["dask"] == reports["local"] and reports["local"]["records"] > 10_000


def test_dask_ingest_matches_local(tmp_path: Path, dask_cluster: str) -> None:
    import numpy as np

    for s in range(3):
        for k in range(5):
            hu = np.full((32, 32), -1000.0)
            hu[8:24, 8:24] = 100.0 * k + 10 * s
            ct_file(tmp_path / "in" / "series" / str(s) / f"{k}.dcm", hu, series=f"1.2.3.5{s}", z=10.0 * k,
                    instance=k + 1, patient=f"P{s}")
    labels = write_labels(tmp_path / "labels.csv", "path,modality,anatomy,pathology", ["series,CT,abd,normal"])
    copies = {}
    for name, extra in {"local": [], "dask": ["--executor", "dask", "--scheduler", dask_cluster, "--workers", "2"]}.items():
        root = tmp_path / name
        cli("ingest-dicom", str(tmp_path / "in"), "-o", str(root), "--labels", str(labels), "--salt", "s3cret-salt",
            "--slices", "all", "--size", "16", "--quiet", *extra)
        copies[name] = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
                        if p.is_file() and "report" not in p.name and "state" not in p.name}
    assert copies["dask"] == copies["local"] and sum(k.endswith(".png") for k in copies["local"]) == 15


# --- real signals on a real `radvqa generate --workers 2` -----------------------------------


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], list(children.get(pid, []))
    while todo:
        p = todo.pop()
        found.append(p)
        todo += children.get(p, [])
    return found


def alive(pids: list[int]) -> list[int]:
    """The processes of ``pids`` that still run (zombies waiting for a reaper do not count)."""
    running = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            running.append(pid)
    return running


SHARD = "30"  # records per shard: thousands of shards (about 2 s of work), so a signal sent after the first lands mid-run


# Start the command with SIGINT at its default, as a terminal's foreground job has it. A pytest
# started in the background by a shell without job control (`cmd &`) ignores SIGINT, and a child
# inherits the ignore across exec; radvqa rightly keeps an inherited ignore (as nohup relies on).
FOREGROUND = [sys.executable, "-c", "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
              "os.execv(sys.argv[1], sys.argv[1:])"]


def start_generate(root: Path, out: Path, *extra: str) -> tuple[subprocess.Popen[str], list[int]]:
    """Start a real 2-worker generate; return once it wrote its first shard, with its worker pids."""
    command = [*FOREGROUND, str(RADVQA), "generate", str(root), "-o", str(out), "--workers", "2", "--shard-size", SHARD, *extra]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    while not list(out.glob("*/*.jsonl")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.02)
    workers = descendants(proc.pid)
    assert len(workers) >= 2
    return proc, workers


def _signal_masks(pid: int) -> list[str]:
    """The SigPnd/ShdPnd/SigBlk/SigIgn/SigCgt lines of a process (/proc/PID/status)."""
    try:
        return [line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line[:3] in ("Sig", "Shd")]
    except OSError:
        return []


def gone(pids: list[int], seconds: float = 5.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive(pids)


@pytest.fixture(scope="module")
def signal_copy(tmp_path_factory: pytest.TempPathFactory, taxonomy: Taxonomy) -> Path:
    """The sample with 60 images per class: its shards take long enough to be held mid-run."""
    root = tmp_path_factory.mktemp("signal-copy")
    build_sample(root, taxonomy, images_per_class=60)
    return root


@pytest.fixture(scope="module")
def reference_small(tmp_path_factory: pytest.TempPathFactory, signal_copy: Path) -> Path:
    out = tmp_path_factory.mktemp("reference-small") / "out"
    cli("generate", str(signal_copy), "-o", str(out), "--shard-size", SHARD, "--quiet")
    return out


def shards_left(out: Path) -> int:
    """Planned shards (the run file) not yet on disk: above 0 while a run is really mid-way."""
    planned = orjson.loads((out / RUN_FILE).read_bytes())["files"]
    return sum(1 for name in planned if name.endswith(".jsonl") and not (out / name).exists())


@pytest.mark.parametrize(
    "signum, group, twice",
    [(signal.SIGINT, True, True), (signal.SIGTERM, False, False)],
    ids=["ctrl-c-twice-to-the-group", "sigterm"],
)
def test_a_signal_stops_generate_cleanly_and_resume_finishes_it(
    tmp_path: Path, signal_copy: Path, reference_small: Path, signum: int, group: bool, twice: bool
) -> None:
    out = tmp_path / "out"
    proc, workers = start_generate(signal_copy, out)
    for pid in workers:  # hold the run mid-way: on a busy machine it could otherwise finish first
        os.kill(pid, signal.SIGSTOP)
    # Really mid-way: a signal after the last shard would meet the workers' shutdown, when the
    # parent ignores signals on purpose, and the run would rightly finish.
    assert proc.poll() is None and shards_left(out) > 0, "the run wrote every shard before its workers were held"
    before = (signal.getsignal(signal.SIGINT), _signal_masks(proc.pid))
    send = (lambda: os.killpg(proc.pid, signum)) if group else (lambda: proc.send_signal(signum))
    started = time.monotonic()
    send()
    if twice:
        time.sleep(0.2)
        send()
    masks = _signal_masks(proc.pid)  # for the failure message: pending, blocked or ignored once sent
    for pid in workers:
        os.kill(pid, signal.SIGCONT)
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == 128 + signum and time.monotonic() - started < 10, (before, masks, err[-300:])
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("interrupted: ") and "shards written; rerun with --resume" in lines[0]
    assert not gone(workers)
    assert not (out / "manifest.json").exists() and not (out / "README.md").exists()
    assert not list(out.rglob(".*tmp*"))
    if signum == signal.SIGTERM:  # --resume checks the settings
        result = runner.invoke(app, ["generate", str(signal_copy), "-o", str(out), "--resume", "--seed", "7"])
        assert result.exit_code == 1
        assert "the interrupted run used other settings (config); pass --overwrite" in result.output
        result = runner.invoke(app, ["generate", str(signal_copy), "-o", str(tmp_path / "new"), "--resume"])
        assert result.exit_code == 1 and "holds no interrupted run; nothing to resume" in result.output
    # --resume keeps the finished shards and ends with the same dataset as an uninterrupted run
    kept = {p: p.stat().st_mtime_ns for p in out.glob("*/*.jsonl")}
    cli("generate", str(signal_copy), "-o", str(out), "--shard-size", SHARD, "--quiet", "--resume")
    assert dataset_files(out) == dataset_files(reference_small)
    assert kept and all(p.stat().st_mtime_ns == t for p, t in kept.items())
    assert not (out / RUN_FILE).exists()


def test_kill_9_of_generate_leaves_no_worker_behind(tmp_path: Path, signal_copy: Path) -> None:
    proc, workers = start_generate(signal_copy, tmp_path / "out")
    proc.kill()
    proc.communicate(timeout=15)
    assert not gone(workers)
