"""The incident store: one suite, run against SQLite and against PostgreSQL."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.config import Severity
from agent.diagnosis.models import Decision, Diagnosis
from agent.errors import NoStore, StoreError
from agent.gateway.response import GatewayResult
from agent.guardrails.policy import Block
from agent.incidents.lifecycle import (
    Answer,
    BreakerChange,
    Step,
    on_approval_denied,
    on_approval_expired,
    on_block,
    on_claim,
    on_decision,
    on_diagnosis_started,
    on_finding,
    on_gateway_result,
    on_gone,
)
from agent.incidents.model import Event, Incident
from agent.store import open_store
from agent.store.base import Conflict, GuardFacts, IncidentStore
from agent.store.sql import MIGRATIONS
from agent.sweep.findings import Finding, fingerprint

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
RESTART = Decision("restart", None, "runbook", True)


def _finding(service: str = "market-predictor", name: str = "MemoryLeak") -> Finding:
    labels = {"alertname": name, "service": service}
    return Finding(
        kind="alert",
        name=name,
        target=service,
        severity=Severity.critical,
        labels=labels,
        annotations={"summary": 'é ☃ "quoted"\n'},
        value=1.5,
        first_seen=NOW,
        fingerprint=fingerprint("alert", name, labels, ()),
    )


@pytest.fixture
def store(store_url: str) -> Iterator[IncidentStore]:
    """An empty store of the backend under test."""
    opened = open_store(store_url)
    yield opened
    opened.close()


def _open(
    store: IncidentStore, service: str = "market-predictor", name: str = "MemoryLeak"
) -> Incident:
    step = on_finding(_finding(service, name), f"{service[:6]}-{name[:6]}".lower(), NOW)
    assert store.insert(step)
    [incident] = [i for i in store.current() if i.id == step.incident.id]
    return incident


def _commit(store: IncidentStore, step: Step, before: Incident, owner: str = "r1") -> Incident:
    return store.apply(step, expected_version=before.version, owner=owner, now=NOW).incident


def _decided(
    store: IncidentStore, service: str = "market-predictor", name: str = "MemoryLeak"
) -> Incident:
    incident = _open(store, service, name)
    started = _commit(
        store, on_diagnosis_started(incident, "r1", NOW + timedelta(seconds=30), NOW), incident
    )
    decision = replace(RESTART, target=service)
    return _commit(store, on_decision(started, Diagnosis(decision), NOW), started)


def _claim(store: IncidentStore, incident: Incident, owner: str = "r1") -> Incident:
    step = on_claim(
        incident,
        target=incident.target or "",
        mutating=True,
        owner=owner,
        lease_until=NOW + timedelta(seconds=30),
        now=NOW,
    )
    return _commit(store, step, incident, owner)


def test_incident_round_trips_with_every_field(store: IncidentStore) -> None:
    """An incident reads back exactly as written, unicode and all, its version bumped."""
    incident = _decided(store)
    [back] = store.current()
    assert back == incident and back.version == 2
    assert back.finding == _finding() and back.decision == replace(
        RESTART, target="market-predictor"
    )
    assert store.get(incident.id[:5]) == back and store.get("zz") is None and store.get("%") is None


def test_one_current_incident_per_group(store: IncidentStore) -> None:
    """A second incident of the same group is refused until the first is cleared."""
    first = _open(store)
    assert not store.insert(on_finding(_finding(), "other", NOW))
    gone = on_gone(first, NOW)
    assert gone is not None
    _commit(store, gone, first)
    assert store.insert(on_finding(_finding(), "second", NOW))
    assert [i.id for i in store.current()] == ["second"]


def test_a_step_over_a_stale_version_is_refused(store: IncidentStore) -> None:
    """Two replicas start from the same version: the first commit wins, the second is a Conflict."""
    incident = _open(store)
    _commit(store, on_diagnosis_started(incident, "r1", NOW + timedelta(seconds=30), NOW), incident)
    with pytest.raises(Conflict):
        _commit(
            store,
            on_diagnosis_started(incident, "r2", NOW + timedelta(seconds=30), NOW),
            incident,
            "r2",
        )


def test_a_live_lease_of_another_replica_holds_and_an_expired_one_does_not(
    store: IncidentStore,
) -> None:
    """Another replica's live lease refuses the step; once expired, the step goes through."""
    incident = _open(store)
    leased = _commit(
        store, on_diagnosis_started(incident, "r1", NOW + timedelta(seconds=30), NOW), incident
    )
    step = Step(leased.update(NOW, blocked_reason="x"))
    with pytest.raises(Conflict):
        store.apply(step, expected_version=leased.version, owner="r2", now=NOW)
    later = NOW + timedelta(seconds=31)
    assert (
        store.apply(step, expected_version=leased.version, owner="r2", now=later).incident.version
        == leased.version + 1
    )


