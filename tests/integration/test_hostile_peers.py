"""Peers that answer one byte at a time hold nothing: every request has one deadline for
the whole answer, however the bytes arrive, and the daemon stops in bounded time after
SIGTERM whatever its peers do. (A client that timed out per read only would never return
from these servers: the test would hit its own timeout.)"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.clients.gateway import GatewayClient, build_http_client
from agent.clients.llm import LLMOptions, build_llm_client
from agent.config import GatewayOptions, Severity
from agent.diagnosis.engine import DiagnosisDeps, diagnose
from agent.gateway.request import GatewayRequest, idempotency_key
from agent.metrics import AgentMetrics
from agent.sweep.collector import SweepDeps, sweep
from agent.sweep.findings import Finding, fingerprint
from tests.conftest import MakePrometheus, make_config
from tests.integration.daemon_support import DaemonProcess, NotifySocket, agent_env, write_config
from tests.integration.peers import SlowDrip

pytestmark = pytest.mark.integration


@pytest.fixture
def drip() -> Iterator[SlowDrip]:
    """A peer that sends one byte every half second, forever."""
    server = SlowDrip(interval=0.5)
    yield server
    server.stop()


async def test_a_dripping_prometheus_fails_the_sweep_source_in_time(
    drip: SlowDrip, make_prometheus: MakePrometheus
) -> None:
    """The sweep returns, with the alerts source failed on the whole-request deadline."""
    deps = SweepDeps(
        config=make_config(checks={}),
        prometheus=make_prometheus(drip.url, timeout=1),
        metrics=AgentMetrics(),
    )
    report = await sweep(deps, datetime.now(UTC))
    [alerts] = report.sources
    assert not alerts.ok and "no whole answer within 1s" in (alerts.error or "")


async def test_a_dripping_gateway_leaves_the_restart_unknown_and_unsent_again(
    drip: SlowDrip,
) -> None:
    """A restart sent to a dripping gateway is not waited for past the timeout, nor sent again."""
    request = GatewayRequest(
        source_id="devops-ai-agent",
        target="market-predictor",
        action="restart",
        intent="restart the service",
        context="devops-agent incident abc: alert Leak (critical).",
        priority="HIGH",
        idempotency_key=idempotency_key("abc", "restart"),
        mutating=True,
    )
    async with build_http_client(drip.url, 1.0, None) as http:
        result = await GatewayClient(http, GatewayOptions(), timeout=1.0).execute(request)
    assert (result.outcome, result.attempts) == ("unknown", 1)
    assert "no answer within 1s" in (result.error_message or "")
    assert drip.requests.count("/execute-docker-command") == 1


async def test_a_dripping_model_hands_the_finding_to_the_runbook(
    drip: SlowDrip, make_prometheus: MakePrometheus
) -> None:
    """A model that drips its answer is timed out as a whole; the runbook decides."""
    options = LLMOptions(
        model="gpt-4o", temperature=0, max_tokens=100, max_retries=0, request_timeout=1
    )
    llm, http = build_llm_client(
        api_key="sk-test-123456", base_url=f"{drip.url}/v1", options=options
    )
    labels = {"alertname": "MemoryLeak", "service": "market-predictor"}
    finding = Finding(
        kind="alert",
        name="MemoryLeak",
        target="market-predictor",
        severity=Severity.critical,
        labels=labels,
        annotations={},
        value=1.0,
        first_seen=datetime.now(UTC),
        fingerprint=fingerprint("alert", "MemoryLeak", labels, ()),
    )
    deps = DiagnosisDeps(
        config=make_config(), prometheus=make_prometheus(drip.url, timeout=1), llm=llm
    )
    try:
        result = await diagnose(finding, deps, datetime.now(UTC))
    finally:
        await http.aclose()
    assert result.decision.decided_by == "runbook"
    assert "no whole answer within" in result.decision.fallback_reason
    assert "(diagnosis.request_timeout_seconds)" in result.decision.fallback_reason


def test_the_daemon_stops_in_bounded_time_while_every_peer_drips(
    tmp_path: Path, drip: SlowDrip
) -> None:
    """SIGTERM while a sweep waits on a dripping Prometheus: STOPPING=1 and exit 0 within
    shutdown_grace_seconds plus a few seconds."""
    notify = NotifySocket(tmp_path / "notify.sock")
    grace = 3
    config = write_config(
        tmp_path / "agent.toml",
        schedule={"shutdown_grace_seconds": grace},
        prometheus={"query_timeout_seconds": 600},
    )
    env = agent_env(
        tmp_path,
        config,
        drip.url,
        drip.url,
        OPENAI_BASE_URL=f"{drip.url}/v1",
        ALERTMANAGER_URL=drip.url,
        NOTIFY_SOCKET=str(notify.path),
    )
    daemon = DaemonProcess(env, tmp_path)
    try:
        notify.wait_for("READY=1", timeout=30)
        deadline = time.monotonic() + 30
        while "/api/v1/alerts" not in drip.requests and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "/api/v1/alerts" in drip.requests, "the sweep never asked Prometheus"
        daemon.signal(signal.SIGTERM)
        code = daemon.wait(timeout=grace + 10)
        notify.wait_for("STOPPING=1", timeout=5)
    finally:
        daemon.close()
        notify.close()
    assert code == 0, daemon.tail()
    events = [e["event"] for e in daemon.events()]
    assert events[-1] == "daemon_stopped"
