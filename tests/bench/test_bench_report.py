"""Benchmark: what `devops-agent report` costs as the ledger grows.

report_seconds_ratio: `devops-agent report --json --since 30d`, run as a user runs it (a
new process: start-up, settings, the store, the range query, the fold, the JSON), over
10,000 ended incidents in the range / over 100: goal <= 3. Printed beside it: the
command's seconds over 10,000, the in-process read and fold alone over 100 and 10,000
(which grows with the records, as a fold must), and the in-process report of the last
day's 100 records in a store of 10,000 (the index on the end time keeps the rest unread).
On SQLite and PostgreSQL. Figures, not asserts on time.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.config import load_config
from agent.incidents.lifecycle import on_finding
from agent.incidents.model import Incident
from agent.ledger.record import Outcome
from agent.reporting import build_report
from agent.store import open_store
from agent.store.base import IncidentStore, StateCopy
from agent.store.sql import SQLStore
from tests.conftest import BASE_ENV, CONFIG, alert_finding, postgres_schema, run_cli

RESULTS = ("sent", "approved", "denied", "observed", "none", "sent", "sent", "approved")


def _fill(store: IncidentStore, n: int, now: datetime, spread: timedelta) -> None:
    """``n`` ended incidents over ``spread`` before ``now``: 20 services, 5 actions, 40
    findings, every kind of result, with their outcome records."""
    incidents: list[Incident] = []
    outcomes: list[Outcome] = []
    for i in range(n):
        opened = now - spread * (i + 1) / (n + 1)
        service = f"svc-{i % 20}"
        finding = alert_finding(f"Alert{i % 40}", service, first_seen=opened)
        incident = on_finding(finding, f"b{i:09d}", opened).incident
        ended = opened + timedelta(minutes=4)
        incidents.append(replace(incident, state="resolved", updated_at=ended, cleared_at=ended))
        result = RESULTS[i % len(RESULTS)]
        outcomes.append(
            Outcome(
                incident_id=incident.id,
                group_key=incident.group_key,
                opened_at=opened,
                ended_at=ended,
                service=service,
                name=finding.name,
                kind="alert",
                source="prometheus",
                rule="memory",
                action=("restart", "start", "collect_logs", "restart", "none")[i % 5],
                decided_by="llm",
                keys=("model", "runbook"),
                result=result,
                verification="recovered" if result in ("sent", "approved") else None,
                watch="persisted" if result == "observed" else None,
                recovery_seconds=240.0 + i % 60,
                model_calls=3,
                prompt_tokens=1500,
                completion_tokens=120,
                cost=0.004,
                approval_seconds=60.0 if result in ("approved", "denied") else None,
                proposed="restart",
                runbook_action="restart",
                alone=True,
            )
        )
    store.import_state(StateCopy(incidents, [], []))
    assert isinstance(store, SQLStore)
    # Records straight into the ledger, in one transaction (the daemon writes each with
    # the step that ends its incident; that path is the unit and integration tests').
    with store._write() as cur:
        for outcome in outcomes:
            store._insert_outcome(cur, outcome)


def _median(runs: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_report_seconds_ratio(backend: str, tmp_path: Path) -> None:
    """Print report_seconds_ratio (10,000 incidents / 100, the command end to end) and the
    report's seconds over 10,000, with the in-process figures beside them."""
    now = datetime.now(UTC)
    config = load_config(CONFIG)
    urls: dict[str, str] = {}
    drops = []
    command: dict[str, float] = {}
    inside: dict[str, float] = {}
    try:
        for label, n, spread in (
            ("100", 100, timedelta(days=20)),
            ("10000", 10_000, timedelta(days=20)),
            ("recent", 10_000, timedelta(days=100)),
        ):
            if backend == "sqlite":
                urls[label] = f"sqlite:///{tmp_path / label / 'agent.db'}"
            else:
                urls[label], drop = postgres_schema(f"rep_{label}")
                drops.append(drop)
            store = open_store(urls[label])
            try:
                _fill(store, n, now, spread)
                since = timedelta(days=1) if label == "recent" else timedelta(days=30)
                inside[label] = _median(
                    7, lambda s=store, d=since: build_report(s, config, since=d, now=now)
                )
                if label == "recent":
                    read = store.outcomes(now - since, now)
                    assert len(read.outcomes) < 150, len(read.outcomes)
            finally:
                store.close()
        for label in ("100", "10000"):
            env = dict(BASE_ENV, AGENT_STATE_URL=urls[label])

            def once(env: dict[str, str] = env) -> None:
                done = run_cli("report", "--json", "--since", "30d", env=env, cwd=tmp_path)
                assert done.returncode == 0, done.stderr

            once()  # warm the page cache and the bytecode
            command[label] = _median(5, once)
    finally:
        for drop in drops:
            drop()
    ratio = command["10000"] / command["100"]
    print(
        f"\nbackend={backend}"
        f"\nreport_seconds_100={command['100']:.3f} report_seconds_10000={command['10000']:.3f}"
        f"\nreport_seconds_ratio={ratio:.2f} (goal <= 3: {'met' if ratio <= 3 else 'NOT met'})"
        f"\nreport_fold_ms_100={inside['100'] * 1e3:.1f} "
        f"report_fold_ms_10000={inside['10000'] * 1e3:.1f} "
        f"(in process: the range query and the fold)"
        f"\nreport_ms_last_day_of_10000={inside['recent'] * 1e3:.1f} "
        f"(about 100 records in the range, 10,000 in the store)"
    )
