"""``devops-agent report``: what the agent did, how well, at what cost, and which tiers
the evidence supports.

Reads the outcome ledger over a time range (``--since``, a Prometheus-style duration),
folds it (``ledger/report.py``) and asks the ladder for suggestions
(``guardrails/ladder.py``); prints tables, or one JSON document with ``--json``. It never
creates a store and never changes a tier.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from agent.config import AgentConfig, autonomy_of
from agent.errors import AgentError
from agent.guardrails.ladder import Suggestion, suggest
from agent.ledger.report import Report, Row, fold
from agent.logs import get_logger
from agent.store.base import IncidentStore
from agent.text import clip, printable

log = get_logger("agent.report")

_UNITS = {"y": 365 * 86400, "w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}
_PART = re.compile(r"([0-9]+)(ms|[ywdhms])")
#: Far enough back for any retention (keep_days is at most ten years).
MAX_SECONDS = 20 * 365 * 86400


class BadDuration(AgentError):
    """``--since`` is not a duration."""


def parse_duration(text: str) -> timedelta:
    """A Prometheus-style duration (``90m``, ``7d``, ``1h30m``); BadDuration otherwise."""
    pos, seconds = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        value, unit = int(match.group(1)), match.group(2)
        seconds += value / 1000 if unit == "ms" else value * _UNITS[unit]
        pos = match.end()
    if not text or pos != len(text) or seconds <= 0 or seconds > MAX_SECONDS:
        raise BadDuration(
            f"--since: {clip(printable(text), 40)!r} is not a duration like 90m, 7d or 1h30m "
            "(units ms, s, m, h, d, w, y; more than 0, at most 20y)"
        )
    return timedelta(seconds=seconds)


def build_report(
    store: IncidentStore,
    config: AgentConfig,
    *,
    since: timedelta,
    now: datetime,
    service: str | None = None,
) -> tuple[Report, list[Suggestion]]:
    """Read the ledger over the range and fold it; the report and its suggestions."""
    start = now - since
    read = store.outcomes(start, now + timedelta(seconds=1))
    for bad in read.unreadable:
        log.warning("outcome_unreadable", incident_id=bad.id, error=bad.error)
    report = fold(
        read.outcomes,
        read.openings,
        since=start,
        until=now,
        tier_of=lambda s, a: autonomy_of(config, s, a),
        services=config.services,
        recurrence_seconds=config.policy.recurrence_seconds,
        service=service,
        unreadable=len(read.unreadable),
    )
    return report, suggest(report.rows, config)


def report_json(report: Report, suggestions: Sequence[Suggestion]) -> dict[str, Any]:
    """The report as one JSON document: ``rows``, ``by_name`` and ``suggestions``."""
    return {
        "since": report.since.isoformat(),
        "until": report.until.isoformat(),
        "unreadable": report.unreadable,
        "rows": [r.to_dict() for r in report.rows],
        "by_name": [r.to_dict() for r in report.by_name],
        "suggestions": [s.to_dict() for s in suggestions],
    }


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _secs(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 60:.1f}m" if value >= 600 else f"{value:.0f}s"


def _money(value: float | None, tokens: int) -> str:
    if value is None:
        return "unknown" if tokens else "-"
    return f"{value:.4f}"


_HEAD = (
    "incidents alone sent approved denied observed success recur ttr_p50 ttr_p90 "
    "answer_p50 agree tokens/rec cost/rec cleared_alone persisted"
).split()


def _cells(row: Row) -> list[str]:
    f = row.tally.figures()
    per = f["tokens_per_recovery"]
    return [
        str(f["incidents"]),
        str(f["alone_today"]),
        str(f["sent"]),
        str(f["approved"]),
        str(f["denied"]),
        str(f["observed"]),
        _pct(f["success_rate"]),
        _pct(f["recurrence_rate"]),
        _secs(f["time_to_recovery_p50_seconds"]),
        _secs(f["time_to_recovery_p90_seconds"]),
        _secs(f["approval_latency_p50_seconds"]),
        _pct(f["agreement_rate"]),
        "-" if per is None else f"{per:.0f}",
        _money(f["cost_per_recovery"], f["tokens"]),
        _pct(f["observed_cleared_alone_rate"]),
        _pct(f["observed_persisted_rate"]),
    ]


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return lines


def report_text(report: Report, suggestions: Sequence[Suggestion]) -> str:
    """The report as tables for a terminal, then the suggestions with their TOML."""
    span = f"{report.since:%Y-%m-%d %H:%M}Z to {report.until:%Y-%m-%d %H:%M}Z"
    if not report.rows:
        lines = [f"no incident ended from {span}"]
    else:
        by_action = [
            [
                clip(printable(r.service), 40) + ("" if r.configured else " (not configured)"),
                clip(printable(r.action), 24),
                r.tier,
                *_cells(r),
            ]
            for r in report.rows
        ]
        by_name = [[clip(printable(r.name), 48), *_cells(r)] for r in report.by_name]
        lines = [
            f"outcomes from {span}",
            "",
            *_table(["service", "action", "tier", *_HEAD], by_action),
            "",
            *_table(["finding", *_HEAD], by_name),
        ]
    if report.unreadable:
        lines += ["", f"{report.unreadable} ledger row(s) could not be read and were skipped"]
    lines += ["", "suggestions (never applied by the agent):" if suggestions else "no suggestion"]
    for s in suggestions:
        lines += [
            f"  {printable(s.service)} {printable(s.action)}: {s.from_tier} -> {s.to_tier}",
            f"    evidence: {printable(s.evidence)}",
            "    paste into the TOML file (replacing the service's autonomy line, if any):",
            *(f"      {line}" for line in s.toml.splitlines()),
        ]
    return "\n".join(lines)
