"""The stratified, duplicate-aware benchmark split (SPEC section 5).

Benchmark images come only from the test split. Strata are modality x region x pathology
(the RadImageNet classes). The rule, applied with largest-remainder rounding at each level:

1. every stratum present in the test pool gets at least one image;
2. the budget is shared over regions, over answers (pathologies, or normal) within a region,
   and over strata within an answer, in proportion to the square root of the pool size
   (rare findings get more than their share so they can be measured, common ones less);
3. no region holds more than 25% of the benchmark and no answer, and no group of answers that
   may not share an option set (a conflict group, or two answers one of whose text contains the
   other's), more than 25% of its region: then every option set can be exactly exchangeable
   and "pick the biggest class" cannot beat chance without the image; a cap is relaxed only
   when the pool cannot meet it, with a warning;
4. with ``normal_fraction`` each region's normal images are fixed to that share;
5. within a stratum, images are taken in a seeded random order; a candidate that is blank,
   unreadable, or byte-identical to an image in train/val or under another pathology is
   skipped (file sizes are compared first, only size-mates of candidates are hashed).
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from . import streams
from .errors import OutputError, SplitError
from .taxonomy import Taxonomy

BENCHMARK, TEST_POOL = "benchmark", "test_pool"
_PURPOSE = 7  # stream tag for the benchmark draw
_MAX_ROUNDS = 50
RULE = (
    "every test-pool stratum (modality x region x pathology) gets one image; the rest is shared "
    "over regions, then answers, then strata in proportion to the square root of the pool size; "
    "no region above {region_cap:.0%} of the benchmark, no answer and no conflict group above {answer_cap:.0%} "
    "of its region; "
    "images drawn in a seeded order, skipping blank, unreadable and duplicated files"
)


@dataclass(frozen=True)
class BenchmarkSettings:
    """What to select: ``images`` None means the default (1,000, shrunk to what the pool has)."""

    images: int | None = None
    normal_fraction: float | None = None
    region_cap: float = 0.25
    answer_cap: float = 0.25
    check_images: bool = True
    stratify: bool = True
    seed: int = 0
    default_images: int = 1000
    layout: str = "per-image"

    @property
    def sets(self) -> int:
        """Disjoint image sets to select: nine for the per-slot layout (one slot each), else one."""
        return 9 if self.layout == "per-slot" else 1


@dataclass
class SplitReport:
    """Figures of a benchmark selection (printed by ``radvqa split``, kept in the manifest)."""

    rule: str = ""
    layout: str = "per-image"
    set_size: int = 0  # per-slot: images per slot set (rows are ordered set by set)
    requested: int = 0
    images: int = 0
    seed: int = 0
    test_pool: int = 0
    strata_in_pool: int = 0
    strata_covered: int = 0
    per_region: dict[str, int] = field(default_factory=dict)
    per_modality: dict[str, int] = field(default_factory=dict)
    normal_share: float = 0.0
    duplicate_files: int = 0
    duplicates_excluded: int = 0
    blank_excluded: int = 0
    unreadable_excluded: int = 0
    examples: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def usable(self) -> int:
        """Test-pool images left once the excluded candidates are set aside (the count warnings use)."""
        return self.test_pool - self.duplicates_excluded - self.blank_excluded - self.unreadable_excluded

    def lines(self) -> list[str]:
        """Human-readable report."""
        sets = f" in 9 disjoint slot sets of {self.set_size}" if self.layout == "per-slot" else ""
        return [
            f"benchmark: {self.images} images{sets} (asked {self.requested}) from a test pool of {self.test_pool} "
            f"({self.usable} usable)",
            f"strata covered: {self.strata_covered} of {self.strata_in_pool} in the test pool",
            "per region: " + ", ".join(f"{k} {v}" for k, v in self.per_region.items()),
            "per modality: " + ", ".join(f"{k} {v}" for k, v in self.per_modality.items()),
            f"normal share: {self.normal_share:.1%}",
            f"excluded candidates: {self.duplicates_excluded} duplicated, {self.blank_excluded} blank, "
            f"{self.unreadable_excluded} unreadable ({self.duplicate_files} files with a byte-identical twin "
            "among the size-mates checked)",
            f"rule: {self.rule}",
        ]

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for manifests and sidecar files."""
        return asdict(self)