def test_an_action_is_claimed_once(store: IncidentStore) -> None:
    """A second claim of the same (incident, action) is refused and nothing of its step is kept."""
    claimed = _claim(store, _decided(store))
    assert claimed.state == "acting"
    back = replace(claimed, state="decided")  # a replica that wrongly thinks it may claim again
    step = replace(
        on_claim(
            back, target="market-predictor", mutating=True, owner="r1", lease_until=NOW, now=NOW
        ),
        events=(Event(NOW, "should-not-stay"),),
    )
    with pytest.raises(Conflict):
        store.apply(step, expected_version=claimed.version, owner="r1", now=NOW)
    assert "should-not-stay" not in [e.kind for e in store.events(claimed.id)]
    assert store.current()[0].version == claimed.version


def test_one_action_in_flight_per_service(store: IncidentStore) -> None:
    """Two incidents of one service cannot both be acting: the database refuses the second."""
    _claim(store, _decided(store, name="MemoryLeak"))
    other = _decided(store, name="HighLatency")
    with pytest.raises(Conflict):
        _claim(store, other)


def test_guard_facts_are_read_under_the_lock(store: IncidentStore) -> None:
    """Cooldown, budgets, in-flight and breaker facts come from every replica's records."""
    claimed = _claim(store, _decided(store, name="MemoryLeak"))
    other = _decided(store, "market-predictor", name="HighLatency")
    seen: list[GuardFacts] = []

    def decide(fresh: Incident, facts: GuardFacts) -> Step:
        seen.append(facts)
        return on_block(fresh, Block("in_flight", "busy"), NOW)

    store.decide_under_lock(other, "market-predictor", "restart", NOW, "r1", decide)
    [facts] = seen
    assert facts == GuardFacts(NOW, 1, 1, True, False)
    # what the decision committed under the lock is what the store now holds
    stored_other, stored_claimed = store.get(other.id), store.get(claimed.id)
    assert isinstance(stored_other, Incident) and isinstance(stored_claimed, Incident)
    assert stored_other.blocked_reason == "in_flight"
    assert stored_other.version == other.version + 1
    assert [e.data for e in store.events(other.id) if e.kind == "blocked"] == [
        {"reason": "in_flight", "detail": "busy"}
    ]
    assert stored_claimed.state == "acting" and stored_claimed.version == claimed.version


def test_gateway_outcome_and_breaker_are_committed_with_the_step(store: IncidentStore) -> None:
    """The action's outcome and the breaker count commit with the state; the third failure
    opens the breaker, once."""
    opened = []
    for name in ("A", "B", "C"):
        claimed = _claim(store, _decided(store, name=name))
        result = GatewayResult("rejected", "VALIDATION_ERROR", 1, 0.1, "k", error_message="no")
        step = on_gateway_result(
            claimed, result, {}, NOW, mutating=True, verify_after=60, breaker_open_at=3
        )
        assert step.breaker == BreakerChange("market-predictor", True, 3)
        applied = store.apply(step, expected_version=claimed.version, owner="r1", now=NOW)
        opened.append(applied.breaker_opened)
        assert applied.incident.state == "escalated"
    assert opened == [False, False, True]
    breaker = store.breaker("market-predictor")
    assert breaker is not None and (breaker.failures, breaker.is_open) == (3, True)
    before = store.reset_breaker("market-predictor", NOW, "alice")
    assert before is not None and before.is_open
    breaker = store.breaker("market-predictor")
    assert breaker is not None and (breaker.failures, breaker.is_open) == (0, False)
    assert (breaker.reset_by, breaker.reset_at) == ("alice", NOW)
    assert store.reset_breaker("nosuch-service", NOW, "alice") is None
    assert store.breaker("nosuch-service") is None
    copy = store.export_state(NOW - timedelta(hours=1))
    assert {(a.action, a.outcome) for a in copy.actions} == {("restart", "rejected")}


def test_timeline_keeps_every_event_in_order(store: IncidentStore) -> None:
    """Transitions and notes appear in the timeline, oldest first."""
    claimed = _claim(store, _decided(store))
    store.note(claimed.id, Event(NOW, "escalation_sent", {"to": "alertmanager"}))
    kinds = [e.kind for e in store.events(claimed.id)]
    assert kinds == [
        "opened",
        "transition",
        "decision",
        "transition",
        "transition",
        "escalation_sent",
    ]


