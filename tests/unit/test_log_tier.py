"""The investigation's log read obeys the collect_logs tier, the circuit breaker and the dry
run: a model that asks for the logs first gets them only where an action could run now.

The model, Prometheus and the gateway are faked at the HTTP boundary (pytest-httpx); the
diagnosis, the toolbox, the log reader and the store are the real ones."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pytest_httpx import HTTPXMock

from agent.diagnosis.engine import diagnose
from agent.dispatch.logs import log_reader
from agent.incidents.lifecycle import on_finding
from agent.runtime import Runtime, open_runtime
from agent.settings import load_settings
from agent.store.base import Breaker, StateCopy
from tests.conftest import BASE_ENV, alert_finding
from tests.integration.daemon_support import write_config
from tests.llm_fakes import completion, phase_of, plan, triage

PROM, GATEWAY, LLM = "http://prom.test", "http://gateway.test", "http://llm.test/v1"
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
SERVICE = "market-predictor"
GATEWAY_OK = {
    "request_id": "r1",
    "overall_status": "COMPLETED_SUCCESS",
    "execution_details": {
        "command": f"docker logs --tail 100 {SERVICE}",
        "execution_result": {
            "status": "SUCCESS",
            "exit_code": 0,
            "stdout": "heap grows",
            "stderr": "",
        },
    },
    "error_details": None,
}


def _model(request: httpx.Request) -> httpx.Response:
    """A model that calls recent_logs first, offered or not, then plans a restart."""
    body: dict[str, Any] = json.loads(request.read())
    phase = phase_of(body)
    if phase == "triage":
        return httpx.Response(200, json=triage())
    if phase == "investigation":
        if any(m["role"] == "tool" for m in body["messages"]):
            return httpx.Response(200, json=completion("The heap grows."))
        call = ("recent_logs", {"service": SERVICE, "lines": 100})
        return httpx.Response(200, json=completion(None, [call]))
    return httpx.Response(200, json=plan())


def _prometheus(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"status": "success", "data": {"result": [], "groups": []}})


Open = Callable[..., Any]


@pytest.fixture
async def runtime(
    httpx_mock: HTTPXMock, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> AsyncIterator[Callable[..., Any]]:
    """Opens a runtime with the given service tiers and dry run; closed after the test."""
    httpx_mock.add_callback(_model, url=re.compile(f"{LLM}/.*"), is_reusable=True)
    httpx_mock.add_callback(
        _prometheus, url=re.compile(f"{PROM}/.*"), is_reusable=True, is_optional=True
    )
    opened: list[Any] = []

    async def make(*, autonomy: dict[str, str] | None = None, dry_run: bool = False) -> Runtime:
        actions = ["restart", "start", "stop", "collect_logs", "inspect_resources", "health_check"]
        services = {SERVICE: {"actions": actions, "autonomy": autonomy}} if autonomy else {}
        config = write_config(tmp_path / "agent.toml", services=services)
        env = {
            **BASE_ENV,
            "PROMETHEUS_URL": PROM,
            "AI_COMMAND_GATEWAY_URL": GATEWAY,
            "OPENAI_BASE_URL": LLM,
            "AGENT_CONFIG": str(config),
            "AGENT_STATE_URL": f"sqlite:///{tmp_path / 'agent.db'}",
        }
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        context = open_runtime(load_settings(env_file=None), dry_run=dry_run)
        opened.append(context)
        return await context.__aenter__()

    yield make
    for context in opened:
        await context.__aexit__(None, None, None)


def _gateway_requests(httpx_mock: HTTPXMock) -> list[httpx.Request]:
    return [r for r in httpx_mock.get_requests() if r.url.host == "gateway.test"]


def _tools_offered(httpx_mock: HTTPXMock) -> set[str]:
    names: set[str] = set()
    for request in httpx_mock.get_requests():
        if request.url.host == "llm.test":
            body = json.loads(request.read())
            names |= {t["function"]["name"] for t in body.get("tools", [])}
    return names


async def _log_call(rt: Runtime) -> str:
    """Diagnose a leak; what the model's recent_logs call was answered."""
    finding = alert_finding(first_seen=NOW)
    incident = on_finding(finding, "inc000000001", NOW).incident
    result = await diagnose(finding, rt.diagnosis, NOW, logs=log_reader(rt, incident, finding))
    answers = [m for m in result.transcript if m.get("name") == "recent_logs"]
    assert len(answers) == 1, result.transcript
    return str(answers[0]["content"])


async def test_auto_tier_reads_the_logs_through_the_gateway(
    runtime: Open, httpx_mock: HTTPXMock
) -> None:
    """collect_logs on auto (the shipped tier): the tool is offered and one read is sent."""
    httpx_mock.add_response(url=f"{GATEWAY}/execute-docker-command", json=GATEWAY_OK)
    rt = await runtime()
    answer = await _log_call(rt)
    assert "recent_logs" in _tools_offered(httpx_mock)
    assert answer.startswith("untrusted log text") and "heap grows" in answer
    assert len(_gateway_requests(httpx_mock)) == 1


@pytest.mark.parametrize("tier", ["never", "approve"])
async def test_a_tier_other_than_auto_reads_nothing(
    runtime: Open, httpx_mock: HTTPXMock, tier: str
) -> None:
    """collect_logs on never or approve: not offered, a call anyway is refused with the
    tier named, and nothing reaches the gateway."""
    rt = await runtime(autonomy={"collect_logs": tier})
    answer = await _log_call(rt)
    assert "recent_logs" not in _tools_offered(httpx_mock)
    assert answer == (
        f"refused: the logs of '{SERVICE}' may not be read now: "
        f"collect_logs is '{tier}' for this service"
    )
    assert _gateway_requests(httpx_mock) == []


async def test_an_open_breaker_reads_nothing(runtime: Open, httpx_mock: HTTPXMock) -> None:
    """The service's circuit breaker is open: no log read, whatever the tier says."""
    rt = await runtime()
    rt.store.import_state(StateCopy([], [], [Breaker(SERVICE, 3, True, NOW)]))
    answer = await _log_call(rt)
    assert "recent_logs" not in _tools_offered(httpx_mock)
    assert answer.endswith("its circuit breaker is open")
    assert _gateway_requests(httpx_mock) == []


async def test_a_dry_run_reads_nothing_and_says_what_it_would_have_sent(
    runtime: Open, httpx_mock: HTTPXMock
) -> None:
    """In a dry run the tool is not offered, a call anyway answers "logs not read: dry
    run", nothing reaches the gateway, and the read is recorded as would-send."""
    rt = await runtime(dry_run=True)
    answer = await _log_call(rt)
    assert "recent_logs" not in _tools_offered(httpx_mock)
    assert answer == "logs not read: dry run"
    assert _gateway_requests(httpx_mock) == []
    sent, posted = rt.withheld.drain()
    assert sent == [
        {
            "incident_id": "inc000000001",
            "target": SERVICE,
            "action": "collect_logs",
            "intent": "show recent logs",
            "purpose": "diagnosis",
        }
    ]
    assert posted == []
