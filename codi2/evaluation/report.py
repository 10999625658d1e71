"""Reporting evaluation results: a table laid out like the paper's, CSV, JSON and a bar chart.

Rows are runs (models), columns are metrics — grouped under the task when there are several
(audio editing: Adding | Dropping | Replacement, each LSD KL FD), as in the paper's Tables 4
and 5. An arrow after each metric says which direction is better. Below the table,
:func:`format_sources` states for every metric the toolkit (and version) whose number it
equals and the feature network it ran, so a table can be cited. The bar chart draws one panel
per column with one bar per run, with Pillow (no plotting library needed).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from codi2.errors import DatasetError
from codi2.evaluation.tasks import EvalResult

__all__ = ["bar_chart", "columns", "format_sources", "format_table", "load_results", "write_outputs"]

NOT_RECORDED = "not recorded (results written before codi2 recorded its sources)"

GROUP_ORDER = ("all", "add", "drop", "replace")
GROUP_TITLES = {"all": "", "add": "Adding", "drop": "Dropping", "replace": "Replacement"}
_PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
            (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


def metric_title(name: str) -> str:
    return name.upper()


def group_title(group: str) -> str:
    return GROUP_TITLES.get(group, group)


def columns(results: Sequence[EvalResult]) -> list[tuple[str, str]]:
    """The ``(group, metric)`` columns of a table over ``results``, in the paper's order."""
    groups: list[str] = []
    metrics: dict[str, list[str]] = {}
    for r in results:
        for group, scores in r.scores.items():
            if group not in groups:
                groups.append(group)
            for m in scores:
                if m not in metrics.setdefault(group, []):
                    metrics[group].append(m)
    rank = {g: i for i, g in enumerate(GROUP_ORDER)}
    first_seen = list(groups)
    groups.sort(key=lambda g: (rank.get(g, len(rank)), first_seen.index(g)))
    return [(g, m) for g in groups for m in metrics[g]]


def _direction(results: Sequence[EvalResult], metric: str) -> str:
    for r in results:
        if metric in r.higher_is_better:
            return "↑" if r.higher_is_better[metric] else "↓"
    return ""


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if abs(value) >= 10 else f"{value:.3f}"


def format_table(results: Sequence[EvalResult]) -> str:
    """A plain-text table: one row per run, one column per (group, metric)."""
    cols = columns(results)
    heads = [f"{metric_title(m)}{_direction(results, m)}" for _, m in cols]
    rows = [[r.run] + [_fmt(r.scores.get(g, {}).get(m)) for g, m in cols] for r in results]
    first = max(len("Method"), *(len(row[0]) for row in rows))
    widths = [max(len(h), *(len(row[i + 1]) for row in rows), 6) for i, h in enumerate(heads)]
    lines = []
    if any(group_title(g) for g, _ in cols):  # a group header line above the metric names
        cells, i = [], 0
        while i < len(cols):
            j = i
            while j < len(cols) and cols[j][0] == cols[i][0]:
                j += 1
            span = sum(widths[i:j]) + 2 * (j - i - 1)
            cells.append(group_title(cols[i][0]).center(span))
            i = j
        lines.append(" " * first + "  " + "  ".join(cells))
    lines.append("Method".ljust(first) + "  " + "  ".join(h.rjust(w) for h, w in zip(heads, widths)))
    lines.append("-" * len(lines[-1]))
    for row in rows:
        lines.append(row[0].ljust(first) + "  " + "  ".join(c.rjust(w) for c, w in zip(row[1:], widths)))
    return "\n".join(lines)


def sources(results: Sequence[EvalResult]) -> list[tuple[str, str, str, list[str]]]:
    """``(metric, matches, network, runs)`` for every metric in the table, one row per distinct
    source (runs scored with different networks get a row each)."""
    rows: dict[tuple[str, str, str], list[str]] = {}
    for metric in dict.fromkeys(m for _, m in columns(results)):
        for r in results:
            if not any(metric in scores for scores in r.scores.values()):
                continue
            source = r.sources.get(metric) or {}
            key = (metric, source.get("matches") or NOT_RECORDED, source.get("network") or "-")
            rows.setdefault(key, []).append(r.run)
    return [(*key, runs) for key, runs in rows.items()]


def format_sources(results: Sequence[EvalResult]) -> str:
    """What each number equals (toolkit, version, which of its numbers) and its feature network."""
    lines = ["Sources (each number equals the toolkit's; feature network used):"]
    several = len(results) > 1
    for metric, matches, network, runs in sources(results):
        who = f" [{', '.join(runs)}]" if several else ""
        lines.append(f"  {metric_title(metric)}{who}: {matches}")
        lines.append(f"  {' ' * len(metric_title(metric))}  network: {network}")
    return "\n".join(lines)


