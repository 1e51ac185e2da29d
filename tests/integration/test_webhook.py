"""Push wakes the poll: a real Alertmanager notifying the running agent, the webhook under
abuse, Alertmanager's API as a second source of alerts, and a fleet storm as one page."""

from __future__ import annotations

import asyncio
import json
import select
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.daemon.cycle import run_cycle
from agent.demo.gateway_sim import GatewaySimulator
from agent.incidents.model import Incident
from agent.local import (
    LocalAlertmanager,
    LocalPrometheus,
    MetricsTarget,
    find_binary,
    free_port,
)
from agent.runtime import Runtime, open_runtime
from agent.settings import load_settings
from tests.conftest import REPO
from tests.integration.daemon_support import (
    E2E_RULES,
    DaemonProcess,
    agent_env,
    alertmanager_to_agent,
    write_config,
)
from tests.llm_fakes import FakeModel

pytestmark = pytest.mark.integration

TOKEN = "webhook-test-token-0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HOOK = "/webhook/alertmanager"


@pytest.fixture
def gateway() -> Iterator[GatewaySimulator]:
    """A gateway simulator whose restarts change nothing."""
    sim = GatewaySimulator().start()
    yield sim
    sim.stop()


def _notification(alerts: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "version": "4",
        "groupKey": "{}:{}",
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "devops-agent",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.test",
        "alerts": alerts,
    }


def _raw_post(port: int, headers: str, chunks: Iterable[bytes], pause: float = 0.0) -> bytes:
    """POST by hand: send ``headers``, then each chunk until the server answers or the
    chunks run out; return what the server answered (b"" if it only closed)."""
    head = f"POST {HOOK} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n".encode()
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(head)
        for chunk in chunks:
            readable, _, _ = select.select([sock], [], [], pause)
            if readable:
                break
            try:
                sock.sendall(chunk)
            except OSError:
                break
        try:
            return sock.recv(65536)
        except OSError:
            return b""


