"""The store's interface and records, independent of the database behind it.

An incident groups the findings of one problem of one service: same kind, same name,
same target. While any of them keeps firing the incident stays current, so a finding
that stays firing (or a storm of its siblings) never opens a second incident. Once no
finding of the group is seen, the incident is *cleared*; a later recurrence opens a new
one, and the cooldowns, kept in the actions table, stop it from flapping.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol, get_args

State = Literal["open", "diagnosing", "acting", "verifying", "resolved", "escalated", "skipped"]
STATES: tuple[State, ...] = get_args(State)


@dataclass
class Incident:
    """One problem of one service, from first finding to its end."""

    id: str
    group_key: str
    fingerprint: str
    kind: str
    name: str
    target: str | None
    severity: str
    state: State
    opened_at: datetime
    updated_at: datetime
    finding: dict[str, Any]
    action: str | None = None
    decided_by: str | None = None
    decision: dict[str, Any] | None = None
    blocked_reason: str | None = None
    verify_at: datetime | None = None
    acted_at: datetime | None = None
    cleared_at: datetime | None = None
    resolution: str | None = None

    def row(self) -> dict[str, Any]:
        """A JSON-friendly summary, the fields `incidents --json` promises first."""
        return {
            "id": self.id,
            "fingerprint": self.fingerprint,
            "target": self.target,
            "state": self.state,
            "action": self.action,
            "opened_at": self.opened_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "name": self.name,
            "kind": self.kind,
            "severity": self.severity,
            "decided_by": self.decided_by,
            "blocked_reason": self.blocked_reason,
            "resolution": self.resolution,
            "cleared_at": self.cleared_at.isoformat() if self.cleared_at else None,
        }


@dataclass
class Event:
    """One entry of an incident's timeline."""

    at: datetime
    kind: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class ActionRecord:
    """One action dispatched (or being dispatched) to the gateway."""

    incident_id: str
    target: str
    action: str
    at: datetime
    outcome: str | None = None


class IncidentStore(Protocol):
    """What the daemon needs from a store; SQLite now, PostgreSQL can implement it next."""

    def close(self) -> None:
        """Release the connection."""

    def current_for(self, group_key: str) -> Incident | None:
        """The incident of this group that is not cleared yet, if any."""

    def open_incident(self, incident: Incident) -> Incident:
        """Insert a new incident in state open."""

    def get(self, incident_id: str) -> Incident | None:
        """One incident by id (or unique id prefix)."""

    def transition(self, incident: Incident, state: State, now: datetime, **data: Any) -> Incident:
        """Move to ``state``, persist the incident, and record the transition event."""

    def save(self, incident: Incident, now: datetime) -> None:
        """Persist changed fields without a transition."""

    def add_event(self, incident_id: str, kind: str, now: datetime, data: dict[str, Any]) -> None:
        """Append a timeline event (LLM decision, gateway request and answer, ...)."""

    def events(self, incident_id: str) -> list[Event]:
        """The incident's timeline, oldest first."""

    def uncleared(self) -> list[Incident]:
        """Every incident whose findings are still being seen."""

    def in_state(self, *states: State) -> list[Incident]:
        """Incidents in any of the states, oldest first."""

    def recent(self, limit: int) -> list[Incident]:
        """The newest incidents first."""

    def record_action(self, record: ActionRecord) -> int:
        """Write an action before it is dispatched; returns its id."""

    def finish_action(self, action_id: int, outcome: str) -> None:
        """Record how a dispatched action ended."""

    def actions_since(self, since: datetime) -> list[ActionRecord]:
        """Actions at or after ``since``, fleet-wide."""

    def last_action(self, target: str, action: str) -> ActionRecord | None:
        """The latest action of this kind on this target."""

    def breaker(self, target: str) -> tuple[int, bool]:
        """Consecutive failed remediations and whether the breaker is open."""

    def set_breaker(self, target: str, failures: int, is_open: bool, now: datetime) -> None:
        """Update a target's circuit breaker."""

    def counts_by_state(self) -> dict[str, int]:
        """How many incidents are in each state."""
