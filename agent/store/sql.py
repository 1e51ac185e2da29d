"""The incident store in SQL, shared by SQLite and PostgreSQL.

The two differ only in what ``Dialect`` covers: how to connect, the parameter marker,
how a write transaction takes the fleet-wide lock, how the schema version is kept, and
which exceptions mean a unique constraint said no. Every query here is plain SQL both
understand; timestamps are ISO-8601 text in UTC with microseconds, so they sort as text.

Three constraints carry the guarantees, not checks in Python:

- ``incidents_one_current_per_group``: one current incident per problem, however many
  replicas sweep at once (``INSERT ... ON CONFLICT DO NOTHING``);
- ``actions_one_claim``: an (incident, action) is claimed once, so it is sent at most once;
- ``incidents_one_in_flight_per_service``: one incident in ``acting`` or ``verifying``
  per service.

A step commits with ``WHERE version = ? AND <no live lease of another replica>``: the
optimistic check and the lease are one compare-and-set, the equivalent of row locks with
``SKIP LOCKED`` that works on both databases.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from agent.diagnosis.models import Decision
from agent.errors import NoStore, StoreError
from agent.incidents.history import HISTORY_LIMIT, PastIncident, PastRow, SentAction, assemble
from agent.incidents.lifecycle import ApprovalEnded, Step
from agent.incidents.model import STATES, TERMINAL, Event, Incident
from agent.ledger.record import Outcome, loads, outcome_of
from agent.logs import get_logger
from agent.store.base import (
    ActionRecord,
    Applied,
    Breaker,
    Conflict,
    Decide,
    GuardFacts,
    LedgerRead,
    StateCopy,
    Unreadable,
)
from agent.sweep.checks import plan_failing
from agent.sweep.findings import Finding
from agent.text import clip, encodable

log = get_logger("agent.store")

MIGRATIONS: tuple[str, ...] = (
    # 1: incidents, their timeline, the actions taken and the circuit breakers.
    """
    CREATE TABLE incidents (
        id TEXT PRIMARY KEY,
        group_key TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        target TEXT,
        severity TEXT NOT NULL,
        state TEXT NOT NULL,
        opened_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        finding_json TEXT NOT NULL,
        action TEXT,
        decided_by TEXT,
        decision_json TEXT,
        blocked_reason TEXT,
        verify_at TEXT,
        acted_at TEXT,
        cleared_at TEXT,
        resolution TEXT
    );
    CREATE UNIQUE INDEX incidents_one_current_per_group
        ON incidents (group_key) WHERE cleared_at IS NULL;
    CREATE INDEX incidents_state ON incidents (state);
    CREATE TABLE events (
        id {serial},
        incident_id TEXT NOT NULL REFERENCES incidents (id),
        at TEXT NOT NULL,
        kind TEXT NOT NULL,
        data_json TEXT NOT NULL
    );
    CREATE INDEX events_incident ON events (incident_id, id);
    CREATE TABLE actions (
        id {serial},
        incident_id TEXT NOT NULL,
        target TEXT NOT NULL,
        action TEXT NOT NULL,
        at TEXT NOT NULL,
        outcome TEXT
    );
    CREATE INDEX actions_target_at ON actions (target, at);
    CREATE TABLE breakers (
        target TEXT PRIMARY KEY,
        failures INTEGER NOT NULL,
        is_open INTEGER NOT NULL,
        updated_at TEXT NOT NULL
    )
    """,
    # 2: the typed lifecycle: versions, leases, the decided state, one claim per
    # (incident, action) and one action in flight per service.
    """
    ALTER TABLE incidents ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE incidents ADD COLUMN lease_owner TEXT;
    ALTER TABLE incidents ADD COLUMN lease_until TEXT;
    ALTER TABLE incidents ADD COLUMN action_target TEXT;
    ALTER TABLE incidents ADD COLUMN dispatch_outcome TEXT;
    UPDATE incidents SET state = 'decided'
        WHERE state = 'diagnosing' AND decision_json IS NOT NULL;
    UPDATE incidents SET action_target = target
        WHERE id IN (SELECT MIN(id) FROM incidents
                     WHERE state IN ('acting', 'verifying') GROUP BY target);
    ALTER TABLE actions ADD COLUMN mutating INTEGER NOT NULL DEFAULT 1;
    UPDATE actions SET mutating = 0
        WHERE action IN ('collect_logs', 'inspect_resources', 'health_check');
    DELETE FROM actions
        WHERE id NOT IN (SELECT MIN(id) FROM actions GROUP BY incident_id, action);
    CREATE UNIQUE INDEX actions_one_claim ON actions (incident_id, action);
    CREATE INDEX actions_at ON actions (at);
    CREATE UNIQUE INDEX incidents_one_in_flight_per_service
        ON incidents (action_target) WHERE state IN ('acting', 'verifying')
    """,
    # 3: a row that cannot be read is quarantined (and cleared, so its problem can open a
    # new incident) instead of breaking every sweep.
    """
    ALTER TABLE incidents ADD COLUMN quarantine TEXT
    """,
    # 4: waiting for a human's approval, until a deadline.
    """
    ALTER TABLE incidents ADD COLUMN approval_until TEXT
    """,
    # 5: the history of one problem (group) is read by the newest first.
    """
    CREATE INDEX incidents_group_opened ON incidents (group_key, opened_at)
    """,
    # 6: when each failing check series started failing (``for_seconds``), shared by
    # replicas and kept across restarts.
    """
    CREATE TABLE failing_series (
        check_key TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        since TEXT NOT NULL,
        PRIMARY KEY (check_key, fingerprint)
    )
    """,
    # 7: how each wait for a human's approval ended, whichever process ended it, for the
    # daemon's approvals_total.
    """
    CREATE TABLE approval_endings (
        id {serial},
        incident_id TEXT NOT NULL,
        result TEXT NOT NULL,
        at TEXT NOT NULL
    )
    """,
    # 8: who reset a circuit breaker, and when.
    """
    ALTER TABLE breakers ADD COLUMN reset_by TEXT;
    ALTER TABLE breakers ADD COLUMN reset_at TEXT
    """,
    # 9: console sessions ended by a logout, kept until they would have expired anyway.
    """
    CREATE TABLE ended_sessions (
        id TEXT PRIMARY KEY,
        expires_at TEXT NOT NULL
    )
    """,
    # 10: the outcome ledger: one record per ended incident, read by time range for the
    # report (and pruned after ``report.keep_days``); the counts behind outcomes_total,
    # never pruned; incidents by opening time, for recurrences in the report's range.
    """
    CREATE TABLE outcomes (
        incident_id TEXT PRIMARY KEY,
        ended_at TEXT NOT NULL,
        service TEXT NOT NULL,
        action TEXT NOT NULL,
        result TEXT NOT NULL,
        record_json TEXT NOT NULL
    );
    CREATE INDEX outcomes_ended ON outcomes (ended_at);
    CREATE TABLE outcome_counts (
        service TEXT NOT NULL,
        action TEXT NOT NULL,
        result TEXT NOT NULL,
        total INTEGER NOT NULL,
        PRIMARY KEY (service, action, result)
    );
    CREATE INDEX incidents_opened ON incidents (opened_at)
    """,
    # 11: the incidents still current, for the read every cycle makes (current()): without
    # it the planner walks incidents_opened over the whole history to keep a handful.
    """
    CREATE INDEX incidents_current ON incidents (opened_at, id)
        WHERE cleared_at IS NULL AND quarantine IS NULL
    """,
)
#: The migration that made the ledger: incidents that ended before it are recorded then.
LEDGER_VERSION = 10

_COLUMNS = (
    "id",
    "group_key",
    "fingerprint",
    "kind",
    "name",
    "target",
    "severity",
    "state",
    "opened_at",
    "updated_at",
    "finding_json",
    "action",
    "decided_by",
    "decision_json",
    "blocked_reason",
    "verify_at",
    "acted_at",
    "cleared_at",
    "resolution",
    "version",
    "lease_owner",
    "lease_until",
    "action_target",
    "dispatch_outcome",
    "approval_until",
)
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM incidents"
_BREAKER = "SELECT target, failures, is_open, updated_at, reset_by, reset_at FROM breakers"
_MUTABLE = [c for c in _COLUMNS if c not in ("id", "version")]


class Cursor(Protocol):
    """The part of a DB-API cursor the store uses."""

    @property
    def rowcount(self) -> int:
        """Rows the last statement changed."""

    def execute(self, sql: str, params: Sequence[Any] = ..., /) -> Any: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Dialect(Protocol):
    """What differs between SQLite and PostgreSQL."""

    name: str
    serial: str
    #: Where the store is, as shown to people (a path, or a URL without its password).
    where: str

    def sql(self, text: str) -> str:
        """The query with ``?`` markers turned into the driver's markers."""

    def transaction(self, *, locked: bool) -> AbstractContextManager[Cursor]:
        """A write transaction; ``locked`` also takes the fleet-wide claim lock."""

    def read(self) -> AbstractContextManager[Cursor]:
        """A cursor for reads."""

    def is_unique_violation(self, exc: BaseException) -> bool:
        """Whether ``exc`` is a unique constraint refusing a row."""

    def is_error(self, exc: BaseException) -> bool:
        """Whether ``exc`` is any error of this database's driver."""

    def schema_version(self, cur: Cursor, *, create: bool = True) -> int:
        """The schema version, read inside the migration transaction; without ``create``
        nothing is created to read it (0: there is no store)."""

    def set_schema_version(self, cur: Cursor, version: int) -> None:
        """Record the schema version, inside the migration transaction."""

    def close(self) -> None:
        """Close the connection."""


