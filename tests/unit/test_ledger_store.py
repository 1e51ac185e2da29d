"""The outcome ledger in the store, on SQLite and PostgreSQL: one record per ended incident
written with the step that ends it, a time-range read, counts that survive pruning, a
record that cannot be read skipped and counted, and the incidents that ended before the
ledger existed recorded when the store is migrated."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from prometheus_client import generate_latest

from agent.diagnosis.models import Decision, Diagnosis, PhaseUsage
from agent.incidents.lifecycle import (
    Answer,
    on_approval_denied,
    on_decision,
    on_diagnosis_started,
    on_finding,
)
from agent.incidents.model import Incident
from agent.metrics import AgentMetrics
from agent.store import open_store
from agent.store.base import IncidentStore
from agent.store.sql import LEDGER_VERSION, MIGRATIONS
from tests.conftest import alert_finding

T0 = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)
MP = "market-predictor"
SAYS_NONE = Decision("none", MP, "llm", False, reason="nothing to do", proposed="none")
ASKS = Decision(
    "none",
    MP,
    "llm",
    True,
    approval_action="restart",
    approval_target=MP,
    keys=("runbook",),
    proposed="none",
    runbook_action="restart",
)


def _raw(url: str, *statements: str) -> None:
    """Run SQL on the store's database behind its back (to damage or age it)."""
    if url.startswith("sqlite:///"):
        db = sqlite3.connect(url.removeprefix("sqlite:///"))
        with db:
            for sql in statements:
                db.execute(sql)
        db.close()
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for sql in statements:
            conn.execute(sql)


def _ended(store: IncidentStore, n: int, decision: Decision, at: datetime) -> Incident:
    """Open incident n and take it to its end through the lifecycle's steps."""
    finding = alert_finding(f"Leak{n}", MP, first_seen=at)
    opened = on_finding(finding, f"inc{n:05d}", at)
    assert store.insert(opened)
    started = on_diagnosis_started(opened.incident, "r1", at + timedelta(seconds=30), at)
    store.apply(started, expected_version=0, owner="r1", now=at)
    diagnosis = Diagnosis(decision, usage={"plan": PhaseUsage(2, 400, 40)}, cost=0.02)
    step = on_decision(replace(started.incident, version=1), diagnosis, at)
    applied = store.apply(step, expected_version=1, owner="r1", now=at)
    incident = applied.incident
    if incident.state == "awaiting_approval":
        later = at + timedelta(seconds=45)
        denial = on_approval_denied(incident, Answer(False, "alice", "not now", later), later)
        incident = store.apply(denial, expected_version=2, owner="r1", now=later).incident
    return incident


def test_an_ending_writes_one_record_and_its_count(store_url: str) -> None:
    """Each ended incident leaves one record (what happened, tokens, cost, answer latency)
    in the same commit, read back by time range; outcomes_total reads the counts."""
    store = open_store(store_url)
    try:
        _ended(store, 1, SAYS_NONE, T0)
        _ended(store, 2, ASKS, T0 + timedelta(hours=1))
        read = store.outcomes(T0, T0 + timedelta(days=1))
        assert [(o.incident_id, o.result, o.action) for o in read.outcomes] == [
            ("inc00001", "none", "none"),
            ("inc00002", "denied", "restart"),
        ]
        denied = read.outcomes[1]
        assert (denied.prompt_tokens, denied.model_calls, denied.cost) == (400, 2, 0.02)
        assert denied.approval_seconds == 45.0 and denied.runbook_action == "restart"
        assert sorted(g for g, _ in read.openings) == sorted(o.group_key for o in read.outcomes)
        assert store.outcomes(T0 + timedelta(minutes=30), T0 + timedelta(days=1)).outcomes == [
            denied
        ]
        metrics = AgentMetrics()
        metrics.outcomes.read = store.outcome_counts
        text = generate_latest(metrics.registry).decode()
        assert (
            'devops_agent_outcomes_total{action="restart",result="denied",'
            'service="market-predictor"} 1.0' in text
        )
        assert store.prune_outcomes(T0 + timedelta(minutes=30)) == 1
        assert [o.incident_id for o in store.outcomes(T0, T0 + timedelta(days=1)).outcomes] == [
            "inc00002"
        ]
        assert store.outcome_counts()[(MP, "none", "none")] == 1  # pruning keeps the counts
    finally:
        store.close()


def test_a_record_that_cannot_be_read_is_skipped_and_counted(store_url: str) -> None:
    """A damaged record is returned as unreadable, the others are read."""
    store = open_store(store_url)
    try:
        _ended(store, 1, SAYS_NONE, T0)
        _ended(store, 2, SAYS_NONE, T0 + timedelta(minutes=1))
        _raw(
            store_url, "UPDATE outcomes SET record_json = '{\"oops' WHERE incident_id = 'inc00001'"
        )
        read = store.outcomes(T0, T0 + timedelta(days=1))
        assert [o.incident_id for o in read.outcomes] == ["inc00002"]
        assert [u.id for u in read.unreadable] == ["inc00001"]
    finally:
        store.close()


def test_incidents_that_ended_before_the_ledger_are_recorded_on_migration(
    store_url: str,
) -> None:
    """A store at the version before the ledger, with ended incidents, gets their records
    (and counts) when it is migrated; open incidents get none."""
    store = open_store(store_url)
    try:
        _ended(store, 1, ASKS, T0)
        store.insert(on_finding(alert_finding("Open", MP, first_seen=T0), "open0001", T0))
    finally:
        store.close()
    before = LEDGER_VERSION - 1  # a later migration must be undone here too
    version = (
        f"PRAGMA user_version = {before}"
        if store_url.startswith("sqlite")
        else f"UPDATE devops_agent_schema SET version = {before}"
    )
    _raw(
        store_url,
        "DROP TABLE outcomes",
        "DROP TABLE outcome_counts",
        "DROP INDEX incidents_opened",
        "DROP INDEX incidents_current",
        version,
    )
    store = open_store(store_url)
    try:
        assert store.schema_version == len(MIGRATIONS)
        read = store.outcomes(T0 - timedelta(days=1), T0 + timedelta(days=1))
        assert [(o.incident_id, o.result) for o in read.outcomes] == [("inc00001", "denied")]
        assert store.outcome_counts() == {(MP, "restart", "denied"): 1}
    finally:
        store.close()
