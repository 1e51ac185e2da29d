"""AI Command Gateway client: post a recovery intent, retry what is transient, say what happened.

Retries follow the gateway's contract (README, "The AI Command Gateway"): transport failures, read
timeouts, HTTP 5xx, 429 (after its Retry-After) and the transient statuses
``EXECUTION_ERROR``, ``LLM_GENERATION_FAILED`` and ``INTERNAL_ERROR`` are retried with
exponential backoff and full jitter, within a maximum number of attempts and an overall
deadline. 4xx, ``VALIDATION_ERROR`` and any answer saying the command ran are final.
Every attempt carries the same ``Idempotency-Key`` so a gateway can recognise a repeat.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import httpx
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_before_delay,
)

from agent.clients.retrying import log_before_sleep, parse_retry_after, retry_wait
from agent.config import GatewayOptions
from agent.errors import GatewayPermanentError, GatewayTransientError
from agent.gateway.request import GatewayRequest
from agent.gateway.response import Reading, read_body
from agent.logs import get_logger
from agent.metrics import AgentMetrics

log = get_logger("agent.gateway")

Outcome = Literal["succeeded", "failed", "rejected", "gave_up"]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class GatewayResult:
    """What came of one recovery intent, all attempts included."""

    outcome: Outcome
    status: str
    attempts: int
    elapsed_seconds: float
    command: str | None = None
    exit_code: int | None = None
    output: str = ""
    request_id: str | None = None
    error: str | None = None
    idempotency_key: str = ""

    def to_dict(self) -> dict[str, object]:
        """A JSON-friendly view."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class GatewayHealth:
    """The gateway's /health answer."""

    healthy: bool
    reason: str
    version: str | None = None


class _TransientReading(GatewayTransientError):
    """A 200 answer whose status is transient; keeps the reading for the final result."""

    def __init__(self, reading: Reading) -> None:
        super().__init__(f"gateway status {reading.status}: {reading.error or 'no details'}")
        self.reading = reading


def build_http_client(url: str, timeout: float, token: str | None) -> httpx.AsyncClient:
    """The one ``httpx.AsyncClient`` for the gateway, created at start-up."""
    headers = {"User-Agent": "devops-agent"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(timeout), headers=headers)


class GatewayClient:
    """Sends recovery intents; raises nothing for gateway trouble, returns a GatewayResult."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        options: GatewayOptions,
        *,
        metrics: AgentMetrics | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._http = http
        self._options = options
        self._metrics = metrics
        self._sleep = sleep

    async def execute(self, request: GatewayRequest) -> GatewayResult:
        """Post the intent with retries; the result names the outcome and every detail."""
        started = time.monotonic()
        attempts = 0

        async def attempt() -> Reading:
            nonlocal attempts
            attempts += 1
            return await self._attempt(request, attempts)

        key = request.idempotency_key
        try:
            reading: Reading = await self._retrying()(attempt)
        except GatewayPermanentError as exc:
            return _finish("rejected", attempts, started, key, status="REJECTED", error=str(exc))
        except _TransientReading as exc:
            return _finish("gave_up", attempts, started, key, reading=exc.reading)
        except GatewayTransientError as exc:
            return _finish("gave_up", attempts, started, key, status="TRANSIENT", error=str(exc))
        outcome: Outcome = "succeeded" if reading.verdict == "succeeded" else "failed"
        return _finish(outcome, attempts, started, key, reading=reading)

    async def health(self) -> GatewayHealth:
        """Ask GET /health; never raises."""
        try:
            response = await self._http.get("/health")
        except httpx.HTTPError as exc:
            return GatewayHealth(False, f"unreachable: {type(exc).__name__}: {exc}")
        if response.status_code != 200:
            return GatewayHealth(False, f"/health answered HTTP {response.status_code}")
        try:
            body = response.json()
        except ValueError:
            return GatewayHealth(False, "/health answered malformed JSON")
        if not isinstance(body, dict):
            return GatewayHealth(False, "/health answered something other than an object")
        status = body.get("status")
        version = body.get("version") if isinstance(body.get("version"), str) else None
        return GatewayHealth(status == "healthy", f"status={status}", version)

    def _retrying(self) -> AsyncRetrying:
        opts = self._options
        return AsyncRetrying(
            sleep=self._sleep,
            stop=stop_after_attempt(opts.max_attempts) | stop_before_delay(opts.deadline_seconds),
            wait=retry_wait(
                opts.backoff_initial_seconds,
                opts.backoff_max_seconds,
                retry_after_cap=opts.deadline_seconds,
            ),
            retry=retry_if_exception_type(GatewayTransientError),
            before_sleep=log_before_sleep(log, "gateway_retry_scheduled"),
            reraise=True,
        )

    async def _attempt(self, request: GatewayRequest, number: int) -> Reading:
        try:
            response = await self._http.post(
                "/execute-docker-command",
                json=request.body(),
                headers={"Idempotency-Key": request.idempotency_key},
            )
        except httpx.TimeoutException as exc:
            self._count("timeout")
            raise GatewayTransientError(f"timeout: {type(exc).__name__}") from exc
        except httpx.TransportError as exc:
            self._count("transport_error")
            raise GatewayTransientError(f"connection failed: {type(exc).__name__}") from exc
        self._check_status(response)
        try:
            body = response.json()
        except ValueError:
            body = None
        reading = read_body(body, self._options.output_max_chars)
        self._count(reading.status.lower())
        log.info(
            "gateway_attempt",
            attempt=number,
            target=request.target,
            action=request.action,
            status=reading.status,
            request_id=reading.request_id,
        )
        if reading.verdict == "transient":
            raise _TransientReading(reading)
        if reading.verdict == "rejected":
            raise GatewayPermanentError(f"gateway rejected the request: {reading.error}")
        return reading

    def _check_status(self, response: httpx.Response) -> None:
        code = response.status_code
        if code == 429:
            self._count("http_429")
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise GatewayTransientError("HTTP 429 rate limited", retry_after=retry_after)
        if code >= 500:
            self._count("http_5xx")
            raise GatewayTransientError(f"HTTP {code}")
        if code in (401, 403):
            self._count(f"http_{code}")
            raise GatewayPermanentError(f"HTTP {code}: the gateway refused our token")
        if code == 422:
            self._count("http_422")
            detail = response.text[:500]
            log.error("gateway_request_malformed", status=code, detail=detail)
            raise GatewayPermanentError(
                f"HTTP 422: the gateway says our request is malformed: {detail}"
            )
        if code >= 400:
            self._count("http_4xx")
            raise GatewayPermanentError(f"HTTP {code}")

    def _count(self, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.gateway_requests.labels(outcome=outcome).inc()


def _finish(
    outcome: Outcome,
    attempts: int,
    started: float,
    key: str,
    *,
    reading: Reading | None = None,
    status: str = "",
    error: str | None = None,
) -> GatewayResult:
    result = GatewayResult(
        outcome=outcome,
        status=reading.status if reading else status,
        attempts=attempts,
        elapsed_seconds=round(time.monotonic() - started, 3),
        command=reading.command if reading else None,
        exit_code=reading.exit_code if reading else None,
        output=reading.output if reading else "",
        request_id=reading.request_id if reading else None,
        error=reading.error if reading else error,
        idempotency_key=key,
    )
    log.info(
        "gateway_request_finished",
        outcome=outcome,
        status=result.status,
        attempts=attempts,
        request_id=result.request_id,
        error=result.error,
    )
    return result
