"""Where decisions and approvals meet, on real parts: a real Prometheus firing a leak (and a
second real Prometheus behind a real Alertmanager), the gateway simulator on a socket, the
model faked at the HTTP boundary. What a human approves is exactly what runs; a model that
fails never widens what runs alone; a model's "none" never silences the runbook; an alert
only Alertmanager reports is asked of Alertmanager and waits for a human unless trusted."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pytest_httpx import HTTPXMock

from agent.daemon.api import ApprovalApi
from agent.daemon.cycle import run_cycle
from agent.daemon.http import Liveness, build_app
from agent.daemon.verify import run_verifications
from agent.daemon.webhook import WebhookIntake
from agent.demo.gateway_sim import GatewaySimulator
from agent.hosts import HostPolicy
from agent.incidents.model import Incident
from agent.local import LocalAlertmanager, LocalPrometheus, MetricsTarget, free_port
from agent.runtime import Runtime, open_runtime
from agent.settings import Settings, load_settings
from tests.conftest import run_cli
from tests.integration.conftest import eventually
from tests.integration.daemon_support import (
    E2E_RULES,
    DaemonProcess,
    agent_env,
    until_waiting,
    write_config,
)
from tests.llm_fakes import CHAT_URL, LLM_BASE, FakeModel, completion, phase_of, plan, triage

pytestmark = [
    pytest.mark.integration,
    pytest.mark.httpx_mock(should_mock=lambda request: request.url.host == "llm.test"),
]

MP, CA = "market-predictor", "coding-ai-agent"
TOKEN = "approval-token-for-tests-0123"
DISK_RULES = """
groups:
- name: disk
  rules:
  - alert: DiskAlmostFull
    expr: e2e_disk_used_ratio > 0.9
    for: 1s
    labels: {severity: critical}
