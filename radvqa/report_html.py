"""``radvqa evaluate --html``: one self-contained HTML page of the evaluation tables and charts.

Inline CSS and inline SVG only: no script, font or stylesheet is fetched, so the page opens
offline and can be attached to a paper's supplementary material as is.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from .evaluate import EvaluationReport
from .metrics import HEADERS, LEVEL, SHOWN, Estimate, MetricRow, Metrics
from .writers import write_bytes_atomic

_COLOURS = {"this model": "#4C72B0", "blind": "#DD8452", "other": "#55A868"}
_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 2em; }
th, td { border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
td small { color: #777; display: block; font-size: 11px; }
tr.sub td:first-child { padding-left: 2em; color: #555; }
.charts { display: flex; flex-wrap: wrap; gap: 1.5em; }
.legend span { display: inline-block; width: 12px; height: 12px; margin: 0 4px 0 12px; vertical-align: middle; }
"""


def _cell(e: Estimate | None) -> str:
    if e is None or e.value is None:
        return "<td>-</td>"
    interval = f"<small>{e.low:.1f} - {e.high:.1f}</small>" if e.low is not None and e.high is not None else ""
    return f"<td>{e.value:.1f}{interval}</td>"


def _table(rows: list[MetricRow], label: str, field: str = "values") -> str:
    head = "".join(f"<th>{escape(HEADERS[c])}</th>" for c in SHOWN)
    body = []
    for row in rows:
        values = getattr(row, field)
        if values is None:
            continue
        name = row.name if row.subset == "all" else f"{row.subset} images"
        css = "" if row.subset == "all" else ' class="sub"'
        body.append(f"<tr{css}><td>{escape(name)}</td>" + "".join(_cell(values[c]) for c in SHOWN) + "</tr>")
    return f"<table><tr><th>{escape(label)}</th>{head}</tr>{''.join(body)}</table>"


def _runs(metrics: Metrics) -> list[tuple[str, str]]:
    runs = [("this model", "values")]
    if metrics.blind is not None:
        runs.append(("blind", "blind"))
    if metrics.compare is not None:
        runs.append(("other", "other"))
    return runs


def bar_chart(column: str, rows: list[MetricRow], runs: list[tuple[str, str]]) -> str:
    """An inline SVG bar chart of one column: a bar per run for each group, whiskers at the interval."""
    bar, gap, top, left, height = 12, 10, 24, 34, 160
    width = left + len(rows) * (len(runs) * bar + gap) + gap
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{top + height + 90}" role="img">',
        f'<text x="{left}" y="16" font-size="13" font-weight="bold">{escape(HEADERS[column])}</text>',
    ]
    for tick in (0, 50, 100):
        y = top + height * (1 - tick / 100)
        parts.append(f'<line x1="{left}" x2="{width}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{left - 4}" y="{y + 4:.1f}" font-size="10" text-anchor="end">{tick}</text>')
    x = left + gap
    for row in rows:
        start = x
        for run, field in runs:
            values = getattr(row, field)
            e = values[column] if values is not None else None
            if e is not None and e.value is not None:
                y = top + height * (1 - e.value / 100)
                parts.append(
                    f'<rect x="{x}" y="{y:.1f}" width="{bar - 1}" height="{top + height - y:.1f}" '
                    f'fill="{_COLOURS[run]}"><title>{escape(run)}: {e.value:.1f}</title></rect>'
                )
                if e.low is not None and e.high is not None:
                    mid = x + (bar - 1) / 2
                    y1, y2 = top + height * (1 - e.low / 100), top + height * (1 - e.high / 100)
                    parts.append(f'<line x1="{mid}" x2="{mid}" y1="{y1:.1f}" y2="{y2:.1f}" stroke="#222"/>')
            x += bar
        name = row.name if row.subset == "all" else row.subset
        label_x = (start + x) / 2
        parts.append(
            f'<text x="{label_x:.1f}" y="{top + height + 10}" font-size="10" text-anchor="end" '
            f'transform="rotate(-45 {label_x:.1f} {top + height + 10})">{escape(name)}</text>'
        )
        x += gap
    parts.append("</svg>")
    return "".join(parts)


def render_html(report: EvaluationReport) -> str:
    """The whole page as text."""
    metrics = report.metrics
    assert metrics is not None
    runs = _runs(metrics)
    chart_rows = metrics.table("overall") + [r for r in metrics.rows if r.table != "overall" and r.subset == "all"]
    out = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>radvqa evaluation</title>",
        f"<style>{_CSS}</style></head><body><h1>radvqa evaluation</h1>",
        f"<p>{report.questions} questions from {escape(', '.join(report.benchmark))}; predictions "
        f"{escape(report.predictions)}. Values are percent; small numbers are {LEVEL:g}% bootstrap intervals "
        f"({metrics.replicates} replicates resampling images, seed {metrics.seed}).</p>",
    ]
    for table, label in (("overall", ""), ("region", "region"), ("modality", "modality")):
        out.append(f"<h2>{escape(table)}</h2>" + _table(metrics.table(table), label))
    if metrics.blind is not None:
        out.append(f"<h2>blind control</h2><p>{escape(metrics.blind)}: gain = with image - blind; leakage = blind "
                   "above a random guess.</p>")
        out.append("<h3>gain</h3>" + _table(metrics.table("overall"), "", "gain"))
        out.append("<h3>leakage</h3>" + _table(metrics.table("overall"), "", "leakage"))
    if metrics.compare is not None:
        out.append(f"<h2>compared with {escape(metrics.compare)}</h2><p>difference = this - other, paired by image.</p>")
        out.append(_table(metrics.table("overall"), "", "difference"))
    legend = "".join(f'<span style="background:{_COLOURS[r]}"></span>{escape(r)}' for r, _ in runs)
    out.append(f"<h2>charts</h2><p class='legend'>{legend}</p><div class='charts'>")
    out += [bar_chart(c, chart_rows, runs) for c in SHOWN]
    out.append("</div></body></html>\n")
    return "".join(out)


def write_html(report: EvaluationReport, path: Path) -> None:
    """Write the page atomically."""
    write_bytes_atomic(Path(path), render_html(report).encode("utf-8"))