def test_renewal_touches_only_the_listed_leases_of_the_owner(store: IncidentStore) -> None:
    """Leases are renewed for the incidents a replica still works on, no others."""
    a, b = _open(store, name="A"), _open(store, name="B")
    for incident in (a, b):
        _commit(store, on_diagnosis_started(incident, "r1", NOW, NOW), incident)
    later = NOW + timedelta(minutes=5)
    assert store.renew_leases("r1", [a.id], later) == 1
    assert store.renew_leases("r2", [b.id], later) == 0
    leases = {i.id: i.lease_until for i in store.current()}
    assert leases == {a.id: later, b.id: NOW}


def test_an_ended_console_session_is_remembered_until_it_expires(store: IncidentStore) -> None:
    """A logged-out session stays ended; another does not; once past its expiry its record
    is dropped by the next logout; ending one twice is harmless."""
    store.end_session("s-old", NOW + timedelta(hours=1), NOW)
    store.end_session("s-new", NOW + timedelta(hours=12), NOW)
    store.end_session("s-new", NOW + timedelta(hours=12), NOW)
    assert store.session_ended("s-old") and store.session_ended("s-new")
    assert not store.session_ended("s-other")
    store.end_session("s-later", NOW + timedelta(hours=14), NOW + timedelta(hours=2))
    assert not store.session_ended("s-old")  # expired: the cookie itself is refused now
    assert store.session_ended("s-new") and store.session_ended("s-later")


def test_state_copies_into_another_store(store: IncidentStore, tmp_path: Path) -> None:
    """A dry run's copy holds the current incidents, the recent actions, the breakers and
    when each failing check series started failing (so it sees what the daemon sees)."""
    claimed = _claim(store, _decided(store))
    store.track_failing({"health:Down": ["a"]}, ["health:Down"], NOW)
    copy = open_store(f"sqlite:///{tmp_path / 'copy.db'}")
    try:
        copy.import_state(store.export_state(NOW - timedelta(hours=1)))
        assert copy.current() == [claimed]
        assert copy.export_state(NOW - timedelta(hours=1)).actions[0].incident_id == claimed.id
        later = NOW + timedelta(seconds=90)
        assert copy.track_failing({"health:Down": ["a"]}, ["health:Down"], later) == {
            "health:Down": {"a": NOW}
        }
    finally:
        copy.close()


def test_schema_is_latest_and_concurrent_openers_do_not_race(store_url: str) -> None:
    """Four agents opening one new store at the same moment all succeed, at the latest version."""
    errors: list[BaseException] = []
    stores: list[IncidentStore] = []
    gate = threading.Barrier(4)

    def opener() -> None:
        gate.wait()
        try:
            stores.append(open_store(store_url))
        except BaseException as exc:  # the test reports every failure
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert {s.schema_version for s in stores} == {len(MIGRATIONS)}  # type: ignore[attr-defined]
    for opened in stores:
        opened.close()


def test_a_version_1_file_is_migrated_in_place(tmp_path: Path) -> None:
    """A store written by the first version keeps its incidents: a diagnosing one with a
    decision becomes decided, an acting one keeps its service as the one in flight."""
    path = tmp_path / "v1.db"
    db = sqlite3.connect(path)
    db.executescript(
        MIGRATIONS[0].format(serial="INTEGER PRIMARY KEY AUTOINCREMENT")
        + "; PRAGMA user_version = 1;"
    )
    finding = _finding().to_dict()
    import json

    for i, (state, decision) in enumerate(
        [
            (
                "diagnosing",
                {
                    "action": "restart",
                    "target": "market-predictor",
                    "decided_by": "llm",
                    "actionable": True,
                    "usage": {},
                },
            ),
            ("acting", None),
        ]
    ):
        db.execute(
            "INSERT INTO incidents (id, group_key, fingerprint, kind, name, target, severity, state, opened_at, updated_at, finding_json, decision_json) VALUES (?, ?, 'fp', 'alert', 'MemoryLeak', 'market-predictor', 'critical', ?, ?, ?, ?, ?)",
            [
                f"old{i}",
                f"g{i}",
                state,
                NOW.isoformat(),
                NOW.isoformat(),
                json.dumps(finding),
                json.dumps(decision) if decision else None,
            ],
        )
    db.execute(
        "INSERT INTO actions (incident_id, target, action, at) VALUES ('old1', 'market-predictor', 'restart', ?)",
        [NOW.isoformat()],
    )
    db.execute(
        "INSERT INTO actions (incident_id, target, action, at) VALUES ('old1', 'market-predictor', 'restart', ?)",
        [NOW.isoformat()],
    )
    db.commit()
    db.close()
    store = open_store(f"sqlite:///{path}")
    try:
        by_id = {i.id: i for i in store.current()}
        assert by_id["old0"].state == "decided" and by_id["old0"].decision is not None
        assert by_id["old1"].action_target == "market-predictor"
        assert len(store.export_state(NOW - timedelta(days=1)).actions) == 1
    finally:
        store.close()


