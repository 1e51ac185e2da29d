"""kill -9 at random points of dispatches, against a real store: never an intent sent twice,
never an incident lost or stuck."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from agent.local import MetricsTarget
from tests.integration.fleet import TERMINAL, Fleet, finish, run_kill_loop

pytestmark = pytest.mark.integration

SERVICES = [f"svc-{i:02d}" for i in range(50)]
KILLS = 50


def test_kill_9_at_random_points_of_dispatch_never_sends_twice(
    tmp_path: Path, services_target: MetricsTarget
) -> None:
    """50 kill -9s of the agent while it dispatches 50 restarts to a slow, serial gateway
    that ignores Idempotency-Key: 0 intents sent twice, 0 incidents lost or stuck."""
    fleet = Fleet(
        tmp_path,
        services_target,
        f"sqlite:///{tmp_path / 'state' / 'agent.db'}",
        SERVICES,
        budget=10_000,
        replicas=0,
        gateway_delay=0.3,
        use_llm=False,
        sweep=0.3,
    )
    fleet.env["AI_COMMAND_GATEWAY_TIMEOUT"] = "5"
    try:
        run_kill_loop(tmp_path, fleet.env, KILLS, seed=20261124)
        rows = finish(tmp_path, fleet.env, expected=len(SERVICES))
    finally:
        fleet.stop()
    sent = Counter(r.body["target_resource"]["name"] for r in fleet.gateway.executions())
    twice = {service: n for service, n in sent.items() if n > 1}
    assert twice == {}, f"intents sent twice: {twice}"
    by_service = Counter(str(r["target"]) for r in rows)
    assert set(by_service) == set(SERVICES) and set(by_service.values()) == {1}, by_service
    stuck = [r for r in rows if r["state"] not in TERMINAL]
    assert stuck == [], f"stuck incidents: {stuck}"
    unknown = [r for r in rows if r["dispatch_outcome"] == "unknown"]
    assert unknown, "no kill landed between a claim and its result: the loop tested nothing"
