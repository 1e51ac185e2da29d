"""The daemon's cycle end to end, in process: real Prometheus, a real gateway simulator on a
socket, and the chat-completions API faked at the HTTP boundary."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from pytest_httpx import HTTPXMock

from agent.daemon.cycle import CycleReport, run_cycle
from agent.daemon.verify import run_verifications
from agent.demo.gateway_sim import ActResult, GatewaySimulator
from agent.local import LocalAlertmanager, LocalPrometheus, MetricsTarget
from agent.runtime import open_runtime
from agent.settings import load_settings
from tests.integration.daemon_support import agent_env, write_config
from tests.llm_fakes import CHAT_URL, LLM_BASE, completion, plan, triage

pytestmark = pytest.mark.integration


@pytest.fixture
def target(services_target: MetricsTarget) -> MetricsTarget:
    """The scrape target standing in for the services."""
    return services_target


@pytest.fixture
def prom(e2e_prometheus: LocalPrometheus) -> LocalPrometheus:
    """A real Prometheus with the e2e rules."""
    return e2e_prometheus


def _set_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)


async def _until(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.3)
    pytest.fail(f"timed out waiting for {what}")


@pytest.mark.httpx_mock(should_mock=lambda request: request.url.host == "llm.test")
async def test_alert_to_resolved(
    httpx_mock: HTTPXMock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    prom: LocalPrometheus,
    target: MetricsTarget,
) -> None:
    """Alert fires, one incident, one gateway request, the fix lands, the incident is resolved."""
    target.set("e2e_memory_bytes", 5000, service="market-predictor")

    def fix(service: str, command: str) -> ActResult:
        target.set("e2e_memory_bytes", 100, service=service)
        return ActResult(stdout=f"{service}\n")

    gateway = GatewaySimulator(fix).start()
    for answer in (
        triage(),
        completion(None, [("prom_query", {"expr": "e2e_memory_bytes"})]),
        completion("Memory at 5000 bytes, leak."),
        plan(),
    ):
        httpx_mock.add_response(url=CHAT_URL, json=answer)
    config = write_config(tmp_path / "agent.toml")
    _set_env(
        monkeypatch, agent_env(tmp_path, config, prom.url, gateway.url, OPENAI_BASE_URL=LLM_BASE)
    )
    settings = load_settings(env_file=None)
    reports: list[CycleReport] = []
    try:
        async with open_runtime(settings) as rt:

            async def dispatched() -> bool:
                reports.append(await run_cycle(rt, datetime.now(UTC)))
                return bool(reports[-1].dispatches)

            await _until(dispatched, 45, "a dispatch")

            async def resolved() -> bool:
                await run_verifications(rt, datetime.now(UTC))
                reports.append(await run_cycle(rt, datetime.now(UTC)))
                return [i.state for i in rt.store.recent(10)] == ["resolved"]

            await _until(resolved, 45, "the incident to resolve")
            [incident] = rt.store.recent(10)
            events = [e.kind for e in rt.store.events(incident.id)]
    finally:
        gateway.stop()
    assert len(gateway.executions()) == 1
    body = gateway.executions()[0].body
    assert body["target_resource"] == {"name": "market-predictor"}
    assert body["action_request"]["intent"] == "restart the service"
    assert body["action_request"]["priority"] == "HIGH"
    assert incident.action == "restart" and incident.decided_by == "llm"
    assert {"opened", "decision", "llm_transcript", "gateway_request"} <= set(events)
    assert sum(len(r.dispatches) for r in reports) == 1


async def test_alert_storm_is_contained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: MetricsTarget
) -> None:
    """1,000 firing alerts over 10 services: one incident per (service, alert), bounded
    dispatches; with the storm guardrail, one storm incident holds the rest."""
    rules = """
groups:
- name: storm
  rules:
  - alert: StormMemoryLeak
    expr: storm_memory_bytes > 1000
    labels: {severity: critical}
  - alert: StormTargetDown
    expr: storm_down > 0
    labels: {severity: warning}
