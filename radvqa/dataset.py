"""End-to-end ``generate``: read a copy, plan each split, write shards, manifest and card."""

from __future__ import annotations

import multiprocessing
import platform
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

from . import __version__
from .card import STATS_FOLDER, write_card
from .stats import DatasetStats, compute_stats
from .config import Config, benchmark_settings
from .generate import INSTRUCT_SLOTS, Plan, Slice, build_plan, render
from .progress import NullProgress, ProgressBar
from .sample import build_sample, sample_files
from .source import SourceReport, locate, read_source, require_images
from .split import BENCHMARK, TEST_POOL, balanced_letters, check_benchmark, read_splits, select_benchmark
from .taxonomy import Taxonomy
from .templates import TemplateSet
from .errors import SplitError
from .ownership import check_output, claim_output, read_record, safe_relative
from .writers import ShardInfo, shard_count, shard_name, write_json, write_shard

CONFIGS = {"alignment": 1, "instruct": len(INSTRUCT_SLOTS), "benchmark": len(INSTRUCT_SLOTS)}  # records per image
TRAINING_SPLITS = ("train", "val")
SAMPLE_FOLDER = "radimagenet-sample"
PENDING = ".radvqa-pending.json"  # what a running generate will write (removed once the manifest is)
CARD, MANIFEST = "README.md", "manifest.json"
_CHUNK = 4096  # lines per write


@dataclass(frozen=True)
class ShardTask:
    """One shard to write: which records of which split, and where."""

    config: str
    split: str
    index: int
    total: int
    skip: int
    count: int
    path: Path
    out: Path
    images: Slice


@dataclass
class GenerateResult:
    """What a generate run produced."""

    out: Path
    source: SourceReport
    records: dict[str, dict[str, int]]
    shards: list[ShardInfo] = field(default_factory=list)
    benchmark: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def warnings(self) -> list[str]:
        """Warnings of the source reader and the benchmark selection."""
        return self.source.warnings + list(self.benchmark.get("warnings", []))

    def lines(self) -> list[str]:
        """Human-readable summary."""
        out = self.source.lines()
        if self.benchmark.get("per_region"):
            out.append(
                f"benchmark: {self.benchmark['images']} images, {self.benchmark['strata_covered']} of "
                f"{self.benchmark['strata_in_pool']} strata, " + ", ".join(
                    f"{k} {v}" for k, v in self.benchmark["per_region"].items()
                )
            )
        for config, splits in self.records.items():
            out.append(f"{config}: " + ", ".join(f"{s} {n}" for s, n in splits.items()) + " records")
        total = sum(n for splits in self.records.values() for n in splits.values())
        rate = total / self.seconds if self.seconds else 0.0
        out.append(f"wrote {len(self.shards)} shards to {self.out} in {self.seconds:.1f} s ({rate:,.0f} records/s)")
        return out


def image_slice(table: pd.DataFrame) -> Slice:
    """The render input for the rows of an image table."""
    return Slice(
        ids=table["image_id"].tolist(),
        images=table["image"].tolist(),
        classes=table["class_index"].to_numpy(dtype=np.int64),
        keys=table["key"].to_numpy(dtype=np.uint64),
    )


def class_counts(table: pd.DataFrame, taxonomy: Taxonomy) -> np.ndarray:
    """Images per taxonomy class in ``table``."""
    return np.bincount(table["class_index"].to_numpy(), minlength=len(taxonomy.classes)).astype(np.float64)


def shard_tasks(config: str, split: str, images: Slice, shard_size: int, out: Path) -> list[ShardTask]:
    """Cut one config/split into shards of ``shard_size`` records (boundaries may split an image)."""
    per_image = CONFIGS[config]
    records = len(images) * per_image
    total = shard_count(records, shard_size)
    tasks = []
    for index in range(total):
        first, last = index * shard_size, min((index + 1) * shard_size, records)
        start, stop = first // per_image, -(-last // per_image)
        tasks.append(
            ShardTask(
                config=config,
                split=split,
                index=index,
                total=total,
                skip=first - start * per_image,
                count=last - first,
                path=out / config / shard_name(split, index, total),
                out=out,
                images=images.part(start, stop),
            )
        )
    return tasks


