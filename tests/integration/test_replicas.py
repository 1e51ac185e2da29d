"""Several replicas on one store divide the work: every incident diagnosed once, every
intent sent once, budgets held fleet-wide; a replica killed mid-work leaves its incidents
to the others. Three processes on PostgreSQL, three on one SQLite file."""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.local import MetricsTarget
from tests.conftest import postgres_schema
from tests.integration.fleet import Fleet

pytestmark = pytest.mark.integration


@pytest.fixture(params=["postgresql", "sqlite"])
def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """One store URL that every replica of the test shares."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'shared' / 'agent.db'}"
        return
    url, drop = postgres_schema("replicas")
    try:
        yield url
    finally:
        drop()


def test_replicas_divide_the_work(
    tmp_path: Path, services_target: MetricsTarget, shared_store: str
) -> None:
    """20 services fire at once: each incident is diagnosed once, each intent sent once, and
    the fleet budget (15 an hour) holds across the three replicas."""
    services = [f"svc-{i:02d}" for i in range(20)]
    # Leases of 6 s, not the fleet's 2: nobody is killed here, and a replica starved of CPU
    # for 2 s on a busy machine would rightly lose its diagnoses to the others.
    fleet = Fleet(tmp_path, services_target, shared_store, services, budget=15, lease=6)
    try:
        fleet.wait(lambda: len(fleet.gateway.executions()) >= 15, 90, "15 dispatches")
        fleet.wait(
            lambda: (
                len(
                    {
                        e["incident_id"]
                        for e in fleet.events("guardrail_blocked")
                        if e["reason"] == "fleet_budget"
                    }
                )
                >= 5
            ),
            60,
            "5 incidents held back by the fleet budget",
        )
        time.sleep(2)  # a few more sweeps: nothing more may be sent
        diagnosed = Counter(e["fingerprint"] for e in fleet.events("diagnosis_finished"))
        opened = fleet.events("incident_opened")
        workers = {
            r.log_path.name
            for r in fleet.replicas
            if any(e.get("event") == "diagnosis_finished" for e in r.events())
        }
    finally:
        fleet.stop()
    sent = Counter(r.body["target_resource"]["name"] for r in fleet.gateway.executions())
    assert len(opened) == 20, "one incident per problem across all replicas"
    assert len(diagnosed) == 20 and set(diagnosed.values()) == {1}, diagnosed
    assert sum(sent.values()) == 15 and set(sent.values()) == {1}, sent
    assert len(workers) >= 2, f"the work was not divided: only {workers} diagnosed"


def test_a_killed_replica_leaves_its_incidents_to_the_others(
    tmp_path: Path, services_target: MetricsTarget, shared_store: str
) -> None:
    """kill -9 one replica while it diagnoses: once its leases expire the others take its
    incidents over, and every incident is resolved with one restart each."""
    services = [f"svc-{i:02d}" for i in range(20)]
    fleet = Fleet(tmp_path, services_target, shared_store, services, budget=100)
    victim = fleet.replicas[0]
    try:
        fleet.wait(
            lambda: any(e.get("event") == "llm_call" for e in victim.events()),
            60,
            "the victim at work",
        )
        victim.proc.send_signal(signal.SIGKILL)
        victim.wait(10)
        survivors = fleet.replicas[1:]

        def all_resolved() -> bool:
            return (
                len(
                    [
                        e
                        for r in survivors
                        for e in r.events()
                        if e.get("event") == "incident_resolved"
                    ]
                )
                + len([e for e in victim.events() if e.get("event") == "incident_resolved"])
                >= 20
            )

        fleet.wait(all_resolved, 120, "all 20 incidents resolved")
        taken = [
            e for r in survivors for e in r.events() if e.get("event") == "incident_taken_over"
        ]
    finally:
        fleet.stop()
    sent = Counter(r.body["target_resource"]["name"] for r in fleet.gateway.executions())
    assert set(sent) == set(services) and set(sent.values()) == {1}, sent
    assert taken, "no incident of the killed replica was taken over"
