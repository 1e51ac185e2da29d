"""AI Command Gateway client: send one recovery intent, and never twice when it may have run.

The deployed gateway ignores ``Idempotency-Key``, runs requests one at a time and finishes
a request whose client gave up, so a second send of a restart is a second restart. What
is retried (exponential backoff with full jitter, ``Retry-After`` honoured, within
``max_attempts`` and an overall ``deadline_seconds``):

- anything that never reached the gateway: connection refused, DNS failure, connect
  timeout, HTTP 429 and 502/503/504 (a proxy answering for a gateway it cannot reach);
- ``EXECUTION_ERROR``: the gateway could not reach the docker host, nothing ran;
- ``LLM_GENERATION_FAILED`` once at most: the gateway's model failed, or wrote a command
  the gateway's own check refused, which would most likely happen again;
- for read-only actions only, anything whose outcome is unknown.

For a mutating action (restart, start, stop) an answer that leaves the outcome unknown is
final: a read timeout or the whole-request deadline, a connection lost after sending,
HTTP 500, ``INTERNAL_ERROR``, an unreadable or oversized answer. The result is
``unknown`` and verification decides. Final at once: 401/403, 422 (a bug on our side,
logged loudly), other 4xx, ``VALIDATION_ERROR``.

Connections are not kept alive: a request written on a connection the gateway had
already closed would fail in a way that cannot be told apart from a lost answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
)

from agent.clients.http import AnswerTooLarge, Peer, decode_json, exchange
from agent.clients.retrying import log_before_sleep, parse_retry_after, retry_wait
from agent.config import GatewayOptions
from agent.errors import (
    GatewayError,
    GatewayOutcomeUnknown,
    GatewayPermanentError,
    GatewayTransientError,
)
from agent.gateway.request import GatewayRequest
from agent.gateway.response import (
    EXECUTE_PATH,
    GatewayResult,
    Outcome,
    Reading,
    generation_from_openapi,
    read_body,
)
from agent.logs import get_logger
from agent.metrics import AgentMetrics
from agent.text import clip

log = get_logger("agent.gateway")

Sleep = Callable[[float], Awaitable[None]]
#: Says why a request is sent (remediation, diagnosis); gateways ignore extra headers.
PURPOSE_HEADER = "X-Devops-Agent-Purpose"


@dataclass(frozen=True)
class GatewayHealth:
    """The gateway's /health answer."""

    healthy: bool
    reason: str
    version: str | None = None


@dataclass(frozen=True)
class GatewayProbe:
    """What ``gateway-check`` learned without running anything: health, the answer
    generation, whether our token is accepted, and the one problem that makes the agent
    unable to use this gateway (None when there is none)."""

    health: GatewayHealth
    generation: int | None
    generation_note: str
    token: str
    problem: str | None


class _Answered(GatewayError):
    """A 200 answer that is not a success; keeps the reading for the final result."""

    def __init__(self, reading: Reading) -> None:
        super().__init__(f"gateway status {reading.status}: {reading.error or 'no details'}")
        self.reading = reading


class _TransientAnswer(_Answered, GatewayTransientError):
    """EXECUTION_ERROR: nothing ran this time."""


class _RefusedAnswer(_Answered, GatewayTransientError):
    """LLM_GENERATION_FAILED: retried once at most."""


class _RejectedAnswer(_Answered, GatewayPermanentError):
    """VALIDATION_ERROR: will never run."""


class _UnknownAnswer(_Answered, GatewayOutcomeUnknown):
    """INTERNAL_ERROR or an unreadable answer: it may have run."""


_RAISE_FOR: dict[str, type[_Answered]] = {
    "transient": _TransientAnswer,
    "refused": _RefusedAnswer,
    "rejected": _RejectedAnswer,
    "unknown": _UnknownAnswer,
}