def load_results(paths: Sequence[str | Path]) -> list[EvalResult]:
    """Results saved by ``write_outputs`` (``results.json``: one result or a list of them)."""
    out = []
    for path in paths:
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DatasetError(f"results file {str(path)!r} cannot be read: {exc}") from None
        entries = raw.get("results", [raw]) if isinstance(raw, dict) else raw
        try:
            out += [EvalResult.from_dict(e) for e in entries]
        except (KeyError, TypeError) as exc:
            raise DatasetError(f"results file {str(path)!r} is not a codi2 eval result ({exc})") from None
    return out


def write_outputs(results: Sequence[EvalResult], out: str | Path, *, chart: bool = True) -> dict[str, Path]:
    """Write ``results.json``, ``results.csv``, ``per_item.csv`` and ``results.png`` into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "csv": out / "results.csv", "items": out / "per_item.csv"}
    paths["json"].write_text(json.dumps({"results": [r.to_dict() for r in results]}, indent=2))
    with paths["csv"].open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["run", "task", "group", "metric", "value", "higher_is_better", "count",
                         "matches", "network"])
        for r in results:
            for group, scores in r.scores.items():
                for metric, value in scores.items():
                    source = r.sources.get(metric) or {}
                    writer.writerow([r.run, r.task, group, metric, value, r.higher_is_better.get(metric),
                                     r.counts.get(group), source.get("matches") or NOT_RECORDED,
                                     source.get("network") or ""])
    with paths["items"].open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["run", "task", "group", "item", "metric", "value"])
        for r in results:
            for row in r.items:
                writer.writerow([r.run, r.task, row["group"], row["item"], row["metric"], row["value"]])
    if chart:
        paths["chart"] = bar_chart(results, out / "results.png")
    return paths


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed-size bitmap font
        return ImageFont.load_default()


def bar_chart(results: Sequence[EvalResult], path: str | Path, *, panel: tuple[int, int] = (260, 220)) -> Path:
    """One panel per (group, metric), one bar per run, value printed above each bar (PNG)."""
    from PIL import Image, ImageDraw

    cols = columns(results)
    if not cols:
        raise DatasetError("nothing to chart: the results hold no scores")
    per_row = min(3, len(cols))
    n_rows = -(-len(cols) // per_row)
    legend_h = 24 + 18 * len(results)
    width, height = panel[0] * per_row, panel[1] * n_rows + legend_h
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    small, title_font = _font(11), _font(13)
    for k, r in enumerate(results):  # legend
        y = 8 + 18 * k
        draw.rectangle([10, y, 22, y + 12], fill=_PALETTE[k % len(_PALETTE)])
        draw.text((28, y - 1), r.run, fill="black", font=small)
    for c, (group, metric) in enumerate(cols):
        x0, y0 = (c % per_row) * panel[0], legend_h + (c // per_row) * panel[1]
        better = "higher is better" if _direction(results, metric) == "↑" else "lower is better"
        title = " · ".join(t for t in (group_title(group), metric_title(metric)) if t)
        draw.text((x0 + 10, y0 + 4), title, fill="black", font=title_font)
        draw.text((x0 + 10, y0 + 20), better, fill=(90, 90, 90), font=small)
        values = [r.scores.get(group, {}).get(metric) for r in results]
        known = [v for v in values if v is not None]
        top, bottom = max([0.0, *known]), min([0.0, *known])
        span = (top - bottom) or 1.0
        plot_top, plot_bottom = y0 + 52, y0 + panel[1] - 16
        zero_y = plot_bottom - (0 - bottom) / span * (plot_bottom - plot_top)
        slot = (panel[0] - 30) / max(1, len(results))
        for k, v in enumerate(values):
            if v is None:
                continue
            left = x0 + 15 + k * slot + slot * 0.15
            right = left + slot * 0.7
            y = plot_bottom - (v - bottom) / span * (plot_bottom - plot_top)
            draw.rectangle([left, min(y, zero_y), right, max(y, zero_y)], fill=_PALETTE[k % len(_PALETTE)])
            draw.text((left, min(y, zero_y) - 14), _fmt(v), fill="black", font=small)
        draw.line([x0 + 10, zero_y, x0 + panel[0] - 10, zero_y], fill=(60, 60, 60))
    path = Path(path)
    image.save(path)
    return path
