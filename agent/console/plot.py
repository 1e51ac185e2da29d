"""The incident's series as an inline SVG, drawn on the server: no JavaScript, no library.

Pure: series (points in time), the rule's threshold, markers (opened, action sent,
verification ended) and the time window in; one ``<svg>`` string out. Every piece of
text in it (series labels, marker names) is escaped; the coordinates are numbers the
function computed. A Prometheus answer is read without trusting its shape.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape

WIDTH, HEIGHT = 760, 260
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 16, 36
COLOURS = ("#1f6feb", "#8250df", "#bf8700", "#1a7f37", "#cf222e")
MAX_SERIES = 5


@dataclass(frozen=True)
class Series:
    """One labelled line: (unix seconds, value) points, in time order."""

    label: str
    points: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Marker:
    """A moment on the time axis: when the incident opened, the action went out, ..."""

    at: datetime
    label: str


def series_from_matrix(result: object) -> list[Series]:
    """Prometheus' range answer (``data.result``) as series; malformed entries skipped."""
    out: list[Series] = []
    for entry in result if isinstance(result, list) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("values"), list):
            continue
        points = []
        for pair in entry["values"]:
            if isinstance(pair, list) and len(pair) == 2:
                try:
                    t, v = float(pair[0]), float(pair[1])
                except (TypeError, ValueError):
                    continue
                if math.isfinite(t) and math.isfinite(v):
                    points.append((t, v))
        metric = entry.get("metric")
        metric = metric if isinstance(metric, dict) else {}
        label = ", ".join(f"{k}={v}" for k, v in sorted(metric.items()) if k != "__name__")
        out.append(Series(label or "series", tuple(points)))
    return [s for s in out if s.points][:MAX_SERIES]


def _ticks(low: float, high: float) -> list[float]:
    if high <= low:
        return [low]
    return [low + (high - low) * i / 4 for i in range(5)]


def _short(value: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value:.3g}"


def _time(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%H:%M:%S")


def render(
    series: Sequence[Series],
    *,
    threshold: float | None,
    markers: Sequence[Marker],
    start: datetime,
    end: datetime,
    title: str,
) -> str:
    """The SVG of the series between ``start`` and ``end`` (trimmed to where data begins)."""
    times = [t for s in series for t, _ in s.points]
    values = [v for s in series for _, v in s.points]
    t0 = min([*times, start.timestamp()]) if times else start.timestamp()
    t0 = max(t0, min(times)) if times else t0
    t1 = max(end.timestamp(), t0 + 1)
    span = [*values, *([threshold] if threshold is not None else [])]
    low, high = (min(span), max(span)) if span else (0.0, 1.0)
    if high == low:
        low, high = low - 1, high + 1
    pad = (high - low) * 0.08
    low, high = low - pad, high + pad
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(t: float) -> float:
        return LEFT + (t - t0) / (t1 - t0) * plot_w

    def y(v: float) -> float:
        return TOP + (high - v) / (high - low) * plot_h

    parts: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{escape(title)}" '
        'class="plot">',
        f"<title>{escape(title)}</title>",
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" class="frame"/>',
    ]
    for tick in _ticks(low + pad, high - pad):
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
            'class="grid"/>'
            f'<text x="{LEFT - 6}" y="{y(tick) + 4:.1f}" class="ylabel">{_short(tick)}</text>'
        )
    ticks = _ticks(t0, t1)
    for i, tick in enumerate(ticks):
        anchor = "start" if i == 0 else "end" if i == len(ticks) - 1 else "middle"
        parts.append(
            f'<text x="{x(tick):.1f}" y="{HEIGHT - 12}" class="xlabel" '
            f'text-anchor="{anchor}">{_time(tick)}</text>'
        )
    if threshold is not None:
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(threshold):.1f}" '
            f'y2="{y(threshold):.1f}" class="threshold"/>'
            f'<text x="{WIDTH - RIGHT - 4}" y="{y(threshold) - 4:.1f}" class="tlabel">'
            f"threshold {_short(threshold)}</text>"
        )
    for i, line in enumerate(series):
        points = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in line.points if t >= t0)
        colour = COLOURS[i % len(COLOURS)]
        parts.append(
            f'<path d="M {points.replace(" ", " L ")}" stroke="{colour}" class="series">'
            f"<title>{escape(line.label)}</title></path>"
        )
    for marker in markers:
        mx = x(min(max(marker.at.timestamp(), t0), t1))
        parts.append(
            f'<line x1="{mx:.1f}" x2="{mx:.1f}" y1="{TOP}" y2="{HEIGHT - BOTTOM}" class="marker"/>'
            f'<text x="{mx + 3:.1f}" y="{TOP + 12}" class="mlabel">{escape(marker.label)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
