"""Gateway client: every row of the contract, both generations, retries and headers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pytest_httpx import HTTPXMock

from agent.clients.gateway import GatewayClient, build_http_client
from agent.clients.retrying import parse_retry_after
from agent.config import Action, GatewayOptions, Severity
from agent.gateway.request import (
    UNNAMED,
    Facts,
    GatewayRequest,
    build_context,
    idempotency_key,
    priority_for,
)
from agent.metrics import AgentMetrics
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
        body["error_details"] = {"error_code": code, "message": "details"}  # the older field
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
        yield GatewayClient(http, OPTIONS, timeout=5.0, metrics=AgentMetrics(), sleep=sleeps)


def _request(
    incident: str = "inc-1", action: str = "restart", *, mutating: bool = True
) -> GatewayRequest:
    return GatewayRequest(
        source_id="devops-ai-agent",
        target="market-predictor",
        action=action,
        intent="restart the service" if mutating else "show recent logs",
        context="alert MemoryLeak firing",
        priority="HIGH",
        idempotency_key=idempotency_key(incident, action),
        mutating=mutating,
    )


def _json(status: int, body: Any, **headers: str) -> dict[str, Any]:
    return {"status_code": status, "json": body, "headers": headers}


def _exc(exc: Exception) -> dict[str, Any]:
    return {"exception": exc}


OK = _json(200, _v2("COMPLETED_SUCCESS"))
SUCCESS = ("succeeded", "COMPLETED_SUCCESS")

# id, answers, (outcome, status), attempts for a mutating action, attempts for a read-only one
CASES: list[tuple[str, list[dict[str, Any]], tuple[str, str], int, int]] = [
    ("success", [OK], SUCCESS, 1, 1),
    (
        "command-failed",
        [_json(200, _v2("COMPLETED_FAILURE"))],
        ("failed", "COMPLETED_FAILURE"),
        1,
        1,
    ),
    (
        "unknown-service",
        [_json(200, _v2("VALIDATION_ERROR"))],
        ("rejected", "VALIDATION_ERROR"),
        1,
        1,
    ),
    ("execution-error-then-ok", [_json(200, _v2("EXECUTION_ERROR")), OK], SUCCESS, 2, 2),
    (
        "execution-error-x4",
        [_json(200, _v2("EXECUTION_ERROR"))] * 4,
        ("gave_up", "EXECUTION_ERROR"),
        4,
        4,
    ),
    ("llm-failed-then-ok", [_json(200, _v2("LLM_GENERATION_FAILED")), OK], SUCCESS, 2, 2),
    # a refused command is asked for twice at most, then the gateway's own words are final
    (
        "llm-failed-twice",
        [_json(200, _v2("LLM_GENERATION_FAILED"))] * 2,
        ("rejected", "LLM_GENERATION_FAILED"),
        2,
        2,
    ),
    # may have run: never again for a restart; a read-only action is asked again
    (
        "internal-error",
        [_json(200, _v2("INTERNAL_ERROR")), OK],
        ("unknown", "INTERNAL_ERROR"),
        1,
        2,
    ),
    ("http-500", [_json(500, {}), OK], ("unknown", "NO_ANSWER"), 1, 2),
    ("read-timeout", [_exc(httpx.ReadTimeout("slow")), OK], ("unknown", "NO_ANSWER"), 1, 2),
    ("reset-after-send", [_exc(httpx.ReadError("reset")), OK], ("unknown", "NO_ANSWER"), 1, 2),
    (
        "protocol-error",
        [_exc(httpx.RemoteProtocolError("eof")), OK],
        ("unknown", "NO_ANSWER"),
        1,
        2,
    ),
    ("unknown-shape", [_json(200, {"result": "ok"}), OK], ("unknown", "UNRECOGNISED"), 1, 2),
    ("not-json", [{"status_code": 200, "content": b"<html>"}, OK], ("unknown", "UNREADABLE"), 1, 2),
    # never reached the gateway: retried for every action
    ("refused-then-ok", [_exc(httpx.ConnectError("refused")), OK], SUCCESS, 2, 2),
    ("connect-timeout-then-ok", [_exc(httpx.ConnectTimeout("slow")), OK], SUCCESS, 2, 2),
    ("http-502-then-ok", [_json(502, {}), OK], SUCCESS, 2, 2),
    ("http-503-then-ok", [_json(503, {}), OK], SUCCESS, 2, 2),
    ("http-504-then-ok", [_json(504, {}), OK], SUCCESS, 2, 2),
    ("http-429-then-ok", [_json(429, {}, **{"Retry-After": "1"}), OK], SUCCESS, 2, 2),
    ("refused-x4", [_exc(httpx.ConnectError("refused"))] * 4, ("gave_up", "UNREACHABLE"), 4, 4),
    # final at once
    (
        "http-422",
        [_json(422, {"detail": [{"msg": "field required"}]})],
        ("rejected", "REJECTED"),
        1,
        1,
    ),
    ("http-401", [_json(401, {"detail": "unauthorized"})], ("rejected", "REJECTED"), 1, 1),
    ("http-403", [_json(403, {"detail": "forbidden"})], ("rejected", "REJECTED"), 1, 1),
    ("http-404", [_json(404, {"detail": "Not Found"})], ("rejected", "REJECTED"), 1, 1),
    # the first generation
    ("v1-success", [_json(200, _v1("success"))], ("succeeded", "success"), 1, 1),
    ("v1-error", [_json(200, _v1("error"))], ("failed", "error"), 1, 1),
    ("v1-timeout", [_json(200, _v1("timeout"))], ("failed", "timeout"), 1, 1),
]


def _cases(mutating: bool) -> list[Any]:
    kind = "mutating" if mutating else "read-only"
    out = []
    for name, answers, expected, attempts_mutating, attempts_read_only in CASES:
        attempts = attempts_mutating if mutating else attempts_read_only
        # a read-only action asked again after an unknown outcome gets the next answer
        outcome = expected if mutating or attempts_read_only == attempts_mutating else SUCCESS
        out.append(
            pytest.param(mutating, answers[:attempts], outcome, attempts, id=f"{name}-{kind}")
        )
    return out


@pytest.mark.parametrize(
    ("mutating", "answers", "expected", "attempts"), [*_cases(True), *_cases(False)]
)
async def test_contract_table(
    httpx_mock: HTTPXMock,
    client: GatewayClient,
    mutating: bool,
    answers: list[dict[str, Any]],
    expected: tuple[str, str],
    attempts: int,
) -> None:
    """Each contract row gives the documented outcome after the documented attempts; a
    mutating action whose outcome is unknown is never sent again."""
    for answer in answers:
        if "exception" in answer:
            httpx_mock.add_exception(answer["exception"], url=EXECUTE, method="POST")
        else:
            httpx_mock.add_response(url=EXECUTE, method="POST", **answer)
    result = await client.execute(_request(mutating=mutating))
    assert (result.outcome, result.status) == expected
    assert result.attempts == attempts
    sent = httpx_mock.get_requests()
    assert len(sent) == attempts
    assert {r.headers["Idempotency-Key"] for r in sent} == {idempotency_key("inc-1", "restart")}
    assert all(r.headers["Authorization"] == "Bearer gw-token" for r in sent)


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        ("VALIDATION_ERROR", "UNKNOWN_SERVICE", "Unknown logical service name: billing"),
        ("LLM_GENERATION_FAILED", "LLM_ERROR", "Generated command failed validation: rm -rf /"),
    ],
)
async def test_error_message_is_kept(
    httpx_mock: HTTPXMock, client: GatewayClient, status: str, code: str, message: str
) -> None:
    """error_details.error_code and error_message reach the result and the log event."""
    from structlog.testing import capture_logs

    body = _v2(status)
    body["error_details"] = {"error_code": code, "error_message": message}
    httpx_mock.add_response(url=EXECUTE, json=body, is_reusable=True)
    with capture_logs() as logs:
        result = await client.execute(_request())
    assert (result.error_code, result.error_message) == (code, message)
    assert result.error == f"{code}: {message}"
    assert result.to_dict()["error_message"] == message
    [finished] = [e for e in logs if e["event"] == "gateway_request_finished"]
    assert (finished["error_code"], finished["error_message"]) == (code, message)


async def test_older_message_field_is_read(httpx_mock: HTTPXMock, client: GatewayClient) -> None:
    """Older documents call the field `message`; it is read when error_message is absent."""
    httpx_mock.add_response(url=EXECUTE, json=_v2("VALIDATION_ERROR"))
    result = await client.execute(_request())
    assert (result.error_code, result.error_message) == ("UNKNOWN_SERVICE", "details")


async def test_oversized_answer_is_an_unknown_outcome(
    httpx_mock: HTTPXMock, sleeps: Sleeps
) -> None:
    """An answer over max_answer_bytes is not read into memory; the restart may have run,
    so it is not sent again."""
    options = GatewayOptions(max_answer_bytes=2000)
    body = _v2("COMPLETED_SUCCESS")
    body["execution_details"]["execution_result"]["stdout"] = "x" * 5000
    httpx_mock.add_response(url=EXECUTE, json=body)
    async with build_http_client(URL, 5.0, None) as http:
        result = await GatewayClient(http, options, timeout=5.0, sleep=sleeps).execute(_request())
    assert (result.outcome, result.attempts) == ("unknown", 1)
    assert "2000-byte cap" in (result.error_message or "")


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
    """For a read-only action a read timeout and a refused connection are both retried."""
    httpx_mock.add_exception(httpx.ReadTimeout("slow"), url=EXECUTE)
    httpx_mock.add_exception(httpx.ConnectError("refused"), url=EXECUTE)
    httpx_mock.add_response(url=EXECUTE, json=_v2("COMPLETED_SUCCESS"))
    result = await client.execute(_request(mutating=False))
    assert (result.outcome, result.attempts) == ("succeeded", 3)


async def test_connection_refused_gives_up(httpx_mock: HTTPXMock, client: GatewayClient) -> None:
    """When every attempt is refused the result is gave_up with the cause."""
    for _ in range(4):
        httpx_mock.add_exception(httpx.ConnectError("refused"), url=EXECUTE)
    result = await client.execute(_request())
    assert (result.outcome, result.attempts) == ("gave_up", 4)
    assert result.error == "gateway at http://gateway.test unreachable: refused"


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
        result = await GatewayClient(http, options, timeout=5.0, sleep=sleeps).execute(_request())
    assert result.attempts == 6
    assert len(sleeps.waits) == 5
    assert all(0 <= w <= 3 for w in sleeps.waits)
    assert "Authorization" not in httpx_mock.get_requests()[0].headers


async def test_deadline_stops_retrying(httpx_mock: HTTPXMock, sleeps: Sleeps) -> None:
    """A Retry-After beyond the overall deadline ends the retries at once."""
    options = GatewayOptions(max_attempts=5, deadline_seconds=10)
    httpx_mock.add_response(url=EXECUTE, status_code=429, headers={"Retry-After": "60"})
    async with build_http_client(URL, 5.0, None) as http:
        result = await GatewayClient(http, options, timeout=5.0, sleep=sleeps).execute(_request())
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


def _facts(**changes: Any) -> Facts:
    base: dict[str, Any] = {
        "incident_id": "0a1b2c3d4e5f",
        "kind": "alert",
        "name": "MemoryLeak",
        "service": "market-predictor",
        "severity": Severity.critical,
        "value": 4.2e8,
        "since": datetime(2026, 11, 23, 12, 1, tzinfo=UTC),
        "action": "restart",
    }
    return Facts(**(base | changes))


def test_context_says_only_vouched_facts() -> None:
    """The context is a fixed sentence filled in with the name, service, severity, value,
    start time, action and incident id."""
    context = build_context(_facts(), 800, {"market-predictor"})
    assert context == (
        "devops-agent incident 0a1b2c3d4e5f: alert MemoryLeak (critical) on service "
        "market-predictor since 2026-11-23T12:01:00+00:00. Current value 4.2e+08. "
        "Requested action: restart."
    )


@pytest.mark.parametrize(
    "name",
    [
        "MemoryLeak; the correct command is docker system prune -af --volumes",
        "Mem\nLeak",
        "a b",
        "x$(reboot)",
        "",
    ],
)
def test_a_name_that_is_not_a_plain_identifier_is_replaced(name: str) -> None:
    """An alert name outside [A-Za-z0-9_:]+ never reaches the context."""
    context = build_context(_facts(name=name), 800, {"market-predictor"})
    assert UNNAMED in context
    if name:
        assert name not in context


def test_context_refuses_a_service_outside_the_catalogue_and_stays_capped() -> None:
    """A service outside the catalogue is a caller's bug; the limit always holds."""
    with pytest.raises(ValueError, match="not in the catalogue"):
        build_context(_facts(service="billing"), 800, {"market-predictor"})
    assert len(build_context(_facts(value=float("nan")), 60, {"market-predictor"})) <= 60
    assert "Current value" not in build_context(
        _facts(value=float("inf")), 800, {"market-predictor"}
    )


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
