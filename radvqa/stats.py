"""Counts and balance tables of a generated dataset, as text, markdown and PNG charts.

One streaming pass over the shards fills a few counters; every table is derived from them.
Image-level tables (regions, pathologies, normal share) count each image once per split,
on its caption (alignment) or its first question (instruct, benchmark).
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .dataset_files import SPLIT_ORDER, at, dataset_parts, iter_rows, load_manifest
from .errors import DatasetError
from .generate import INSTRUCT_SLOTS, LETTERS, SLOT_TYPE
from .progress import NullProgress, ProgressBar
from .writers import write_bytes_atomic, writing

IMAGE_SLOTS = frozenset({"caption", INSTRUCT_SLOTS[0]})  # one record per image in every config
TASKS = ("anatomy", "abnormality", "pathology")
REPORT_NAME = "stats.md"
CHART_NAMES = ("regions", "classes", "normal", "balance")
# What `stats` writes in its report folder (and what generate --overwrite may remove there).
REPORT_FILES = (REPORT_NAME, *(f"{name}.png" for name in CHART_NAMES))
_PROGRESS_EVERY = 8192


@dataclass
class DatasetStats:
    """Counters filled by one pass over a dataset's records."""

    records: Counter[tuple[str, str]] = field(default_factory=Counter)
    # (config, split, modality, region, pathology, is_abnormal) -> images
    images: Counter[tuple[str, str, str, str, str, bool]] = field(default_factory=Counter)
    slots: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    letters: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)
    closed: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)
    slot_types: dict[str, str] = field(default_factory=dict)
    benchmark: dict[str, Any] | None = None

    def image_views(self) -> dict[str, str]:
        """For each split, the config whose records count its images (alignment first)."""
        views: dict[str, str] = {}
        for config, split, *_ in self.images:
            current = views.get(split)
            if current is None or _CONFIG_RANK.get(config, 9) < _CONFIG_RANK.get(current, 9):
                views[split] = config
        return dict(sorted(views.items(), key=lambda kv: _split_rank(kv[0])))

    def image_counts(self) -> Counter[tuple[str, str, str, str, bool]]:
        """(split, modality, region, pathology, is_abnormal) -> images, one config per split."""
        views = self.image_views()
        out: Counter[tuple[str, str, str, str, bool]] = Counter()
        for (config, split, modality, region, pathology, abnormal), n in self.images.items():
            if views.get(split) == config:
                out[(split, modality, region, pathology, abnormal)] += n
        return out


_CONFIG_RANK = {"alignment": 0, "instruct": 1, "benchmark": 2}


def _split_rank(split: str) -> tuple[int, str]:
    return (SPLIT_ORDER.index(split) if split in SPLIT_ORDER else len(SPLIT_ORDER), split)


def compute_stats(
    out: Path,
    manifest: dict[str, Any] | None = None,
    configs: tuple[str, ...] | None = None,
    progress: Callable[[int, str], ProgressBar] | None = None,
) -> DatasetStats:
    """Stream every record of ``configs`` (default all) of the dataset at ``out`` into counters."""
    out = Path(out)
    manifest = manifest if manifest is not None else load_manifest(out)
    parts = dataset_parts(out, manifest, configs)
    stats = DatasetStats(benchmark=manifest.get("benchmark"))
    total = sum(p.expected or 0 for p in parts)
    bar = progress(total, "stats") if progress else NullProgress()
    with bar:
        for part in parts:
            _count_part(stats, part.config, part.split, part.files, bar)
    return stats


def _count_part(stats: DatasetStats, config: str, split: str, files: Iterable[Path], bar: ProgressBar) -> None:
    records = stats.records
    slots, letters, closed, images = stats.slots, stats.letters, stats.closed, stats.images
    slot_types = stats.slot_types
    pending = 0
    n = 0
    for record, where in iter_rows(list(files)):
        try:
            slot = record["slot"]
            qtype = record["question_type"]
            if slot in IMAGE_SLOTS:
                key = (config, split, record["modality"], record["region"], record["pathology"], record["is_abnormal"])
                images[key] += 1
            if qtype == "multiple_choice":
                letters[(config, split, slot, record["answer"])] += 1
            elif qtype == "closed":
                closed[(config, split, record["task"], record["answer"])] += 1
        except KeyError as error:
            raise DatasetError(f"{at(where)}: record has no {error} field") from None
        slots[(config, split, slot)] += 1
        if slot not in slot_types:
            slot_types[slot] = qtype
        n += 1
        pending += 1
        if pending >= _PROGRESS_EVERY:
            bar.update(pending)
            pending = 0
    bar.update(pending)
    records[(config, split)] += n


# ---------------------------------------------------------------- tables