def test_a_store_that_cannot_be_opened_is_one_clear_error(tmp_path: Path) -> None:
    """An uncreatable path and an unreachable database are StoreErrors naming them, with no
    password in the message."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot open incident store"):
        open_store(f"sqlite:///{blocker / 'sub' / 'agent.db'}")
    with pytest.raises(StoreError) as caught:
        open_store("postgresql://agent:hunter2@127.0.0.1:9/nowhere?connect_timeout=2")
    assert "hunter2" not in str(caught.value) and "127.0.0.1:9" in str(caught.value)


def test_failing_series_are_shared_by_replicas_and_forgotten_when_clean(store_url: str) -> None:
    """A series one replica saw failing first keeps that start for another replica (and a
    restart); a check that ran clean forgets it, one that could not run keeps it, one no
    longer configured is dropped."""
    first, second = open_store(store_url), open_store(store_url)
    try:
        known = ["health:Down", "health:Gone"]
        first.track_failing({"health:Down": ["a"], "health:Gone": ["x"]}, known, NOW)
        later = NOW + timedelta(seconds=30)
        since = second.track_failing({"health:Down": ["a", "b"]}, known, later)
        assert since == {"health:Down": {"a": NOW, "b": later}}
        # health:Down could not run: nothing forgotten; health:Gone is no longer configured
        first.track_failing({}, ["health:Down"], later)
        again = second.track_failing({"health:Down": ["a"]}, ["health:Down"], later)
        assert again == {"health:Down": {"a": NOW}}
        second.track_failing({"health:Down": []}, ["health:Down"], later)  # a clean sweep
        fresh = first.track_failing({"health:Down": ["a"]}, ["health:Down"], later)
        assert fresh == {"health:Down": {"a": later}}
        # the check that was dropped starts again from scratch if it comes back
        back = first.track_failing({"health:Gone": ["x"]}, known, later)
        assert back == {"health:Gone": {"x": later}}
    finally:
        first.close()
        second.close()


def _waiting(store: IncidentStore, name: str) -> Incident:
    incident = _open(store, name=name)
    started = _commit(
        store, on_diagnosis_started(incident, "r1", NOW + timedelta(seconds=30), NOW), incident
    )
    decision = Decision("none", None, "llm", True, approval_action="restart")
    decision = replace(decision, approval_target="market-predictor")
    return _commit(store, on_decision(started, Diagnosis(decision), NOW), started)


def test_approval_endings_are_counted_in_the_store(store_url: str) -> None:
    """How each wait for a human ended is committed with its step, so any process (the
    CLI, another replica) counts for the daemon's approvals_total."""
    cli, daemon = open_store(store_url), open_store(store_url)
    try:
        denied = _waiting(cli, "A")
        assert denied.state == "awaiting_approval"
        answer = Answer(approve=False, by="alice", reason="not now", at=NOW)
        _commit(cli, on_approval_denied(denied, answer, NOW), denied)
        expired = _waiting(cli, "B")
        _commit(cli, on_approval_expired(expired, NOW), expired)
        assert daemon.approval_counts() == {"denied": 1, "expired": 1}
    finally:
        cli.close()
        daemon.close()


def test_a_command_that_only_reads_never_creates_a_store(store_url: str, tmp_path: Path) -> None:
    """Opening without create: a missing store is NoStore naming where it looked, and
    nothing (no file, no directory, no schema) is made."""
    if store_url.startswith("sqlite:///"):
        url = f"sqlite:///{tmp_path / 'nowhere' / 'agent.db'}"
        with pytest.raises(NoStore, match=r"no incident store at .*nowhere/agent.db"):
            open_store(url, create=False)
        assert not (tmp_path / "nowhere").exists()
        return
    with pytest.raises(NoStore, match=r"\(AGENT_STATE_URL\)"):
        open_store(store_url, create=False)
    with pytest.raises(NoStore):
        open_store(store_url, create=False)  # still nothing: the first made no schema
    open_store(store_url).close()
    opened = open_store(store_url, create=False)
    assert opened.schema_version == len(MIGRATIONS)
    opened.close()