def allocate(total: int, weights: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Integers in [lower, upper] summing to ``total``, as close to proportional to ``weights`` as the bounds allow."""
    weights = np.asarray(weights, dtype=np.float64)
    lower = np.asarray(lower, dtype=np.int64)
    upper = np.asarray(upper, dtype=np.int64)
    if lower.sum() > total or upper.sum() < total or (lower > upper).any():
        raise ValueError("allocation bounds cannot meet the total")
    if len(weights) == 1 or lower.sum() == total or upper.sum() == total:
        return lower if lower.sum() == total else upper if upper.sum() == total else np.array([total])
    positive = weights > 0
    low, high = 0.0, float(np.max(np.where(positive, upper / np.where(positive, weights, 1), 0.0))) + 1.0
    lower_f, upper_f = lower.astype(np.float64), upper.astype(np.float64)
    for _ in range(60):
        mid = (low + high) / 2
        if np.minimum(np.maximum(mid * weights, lower_f), upper_f).sum() < total:
            low = mid
        else:
            high = mid
    exact = np.minimum(np.maximum(high * weights, lower_f), upper_f)
    result = np.clip(np.floor(exact).astype(np.int64), lower, upper)
    remainder = exact - result
    while result.sum() < total:
        room = result < upper
        order = sorted(np.flatnonzero(room), key=lambda i: (-remainder[i], i))
        for i in order[: total - result.sum()]:
            result[i] += 1
            remainder[i] = -1.0
    while result.sum() > total:  # cannot happen with exact bisection, kept for safety
        i = max(np.flatnonzero(result > lower), key=lambda j: (result[j] - exact[j], j))
        result[i] -= 1
    return result


class _Checker:
    """Blank/unreadable/duplicate checks for candidates, cached; only size-mates are hashed."""

    def __init__(self, table: pd.DataFrame, data_root: Path, check_images: bool) -> None:
        self.root = str(data_root)
        self.images = table["image"].tolist()
        self.ids = table["image_id"].tolist()
        self.splits = table["split"].tolist()
        self.classes = table["class_index"].tolist()
        self.sizes = table["size"].tolist()
        self.check_images = check_images
        self.by_size: dict[int, list[int]] = defaultdict(list)
        for row, size in enumerate(self.sizes):
            self.by_size[size].append(row)
        self.twins_of: dict[int, list[int]] = {}  # row -> rows with identical bytes (hashed groups only)
        self.verdicts: dict[int, str] = {}

    def path(self, row: int) -> str:
        """The file of a row (paths are built only for the few rows looked at)."""
        return os.path.join(self.root, self.images[row])

    def verdict(self, row: int) -> str:
        """'' when the candidate may enter the benchmark, else the reason it may not."""
        if row not in self.verdicts:
            self.verdicts[row] = self._image_problem(row) or self._duplicate(row)
        return self.verdicts[row]

    def duplicate_files(self) -> int:
        """Files found to have a byte-identical twin among the size groups that were hashed."""
        return sum(1 for twins in self.twins_of.values() if twins)

    def _image_problem(self, row: int) -> str:
        if not self.check_images:
            return ""
        try:
            with Image.open(self.path(row)) as image:
                extrema = image.getextrema()
        except (OSError, UnidentifiedImageError, ValueError):
            return "unreadable"
        bands = extrema if isinstance(extrema[0], tuple) else (extrema,)
        return "blank" if all(low == high for low, high in bands) else ""

    def _twins(self, row: int) -> list[int]:
        if row not in self.twins_of:
            members = self.by_size[self.sizes[row]]
            groups: dict[bytes, list[int]] = defaultdict(list)
            for member in members if len(members) > 1 else []:
                with open(self.path(member), "rb") as handle:
                    digest = hashlib.blake2b(handle.read(), digest_size=16).digest()
                groups[digest].append(member)
            for group in groups.values():
                for member in group:
                    self.twins_of[member] = [m for m in group if m != member]
            self.twins_of.setdefault(row, [])
        return self.twins_of[row]

    def _duplicate(self, row: int) -> str:
        twins = self._twins(row)
        for twin in twins:
            if self.splits[twin] != "test" or self.classes[twin] != self.classes[row]:
                return f"duplicate of {self.ids[twin]}"
        first = min((self.ids[t] for t in twins), default=self.ids[row])
        return f"duplicate of {first}" if first < self.ids[row] else ""


def _allocate_with_caps(
    total: int, weights: np.ndarray, lower: np.ndarray, pool: np.ndarray, cap: int, what: str, warnings: list[str]
) -> np.ndarray:
    upper = np.maximum(np.minimum(pool, cap), lower)
    if upper.sum() < total:
        warnings.append(f"{what}: the test pool cannot meet the cap of {cap} images; cap relaxed")
        upper = np.maximum(pool, lower)
    return allocate(total, weights, lower, upper)


def _capped_with_groups(
    total: int, weights: np.ndarray, lower: np.ndarray, pool: np.ndarray, cap: int, groups: list[list[int]],
    what: str, warnings: list[str],
) -> np.ndarray:
    """Like ``_allocate_with_caps``, and no group of mutually excluded answers above ``cap`` either.

    Such a group holds at most one option of a set, so above a quarter of its region it could not
    be offered often enough for exchangeable option sets (SPEC section 5). Members of an
    over-full group are trimmed (largest first) and frozen; the rest is shared out again.
    """
    upper = np.maximum(np.minimum(pool, cap), lower)
    if upper.sum() < total:
        warnings.append(f"{what}: the test pool cannot meet the cap of {cap} images; cap relaxed")
        return allocate(total, weights, lower, np.maximum(pool, lower))
    for _ in range(len(groups) + 1):
        result = allocate(total, weights, lower, upper)
        over = [g for g in groups if result[g].sum() > cap]
        if not over:
            return result
        for group in over:
            if lower[group].sum() > cap:
                warnings.append(f"{what}: a conflict group needs more than {cap} images for its strata; cap relaxed")
                return result
            while result[group].sum() > cap:
                i = max(group, key=lambda m: (result[m] - lower[m], -m))
                result[i] -= 1
            upper[group] = result[group]
        if upper.sum() < total:
            warnings.append(f"{what}: the test pool cannot fill the region within its conflict-group caps; cap relaxed")
            return allocate(total, weights, lower, np.maximum(pool, lower))
    return allocate(total, weights, lower, upper)


def _answer_groups(taxonomy: Taxonomy, region: str, answers: list[str]) -> list[list[int]]:
    """Groups (two or more) of present answers that may not share an option set, as indices into ``answers``."""
    from .distractors import cliques

    names = taxonomy.regions[region].pathologies
    excluded = taxonomy.exclusions(region, True)
    members = [names.index(a) for a in answers]
    found = cliques(members, excluded)
    return [[answers.index(names[m]) for m in group] for group in found if len(group) > 1]


def _plan_counts(
    counts: np.ndarray, taxonomy: Taxonomy, size: int, settings: BenchmarkSettings, warnings: list[str],
    group_caps: bool = True,
) -> np.ndarray:
    """Images to take per class for a benchmark of ``size`` images (``group_caps``: conflict groups capped too)."""
    classes = taxonomy.classes
    regions = list(taxonomy.regions)
    present = counts > 0
    region_of = np.array([regions.index(c.region) for c in classes])
    region_pool = np.bincount(region_of, weights=counts, minlength=len(regions))
    region_strata = np.bincount(region_of, weights=present, minlength=len(regions)).astype(np.int64)
    per_region = _allocate_with_caps(
        size, np.sqrt(region_pool), region_strata, region_pool.astype(np.int64),
        int(np.floor(settings.region_cap * size)), "region cap", warnings,
    )
    take = np.zeros(len(classes), dtype=np.int64)
    for r, region in enumerate(regions):
        budget = int(per_region[r])
        if budget == 0:
            continue
        members = np.flatnonzero((region_of == r) & present)
        answers = sorted({classes[i].pathology for i in members})
        answer_of = np.array([answers.index(classes[i].pathology) for i in members])
        pool = np.bincount(answer_of, weights=counts[members], minlength=len(answers)).astype(np.int64)
        strata = np.bincount(answer_of, minlength=len(answers)).astype(np.int64)
        cap = int(np.floor(settings.answer_cap * budget))
        name = taxonomy.regions[region].name
        normal = answers.index(taxonomy.normal_folder) if taxonomy.normal_folder in answers else -1
        if settings.normal_fraction is not None and normal >= 0:
            others = np.arange(len(answers)) != normal
            want = int(round(settings.normal_fraction * budget))
            fixed = int(np.clip(want, strata[normal], min(pool[normal], budget - strata[others].sum())))
            per_answer = np.zeros(len(answers), dtype=np.int64)
            per_answer[normal] = fixed
            if others.any():
                index = np.flatnonzero(others).tolist()
                groups = [[index.index(m) for m in g if m in index] for g in _answer_groups(taxonomy, region, answers)]
                per_answer[others] = _capped_with_groups(
                    budget - fixed, np.sqrt(pool[others]), strata[others], pool[others], cap,
                    [g for g in groups if len(g) > 1] if group_caps else [], f"answer cap in {name}", warnings,
                )
        else:
            per_answer = _capped_with_groups(
                budget, np.sqrt(pool), strata, pool, cap,
                _answer_groups(taxonomy, region, answers) if group_caps else [], f"answer cap in {name}", warnings,
            )
        for a in range(len(answers)):
            in_answer = members[answer_of == a]
            take[in_answer] = allocate(
                int(per_answer[a]), np.sqrt(counts[in_answer]), np.ones(len(in_answer)), counts[in_answer]
            )
    return take


def select_benchmark(
    table: pd.DataFrame, taxonomy: Taxonomy, settings: BenchmarkSettings, data_root: Path
) -> tuple[np.ndarray, SplitReport]:
    """Row indices of the benchmark images (sorted by image id) and the report.

    With the per-slot layout, nine disjoint sets with the same number of images of every class
    are chosen; rows come set by set (slot i's images are rows[i * set_size:(i + 1) * set_size]),
    each set sorted by image id. ``table`` needs image, image_id, split, class_index, key and
    size columns; ``data_root`` is the folder the ``image`` paths are relative to.
    """
    report = SplitReport(
        rule=RULE.format(region_cap=settings.region_cap, answer_cap=settings.answer_cap), seed=settings.seed,
        layout=settings.layout,
    )
    sets = settings.sets
    if settings.normal_fraction is not None and not 0 <= settings.normal_fraction <= settings.answer_cap:
        raise SplitError(
            f"--normal-fraction {settings.normal_fraction} is outside [0, {settings.answer_cap}]: above "
            f"{settings.answer_cap:.0%} 'normal' would be a text-only cue (the per-answer cap)"
        )
    test_rows = np.flatnonzero(table["split"].to_numpy() == "test")
    report.test_pool = len(test_rows)
    if settings.images == 0:  # asked for no benchmark: every test image stays in the pool
        return np.zeros(0, dtype=np.int64), report
    classes = table["class_index"].to_numpy()
    order = np.argsort(streams.image_keys(table["key"].to_numpy()[test_rows], settings.seed, _PURPOSE), kind="stable")
    ranked = test_rows[order]
    checker = _Checker(table, data_root, settings.check_images)
    excluded: set[int] = set()
    for _ in range(_MAX_ROUNDS):
        eligible = [row for row in ranked if row not in excluded]
        # Per-slot sets share one allocation: each class gives every set the same count.
        counts = np.bincount(classes[eligible], minlength=len(taxonomy.classes)).astype(np.int64) // sets
        size, shrunk = _benchmark_size(settings, counts, taxonomy, report)
        warnings = [shrunk] if shrunk else []
        if settings.stratify:
            take = _plan_counts(counts, taxonomy, size, settings, warnings)
            chosen, left = [], take * sets
            for row in eligible:
                if left[classes[row]] > 0:
                    left[classes[row]] -= 1
                    chosen.append(row)
        else:
            chosen = eligible[: size * sets]
        rejected = [row for row in chosen if checker.verdict(row)]
        if not rejected:
            break
        excluded.update(rejected)
    else:
        raise SplitError("could not find enough usable benchmark images (too many blank or duplicated files)")
    report.warnings.extend(warnings)
    if sets > 1:
        few = int(((np.bincount(classes[test_rows], minlength=len(taxonomy.classes)) > 0) & (counts == 0)).sum())
        if few:
            report.warnings.append(f"{few} strata have fewer than {sets} usable test images: left out of the per-slot sets")
    report.set_size = size
    if sets > 1 and size == 0:
        raise SplitError(
            f"the test pool is too small for {sets} disjoint benchmark sets (one per slot): every class needs "
            f"at least {sets} usable test images; use the per-image layout"
        )
    ids = table["image_id"]
    seen: dict[int, int] = defaultdict(int)
    slot_of = []
    for i, row in enumerate(chosen):  # ranked order: each class's k-th image goes to set k mod 9
        slot_of.append(seen[classes[row]] % sets if settings.stratify else i % sets)
        seen[classes[row]] += 1
    chosen_rows = np.array(
        [row for _, _, row in sorted((s, ids.iat[r], r) for s, r in zip(slot_of, chosen))], dtype=np.int64
    )
    _fill_report(report, table, taxonomy, chosen_rows, counts, checker)
    return chosen_rows, report


def _benchmark_size(
    settings: BenchmarkSettings, counts: np.ndarray, taxonomy: Taxonomy, report: SplitReport
) -> tuple[int, str]:
    """The number of images to select, and a warning when the default had to shrink."""
    available, strata = int(counts.sum()), int((counts > 0).sum())
    report.strata_in_pool = strata
    if settings.images is not None:
        report.requested = settings.images
        if settings.images > available:
            raise SplitError(
                f"asked for {settings.images} benchmark images but the test pool has only {available} usable images"
            )
        if settings.stratify and settings.images < strata:
            raise SplitError(
                f"{settings.images} benchmark images cannot cover the {strata} strata of the test pool; "
                f"ask for at least {strata}"
            )
        return settings.images, ""
    report.requested = settings.default_images
    if available >= settings.default_images:
        return settings.default_images, ""
    size = _largest_within_caps(counts, taxonomy, settings, available, strata)
    return size, (
        f"the test pool has only {available} usable images: benchmark shrunk from {settings.default_images} "
        f"to {size}, the largest that keeps every stratum and the caps"
    )


def _largest_within_caps(
    counts: np.ndarray, taxonomy: Taxonomy, settings: BenchmarkSettings, available: int, strata: int
) -> int:
    """The largest benchmark size the pool can fill without relaxing a cap (all of it if none can)."""

    def within_caps(size: int) -> bool:
        warnings: list[str] = []
        # Sized by the region and answer caps: small strata can make a conflict-group cap
        # unreachable at every size, which must not force the whole pool in.
        _plan_counts(counts, taxonomy, size, settings, warnings, group_caps=False)
        return not warnings

    if not settings.stratify or within_caps(available):
        return available
    low, high = strata, available  # caps tighten as the size grows beyond what small strata allow
    if not within_caps(low):
        return available
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if within_caps(middle) else (low, middle)
    return low


def _fill_report(
    report: SplitReport, table: pd.DataFrame, taxonomy: Taxonomy, rows: np.ndarray, pool: np.ndarray,
    checker: _Checker,
) -> None:
    classes = [taxonomy.classes[i] for i in table["class_index"].to_numpy()[rows]]
    report.images = len(rows)
    report.strata_covered = len({c.index for c in classes})
    per_region: dict[str, int] = defaultdict(int)
    per_modality: dict[str, int] = defaultdict(int)
    for c in classes:
        per_region[c.region_name] += 1
        per_modality[c.modality_name] += 1
    report.per_region = dict(sorted(per_region.items()))
    report.per_modality = dict(sorted(per_modality.items()))
    report.normal_share = sum(not c.is_abnormal for c in classes) / len(classes) if classes else 0.0
    reasons = [v for v in checker.verdicts.values() if v]
    report.duplicates_excluded = sum(v.startswith("duplicate") for v in reasons)
    report.blank_excluded = reasons.count("blank")
    report.unreadable_excluded = reasons.count("unreadable")
    report.duplicate_files = checker.duplicate_files()
    report.examples = [f"{checker.ids[r]}: {v}" for r, v in sorted(checker.verdicts.items()) if v][:5]


def stratum_labels(table: pd.DataFrame, taxonomy: Taxonomy) -> list[str]:
    """'modality / region / pathology' of each row, in display names."""
    names = [f"{c.modality_name} / {c.region_name} / {c.pathology_name}" for c in taxonomy.classes]
    return [names[i] for i in table["class_index"].tolist()]


def assign_splits(table: pd.DataFrame, benchmark_rows: np.ndarray) -> np.ndarray:
    """train / val / benchmark / test_pool for every row."""
    splits = table["split"].to_numpy().astype(object)
    splits = np.where(splits == "test", TEST_POOL, splits)
    splits[benchmark_rows] = BENCHMARK
    return splits


def balanced_letters(count: int, seed: int, purpose: int) -> np.ndarray:
    """Correct-letter positions 0-3, each used count/4 times (up to rounding), in seeded order."""
    rng = np.random.default_rng([seed, purpose])
    return rng.permutation(np.arange(count) % 4)


def benchmark_slots(rows: np.ndarray, report: SplitReport | dict[str, Any]) -> np.ndarray | None:
    """The slot (index into the nine) of each benchmark row in the per-slot layout, else None."""
    layout = report["layout"] if isinstance(report, dict) else report.layout
    if layout != "per-slot":
        return None
    size = report["set_size"] if isinstance(report, dict) else report.set_size
    return np.repeat(np.arange(9), size)[: len(rows)]


def write_splits(
    path: Path, table: pd.DataFrame, splits: np.ndarray, taxonomy: Taxonomy, report: SplitReport,
    rows: np.ndarray | None = None,
) -> None:
    """Write the split table (image, split, stratum, ...) and its report beside it (``.json``).

    The per-slot layout adds a ``slot`` column: the one question each benchmark image is asked.
    """
    from .generate import INSTRUCT_SLOTS
    from .writers import write_bytes_atomic, write_json, writing

    with writing(Path(path)):
        Path(path).parent.mkdir(parents=True, exist_ok=True)

    columns: dict[str, Any] = {
        "image_id": table["image_id"],
        "image": table["image"],
        "split": splits,
        "stratum": stratum_labels(table, taxonomy),
        "label": [taxonomy.classes[i].label for i in table["class_index"].tolist()],
    }
    slots = benchmark_slots(rows, report) if rows is not None else None
    if slots is not None and rows is not None:
        column = np.full(len(table), "", dtype=object)
        column[rows] = [INSTRUCT_SLOTS[i] for i in slots]
        columns["slot"] = column
    frame = pd.DataFrame(columns)
    write_bytes_atomic(Path(path), frame.to_csv(index=False).encode())
    write_json(report_path(path), report.to_dict())


def check_split_destination(path: Path, overwrite: bool) -> None:
    """Before any work: ``path`` and its report can be written, and replace only radvqa's own files."""
    from .ownership import check_file_destination

    if Path(path).suffix.lower() == ".json":
        raise OutputError(f"--output {path}: the split file is a CSV (its report is written beside it as .json)")
    for target, ours in ((Path(path), _is_split_table), (report_path(path), _is_split_report)):
        check_file_destination(target, "--output")
        if not target.exists():
            continue
        if not ours(target):
            raise OutputError(f"--output {target}: exists and was not written by `radvqa split`; choose another name")
        if not overwrite:
            raise OutputError(f"{target}: exists; pass --overwrite to replace it")


def _is_split_table(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.readline().startswith(b"image_id,image,split,")


def _is_split_report(path: Path) -> bool:
    import orjson

    try:
        data = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError:
        return False
    return isinstance(data, dict) and "rule" in data and "strata_covered" in data


def report_path(path: Path) -> Path:
    """Where the report of a split file lives: ``splits.csv`` -> ``splits.json``."""
    return Path(path).with_suffix(".json")


def read_splits(path: Path) -> tuple[dict[str, str], dict[str, Any] | None]:
    """Image id -> split from a saved split file, and its report when the sidecar exists."""
    import orjson

    try:
        frame = pd.read_csv(path, dtype=object, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise SplitError(f"{path}: cannot read split file ({exc})")
    for column in ("image_id", "split"):
        if column not in frame.columns:
            raise SplitError(f"{path}: no '{column}' column (write it with `radvqa split`)")
    known = {"train", "val", BENCHMARK, TEST_POOL}
    bad = frame.loc[~frame["split"].isin(list(known)), "split"]
    if len(bad):
        row = int(bad.index[0]) + 2
        raise SplitError(f"{path}: row {row}: unknown split '{bad.iloc[0]}' (expected one of {sorted(known)})")
    sidecar = report_path(path)
    report = orjson.loads(sidecar.read_bytes()) if sidecar.exists() else None
    if "slot" in frame.columns:
        from .generate import INSTRUCT_SLOTS

        marked = frame["split"] == BENCHMARK
        bad = frame.loc[marked & ~frame["slot"].isin(list(INSTRUCT_SLOTS)), "slot"]
        if len(bad):
            row = int(bad.index[0]) + 2
            raise SplitError(f"{path}: row {row}: unknown slot '{bad.iloc[0]}' for a benchmark image")
        report = dict(report or {}, slots=dict(zip(frame.loc[marked, "image_id"], frame.loc[marked, "slot"])))
    return dict(zip(frame["image_id"].tolist(), frame["split"].tolist())), report


def split_copy(
    root: Path, taxonomy: Taxonomy, split_ratios: dict[str, float], settings: BenchmarkSettings
) -> tuple[pd.DataFrame, np.ndarray, SplitReport, list[str], np.ndarray]:
    """Read a copy and assign every image: (table, splits, report, reader warnings, benchmark rows)."""
    from .source import locate, read_source

    table, source_report = read_source(root, taxonomy, split_ratios, with_sizes=True)
    rows, report = select_benchmark(table, taxonomy, settings, locate(root).root)
    return table, assign_splits(table, rows), report, source_report.warnings, rows


POOL_SPLITS = ("test", BENCHMARK, TEST_POOL)


def check_benchmark(table: pd.DataFrame, rows: np.ndarray, taxonomy: Taxonomy, requested: int | None) -> None:
    """Refuse a degenerate benchmark: empty, or missing a region the test pool has (unless 0 were asked for)."""
    if requested == 0:
        return
    pool = table["class_index"].to_numpy()[np.isin(table["split"].to_numpy(), POOL_SPLITS)]
    if len(rows) == 0:
        raise SplitError(
            f"the benchmark is empty: the test pool has {len(pool)} usable images",
            hint="add test images (RadiologyAI_test.csv), or pass --benchmark-images 0 for no benchmark",
        )
    names = [c.region_name for c in taxonomy.classes]
    chosen = {names[i] for i in table["class_index"].to_numpy()[rows]}
    lacking = sorted({names[i] for i in pool} - chosen)
    if lacking:
        raise SplitError(
            f"the benchmark has no image of {len(lacking)} region(s) the test pool has ({', '.join(lacking)}): "
            "their candidates are unreadable, blank or duplicated; repair or remove those files"
        )