def ts(value: datetime | None) -> str | None:
    """A timestamp as stored: UTC, ISO 8601, always with microseconds."""
    return value.astimezone(UTC).isoformat(timespec="microseconds") if value else None


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _dump(value: object) -> str:
    # encodable: a lone surrogate (model text, alert text) would make the driver refuse the row
    return encodable(json.dumps(value, ensure_ascii=False, default=str))


def incident_from_row(row: Sequence[Any]) -> Incident:
    """An incident from a row of ``_SELECT``; ValueError when the row is not readable."""
    r = dict(zip(_COLUMNS, row, strict=True))
    state = r["state"]
    if state not in STATES:
        raise ValueError(f"unknown state {state!r}")
    decision = Decision.from_dict(json.loads(r["decision_json"])) if r["decision_json"] else None
    opened = _dt(r["opened_at"])
    updated = _dt(r["updated_at"])
    if opened is None or updated is None:
        raise ValueError("opened_at and updated_at must be set")
    return Incident(
        id=r["id"],
        group_key=r["group_key"],
        state=state,
        opened_at=opened,
        updated_at=updated,
        finding=Finding.from_dict(json.loads(r["finding_json"])),
        decision=decision,
        blocked_reason=r["blocked_reason"],
        action_target=r["action_target"],
        dispatch_outcome=r["dispatch_outcome"],
        acted_at=_dt(r["acted_at"]),
        verify_at=_dt(r["verify_at"]),
        cleared_at=_dt(r["cleared_at"]),
        resolution=r["resolution"],
        lease_owner=r["lease_owner"],
        lease_until=_dt(r["lease_until"]),
        approval_until=_dt(r["approval_until"]),
        version=int(r["version"]),
    )


