"""Reading the outcome ledger for a report: the one path of ``devops-agent report`` and
the console's ``/ui/report``.

The store does the time-range query (``IncidentStore.outcomes``); the fold
(``ledger/report.py``) and the suggestions (``guardrails/ladder.py``) are pure. A record
that cannot be read is skipped, logged and counted, never fatal. ``--since`` takes a
Prometheus-style duration and nothing else.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Protocol

from agent.config import AgentConfig, autonomy_of
from agent.errors import AgentError
from agent.guardrails.ladder import Suggestion, suggest
from agent.ledger.report import Report, fold
from agent.logs import get_logger
from agent.store.base import LedgerRead
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


class LedgerReader(Protocol):
    """What a report reads: the ledger's one time-range query (a store, or the MCP
    server's read-only view of one)."""

    def outcomes(self, since: datetime, until: datetime) -> LedgerRead:
        """The outcome records over [since, until) and the openings since ``since``."""
        ...


def build_report(
    store: LedgerReader,
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
