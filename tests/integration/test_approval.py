"""Approval end to end on real parts: a real Prometheus firing a leak, a model (faked at the
HTTP boundary) that answers "none" while the runbook would restart, the gateway simulator
on a socket, a real Alertmanager. The incident waits for a human; the CLI, the HTTP API
and two racing replicas answer it; expiry, denial, clearing and every bad answer end in a
clear reply with nothing sent twice."""

from __future__ import annotations

import asyncio
import json
import os
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import generate_latest
from pytest_httpx import HTTPXMock

from agent.approvals import answer_approval, make_answer
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
from tests.conftest import postgres_schema, run_cli
from tests.integration.conftest import eventually
from tests.integration.daemon_support import agent_env, until_waiting, write_config
from tests.llm_fakes import CHAT_URL, LLM_BASE, completion, phase_of, plan, triage

pytestmark = [
    pytest.mark.integration,
    pytest.mark.httpx_mock(should_mock=lambda request: request.url.host == "llm.test"),
]

SERVICE = "market-predictor"


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[LocalAlertmanager]:
    """A real Alertmanager the approval alerts go to."""
    server = LocalAlertmanager(tmp_path / "am", free_port()).start()
    yield server
    server.stop()


def _settings(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    prom: LocalPrometheus,
    gateway: GatewaySimulator,
    *,
    ttl: float = 900,
    **extra: str,
) -> Settings:
    config = write_config(tmp_path / "agent.toml", policy={"approval_ttl_seconds": ttl})
    env = agent_env(tmp_path, config, prom.url, gateway.url, OPENAI_BASE_URL=LLM_BASE, **extra)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return load_settings(env_file=None)


def _says_none(request: httpx.Request) -> httpx.Response:
    """A model that sees nothing to do: triage says no, the plan says none."""
    phase = phase_of(json.loads(request.read()))
    if phase == "triage":
        return httpx.Response(200, json=triage(actionable=False))
    if phase == "investigation":
        return httpx.Response(200, json=completion("Nothing unusual."))
    return httpx.Response(200, json=plan(action="none"))


def _firing(target: MetricsTarget, httpx_mock: HTTPXMock) -> None:
    """The leak fires; the model says there is nothing to do."""
    target.set("e2e_memory_bytes", 5000, service=SERVICE)
    httpx_mock.add_callback(_says_none, url=CHAT_URL, is_reusable=True)


def _am_alerts(am: LocalAlertmanager, name: str) -> list[dict[str, Any]]:
    query = f"{am.url}/api/v2/alerts?filter=alertname%3D%22{name}%22"
    with urllib.request.urlopen(query, timeout=5) as response:
        alerts: list[dict[str, Any]] = json.load(response)
    return [a for a in alerts if a["status"]["state"] == "active"]


def _service_host(root: Path, settings: Settings) -> dict[str, str]:
    """A host where the service is installed under ``root``, as `make install-service` and
    systemd lay it out: the environment file (root-only, no AGENT_CONFIG, no store URL), the
    TOML file next to it, the store in the state directory. The environment a root shell
    there has: nothing of the agent's, only the root the CLI looks under."""
    etc = root / "etc" / "devops-agent"
    etc.mkdir(parents=True)
    values = {k: v for k, v in os.environ.items() if k.isupper()}
    skip = ("AGENT_CONFIG", "AGENT_STATE_URL", "DEVOPS_AGENT_ROOT")
    lines = [f"{k}={v}" for k, v in values.items() if k not in skip]
    (etc / "agent.env").write_text("\n".join(lines) + "\n")
    (etc / "agent.env").chmod(0o640)
    (etc / "agent.toml").write_text(settings.env.agent_config.read_text())
    return {"DEVOPS_AGENT_ROOT": str(root)}