def _values(i: Incident) -> dict[str, Any]:
    return {k: _storable(v) for k, v in _raw_values(i).items()}


def _storable(value: object) -> object:
    # PostgreSQL's TEXT refuses NUL characters, which label values and model text may hold
    # (the JSON columns already escape them); neither database takes a lone surrogate.
    return encodable(value.replace("\x00", "\ufffd")) if isinstance(value, str) else value


def _raw_values(i: Incident) -> dict[str, Any]:
    return {
        "id": i.id,
        "group_key": i.group_key,
        "fingerprint": i.fingerprint,
        "kind": i.kind,
        "name": i.name,
        "target": i.target,
        "severity": i.severity.value,
        "state": i.state,
        "opened_at": ts(i.opened_at),
        "updated_at": ts(i.updated_at),
        "finding_json": _dump(i.finding.to_dict()),
        "action": i.action,
        "decided_by": i.decided_by,
        "decision_json": _dump(i.decision.to_dict()) if i.decision else None,
        "blocked_reason": i.blocked_reason,
        "verify_at": ts(i.verify_at),
        "acted_at": ts(i.acted_at),
        "cleared_at": ts(i.cleared_at),
        "resolution": i.resolution,
        "version": i.version,
        "lease_owner": i.lease_owner,
        "lease_until": ts(i.lease_until),
        "action_target": i.action_target,
        "dispatch_outcome": i.dispatch_outcome,
        "approval_until": ts(i.approval_until),
    }


