"""SQLite implementation of the incident store.

WAL journal, ``synchronous=NORMAL`` and a versioned schema upgraded in place by the
ordered ``MIGRATIONS`` list. Calls are synchronous: each is a sub-millisecond write to a
local file, cheaper than a thread hop, and the daemon never runs two at once.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.errors import StoreError
from agent.store.base import ActionRecord, Event, Incident, IncidentStore, State

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
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        incident_id TEXT NOT NULL REFERENCES incidents (id),
        at TEXT NOT NULL,
        kind TEXT NOT NULL,
        data_json TEXT NOT NULL
    );
    CREATE INDEX events_incident ON events (incident_id, id);
    CREATE TABLE actions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
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
    );
    """,
)

_COLUMNS = (
    "id, group_key, fingerprint, kind, name, target, severity, state, opened_at, updated_at, "
    "finding_json, action, decided_by, decision_json, blocked_reason, verify_at, acted_at, "
    "cleared_at, resolution"
)


def _ts(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _action(row: sqlite3.Row) -> ActionRecord:
    at = datetime.fromisoformat(row["at"])
    return ActionRecord(row["incident_id"], row["target"], row["action"], at, row["outcome"])


def _dump(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


class SQLiteStore:
    """The incident store in one SQLite file."""

    def __init__(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.execute("PRAGMA foreign_keys=ON")
            self.migrate()
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open incident store {path}: {exc}") from exc

    @property
    def schema_version(self) -> int:
        """The schema version the file is at."""
        row = self._db.execute("PRAGMA user_version").fetchone()
        return int(row[0])

    def migrate(self) -> None:
        """Apply every migration the file has not seen, each in its own transaction."""
        for version, script in enumerate(MIGRATIONS, start=1):
            if self.schema_version >= version:
                continue
            self._db.executescript(f"BEGIN; {script}; PRAGMA user_version = {version}; COMMIT;")

    def close(self) -> None:
        """Close the connection."""
        self._db.close()

    def _exec(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Cursor:
        try:
            return self._db.execute(sql, tuple(params))
        except sqlite3.Error as exc:
            raise StoreError(f"incident store: {exc}") from exc

    def _incident(self, row: sqlite3.Row) -> Incident:
        return Incident(
            id=row["id"],
            group_key=row["group_key"],
            fingerprint=row["fingerprint"],
            kind=row["kind"],
            name=row["name"],
            target=row["target"],
            severity=row["severity"],
            state=row["state"],
            opened_at=datetime.fromisoformat(row["opened_at"]),
            updated_at=datetime.fromisoformat(row["updated_at"]),
            finding=json.loads(row["finding_json"]),
            action=row["action"],
            decided_by=row["decided_by"],
            decision=json.loads(row["decision_json"]) if row["decision_json"] else None,
            blocked_reason=row["blocked_reason"],
            verify_at=_dt(row["verify_at"]),
            acted_at=_dt(row["acted_at"]),
            cleared_at=_dt(row["cleared_at"]),
            resolution=row["resolution"],
        )

    def _values(self, i: Incident) -> tuple[Any, ...]:
        return (
            i.id,
            i.group_key,
            i.fingerprint,
            i.kind,
            i.name,
            i.target,
            i.severity,
            i.state,
            _ts(i.opened_at),
            _ts(i.updated_at),
            _dump(i.finding),
            i.action,
            i.decided_by,
            _dump(i.decision) if i.decision is not None else None,
            i.blocked_reason,
            _ts(i.verify_at),
            _ts(i.acted_at),
            _ts(i.cleared_at),
            i.resolution,
        )

    def _select(self, where: str, params: Iterable[Any] = ()) -> list[Incident]:
        rows = self._exec(f"SELECT {_COLUMNS} FROM incidents {where}", params).fetchall()
        return [self._incident(r) for r in rows]

    def current_for(self, group_key: str) -> Incident | None:
        """The uncleared incident of this group, if any."""
        found = self._select("WHERE group_key = ? AND cleared_at IS NULL", [group_key])
        return found[0] if found else None

    def open_incident(self, incident: Incident) -> Incident:
        """Insert a new incident and its 'opened' event."""
        marks = ", ".join("?" * len(self._values(incident)))
        self._exec(f"INSERT INTO incidents ({_COLUMNS}) VALUES ({marks})", self._values(incident))
        self.add_event(incident.id, "opened", incident.opened_at, {"state": incident.state})
        return incident

    def get(self, incident_id: str) -> Incident | None:
        """One incident by id or unique id prefix."""
        found = self._select("WHERE id LIKE ? ORDER BY opened_at", [incident_id + "%"])
        return found[0] if len(found) == 1 else None

    def save(self, incident: Incident, now: datetime) -> None:
        """Persist the incident's fields."""
        incident.updated_at = now
        sets = ", ".join(f"{c.strip()} = ?" for c in _COLUMNS.split(",")[1:])
        self._exec(
            f"UPDATE incidents SET {sets} WHERE id = ?", [*self._values(incident)[1:], incident.id]
        )

    def transition(self, incident: Incident, state: State, now: datetime, **data: Any) -> Incident:
        """Move to ``state`` and record the transition with its data."""
        previous = incident.state
        incident.state = state
        self.save(incident, now)
        self.add_event(incident.id, "transition", now, {"from": previous, "to": state, **data})
        return incident

    def add_event(self, incident_id: str, kind: str, now: datetime, data: dict[str, Any]) -> None:
        """Append one timeline event."""
        self._exec(
            "INSERT INTO events (incident_id, at, kind, data_json) VALUES (?, ?, ?, ?)",
            [incident_id, _ts(now), kind, _dump(data)],
        )

    def events(self, incident_id: str) -> list[Event]:
        """The timeline, oldest first."""
        rows = self._exec(
            "SELECT at, kind, data_json FROM events WHERE incident_id = ? ORDER BY id",
            [incident_id],
        ).fetchall()
        return [
            Event(datetime.fromisoformat(r["at"]), r["kind"], json.loads(r["data_json"]))
            for r in rows
        ]

    def uncleared(self) -> list[Incident]:
        """Incidents whose findings are still seen."""
        return self._select("WHERE cleared_at IS NULL ORDER BY opened_at")

    def in_state(self, *states: State) -> list[Incident]:
        """Incidents in the given states, oldest first."""
        marks = ", ".join("?" * len(states))
        return self._select(f"WHERE state IN ({marks}) ORDER BY opened_at", states)

    def recent(self, limit: int) -> list[Incident]:
        """Newest first."""
        return self._select("ORDER BY opened_at DESC LIMIT ?", [limit])

    def record_action(self, record: ActionRecord) -> int:
        """Write the action before dispatch, so a crash cannot forget it happened."""
        cursor = self._exec(
            "INSERT INTO actions (incident_id, target, action, at, outcome) VALUES (?, ?, ?, ?, ?)",
            [record.incident_id, record.target, record.action, _ts(record.at), record.outcome],
        )
        return int(cursor.lastrowid or 0)

    def finish_action(self, action_id: int, outcome: str) -> None:
        """Set the action's outcome."""
        self._exec("UPDATE actions SET outcome = ? WHERE id = ?", [outcome, action_id])

    def actions_since(self, since: datetime) -> list[ActionRecord]:
        """Actions at or after a time, fleet-wide, oldest first."""
        sql = (
            "SELECT incident_id, target, action, at, outcome FROM actions WHERE at >= ? ORDER BY at"
        )
        return [_action(r) for r in self._exec(sql, [_ts(since)]).fetchall()]

    def last_action(self, target: str, action: str) -> ActionRecord | None:
        """The most recent action of this kind on this target."""
        row = self._exec(
            "SELECT incident_id, target, action, at, outcome FROM actions "
            "WHERE target = ? AND action = ? ORDER BY at DESC LIMIT 1",
            [target, action],
        ).fetchone()
        return _action(row) if row is not None else None

    def breaker(self, target: str) -> tuple[int, bool]:
        """(consecutive failures, open?) for a target."""
        row = self._exec(
            "SELECT failures, is_open FROM breakers WHERE target = ?", [target]
        ).fetchone()
        return (int(row["failures"]), bool(row["is_open"])) if row else (0, False)

    def set_breaker(self, target: str, failures: int, is_open: bool, now: datetime) -> None:
        """Update a target's breaker."""
        self._exec(
            "INSERT INTO breakers (target, failures, is_open, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (target) DO UPDATE SET failures = excluded.failures, "
            "is_open = excluded.is_open, updated_at = excluded.updated_at",
            [target, failures, int(is_open), _ts(now)],
        )

    def counts_by_state(self) -> dict[str, int]:
        """Incidents per state."""
        rows = self._exec("SELECT state, COUNT(*) AS n FROM incidents GROUP BY state").fetchall()
        return {r["state"]: int(r["n"]) for r in rows}


def open_store(path: Path) -> IncidentStore:
    """Open (and migrate) the store at ``path``; mypy checks SQLiteStore fits the interface."""
    return SQLiteStore(path)


def snapshot(source: Path, dest: Path) -> None:
    """A consistent copy of the store (SQLite backup API); an empty store if none exists."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not source.exists():
        return
    try:
        with sqlite3.connect(source) as src, sqlite3.connect(dest) as dst:
            src.backup(dst)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot copy incident store {source}: {exc}") from exc
