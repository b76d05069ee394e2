"""The evaluation's columns as sums over images, with bootstrap intervals resampled by image.

Each scored question adds counts to its image's row of a count matrix (correct and total per
slot; abnormality questions by answer, for sensitivity and specificity; and per task whether
the image's closed yes/no pair was answered right together). Every column is a function of the
column sums, so a bootstrap replicate is one weighted sum: draw the images with replacement
(multinomial counts), multiply, recompute. Questions of one image share the image and so are
not independent; resampling whole images keeps that correlation inside each replicate. The
interval is the percentile interval (Efron & Tibshirani, *An Introduction to the Bootstrap*,
1993, section 13.3). Two runs on the same benchmark (a blind control, another model) are
compared with the same draws, so a difference's interval is a paired one.

Columns:

* the nine slot accuracies and their mean (the paper's table);
* ``abnormality_balanced``: the mean of sensitivity (accuracy on "yes, abnormal" questions) and
  specificity (accuracy on "no") of the abnormality question, which a constant "yes" cannot
  inflate (Brodersen et al., "The balanced accuracy and its posterior distribution", ICPR 2010);
* ``anatomy_paired`` / ``pathology_paired``: share of images whose closed-yes and closed-no
  questions of that task are both right (ProbMed's paired scoring of a question and its
  negated twin), so a model that always answers "yes" scores 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .generate import INSTRUCT_SLOTS

SLOTS = INSTRUCT_SLOTS
PAIRS = {"anatomy": ("anatomy_closed_yes", "anatomy_closed_no"), "pathology": ("pathology_closed_yes", "pathology_closed_no")}
COLUMNS = (*SLOTS, "abnormality_balanced", "anatomy_paired", "pathology_paired", "average")
HEADERS = {
    "anatomy_open": "anat open",
    "anatomy_closed_yes": "anat yes",
    "anatomy_closed_no": "anat no",
    "anatomy_mc": "anat MC",
    "abnormality_closed": "abn",
    "abnormality_balanced": "abn bal",
    "pathology_open": "path open",
    "pathology_closed_yes": "path yes",
    "pathology_closed_no": "path no",
    "pathology_mc": "path MC",
    "anatomy_paired": "anat pair",
    "pathology_paired": "path pair",
    "average": "average",
}
# The order columns are shown in: each balanced or paired column beside what it refines.
SHOWN = (
    "anatomy_open", "anatomy_closed_yes", "anatomy_closed_no", "anatomy_paired", "anatomy_mc",
    "abnormality_closed", "abnormality_balanced",
    "pathology_open", "pathology_closed_yes", "pathology_closed_no", "pathology_paired", "pathology_mc",
    "average",
)
LEVEL = 95.0

# Feature layout of the count matrix.
_SLOT = {slot: 2 * i for i, slot in enumerate(SLOTS)}  # correct at i, total at i + 1
_ABN = 2 * len(SLOTS)  # yes-correct, yes-total, no-correct, no-total
_PAIR = {"anatomy": _ABN + 4, "pathology": _ABN + 6}  # both-correct, pairs
FEATURES = _ABN + 8
_CHUNK = 250  # replicates per matrix product: memory stays flat with the benchmark size

Matrix = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Scored:
    """One scored question: its image, slot, reference answer and whether it was right."""

    image: str
    slot: str
    answer: str
    correct: bool


@dataclass(frozen=True)
class Estimate:
    """A column's value with its bootstrap interval (None where the column has no questions)."""

    value: float | None
    low: float | None = None
    high: float | None = None

    def to_dict(self) -> dict[str, float | None]:
        """Rounded for the JSON report."""
        return {"value": _round(self.value), "low": _round(self.low), "high": _round(self.high)}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def count_matrix(scored: Sequence[Scored], images: Sequence[str]) -> Matrix:
    """Per-image counts (rows in ``images`` order) of everything the columns are made of."""
    row = {image: i for i, image in enumerate(images)}
    counts = np.zeros((len(images), FEATURES))
    wrong_in_slot = np.zeros((len(images), len(SLOTS)))
    for item in scored:
        i = row[item.image]
        j = _SLOT[item.slot]
        counts[i, j] += item.correct
        counts[i, j + 1] += 1
        wrong_in_slot[i, j // 2] += not item.correct
        if item.slot == "abnormality_closed":
            k = _ABN if item.answer.strip().lower() == "yes" else _ABN + 2
            counts[i, k] += item.correct
            counts[i, k + 1] += 1
    for task, (yes, no) in PAIRS.items():
        has = (counts[:, _SLOT[yes] + 1] > 0) & (counts[:, _SLOT[no] + 1] > 0)
        right = has & (wrong_in_slot[:, _SLOT[yes] // 2] == 0) & (wrong_in_slot[:, _SLOT[no] // 2] == 0)
        counts[:, _PAIR[task]] = right
        counts[:, _PAIR[task] + 1] = has
    return counts


def _ratio(correct: Matrix, total: Matrix) -> Matrix:
    out = np.full(correct.shape, np.nan)
    np.divide(100.0 * correct, total, out=out, where=total > 0)
    return out


def columns(sums: Matrix) -> Matrix:
    """Column values (percent; NaN where undefined) from summed counts, one row per replicate."""
    sums = np.atleast_2d(sums)
    out = np.empty((sums.shape[0], len(COLUMNS)))
    for i, slot in enumerate(SLOTS):
        j = _SLOT[slot]
        out[:, i] = _ratio(sums[:, j], sums[:, j + 1])
    sensitivity = _ratio(sums[:, _ABN], sums[:, _ABN + 1])
    specificity = _ratio(sums[:, _ABN + 2], sums[:, _ABN + 3])
    out[:, COLUMNS.index("abnormality_balanced")] = (sensitivity + specificity) / 2  # NaN unless both exist
    for task, j in _PAIR.items():
        out[:, COLUMNS.index(f"{task}_paired")] = _ratio(sums[:, j], sums[:, j + 1])
    slots = out[:, : len(SLOTS)]
    present = ~np.isnan(slots)
    n = present.sum(axis=1)
    total = np.where(present, slots, 0.0).sum(axis=1)
    average = np.full(sums.shape[0], np.nan)
    np.divide(total, n, out=average, where=n > 0)
    out[:, COLUMNS.index("average")] = average
    return out


def draws(images: int, replicates: int, seed: int) -> Matrix:
    """Bootstrap weights: ``replicates`` rows of how often each image is drawn (seeded)."""
    rng = np.random.default_rng(seed)
    if images == 0 or replicates == 0:
        return np.zeros((0, images))
    # ``images`` draws with replacement per replicate, counted per image (a multinomial, faster).
    picks = rng.integers(0, images, size=(replicates, images))
    flat = (np.arange(replicates)[:, None] * images + picks).ravel()
    return np.bincount(flat, minlength=replicates * images).reshape(replicates, images).astype(np.float64)


def replicate_columns(counts: Matrix, weights: Matrix) -> Matrix:
    """Column values of every bootstrap replicate (rows of ``weights``)."""
    parts = [columns(weights[i : i + _CHUNK] @ counts) for i in range(0, weights.shape[0], _CHUNK)]
    return np.vstack(parts) if parts else np.zeros((0, len(COLUMNS)))


def estimates(point: Matrix, replicates: Matrix) -> dict[str, Estimate]:
    """Point values and percentile intervals per column (NaN replicates left out)."""
    out = {}
    tail = (100.0 - LEVEL) / 2
    for i, name in enumerate(COLUMNS):
        value = float(point[0, i])
        finite = replicates[:, i][np.isfinite(replicates[:, i])] if replicates.size else np.zeros(0)
        if np.isnan(value):
            out[name] = Estimate(None)
        elif finite.size == 0:
            out[name] = Estimate(value)
        else:
            low, high = np.percentile(finite, [tail, 100.0 - tail])
            out[name] = Estimate(value, float(low), float(high))
    return out


@dataclass(frozen=True)
class Measured:
    """One run's columns on one image set: the point values and every bootstrap replicate."""

    point: Matrix
    replicates: Matrix

    def estimates(self) -> dict[str, Estimate]:
        """Values with intervals."""
        return estimates(self.point, self.replicates)

    def minus(self, other: Measured) -> dict[str, Estimate]:
        """This run minus another on the same images and draws: a paired difference with its interval."""
        return estimates(self.point - other.point, self.replicates - other.replicates)


def measure(counts: Matrix, weights: Matrix) -> Measured:
    """Point values and bootstrap replicates of every column for one run on one image set."""
    return Measured(columns(counts.sum(axis=0)), replicate_columns(counts, weights))


def chance_levels(choices: dict[str, float]) -> dict[str, float]:
    """What a uniform random guess scores per column: 1/options for multiple choice, 50 for yes/no.

    Open questions have no finite answer set (0); a yes/no pair is right together a quarter of
    the time. ``choices`` maps a multiple-choice slot to its mean number of options.
    """
    level = {slot: 50.0 for slot in SLOTS}
    level |= {"anatomy_open": 0.0, "pathology_open": 0.0, "abnormality_balanced": 50.0}
    level |= {"anatomy_paired": 25.0, "pathology_paired": 25.0}
    for slot in ("anatomy_mc", "pathology_mc"):
        level[slot] = 100.0 / choices.get(slot, 4)
    level["average"] = sum(level[s] for s in SLOTS) / len(SLOTS)
    return level


def leakage(blind: dict[str, Estimate], chance: dict[str, float]) -> dict[str, Estimate]:
    """How far the blind run beats a random guess, floored at 0 (MMStar's leakage, against chance)."""

    def above(value: float | None, floor: float) -> float | None:
        return None if value is None else max(0.0, value - floor)

    return {c: Estimate(above(e.value, chance[c]), above(e.low, chance[c]), above(e.high, chance[c])) for c, e in blind.items()}


# --- the report's rows ------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageInfo:
    """What the tables group an image by; ``abnormal`` is None when the benchmark does not say."""

    region: str
    modality: str
    abnormal: bool | None


SUBSETS = ("all", "normal", "abnormal")


@dataclass
class MetricRow:
    """One row of every table: a group of images (all, or only normal / abnormal ones) and its columns."""

    table: str  # overall, region or modality
    name: str
    subset: str  # all, normal or abnormal images
    images: int
    values: dict[str, Estimate]
    blind: dict[str, Estimate] | None = None
    gain: dict[str, Estimate] | None = None
    leakage: dict[str, Estimate] | None = None
    other: dict[str, Estimate] | None = None
    difference: dict[str, Estimate] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for the JSON report."""
        out: dict[str, Any] = {"table": self.table, "name": self.name, "subset": self.subset, "images": self.images}
        for key in ("values", "blind", "gain", "leakage", "other", "difference"):
            table = getattr(self, key)
            if table is not None:
                out[key] = {c: e.to_dict() for c, e in table.items()}
        return out


@dataclass
class Metrics:
    """Every table's columns with bootstrap intervals, and the blind / comparison runs beside them."""

    rows: list[MetricRow]
    replicates: int
    seed: int
    chance: dict[str, float]
    blind: str | None = None
    compare: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for the JSON report."""
        return {
            "columns": list(COLUMNS),
            "bootstrap": {"replicates": self.replicates, "seed": self.seed, "unit": "image", "level": LEVEL},
            "chance": self.chance,
            "blind": self.blind,
            "compare": self.compare,
            "rows": [r.to_dict() for r in self.rows],
        }

    def table(self, name: str) -> list[MetricRow]:
        """The rows of one table (overall, region or modality), in order."""
        return [r for r in self.rows if r.table == name]

    def lines(self) -> list[str]:
        """The tables, then intervals, gain and differences for the overall rows."""
        out: list[str] = []
        for table, label in (("overall", ""), ("region", "region"), ("modality", "modality")):
            out += metric_table_lines(self.table(table), label) + [""]
        overall = self.table("overall")
        level = f"{LEVEL:g}%"
        if self.replicates:
            out.append(f"{level} intervals: bootstrap over images, {self.replicates} replicates, seed {self.seed}")
            out += _interval_lines([(f"{r.subset} images", r.values) for r in overall])
        if self.blind is not None:
            out.append(f"blind control {self.blind}: gain = with image - blind; leakage = blind above a random guess")
            row = overall[0]
            assert row.blind is not None and row.gain is not None and row.leakage is not None
            out += _interval_lines([("with image", row.values), ("blind", row.blind), ("gain", row.gain),
                                             ("leakage", row.leakage)])
        if self.compare is not None:
            out.append(f"compared with {self.compare}: difference = this - other (paired by image)")
            row = overall[0]
            assert row.other is not None and row.difference is not None
            out += _interval_lines([("this", row.values), ("other", row.other), ("difference", row.difference)])
        return out


def _estimate_text(e: Estimate) -> str:
    if e.value is None:
        return "-"
    if e.low is None or e.high is None:
        return f"{e.value:.1f}"
    return f"{e.value:.1f} [{e.low:.1f}, {e.high:.1f}]"


def _interval_lines(tables: list[tuple[str, dict[str, Estimate]]]) -> list[str]:
    """One line per column, one cell per (heading, estimates)."""
    cells = [[_estimate_text(t[c]) for _, t in tables] for c in SHOWN]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, (h, _) in enumerate(tables)]
    head = f"{'':<10}  " + "  ".join(f"{h:>{w}}" for (h, _), w in zip(tables, widths))
    out = [head, "-" * len(head)]
    for column, row in zip(SHOWN, cells):
        out.append(f"{HEADERS[column]:<10}  " + "  ".join(f"{c:>{w}}" for c, w in zip(row, widths)))
    return out + [""]


def metric_table_lines(rows: list[MetricRow], label: str) -> list[str]:
    """A fixed-width table of point values: one row per group, its normal / abnormal rows indented below."""
    names = [r.name if r.subset == "all" else f"  {r.subset}" for r in rows]
    width = max([len(label), 10] + [len(n) for n in names])
    head = f"{label:<{width}}  " + "  ".join(f"{HEADERS[c]:>9}" for c in SHOWN)
    out = [head, "-" * len(head)]
    for name, row in zip(names, rows):
        cells = ["-" if row.values[c].value is None else f"{row.values[c].value:.1f}" for c in SHOWN]
        out.append(f"{name:<{width}}  " + "  ".join(f"{c:>9}" for c in cells))
    return out


def compute_metrics(
    scored: Sequence[Scored],
    images: dict[str, ImageInfo],
    options: dict[str, list[int]],
    blind: tuple[str, Sequence[Scored]] | None = None,
    compare: tuple[str, Sequence[Scored]] | None = None,
    replicates: int = 1000,
    seed: int = 0,
) -> Metrics:
    """Every table's columns with intervals resampled by image; blind gain/leakage and paired differences.

    ``blind`` and ``compare`` are (predictions file, scored questions) of other runs on the same benchmark.
    """
    order = list(images)
    counts = count_matrix(scored, order)
    blind_counts = count_matrix(blind[1], order) if blind is not None else None
    other_counts = count_matrix(compare[1], order) if compare is not None else None
    chance = chance_levels({s: sum(v) / len(v) for s, v in options.items() if v})
    groups = [("overall", "all")]
    for table in ("region", "modality"):
        groups += [(table, name) for name in sorted({getattr(i, table) for i in images.values()})]
    infos = [images[image] for image in order]
    rows = []
    for table, name in groups:
        for subset in SUBSETS:
            index = [
                i for i, info in enumerate(infos)
                if (table == "overall" or getattr(info, table) == name)
                and (subset == "all" or info.abnormal == (subset == "abnormal"))
            ]
            if not index:
                continue
            weights = draws(len(index), replicates, seed)
            mine = measure(counts[index], weights)
            row = MetricRow(table, name, subset, len(index), mine.estimates())
            if blind_counts is not None:
                control = measure(blind_counts[index], weights)
                row.blind = control.estimates()
                row.gain = mine.minus(control)
                row.leakage = leakage(row.blind, chance)
            if other_counts is not None:
                other = measure(other_counts[index], weights)
                row.other = other.estimates()
                row.difference = mine.minus(other)
            rows.append(row)
    return Metrics(
        rows, replicates, seed, chance,
        blind=blind[0] if blind is not None else None,
        compare=compare[0] if compare is not None else None,
    )
