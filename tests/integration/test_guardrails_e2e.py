"""Guardrails end to end, on a real Prometheus (and a real Alertmanager where the behaviour
lives there), with the gateway simulator on a socket: the circuit breaker opens after
failed remediations and a human closes it; one incident's unexpected exception escalates
that incident alone while the rest of the cycle goes on; an incident older than the
catch-up window is handed to humans, never acted on late; an alert Alertmanager inhibits
is not acted on; the agent's own approval asks and escalations, read back through
Alertmanager, are never findings."""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pytest_httpx import HTTPXMock

from agent.approvals import answer_approval, make_answer
from agent.clients.prometheus import PrometheusClient
from agent.daemon.cycle import run_cycle
from agent.demo.gateway_sim import GatewaySimulator
from agent.incidents.model import Incident
from agent.local import LocalAlertmanager, LocalPrometheus, MetricsTarget, free_port
from agent.runtime import Runtime, open_runtime
from agent.settings import Settings, load_settings
from agent.sweep.collector import fetch_alerts
from tests.conftest import run_cli
from tests.integration.conftest import eventually
from tests.integration.daemon_support import agent_env, until_waiting, write_config
from tests.llm_fakes import CHAT_URL, LLM_BASE, completion, phase_of, plan, triage

pytestmark = pytest.mark.integration

MP, CA = "market-predictor", "coding-ai-agent"
RULES = """
groups:
- name: guardrails
  rules:
  - alert: ServiceMemoryLeak
    expr: e2e_memory_bytes > 1000
    for: 1s
    labels: {severity: critical}
"""


@pytest.fixture
def prom(tmp_path: Path, services_target: MetricsTarget) -> Iterator[LocalPrometheus]:
    """A real Prometheus with the leak rule, scraping the services."""
    server = LocalPrometheus(
        tmp_path / "prom", targets={"services": services_target.address}, rules=RULES
    ).start()
    yield server
    server.stop()


def _settings(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    prom_url: str,
    gateway: GatewaySimulator,
    **sections: Any,
) -> Settings:
    extra = sections.pop("env", {})
    config = write_config(tmp_path / "agent.toml", **sections)
    env = agent_env(tmp_path, config, prom_url, gateway.url, OPENAI_BASE_URL=LLM_BASE, **extra)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return load_settings(env_file=None)


async def _ended(rt: Runtime, target: str) -> Incident:
    """Cycle until a new incident of ``target`` (opened from now on) has ended; it."""
    known = {i.id for i in rt.store.recent(50)}

    async def probe() -> Incident | None:
        await run_cycle(rt, datetime.now(UTC))
        mine = [
            i
            for i in rt.store.recent(50)
            if isinstance(i, Incident) and i.target == target and i.id not in known
        ]
        return mine[0] if mine and mine[0].state in ("escalated", "resolved", "skipped") else None

    incident: Incident = await eventually(probe, what=f"an incident of {target} to end", timeout=60)
    return incident


async def _cleared(rt: Runtime) -> None:
    async def probe() -> bool:
        await run_cycle(rt, datetime.now(UTC))
        return not rt.store.current()

    await eventually(probe, what="every incident to clear", timeout=60)


async def test_the_circuit_breaker_opens_after_failures_and_a_human_closes_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    prom: LocalPrometheus,
    services_target: MetricsTarget,
) -> None:
    """Two restarts the gateway rejects open the breaker; the third leak is escalated
    with nothing sent; `incidents reset-breaker --by` closes it and the next leak's restart
    goes out again."""
    gateway = GatewaySimulator(known_services=(CA,)).start()  # market-predictor: rejected
    try:
        settings = _settings(
            tmp_path,
            monkeypatch,
            prom.url,
            gateway,
            diagnosis={"use_llm": False},
            policy={"circuit_breaker_failures": 2, "action_cooldown_seconds": 0},
        )
        async with open_runtime(settings) as rt:
            ends = []
            for _ in range(3):
                services_target.set("e2e_memory_bytes", 5000, service=MP)
                ends.append(await _ended(rt, MP))
                services_target.set("e2e_memory_bytes", 10, service=MP)
                await _cleared(rt)
            breaker = rt.store.breaker(MP)
        assert [len(gateway.executions())] == [2]
        assert all("gateway rejected" in (e.resolution or "") for e in ends[:2])
        assert "circuit breaker open" in (ends[2].resolution or ""), ends[2].resolution
        assert breaker is not None and breaker.is_open and breaker.failures == 2

        env = {k: v for k, v in os.environ.items() if k.isupper()}
        reset = run_cli("incidents", "reset-breaker", MP, "--by", "alice", env=env, cwd=tmp_path)
        assert reset.returncode == 0, reset.stderr
        async with open_runtime(settings) as rt:
            closed = rt.store.breaker(MP)
            assert closed is not None and not closed.is_open and closed.reset_by == "alice"
            services_target.set("e2e_memory_bytes", 5000, service=MP)
            fourth = await _ended(rt, MP)
        assert "gateway rejected" in (fourth.resolution or "")
        assert len(gateway.executions()) == 3  # sent again once a human closed the breaker
    finally:
        gateway.stop()


