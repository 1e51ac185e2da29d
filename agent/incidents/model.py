"""An incident and the one table of moves it may make.

An incident groups the findings of one problem of one service: same kind, same name,
same target. While any of them is seen the incident is *current* (``cleared_at`` unset),
so a finding that keeps firing, or a storm of its siblings, never opens a second one; a
recurrence after it cleared opens a new incident, and the cooldowns stop it from flapping.

States::

    open ──▶ diagnosing ──▶ decided ──▶ acting ──▶ verifying ──▶ resolved
      │          │  ▲          │          │            │
      │          │  └ lease    │          │            └──────▶ escalated
      │          │    expired  │          └─────────────────────▶ escalated
      ├──────────┼─────────────┼──────────────────────────────▶ escalated
      └──────────┴─────────────┴──────────────────────────────▶ skipped

    diagnosing ──▶ awaiting_approval ──▶ acting      (a human approved)
    acting ─────▶ awaiting_approval ──▶ escalated   (denied, expired)
      (a read-only step ran first)   ──▶ skipped     (the finding cleared first)
    awaiting_approval ──▶ approved ──▶ acting        (a yes held by a passing guardrail,
                                   ──▶ escalated      sent by the first cycle that can,
                                   ──▶ skipped        until the approval's deadline)

``acting`` lasts from the committed claim of an action until its result is recorded; with
``verifying`` it is what "an action in flight" means. Terminal states never move again.
``awaiting_approval`` holds a changing action the agent may not run on its own (see
``guardrails/autonomy.py``) until a human approves or denies it, or ``approval_until``;
``approved`` holds a yes that a passing guardrail (cooldown, an action in flight, an
unhealthy Prometheus, a failed re-check) kept from being sent at once.

A fleet storm (too many services firing at once) is one incident of kind ``storm``: it
opens straight into ``watching`` (handed to humans, watched until the storm ends, then
``resolved``), and while it lasts the other open incidents are ``held`` instead of being
diagnosed one by one; when it ends they go back to ``open``.

An action whose tier is ``observe`` is decided and never sent: the incident goes to
``watching`` (after a read-only step of another tier, if one runs first) and is watched
until the finding ends: cleared on its own, cleared after another hand acted, or still
firing at the verify time; it then ends ``skipped`` with what was seen::

    diagnosing ──▶ watching ──▶ skipped     (observed: would have sent or asked)
    acting ─────▶ watching                  (after a read-only step)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal, get_args

from agent.config import Severity
from agent.diagnosis.models import Decision
from agent.errors import AgentError
from agent.sweep.findings import Finding, fingerprint

State = Literal[
    "open",
    "diagnosing",
    "decided",
    "awaiting_approval",
    "approved",
    "acting",
    "verifying",
    "held",
    "watching",
    "resolved",
    "escalated",
    "skipped",
]
STATES: tuple[State, ...] = get_args(State)
TERMINAL: frozenset[State] = frozenset({"resolved", "escalated", "skipped"})
#: An action is in flight from its claim until verification ends.
IN_FLIGHT: frozenset[State] = frozenset({"acting", "verifying"})

TRANSITIONS: Mapping[State, frozenset[State]] = {
    "open": frozenset({"diagnosing", "skipped", "escalated", "held", "watching"}),
    "diagnosing": frozenset(
        {"decided", "awaiting_approval", "skipped", "escalated", "open", "watching"}
    ),
    "decided": frozenset({"acting", "skipped", "escalated"}),
    "awaiting_approval": frozenset({"acting", "approved", "skipped", "escalated"}),
    "approved": frozenset({"acting", "skipped", "escalated"}),
    "acting": frozenset({"verifying", "awaiting_approval", "escalated", "watching"}),
    "verifying": frozenset({"resolved", "escalated"}),
    "held": frozenset({"open", "skipped", "escalated"}),
    "watching": frozenset({"resolved", "escalated", "skipped"}),
    "resolved": frozenset(),
    "escalated": frozenset(),
    "skipped": frozenset(),
}


class ForbiddenTransition(AgentError):
    """A step tried a move the lifecycle table does not allow: a bug, never data."""


def group_key(kind: str, name: str, target: str | None, finding_fp: str) -> str:
    """One incident per (kind, name, service); without a service, per finding."""
    return fingerprint(kind, name, {"target": target or f"fp:{finding_fp}"}, ())


def group_of(finding: Finding) -> str:
    """The group key of a finding."""
    return group_key(finding.kind, finding.name, finding.target, finding.fingerprint)


@dataclass(frozen=True)
class Event:
    """One entry of an incident's timeline."""

    at: datetime
    kind: str
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Incident:
    """One problem of one service, from its first finding to its end."""

    id: str
    group_key: str
    state: State
    opened_at: datetime
    updated_at: datetime
    finding: Finding
    decision: Decision | None = None
    blocked_reason: str | None = None
    #: The service an action was claimed for: at most one in flight per service.
    action_target: str | None = None
    #: What the gateway said of the dispatch: succeeded, failed, unknown, ...
    dispatch_outcome: str | None = None
    acted_at: datetime | None = None
    verify_at: datetime | None = None
    cleared_at: datetime | None = None
    resolution: str | None = None
    lease_owner: str | None = None
    lease_until: datetime | None = None
    #: Until when a human may approve the action that waits (``awaiting_approval``).
    approval_until: datetime | None = None
    #: Bumped by every committed step; a step commits only over the version it was made from.
    version: int = 0

    @property
    def fingerprint(self) -> str:
        """The fingerprint of the finding that opened the incident."""
        return self.finding.fingerprint

    @property
    def kind(self) -> str:
        """alert, health or anomaly."""
        return self.finding.kind

    @property
    def name(self) -> str:
        """The alert or check name."""
        return self.finding.name

    @property
    def target(self) -> str | None:
        """The service the finding is about."""
        return self.finding.target

    @property
    def severity(self) -> Severity:
        """The finding's severity."""
        return self.finding.severity

    @property
    def action(self) -> str | None:
        """The decided action, once there is a decision."""
        return self.decision.action if self.decision else None

    @property
    def awaiting(self) -> str | None:
        """The changing action that waits for a human's approval, if any."""
        return (self.decision.approval_action or None) if self.decision else None

    @property
    def awaiting_target(self) -> str | None:
        """The service the waiting action would run on (which may be a related service
        rather than the finding's own), if an action waits."""
        if self.decision is None or not self.decision.approval_action:
            return None
        return self.decision.approval_target or self.target

    @property
    def observing(self) -> bool:
        """An ``observe`` tier held the decided action back: the finding is watched."""
        return bool(self.decision and self.decision.observed_action)

    @property
    def asks(self) -> bool:
        """A human's answer is wanted or was given and not yet carried out."""
        return self.state in ("awaiting_approval", "approved")

    @property
    def decided_by(self) -> str | None:
        """prefilter, llm or runbook, once there is a decision."""
        return self.decision.decided_by if self.decision else None

    def leased_by_other(self, owner: str, now: datetime) -> bool:
        """Whether another replica holds a lease on this incident that has not expired."""
        return (
            self.lease_owner is not None
            and self.lease_owner != owner
            and self.lease_until is not None
            and self.lease_until > now
        )

    def move(self, to: State, now: datetime, **changes: Any) -> Incident:
        """The incident in state ``to``; ForbiddenTransition when the table forbids it."""
        if to not in TRANSITIONS[self.state]:
            raise ForbiddenTransition(f"incident {self.id}: {self.state} -> {to} is not allowed")
        return replace(self, state=to, updated_at=now, **changes)

    def update(self, now: datetime, **changes: Any) -> Incident:
        """The incident with fields changed and its state kept."""
        if "state" in changes:
            raise ForbiddenTransition("use move() to change the state")
        return replace(self, updated_at=now, **changes)

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
            "severity": self.severity.value,
            "decided_by": self.decided_by,
            "blocked_reason": self.blocked_reason,
            "dispatch_outcome": self.dispatch_outcome,
            "resolution": self.resolution,
            "cleared_at": self.cleared_at.isoformat() if self.cleared_at else None,
            "awaiting_approval": self.awaiting if self.asks else None,
            "approval_action": self.awaiting if self.asks else None,
            "approval_target": self.awaiting_target if self.asks else None,
            "approved_by": (self.decision.approved_by or None) if self.decision else None,
            "approval_until": self.approval_until.isoformat() if self.approval_until else None,
            "source": self.finding.source,
            "observed": (self.decision.observed or None) if self.decision else None,
        }
