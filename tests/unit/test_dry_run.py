"""`devops-agent sweep --dry-run` in process: a leak and a full disk firing, Alertmanager
configured, a model that asks for the logs first. Nothing is sent to the gateway, nothing
is posted to Alertmanager, and the report lists what would have been.

Prometheus, Alertmanager, the model and the gateway are faked at the HTTP boundary
(pytest-httpx); everything from the sweep to the effects is the real code."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pytest_httpx import HTTPXMock

from agent.cli.main import main
from agent.store import open_store
from agent.store.base import Breaker, StateCopy
from tests.conftest import BASE_ENV
from tests.integration.daemon_support import write_config
from tests.llm_fakes import answer_reading_logs_first

PROM, GATEWAY, LLM, AM = (
    "http://prom.test",
    "http://gateway.test",
    "http://llm.test/v1",
    "http://am.test",
)
SERVICES = ("market-predictor", "coding-ai-agent")


def _alerts() -> dict[str, Any]:
    since = (datetime.now(UTC) - timedelta(minutes=2)).isoformat()
    alerts = [
        {
            "state": "firing",
            "labels": {"alertname": name, "service": service, "severity": "critical"},
            "annotations": {"summary": f"{name} on {service}"},
            "activeAt": since,
            "value": "1e+00",
        }
        for name, service in (("MemoryLeak", SERVICES[0]), ("DiskFull", SERVICES[1]))
    ]
    return {"status": "success", "data": {"alerts": alerts}}


def _prometheus(request: httpx.Request) -> httpx.Response:
    if request.url.path == "/api/v1/alerts":
        return httpx.Response(200, json=_alerts())
    if request.url.path == "/-/healthy":
        return httpx.Response(200, text="ok")
    return httpx.Response(200, json={"status": "success", "data": {"result": [], "groups": []}})


class Peers:
    """Records what reached the gateway and what was posted to Alertmanager."""

    def __init__(self) -> None:
        self.gateway: list[httpx.Request] = []
        self.posted: list[httpx.Request] = []

    def model(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=answer_reading_logs_first(json.loads(request.read())))

    def alertmanager(self, request: httpx.Request) -> httpx.Response:
        if request.method != "GET":
            self.posted.append(request)
        return httpx.Response(200, json=[])

    def gateway_call(self, request: httpx.Request) -> httpx.Response:
        self.gateway.append(request)
        return httpx.Response(503)


@pytest.fixture
def peers(httpx_mock: HTTPXMock) -> Peers:
    """Every peer faked; the gateway and Alertmanager record what they were sent."""
    peers = Peers()
    httpx_mock.add_callback(_prometheus, url=re.compile(f"{PROM}/.*"), is_reusable=True)
    httpx_mock.add_callback(peers.model, url=re.compile(f"{LLM}/.*"), is_reusable=True)
    httpx_mock.add_callback(
        peers.alertmanager, url=re.compile(f"{AM}/.*"), is_reusable=True, is_optional=True
    )
    httpx_mock.add_callback(
        peers.gateway_call, url=re.compile(f"{GATEWAY}/.*"), is_reusable=True, is_optional=True
    )
    return peers


def _env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **extra: str) -> Path:
    config = write_config(tmp_path / "agent.toml", diagnosis={"max_retries": 0})
    store = tmp_path / "real" / "agent.db"
    env = {
        **BASE_ENV,
        "PROMETHEUS_URL": PROM,
        "AI_COMMAND_GATEWAY_URL": GATEWAY,
        "OPENAI_BASE_URL": LLM,
        "ALERTMANAGER_URL": AM,
        "AGENT_CONFIG": str(config),
        "AGENT_STATE_URL": f"sqlite:///{store}",
        "LOG_FORMAT": "json",
        **extra,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    return store


def _dump(path: Path) -> list[str]:
    import sqlite3

    with sqlite3.connect(path) as db:
        return list(db.iterdump())


def _sweep(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[dict[str, Any], str]:
    assert main(["sweep", *args]) == 0
    captured = capsys.readouterr()
    return (json.loads(captured.out) if "--json" in args else {}), (
        captured.err if "--json" in args else captured.out
    )


def test_a_dry_run_sends_nothing_posts_nothing_and_says_what_it_would_have(
    peers: Peers,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Two `sweep --dry-run` runs: 0 gateway requests, 0 alerts posted, the real store
    unchanged; each report lists the restart and the log reads it would have sent and the
    escalation it would have posted, as JSON and as one text line each."""
    store_path = _env(tmp_path, monkeypatch)
    store = open_store(f"sqlite:///{store_path}")
    store.import_state(StateCopy([], [], [Breaker("devops-ai-agent", 1, False, datetime.now(UTC))]))
    store.close()
    before = _dump(store_path)

    report, logs = _sweep(capsys, "--dry-run", "--json")
    _, text = _sweep(capsys, "--dry-run")

    assert peers.gateway == [] and peers.posted == []
    assert _dump(store_path) == before
    sent = sorted((w["action"], w["target"], w["purpose"]) for w in report["would_send"])
    assert sent == [
        ("collect_logs", "coding-ai-agent", "diagnosis"),
        ("collect_logs", "market-predictor", "diagnosis"),
        ("restart", "market-predictor", "remediation"),
    ]
    [escalation] = report["would_escalate"]
    assert (escalation["alert"], escalation["service"], escalation["ends"]) == (
        "DevopsAgentEscalation",
        "coding-ai-agent",
        False,
    )
    events = [json.loads(line)["event"] for line in logs.splitlines() if line.startswith("{")]
    assert events.count("would_send") == 3 and events.count("would_escalate") == 1
    assert "escalation_delivery_failed" not in events
    assert "would send restart ('restart the service') for market-predictor" in text
    assert "would post DevopsAgentEscalation for coding-ai-agent" in text
    assert text.count("would send collect_logs") == 2