class Poisoned(httpx.AsyncBaseTransport):
    """Prometheus as it is, except that one query makes the agent's own code meet an
    exception it does not expect (a stand-in for a bug on one incident's path)."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if b"poison" in request.url.query or b"poison" in request.content:
            raise RuntimeError("an exception nobody planned for")
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def _service(body: dict[str, Any]) -> str:
    """The service of the finding a request is about (from its finding block)."""
    for message in body["messages"]:
        content = message.get("content") or ""
        if message["role"] == "user" and "<finding-data>\n" in content:
            block = content.split("<finding-data>\n", 1)[1].split("\n</finding-data>", 1)[0]
            service: str = json.loads(block)["service"]
            return service
    raise AssertionError("no finding block")


def _model(request: httpx.Request) -> httpx.Response:
    """Restart whatever fires; about market-predictor, first ask the poisoned query."""
    body = json.loads(request.read())
    phase = phase_of(body)
    about_mp = _service(body) == MP
    if phase == "triage":
        return httpx.Response(200, json=triage())
    if phase == "investigation":
        asked = any(m.get("role") == "tool" for m in body["messages"])
        if about_mp and not asked and "tools" in body:
            return httpx.Response(200, json=completion(None, [("prom_query", {"expr": "poison"})]))
        return httpx.Response(200, json=completion("It leaks."))
    return httpx.Response(200, json=plan(target=MP if about_mp else CA))


@pytest.mark.httpx_mock(should_mock=lambda request: request.url.host == "llm.test")
async def test_one_incidents_exception_escalates_only_that_incident(
    httpx_mock: HTTPXMock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    prom: LocalPrometheus,
    services_target: MetricsTarget,
) -> None:
    """Two services leak; working one of them raises an exception the agent does not
    expect: that incident is escalated with the reason, and in the same cycle the other
    service's restart is decided and sent."""
    httpx_mock.add_callback(_model, url=CHAT_URL, is_reusable=True)
    gateway = GatewaySimulator().start()
    try:
        settings = _settings(tmp_path, monkeypatch, prom.url, gateway)
        services_target.set("e2e_memory_bytes", 5000, service=MP)
        services_target.set("e2e_memory_bytes", 5000, service=CA)
        async with open_runtime(settings) as rt:
            http = httpx.AsyncClient(base_url=prom.url, transport=Poisoned(), timeout=5)
            rt.diagnosis.prometheus = PrometheusClient(http, timeout=5, max_bytes=50_000_000)

            async def both_firing() -> bool:
                alerts = (
                    await fetch_alerts(rt.prometheus, rt.config.prometheus, datetime.now(UTC))
                ).findings
                return len(alerts) == 2

            await eventually(both_firing, what="both leaks to fire", timeout=60)
            report = await run_cycle(rt, datetime.now(UTC))
            incidents = {i.target: i for i in rt.store.recent(10) if isinstance(i, Incident)}
            await http.aclose()
    finally:
        gateway.stop()
    poisoned, other = incidents[MP], incidents[CA]
    assert poisoned.state == "escalated"
    assert "internal error while working the incident: RuntimeError" in (poisoned.resolution or "")
    assert other.state in ("verifying", "resolved"), other.resolution
    assert [d["target"] for d in report.dispatches] == [CA]
    assert [e.body["target_resource"]["name"] for e in gateway.executions()] == [CA]


async def test_an_incident_older_than_the_catch_up_window_is_not_acted_on(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    prom: LocalPrometheus,
    services_target: MetricsTarget,
) -> None:
    """While Alertmanager is down (silences unknown) the restart waits; once it answers
    again the incident is older than schedule.catch_up_window_seconds: it is handed to
    humans, and nothing is sent late."""
    am = LocalAlertmanager(tmp_path / "am", free_port())
    gateway = GatewaySimulator().start()
    try:
        settings = _settings(
            tmp_path,
            monkeypatch,
            prom.url,
            gateway,
            diagnosis={"use_llm": False},
            schedule={"catch_up_window_seconds": 3},
            env={"ALERTMANAGER_URL": am.url},
        )
        services_target.set("e2e_memory_bytes", 5000, service=MP)
        async with open_runtime(settings) as rt:

            async def held() -> Incident | None:
                await run_cycle(rt, datetime.now(UTC))
                found = rt.store.current()
                held = [i for i in found if i.blocked_reason == "silences_unknown"]
                return held[0] if held else None

            waiting = await eventually(
                held, what="the restart to wait for Alertmanager", timeout=60
            )
            assert waiting.state == "decided"

            async def old() -> bool:
                await run_cycle(rt, datetime.now(UTC))  # still held meanwhile
                return datetime.now(UTC) - waiting.opened_at > timedelta(seconds=4)

            await eventually(old, what="the incident to pass the catch-up window", timeout=60)
            am.start()

            async def handed_over() -> Incident | None:
                await run_cycle(rt, datetime.now(UTC))
                found = rt.store.get(waiting.id)
                return found if isinstance(found, Incident) and found.state != "decided" else None

            ended = await eventually(
                handed_over, what="the old incident to be handed to humans", timeout=60
            )
    finally:
        am.stop()
        gateway.stop()
    assert ended.id == waiting.id and ended.state == "escalated"
    assert "catch_up_window_seconds" in (ended.resolution or ""), ended.resolution
    assert gateway.executions() == []


