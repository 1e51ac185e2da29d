"""The ``report`` tool's text: the agent's earning-autonomy report, once it keeps one.

The report (what the agent did per service and action, how it went, and what that earns)
is a fold over the outcome ledger that ``devops-agent report`` reads. Until this agent
keeps that ledger, the tool says so in one line rather than inventing numbers.
``report_text`` is the one function the tool calls: the real report plugs in here.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.mcp.desk import Records

NO_LEDGER = "no report yet: this agent has no outcome ledger"


def report_text(
    records: Records, *, since: timedelta | None, service: str | None, now: datetime
) -> str:
    """The report over ``since`` (default 7 days) for one service or all, as text."""
    return NO_LEDGER