def test_a_dry_run_with_the_gateway_down_reports_the_same(
    httpx_mock: HTTPXMock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """DRY_RUN=true with no gateway at all (nothing answers there) and Alertmanager
    refusing every post: the same would-send and would-escalate, nothing attempted."""
    httpx_mock.add_callback(_prometheus, url=re.compile(f"{PROM}/.*"), is_reusable=True)
    httpx_mock.add_callback(
        lambda r: httpx.Response(200, json=answer_reading_logs_first(json.loads(r.read()))),
        url=re.compile(f"{LLM}/.*"),
        is_reusable=True,
    )
    httpx_mock.add_callback(
        lambda r: httpx.Response(200 if r.method == "GET" else 500, json=[]),
        url=re.compile(f"{AM}/.*"),
        is_reusable=True,
    )
    _env(tmp_path, monkeypatch, DRY_RUN="true")
    report, logs = _sweep(capsys, "--json")
    assert sorted(w["action"] for w in report["would_send"]) == [
        "collect_logs",
        "collect_logs",
        "restart",
    ]
    assert [w["alert"] for w in report["would_escalate"]] == ["DevopsAgentEscalation"]
    hosts = {r.url.host for r in httpx_mock.get_requests()}
    assert "gateway.test" not in hosts
    assert {r.method for r in httpx_mock.get_requests() if r.url.host == "am.test"} == {"GET"}
    assert not (tmp_path / "real" / "agent.db").exists()
    assert "delivery_failed" not in logs and "incident_failed" not in logs


def test_a_dry_run_asks_nobody_for_approval(
    httpx_mock: HTTPXMock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A stop (tier approve) would wait for a human: in a dry run the approval request is
    not posted to Alertmanager, it is listed as an alert that would have been."""

    def stop_it(request: httpx.Request) -> httpx.Response:
        body = answer_reading_logs_first(json.loads(request.read()))
        content = body["choices"][0]["message"]["content"] or ""
        if '"action": "restart"' in content:
            body["choices"][0]["message"]["content"] = content.replace('"restart"', '"stop"')
        return httpx.Response(200, json=body)

    httpx_mock.add_callback(_prometheus, url=re.compile(f"{PROM}/.*"), is_reusable=True)
    httpx_mock.add_callback(stop_it, url=re.compile(f"{LLM}/.*"), is_reusable=True)
    httpx_mock.add_callback(
        lambda r: httpx.Response(200, json=[]), url=re.compile(f"{AM}/.*"), is_reusable=True
    )
    _env(tmp_path, monkeypatch)
    report, _ = _sweep(capsys, "--dry-run", "--json")
    asks = [w for w in report["would_escalate"] if w["alert"] == "DevopsAgentApprovalRequired"]
    assert [(w["service"], w["ends"]) for w in asks] == [("market-predictor", False)]
    assert "restart" not in {w["action"] for w in report["would_send"]}
    assert {r.method for r in httpx_mock.get_requests() if r.url.host == "am.test"} == {"GET"}