def _am_alerts(am: LocalAlertmanager) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{am.url}/api/v2/alerts", timeout=5) as response:
        alerts: list[dict[str, Any]] = json.load(response)
    return alerts


async def test_an_alert_alertmanager_inhibits_is_not_acted_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, services_target: MetricsTarget
) -> None:
    """A NodeDown for the service inhibits its leak alert in a real Alertmanager: the
    sweep skips the leak as inhibited, opens no incident and sends nothing."""
    inhibit = {
        "source_matchers": ['alertname="NodeDown"'],
        "target_matchers": ['alertname="ServiceMemoryLeak"'],
        "equal": ["service"],
    }
    am = LocalAlertmanager(tmp_path / "am", free_port(), inhibit_rules=[inhibit]).start()
    prom = LocalPrometheus(
        tmp_path / "prom-am",
        targets={"services": services_target.address},
        rules=RULES,
        alertmanager_url=am.url,
    ).start()
    gateway = GatewaySimulator().start()
    try:
        node_down = {
            "labels": {"alertname": "NodeDown", "service": MP},
            "endsAt": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
        }
        async with httpx.AsyncClient(timeout=5) as http:
            (await http.post(f"{am.url}/api/v2/alerts", json=[node_down])).raise_for_status()
        services_target.set("e2e_memory_bytes", 5000, service=MP)

        async def inhibited() -> bool:
            return any(
                a["labels"]["alertname"] == "ServiceMemoryLeak" and a["status"]["inhibitedBy"]
                for a in _am_alerts(am)
            )

        await eventually(inhibited, what="Alertmanager to inhibit the leak", timeout=60)
        settings = _settings(
            tmp_path,
            monkeypatch,
            prom.url,
            gateway,
            diagnosis={"use_llm": False},
            env={"ALERTMANAGER_URL": am.url},
        )
        async with open_runtime(settings) as rt:
            reports = [await run_cycle(rt, datetime.now(UTC)) for _ in range(3)]
            incidents = rt.store.recent(10)
    finally:
        gateway.stop()
        prom.stop()
        am.stop()
    skipped = [s for r in reports for s in r.sweep.skipped]
    assert {(s.name, s.reason) for s in skipped} == {("ServiceMemoryLeak", "inhibited")}
    assert all(not r.sweep.findings for r in reports)
    assert incidents == [] and gateway.executions() == []


@pytest.mark.httpx_mock(should_mock=lambda request: request.url.host == "llm.test")
async def test_the_agents_own_alerts_read_back_from_alertmanager_are_never_findings(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    prom: LocalPrometheus,
    services_target: MetricsTarget,
) -> None:
    """With Alertmanager's alerts as a source, the agent's own approval ask and, after a
    denial, its escalation are active in Alertmanager, and the sweeps that read them back
    find only the leak: one incident, never a second one about the agent's own alerts."""
    am = LocalAlertmanager(tmp_path / "am", free_port()).start()
    gateway = GatewaySimulator().start()
    try:
        settings = _settings(
            tmp_path,
            monkeypatch,
            prom.url,
            gateway,
            diagnosis={"use_llm": False},
            sweep={"sources": ["prometheus", "alertmanager"]},
            services={MP: {"actions": ["restart"], "autonomy": {"restart": "approve"}}},
            env={"ALERTMANAGER_URL": am.url},
        )
        services_target.set("e2e_memory_bytes", 5000, service=MP)
        async with open_runtime(settings) as rt:
            waiting = await until_waiting(rt)
            asked = {a["labels"]["alertname"] for a in _am_alerts(am)}
            reports = [await run_cycle(rt, datetime.now(UTC)) for _ in range(2)]
            no = make_answer(approve=False, by="dave", reason="not now", at=datetime.now(UTC))
            assert (await answer_approval(rt, waiting.id, no)).status == 200
            escalated = {a["labels"]["alertname"] for a in _am_alerts(am)}
            reports += [await run_cycle(rt, datetime.now(UTC)) for _ in range(2)]
            incidents = rt.store.recent(10)
    finally:
        gateway.stop()
        am.stop()
    assert "DevopsAgentApprovalRequired" in asked and "DevopsAgentEscalation" in escalated
    assert {f.name for r in reports for f in r.sweep.findings} == {"ServiceMemoryLeak"}
    assert all("alertmanager_alerts" in {s.name for s in r.sweep.sources if s.ok} for r in reports)
    assert [i.id for i in incidents] == [waiting.id]
