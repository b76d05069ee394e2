"""End-to-end ``generate``: read a copy, plan each split, write shards, manifest and card."""

from __future__ import annotations

import hashlib
import platform
import time
from collections import Counter
from collections.abc import Callable, Iterator
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
from .errors import OutputError, SplitError
from .executors import Executor, ExecutorSpec, Job, remove_temporaries
from .generate import INSTRUCT_SLOTS, Plan, Slice, build_plan, render
from .progress import NullProgress, ProgressBar
from .sample import build_sample, sample_files
from .source import SourceReport, locate, read_source, require_images
from .split import (
    BENCHMARK,
    TEST_POOL,
    balanced_letters,
    benchmark_slots,
    check_benchmark,
    read_splits,
    select_benchmark,
)
from .taxonomy import Taxonomy
from .templates import TemplateSet
from .ownership import check_output, claim_output, read_record, safe_relative
from .writers import RUN_FILE, ShardInfo, read_shard_info, shard_count, shard_name, write_json, write_shard

CONFIGS = {"alignment": 1, "instruct": len(INSTRUCT_SLOTS), "benchmark": len(INSTRUCT_SLOTS)}  # records per image
TRAINING_SPLITS = ("train", "val")
SAMPLE_FOLDER = "radimagenet-sample"
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
    exchange: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
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
        out.extend(exchange_lines(self.exchange))
        total = sum(n for splits in self.records.values() for n in splits.values())
        rate = total / self.seconds if self.seconds else 0.0
        out.append(f"wrote {len(self.shards)} shards to {self.out} in {self.seconds:.1f} s ({rate:,.0f} records/s)")
        return out


