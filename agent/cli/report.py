"""``devops-agent report`` as a terminal shows it: tables, then the suggestions with their
TOML; or one JSON document (``rows``, ``by_name``, ``suggestions``) for ``--json``.

What the report holds is read and folded by ``agent/reporting.py``; this only renders.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agent.guardrails.ladder import Suggestion
from agent.ledger.report import Report, Row
from agent.text import clip, printable


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


def _money(figures: dict[str, Any]) -> str:
    """The cost per verified recovery: '-' without one, 'unknown' without prices."""
    if figures["tokens_per_recovery"] is None:
        return "-"
    value = figures["cost_per_recovery"]
    return "unknown" if value is None else f"{value:.4f}"


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
        _money(f),
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
