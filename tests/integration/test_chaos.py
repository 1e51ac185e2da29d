"""kill -9 at random points of dispatches, against a real store (one SQLite file, and a
shorter run on PostgreSQL): never an intent sent twice, never an incident lost or stuck."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.local import MetricsTarget
from tests.conftest import postgres_schema
from tests.integration.fleet import TERMINAL, Fleet, finish, run_kill_loop

pytestmark = pytest.mark.integration

#: (kills, services) per backend: the SQLite run is the longer one, PostgreSQL's shorter
#: (make bench's duplicates_under_chaos runs 50 on PostgreSQL).
RUNS = {"sqlite": (20, 30), "postgresql": (12, 15)}


@pytest.fixture(params=sorted(RUNS))
def chaos_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(backend, store URL): a new SQLite file, or a new PostgreSQL schema (no server is a
    failure, not a skip)."""
    if request.param == "sqlite":
        yield "sqlite", f"sqlite:///{tmp_path / 'state' / 'agent.db'}"
        return
    url, drop = postgres_schema("chaos")
    try:
        yield "postgresql", url
    finally:
        drop()


@pytest.mark.timeout(300)  # each kill waits for its daemon's start: longer on a busy machine
def test_kill_9_at_random_points_of_dispatch_never_sends_twice(
    tmp_path: Path, services_target: MetricsTarget, chaos_store: tuple[str, str]
) -> None:
    """kill -9s of the agent while it dispatches restarts to a slow, serial gateway that
    ignores Idempotency-Key: 0 intents sent twice, 0 incidents lost or stuck."""
    backend, url = chaos_store
    kills, count = RUNS[backend]
    services = [f"svc-{i:02d}" for i in range(count)]
    fleet = Fleet(
        tmp_path,
        services_target,
        url,
        services,
        budget=10_000,
        replicas=0,
        gateway_delay=0.3,
        use_llm=False,
        sweep=0.3,
    )
    fleet.env["AI_COMMAND_GATEWAY_TIMEOUT"] = "5"
    try:
        run_kill_loop(tmp_path, fleet.env, kills, seed=20261124)
        rows = finish(tmp_path, fleet.env, expected=len(services))
    finally:
        fleet.stop()
    # A kill -9 while the body is being written leaves a request the gateway cannot read
    # (and so never runs): only whole requests count.
    whole = [r for r in fleet.gateway.executions() if isinstance(r.body, dict)]
    sent = Counter(r.body["target_resource"]["name"] for r in whole)
    twice = {service: n for service, n in sent.items() if n > 1}
    assert twice == {}, f"intents sent twice: {twice}"
    by_service = Counter(str(r["target"]) for r in rows)
    assert set(by_service) == set(services) and set(by_service.values()) == {1}, by_service
    stuck = [r for r in rows if r["state"] not in TERMINAL]
    assert stuck == [], f"stuck incidents: {stuck}"
    unknown = [r for r in rows if r["dispatch_outcome"] == "unknown"]
    assert unknown, "no kill landed between a claim and its result: the loop tested nothing"
