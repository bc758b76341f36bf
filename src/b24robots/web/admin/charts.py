"""Server-rendered SVG charts for the dashboard: no script, no library, nothing the CSP has to allow.

Each chart is an `<svg role="img">` with a `<title>` and a `<desc>` naming what it shows; the page puts
a table with the same numbers beside it (the accessible alternative, and what the tests read). Colours
come from CSS classes (`admin.css`), so the chart follows the page's theme.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH, HEIGHT = 720, 220
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 48, 12, 12, 36


@dataclass(frozen=True)
class Series:
    """One stacked part of every bar (e.g. "failures"): its CSS class, its legend text and its values."""

    css: str
    label: str
    values: Sequence[float]


def nice_max(value: float) -> float:
    """The smallest 1, 2 or 5 x 10^k at or above `value` (an axis that ends on a round number)."""
    if value <= 0:
        return 1.0
    step = 1.0
    while step * 10 <= value:
        step *= 10
    while step > value:
        step /= 10
    for m in (1, 2, 5, 10):
        if m * step >= value:
            return m * step
    return 10 * step


def _fmt(value: float) -> str:
    return f"{value:g}" if value >= 1 or value == 0 else f"{value:.3g}"


def _frame(chart_id: str, title: str, desc: str, css: str) -> list[str]:
    return [
        f'<svg class="chart {css}" id="{escape(chart_id)}" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'aria-labelledby="{escape(chart_id)}-title {escape(chart_id)}-desc" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{escape(chart_id)}-title">{escape(title)}</title>',
        f'<desc id="{escape(chart_id)}-desc">{escape(desc)}</desc>',
    ]


def _axis(top: float, unit: str) -> list[str]:
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    out = []
    for i in range(5):
        value = top * i / 4
        y = PAD_TOP + plot_h - plot_h * i / 4
        out.append(f'<line class="grid" x1="{PAD_LEFT}" x2="{WIDTH - PAD_RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        out.append(
            f'<text class="tick" x="{PAD_LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(_fmt(value))}{unit}</text>"
        )
    return out


def _legend(series: Sequence[Series]) -> list[str]:
    out, x = [], PAD_LEFT
    for s in series:
        out.append(f'<rect class="{escape(s.css)}" x="{x}" y="{HEIGHT - 12}" width="10" height="10"/>')
        out.append(f'<text class="legend" x="{x + 14}" y="{HEIGHT - 3}">{escape(s.label)}</text>')
        x += 24 + 7 * len(s.label)
    return out


def _x_labels(labels: Sequence[str], slot: float) -> list[str]:
    every = max(1, len(labels) // 8)  # at most ~8 labels, so they never overlap
    out = []
    for i, label in enumerate(labels):
        if i % every:
            continue
        x = PAD_LEFT + slot * i + slot / 2
        out.append(
            f'<text class="tick" x="{x:.1f}" y="{HEIGHT - PAD_BOTTOM + 14}" text-anchor="middle">{escape(label)}</text>'
        )
    return out


def stacked_bars(chart_id: str, title: str, desc: str, labels: Sequence[str], series: Sequence[Series]) -> Markup:
    """Vertical bars, one per label, each stacking the series' values in order (bottom first)."""
    n = max(1, len(labels))
    totals = [sum(s.values[i] for s in series) for i in range(len(labels))]
    top = nice_max(max(totals, default=0))
    plot_w, plot_h = WIDTH - PAD_LEFT - PAD_RIGHT, HEIGHT - PAD_TOP - PAD_BOTTOM
    slot = plot_w / n
    out = _frame(chart_id, title, desc, "bars")
    out += _axis(top, "")
    for i, label in enumerate(labels):
        base = 0.0
        x = PAD_LEFT + slot * i + slot * 0.15
        for s in series:
            value = s.values[i]
            if value <= 0:
                continue
            h = plot_h * value / top
            y = PAD_TOP + plot_h - plot_h * base / top - h
            out.append(
                f'<rect class="{escape(s.css)}" x="{x:.1f}" y="{y:.1f}" width="{slot * 0.7:.1f}" height="{h:.1f}">'
                f"<title>{escape(label)}: {escape(s.label)} {escape(_fmt(value))}</title></rect>"
            )
            base += value
    out += _x_labels(labels, slot)
    out += _legend(series)
    out.append("</svg>")
    return Markup("".join(out))  # noqa: S704 - every text in it went through escape()


