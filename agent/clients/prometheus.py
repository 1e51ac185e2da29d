"""Prometheus HTTP API client.

PromQL goes through ``prometheus-api-client`` (``PrometheusConnect``), whose calls block,
so each runs in a worker thread to keep the event loop free. The endpoints that library
does not cover (``/api/v1/alerts``, ``/api/v1/rules``, ``/-/healthy``) use the same
``requests.Session``: one connection pool, one set of auth and TLS settings per upstream.
The library's own urllib3 retries are switched off: a failed sweep is retried by the
next sweep, not by stalling this one.
"""

from __future__ import annotations

import asyncio
import json
import re
from datetime import datetime
from typing import Any

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from agent.errors import PrometheusError, PrometheusPermanentError, PrometheusTransientError, brief

_STATUS = re.compile(r"HTTP Status Code (\d{3})")


class PrometheusClient:
    """Asks one Prometheus server; raises PrometheusError subclasses only."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        bearer_token: str | None = None,
        verify: bool | str = True,
    ) -> None:
        self.url = url.rstrip("/")
        self._timeout = timeout
        self._session = requests.Session()
        self._session.verify = verify
        if bearer_token:
            self._session.headers["Authorization"] = f"Bearer {bearer_token}"
        self._connect = PrometheusConnect(
            url=self.url, session=self._session, retry=Retry(total=0), timeout=int(timeout) or 1
        )

    def close(self) -> None:
        """Release the connection pool."""
        self._session.close()

    async def query(self, expr: str, *, at: datetime | None = None) -> list[Any]:
        """An instant query; the ``result`` list of the answer."""
        params = {"timeout": f"{self._timeout:g}s"}
        if at is not None:
            params["time"] = f"{at.timestamp():.3f}"
        return await self._call(self._connect.custom_query, expr, params=params)

    async def query_range(
        self, expr: str, *, start: datetime, end: datetime, step: str
    ) -> list[Any]:
        """A range query; the ``result`` list (matrix) of the answer."""
        return await self._call(
            self._connect.custom_query_range, expr, start_time=start, end_time=end, step=step
        )

    async def alerts_payload(self) -> object:
        """The decoded ``/api/v1/alerts`` envelope."""
        return await self._get_json("/api/v1/alerts")

    async def rules_payload(self, rule_type: str = "alert") -> object:
        """The decoded ``/api/v1/rules`` envelope."""
        return await self._get_json("/api/v1/rules", params={"type": rule_type})

    async def healthy(self) -> bool:
        """Whether ``/-/healthy`` answers 200; False on any failure."""
        try:
            response = await asyncio.to_thread(
                self._session.get, f"{self.url}/-/healthy", timeout=self._timeout
            )
        except requests.RequestException:
            return False
        return response.status_code == 200

    async def _call(self, func: Any, expr: str, **kwargs: Any) -> list[Any]:
        try:
            result = await asyncio.to_thread(func, expr, **kwargs)
        except PrometheusApiClientException as exc:
            raise _status_error(exc) from exc
        except (requests.Timeout, requests.ConnectionError) as exc:
            raise PrometheusTransientError(f"Prometheus unreachable: {brief(exc)}") from exc
        except requests.RequestException as exc:  # includes requests' JSONDecodeError
            raise PrometheusPermanentError(f"Prometheus answer unreadable: {brief(exc)}") from exc
        except (KeyError, TypeError) as exc:
            raise PrometheusPermanentError("Prometheus answer has no data.result") from exc
        if not isinstance(result, list):
            raise PrometheusPermanentError("Prometheus data.result is not a list")
        return result

    async def _get_json(self, path: str, params: dict[str, str] | None = None) -> object:
        try:
            response = await asyncio.to_thread(
                self._session.get, f"{self.url}{path}", params=params, timeout=self._timeout
            )
        except (requests.Timeout, requests.ConnectionError) as exc:
            raise PrometheusTransientError(f"Prometheus unreachable: {brief(exc)}") from exc
        except requests.RequestException as exc:
            raise PrometheusPermanentError(f"Prometheus request failed: {brief(exc)}") from exc
        if response.status_code >= 500:
            raise PrometheusTransientError(f"Prometheus {path} answered {response.status_code}")
        if response.status_code != 200:
            raise PrometheusPermanentError(f"Prometheus {path} answered {response.status_code}")
        try:
            return json.loads(response.content)
        except ValueError as exc:
            raise PrometheusPermanentError(f"Prometheus {path} answered malformed JSON") from exc


def _status_error(exc: PrometheusApiClientException) -> PrometheusError:
    match = _STATUS.search(str(exc))
    code = int(match.group(1)) if match else 0
    message = f"Prometheus query answered HTTP {code or '?'}: {brief(exc)}"
    if code >= 500 or code in (0, 408, 429):
        return PrometheusTransientError(message)
    return PrometheusPermanentError(message)