@dataclass(frozen=True)
class Table:
    """A titled table: header row, body rows (strings), and which columns are numeric."""

    key: str
    title: str
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    numeric: tuple[bool, ...]
    note: str = ""


def _table(key: str, title: str, headers: list[str], rows: list[list[Any]], numeric_from: int, note: str = "") -> Table:
    numeric = tuple(i >= numeric_from for i in range(len(headers)))
    body = tuple(tuple(_cell(v) for v in row) for row in rows)
    return Table(key, title, tuple(headers), body, numeric, note)


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def _pct(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "-"


def image_tables(stats: DatasetStats) -> dict[str, Table]:
    """Images per region, modality and class, and the normal share, by table key."""
    counts = stats.image_counts()
    splits = list(stats.image_views())
    return {
        "regions": grouped_table(counts, splits, "regions", "Images per region", ("region",), lambda k: (k[2],)),
        "modalities": grouped_table(
            counts, splits, "modalities", "Images per modality", ("modality",), lambda k: (k[1],)
        ),
        "pathologies": grouped_table(
            counts,
            splits,
            "pathologies",
            "Images per class (modality, region, pathology)",
            ("modality", "region", "pathology"),
            lambda k: (k[1], k[2], k[3]),
        ),
        "normal": normal_table(counts, splits),
    }


def tables(stats: DatasetStats) -> list[Table]:
    """Every table of the report, in reading order (empty ones left out)."""
    images = image_tables(stats)
    found = [
        splits_table(stats),
        *(images[key] for key in ("regions", "modalities", "pathologies", "normal")),
        slots_table(stats),
        letters_table(stats),
        closed_table(stats),
        benchmark_table(stats),
    ]
    return [t for t in found if t is not None and t.rows]


def splits_table(stats: DatasetStats) -> Table:
    """Images and records per config and split."""
    images: Counter[tuple[str, str]] = Counter()
    for (config, split, *_), n in stats.images.items():
        images[(config, split)] += n
    rows = [[c, s, images[(c, s)], n] for (c, s), n in stats.records.items()]
    return _table("splits", "Records per config and split", ["config", "split", "images", "records"], rows, 2)


def grouped_table(
    counts: Counter[tuple[str, str, str, str, bool]],
    splits: list[str],
    key: str,
    title: str,
    names: tuple[str, ...],
    group: Callable[[tuple[str, str, str, str, bool]], tuple[str, ...]],
) -> Table:
    """Images per group (e.g. region) and split, with a total column."""
    grid: dict[tuple[str, ...], Counter[str]] = {}
    for k, n in counts.items():
        grid.setdefault(group(k), Counter())[k[0]] += n
    rows: list[list[Any]] = []
    for name in sorted(grid):
        row = grid[name]
        rows.append([*name, *(row[s] for s in splits), sum(row.values())])
    return _table(key, title, [*names, *splits, "total"], rows, len(names), "each image counted once per split")


def normal_table(counts: Counter[tuple[str, str, str, str, bool]], splits: list[str]) -> Table:
    """Share of normal images per split and region."""
    grid: dict[tuple[str, str], list[int]] = {}
    for (split, _modality, region, _pathology, abnormal), n in counts.items():
        for key in ((split, "all regions"), (split, region)):
            cell = grid.setdefault(key, [0, 0])
            cell[0 if abnormal else 1] += n
    rows = []
    for split in splits:
        for (s, region), (n_abnormal, n_normal) in sorted(
            grid.items(), key=lambda kv: (kv[0][1] != "all regions", kv[0])
        ):
            if s == split:
                rows.append([split, region, n_abnormal + n_normal, n_normal, _pct(n_normal, n_abnormal + n_normal)])
    return _table("normal", "Normal share", ["split", "region", "images", "normal", "normal share"], rows, 2)


def slots_table(stats: DatasetStats) -> Table:
    """Records per slot and split (captions from alignment, questions from instruct and benchmark)."""
    splits = sorted({s for _, s, _ in stats.slots}, key=_split_rank)
    per: Counter[tuple[str, str]] = Counter()
    for (_config, split, slot), n in stats.slots.items():
        per[(slot, split)] += n
    order = {slot: i for i, slot in enumerate(("caption", *INSTRUCT_SLOTS))}
    slot_names = sorted({slot for _, _, slot in stats.slots}, key=lambda s: (order.get(s, 99), s))
    rows = [
        [slot, stats.slot_types.get(slot, SLOT_TYPE.get(slot, "?")), *(per[(slot, s)] for s in splits)]
        for slot in slot_names
    ]
    return _table("slots", "Records per slot", ["slot", "type", *splits], rows, 2)


def letters_table(stats: DatasetStats) -> Table:
    """Correct-letter counts and shares per multiple-choice slot."""
    groups = sorted(
        {(c, s, slot) for c, s, slot, _ in stats.letters},
        key=lambda g: (_CONFIG_RANK.get(g[0], 9), _split_rank(g[1]), g[2]),
    )
    rows = []
    for config, split, slot in groups:
        counts = [stats.letters[(config, split, slot, letter)] for letter in LETTERS]
        whole = sum(counts)
        rows.append([config, split, slot, *(f"{n:,} ({_pct(n, whole)})" for n in counts)])
    return _table(
        "letters",
        "Correct-letter balance (multiple choice)",
        ["config", "split", "slot", *LETTERS],
        rows,
        3,
        "a balanced set has 25% per letter",
    )


def closed_table(stats: DatasetStats) -> Table:
    """Yes/no answer counts per closed task."""
    groups = sorted(
        {(c, s, t) for c, s, t, _ in stats.closed},
        key=lambda g: (_CONFIG_RANK.get(g[0], 9), _split_rank(g[1]), _task_rank(g[2])),
    )
    rows = []
    for config, split, task in groups:
        yes, no = stats.closed[(config, split, task, "yes")], stats.closed[(config, split, task, "no")]
        rows.append([config, split, task, yes, no, _pct(yes, yes + no)])
    return _table(
        "closed", "Yes/no balance (closed questions)", ["config", "split", "task", "yes", "no", "yes share"], rows, 3
    )


def _task_rank(task: str) -> tuple[int, str]:
    return (TASKS.index(task) if task in TASKS else len(TASKS), task)


def benchmark_table(stats: DatasetStats) -> Table | None:
    """Benchmark strata (modality x region x pathology): how many, and images per stratum."""
    strata: Counter[tuple[str, str, str]] = Counter()
    for (config, _split, modality, region, pathology, _abnormal), n in stats.images.items():
        if config == "benchmark":
            strata[(modality, region, pathology)] += n
    if not strata:
        return None
    sizes = sorted(strata.values())
    questions: Counter[str] = Counter()
    for (config, _split, slot), n in stats.slots.items():
        if config == "benchmark":
            questions[stats.slot_types.get(slot, "?")] += n
    rows: list[list[Any]] = [
        ["images", sum(sizes)],
        ["strata (modality x region x pathology)", len(sizes)],
        ["images per stratum: min / median / max", f"{sizes[0]} / {statistics.median(sizes):g} / {sizes[-1]}"],
    ]
    rows += [[f"{qtype} questions", n] for qtype, n in sorted(questions.items())]
    return _table("benchmark", "Benchmark strata", ["figure", "value"], rows, 1)


# ---------------------------------------------------------------- rendering


def to_markdown(table: Table) -> str:
    """A GitHub-flavoured markdown table with its title as a heading."""
    align = ["---:" if numeric else "---" for numeric in table.numeric]
    lines = [f"### {table.title}", ""]
    if table.note:
        lines += [f"_{table.note}_", ""]
    lines.append("| " + " | ".join(table.headers) + " |")
    lines.append("| " + " | ".join(align) + " |")
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in table.rows]
    return "\n".join(lines) + "\n"


