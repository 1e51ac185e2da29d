"""Prometheus HTTP API client.

Every call is one bounded exchange (``clients/http.py``): a deadline for the whole request
however slowly the answer arrives, and a cap on the answer's size checked while it is
read. PromQL queries also carry Prometheus' own ``timeout`` parameter, so an expensive
query (a model can write one) is stopped on the server, not only abandoned by the agent.
Queries are POSTed as forms: a long expression never meets a URL length limit.

Failures are ours to classify: unreachable, timed out, 5xx and 503 "overloaded" are
transient (the next sweep asks again); a bad query, another 4xx, a malformed or
oversized answer are permanent.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx

from agent.clients.http import AnswerTooLarge, Peer, decode_json, exchange
from agent.errors import PrometheusPermanentError, PrometheusTransientError
from agent.text import clip


def build_http_client(
    url: str, *, timeout: float, bearer_token: str | None, verify: bool | str
) -> httpx.AsyncClient:
    """The one ``httpx.AsyncClient`` for Prometheus, created at start-up."""
    headers = {"User-Agent": "devops-agent", "Accept-Encoding": "identity"}
    if bearer_token:
        headers["Authorization"] = f"Bearer {bearer_token}"
    return httpx.AsyncClient(
        base_url=url.rstrip("/"),
        headers=headers,
        timeout=httpx.Timeout(timeout),
        verify=verify,
    )


class PrometheusClient:
    """Asks one Prometheus server; raises PrometheusError subclasses only."""

    def __init__(self, http: httpx.AsyncClient, *, timeout: float, max_bytes: int) -> None:
        self._http = http
        self._timeout = timeout
        self._max_bytes = max_bytes
        self.peer = Peer.of(
            "Prometheus",
            str(http.base_url),
            timeout=timeout,
            timeout_setting="prometheus.query_timeout_seconds",
            max_bytes=max_bytes,
            size_setting="prometheus.max_answer_bytes",
        )

    @property
    def url(self) -> str:
        """The server's base URL."""
        return str(self._http.base_url).rstrip("/")

    async def query(self, expr: str, *, at: datetime | None = None) -> list[Any]:
        """An instant query; the ``result`` list of the answer."""
        form = {"query": expr, "timeout": f"{self._timeout:g}s"}
        if at is not None:
            form["time"] = f"{at.timestamp():.3f}"
        return _result(await self._call("POST", "/api/v1/query", data=form))

    async def query_range(
        self, expr: str, *, start: datetime, end: datetime, step: str
    ) -> list[Any]:
        """A range query; the ``result`` list (matrix) of the answer."""
        form = {
            "query": expr,
            "start": f"{start.timestamp():.3f}",
            "end": f"{end.timestamp():.3f}",
            "step": step,
            "timeout": f"{self._timeout:g}s",
        }
        return _result(await self._call("POST", "/api/v1/query_range", data=form))

    async def alerts_payload(self) -> object:
        """The decoded ``/api/v1/alerts`` envelope."""
        return await self._call("GET", "/api/v1/alerts")

    async def rules_payload(self, rule_type: str = "alert") -> object:
        """The decoded ``/api/v1/rules`` envelope."""
        return await self._call("GET", "/api/v1/rules", params={"type": rule_type})

    async def healthy(self) -> bool:
        """Whether ``/-/healthy`` answers 200; False on any failure."""
        try:
            answer = await exchange(
                self._http, "GET", "/-/healthy", deadline=self._timeout, max_bytes=65536
            )
        except (httpx.HTTPError, TimeoutError, AnswerTooLarge):
            return False
        return answer.status_code == 200

    async def version(self) -> str:
        """The server's version from ``/api/v1/status/buildinfo``; raises PrometheusError."""
        body = await self._call("GET", "/api/v1/status/buildinfo")
        data = body.get("data") if isinstance(body, dict) else None
        version = data.get("version") if isinstance(data, dict) else None
        return clip(version, 50) if isinstance(version, str) else "unknown"

    async def _call(self, method: str, path: str, **kwargs: Any) -> object:
        try:
            answer = await exchange(
                self._http,
                method,
                path,
                deadline=self._timeout,
                max_bytes=self._max_bytes,
                **kwargs,
            )
        except (TimeoutError, httpx.HTTPError) as exc:
            raise PrometheusTransientError(self.peer.failure(exc, path)) from exc
        except AnswerTooLarge as exc:
            raise PrometheusPermanentError(self.peer.failure(exc, path)) from exc
        try:
            body = decode_json(answer.content)
        except ValueError:
            body = None
        where = f"{self.peer} ({path})"
        if answer.status_code >= 500 or answer.status_code == 429:
            raise PrometheusTransientError(
                f"{where} answered HTTP {answer.status_code}{_error_of(body)}"
            )
        if answer.status_code != 200:
            raise PrometheusPermanentError(
                f"{where} answered HTTP {answer.status_code}{_error_of(body)}"
            )
        if body is None:
            raise PrometheusPermanentError(f"{where} answered malformed JSON")
        return body


def _error_of(body: object) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return f": {clip(body['error'], 300)}"
    return ""


def _result(body: object) -> list[Any]:
    data = body.get("data") if isinstance(body, dict) else None
    result = data.get("result") if isinstance(data, dict) else None
    if not isinstance(body, dict) or body.get("status") != "success":
        raise PrometheusPermanentError(f"Prometheus query failed{_error_of(body)}")
    if not isinstance(result, list):
        raise PrometheusPermanentError("Prometheus answer has no data.result list")
    return result