def exchange_lines(exchange: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """Where option sets cannot be exactly exchangeable: the exact text-only gain over chance, in points."""
    out = []
    for split, kinds in exchange.items():
        parts = [
            f"{kind} {region} +{100 * leak:.1f}"
            for kind, regions in kinds.items()
            for region, leak in regions.items()
            if leak > 5e-4
        ]
        if parts:
            out.append(f"text-only residual on {split} (a name or conflict group above its share limit): " + ", ".join(parts))
        else:
            out.append(f"{split}: every option set exactly exchangeable")
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
    per_image = CONFIGS[config] if images.slot_of is None else 1
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


def _write(plans: dict[str, Plan], task: ShardTask) -> ShardInfo:
    """A worker's task: one shard, with its split's plan."""
    return run_task(task, plans[task.split])


def shard_job(tasks: list[ShardTask], plans: dict[str, Plan]) -> Job[ShardTask, ShardInfo]:
    """Shards as executor tasks, keyed by their path; progress counts records."""
    return Job(_write, [(t.path, t) for t in tasks], plans, weight=lambda t, _: t.count, unit="shards written")


def run_tasks(
    tasks: list[ShardTask],
    plans: dict[str, Plan],
    executor: Executor,
    bar: ProgressBar,
    later: Callable[[], tuple[list[ShardTask], Plan]] | None = None,
    done: dict[Path, ShardInfo] | None = None,
) -> list[ShardInfo]:
    """Write every shard not in ``done`` (a resumed run's finished shards); results in task order.

    ``later`` runs in this process once the first shards are submitted and returns more tasks
    with their plan (the benchmark: its selection reads file sizes, which overlaps with rendering).
    """
    done = dict(done or {})
    order = list(tasks)

    def jobs() -> Iterator[Job[ShardTask, ShardInfo]]:
        yield shard_job([t for t in tasks if t.path not in done], plans)
        if later is not None:
            late, plan = later()
            order.extend(late)
            yield shard_job([t for t in late if t.path not in done], {late[0].split: plan} if late else {})

    for path, info in executor.run(jobs(), bar):
        assert isinstance(path, Path)
        done[path] = info
    return [done[task.path] for task in order]


def run_settings(
    root: Path, config: Config, taxonomy: Taxonomy, templates: TemplateSet, table: pd.DataFrame, splits: Path | None
) -> dict[str, Any]:
    """What makes a run's shards what they are (not the worker count): --resume requires a match."""
    images = hashlib.sha256(table["key"].to_numpy(dtype=np.uint64).tobytes())
    images.update(table["split"].astype(str).str.cat(sep="\n").encode())
    return {
        "format": "radvqa-run",
        "radvqa": __version__,
        "root": str(Path(root).resolve()),
        "config": {k: v for k, v in config.to_dict().items() if k not in ("workers", "source")},
        "taxonomy_sha256": taxonomy.sha256,
        "templates_sha256": templates.sha256,
        "splits_sha256": hashlib.sha256(Path(splits).read_bytes()).hexdigest() if splits else None,
        "images_sha256": images.hexdigest(),
    }


def check_resumable(out: Path, settings: dict[str, Any] | None) -> None:
    """Refuse --resume unless ``out`` holds an unfinished run made with exactly these settings.

    ``settings`` None checks only that there is an unfinished run (before reading the copy).
    """
    import orjson

    path = out / RUN_FILE
    if not path.is_file():
        what = "a finished dataset (manifest.json)" if (out / "manifest.json").is_file() else "no interrupted run"
        raise OutputError(f"{out}: holds {what}; nothing to resume")
    try:
        previous = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as error:
        raise OutputError(f"{path}: unreadable ({error}); pass --overwrite to start again") from None
    if settings is None:
        return
    changed = sorted(k for k in settings if not isinstance(previous, dict) or previous.get(k) != settings[k])
    if changed:
        raise OutputError(
            f"{out}: the interrupted run used other settings ({', '.join(changed)}); pass --overwrite to start again"
        )


def finished_shards(out: Path) -> dict[Path, ShardInfo]:
    """Shards an interrupted run finished (complete by construction: written under a temporary name)."""
    return {path: read_shard_info(path, out) for name in CONFIGS for path in sorted((out / name).glob("*.jsonl"))}


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
    slots = summary.pop("slots", None)
    if slots is not None:  # per-slot layout: rows set by set, as select_benchmark orders them
        ids = table["image_id"].to_numpy()
        rows = np.array(sorted(rows, key=lambda r: (INSTRUCT_SLOTS.index(slots[ids[r]]), ids[r])), dtype=np.int64)
        sizes = Counter(slots.values())
        if len(set(sizes.values())) != 1 or len(sizes) != len(INSTRUCT_SLOTS):
            raise SplitError(f"{splits_file}: the per-slot benchmark needs the same number of images for each of the nine slots")
        summary.update(layout="per-slot", set_size=len(rows) // len(INSTRUCT_SLOTS))
    else:
        summary["layout"] = "per-image"
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


def benchmark_draws(images: Slice, seed: int, slots: np.ndarray | None) -> Slice:
    """The benchmark slice with balanced correct letters (per slot set in the per-slot layout) and its slots."""
    count = len(images)
    if slots is None:
        return replace(
            images, anatomy_letter=balanced_letters(count, seed, 1), pathology_letter=balanced_letters(count, seed, 2)
        )
    anatomy, pathology = np.zeros(count, dtype=np.int64), np.zeros(count, dtype=np.int64)
    for letters, slot, purpose in ((anatomy, "anatomy_mc", 1), (pathology, "pathology_mc", 2)):
        mine = np.flatnonzero(slots == INSTRUCT_SLOTS.index(slot))
        letters[mine] = balanced_letters(len(mine), seed, purpose)
    return replace(images, anatomy_letter=anatomy, pathology_letter=pathology, slot_of=slots)


def generate_dataset(
    root: Path,
    out: Path,
    config: Config,
    taxonomy: Taxonomy,
    templates: TemplateSet,
    overwrite: bool = False,
    progress: Callable[[int, str], ProgressBar] | None = None,
    splits_file: Path | None = None,
    executor: ExecutorSpec | None = None,
    resume: bool = False,
) -> GenerateResult:
    """Generate alignment and instruct shards for every train/val image and the benchmark.

    ``executor`` says where shards are written (``config.workers`` workers); ``resume`` keeps
    the finished shards of an interrupted run into ``out`` made with the same settings.
    """
    started = time.perf_counter()
    out = Path(out)
    spec = replace(executor or ExecutorSpec(), workers=config.workers)
    spec.check()
    if resume and overwrite:
        raise OutputError("--resume and --overwrite: give one (continue the earlier run, or replace it)")
    # Reading the --sample copy inside OUT: a rerun keeps it (generate_sample_dataset replaced it).
    owned = partial(dataset_files, sample=Path(root).resolve() != (out / SAMPLE_FOLDER).resolve())
    if resume:
        check_resumable(out, None)
    else:
        check_output(out, overwrite, owned)
    if splits_file is not None and not Path(splits_file).is_file():
        raise SplitError(f"--splits {splits_file}: not found (write it with `radvqa split`)")
    folders = [out / name for name in CONFIGS]
    # One set of workers checks the copy's files, then writes the shards.
    with Executor(spec, paths=(Path(root), out), temporaries=folders) as pool:
        table, report = read_source(root, taxonomy, config.split_ratios, with_sizes=True, executor=pool)
        benchmark: dict[str, Any] = {}
        require_images(table, report)
        if splits_file is not None:
            table, saved_rows, benchmark = choose_benchmark(table, taxonomy, config, Path(root), splits_file)
            check_benchmark(table, saved_rows, taxonomy, config.benchmark_images)
            report.images = len(table)  # the images used: those the split file assigns
            report.per_split = {s: int((table["split"] == s).sum()) for s in (*TRAINING_SPLITS, BENCHMARK, TEST_POOL)}
        elif not (table["split"] == "test").any():  # an empty test pool: refused before any work
            check_benchmark(table, np.zeros(0, dtype=np.int64), taxonomy, config.benchmark_images)
        settings = run_settings(root, config, taxonomy, templates, table, splits_file)
        if resume:
            check_resumable(out, settings)
        else:
            claim_output(out, overwrite, owned)
        plans: dict[str, Plan] = {}
        tasks: list[ShardTask] = []
        records: dict[str, dict[str, int]] = {c: {} for c in CONFIGS}
        exchange: dict[str, dict[str, dict[str, float]]] = {}
        for split in TRAINING_SPLITS:
            rows = table[table["split"] == split]
            plans[split] = build_plan(taxonomy, templates, config, split, class_counts(rows, taxonomy))
            exchange[split] = plans[split].exchange
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
            # Per-slot sets hold the same classes in the same numbers, so one fit is exact for each.
            plan = build_plan(taxonomy, templates, config, "test", class_counts(bench, taxonomy), "benchmark")
            images = benchmark_draws(image_slice(bench), config.seed, benchmark_slots(chosen, benchmark))
            exchange["benchmark"] = plan.exchange
            (out / "benchmark").mkdir(exist_ok=True)
            records["benchmark"]["test"] = len(images) * (CONFIGS["benchmark"] if images.slot_of is None else 1)
            return shard_tasks("benchmark", "test", images, max(1, records["benchmark"]["test"]), out), plan

        planned = [t.path.relative_to(out).as_posix() for t in tasks]
        planned.append(f"benchmark/{shard_name('test', 0, 1)}")
        if not resume:  # the run's settings (for --resume) and what it will write (for --overwrite)
            write_json(out / RUN_FILE, settings | {"files": planned + [CARD, MANIFEST]})
        pool.rerun = "rerun with --resume to continue, or --overwrite to start again"
        # The bar counts train and val records; the benchmark adds about 0.1%.
        bar = progress(sum(t.count for t in tasks), "generate") if progress else NullProgress()
        done = finished_shards(out) if resume else {}
        if resume:
            remove_temporaries(folders)
        with bar:
            shards = run_tasks(tasks, plans, pool, bar, later=benchmark_tasks, done=done)
    result = GenerateResult(
        out=out, source=report, records=records, shards=shards, benchmark=benchmark, exchange=exchange
    )
    manifest = build_manifest(root, config, taxonomy, templates, result)
    write_card(out, manifest, card_stats(out, manifest, table, taxonomy))
    write_json(out / MANIFEST, manifest)
    (out / RUN_FILE).unlink(missing_ok=True)
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
    executor: ExecutorSpec | None = None,
) -> GenerateResult:
    """Build the synthetic sample copy inside ``out`` and generate a dataset from it."""
    claim_output(Path(out), overwrite, dataset_files)
    root = Path(out) / SAMPLE_FOLDER
    build_sample(root, taxonomy)
    return generate_dataset(
        root, out, config, taxonomy, templates, overwrite=True, progress=progress, executor=executor
    )


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
    if (out / RUN_FILE).is_file():  # an unfinished run: its planned files
        found = True
        files += (read_record(out / RUN_FILE) or []) + [RUN_FILE]
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
        # Exact best text-only accuracy over chance (a fraction) per question kind and region;
        # 0 where every option set is exactly exchangeable.
        "exchangeability": {
            split: {kind: {region: round(leak, 6) for region, leak in regions.items()} for kind, regions in kinds.items()}
            for split, kinds in result.exchange.items()
        },
        "shards": [s.to_dict() for s in result.shards],
    }
