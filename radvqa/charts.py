"""PNG charts of a dataset's statistics (matplotlib, Agg backend: no display needed).

Only ``radvqa stats`` imports this module; matplotlib is the ``stats`` extra.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from .errors import MissingDependencyError
from .generate import LETTERS
from .stats import _CONFIG_RANK, CHART_NAMES, DatasetStats, _split_rank, _task_rank
from .writers import temporary, writing

_SPLIT_COLOURS = {"train": "#4C72B0", "val": "#DD8452", "test": "#55A868"}
_LETTER_COLOURS = ("#4C72B0", "#DD8452", "#55A868", "#C44E52")
_DPI = 110


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise MissingDependencyError(
            "radvqa stats needs matplotlib for its charts", hint="pip install 'radvqa[stats]'"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_charts(stats: DatasetStats, report_dir: Path) -> list[Path]:
    """Draw every chart that has data; return the PNG paths written."""
    plt = _pyplot()
    written = []
    for name, draw in zip(CHART_NAMES, (_regions, _classes, _normal, _balance)):
        figure = draw(plt, stats)
        if figure is None:
            continue
        path = Path(report_dir) / f"{name}.png"
        tmp = temporary(path)
        try:
            with writing(path):
                figure.savefig(tmp, format="png", dpi=_DPI)
                tmp.replace(path)
        finally:
            plt.close(figure)
            if tmp.exists():
                tmp.unlink()
        written.append(path)
    return written


def _fit(
    fig: Any, labels: list[str], fontsize: float, bottom_in: float = 0.6, top_in: float = 0.45, axes: int = 1
) -> None:
    """Margins from the longest tick label: cheaper than a layout engine measuring every text."""
    width, height = fig.get_size_inches()
    label_in = max((len(s) for s in labels), default=4) * fontsize * 0.55 / 72 + 0.25
    left = min(0.6, label_in / width)
    if axes == 1:
        fig.subplots_adjust(left=left, right=0.94, bottom=bottom_in / height, top=1 - top_in / height)
    else:  # two panels side by side, each with its own labels
        fig.subplots_adjust(
            left=left, right=0.98, bottom=bottom_in / height, top=1 - top_in / height, wspace=2 * left + 0.1
        )


def _grouped_barh(ax: Any, labels: list[str], series: dict[str, list[float]], fmt: str) -> None:
    """Horizontal grouped bars: one group per label, one bar per series, values printed at the bar ends."""
    n = max(1, len(series))
    height = 0.8 / n
    for i, (name, values) in enumerate(series.items()):
        ys = [y + (i - (n - 1) / 2) * height for y in range(len(labels))]
        bars = ax.barh(ys, values, height=height, label=name, color=_SPLIT_COLOURS.get(name))
        ax.bar_label(bars, labels=[fmt.format(v) for v in values], padding=2, fontsize=7)
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.legend(loc="lower right", fontsize=8, title="split")
    ax.spines[["top", "right"]].set_visible(False)


def _regions(plt: Any, stats: DatasetStats) -> Any:
    counts = stats.image_counts()
    if not counts:
        return None
    splits = list(stats.image_views())
    per: dict[str, Counter[str]] = {s: Counter() for s in splits}
    for (split, _m, region, _p, _a), n in counts.items():
        per[split][region] += n
    regions = sorted({r for c in per.values() for r in c}, key=lambda r: -sum(per[s][r] for s in splits))
    series = {s: [100.0 * per[s][r] / max(1, sum(per[s].values())) for r in regions] for s in splits}
    fig, ax = plt.subplots(figsize=(8, 0.55 * len(regions) * max(1, len(splits)) / 2 + 1.5))
    _grouped_barh(ax, regions, series, "{:.1f}%")
    _fit(fig, regions, 10)
    ax.set_xlabel("share of the split's images (%)")
    totals = ", ".join(f"{s} {sum(per[s].values()):,}" for s in splits)
    ax.set_title(f"Images per region ({totals} images)")
    return fig


def _classes(plt: Any, stats: DatasetStats) -> Any:
    counts = stats.image_counts()
    if not counts:
        return None
    per: Counter[tuple[str, str, str]] = Counter()
    splits_of: dict[tuple[str, str, str], Counter[str]] = {}
    for (split, modality, region, pathology, _a), n in counts.items():
        key = (region, modality, pathology)
        per[key] += n
        splits_of.setdefault(key, Counter())[split] += n
    keys = sorted(per, key=lambda k: (k[0], -per[k], k[1], k[2]))
    regions = sorted({k[0] for k in keys})
    cmap = plt.get_cmap("tab10")
    colours = {r: cmap(i % 10) for i, r in enumerate(regions)}
    fig, ax = plt.subplots(figsize=(9, 0.17 * len(keys) + 1.5))
    ys = range(len(keys))
    values = [per[k] for k in keys]
    ax.barh(ys, values, color=[colours[k[0]] for k in keys], height=0.8)
    ax.grid(axis="x", linestyle=":", linewidth=0.6)
    ax.set_axisbelow(True)
    names = [f"{k[1]} {k[0]}: {k[2]}" for k in keys]
    ax.set_yticks(list(ys), names, fontsize=6)
    _fit(fig, names, 6)
    ax.invert_yaxis()
    if max(values) > 20 * max(1, min(values)):  # heavy imbalance: a log axis keeps small classes visible
        ax.set_xscale("log")
        ax.set_xlim(left=0.8)
        ax.set_xlabel("images, all splits (log scale)")
    else:
        ax.set_xlim(left=0)
        ax.set_xlabel("images, all splits")
    ax.set_title(f"Images per class ({len(keys)} classes, coloured by region)")
    ax.spines[["top", "right"]].set_visible(False)
    ax.margins(y=0.002)
    return fig


def _normal(plt: Any, stats: DatasetStats) -> Any:
    counts = stats.image_counts()
    if not counts:
        return None
    splits = list(stats.image_views())
    cells: dict[tuple[str, str], list[int]] = {}
    for (split, _m, region, _p, abnormal), n in counts.items():
        for key in ((split, "all regions"), (split, region)):
            cell = cells.setdefault(key, [0, 0])
            cell[1 if abnormal else 0] += n
    regions = ["all regions"] + sorted({r for (_s, r) in cells if r != "all regions"})
    series = {
        s: [100.0 * cells.get((s, r), [0, 0])[0] / max(1, sum(cells.get((s, r), [0, 0]))) for r in regions]
        for s in splits
    }
    fig, ax = plt.subplots(figsize=(8, 0.55 * len(regions) * max(1, len(splits)) / 2 + 1.5))
    _grouped_barh(ax, regions, series, "{:.0f}%")
    _fit(fig, regions, 10)
    ax.set_xlim(0, 105)
    ax.set_xlabel("normal images (%)")
    ax.set_title("Normal share per region")
    return fig


def _balance(plt: Any, stats: DatasetStats) -> Any:
    mc = sorted(
        {(c, s, slot) for c, s, slot, _ in stats.letters},
        key=lambda g: (_CONFIG_RANK.get(g[0], 9), _split_rank(g[1]), g[2]),
    )
    closed = sorted(
        {(c, s, t) for c, s, t, _ in stats.closed},
        key=lambda g: (_CONFIG_RANK.get(g[0], 9), _split_rank(g[1]), _task_rank(g[2])),
    )
    if not mc and not closed:
        return None
    rows = max(len(mc), len(closed), 1)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 0.35 * rows + 2.5))
    labels = [f"{c} {s}: {slot}" for c, s, slot in mc]
    start = [0.0] * len(mc)
    for letter, colour in zip(LETTERS, _LETTER_COLOURS):
        shares = []
        for c, s, slot in mc:
            whole = sum(stats.letters[(c, s, slot, x)] for x in LETTERS)
            shares.append(100.0 * stats.letters[(c, s, slot, letter)] / max(1, whole))
        bars = left.barh(range(len(mc)), shares, left=start, color=colour, label=letter)
        left.bar_label(bars, labels=[f"{v:.0f}" for v in shares], label_type="center", fontsize=7, color="white")
        start = [a + b for a, b in zip(start, shares)]
    for x in (25, 50, 75):
        left.axvline(x, color="black", linestyle=":", linewidth=0.8)
    left.set_yticks(range(len(mc)), labels, fontsize=8)
    left.invert_yaxis()
    left.set_xlim(0, 100)
    left.set_xlabel("correct letter (%); dotted lines: perfect balance")
    left.set_title("Multiple choice: correct letters")
    left.legend(ncols=4, loc="upper center", bbox_to_anchor=(0.5, -0.12 - 0.3 / rows), fontsize=8)

    labels = [f"{c} {s}: {t}" for c, s, t in closed]
    yes = []
    for c, s, t in closed:
        y, n = stats.closed[(c, s, t, "yes")], stats.closed[(c, s, t, "no")]
        yes.append(100.0 * y / max(1, y + n))
    bars = right.barh(range(len(closed)), yes, color="#4C72B0", label="yes")
    right.barh(range(len(closed)), [100 - v for v in yes], left=yes, color="#C44E52", label="no")
    right.bar_label(bars, labels=[f"{v:.1f}% yes" for v in yes], label_type="center", fontsize=7, color="white")
    right.axvline(50, color="black", linestyle=":", linewidth=0.8)
    right.set_yticks(range(len(closed)), labels, fontsize=8)
    right.invert_yaxis()
    right.set_xlim(0, 100)
    right.set_xlabel("answer (%)")
    right.set_title("Closed questions: yes / no")
    right.legend(ncols=2, loc="upper center", bbox_to_anchor=(0.5, -0.12 - 0.3 / rows), fontsize=8)
    for ax in (left, right):
        ax.spines[["top", "right"]].set_visible(False)
    _fit(fig, labels + [f"{c} {s}: {slot}" for c, s, slot in mc], 8, bottom_in=1.1, axes=2)
    return fig
