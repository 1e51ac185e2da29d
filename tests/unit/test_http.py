"""The agent's own /metrics and /healthz endpoint."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from agent.daemon.http import Liveness, MetricsServer
from agent.metrics import AgentMetrics

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(("max_age", "status", "body"), [(3600.0, 200, "ok"), (-1.0, 503, "stale")])
def test_healthz_follows_last_sweep(max_age: float, status: int, body: str) -> None:
    """/healthz is 200 while sweeps are recent and 503 once they are not."""
    liveness = Liveness(max_age_seconds=max_age)
    liveness.sweep_finished()
    server = MetricsServer("127.0.0.1", 0, AgentMetrics(), liveness).start()
    try:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5) as r:
                got_status, got = r.status, json.load(r)
        except urllib.error.HTTPError as err:
            got_status, got = err.code, json.load(err)
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as r:
            exposition = r.read().decode()
    finally:
        server.stop()
    assert (got_status, got["status"]) == (status, body)
    assert "devops_agent_sweep_duration_seconds" in exposition