def build_http_client(
    url: str,
    timeout: float,
    token: str | None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """The one ``httpx.AsyncClient`` for the gateway, created at start-up (``transport``:
    a stand-in that answers instead of the network, as ``devops-agent eval`` uses)."""
    headers = {"User-Agent": "devops-agent", "Accept-Encoding": "identity"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.AsyncClient(
        base_url=url,
        timeout=httpx.Timeout(timeout, connect=min(10.0, timeout)),
        headers=headers,
        limits=httpx.Limits(max_keepalive_connections=0),
        transport=transport,
    )


class GatewayClient:
    """Sends recovery intents; raises nothing for gateway trouble, returns a GatewayResult."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        options: GatewayOptions,
        *,
        timeout: float,
        metrics: AgentMetrics | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._http = http
        self._options = options
        self._timeout = timeout
        self._metrics = metrics
        self._sleep = sleep
        self.peer = Peer.of(
            "gateway",
            str(http.base_url),
            timeout=timeout,
            timeout_setting="AI_COMMAND_GATEWAY_TIMEOUT",
            max_bytes=options.max_answer_bytes,
            size_setting="gateway.max_answer_bytes",
        )

    async def execute(self, request: GatewayRequest) -> GatewayResult:
        """Post the intent, retrying only what is safe to retry; never raises."""
        started = time.monotonic()
        attempts = 0

        async def attempt() -> Reading:
            nonlocal attempts
            attempts += 1
            return await self._attempt(request, attempts)

        try:
            reading: Reading = await self._retrying(request.mutating)(attempt)
        except _Answered as exc:
            return _finish(request, _OUTCOME_FOR[type(exc)], attempts, started, reading=exc.reading)
        except GatewayError as exc:
            outcome, status = _outcome_of(exc)
            return _finish(request, outcome, attempts, started, status=status, message=str(exc))
        done: Outcome = "succeeded" if reading.verdict == "succeeded" else "failed"
        return _finish(request, done, attempts, started, reading=reading)

    async def health(self) -> GatewayHealth:
        """Ask GET /health; never raises."""
        try:
            answer = await exchange(
                self._http,
                "GET",
                "/health",
                deadline=self._timeout,
                max_bytes=self._options.max_answer_bytes,
            )
        except (httpx.HTTPError, TimeoutError, AnswerTooLarge) as exc:
            return GatewayHealth(False, self.peer.cause(exc))
        if answer.status_code != 200:
            return GatewayHealth(False, f"/health answered HTTP {answer.status_code}")
        body = _json_object(answer.content)
        if body is None:
            return GatewayHealth(False, "/health answered something other than a JSON object")
        status = body.get("status")
        version = body.get("version")
        shown = clip(version, 50) if isinstance(version, str) else None
        return GatewayHealth(status == "healthy", f"status={clip(str(status), 100)}", shown)

    async def probe(self, *, token_configured: bool) -> GatewayProbe:
        """Check the URL, the token and the answer shape without running a command.

        The token is tested with an empty JSON body: a FastAPI gateway refuses it with 422
        before its handler runs, and a gateway that checks tokens answers 401/403 first.
        """
        health = await self.health()
        if not health.healthy and not health.reason.startswith("status="):
            return GatewayProbe(health, None, "-", "-", f"URL: {health.reason}")
        generation, note = await self._generation()
        token, problem = await self._token(token_configured)
        if problem is None and not health.healthy:
            problem = f"the gateway reports itself unhealthy ({health.reason})"
        if problem is None and note.startswith("the API has no"):
            problem = f"shape: {note}"
        return GatewayProbe(health, generation, note, token, problem)

    async def _get_json(self, path: str) -> tuple[int, object]:
        answer = await exchange(
            self._http,
            "GET",
            path,
            deadline=self._timeout,
            max_bytes=self._options.max_answer_bytes,
        )
        try:
            return answer.status_code, decode_json(answer.content)
        except ValueError:
            return answer.status_code, None

    async def _generation(self) -> tuple[int | None, str]:
        try:
            status, doc = await self._get_json("/openapi.json")
        except (httpx.HTTPError, TimeoutError, AnswerTooLarge) as exc:
            return None, f"unknown: /openapi.json could not be read ({type(exc).__name__})"
        if status != 200:
            return None, f"unknown: no OpenAPI document (HTTP {status}); both generations are read"
        return generation_from_openapi(doc)

    async def _empty_post(self, http: httpx.AsyncClient) -> int:
        answer = await exchange(
            http,
            "POST",
            EXECUTE_PATH,
            deadline=self._timeout,
            max_bytes=self._options.max_answer_bytes,
            json={},
        )
        return answer.status_code

    async def _token(self, token_configured: bool) -> tuple[str, str | None]:
        try:
            code = await self._empty_post(self._http)
        except (httpx.HTTPError, TimeoutError, AnswerTooLarge) as exc:
            return "-", f"URL: POST {EXECUTE_PATH} failed: {type(exc).__name__}"
        if code in (401, 403) and token_configured:
            return "rejected", f"token: the gateway refused AI_COMMAND_GATEWAY_TOKEN (HTTP {code})"
        if code in (401, 403):
            return (
                "missing",
                f"token: the gateway requires one (HTTP {code}); set AI_COMMAND_GATEWAY_TOKEN",
            )
        if code == 404:
            return "-", f"URL: no {EXECUTE_PATH} at {self._http.base_url} (HTTP 404)"
        if code != 422:
            return (
                "-",
                f"shape: an empty request got HTTP {code}, not the 422 of the gateway's validation",
            )
        if not token_configured:
            return "not configured, not required", None
        async with httpx.AsyncClient(base_url=self._http.base_url, timeout=self._timeout) as bare:
            try:
                bare_code = await self._empty_post(bare)
            except (httpx.HTTPError, TimeoutError, AnswerTooLarge):
                bare_code = 0
        if bare_code in (401, 403):
            return "accepted (the gateway requires one)", None
        return "sent, but this gateway does not check tokens", None

    def _retrying(self, mutating: bool) -> AsyncRetrying:
        opts = self._options
        refusals = 0

        def worth_retrying(exc: BaseException) -> bool:
            nonlocal refusals
            if isinstance(exc, _RefusedAnswer):
                refusals += 1
                return refusals <= 1
            if isinstance(exc, GatewayOutcomeUnknown):
                return not mutating
            return isinstance(exc, GatewayTransientError)

        return AsyncRetrying(
            sleep=self._sleep,
            stop=stop_after_attempt(opts.max_attempts) | stop_before_delay(opts.deadline_seconds),
            wait=retry_wait(
                opts.backoff_initial_seconds,
                opts.backoff_max_seconds,
                retry_after_cap=opts.deadline_seconds,
            ),
            retry=retry_if_exception(worth_retrying),
            before_sleep=log_before_sleep(log, "gateway_retry_scheduled"),
            reraise=True,
        )

    async def _attempt(self, request: GatewayRequest, number: int) -> Reading:
        try:
            answer = await exchange(
                self._http,
                "POST",
                EXECUTE_PATH,
                deadline=self._timeout,
                max_bytes=self._options.max_answer_bytes,
                json=request.body(),
                headers={
                    "Idempotency-Key": request.idempotency_key,
                    PURPOSE_HEADER: request.purpose,
                },
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            self._count("unreachable")
            raise GatewayTransientError(self.peer.failure(exc)) from exc
        except (TimeoutError, httpx.TimeoutException) as exc:
            self._count("no_answer")
            raise GatewayOutcomeUnknown(
                f"{self.peer}: no answer within {self._timeout:g}s "
                f"({self.peer.timeout_setting}); the command may have run"
            ) from exc
        except (httpx.HTTPError, AnswerTooLarge) as exc:
            self._count("lost_answer")
            raise GatewayOutcomeUnknown(
                f"{self.peer.failure(exc)}; the command may have run"
            ) from exc
        self._check_status(answer.status_code, answer.headers, answer.text)
        body = _json_object(answer.content)
        if body is None:
            reading = Reading(
                verdict="unknown",
                status="UNREADABLE",
                error_message=f"HTTP 200 without a JSON object: {clip(answer.text, 200)}",
            )
        else:
            reading = read_body(body, self._options.output_max_chars)
        self._count(reading.status.lower())
        log.info(
            "gateway_attempt",
            attempt=number,
            target=request.target,
            action=request.action,
            status=reading.status,
            request_id=reading.request_id,
            error_code=reading.error_code,
        )
        if reading.verdict in _RAISE_FOR:
            raise _RAISE_FOR[reading.verdict](reading)
        return reading

    def _check_status(self, code: int, headers: httpx.Headers, text: str) -> None:
        if code == 200:
            return
        self._count(f"http_{code}")
        retry_after = parse_retry_after(headers.get("Retry-After"))
        if code in (429, 502, 503, 504):
            raise GatewayTransientError(f"HTTP {code}", retry_after=retry_after)
        if code in (401, 403):
            raise GatewayPermanentError(f"HTTP {code}: the gateway refused our token")
        if code == 422:
            detail = clip(text, 500)
            log.error("gateway_request_malformed", status=code, detail=detail)
            raise GatewayPermanentError(
                f"HTTP 422: the gateway says our request is malformed: {detail}"
            )
        if 400 <= code < 500:
            raise GatewayPermanentError(f"HTTP {code}: {clip(text, 200)}")
        raise GatewayOutcomeUnknown(f"HTTP {code}; the command may have run")

    def _count(self, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.gateway_requests.labels(outcome=outcome).inc()


def _outcome_of(exc: GatewayError) -> tuple[Outcome, str]:
    if isinstance(exc, GatewayOutcomeUnknown):
        return "unknown", "NO_ANSWER"
    if isinstance(exc, GatewayTransientError):
        return "gave_up", "UNREACHABLE"
    return "rejected", "REJECTED"


_OUTCOME_FOR: dict[type[_Answered], Outcome] = {
    _TransientAnswer: "gave_up",
    _RefusedAnswer: "rejected",
    _RejectedAnswer: "rejected",
    _UnknownAnswer: "unknown",
}


def _json_object(content: bytes) -> dict[str, object] | None:
    try:
        body = decode_json(content)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _finish(
    request: GatewayRequest,
    outcome: Outcome,
    attempts: int,
    started: float,
    *,
    reading: Reading | None = None,
    status: str = "",
    message: str | None = None,
) -> GatewayResult:
    result = GatewayResult(
        outcome=outcome,
        status=reading.status if reading else status,
        attempts=attempts,
        elapsed_seconds=round(time.monotonic() - started, 3),
        idempotency_key=request.idempotency_key,
        command=reading.command if reading else None,
        exit_code=reading.exit_code if reading else None,
        output=reading.output if reading else "",
        request_id=reading.request_id if reading else None,
        error_code=reading.error_code if reading else None,
        error_message=reading.error_message if reading else message,
    )
    log.info(
        "gateway_request_finished",
        target=request.target,
        action=request.action,
        outcome=outcome,
        status=result.status,
        attempts=attempts,
        request_id=result.request_id,
        error_code=result.error_code,
        error_message=result.error_message,
    )
    return result