def _counter(exposition: str, name: str, **labels: str) -> float:
    """One sample of a counter in a text exposition (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in exposition.splitlines():
        if line.startswith(f"{name}{{{wanted}}} ") or line.startswith(f"{name} ") and not wanted:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _sweeps(daemon: DaemonProcess, trigger: str) -> int:
    return sum(
        1
        for e in daemon.events()
        if e.get("event") == "sweep_finished" and e.get("trigger") == trigger
    )


def test_alertmanager_notification_wakes_the_agent_before_the_next_sweep(
    tmp_path: Path, services_target: MetricsTarget, gateway: GatewaySimulator
) -> None:
    """A rule fires in a real Prometheus, a real Alertmanager notifies the running agent,
    and the restart reaches the gateway from a woken sweep, while the next scheduled sweep
    is still a minute away."""
    agent_port = free_port()
    am = alertmanager_to_agent(tmp_path / "am", agent_port, TOKEN)
    prom = LocalPrometheus(
        tmp_path / "prom",
        targets={"services": services_target.address},
        rules=E2E_RULES,
        alertmanager_url=am.url,
    ).start()
    config = write_config(
        tmp_path / "agent.toml",
        diagnosis={"use_llm": False},
        schedule={"sweep_interval_seconds": 60, "verify_after_seconds": 60},
    )
    env = agent_env(
        tmp_path,
        config,
        prom.url,
        gateway.url,
        METRICS_ADDR=f"127.0.0.1:{agent_port}",
        WEBHOOK_TOKEN=TOKEN,
        ALERTMANAGER_URL=am.url,
    )
    daemon = DaemonProcess(env, tmp_path)
    try:
        [first] = daemon.wait_for("sweep_finished", timeout=30)
        assert first["trigger"] == "schedule" and first["findings"] == 0
        services_target.set("e2e_memory_bytes", 5000, service="market-predictor")
        # The next scheduled sweep is 60 s after the first; give up well before it.
        [sent] = daemon.wait_for("remediation_dispatched", timeout=50)
        events = daemon.events()
        exposition = httpx.get(f"http://127.0.0.1:{agent_port}/metrics", timeout=5).text
    finally:
        daemon.close()
        prom.stop()
        am.stop()
    # The restart was decided and sent by work the woken sweep started (its sweep_id).
    [acting] = [
        e
        for e in events
        if e.get("sweep_id") == sent["sweep_id"] and e.get("event") == "sweep_finished"
    ]
    assert acting["trigger"] == "webhook"
    sweeps = [e for e in events if e.get("event") == "sweep_finished"]
    assert sum(e["trigger"] == "schedule" for e in sweeps) == 1
    assert any(e.get("event") == "webhook_received" and e["firing"] >= 1 for e in events)
    assert len(gateway.executions()) == 1
    assert gateway.executions()[0].body["target_resource"] == {"name": "market-predictor"}
    assert _counter(exposition, "devops_agent_webhook_notifications_total", result="accepted") >= 1


def test_webhook_abuse_is_refused_and_sweeps_go_on(
    tmp_path: Path, e2e_prometheus: LocalPrometheus, gateway: GatewaySimulator
) -> None:
    """Wrong or no token 401, 20 MB 413 (declared and streamed), not JSON 400, a
    10,000-alert notification 202, a body that never ends cut off; a burst of 100 valid
    notifications wakes a few sweeps, not 100; scheduled sweeps go on throughout."""
    config = write_config(
        tmp_path / "agent.toml",
        diagnosis={"use_llm": False},
        webhook={"body_timeout_seconds": 2, "coalesce_seconds": 1},
    )
    env = agent_env(tmp_path, config, e2e_prometheus.url, gateway.url, WEBHOOK_TOKEN=TOKEN)
    daemon = DaemonProcess(env, tmp_path)
    try:
        [started] = daemon.wait_for("daemon_started", timeout=30)
        daemon.wait_for("sweep_finished", timeout=30)
        port = int(started["metrics_addr"].rsplit(":", 1)[1])
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=15) as http:
            valid = json.dumps(_notification([])).encode()
            assert http.post(HOOK, content=valid).status_code == 401
            wrong = http.post(HOOK, content=valid, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
            assert wrong.headers["www-authenticate"] == "Bearer"
            not_json = http.post(HOOK, content=b"{not json", headers=AUTH)
            assert not_json.status_code == 400 and "not JSON" in not_json.json()["error"]
            wrong_shape = http.post(HOOK, json={"version": "3"}, headers=AUTH)
            assert wrong_shape.status_code == 400 and "version" in wrong_shape.json()["error"]
            many = [
                {"status": "firing", "labels": {"alertname": "Leak", "service": f"s{i}"}}
                for i in range(10_000)
            ]
            big = http.post(HOOK, json=_notification(many), headers=AUTH)
            assert big.status_code == 202
            declared = _raw_post(
                port,
                f"Authorization: Bearer {TOKEN}\r\nContent-Length: 20000000\r\n",
                [],
            )
            assert declared.startswith(b"HTTP/1.1 413")
            megabyte = b"x" * (1 << 20)
            chunk = f"{len(megabyte):x}\r\n".encode() + megabyte + b"\r\n"
            streamed = _raw_post(
                port,
                f"Authorization: Bearer {TOKEN}\r\nTransfer-Encoding: chunked\r\n",
                [chunk] * 20,
            )
            # The answer can be lost to the reset of a connection closed with unread
            # data; the counter below says it was given either way.
            assert streamed == b"" or streamed.startswith(b"HTTP/1.1 413")
            endless = _raw_post(
                port,
                f"Authorization: Bearer {TOKEN}\r\nTransfer-Encoding: chunked\r\n",
                (b"1\r\nx\r\n" for _ in range(150)),
                pause=0.2,
            )
            assert endless.startswith(b"HTTP/1.1 408")
            woken_before = _sweeps(daemon, "webhook")
            burst = [http.post(HOOK, content=valid, headers=AUTH).status_code for _ in range(100)]
            assert burst == [202] * 100
            _until_every_burst_swept(daemon, notifications=101)
            woken = _sweeps(daemon, "webhook") - woken_before
            health = http.get("/healthz")
            exposition = http.get("/metrics").text
    finally:
        daemon.close()
    # by the daemon's own clock: a scheduled sweep ended while the body dripped ...
    [dripped] = [
        e
        for e in daemon.events()
        if e.get("event") == "webhook_refused" and e["result"] == "timeout"
    ]
    cut_at = datetime.fromisoformat(dripped["timestamp"])
    assert any(
        cut_at - timedelta(seconds=2) <= datetime.fromisoformat(e["timestamp"]) <= cut_at
        for e in daemon.events()
        if e.get("event") == "sweep_finished" and e["trigger"] == "schedule"
    )
    # ... and scheduled sweeps (every second) went on throughout: no gap of 5 s or more
    scheduled = [
        datetime.fromisoformat(e["timestamp"])
        for e in daemon.events()
        if e.get("event") == "sweep_finished" and e["trigger"] == "schedule"
    ]
    gaps = [(b - a).total_seconds() for a, b in zip(scheduled, scheduled[1:], strict=False)]
    assert len(scheduled) >= 3 and max(gaps) < 5, gaps
    assert 1 <= woken <= 10
    assert health.status_code == 200
    results = {
        r: _counter(exposition, "devops_agent_webhook_notifications_total", result=r)
        for r in ("unauthorized", "malformed", "too_large", "timeout", "accepted")
    }
    assert results == {
        "unauthorized": 2,
        "malformed": 2,
        "too_large": 2,
        "timeout": 1,
        "accepted": 101,
    }
    events = daemon.events()
    assert not any(e.get("level") == "error" for e in events)
    bursts = [e for e in events if e.get("event") == "webhook_received"]
    assert sum(e["notifications"] for e in bursts) == 101 and len(bursts) <= 10
    refused = [e["result"] for e in events if e.get("event") == "webhook_refused"]
    assert sorted(refused) == ["malformed", "timeout", "too_large", "unauthorized"]


def _until_every_burst_swept(daemon: DaemonProcess, *, notifications: int) -> None:
    """Wait (by the daemon's events, not a clock) until every accepted notification was
    taken into a burst and every burst's woken sweep has finished."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        events = daemon.events()
        bursts = [e for e in events if e.get("event") == "webhook_received"]
        swept = sum(
            e.get("event") == "sweep_finished" and e["trigger"] == "webhook" for e in events
        )
        if sum(e["notifications"] for e in bursts) >= notifications and swept >= len(bursts):
            return
        time.sleep(0.2)
    raise AssertionError(f"not every burst was swept:\n{daemon.tail()}")


async def _alertmanager_alerts(am: LocalAlertmanager) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(timeout=5) as http:
        answer = await http.get(f"{am.url}/api/v2/alerts")
        alerts: list[dict[str, Any]] = answer.json()
        return alerts


async def _until(probe: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await probe():
            return
        await asyncio.sleep(0.3)
    pytest.fail(f"timed out after {timeout:g}s waiting for {what}")


@pytest.fixture
def alertmanager_only(tmp_path: Path) -> Iterator[LocalAlertmanager]:
    """A real Alertmanager of this test's own (notifying nobody)."""
    am = LocalAlertmanager(tmp_path / "am", free_port()).start()
    yield am
    am.stop()


async def test_an_alert_from_both_sources_is_one_incident(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    services_target: MetricsTarget,
    alertmanager_only: LocalAlertmanager,
    gateway: GatewaySimulator,
) -> None:
    """Prometheus' alerts and Alertmanager's v2 alerts both on (and Alertmanager trusted):
    the alert Prometheus sent (Alertmanager adds its external labels) is one incident,
    resting on Prometheus; an alert only Alertmanager knows (another Prometheus sent it) is
    an incident resting on Alertmanager, and the re-check before its restart asks
    Alertmanager, so it is restarted, not skipped as "no longer firing"."""
    am = alertmanager_only
    prom = LocalPrometheus(
        tmp_path / "prom",
        targets={"services": services_target.address},
        rules=E2E_RULES,
        alertmanager_url=am.url,
        external_labels={"cluster": "eu-1"},
    ).start()
    services_target.set("e2e_memory_bytes", 5000, service="market-predictor")
    elsewhere = {
        "labels": {"alertname": "ServiceDown", "service": "coding-ai-agent", "cluster": "us-2"},
        "annotations": {"summary": "seen by another Prometheus"},
        "endsAt": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
    }
    config = write_config(
        tmp_path / "agent.toml",
        diagnosis={"use_llm": False},
        sweep={"sources": ["prometheus", "alertmanager"], "trust_alertmanager": True},
    )
    env = agent_env(tmp_path, config, prom.url, gateway.url, ALERTMANAGER_URL=am.url)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            (await http.post(f"{am.url}/api/v2/alerts", json=[elsewhere])).raise_for_status()

        async def both_in_alertmanager() -> bool:
            names = {a["labels"]["alertname"] for a in await _alertmanager_alerts(am)}
            return {"ServiceMemoryLeak", "ServiceDown"} <= names

        await _until(both_in_alertmanager, 45, "both alerts in Alertmanager")
        async with open_runtime(load_settings(env_file=None)) as rt:
            reports = [await run_cycle(rt, datetime.now(UTC)) for _ in range(3)]
            incidents = rt.store.recent(100)
    finally:
        prom.stop()
    by_name = {i.name: i for i in incidents if isinstance(i, Incident)}
    assert sorted((i.name, i.target) for i in by_name.values()) == [
        ("ServiceDown", "coding-ai-agent"),
        ("ServiceMemoryLeak", "market-predictor"),
    ]
    elsewhere_incident, leak = by_name["ServiceDown"], by_name["ServiceMemoryLeak"]
    assert elsewhere_incident.finding.source == "alertmanager"
    assert elsewhere_incident.state in ("verifying", "resolved"), elsewhere_incident.resolution
    assert leak.finding.source == "prometheus" and leak.state in ("verifying", "resolved")
    assert sorted(e.body["target_resource"]["name"] for e in gateway.executions()) == [
        "coding-ai-agent",
        "market-predictor",
    ]
    for report in reports:
        assert {s.name for s in report.sweep.sources if s.ok} >= {"alerts", "alertmanager_alerts"}
        assert len(report.sweep.findings) == 2


async def _escalations(am: LocalAlertmanager) -> list[dict[str, Any]]:
    return [
        a
        for a in await _alertmanager_alerts(am)
        if a["labels"]["alertname"] == "DevopsAgentEscalation" and a["status"]["state"] == "active"
    ]


async def test_fleet_storm_is_one_escalation_and_no_action(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    services_target: MetricsTarget,
    alertmanager_only: LocalAlertmanager,
    gateway: GatewaySimulator,
) -> None:
    """10 of 12 services in scope fire: no gateway request, no diagnosis, one escalation in
    a real Alertmanager naming the services. When the storm clears, the one service that
    still fires is diagnosed and restarted, and the escalation resolves."""
    am = alertmanager_only
    extra = [f"svc-{i}" for i in range(9)]  # with the 3 shipped services: 12 in scope
    storming = sorted([*extra, "market-predictor"])
    for service in storming:
        services_target.set("e2e_memory_bytes", 5000, service=service)
    prom = LocalPrometheus(
        tmp_path / "prom", targets={"services": services_target.address}, rules=E2E_RULES
    ).start()
    model = FakeModel()
    config = write_config(
        tmp_path / "agent.toml",
        services={s: {"actions": ["restart", "collect_logs"]} for s in extra},
        policy={"storm_share": 0.5, "storm_min_services": 5},
    )
    env = agent_env(
        tmp_path,
        config,
        prom.url,
        gateway.url,
        ALERTMANAGER_URL=am.url,
        OPENAI_BASE_URL=model.base_url,
    )
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings(env_file=None)
    assert len(settings.config.services) == 12
    try:
        async with open_runtime(settings) as rt:

            async def storm_seen(rt: Runtime = rt) -> bool:
                report = await run_cycle(rt, datetime.now(UTC))
                return len(report.sweep.findings) == 10

            await _until(storm_seen, 45, "10 services firing")
            for _ in range(3):
                await run_cycle(rt, datetime.now(UTC))
            during = rt.store.current()
            calls_during = model.calls
            gateway_during = len(gateway.executions())

            async def paged() -> bool:
                return bool(await _escalations(am))

            await _until(paged, 30, "the storm's escalation in Alertmanager")
            escalations = await _escalations(am)
            for service in extra:
                services_target.set("e2e_memory_bytes", 100, service=service)

            async def handled(rt: Runtime = rt) -> bool:
                report = await run_cycle(rt, datetime.now(UTC))
                return bool(report.dispatches)

            await _until(handled, 45, "the remaining service to be acted on")
            after = rt.store.recent(100)
            storm_events = [
                e.kind for i in after if i.kind == "storm" for e in rt.store.events(i.id)
            ]

            async def unpaged() -> bool:
                return not await _escalations(am)

            await _until(unpaged, 30, "the storm's escalation to resolve")
    finally:
        prom.stop()
        model.stop()
    [storm] = [i for i in during if i.kind == "storm"]
    assert storm.state == "watching"
    assert sorted(storm.finding.annotations["services"].split(", ")) == storming
    assert sorted(i.target or "" for i in during if i.kind != "storm") == storming
    assert all(i.state == "held" for i in during if i.kind != "storm")
    assert gateway_during == 0
    assert calls_during <= 1
    [page] = escalations
    assert page["labels"]["service"] == "fleet"
    assert sorted(page["annotations"]["services"].split(", ")) == storming
    assert {"escalation_sent", "escalation_resolved"} <= set(storm_events)
    [storm_after] = [i for i in after if i.kind == "storm"]
    assert storm_after.state == "resolved"
    [request] = gateway.executions()
    assert request.body["target_resource"] == {"name": "market-predictor"}
    assert model.calls > calls_during  # the service left firing was diagnosed on its own


def test_the_example_alertmanager_config_is_valid(tmp_path: Path) -> None:
    """The receiver and route an operator pastes in pass amtool under a root route."""
    example = (REPO / "config" / "alertmanager.example.yml").read_text()
    assert "/webhook/alertmanager" in example and "type: Bearer" in example
    pasted = example.replace("\nroute:\n", "\nroute:\n  receiver: devops-agent\n", 1)
    assert pasted != example
    (tmp_path / "alertmanager.yml").write_text(pasted)
    checked = subprocess.run(
        [find_binary("amtool"), "check-config", str(tmp_path / "alertmanager.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "2 receivers" in checked.stdout
    assert "DevopsAgentApprovalRequired" in example