async def test_model_says_none_restart_waits_then_cli_approval_heals(
    httpx_mock: HTTPXMock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    e2e_prometheus: LocalPrometheus,
    services_target: MetricsTarget,
    gateway: GatewaySimulator,
    alertmanager: LocalAlertmanager,
) -> None:
    """The runbook's restart is never silently skipped: it waits, a human is asked in a real
    Alertmanager, and on the service's host `incidents pending` and `approve`, run by root
    with nothing but the install, find that incident; exactly one restart is sent, the
    answer shows on the daemon's metrics, and the leak resolves."""
    _firing(services_target, httpx_mock)
    host = tmp_path / "host"
    state = host / "var" / "lib" / "devops-agent" / "agent.db"
    settings = _settings(
        tmp_path,
        monkeypatch,
        e2e_prometheus,
        gateway,
        ALERTMANAGER_URL=alertmanager.url,
        AGENT_STATE_URL=f"sqlite:///{state}",
    )
    env = _service_host(host, settings)
    shell = tmp_path / "shell"
    shell.mkdir()
    async with open_runtime(settings) as rt:
        waiting = await until_waiting(rt)
        await run_cycle(rt, datetime.now(UTC))  # a second sweep asks nobody again
        assert waiting.awaiting == "restart" and gateway.executions() == []
        assert waiting.decision is not None and waiting.decision.keys == ("runbook",)
        assert "the runbook would restart market-predictor" in waiting.decision.autonomy
        [alert] = _am_alerts(alertmanager, "DevopsAgentApprovalRequired")
        assert alert["labels"] == {
            "alertname": "DevopsAgentApprovalRequired",
            "service": SERVICE,
            "action": "restart",
            "incident_id": waiting.id,
        }
        assert (
            f"devops-agent incidents approve {waiting.id} --action restart --target {SERVICE} --by"
            in alert["annotations"]["approve"]
        )

        pending = run_cli("incidents", "-v", "pending", env=env, cwd=shell)
        assert pending.returncode == 0, pending.stderr
        first = pending.stdout.splitlines()[0]
        assert first.startswith(f"incident store: sqlite:///{state}")
        assert f"{host}/etc/devops-agent/agent.env (the service's)" in first
        assert waiting.id in pending.stdout and "restart" in pending.stdout
        done = run_cli(
            "incidents",
            "approve",
            waiting.id[:8],
            "--by",
            "alice",
            "--reason",
            "checked",
            env=env,
            cwd=shell,
        )
        assert done.returncode == 0, done.stderr
        assert f"incident {waiting.id} approved by alice: now verifying" in done.stdout
        again = run_cli("incidents", "approve", waiting.id, "--by", "bob", env=env, cwd=shell)
        assert again.returncode == 1
        assert "not waiting for approval (state verifying)" in again.stderr
        # the CLI's answer is counted where the daemon's /metrics sees it
        scraped = generate_latest(rt.metrics.registry).decode()
        assert 'devops_agent_approvals_total{result="granted"} 1.0' in scraped
    assert len(gateway.executions()) == 1
    assert gateway.executions()[0].body["action_request"]["intent"] == "restart the service"
    assert "alice" not in json.dumps(gateway.executions()[0].body)
    assert _am_alerts(alertmanager, "DevopsAgentApprovalRequired") == []

    async with open_runtime(settings) as rt:

        async def resolved() -> bool:
            await run_verifications(rt, datetime.now(UTC))
            await run_cycle(rt, datetime.now(UTC))
            return rt.store.get(waiting.id).state == "resolved"  # type: ignore[union-attr]

        await eventually(resolved, what="the incident to resolve")
        events = rt.store.events(waiting.id)
        final = rt.store.get(waiting.id)
    assert isinstance(final, Incident) and final.decision is not None
    assert final.decision.approved_by == "alice" and final.action == "restart"
    assert final.decision.keys == ("runbook", "human")
    answers = [e.data for e in events if e.kind == "approval"]
    assert answers == [{"result": "granted", "by": "alice", "reason": "checked"}]
    shown = run_cli("incidents", "show", waiting.id, env=env, cwd=shell).stdout
    assert "approved by alice" in shown and "keys: runbook + human" in shown
    assert len(gateway.executions()) == 1

    # a host whose service never ran: nothing is answered, and no store is made
    empty = tmp_path / "empty-host"
    bare = _service_host(empty, settings)
    missing = empty / "var" / "lib" / "devops-agent" / "agent.db"
    for args in (("pending",), ("approve", waiting.id, "--by", "alice")):
        failed = run_cli("incidents", *args, env=bare, cwd=shell)
        assert failed.returncode == 1
        assert failed.stderr.strip() == (
            f"devops-agent: no incident store at {missing} (AGENT_STATE_URL)"
        )
    assert not (empty / "var").exists()


