"""Gateway client: every row of the contract, both generations, retries and headers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pytest_httpx import HTTPXMock

from agent.clients.gateway import GatewayClient, build_http_client
from agent.clients.retrying import parse_retry_after
from agent.config import Action, GatewayOptions, Severity
from agent.gateway.request import (
    GatewayRequest,
    build_context,
    idempotency_key,
    priority_for,
)
from agent.metrics import AgentMetrics
from agent.text import one_line
from tests.conftest import Sleeps

URL = "http://gateway.test"
EXECUTE = f"{URL}/execute-docker-command"
OPTIONS = GatewayOptions(max_attempts=4, deadline_seconds=600, output_max_chars=50)


def _v2(status: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "request_id": "req-1",
        "timestamp_processed_utc": "2026-11-23T12:03:04.123456",
        "overall_status": status,
        "execution_details": None,
        "error_details": None,
    }
    if status in ("COMPLETED_SUCCESS", "COMPLETED_FAILURE"):
        ok = status == "COMPLETED_SUCCESS"
        body["execution_details"] = {
            "command": "docker restart market-predictor",
            "execution_result": {
                "status": "SUCCESS" if ok else "FAILURE",
                "exit_code": 0 if ok else 1,
                "stdout": "market-predictor\n" if ok else "",
                "stderr": "" if ok else "Error: No such container",
            },
        }
    else:
        code = {
            "VALIDATION_ERROR": "UNKNOWN_SERVICE",
            "EXECUTION_ERROR": "SSH_ERROR",
            "LLM_GENERATION_FAILED": "LLM_ERROR",
            "INTERNAL_ERROR": "GATEWAY_ERROR",
        }[status]
        body["error_details"] = {"error_code": code, "message": "details"}
    body.update(extra)
    return body


def _v1(status: str) -> dict[str, Any]:
    return {
        "overall_status": status,
        "execution_details": {
            "command": "docker restart market-predictor",
            "execution_result": "market-predictor",
            "execution_time_ms": 812,
        },
    }


@pytest.fixture
async def client(sleeps: Sleeps) -> AsyncIterator[GatewayClient]:
    """A gateway client with a token, a fake sleep and its own metrics."""
    async with build_http_client(URL, 5.0, "gw-token") as http:
        yield GatewayClient(http, OPTIONS, metrics=AgentMetrics(), sleep=sleeps)


def _request(incident: str = "inc-1", action: str = "restart") -> GatewayRequest:
    return GatewayRequest(
        source_id="devops-ai-agent",
        target="market-predictor",
        action=action,
        intent="restart the service",
        context="alert MemoryLeak firing",
        priority="HIGH",
        idempotency_key=idempotency_key(incident, action),
    )


def _json(status: int, body: Any) -> dict[str, Any]:
    return {"status_code": status, "json": body}


OK = _json(200, _v2("COMPLETED_SUCCESS"))

CASES = [
    # id, answers, outcome, attempts, status
    ("success", [OK], "succeeded", 1, "COMPLETED_SUCCESS"),
    ("command-failed", [_json(200, _v2("COMPLETED_FAILURE"))], "failed", 1, "COMPLETED_FAILURE"),
    ("validation", [_json(200, _v2("VALIDATION_ERROR"))], "rejected", 1, "REJECTED"),
    (
        "execution-error",
        [_json(200, _v2("EXECUTION_ERROR")), OK],
        "succeeded",
        2,
        "COMPLETED_SUCCESS",
    ),
    (
        "llm-failed",
        [_json(200, _v2("LLM_GENERATION_FAILED")), OK],
        "succeeded",
        2,
        "COMPLETED_SUCCESS",
    ),
    ("internal-x4", [_json(200, _v2("INTERNAL_ERROR"))] * 4, "gave_up", 4, "INTERNAL_ERROR"),
    ("v1-success", [_json(200, _v1("success"))], "succeeded", 1, "success"),
    ("v1-error", [_json(200, _v1("error"))], "failed", 1, "error"),
    ("v1-timeout", [_json(200, _v1("timeout"))], "failed", 1, "timeout"),
    ("http-422", [_json(422, {"detail": [{"msg": "field required"}]})], "rejected", 1, "REJECTED"),
    ("http-401", [_json(401, {"detail": "unauthorized"})], "rejected", 1, "REJECTED"),
    ("http-403", [_json(403, {"detail": "forbidden"})], "rejected", 1, "REJECTED"),
    ("http-503-then-ok", [_json(503, {}), OK], "succeeded", 2, "COMPLETED_SUCCESS"),
    ("http-500-x4", [_json(500, {})] * 4, "gave_up", 4, "TRANSIENT"),
    ("unknown-shape", [_json(200, {"result": "ok"})], "failed", 1, "UNRECOGNISED"),
    ("not-json", [{"status_code": 200, "content": b"<html>"}], "failed", 1, "UNRECOGNISED"),
]


@pytest.mark.parametrize(
    ("answers", "outcome", "attempts", "status"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
async def test_contract_table(
    httpx_mock: HTTPXMock,
    client: GatewayClient,
    answers: list[dict[str, Any]],
    outcome: str,
    attempts: int,
    status: str,
) -> None:
    """Each contract row gives the documented outcome after the documented attempts."""
    for answer in answers:
        httpx_mock.add_response(url=EXECUTE, method="POST", **answer)
    result = await client.execute(_request())
    assert (result.outcome, result.attempts, result.status) == (outcome, attempts, status)
    sent = httpx_mock.get_requests()
    assert len(sent) == attempts
    assert {r.headers["Idempotency-Key"] for r in sent} == {idempotency_key("inc-1", "restart")}
    assert all(r.headers["Authorization"] == "Bearer gw-token" for r in sent)


async def test_success_details_are_kept(httpx_mock: HTTPXMock, client: GatewayClient) -> None:
    """Command, exit code, output, request id and the body sent are all as expected."""
    httpx_mock.add_response(url=EXECUTE, json=_v2("COMPLETED_SUCCESS"))
    result = await client.execute(_request())
    assert result.command == "docker restart market-predictor"
    assert (result.exit_code, result.output, result.request_id) == (
        0,
        "market-predictor\n",
        "req-1",
    )
    sent = json.loads(httpx_mock.get_requests()[0].read())
    assert sent == {
        "source_id": "devops-ai-agent",
        "target_resource": {"name": "market-predictor"},
        "action_request": {
            "intent": "restart the service",
            "context": "alert MemoryLeak firing",
            "priority": "HIGH",
        },
    }


async def test_output_is_capped(httpx_mock: HTTPXMock, client: GatewayClient) -> None:
    """Command output beyond output_max_chars is cut with a marker."""
    body = _v2("COMPLETED_SUCCESS")
    body["execution_details"]["execution_result"]["stdout"] = "x" * 500
    httpx_mock.add_response(url=EXECUTE, json=body)
    result = await client.execute(_request())
    assert len(result.output) == 50 and result.output.startswith("x" * 20)
    assert result.output.endswith(f"…[+{500 - result.output.index('…')} chars]")


async def test_timeout_and_connection_errors_are_retried(
    httpx_mock: HTTPXMock, client: GatewayClient
) -> None:
    """A read timeout and a refused connection are retried; the third attempt succeeds."""
    httpx_mock.add_exception(httpx.ReadTimeout("slow"), url=EXECUTE)
    httpx_mock.add_exception(httpx.ConnectError("refused"), url=EXECUTE)
    httpx_mock.add_response(url=EXECUTE, json=_v2("COMPLETED_SUCCESS"))
    result = await client.execute(_request())
    assert (result.outcome, result.attempts) == ("succeeded", 3)


async def test_connection_refused_gives_up(httpx_mock: HTTPXMock, client: GatewayClient) -> None:
    """When every attempt is refused the result is gave_up with the cause."""
    for _ in range(4):
        httpx_mock.add_exception(httpx.ConnectError("refused"), url=EXECUTE)
    result = await client.execute(_request())
    assert (result.outcome, result.attempts) == ("gave_up", 4)
    assert result.error == "connection failed: ConnectError"


async def test_retry_after_is_honoured(
    httpx_mock: HTTPXMock, client: GatewayClient, sleeps: Sleeps
) -> None:
    """A 429 waits exactly its Retry-After before the next attempt."""
    httpx_mock.add_response(url=EXECUTE, status_code=429, headers={"Retry-After": "7"})
    httpx_mock.add_response(url=EXECUTE, json=_v2("COMPLETED_SUCCESS"))
    result = await client.execute(_request())
    assert (result.outcome, result.attempts) == ("succeeded", 2)
    assert sleeps.waits == [7.0]


async def test_backoff_is_jittered_and_capped(httpx_mock: HTTPXMock, sleeps: Sleeps) -> None:
    """Waits grow exponentially with full jitter and never exceed the cap."""
    options = GatewayOptions(max_attempts=6, backoff_initial_seconds=1, backoff_max_seconds=3)
    for _ in range(6):
        httpx_mock.add_response(url=EXECUTE, status_code=502)
    async with build_http_client(URL, 5.0, None) as http:
        result = await GatewayClient(http, options, sleep=sleeps).execute(_request())
    assert result.attempts == 6
    assert len(sleeps.waits) == 5
    assert all(0 <= w <= 3 for w in sleeps.waits)
    assert "Authorization" not in httpx_mock.get_requests()[0].headers


async def test_deadline_stops_retrying(httpx_mock: HTTPXMock, sleeps: Sleeps) -> None:
    """A Retry-After beyond the overall deadline ends the retries at once."""
    options = GatewayOptions(max_attempts=5, deadline_seconds=10)
    httpx_mock.add_response(url=EXECUTE, status_code=429, headers={"Retry-After": "60"})
    async with build_http_client(URL, 5.0, None) as http:
        result = await GatewayClient(http, options, sleep=sleeps).execute(_request())
    assert (result.outcome, result.attempts) == ("gave_up", 1)
    assert sleeps.waits == []


async def test_attempts_are_logged(httpx_mock: HTTPXMock, client: GatewayClient) -> None:
    """Each retry is a log event with the attempt number, the wait and the cause."""
    from structlog.testing import capture_logs

    httpx_mock.add_response(url=EXECUTE, status_code=503)
    httpx_mock.add_response(url=EXECUTE, json=_v2("COMPLETED_SUCCESS"))
    with capture_logs() as logs:
        await client.execute(_request())
    [retry] = [e for e in logs if e["event"] == "gateway_retry_scheduled"]
    assert retry["attempt"] == 1 and retry["cause"] == "HTTP 503" and "wait_seconds" in retry


def test_idempotency_key_is_per_incident_and_action() -> None:
    """Same (incident, action) gives the same key; any other pair a different one."""
    assert idempotency_key("a", "restart") == idempotency_key("a", "restart")
    assert idempotency_key("a", "restart") != idempotency_key("a", "stop")
    assert idempotency_key("a", "restart") != idempotency_key("b", "restart")


@pytest.mark.parametrize(
    ("severity", "critical_priority", "expected"),
    [
        (Severity.critical, "HIGH", "HIGH"),
        (Severity.critical, "URGENT", "URGENT"),
        (Severity.warning, "URGENT", "NORMAL"),
        (Severity.info, "HIGH", "LOW"),
    ],
)
def test_priority_mapping(severity: Severity, critical_priority: Any, expected: str) -> None:
    """critical -> HIGH (or URGENT per catalogue), warning -> NORMAL, info -> LOW."""
    action = Action(
        intent="restart the service", mutating=True, critical_priority=critical_priority
    )
    assert priority_for(severity, action) == expected


def test_context_is_clean_capped_and_secret_free() -> None:
    """Control characters go, whitespace folds, secrets are redacted, length is capped."""
    context = build_context(
        ["alert MemoryLeak\nfiring\x00 since 12:01Z", "key sk-live-ABCDEF123456", "x" * 500],
        limit=120,
        secrets=["hunter2-secret"],
    )
    assert "\n" not in context and "\x00" not in context
    assert "sk-live-ABCDEF123456" not in context
    assert len(context) <= 120
    assert context.startswith("alert MemoryLeak firing since 12:01Z")
    assert one_line("a\u2028b", 10) == "a b"


@pytest.mark.parametrize(
    ("header", "expected"),
    [("5", 5.0), (None, None), ("soon", None), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    """Retry-After in seconds or as a past HTTP date; garbage is ignored."""
    assert parse_retry_after(header) == expected


async def test_health(httpx_mock: HTTPXMock, client: GatewayClient) -> None:
    """/health healthy, unhealthy, broken and unreachable are all reported, never raised."""
    httpx_mock.add_response(url=f"{URL}/health", json={"status": "healthy", "version": "1.0.0"})
    httpx_mock.add_response(url=f"{URL}/health", json={"status": "unhealthy"})
    httpx_mock.add_response(url=f"{URL}/health", status_code=500)
    httpx_mock.add_exception(httpx.ConnectError("refused"), url=f"{URL}/health")
    results = [await client.health() for _ in range(4)]
    assert [h.healthy for h in results] == [True, False, False, False]
    assert results[0].version == "1.0.0"
    assert results[1].reason == "status=unhealthy"
    assert "HTTP 500" in results[2].reason
    assert "unreachable" in results[3].reason