"""


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[LocalAlertmanager]:
    """A real Alertmanager."""
    server = LocalAlertmanager(tmp_path / "am", free_port()).start()
    yield server
    server.stop()


def _settings(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    prom: LocalPrometheus,
    gateway: GatewaySimulator,
    sections: dict[str, Any] | None = None,
    **extra: str,
) -> Settings:
    config = write_config(tmp_path / "agent.toml", **(sections or {}))
    env = agent_env(tmp_path, config, prom.url, gateway.url, OPENAI_BASE_URL=LLM_BASE, **extra)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return load_settings(env_file=None)


def _model(plan_action: str, target: str, *, actionable: bool = True) -> Any:
    def answer(request: httpx.Request) -> httpx.Response:
        phase = phase_of(json.loads(request.read()))
        if phase == "triage":
            return httpx.Response(200, json=triage(actionable=actionable))
        if phase == "investigation":
            return httpx.Response(200, json=completion("I looked at the series."))
        return httpx.Response(200, json=plan(action=plan_action, target=target))

    return answer


def _am_alerts(am: LocalAlertmanager, name: str) -> list[dict[str, Any]]:
    query = f"{am.url}/api/v2/alerts?filter=alertname%3D%22{name}%22"
    with urllib.request.urlopen(query, timeout=5) as response:
        alerts: list[dict[str, Any]] = json.load(response)
    return [a for a in alerts if a["status"]["state"] == "active"]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.isupper()}


async def _api(rt: Runtime, incident_id: str, body: dict[str, Any]) -> httpx.Response:
    liveness = Liveness(60)
    intake = WebhookIntake(
        wake=lambda _: None,
        metrics=rt.metrics,
        token=None,
        enabled=False,
        max_body_bytes=1000,
        body_timeout=5,
    )
    api = ApprovalApi(rt, token=TOKEN, body_timeout=5)
    app = build_app(rt.metrics, liveness, intake, api, hosts=HostPolicy.of("agent.test"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://agent.test") as client:
        return await client.post(
            f"/api/incidents/{incident_id}/approve",
            json=body,
            headers={"Authorization": f"Bearer {TOKEN}"},
        )


async def test_a_related_service_is_named_wherever_a_human_decides(
    httpx_mock: HTTPXMock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    e2e_prometheus: LocalPrometheus,
    services_target: MetricsTarget,
    gateway: GatewaySimulator,
    alertmanager: LocalAlertmanager,
) -> None:
    """A model misled toward a related service: the CLI, its JSON, the alert and the API
    name coding-ai-agent; an answer pinned to the finding's own service gets 409 and sends
    nothing; the right answer sends exactly one restart of coding-ai-agent."""
    services_target.set("e2e_memory_bytes", 5000, service=MP)
    httpx_mock.add_callback(_model("restart", CA), url=CHAT_URL, is_reusable=True)
    services = {
        MP: {"actions": ["restart", "start", "collect_logs"], "related": [CA]},
        CA: {"actions": ["restart", "start", "collect_logs"]},
    }
    settings = _settings(
        tmp_path,
        monkeypatch,
        e2e_prometheus,
        gateway,
        {"services": services},
        ALERTMANAGER_URL=alertmanager.url,
    )
    async with open_runtime(settings) as rt:
        waiting = await until_waiting(rt)
    assert (waiting.awaiting, waiting.awaiting_target, waiting.target) == ("restart", CA, MP)

    pending = run_cli("incidents", "pending", env=_env(), cwd=tmp_path)
    assert f"{waiting.id}  restart on {CA}" in pending.stdout, pending.stdout
    [row] = json.loads(run_cli("incidents", "--json", "pending", env=_env(), cwd=tmp_path).stdout)
    assert (row["approval_action"], row["approval_target"], row["target"]) == ("restart", CA, MP)
    shown = run_cli("incidents", "show", waiting.id, env=_env(), cwd=tmp_path).stdout
    assert f"WAITING for approval of restart on {CA}" in shown
    assert f"restart would run on {CA}, not on {MP}" in shown
    [alert] = _am_alerts(alertmanager, "DevopsAgentApprovalRequired")
    assert (alert["labels"]["service"], alert["labels"]["action"]) == (CA, "restart")
    assert f"--target {CA}" in alert["annotations"]["approve"]

    async with open_runtime(settings) as rt:
        wrong = await _api(rt, waiting.id, {"by": "alice", "action": "restart", "target": MP})
        assert wrong.status_code == 409
        assert (
            f"waiting for approval of restart on {CA}, not restart on {MP}" in wrong.json()["error"]
        )
        assert wrong.json()["approval_target"] == CA
        assert gateway.executions() == []
        bad = await _api(rt, waiting.id, {"by": "alice", "target": ["x"]})
        assert (
            bad.status_code == 400 and "'target' must be a non-empty string" in bad.json()["error"]
        )
        right = await _api(rt, waiting.id, {"by": "alice", "action": "restart", "target": CA})
        assert right.status_code == 200, right.json()
        assert (right.json()["action"], right.json()["target"]) == ("restart", CA)
        twice = await _api(rt, waiting.id, {"by": "bob", "action": "restart", "target": CA})
        assert twice.status_code == 409
    [sent] = gateway.executions()
    assert sent.body["target_resource"]["name"] == CA
    assert sent.body["action_request"]["intent"] == "restart the service"


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(httpx.Response(500, json={"error": {"message": "boom"}}), id="http-500"),
        pytest.param(httpx.Response(200, json=completion("sure, restart it!")), id="garbage"),
    ],
)
async def test_a_model_that_fails_leaves_the_runbooks_restart_to_a_human(
    httpx_mock: HTTPXMock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    e2e_prometheus: LocalPrometheus,
    services_target: MetricsTarget,
    gateway: GatewaySimulator,
    failure: httpx.Response,
) -> None:
    """The model errors or answers garbage for a leak the runbook restarts: nothing is
    sent, the incident waits for a human, and the reason names the failure."""
    services_target.set("e2e_memory_bytes", 5000, service=MP)
    httpx_mock.add_response(
        url=CHAT_URL, status_code=failure.status_code, json=failure.json(), is_reusable=True
    )
    settings = _settings(
        tmp_path, monkeypatch, e2e_prometheus, gateway, {"diagnosis": {"max_retries": 0}}
    )
    async with open_runtime(settings) as rt:
        waiting = await until_waiting(rt)
        await run_cycle(rt, datetime.now(UTC))
    assert waiting.decision is not None
    assert waiting.decision.decided_by == "runbook" and waiting.decision.model_failure
    assert waiting.awaiting == "restart" and waiting.decision.keys == ("runbook",)
    assert "the model failed (" in waiting.decision.autonomy
    assert "policy.model_failure" in waiting.decision.autonomy
    assert gateway.executions() == []


async def test_a_models_none_to_a_full_disk_still_reaches_the_humans(
    httpx_mock: HTTPXMock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    services_target: MetricsTarget,
    gateway: GatewaySimulator,
    alertmanager: LocalAlertmanager,
) -> None:
    """The runbook escalates a full disk; the model says none (and triage says no): the
    escalation reaches a real Alertmanager, and the record says the model disagreed."""
    services_target.set("e2e_disk_used_ratio", 0.97, service=MP)
    prom = LocalPrometheus(
        tmp_path / "prom-disk", targets={"services": services_target.address}, rules=DISK_RULES
    ).start()
    try:
        httpx_mock.add_callback(
            _model("none", MP, actionable=False), url=CHAT_URL, is_reusable=True
        )
        settings = _settings(
            tmp_path, monkeypatch, prom, gateway, ALERTMANAGER_URL=alertmanager.url
        )
        async with open_runtime(settings) as rt:

            async def escalated() -> Incident | None:
                await run_cycle(rt, datetime.now(UTC))
                done = [i for i in rt.store.recent(5) if isinstance(i, Incident)]
                return next((i for i in done if i.state == "escalated"), None)

            incident = await eventually(escalated, what="the escalation", timeout=60)
    finally:
        prom.stop()
    [alert] = _am_alerts(alertmanager, "DevopsAgentEscalation")
    assert alert["labels"]["incident_id"] == incident.id
    assert alert["labels"]["original_alertname"] == "DiskAlmostFull"
    assert incident.decision is not None and incident.decision.decided_by == "llm"
    assert "the runbook escalates, the model proposes none" in incident.decision.autonomy
    assert gateway.executions() == []


@pytest.fixture
def second_prometheus(
    tmp_path: Path, services_target: MetricsTarget, alertmanager: LocalAlertmanager
) -> Iterator[LocalPrometheus]:
    """A second real Prometheus that the agent does not query: it fires the leak and sends
    it to the real Alertmanager, which the agent reads."""
    server = LocalPrometheus(
        tmp_path / "prom-2",
        targets={"services": services_target.address},
        rules=E2E_RULES,
        alertmanager_url=alertmanager.url,
        external_labels={"prometheus": "second"},
    ).start()
    yield server
    server.stop()


@pytest.fixture
def first_prometheus(tmp_path: Path, services_target: MetricsTarget) -> Iterator[LocalPrometheus]:
    """The Prometheus the agent queries: it scrapes the services but has no rules."""
    server = LocalPrometheus(
        tmp_path / "prom-1", targets={"services": services_target.address}
    ).start()
    yield server
    server.stop()


@pytest.mark.parametrize("trusted", [False, True], ids=["default", "trust_alertmanager"])
async def test_an_alert_only_alertmanager_reports_is_healed_through_alertmanager(
    httpx_mock: HTTPXMock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    services_target: MetricsTarget,
    gateway: GatewaySimulator,
    alertmanager: LocalAlertmanager,
    first_prometheus: LocalPrometheus,
    second_prometheus: LocalPrometheus,
    trusted: bool,
) -> None:
    """A leak from a second Prometheus, seen only through Alertmanager: by default it waits
    for approval although model and runbook agree, and an approval sends one restart;
    trusted, it is healed alone. Either way the re-check and the verification ask
    Alertmanager, and verification resolves the incident once Alertmanager says it ended."""
    services_target.set("e2e_memory_bytes", 5000, service=MP)
    httpx_mock.add_callback(_model("restart", MP), url=CHAT_URL, is_reusable=True)
    sweep = {"sources": ["prometheus", "alertmanager"], "trust_alertmanager": trusted}
    settings = _settings(
        tmp_path,
        monkeypatch,
        first_prometheus,
        gateway,
        {"sweep": sweep},
        ALERTMANAGER_URL=alertmanager.url,
    )
    async with open_runtime(settings) as rt:

        async def acted_or_asked() -> Incident | None:
            await run_cycle(rt, datetime.now(UTC))
            found = [i for i in rt.store.current() if i.kind == "alert"]
            return next((i for i in found if i.asks or i.state == "verifying"), None)

        incident = await eventually(acted_or_asked, what="the incident to act or ask", timeout=90)
        assert incident.finding.source == "alertmanager"
        if not trusted:
            assert incident.state == "awaiting_approval" and gateway.executions() == []
            assert "rests on Alertmanager alone" in (
                incident.decision.autonomy if incident.decision else ""
            )
            approved = await _api(rt, incident.id, {"by": "alice", "target": MP})
            assert approved.status_code == 200, approved.json()

        async def resolved() -> bool:
            await run_verifications(rt, datetime.now(UTC))
            found = rt.store.get(incident.id)
            return isinstance(found, Incident) and found.state == "resolved"

        await eventually(resolved, what="verification through Alertmanager", timeout=90)
    [sent] = gateway.executions()
    assert sent.body["target_resource"]["name"] == MP
    assert sent.body["action_request"]["intent"] == "restart the service"


SLOW_CALL_SECONDS = 6.0


def _slow_for_market_predictor(body: dict[str, Any]) -> float:
    """Each call about market-predictor takes SLOW_CALL_SECONDS; others answer at once."""
    prefix = json.dumps(body["messages"][:2])
    return SLOW_CALL_SECONDS if MP in prefix and CA not in prefix else 0.0


def test_a_slow_model_never_holds_the_schedule(
    tmp_path: Path,
    e2e_prometheus: LocalPrometheus,
    services_target: MetricsTarget,
    gateway: GatewaySimulator,
) -> None:
    """Every model call about one service takes 6 s: the daemon keeps sweeping meanwhile
    (no gap between sweeps as long as one model call), /healthz stays 200, and a second
    service's leak that starts during that diagnosis is restarted before it ends."""
    model = FakeModel(delay_for=_slow_for_market_predictor)
    port = free_port()
    services = {
        MP: {"actions": ["restart", "collect_logs"]},
        CA: {"actions": ["restart", "collect_logs"]},
    }
    config = write_config(tmp_path / "agent.toml", services=services)
    env = agent_env(
        tmp_path,
        config,
        e2e_prometheus.url,
        gateway.url,
        OPENAI_BASE_URL=model.base_url,
        METRICS_ADDR=f"127.0.0.1:{port}",
    )
    services_target.set("e2e_memory_bytes", 5000, service=MP)
    daemon = DaemonProcess(env, tmp_path)
    health: list[int] = []
    try:
        daemon.wait_for("incident_opened", timeout=60, where=lambda e: e.get("target") == MP)
        services_target.set("e2e_memory_bytes", 5000, service=CA)
        deadline = time.monotonic() + 3 * SLOW_CALL_SECONDS + 30
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
                health.append(answer.status)
            done = daemon.events()
            if any(e.get("event") == "diagnosis_finished" and e.get("target") == MP for e in done):
                break
            time.sleep(0.5)
        events = daemon.events()
    finally:
        daemon.close()
        model.stop()
    names = [(e.get("event"), e.get("target")) for e in events]
    opened = names.index(("incident_opened", MP))
    finished = names.index(("diagnosis_finished", MP))
    assert ("remediation_dispatched", CA) in names[opened:finished], names[opened:finished]
    sweeps = [
        datetime.fromisoformat(e["timestamp"])
        for e in events[opened:finished]
        if e.get("event") == "sweep_finished"
    ]
    gaps = [(b - a).total_seconds() for a, b in zip(sweeps, sweeps[1:], strict=False)]
    assert len(sweeps) >= 3 and max(gaps) < SLOW_CALL_SECONDS, gaps
    assert health and set(health) == {200}, health