async def test_both_keys_heal_with_nobody_asked(
    httpx_mock: HTTPXMock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    e2e_prometheus: LocalPrometheus,
    services_target: MetricsTarget,
    gateway: GatewaySimulator,
) -> None:
    """The model and the runbook both call a restart: it goes out at once, no approval."""
    services_target.set("e2e_memory_bytes", 5000, service=SERVICE)
    for answer in (triage(), completion("Memory at 5000 bytes: a leak."), plan()):
        httpx_mock.add_response(url=CHAT_URL, json=answer)
    settings = _settings(tmp_path, monkeypatch, e2e_prometheus, gateway)
    async with open_runtime(settings) as rt:

        async def dispatched() -> bool:
            report = await run_cycle(rt, datetime.now(UTC))
            return bool(report.dispatches)

        await eventually(dispatched, what="a dispatch")
        [incident] = rt.store.current()
    assert incident.decision is not None
    assert incident.decision.keys == ("model", "runbook")
    assert "two keys" in incident.decision.autonomy
    assert rt.metrics.approvals.value("granted") == 0
    assert len(gateway.executions()) == 1


async def test_expiry_denial_and_clearing_end_the_wait(
    httpx_mock: HTTPXMock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    e2e_prometheus: LocalPrometheus,
    services_target: MetricsTarget,
    gateway: GatewaySimulator,
    alertmanager: LocalAlertmanager,
) -> None:
    """Nobody answers: escalated as expired (410 afterwards); a no: escalated with the
    reason; the finding going away first: cleared. Each counted, each alert withdrawn."""
    _firing(services_target, httpx_mock)
    settings = _settings(
        tmp_path, monkeypatch, e2e_prometheus, gateway, ttl=1, ALERTMANAGER_URL=alertmanager.url
    )
    async with open_runtime(settings) as rt:
        first = await until_waiting(rt)

        async def ended() -> Incident | None:
            await run_cycle(rt, datetime.now(UTC))
            found = rt.store.get(first.id)
            return (
                found
                if isinstance(found, Incident) and found.state != "awaiting_approval"
                else None
            )

        expired = await eventually(ended, what="the wait to end")  # by the agent's deadline, polled
        assert expired.state == "escalated"
        assert (expired.resolution or "").startswith("approval expired")
        late = make_answer(approve=True, by="carol", reason="", at=datetime.now(UTC))
        reply = await answer_approval(rt, first.id, late)
        assert (reply.status, reply.incident.state if reply.incident else None) == (
            410,
            "escalated",
        )
        assert rt.metrics.approvals.value("expired") == 1
    assert gateway.executions() == []

    # the leak stops and starts again: a new incident, this time denied
    services_target.set("e2e_memory_bytes", 100, service=SERVICE)
    settings = _settings(
        tmp_path, monkeypatch, e2e_prometheus, gateway, ALERTMANAGER_URL=alertmanager.url
    )
    async with open_runtime(settings) as rt:

        async def cleared() -> bool:
            await run_cycle(rt, datetime.now(UTC))
            return not rt.store.current()

        await eventually(cleared, what="the expired incident to clear")
        services_target.set("e2e_memory_bytes", 5000, service=SERVICE)
        second = await until_waiting(rt)
        assert second.id != first.id
        env = {k: v for k, v in __import__("os").environ.items() if k.isupper()}
        denied = run_cli(
            "incidents",
            "deny",
            second.id,
            "--by",
            "dave",
            "--reason",
            "deploy running",
            env=env,
            cwd=tmp_path,
        )
        assert denied.returncode == 0, denied.stderr
        assert f"incident {second.id} denied by dave: now escalated" in denied.stdout
        refused = rt.store.get(second.id)
        assert isinstance(refused, Incident) and refused.state == "escalated"
        assert refused.resolution == "approval denied by dave: deploy running"
        assert rt.metrics.approvals.value("denied") == 1
        escalations = _am_alerts(alertmanager, "DevopsAgentEscalation")
        assert any(a["labels"]["incident_id"] == second.id for a in escalations)

        # a third: the finding goes away while it waits
        services_target.set("e2e_memory_bytes", 100, service=SERVICE)
        await eventually(cleared, what="the denied incident to clear")
        services_target.set("e2e_memory_bytes", 5000, service=SERVICE)
        third = await until_waiting(rt)
        services_target.set("e2e_memory_bytes", 100, service=SERVICE)

        async def skipped() -> bool:
            await run_cycle(rt, datetime.now(UTC))
            found = rt.store.get(third.id)
            return isinstance(found, Incident) and found.state == "skipped"

        await eventually(skipped, what="the waiting incident to clear")
        assert rt.metrics.approvals.value("cleared") == 1
        yes = make_answer(approve=True, by="erin", reason="", at=datetime.now(UTC))
        reply = await answer_approval(rt, third.id, yes)
        assert reply.status == 409 and "state skipped" in reply.reason
    assert gateway.executions() == []
    assert _am_alerts(alertmanager, "DevopsAgentApprovalRequired") == []