def _chunks(lines: Iterator[bytes]) -> Iterator[tuple[bytes, int]]:
    while True:
        batch = list(islice(lines, _CHUNK))
        if not batch:
            return
        yield b"".join(batch), len(batch)


def run_task(task: ShardTask, plan: Plan) -> ShardInfo:
    """Render and write one shard."""
    lines = islice(render(plan, task.images, task.config), task.skip, task.skip + task.count)
    return write_shard(task.path, _chunks(lines), task.out)


_WORKER_PLANS: dict[str, Plan] = {}


def _init_worker(plans: dict[str, Plan]) -> None:
    _WORKER_PLANS.update(plans)


def _run_in_worker(task: ShardTask) -> ShardInfo:
    return run_task(task, _WORKER_PLANS[task.split])


def run_tasks(
    tasks: list[ShardTask],
    plans: dict[str, Plan],
    workers: int,
    bar: ProgressBar,
    later: Callable[[], tuple[list[ShardTask], Plan]] | None = None,
) -> list[ShardInfo]:
    """Write every shard, in a process pool when ``workers`` > 1; results in task order.

    ``later`` runs in this process while the pool works and returns more tasks with their
    plan (the benchmark: its selection reads file sizes, which overlaps with rendering).
    """
    if workers <= 1:
        results = [run_task(task, plans[task.split]) for task in _counted(tasks, bar)]
        if later is not None:
            late_tasks, plan = later()
            results += [run_task(task, plan) for task in _counted(late_tasks, bar)]
        return results
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(plans,)) as pool:
        futures = [pool.submit(_run_in_worker, task) for task in tasks]
        if later is not None:
            late_tasks, plan = later()
            futures += [pool.submit(run_task, task, plan) for task in late_tasks]
            tasks = tasks + late_tasks
        for future in as_completed(futures):
            bar.update(tasks[futures.index(future)].count)
        return [future.result() for future in futures]


def _counted(tasks: list[ShardTask], bar: ProgressBar) -> Iterator[ShardTask]:
    for task in tasks:
        yield task
        bar.update(task.count)


def environment() -> dict[str, str]:
    """Versions that produced a dataset."""
    import orjson

    return {
        "radvqa": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "orjson": orjson.__version__,
    }


def choose_benchmark(
    table: pd.DataFrame, taxonomy: Taxonomy, config: Config, root: Path, splits_file: Path | None
) -> tuple[pd.DataFrame, np.ndarray, dict[str, Any]]:
    """Apply a saved split file, or run the default stratified split: (table, benchmark rows, report).

    The default split needs a ``size`` column (file sizes, for the duplicate check).
    """
    if splits_file is None:
        rows, report = select_benchmark(table, taxonomy, benchmark_settings(config), locate(root).root)
        return table, rows, report.to_dict()
    saved, report_dict = read_splits(splits_file)
    _check_coverage(table, saved, splits_file)
    splits = table["image_id"].map(saved)
    unknown = splits.isna()
    table = table[~unknown].copy()
    table["split"] = splits[~unknown].to_numpy()
    rows = np.flatnonzero(table["split"].to_numpy() == BENCHMARK)
    summary: dict[str, Any] = dict(report_dict or {}, splits_file=str(splits_file), images=len(rows))
    warnings = list(summary.get("warnings", []))
    if unknown.any():
        warnings.append(f"{int(unknown.sum())} images of the copy are not in {splits_file}; skipped")
    missing = len(set(saved) - set(table["image_id"]))
    if missing:
        warnings.append(f"{missing} images of {splits_file} are not in the copy")
    summary["warnings"] = warnings
    return table.reset_index(drop=True), rows, summary


SPLITS_TOLERANCE = 0.01  # share of the copy a split file may miss (or name beyond it) before it is refused


