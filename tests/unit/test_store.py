"""The SQLite incident store: migrations, one current incident per group, actions, breakers."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.errors import StoreError
from agent.store.base import ActionRecord, Incident
from agent.store.sqlite import MIGRATIONS, SQLiteStore

NOW = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)


def _incident(id_: str = "abc123", group: str = "g1") -> Incident:
    return Incident(
        id=id_,
        group_key=group,
        fingerprint="fp1",
        kind="alert",
        name="MemoryLeak",
        target="market-predictor",
        severity="critical",
        state="open",
        opened_at=NOW,
        updated_at=NOW,
        finding={"name": "MemoryLeak", "labels": {"x": 'ü\n"quoted"'}},
    )


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    """A fresh store in a temporary file."""
    return SQLiteStore(tmp_path / "agent.db")


def test_schema_is_migrated_and_wal(store: SQLiteStore, tmp_path: Path) -> None:
    """A new file is at the latest schema version, in WAL mode; reopening changes nothing."""
    assert store.schema_version == len(MIGRATIONS)
    store.close()
    again = SQLiteStore(tmp_path / "agent.db")
    assert again.schema_version == len(MIGRATIONS)
    mode = sqlite3.connect(tmp_path / "agent.db").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_one_current_incident_per_group(store: SQLiteStore) -> None:
    """A second uncleared incident of the same group is refused by the database."""
    store.open_incident(_incident())
    with pytest.raises(StoreError, match="UNIQUE"):
        store.open_incident(_incident(id_="other"))
    first = store.current_for("g1")
    assert first is not None
    first.cleared_at = NOW
    store.save(first, NOW)
    store.open_incident(_incident(id_="later"))
    assert store.current_for("g1").id == "later"  # type: ignore[union-attr]


def test_transitions_are_timestamped_events(store: SQLiteStore) -> None:
    """Each transition is stored and appears in the timeline with its data."""
    incident = store.open_incident(_incident())
    store.transition(incident, "diagnosing", NOW + timedelta(seconds=1))
    store.transition(incident, "skipped", NOW + timedelta(seconds=2), reason="noise")
    events = store.events("abc")  # prefixes work for get(), events need the id
    assert events == []
    timeline = store.events("abc123")
    assert [e.kind for e in timeline] == ["opened", "transition", "transition"]
    assert timeline[-1].data == {"from": "diagnosing", "to": "skipped", "reason": "noise"}
    loaded = store.get("abc")
    assert loaded is not None and loaded.state == "skipped"
    assert loaded.finding["labels"]["x"] == 'ü\n"quoted"'


def test_actions_and_breakers_survive_reopen(store: SQLiteStore, tmp_path: Path) -> None:
    """Cooldown and breaker state are on disk, so a restarted agent sees them."""
    action_id = store.record_action(ActionRecord("abc123", "market-predictor", "restart", NOW))
    store.finish_action(action_id, "succeeded")
    store.set_breaker("market-predictor", 3, True, NOW)
    store.close()
    again = SQLiteStore(tmp_path / "agent.db")
    last = again.last_action("market-predictor", "restart")
    assert last is not None and last.at == NOW and last.outcome == "succeeded"
    assert again.breaker("market-predictor") == (3, True)
    assert again.breaker("other") == (0, False)
    assert len(again.actions_since(NOW - timedelta(hours=1))) == 1
    assert again.actions_since(NOW + timedelta(seconds=1)) == []


def test_unwritable_location_is_a_store_error(tmp_path: Path) -> None:
    """A path that cannot be created gives StoreError with the path, not a traceback."""
    from agent.errors import StoreError

    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreError, match="cannot open incident store"):
        SQLiteStore(blocker / "sub" / "agent.db")