def lines(
    chart_id: str,
    title: str,
    desc: str,
    labels: Sequence[str],
    series: Sequence[tuple[str, str, Sequence[float | None]]],
) -> Markup:
    """One polyline per series (css, label, values); a missing value breaks the line, a lone point is a dot."""
    n = max(1, len(labels))
    values = [v for _, _, vs in series for v in vs if v is not None]
    top = nice_max(max(values, default=0))
    plot_w, plot_h = WIDTH - PAD_LEFT - PAD_RIGHT, HEIGHT - PAD_TOP - PAD_BOTTOM
    slot = plot_w / n
    out = _frame(chart_id, title, desc, "lines")
    out += _axis(top, " s")
    for css, label, vs in series:
        run: list[str] = []
        for i, v in enumerate([*vs, None]):
            if v is not None:
                x = PAD_LEFT + slot * i + slot / 2
                y = PAD_TOP + plot_h - plot_h * v / top
                run.append(f"{x:.1f},{y:.1f}")
                out.append(
                    f'<circle class="{escape(css)}" cx="{x:.1f}" cy="{y:.1f}" r="2.5">'
                    f"<title>{escape(labels[i])}: {escape(label)} {escape(_fmt(v))} s</title></circle>"
                )
                continue
            if len(run) > 1:
                out.append(f'<polyline class="{escape(css)}" points="{" ".join(run)}"/>')
            run = []
    out += _x_labels(labels, slot)
    out += _legend([Series(css, label, []) for css, label, _ in series])
    out.append("</svg>")
    return Markup("".join(out))  # noqa: S704 - every text in it went through escape()


def hbars(chart_id: str, title: str, desc: str, labels: Sequence[str], series: Sequence[Series]) -> Markup:
    """Horizontal stacked bars, one row per label (robots or portals), the label on the left."""
    rows = max(1, len(labels))
    row_h = 22
    height = PAD_TOP + rows * row_h + 24
    left = 180
    totals = [sum(s.values[i] for s in series) for i in range(len(labels))]
    top = nice_max(max(totals, default=0))
    plot_w = WIDTH - left - PAD_RIGHT - 40
    out = [
        f'<svg class="chart hbars" id="{escape(chart_id)}" role="img" viewBox="0 0 {WIDTH} {height}" '
        f'aria-labelledby="{escape(chart_id)}-title {escape(chart_id)}-desc" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{escape(chart_id)}-title">{escape(title)}</title>',
        f'<desc id="{escape(chart_id)}-desc">{escape(desc)}</desc>',
    ]
    for i, label in enumerate(labels):
        y = PAD_TOP + i * row_h
        short = label if len(label) <= 26 else label[:25] + "…"
        out.append(f'<text class="tick" x="{left - 6}" y="{y + 15}" text-anchor="end">{escape(short)}</text>')
        base = 0.0
        for s in series:
            value = s.values[i]
            if value <= 0:
                continue
            w = plot_w * value / top
            x = left + plot_w * base / top
            out.append(
                f'<rect class="{escape(s.css)}" x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}">'
                f"<title>{escape(label)}: {escape(s.label)} {escape(_fmt(value))}</title></rect>"
            )
            base += value
        out.append(
            f'<text class="tick" x="{left + plot_w * base / top + 4:.1f}" y="{y + 15}">{escape(_fmt(totals[i]))}</text>'
        )
    x = left
    for s in series:
        out.append(f'<rect class="{escape(s.css)}" x="{x}" y="{height - 12}" width="10" height="10"/>')
        out.append(f'<text class="legend" x="{x + 14}" y="{height - 3}">{escape(s.label)}</text>')
        x += 24 + 7 * len(s.label)
    out.append("</svg>")
    return Markup("".join(out))  # noqa: S704 - every text in it went through escape()
