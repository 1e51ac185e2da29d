"""What happened to the same problem before: the past incidents of one group.

"Has this happened before, and what did we do?" is the first question at 3 a.m. For a
finding, the store gives the last incidents of the same group (same kind, name and
service) within ``diagnosis.history_hours``: when each opened, what was decided and by
whom, what was sent and what the gateway said, whether verification resolved it, and how
long the problem stayed away before it came back. Only the agent's own records: never
alert text. The diagnosis and the runbook read these records, and the ``repeat_failed``
guardrail (``guardrails/repeat.py``) decides from them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

#: At most this many past incidents are looked at.
HISTORY_LIMIT = 10
#: The resolution verification writes when an action did not help.
NOT_RECOVERED = "not recovered"


@dataclass(frozen=True)
class SentAction:
    """An action the agent claimed for a past incident, and how the gateway answered."""

    action: str
    outcome: str | None
    mutating: bool


@dataclass(frozen=True)
class PastIncident:
    """One past incident of the same problem."""

    id: str
    opened_at: datetime
    state: str
    decided_by: str | None
    decided: str | None
    sent: tuple[SentAction, ...]
    #: Verification said: True recovered, False not recovered, None never verified.
    verified: bool | None
    ended_at: datetime | None
    #: From its end to the next incident of the group (the next one, or the current).
    quiet_seconds: float | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly view, for the decision record and `incidents show`."""
        return {
            "id": self.id,
            "opened_at": self.opened_at.isoformat(),
            "state": self.state,
            "decided_by": self.decided_by,
            "decided": self.decided,
            "sent": [f"{s.action}: {s.outcome or 'no answer'}" for s in self.sent],
            "verified": self.verified,
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "quiet_seconds": None if self.quiet_seconds is None else round(self.quiet_seconds),
        }


@dataclass(frozen=True)
class PastRow:
    """What the store reads of one past incident (its columns and its claimed actions)."""

    id: str
    opened_at: datetime
    state: str
    decided_by: str | None
    decided: str | None
    resolution: str | None
    cleared_at: datetime | None
    sent: tuple[SentAction, ...]


def verified_of(state: str, resolution: str | None) -> bool | None:
    """What verification said of an incident that ended in ``state``."""
    if state == "resolved":
        return True
    if state == "escalated" and (resolution or "").startswith(NOT_RECOVERED):
        return False
    return None


def assemble(rows: Sequence[PastRow], next_opened: datetime) -> list[PastIncident]:
    """The past incidents, newest first, from rows newest first; ``next_opened`` is when
    the current incident (the one that asks) opened."""
    out: list[PastIncident] = []
    later = next_opened
    for row in rows:
        quiet = (later - row.cleared_at).total_seconds() if row.cleared_at else None
        out.append(
            PastIncident(
                id=row.id,
                opened_at=row.opened_at,
                state=row.state,
                decided_by=row.decided_by,
                decided=row.decided,
                sent=row.sent,
                verified=verified_of(row.state, row.resolution),
                ended_at=row.cleared_at,
                quiet_seconds=max(0.0, quiet) if quiet is not None else None,
            )
        )
        later = row.opened_at
    return out