class SQLStore:
    """The incident store over one database connection."""

    def __init__(
        self,
        dialect: Dialect,
        *,
        create: bool = True,
        migrate: bool = True,
        read_only: bool = False,
    ) -> None:
        self._d = dialect
        #: Opened to read only (its connection refuses writes): never migrated, and an
        #: unreadable row is left out without being quarantined.
        self.read_only = read_only
        try:
            if read_only:
                self._check_readable()
            else:
                self.migrate(create=create, apply=migrate)
        except BaseException:
            dialect.close()
            raise

    # -- plumbing -------------------------------------------------------------------------

    def _guard(self, exc: BaseException) -> StoreError:
        return StoreError(f"incident store ({self._d.name}): {str(exc).strip().splitlines()[0]}")

    def _run(self, cur: Cursor, sql: str, params: Sequence[Any] = ()) -> Cursor:
        cur.execute(self._d.sql(sql), tuple(params))
        return cur

    def _select(self, where: str, params: Sequence[Any] = ()) -> list[Incident | Unreadable]:
        with self._read() as cur:
            rows = self._run(cur, f"{_SELECT} {where}", params).fetchall()
        return [_readable(r) for r in rows]

    @contextmanager
    def _read(self) -> Iterator[Cursor]:
        with self._driver_errors(), self._d.read() as cur:
            yield cur

    @contextmanager
    def _write(self, locked: bool = False) -> Iterator[Cursor]:
        with self._driver_errors(), self._d.transaction(locked=locked) as cur:
            yield cur

    @contextmanager
    def _driver_errors(self) -> Iterator[None]:
        """Driver exceptions leave this module as StoreError (Conflict passes as it is)."""
        try:
            yield
        except Conflict:
            raise
        except Exception as exc:
            if self._d.is_error(exc):
                raise self._guard(exc) from exc
            raise

    @property
    def schema_version(self) -> int:
        """The schema version the database is at."""
        with self._write() as cur:
            return self._d.schema_version(cur)

    def migrate(self, *, create: bool = True, apply: bool = True) -> None:
        """Bring the schema to the latest version, in one locked transaction, so that two
        agents starting at once on a new database never race to create it (and a command
        opening a store that is being migrated waits for the lock, then goes on). Without
        ``create`` an empty database is ``NoStore``, left as it is; without ``apply`` the
        schema is only looked at."""
        with self._write(locked=True) as cur:
            current = self._d.schema_version(cur, create=create)
            if current == 0 and not create:
                raise NoStore(f"no incident store at {self._d.where} (AGENT_STATE_URL)")
            if not apply:
                return
            for version, script in enumerate(MIGRATIONS, start=1):
                if current >= version:
                    continue
                for statement in script.format(serial=self._d.serial).split(";"):
                    if statement.strip():
                        cur.execute(statement)
                self._d.set_schema_version(cur, version)
            if current < LEDGER_VERSION <= len(MIGRATIONS):
                self._backfill_outcomes(cur)

    def _check_readable(self) -> None:
        """A read-only opening: NoStore for an empty database, StoreError for a schema
        older than this agent reads (it is never migrated from here)."""
        with self._read() as cur:
            current = self._d.schema_version(cur, create=False)
        if current == 0:
            raise NoStore(f"no incident store at {self._d.where} (AGENT_STATE_URL)")
        if current < len(MIGRATIONS):
            raise StoreError(
                f"incident store {self._d.where} is at schema {current}, this agent reads "
                f"{len(MIGRATIONS)}: run the daemon (or any `incidents` command) once to migrate it"
            )

    def close(self) -> None:
        """Close the connection."""
        self._d.close()

    # -- reads ----------------------------------------------------------------------------

    def current(self) -> list[Incident]:
        """Incidents whose findings are still seen, oldest first; a row that cannot be read
        is quarantined, logged once, and left out."""
        found = self._select(
            "WHERE cleared_at IS NULL AND quarantine IS NULL ORDER BY opened_at, id"
        )
        for bad in (f for f in found if isinstance(f, Unreadable)):
            if not self.read_only:
                self._quarantine(bad)
        return [f for f in found if isinstance(f, Incident)]

    def _quarantine(self, bad: Unreadable) -> None:
        log.error("incident_unreadable", incident_id=bad.id, error=bad.error, action="quarantined")
        with self._write() as cur:
            self._run(
                cur,
                "UPDATE incidents SET quarantine = ?, cleared_at = COALESCE(cleared_at, ?) "
                "WHERE id = ?",
                [bad.error, ts(datetime.now(UTC)), bad.id],
            )

    def get(self, incident_id: str) -> Incident | Unreadable | None:
        """One incident by id or unique id prefix."""
        prefix = incident_id.replace("\\", "").replace("%", "").replace("_", "")
        if not prefix:
            return None
        found = self._select("WHERE id LIKE ? ORDER BY opened_at LIMIT 2", [prefix + "%"])
        return found[0] if len(found) == 1 else None

    def recent(self, limit: int) -> list[Incident | Unreadable]:
        """Newest first, unreadable rows included as such."""
        return self._select("ORDER BY opened_at DESC, id DESC LIMIT ?", [limit])

    def events(self, incident_id: str) -> list[Event]:
        """The timeline, oldest first."""
        with self._read() as cur:
            rows = self._run(
                cur,
                "SELECT at, kind, data_json FROM events WHERE incident_id = ? ORDER BY id",
                [incident_id],
            ).fetchall()
        return [_event(r) for r in rows]

    def history(self, group_key: str, *, since: datetime, before: Incident) -> list[PastIncident]:
        """The last incidents of ``group_key`` opened since ``since`` and before ``before``
        (the incident that asks), newest first, with their claimed actions: one query over
        the group's index. A row that cannot be read is skipped and logged."""
        sql = (
            "SELECT i.id, i.opened_at, i.state, i.decided_by, i.action, i.resolution, "
            "i.cleared_at, a.action, a.outcome, a.mutating "
            "FROM incidents i LEFT JOIN actions a ON a.incident_id = i.id "
            "WHERE i.id IN (SELECT id FROM incidents WHERE group_key = ? AND opened_at >= ? "
            "AND opened_at <= ? AND id <> ? AND quarantine IS NULL "
            "ORDER BY opened_at DESC LIMIT ?) "
            "ORDER BY i.opened_at DESC, i.id, a.id"
        )
        params = [group_key, ts(since), ts(before.opened_at), before.id, HISTORY_LIMIT]
        with self._read() as cur:
            rows = self._run(cur, sql, params).fetchall()
        return assemble(_past_rows(rows), before.opened_at)

    def next_opened(self, group_key: str, *, after: Incident) -> datetime | None:
        """When the same problem came back: the opening time of the first incident of
        ``group_key`` opened after ``after``; None when none has (yet)."""
        sql = (
            "SELECT MIN(opened_at) FROM incidents WHERE group_key = ? AND opened_at > ? "
            "AND id <> ? AND quarantine IS NULL"
        )
        with self._read() as cur:
            row = self._run(cur, sql, [group_key, ts(after.opened_at), after.id]).fetchone()
        return _dt(row[0]) if row else None

    def breaker(self, target: str) -> Breaker | None:
        """A service's breaker, if it ever counted a failure."""
        with self._read() as cur:
            row = self._run(cur, f"{_BREAKER} WHERE target = ?", [target]).fetchone()
        return _breaker(row) if row else None

    def breakers(self) -> dict[str, bool]:
        """Every service whose breaker ever counted a failure, and whether it is open."""
        with self._read() as cur:
            rows = self._run(cur, "SELECT target, is_open FROM breakers").fetchall()
        return {str(r[0]): bool(r[1]) for r in rows}

    def approval_counts(self) -> dict[str, int]:
        """How many waits for a human ended, by result, whichever process ended them."""
        with self._read() as cur:
            rows = self._run(
                cur, "SELECT result, COUNT(*) FROM approval_endings GROUP BY result"
            ).fetchall()
        return {str(r[0]): int(r[1]) for r in rows}

    # -- writes ---------------------------------------------------------------------------

    def insert(self, step: Step) -> bool:
        """Commit a new incident unless its group already has a current one."""
        values = _values(step.incident)
        marks = ", ".join("?" * len(values))
        sql = f"INSERT INTO incidents ({', '.join(values)}) VALUES ({marks}) ON CONFLICT DO NOTHING"
        with self._write() as cur:
            if self._run(cur, sql, list(values.values())).rowcount != 1:
                return False
            self._events(cur, step)
        return True

    def apply(self, step: Step, *, expected_version: int, owner: str, now: datetime) -> Applied:
        """Commit a step over ``expected_version``; Conflict when that is not possible."""
        with self._write() as cur:
            return self._apply(cur, step, expected_version, owner, now)

    def _apply(self, cur: Cursor, step: Step, expected: int, owner: str, now: datetime) -> Applied:
        values = _values(step.incident)
        sets = ", ".join(f"{c} = ?" for c in _MUTABLE)
        sql = (
            f"UPDATE incidents SET {sets}, version = version + 1 WHERE id = ? AND version = ? "
            "AND (lease_owner IS NULL OR lease_owner = ? OR lease_until IS NULL OR lease_until < ?)"
        )
        params = [*(values[c] for c in _MUTABLE), step.incident.id, expected, owner, ts(now)]
        try:
            if self._run(cur, sql, params).rowcount != 1:
                raise Conflict(f"incident {step.incident.id} moved on (another replica)")
            self._events(cur, step)
            self._approval_endings(cur, step, now)
            if step.ends:
                self._record_outcome(cur, step.incident)
            if step.claim is not None:
                c = step.claim
                self._run(
                    cur,
                    "INSERT INTO actions (incident_id, target, action, at, outcome, mutating) "
                    "VALUES (?, ?, ?, ?, NULL, ?)",
                    [c.incident_id, c.target, c.action, ts(c.at), int(c.mutating)],
                )
            if step.outcome is not None:
                o = step.outcome
                self._run(
                    cur,
                    "UPDATE actions SET outcome = ? WHERE incident_id = ? AND action = ?",
                    [o.outcome, o.incident_id, o.action],
                )
            opened = self._breaker_change(cur, step, now)
        except Exception as exc:
            if self._d.is_unique_violation(exc):
                raise Conflict(
                    f"incident {step.incident.id}: refused by a unique constraint"
                ) from exc
            raise
        return Applied(_bumped(step.incident, expected), opened)

    def _events(self, cur: Cursor, step: Step) -> None:
        for event in step.events:
            self._run(
                cur,
                "INSERT INTO events (incident_id, at, kind, data_json) VALUES (?, ?, ?, ?)",
                [step.incident.id, ts(event.at), event.kind, _dump(event.data)],
            )

    def _approval_endings(self, cur: Cursor, step: Step, now: datetime) -> None:
        """Each wait for a human that this step ends, counted where every replica reads it
        (a yes remembered but not yet carried out is not an end: it is counted later)."""
        for effect in step.effects:
            if isinstance(effect, ApprovalEnded) and effect.final:
                self._run(
                    cur,
                    "INSERT INTO approval_endings (incident_id, result, at) VALUES (?, ?, ?)",
                    [step.incident.id, effect.result, ts(now)],
                )

    # -- the outcome ledger ---------------------------------------------------------------

    def _record_outcome(self, cur: Cursor, incident: Incident) -> None:
        """The outcome of an incident that ends now, derived from it and its timeline (this
        step's events included) and written once, with its count, in the same commit."""
        rows = self._run(
            cur,
            "SELECT at, kind, data_json FROM events WHERE incident_id = ? "
            "AND kind IN ('decision', 'transition', 'approval') ORDER BY id",
            [incident.id],
        ).fetchall()
        approval = self._run(
            cur,
            "SELECT result FROM approval_endings WHERE incident_id = ? ORDER BY id DESC",
            [incident.id],
        ).fetchone()
        outcome = outcome_of(incident, [_event(r) for r in rows], approval[0] if approval else None)
        self._insert_outcome(cur, outcome)

    def _insert_outcome(self, cur: Cursor, outcome: Outcome) -> None:
        service, action = _storable(outcome.service), _storable(outcome.action)
        added = self._run(
            cur,
            "INSERT INTO outcomes (incident_id, ended_at, service, action, result, record_json) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (incident_id) DO NOTHING",
            [
                outcome.incident_id,
                ts(outcome.ended_at),
                service,
                action,
                outcome.result,
                _storable(outcome.dumps()),
            ],
        ).rowcount
        if added == 1:
            self._run(
                cur,
                "INSERT INTO outcome_counts (service, action, result, total) VALUES (?, ?, ?, 1) "
                "ON CONFLICT (service, action, result) DO UPDATE "
                "SET total = outcome_counts.total + 1",
                [service, action, outcome.result],
            )

    def _backfill_outcomes(self, cur: Cursor) -> None:
        """Record the outcomes of the incidents that ended before the ledger existed: the
        evidence was already in the store. A row that cannot be read is left out."""
        marks = ", ".join("?" * len(TERMINAL))
        rows = self._run(
            cur, f"{_SELECT} WHERE state IN ({marks}) AND quarantine IS NULL", sorted(TERMINAL)
        ).fetchall()
        for row in rows:
            found = _readable(row)
            if isinstance(found, Incident):
                self._record_outcome(cur, found)

    def outcomes(self, since: datetime, until: datetime) -> LedgerRead:
        """The outcome records of incidents that ended in [since, until) and the openings
        of the incidents opened since ``since`` (group, time): two range queries over their
        indexes. A record that cannot be read is returned as such, never raised."""
        with self._read() as cur:
            rows = self._run(
                cur,
                "SELECT incident_id, record_json FROM outcomes WHERE ended_at >= ? "
                "AND ended_at < ? ORDER BY ended_at",
                [ts(since), ts(until)],
            ).fetchall()
            opened = self._run(
                cur,
                "SELECT group_key, opened_at FROM incidents WHERE opened_at >= ?",
                [ts(since)],
            ).fetchall()
        read: list[Outcome] = []
        bad: list[Unreadable] = []
        for incident_id, text in rows:
            try:
                read.append(loads(text))
            except (ValueError, TypeError) as exc:
                bad.append(
                    Unreadable(str(incident_id), f"{type(exc).__name__}: {clip(str(exc), 200)}")
                )
        openings = []
        for group, at in opened:
            try:
                openings.append((str(group), datetime.fromisoformat(at)))
            except (ValueError, TypeError):
                continue
        return LedgerRead(read, bad, openings)

    def outcome_counts(self) -> dict[tuple[str, ...], int]:
        """How many incidents ended, by (service, action, result), since the ledger began
        (kept when old records are pruned), whichever process ended them."""
        with self._read() as cur:
            rows = self._run(
                cur, "SELECT service, action, result, total FROM outcome_counts"
            ).fetchall()
        return {(str(r[0]), str(r[1]), str(r[2])): int(r[3]) for r in rows}

    def prune_outcomes(self, before: datetime) -> int:
        """Drop the outcome records of incidents that ended before ``before``; how many."""
        with self._write() as cur:
            return self._run(cur, "DELETE FROM outcomes WHERE ended_at < ?", [ts(before)]).rowcount

    def acted_on(self, target: str, since: datetime, excluding: str) -> ActionRecord | None:
        """The first action claimed on ``target`` since ``since`` by another incident than
        ``excluding``, by any replica (the agent's own records of another hand)."""
        with self._read() as cur:
            row = self._run(
                cur,
                "SELECT incident_id, target, action, at, outcome, mutating FROM actions "
                "WHERE target = ? AND at >= ? AND incident_id <> ? ORDER BY at LIMIT 1",
                [target, ts(since), excluding],
            ).fetchone()
        if row is None:
            return None
        return ActionRecord(
            row[0], row[1], row[2], datetime.fromisoformat(row[3]), row[4], bool(row[5])
        )

    def _breaker_change(self, cur: Cursor, step: Step, now: datetime) -> bool:
        change = step.breaker
        if change is None or not change.target:
            return False
        if not change.failed:
            self._run(
                cur,
                "UPDATE breakers SET failures = 0, is_open = 0, updated_at = ? WHERE target = ?",
                [ts(now), change.target],
            )
            return False
        was = self._run(
            cur, "SELECT is_open FROM breakers WHERE target = ?", [change.target]
        ).fetchone()
        self._run(
            cur,
            "INSERT INTO breakers (target, failures, is_open, updated_at) "
            "VALUES (?, 1, CASE WHEN 1 >= ? THEN 1 ELSE 0 END, ?) "
            "ON CONFLICT (target) DO UPDATE SET failures = breakers.failures + 1, "
            "is_open = CASE WHEN breakers.failures + 1 >= ? THEN 1 ELSE breakers.is_open END, "
            "updated_at = excluded.updated_at",
            [change.target, change.open_at, ts(now), change.open_at],
        )
        now_open = self._run(
            cur, "SELECT is_open FROM breakers WHERE target = ?", [change.target]
        ).fetchone()
        return bool(now_open[0]) and not (was and was[0])

    def decide_under_lock(
        self,
        incident: Incident,
        target: str,
        action: str,
        now: datetime,
        owner: str,
        decide: Decide,
    ) -> Applied:
        """Read the guard facts and commit ``decide``'s step under the fleet-wide lock."""
        with self._write(locked=True) as cur:
            rows = self._run(cur, f"{_SELECT} WHERE id = ?", [incident.id]).fetchall()
            if not rows:
                raise Conflict(f"incident {incident.id} is gone")
            fresh = incident_from_row(rows[0])
            if fresh.version != incident.version:
                raise Conflict(f"incident {incident.id} moved on (another replica)")
            step = decide(fresh, self._facts(cur, incident.id, target, action, now))
            if not step.commit:
                return Applied(fresh)
            return self._apply(cur, step, fresh.version, owner, now)

    def _facts(
        self, cur: Cursor, incident_id: str, target: str, action: str, now: datetime
    ) -> GuardFacts:
        last = self._run(
            cur, "SELECT MAX(at) FROM actions WHERE target = ? AND action = ?", [target, action]
        ).fetchone()
        counts = self._run(
            cur,
            "SELECT COUNT(*), COALESCE(SUM(CASE WHEN target = ? THEN 1 ELSE 0 END), 0) "
            "FROM actions WHERE at >= ? AND mutating = 1",
            [target, ts(now - timedelta(hours=1))],
        ).fetchone()
        flying = self._run(
            cur,
            "SELECT COUNT(*) FROM incidents WHERE action_target = ? "
            "AND state IN ('acting', 'verifying') AND id <> ?",
            [target, incident_id],
        ).fetchone()
        breaker = self._run(
            cur, "SELECT is_open FROM breakers WHERE target = ?", [target]
        ).fetchone()
        return GuardFacts(
            last_same_action_at=_dt(last[0]) if last else None,
            target_actions_last_hour=int(counts[1]),
            fleet_actions_last_hour=int(counts[0]),
            in_flight_for_target=int(flying[0]) > 0,
            breaker_open=bool(breaker and breaker[0]),
        )

    def renew_leases(self, owner: str, incident_ids: Sequence[str], until: datetime) -> int:
        """Extend ``owner``'s leases on these incidents."""
        if not incident_ids:
            return 0
        marks = ", ".join("?" * len(incident_ids))
        with self._write() as cur:
            return self._run(
                cur,
                f"UPDATE incidents SET lease_until = ? WHERE lease_owner = ? AND id IN ({marks})",
                [ts(until), owner, *incident_ids],
            ).rowcount

    def note(self, incident_id: str, event: Event) -> None:
        """Add a timeline event; the incident row is untouched."""
        with self._write() as cur:
            self._run(
                cur,
                "INSERT INTO events (incident_id, at, kind, data_json) VALUES (?, ?, ?, ?)",
                [incident_id, ts(event.at), event.kind, _dump(event.data)],
            )

    def reset_breaker(self, target: str, now: datetime, by: str) -> Breaker | None:
        """Close a breaker, recording who did; the breaker as it was, None when ``target``
        never had one (nothing is written then)."""
        with self._write() as cur:
            row = self._run(cur, f"{_BREAKER} WHERE target = ?", [target]).fetchone()
            if row is None:
                return None
            self._run(
                cur,
                "UPDATE breakers SET failures = 0, is_open = 0, updated_at = ?, reset_by = ?, "
                "reset_at = ? WHERE target = ?",
                [ts(now), _storable(by), ts(now), target],
            )
        return _breaker(row)

    def track_failing(
        self, failing: Mapping[str, Collection[str]], known: Collection[str], now: datetime
    ) -> dict[str, dict[str, datetime]]:
        """Record the failing series of the checks that ran, forget the rest of theirs and
        every check not in ``known``; when each failing series started failing. Replicas
        share it: a series another replica saw first keeps that replica's start."""
        plan = plan_failing(self._failing(), failing, known, now)
        if plan.changes:
            with self._write() as cur:
                for check, series in plan.drop:
                    self._run(
                        cur,
                        "DELETE FROM failing_series WHERE check_key = ? AND fingerprint = ?",
                        [check, series],
                    )
                self._add_failing(cur, [(c, f, plan.since[c][f]) for c, f in plan.add])
        return plan.since

    def _failing(self) -> dict[str, dict[str, datetime]]:
        with self._read() as cur:
            rows = self._run(cur, "SELECT check_key, fingerprint, since FROM failing_series")
            kept: dict[str, dict[str, datetime]] = {}
            for check, series, since in rows.fetchall():
                kept.setdefault(str(check), {})[str(series)] = datetime.fromisoformat(since)
        return kept

    def _add_failing(self, cur: Cursor, rows: Sequence[tuple[str, str, datetime]]) -> None:
        for check, series, since in rows:
            self._run(
                cur,
                "INSERT INTO failing_series (check_key, fingerprint, since) "
                "VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                [check, series, ts(since)],
            )

    def check_writable(self) -> None:
        """A write that changes nothing, committed: StoreError when writing is refused."""
        with self._write() as cur:
            self._run(cur, "UPDATE incidents SET state = state WHERE 1 = 0")

    # -- console sessions -----------------------------------------------------------------

    def end_session(self, session_id: str, expires_at: datetime, now: datetime) -> None:
        """Record a console session as ended (a logout) until it would have expired; the
        records of sessions past their expiry are dropped."""
        with self._write() as cur:
            self._run(cur, "DELETE FROM ended_sessions WHERE expires_at < ?", [ts(now)])
            self._run(
                cur,
                "INSERT INTO ended_sessions (id, expires_at) VALUES (?, ?) "
                "ON CONFLICT (id) DO NOTHING",
                [session_id, ts(expires_at)],
            )

    def session_ended(self, session_id: str) -> bool:
        """Whether a console session was ended by a logout."""
        with self._read() as cur:
            row = self._run(
                cur, "SELECT 1 FROM ended_sessions WHERE id = ?", [session_id]
            ).fetchone()
        return row is not None

    # -- dry runs -------------------------------------------------------------------------

    def export_state(self, since: datetime) -> StateCopy:
        """What a dry run needs to decide as the daemon would."""
        incidents = [
            i
            for i in self._select("WHERE cleared_at IS NULL AND quarantine IS NULL")
            if isinstance(i, Incident)
        ]
        with self._read() as cur:
            actions = self._run(
                cur,
                "SELECT incident_id, target, action, at, outcome, mutating FROM actions "
                "WHERE at >= ? ORDER BY id",
                [ts(since)],
            ).fetchall()
            breakers = self._run(cur, _BREAKER).fetchall()
        return StateCopy(
            incidents,
            [
                ActionRecord(r[0], r[1], r[2], datetime.fromisoformat(r[3]), r[4], bool(r[5]))
                for r in actions
            ],
            [_breaker(r) for r in breakers],
            self._failing(),
        )

    def import_state(self, state: StateCopy) -> None:
        """Load a copy into this (empty) store."""
        with self._write() as cur:
            for incident in state.incidents:
                values = _values(incident)
                marks = ", ".join("?" * len(values))
                self._run(
                    cur,
                    f"INSERT INTO incidents ({', '.join(values)}) VALUES ({marks})",
                    list(values.values()),
                )
            for a in state.actions:
                self._run(
                    cur,
                    "INSERT INTO actions (incident_id, target, action, at, outcome, mutating) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [a.incident_id, a.target, a.action, ts(a.at), a.outcome, int(a.mutating)],
                )
            for b in state.breakers:
                self._run(
                    cur,
                    "INSERT INTO breakers (target, failures, is_open, updated_at, reset_by, "
                    "reset_at) VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        b.target,
                        b.failures,
                        int(b.is_open),
                        ts(b.updated_at),
                        b.reset_by,
                        ts(b.reset_at),
                    ],
                )
            failing = state.failing.items()
            self._add_failing(cur, [(c, f, t) for c, s in failing for f, t in s.items()])