"""
    services = [f"svc-{i}" for i in range(10)]
    for i in range(500):
        target.set("storm_memory_bytes", 5000, service=services[i % 10], instance=f"i{i}")
        target.set("storm_down", 1, service=services[i % 10], instance=f"i{i}")
    prom = LocalPrometheus(
        tmp_path / "prom", targets={"storm": target.address}, rules=rules
    ).start()
    gateway = GatewaySimulator(known_services=tuple(services)).start()
    catalogue = {s: {"actions": ["restart", "collect_logs"]} for s in services}
    runs: dict[str, list[CycleReport]] = {}
    states: dict[str, list[tuple[str, str]]] = {}
    try:
        for name, policy in (
            ("storm_guard", {"storm_share": 0.5, "storm_min_services": 5}),
            (
                "budget_only",
                {
                    "storm_min_services": 100,
                    "max_actions_per_hour": 3,
                    "recheck_before_dispatch": False,
                },
            ),
        ):
            config = write_config(
                tmp_path / f"{name}.toml",
                diagnosis={"use_llm": False},
                services=catalogue,
                policy=policy,
            )
            env = agent_env(tmp_path / name, config, prom.url, gateway.url)
            _set_env(monkeypatch, env)
            settings = load_settings(env_file=None)
            runs[name] = []
            async with open_runtime(settings) as rt:

                async def storm_seen(rt: object = rt, name: str = name) -> bool:
                    runs[name].append(await run_cycle(rt, datetime.now(UTC)))  # type: ignore[arg-type]
                    return len(runs[name][-1].sweep.findings) == 1000

                await _until(storm_seen, 60, "1000 firing alerts")
                runs[name].append(await run_cycle(rt, datetime.now(UTC)))
                incidents = rt.store.recent(10_000)
            states[name] = [(i.kind, i.state) for i in incidents]
            keys = [(i.target, i.name) for i in incidents if i.kind != "storm"]
            assert len(keys) == len(set(keys)) == 20, name
    finally:
        gateway.stop()
        prom.stop()
    storm_dispatches = sum(len(r.dispatches) for r in runs["storm_guard"])
    budget_dispatches = sum(len(r.dispatches) for r in runs["budget_only"])
    assert storm_dispatches == 0
    assert sum(len(r.decisions) for r in runs["storm_guard"]) == 0
    storm = [state for kind, state in states["storm_guard"] if kind == "storm"]
    assert storm == ["watching"]
    assert all(state == "held" for kind, state in states["storm_guard"] if kind != "storm")
    assert not any(kind == "storm" for kind, _ in states["budget_only"])
    assert budget_dispatches == 3
    assert any(s["reason"] == "fleet_budget" for r in runs["budget_only"] for s in r.skips)
    assert len(gateway.executions()) == 3


async def test_unrecovered_incident_escalates_to_alertmanager(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    prom: LocalPrometheus,
    target: MetricsTarget,
    alertmanager: LocalAlertmanager,
) -> None:
    """A restart that fixes nothing ends escalated, with a DevopsAgentEscalation alert in Alertmanager."""
    target.set("e2e_memory_bytes", 5000, service="market-predictor")
    gateway = GatewaySimulator().start()  # "restarts" without fixing anything
    config = write_config(
        tmp_path / "agent.toml", diagnosis={"use_llm": False}, schedule={"verify_after_seconds": 1}
    )
    _set_env(
        monkeypatch,
        agent_env(tmp_path, config, prom.url, gateway.url, ALERTMANAGER_URL=alertmanager.url),
    )
    settings = load_settings(env_file=None)
    try:
        async with open_runtime(settings) as rt:

            async def escalated() -> bool:
                await run_verifications(rt, datetime.now(UTC))
                await run_cycle(rt, datetime.now(UTC))
                return any(i.state == "escalated" for i in rt.store.recent(10))

            await _until(escalated, 60, "escalation")
            [incident] = rt.store.recent(10)
            breaker = rt.store.breaker("market-predictor")
    finally:
        gateway.stop()
    assert len(gateway.executions()) == 1
    assert "not recovered" in (incident.resolution or "")
    assert breaker is not None and (breaker.failures, breaker.is_open) == (1, False)
    async with httpx.AsyncClient(base_url=alertmanager.url) as http:
        alerts = (
            await http.get("/api/v2/alerts", params={"filter": 'alertname="DevopsAgentEscalation"'})
        ).json()
    [alert] = [a for a in alerts if a["labels"].get("incident_id") == incident.id]
    assert alert["labels"]["service"] == "market-predictor"
    assert alert["labels"]["original_alertname"] == "ServiceMemoryLeak"
    assert "not recovered" in alert["annotations"]["reason"]


@pytest.mark.parametrize("fixes", [True, False], ids=["restart-fixes", "restart-does-not-fix"])
async def test_slow_gateway_gets_exactly_one_restart(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    prom: LocalPrometheus,
    target: MetricsTarget,
    fixes: bool,
) -> None:
    """A gateway slower than the agent's timeout (serial, key ignored, abandoned requests
    still run) receives one restart; verification then resolves or escalates the incident."""
    target.set("e2e_memory_bytes", 5000, service="market-predictor")

    def act(service: str, command: str) -> ActResult:
        if fixes:
            target.set("e2e_memory_bytes", 100, service=service)
        return ActResult(stdout=f"{service}\n")

    gateway = GatewaySimulator(act, delay=2.5).start()
    config = write_config(
        tmp_path / "agent.toml", diagnosis={"use_llm": False}, schedule={"verify_after_seconds": 5}
    )
    _set_env(
        monkeypatch,
        agent_env(tmp_path, config, prom.url, gateway.url, AI_COMMAND_GATEWAY_TIMEOUT="1"),
    )
    try:
        async with open_runtime(load_settings(env_file=None)) as rt:

            async def ended() -> bool:
                await run_verifications(rt, datetime.now(UTC))
                await run_cycle(rt, datetime.now(UTC))
                return (
                    rt.store.recent(1)[0].state in ("resolved", "escalated")
                    if rt.store.recent(1)
                    else False
                )

            await _until(ended, 60, "the incident to end")
            [incident] = rt.store.recent(10)
            events = rt.store.events(incident.id)
    finally:
        gateway.stop()
    assert len(gateway.executions()) == 1
    assert gateway.ran() == ["docker restart market-predictor"]
    assert incident.dispatch_outcome == "unknown"
    assert incident.state == ("resolved" if fixes else "escalated")
    [request] = [e for e in events if e.kind == "gateway_request"]
    assert request.data["result"]["outcome"] == "unknown"