def to_text(table: Table) -> str:
    """A fixed-width plain-text table for a terminal."""
    widths = [max(len(h), *(len(r[i]) for r in table.rows)) for i, h in enumerate(table.headers)]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, table.numeric)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([table.title, line(table.headers), rule, *(line(r) for r in table.rows)]) + "\n"


def report_markdown(stats: DatasetStats, charts: list[Path], manifest: dict[str, Any] | None = None) -> str:
    """The whole markdown report: charts first, then every table."""
    lines = ["# radvqa dataset statistics", ""]
    if manifest is not None:
        lines += [
            f"Dataset generated by radvqa {manifest.get('environment', {}).get('radvqa', '?')} "
            f"with seed {manifest.get('seed', '?')}.",
            "",
        ]
    for chart in charts:
        lines += [f"![{chart.stem}]({chart.name})", ""]
    for table in tables(stats):
        lines += [to_markdown(table)]
    return "\n".join(lines)


@dataclass
class StatsReport:
    """What ``write_report`` wrote."""

    markdown: Path
    charts: list[Path]


def write_report(
    stats: DatasetStats, report_dir: Path, manifest: dict[str, Any] | None = None, charts: bool = True
) -> StatsReport:
    """Write ``stats.md`` (and, with ``charts``, the PNG charts) into ``report_dir`` (created if needed)."""
    report_dir = Path(report_dir)
    with writing(report_dir):
        report_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if charts:
        from .charts import write_charts

        written = write_charts(stats, report_dir)
    markdown = report_dir / REPORT_NAME
    write_bytes_atomic(markdown, report_markdown(stats, written, manifest).encode())
    return StatsReport(markdown, written)


def can_draw_charts() -> bool:
    """Whether matplotlib (the ``stats`` extra) is installed, so charts can be drawn."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True
