"""The ``report`` tool's text: the agent's earning-autonomy report.

The same fold over the outcome ledger as ``devops-agent report`` and the console's
``/ui/report`` (``agent/reporting.py``), over ``since`` (7 days unless given) for one
service or all. The rows and suggestions go back as JSON inside one untrusted block: the
per-name rows carry alert names, which whoever writes alert rules chose. The lines around
it are the agent's own words.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from agent.cli.report import report_json
from agent.config import AgentConfig
from agent.reporting import build_report

if TYPE_CHECKING:
    from agent.mcp.desk import Records
    from agent.mcp.render import Vocabulary

DEFAULT_SINCE = timedelta(days=7)


def report_text(
    records: Records,
    config: AgentConfig,
    vocab: Vocabulary,
    *,
    since: timedelta | None,
    service: str | None,
    now: datetime,
) -> str:
    """The report over ``since`` (default 7 days) for one service or all, as text."""
    span = since or DEFAULT_SINCE
    report, suggestions = build_report(records, config, since=span, now=now, service=service)
    start, end = f"{report.since:%Y-%m-%d %H:%MZ}", f"{report.until:%Y-%m-%d %H:%MZ}"
    skipped = f", {report.unreadable} unreadable record(s) skipped" if report.unreadable else ""
    head = (
        f"devops-agent report from {start} to {end}: {len(report.rows)} service/action "
        f"rows, {len(suggestions)} suggestion(s){skipped}. Suggestions are never applied: "
        "paste their `toml` into agent.toml yourself."
    )
    return "\n".join([head, vocab.block("report", report_json(report, suggestions))])