def _check_coverage(table: pd.DataFrame, saved: dict[str, str], splits_file: Path) -> None:
    """Refuse a split file made for another copy: it must cover the copy, up to a small tolerance."""
    ids = set(table["image_id"].tolist())
    uncovered = len(ids) - len(ids & saved.keys())
    extra = len(saved.keys() - ids)
    allowed = int(SPLITS_TOLERANCE * len(ids))
    if uncovered > allowed or extra > allowed:
        raise SplitError(
            f"{splits_file}: {uncovered} of the copy's {len(ids)} usable images are not in it and it names {extra} "
            f"images the copy lacks (at most {allowed}, {SPLITS_TOLERANCE:.0%}, allowed); was it made for another "
            "copy? run `radvqa split` on this one"
        )


def generate_dataset(
    root: Path,
    out: Path,
    config: Config,
    taxonomy: Taxonomy,
    templates: TemplateSet,
    overwrite: bool = False,
    progress: Callable[[int, str], ProgressBar] | None = None,
    splits_file: Path | None = None,
) -> GenerateResult:
    """Generate alignment and instruct shards for every train/val image and the benchmark."""
    started = time.perf_counter()
    out = Path(out)
    # Reading the --sample copy inside OUT: a rerun keeps it (generate_sample_dataset replaced it).
    owned = partial(dataset_files, sample=Path(root).resolve() != (out / SAMPLE_FOLDER).resolve())
    check_output(out, overwrite, owned)
    if splits_file is not None and not Path(splits_file).is_file():
        raise SplitError(f"--splits {splits_file}: not found (write it with `radvqa split`)")
    table, report = read_source(root, taxonomy, config.split_ratios, with_sizes=True)
    benchmark: dict[str, Any] = {}
    require_images(table, report)
    if splits_file is not None:
        table, saved_rows, benchmark = choose_benchmark(table, taxonomy, config, Path(root), splits_file)
        check_benchmark(table, saved_rows, taxonomy, config.benchmark_images)
        report.images = len(table)  # the images used: those the split file assigns
        report.per_split = {s: int((table["split"] == s).sum()) for s in (*TRAINING_SPLITS, BENCHMARK, TEST_POOL)}
    elif not (table["split"] == "test").any():  # an empty test pool: refused before any work
        check_benchmark(table, np.zeros(0, dtype=np.int64), taxonomy, config.benchmark_images)
    claim_output(out, overwrite, owned)
    plans: dict[str, Plan] = {}
    tasks: list[ShardTask] = []
    records: dict[str, dict[str, int]] = {c: {} for c in CONFIGS}
    for split in TRAINING_SPLITS:
        rows = table[table["split"] == split]
        plans[split] = build_plan(taxonomy, templates, config, split, class_counts(rows, taxonomy))
        images = image_slice(rows)
        for name in ("alignment", "instruct"):
            (out / name).mkdir(exist_ok=True)
            records[name][split] = len(images) * CONFIGS[name]
            tasks.extend(shard_tasks(name, split, images, config.shard_size, out))

    def benchmark_tasks() -> tuple[list[ShardTask], Plan]:
        """Select the benchmark (unless a split file did) and plan its one shard."""
        if splits_file is None:
            _, chosen, selection = choose_benchmark(table, taxonomy, config, Path(root), None)
            check_benchmark(table, chosen, taxonomy, config.benchmark_images)
            benchmark.update(selection)
        else:
            chosen = saved_rows
        bench = table.iloc[chosen]
        plan = build_plan(taxonomy, templates, config, "test", class_counts(bench, taxonomy), "benchmark")
        images = replace(
            image_slice(bench),
            anatomy_letter=balanced_letters(len(bench), config.seed, 1),
            pathology_letter=balanced_letters(len(bench), config.seed, 2),
        )
        (out / "benchmark").mkdir(exist_ok=True)
        records["benchmark"]["test"] = len(images) * CONFIGS["benchmark"]
        return shard_tasks("benchmark", "test", images, max(1, records["benchmark"]["test"]), out), plan

    planned = [t.path.relative_to(out).as_posix() for t in tasks]
    planned.append(f"benchmark/{shard_name('test', 0, 1)}")
    write_json(out / PENDING, {"format": "radvqa-pending", "files": planned + [CARD, MANIFEST]})
    # The bar counts train and val records; the benchmark adds about 0.1%.
    bar = progress(sum(t.count for t in tasks), "generate") if progress else NullProgress()
    with bar:
        shards = run_tasks(tasks, plans, config.workers, bar, later=benchmark_tasks)
    result = GenerateResult(out=out, source=report, records=records, shards=shards, benchmark=benchmark)
    manifest = build_manifest(root, config, taxonomy, templates, result)
    write_card(out, manifest, card_stats(out, manifest, table, taxonomy))
    write_json(out / MANIFEST, manifest)
    (out / PENDING).unlink()
    result.seconds = time.perf_counter() - started
    return result


