"""The metrics the rules for the agent itself read (config/prometheus-rules.yml): a sweep
that saw nothing, how diagnoses were decided, the next approval deadline and the open
circuit breakers, as a scrape shows them. Prometheus is faked at the HTTP boundary; the
cycle, the store (SQLite) and the registry are real."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client import generate_latest
from pytest_httpx import HTTPXMock

from agent.approvals import answer_approval, make_answer
from agent.daemon.cycle import run_cycle
from agent.runtime import Runtime, open_runtime
from agent.settings import load_settings
from agent.store.base import Breaker, StateCopy
from tests.conftest import BASE_ENV
from tests.integration.daemon_support import write_config

PROM = "http://prom.test"
MP = "market-predictor"


class Prometheus:
    """Fires a memory leak on market-predictor, or answers 503 to everything."""

    def __init__(self) -> None:
        self.down = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            return httpx.Response(503, text="down")
        if request.url.path == "/api/v1/alerts":
            alert = {
                "state": "firing",
                "labels": {"alertname": "ServiceMemoryLeak", "service": MP},
                "annotations": {},
                "activeAt": (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
                "value": "1e+00",
            }
            return httpx.Response(200, json={"status": "success", "data": {"alerts": [alert]}})
        if request.url.path == "/-/healthy":
            return httpx.Response(200, text="ok")
        return httpx.Response(200, json={"status": "success", "data": {"result": []}})


def _scrape(rt: Runtime) -> str:
    return generate_latest(rt.metrics.registry).decode()


def _value(text: str, series: str) -> float | None:
    found = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else None


@pytest.fixture
def prometheus(httpx_mock: HTTPXMock) -> Prometheus:
    """The faked Prometheus."""
    fake = Prometheus()
    httpx_mock.add_callback(fake, url=re.compile(re.escape(PROM) + ".*"), is_reusable=True)
    return fake


async def test_the_metrics_behind_the_rules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prometheus: Prometheus
) -> None:
    """A leak whose restart needs approval: the runbook decided (diagnoses_total), the
    deadline is exported while it waits and gone once denied; a breaker read from the
    store shows open, then closed after a reset; a sweep with every source down counts as
    failed, not partial."""
    config = write_config(
        tmp_path / "agent.toml",
        diagnosis={"use_llm": False},
        services={MP: {"actions": ["restart"], "autonomy": {"restart": "approve"}}},
    )
    for key, value in {
        **BASE_ENV,
        "PROMETHEUS_URL": PROM,
        "AGENT_CONFIG": str(config),
        "AGENT_STATE_URL": f"sqlite:///{tmp_path / 'agent.db'}",
    }.items():
        monkeypatch.setenv(key, value)
    async with open_runtime(load_settings(env_file=None)) as rt:
        await run_cycle(rt, datetime.now(UTC))
        [waiting] = [i for i in rt.store.current() if i.asks]
        text = _scrape(rt)
        assert _value(text, 'devops_agent_diagnoses_total{outcome="runbook"}') == 1
        assert _value(text, 'devops_agent_diagnoses_total{outcome="fallback"}') == 0
        assert waiting.approval_until is not None
        deadline = _value(text, "devops_agent_approval_deadline_timestamp_seconds")
        assert deadline == waiting.approval_until.timestamp()
        assert _value(text, "devops_agent_approval_ttl_seconds") == 900

        answer = make_answer(approve=False, by="alice", reason="not now", at=datetime.now(UTC))
        assert (await answer_approval(rt, waiting.id, answer)).ok
        await run_cycle(rt, datetime.now(UTC))
        text = _scrape(rt)
        assert _value(text, "devops_agent_approval_deadline_timestamp_seconds") is None

        rt.store.import_state(
            StateCopy([], [], [Breaker(MP, 3, True, datetime.now(UTC) - timedelta(minutes=5))])
        )
        assert _value(_scrape(rt), f'devops_agent_circuit_breaker_open{{service="{MP}"}}') == 1
        rt.store.reset_breaker(MP, datetime.now(UTC), "alice")
        assert _value(_scrape(rt), f'devops_agent_circuit_breaker_open{{service="{MP}"}}') == 0

        prometheus.down = True
        report = await run_cycle(rt, datetime.now(UTC), trigger="schedule")
        assert report.sweep.blind
        text = _scrape(rt)
        assert _value(text, 'devops_agent_sweeps_total{result="failed",trigger="schedule"}') == 1
        assert (
            _value(text, 'devops_agent_sweeps_total{result="partial",trigger="schedule"}') is None
        )
