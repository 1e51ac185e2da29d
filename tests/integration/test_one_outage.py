"""One outage that never stops is one incident and one approval ask, whoever sweeps: a
health check with ``for_seconds`` on a real Prometheus, the restart waiting for a human,
a second replica joining on the same store and a restart of the first, on SQLite and on
PostgreSQL. When each series started failing is kept in the store, so neither the new
replica nor the restarted daemon starts counting again, and neither clears the incident."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from agent.daemon.cycle import run_cycle
from agent.local import LocalPrometheus, MetricsTarget
from agent.runtime import open_runtime
from agent.settings import Settings, load_settings
from tests.integration.daemon_support import agent_env, until_waiting, write_config

pytestmark = pytest.mark.integration

SERVICE = "market-predictor"
FOR_SECONDS = 3


@pytest.fixture
def prometheus(tmp_path: Path, services_target: MetricsTarget) -> Iterator[LocalPrometheus]:
    """A real Prometheus with no alerting rules: the check is the only source of findings."""
    server = LocalPrometheus(
        tmp_path / "prom", targets={"services": services_target.address}
    ).start()
    yield server
    server.stop()


def _settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prom: LocalPrometheus, store_url: str
) -> Settings:
    check = {
        "name": "MemoryLeakCheck",
        "expr": "e2e_memory_bytes > 1000",
        "target_label": "service",
        "severity": "critical",
        "for_seconds": FOR_SECONDS,
    }
    service = {"actions": ["restart", "collect_logs"], "autonomy": {"restart": "approve"}}
    config = write_config(
        tmp_path / "agent.toml",
        checks={"health": [check]},
        services={SERVICE: service},
        diagnosis={"use_llm": False},
    )
    env = agent_env(tmp_path, config, prom.url, "http://127.0.0.1:9", AGENT_STATE_URL=store_url)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return load_settings(env_file=None)


async def test_one_outage_is_one_incident_and_one_ask_across_a_replica_and_a_restart(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    prometheus: LocalPrometheus,
    services_target: MetricsTarget,
    store_url: str,
) -> None:
    """The leak never stops: the first replica's incident waits for approval; a replica
    that joins and the first one restarted each sweep at once and clear nothing, open
    nothing and ask nobody again: 1 incident, 1 ask."""
    services_target.set("e2e_memory_bytes", 5000, service=SERVICE)
    settings = _settings(tmp_path, monkeypatch, prometheus, store_url)
    with capture_logs() as logs:
        async with open_runtime(settings) as first:
            waiting = await until_waiting(first)
            async with open_runtime(settings) as second:
                for rt in (second, first, second):
                    await run_cycle(rt, datetime.now(UTC))
        async with open_runtime(settings) as restarted:
            for _ in range(2):
                report = await run_cycle(restarted, datetime.now(UTC))
            incidents = restarted.store.recent(10)
    assert [f.name for f in report.sweep.findings] == ["MemoryLeakCheck"]
    assert [(i.id, i.state) for i in incidents] == [(waiting.id, "awaiting_approval")]
    assert [e["incident_id"] for e in logs if e["event"] == "approval_requested"] == [waiting.id]
    assert not [e for e in logs if e["event"] == "incident_cleared"]