@asynccontextmanager
async def _api(
    rt: Runtime, token: str | None = "approve-token"
) -> AsyncIterator[httpx.AsyncClient]:
    intake = WebhookIntake(
        wake=lambda _: None,
        metrics=rt.metrics,
        token=None,
        enabled=True,
        max_body_bytes=1000,
        body_timeout=5,
    )
    api = ApprovalApi(rt, token=token, body_timeout=5)
    app = build_app(rt.metrics, Liveness(60), intake, api, hosts=HostPolicy.of("agent.test"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://agent.test") as client:
        yield client


async def test_approval_over_http_and_every_bad_answer(
    httpx_mock: HTTPXMock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    e2e_prometheus: LocalPrometheus,
    services_target: MetricsTarget,
    gateway: GatewaySimulator,
) -> None:
    """401, 400, 413, 404 and 409 leave the incident waiting with nothing sent; the right
    token and body approve it (200, one request); a second approval is 409."""
    _firing(services_target, httpx_mock)
    settings = _settings(tmp_path, monkeypatch, e2e_prometheus, gateway)
    async with open_runtime(settings) as rt:
        waiting = await until_waiting(rt)
        url = f"/api/incidents/{waiting.id}/approve"
        auth = {"Authorization": "Bearer approve-token"}
        async with _api(rt) as client:
            bad = [
                (await client.post(url, json={"by": "x"}), 401),
                (
                    await client.post(
                        url, json={"by": "x"}, headers={"Authorization": "Bearer no"}
                    ),
                    401,
                ),
                (await client.post(url, content=b"not json", headers=auth), 400),
                (await client.post(url, json=["by"], headers=auth), 400),
                (await client.post(url, json={"by": ""}, headers=auth), 400),
                (await client.post(url, json={"by": "x" * 10_000}, headers=auth), 400),
                (await client.post(url, json={"by": "x", "reason": 5}, headers=auth), 400),
                (await client.post(url, content=b"x" * 70_000, headers=auth), 413),
                (
                    await client.post(
                        "/api/incidents/nope/approve", json={"by": "x"}, headers=auth
                    ),
                    404,
                ),
                (await client.post(url, json={"by": "x", "action": "stop"}, headers=auth), 409),
                (
                    await client.post(
                        f"/api/incidents/{waiting.id}/deny", json={"by": "x"}, headers=auth
                    ),
                    400,
                ),
            ]
            for response, status in bad:
                assert response.status_code == status, (status, response.text)
                assert isinstance(response.json()["error"], str)
            assert bad[0][0].headers["www-authenticate"] == "Bearer"
            assert gateway.executions() == []
            still = rt.store.get(waiting.id)
            assert isinstance(still, Incident) and still.state == "awaiting_approval"

            ok = await client.post(
                url, json={"by": "<script>alert(1)</script>", "reason": "ok"}, headers=auth
            )
            assert ok.status_code == 200, ok.text
            assert ok.json()["state"] == "verifying" and ok.json()["action"] == "restart"
            twice = await client.post(url, json={"by": "y"}, headers=auth)
            assert twice.status_code == 409
            assert "not waiting for approval" in twice.json()["error"]
        async with _api(rt, token=None) as off:
            response = await off.post(url, json={"by": "x"}, headers=auth)
            assert response.status_code == 404
    assert len(gateway.executions()) == 1
    shown = run_cli(
        "incidents",
        "show",
        waiting.id,
        env={k: v for k, v in __import__("os").environ.items() if k.isupper()},
        cwd=tmp_path,
    ).stdout
    assert "<script>alert(1)</script>" in shown  # kept as the approver wrote it, escaped
    assert "\x1b" not in shown


async def test_a_lease_held_by_another_replica_refuses_the_answer(
    httpx_mock: HTTPXMock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    e2e_prometheus: LocalPrometheus,
    services_target: MetricsTarget,
    gateway: GatewaySimulator,
) -> None:
    """While another replica holds the incident's lease, an answer is 409, nothing sent."""
    _firing(services_target, httpx_mock)
    settings = _settings(tmp_path, monkeypatch, e2e_prometheus, gateway)
    async with open_runtime(settings) as rt:
        waiting = await until_waiting(rt)
        leased = waiting.update(
            datetime.now(UTC),
            lease_owner="other-replica",
            lease_until=datetime.now(UTC) + timedelta(minutes=5),
        )
        from agent.incidents.lifecycle import Step

        rt.store.apply(
            Step(leased),
            expected_version=waiting.version,
            owner="other-replica",
            now=datetime.now(UTC),
        )
        yes = make_answer(approve=True, by="alice", reason="", at=datetime.now(UTC))
        reply = await answer_approval(rt, waiting.id, yes)
    assert reply.status == 409 and "other-replica is working on it" in reply.reason
    assert gateway.executions() == []


async def test_two_replicas_racing_an_approval_on_postgresql_send_one_request(
    httpx_mock: HTTPXMock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    e2e_prometheus: LocalPrometheus,
    services_target: MetricsTarget,
    gateway: GatewaySimulator,
) -> None:
    """Two replicas on one PostgreSQL store each get an approval at the same moment (and
    each twice): one request reaches the gateway, one answer is 200, the rest 409."""
    url, drop = postgres_schema("approve")
    try:
        _firing(services_target, httpx_mock)
        settings = _settings(tmp_path, monkeypatch, e2e_prometheus, gateway, AGENT_STATE_URL=url)
        async with open_runtime(settings) as one, open_runtime(settings) as two:
            waiting = await until_waiting(one)
            answers = [
                answer_approval(
                    rt,
                    waiting.id,
                    make_answer(approve=True, by=who, reason="", at=datetime.now(UTC)),
                )
                for rt, who in ((one, "alice"), (two, "bob"), (one, "carol"), (two, "dave"))
            ]
            replies = await asyncio.gather(*answers)
            final = one.store.get(waiting.id)
    finally:
        drop()
    statuses = sorted(r.status for r in replies)
    assert statuses == [200, 409, 409, 409], [r.reason for r in replies]
    assert len(gateway.executions()) == 1
    assert isinstance(final, Incident) and final.state == "verifying"