def card_stats(out: Path, manifest: dict[str, Any], table: pd.DataFrame, taxonomy: Taxonomy) -> DatasetStats:
    """Card statistics without re-reading the alignment shards: image counts come from the table."""
    stats = compute_stats(out, manifest, configs=("benchmark",))
    for split in TRAINING_SPLITS:
        counts = class_counts(table[table["split"] == split], taxonomy)
        for cls, n in zip(taxonomy.classes, counts):
            if n:
                key = ("alignment", split, cls.modality_name, cls.region_name, cls.pathology_name, cls.is_abnormal)
                stats.images[key] += int(n)
        stats.records[("alignment", split)] += int(counts.sum())
        stats.slots[("alignment", split, "caption")] += int(counts.sum())
    return stats


def generate_sample_dataset(
    out: Path,
    config: Config,
    taxonomy: Taxonomy,
    templates: TemplateSet,
    overwrite: bool = False,
    progress: Callable[[int, str], ProgressBar] | None = None,
) -> GenerateResult:
    """Build the synthetic sample copy inside ``out`` and generate a dataset from it."""
    claim_output(Path(out), overwrite, dataset_files)
    root = Path(out) / SAMPLE_FOLDER
    build_sample(root, taxonomy)
    return generate_dataset(root, out, config, taxonomy, templates, overwrite=True, progress=progress)


def dataset_files(out: Path, sample: bool = True) -> list[str] | None:
    """What earlier generate runs wrote in ``out`` (None when no radvqa record is there).

    The manifest's shards, the manifest, the card and radvqa's stats report; the planned files
    of a run that did not finish; the files of a ``--sample`` copy.
    """
    from .stats import REPORT_FILES

    files: list[str] = []
    found = False
    try:
        manifest = orjson.loads((out / MANIFEST).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        manifest = None
    if isinstance(manifest, dict) and manifest.get("format") == "radvqa-dataset":
        found = True
        files += [str(s.get("path", "")) for s in manifest.get("shards", []) if isinstance(s, dict)]
    pending = read_record(out / PENDING)
    if pending is not None:
        found = True
        files += pending + [PENDING]
    copy = sample_files(out / SAMPLE_FOLDER)
    if copy is not None:
        found = True
        files += [f"{SAMPLE_FOLDER}/{name}" for name in copy] if sample else []
    if not found:
        return None
    files += [CARD, MANIFEST] + [f"{STATS_FOLDER}/{name}" for name in REPORT_FILES]
    return safe_relative(dict.fromkeys(files))


def build_manifest(
    root: Path, config: Config, taxonomy: Taxonomy, templates: TemplateSet, result: GenerateResult
) -> dict[str, Any]:
    """Counts, config, seed, versions and sha256 per shard."""
    slots = {
        split: {"caption": result.records["alignment"][split]}
        | {slot: result.records["instruct"][split] // len(INSTRUCT_SLOTS) for slot in INSTRUCT_SLOTS}
        for split in TRAINING_SPLITS
    } | {"test": {slot: result.records["benchmark"]["test"] // len(INSTRUCT_SLOTS) for slot in INSTRUCT_SLOTS}}
    return {
        "format": "radvqa-dataset",
        "format_version": 1,
        "seed": config.seed,
        "config": config.to_dict(),
        "environment": environment(),
        "source": {"root": str(Path(root).resolve())} | result.source.to_dict(),
        "taxonomy": {"source": taxonomy.source, "sha256": taxonomy.sha256, "data": taxonomy.data},
        "templates": {"sources": templates.sources, "sha256": templates.sha256},
        "records": result.records,
        "slots": slots,
        "benchmark": result.benchmark,
        "shards": [s.to_dict() for s in result.shards],
    }
