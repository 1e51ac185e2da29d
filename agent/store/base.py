"""The store's interface and records, independent of the database behind it.

Every change to an incident is one ``Step`` (``agent.incidents.lifecycle``) committed in
one transaction: the incident row, its timeline events, an action claim or outcome, a
circuit-breaker change. A step commits only over the version it was computed from and
only while no other replica holds the incident's lease; otherwise the store raises
``Conflict`` and the caller drops its step (the other replica's change stands).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from agent.errors import StoreError
from agent.incidents.history import PastIncident
from agent.incidents.lifecycle import Step
from agent.incidents.model import Event, Incident
from agent.ledger.record import Outcome


class Conflict(StoreError):
    """Another replica changed the incident first, holds its lease, or already claimed the
    action: this step is dropped."""


@dataclass(frozen=True)
class Unreadable:
    """A stored incident that cannot be read back (a corrupt row), and why."""

    id: str
    error: str


@dataclass(frozen=True)
class GuardFacts:
    """What the store knows fleet-wide about one (service, action), read under the claim lock."""

    last_same_action_at: datetime | None
    target_actions_last_hour: int
    fleet_actions_last_hour: int
    in_flight_for_target: bool
    breaker_open: bool


@dataclass(frozen=True)
class Applied:
    """A committed step: the incident as stored, and whether the breaker just opened."""

    incident: Incident
    breaker_opened: bool = False


@dataclass(frozen=True)
class ActionRecord:
    """One claimed action and how it ended."""

    incident_id: str
    target: str
    action: str
    at: datetime
    outcome: str | None
    mutating: bool


@dataclass(frozen=True)
class Breaker:
    """A service's circuit breaker."""

    target: str
    failures: int
    is_open: bool
    updated_at: datetime
    #: Who closed it by hand last (``incidents reset-breaker --by``), and when.
    reset_by: str | None = None
    reset_at: datetime | None = None


@dataclass(frozen=True)
class StateCopy:
    """What a dry run needs of the real store: current incidents, recent actions, breakers,
    and when each failing check series started failing (check key -> fingerprint -> time)."""

    incidents: list[Incident]
    actions: list[ActionRecord]
    breakers: list[Breaker]
    failing: Mapping[str, Mapping[str, datetime]] = field(default_factory=dict)


@dataclass(frozen=True)
class LedgerRead:
    """What the report reads for a time range: the outcome records, those that cannot be
    read (skipped and counted), and when each incident opened (group key, time), so that
    a recurrence is seen even while the next incident is still open."""

    outcomes: list[Outcome]
    unreadable: list[Unreadable]
    openings: list[tuple[str, datetime]]


Decide = Callable[[Incident, GuardFacts], Step]


class IncidentStore(Protocol):
    """What the daemon needs from a store; SQLite and PostgreSQL implement it."""

    def close(self) -> None:
        """Release the connection."""

    def current(self) -> list[Incident]:
        """Every incident whose findings are still seen (not cleared), oldest first; an
        unreadable row is quarantined and left out."""

    def get(self, incident_id: str) -> Incident | Unreadable | None:
        """One incident by id, or by a unique id prefix."""

    def recent(self, limit: int) -> list[Incident | Unreadable]:
        """The newest incidents first, unreadable ones as such."""

    def events(self, incident_id: str) -> list[Event]:
        """The incident's timeline, oldest first."""

    def history(self, group_key: str, *, since: datetime, before: Incident) -> list[PastIncident]:
        """The same problem's last incidents before ``before``, newest first."""

    def next_opened(self, group_key: str, *, after: Incident) -> datetime | None:
        """When the same problem came back: the opening time of the first incident of
        ``group_key`` opened after ``after``; None when none has (yet)."""

    def insert(self, step: Step) -> bool:
        """Commit a new incident; False when its group already has a current one."""

    def apply(self, step: Step, *, expected_version: int, owner: str, now: datetime) -> Applied:
        """Commit a step over ``expected_version``; Conflict when that is not possible."""

    def decide_under_lock(
        self,
        incident: Incident,
        target: str,
        action: str,
        now: datetime,
        owner: str,
        decide: Decide,
    ) -> Applied:
        """Under the fleet-wide claim lock: read the guard facts of (target, action), call
        ``decide`` with the fresh incident and the facts, commit its step."""

    def renew_leases(self, owner: str, incident_ids: Sequence[str], until: datetime) -> int:
        """Extend ``owner``'s leases on these incidents to ``until``; how many."""

    def note(self, incident_id: str, event: Event) -> None:
        """Add an event to the timeline without changing the incident."""

    def breaker(self, target: str) -> Breaker | None:
        """A service's circuit breaker, if it ever counted a failure."""

    def breakers(self) -> dict[str, bool]:
        """Every service whose breaker ever counted a failure, and whether it is open."""

    def reset_breaker(self, target: str, now: datetime, by: str) -> Breaker | None:
        """Close a service's circuit breaker (a human, ``by``, looked); the breaker as it
        was, None when the service never had one."""

    def approval_counts(self) -> dict[str, int]:
        """How many waits for a human ended, by result (granted, denied, expired, cleared),
        whichever process ended them."""

    def outcomes(self, since: datetime, until: datetime) -> LedgerRead:
        """The outcome records of incidents that ended in [since, until), and the openings
        of incidents since ``since``."""

    def outcome_counts(self) -> dict[tuple[str, ...], int]:
        """How many incidents ended by (service, action, result), pruning aside."""

    def prune_outcomes(self, before: datetime) -> int:
        """Drop outcome records of incidents that ended before ``before``; how many."""

    def acted_on(self, target: str, since: datetime, excluding: str) -> ActionRecord | None:
        """The first action claimed on ``target`` since ``since`` by another incident."""

    def track_failing(
        self, failing: Mapping[str, Collection[str]], known: Collection[str], now: datetime
    ) -> dict[str, dict[str, datetime]]:
        """Record the failing series of the checks that ran (check key -> fingerprints),
        forget their other series and every check not in ``known``; when each failing
        series started failing (``agent.sweep.checks.FailingSeries``)."""

    @property
    def schema_version(self) -> int:
        """The schema version the database is at."""

    def check_writable(self) -> None:
        """Commit a write that changes nothing; StoreError when writing is refused."""

    def end_session(self, session_id: str, expires_at: datetime, now: datetime) -> None:
        """Record a console session as ended (a logout) until it would have expired."""

    def session_ended(self, session_id: str) -> bool:
        """Whether a console session was ended by a logout."""

    def export_state(self, since: datetime) -> StateCopy:
        """Current incidents, actions since ``since`` and every breaker, for a dry run."""

    def import_state(self, state: StateCopy) -> None:
        """Load what ``export_state`` gave (into an empty store)."""


def get_exact(store: IncidentStore, incident_id: str) -> Incident | Unreadable | None:
    """The incident whose id is exactly ``incident_id``: the HTTP surfaces take full ids
    only (a prefix is a convenience of the command line, never of a URL)."""
    found = store.get(incident_id)
    return found if found is not None and found.id == incident_id else None