def _dialect(url: str) -> Any:
    if url.startswith("sqlite:///"):
        from agent.store.sqlite import SQLiteDialect

        return SQLiteDialect(Path(url.removeprefix("sqlite:///")))
    from agent.store.postgres import PostgresDialect

    return PostgresDialect(url)


def test_a_store_being_migrated_is_waited_for(store_url: str) -> None:
    """A command opening a store while another process creates it waits for the migration
    lock and then reads the finished store, instead of calling it missing."""
    migrating = _dialect(store_url)
    opened: list[IncidentStore] = []
    errors: list[BaseException] = []

    def opener() -> None:
        try:
            opened.append(open_store(store_url, create=False))
        except BaseException as exc:  # the test reports it
            errors.append(exc)

    thread = threading.Thread(target=opener)
    with migrating.transaction(locked=True) as cur:
        migrating.schema_version(cur)
        for script in MIGRATIONS:
            for statement in script.format(serial=migrating.serial).split(";"):
                if statement.strip():
                    cur.execute(statement)
        migrating.set_schema_version(cur, len(MIGRATIONS))
        thread.start()
        time.sleep(0.5)  # let the opener reach the lock while the migration holds it
    thread.join(timeout=30)
    migrating.close()
    assert errors == []
    assert opened[0].schema_version == len(MIGRATIONS)
    opened[0].close()


def test_a_read_only_store_reads_and_refuses_every_write(store_url: str, tmp_path: Path) -> None:
    """Opened read-only (the MCP server's reads): a missing store is NoStore and nothing is
    made; an existing one reads as usual, the database refuses every write, and a row
    that cannot be read is left out without being quarantined (that is a write)."""
    with pytest.raises(NoStore):
        open_store(store_url, read_only=True)
    if store_url.startswith("sqlite:///"):
        assert not Path(store_url.removeprefix("sqlite:///")).exists()
    with pytest.raises(NoStore):
        open_store(store_url, read_only=True)  # still nothing: the first made no schema
    writer = open_store(store_url)
    kept, broken = _open(writer), _open(writer, "coding-ai-agent")
    reader = open_store(store_url, read_only=True)
    try:
        corrupt = "UPDATE incidents SET finding_json = '{broken' WHERE id = ?"
        with writer._write() as cur:  # type: ignore[attr-defined]
            cur.execute(writer._d.sql(corrupt), (broken.id,))  # type: ignore[attr-defined]
        assert [i.id for i in reader.current()] == [kept.id]
        assert {i.id for i in reader.recent(10)} == {kept.id, broken.id}
        assert reader.events(kept.id)[0].kind == "opened"
        with pytest.raises(StoreError, match="read"):
            reader.insert(on_finding(_finding("devops-ai-agent"), "x1", NOW))
        with pytest.raises(StoreError, match="read"):
            reader.note(kept.id, Event(NOW, "note", {}))
        assert writer.get(broken.id) is not None
        [readable] = writer.current()  # the writer quarantines it, the reader did not
        assert readable.id == kept.id
    finally:
        reader.close()
        writer.close()


@pytest.mark.integration
def test_a_database_user_that_may_only_select_reads_a_store_opened_read_only() -> None:
    """PostgreSQL: a role granted SELECT and nothing else opens the store read-only and
    reads it (what `devops-agent mcp` needs without answers)."""
    import uuid
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    from tests.conftest import POSTGRES, postgres_schema

    url, drop = postgres_schema("ro")
    schema = url.rsplit("%3D", 1)[1]
    role = f"reader_{uuid.uuid4().hex[:8]}"
    writer = open_store(url)
    kept = _open(writer)
    writer.close()
    with psycopg.connect(POSTGRES, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
        admin.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
        admin.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role}")
    try:
        parts = urlsplit(url)
        where = f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
        reader = open_store(urlunsplit(parts._replace(netloc=f"{role}@{where}")), read_only=True)
        assert [i.id for i in reader.current()] == [kept.id]
        reader.close()
    finally:
        drop()
        with psycopg.connect(POSTGRES, autocommit=True) as admin:
            admin.execute(f"DROP ROLE {role}")
