"""The report page's small charts as inline SVG, drawn on the server: no JavaScript.

Pure: the report's figures in, one ``<svg>`` string out. Incidents per day per service
are stacked bars; time to recovery is one bar per (service, action) row, p50 solid and
p90 light behind it. Every label is escaped; every coordinate is a number computed here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from html import escape

from agent.console.plot import COLOURS

WIDTH = 760
LEFT, RIGHT, TOP, BOTTOM = 48, 16, 16, 40
#: At most this many days are drawn (the latest ones).
MAX_DAYS = 120
BAR_HEIGHT, BAR_GAP = 14, 8
LABEL_WIDTH = 260


def _days(first: date, last: date) -> list[date]:
    count = min(MAX_DAYS, (last - first).days + 1)
    return [last - timedelta(days=count - 1 - i) for i in range(max(count, 1))]


def daily_bars(per_day: Mapping[str, Mapping[str, int]], first: date, last: date) -> str:
    """Incidents that ended per day, stacked by service, from ``first`` to ``last``;
    "" when there are none."""
    if not per_day:
        return ""
    services = sorted({s for counts in per_day.values() for s in counts})
    colour = {s: COLOURS[i % len(COLOURS)] for i, s in enumerate(services)}
    days = _days(first, last)
    height = 200
    plot_w, plot_h = WIDTH - LEFT - RIGHT, height - TOP - BOTTOM
    top = max((sum(per_day.get(d.isoformat(), {}).values()) for d in days), default=0) or 1
    step = plot_w / len(days)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}" role="img" class="plot" '
        'aria-label="incidents per day per service">',
        "<title>incidents per day per service</title>",
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" class="frame"/>',
        f'<text x="{LEFT - 6}" y="{TOP + 10}" class="ylabel">{top}</text>',
        f'<text x="{LEFT - 6}" y="{TOP + plot_h}" class="ylabel">0</text>',
    ]
    for i, day in enumerate(days):
        x = LEFT + i * step
        base: float = TOP + plot_h
        for service in services:
            n = per_day.get(day.isoformat(), {}).get(service, 0)
            if not n:
                continue
            h = n / top * plot_h
            base -= h
            parts.append(
                f'<rect x="{x + 1:.1f}" y="{base:.1f}" width="{max(step - 2, 1):.1f}" '
                f'height="{h:.1f}" fill="{colour[service]}">'
                f"<title>{escape(service)}: {n} on {day.isoformat()}</title></rect>"
            )
    for i, day in ((0, days[0]), (len(days) - 1, days[-1])):
        anchor = "start" if i == 0 else "end"
        x = LEFT if i == 0 else WIDTH - RIGHT
        parts.append(
            f'<text x="{x}" y="{height - 24}" class="xlabel" text-anchor="{anchor}">'
            f"{day.isoformat()}</text>"
        )
    x = LEFT
    for service in services:
        parts.append(
            f'<rect x="{x}" y="{height - 12}" width="10" height="10" fill="{colour[service]}"/>'
            f'<text x="{x + 14}" y="{height - 3}" class="xlabel">{escape(service)}</text>'
        )
        x += 24 + 7 * len(service)
    parts.append("</svg>")
    return "".join(parts)


def _seconds(value: float) -> str:
    if value >= 3600:
        return f"{value / 3600:.1f} h"
    return f"{value / 60:.1f} min" if value >= 120 else f"{value:.0f} s"


def recovery_bars(rows: Sequence[tuple[str, float | None, float | None]]) -> str:
    """Time to recovery per row (label, p50, p90 in seconds); rows without one are left
    out; "" when none has one."""
    shown = [(label, p50, p90) for label, p50, p90 in rows if p50 is not None]
    if not shown:
        return ""
    longest = max((p90 or p50 or 0.0) for _, p50, p90 in shown) or 1.0
    height = TOP + len(shown) * (BAR_HEIGHT + BAR_GAP) + 8
    plot_w = WIDTH - LABEL_WIDTH - RIGHT - 80
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}" role="img" class="plot" '
        'aria-label="time to recovery, p50 and p90">',
        "<title>time to recovery, p50 and p90</title>",
    ]
    for i, (label, p50, p90) in enumerate(shown):
        y = TOP + i * (BAR_HEIGHT + BAR_GAP)
        assert p50 is not None
        far = p90 if p90 is not None else p50
        parts.append(
            f'<text x="{LABEL_WIDTH - 6}" y="{y + BAR_HEIGHT - 3}" class="ylabel">'
            f"{escape(label)}</text>"
            f'<rect x="{LABEL_WIDTH}" y="{y}" width="{far / longest * plot_w:.1f}" '
            f'height="{BAR_HEIGHT}" class="p90"><title>p90 {_seconds(far)}</title></rect>'
            f'<rect x="{LABEL_WIDTH}" y="{y}" width="{p50 / longest * plot_w:.1f}" '
            f'height="{BAR_HEIGHT}" class="p50"><title>p50 {_seconds(p50)}</title></rect>'
            f'<text x="{LABEL_WIDTH + far / longest * plot_w + 6:.1f}" y="{y + BAR_HEIGHT - 3}" '
            f'class="xlabel">{_seconds(p50)} / {_seconds(far)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