def _readable(row: Sequence[Any]) -> Incident | Unreadable:
    try:
        return incident_from_row(row)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        return Unreadable(str(row[0]), f"{type(exc).__name__}: {clip(str(exc), 300)}")


def _past_rows(rows: Sequence[Sequence[Any]]) -> list[PastRow]:
    """One record per incident from the joined rows (one per claimed action)."""
    out: dict[str, PastRow] = {}
    for row in rows:
        try:
            past = out.get(row[0]) or PastRow(
                id=str(row[0]),
                opened_at=datetime.fromisoformat(row[1]),
                state=str(row[2]),
                decided_by=row[3],
                decided=row[4],
                resolution=row[5],
                cleared_at=_dt(row[6]),
                sent=(),
            )
        except (ValueError, TypeError) as exc:
            log.warning(
                "history_row_unreadable", incident_id=str(row[0]), error=clip(str(exc), 200)
            )
            continue
        if row[7] is not None:
            sent = SentAction(str(row[7]), row[8], bool(row[9]))
            past = replace(past, sent=(*past.sent, sent))
        out[past.id] = past
    return list(out.values())


def _event(row: Sequence[Any]) -> Event:
    try:
        return Event(datetime.fromisoformat(row[0]), str(row[1]), json.loads(row[2]))
    except (ValueError, TypeError) as exc:
        at = datetime.fromtimestamp(0, UTC)
        return Event(
            at, str(row[1]), {"unreadable": f"{type(exc).__name__}: {clip(str(exc), 200)}"}
        )


def _bumped(incident: Incident, expected: int) -> Incident:
    return replace(incident, version=expected + 1)


def _breaker(row: Sequence[Any]) -> Breaker:
    return Breaker(
        row[0], int(row[1]), bool(row[2]), datetime.fromisoformat(row[3]), row[4], _dt(row[5])
    )
