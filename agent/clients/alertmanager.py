"""Alertmanager v2 API client: which alerts humans have silenced, and escalation alerts.

Silences are read so the agent never acts on something a human has taken in hand;
escalations are posted as ordinary alerts so they reach people through the routing
they already have. Every call is one bounded exchange (``clients/http.py``).
"""

from __future__ import annotations

from typing import Any

import httpx

from agent.clients.http import AnswerTooLarge, decode_json, exchange
from agent.errors import AlertmanagerError
from agent.text import clip


def build_http_client(url: str, timeout: float) -> httpx.AsyncClient:
    """The one ``httpx.AsyncClient`` for Alertmanager, created at start-up."""
    headers = {"User-Agent": "devops-agent", "Accept-Encoding": "identity"}
    return httpx.AsyncClient(base_url=url, headers=headers, timeout=httpx.Timeout(timeout))


class AlertmanagerClient:
    """Talks to one Alertmanager through an injected ``httpx.AsyncClient``."""

    def __init__(self, http: httpx.AsyncClient, *, timeout: float, max_bytes: int) -> None:
        self._http = http
        self._timeout = timeout
        self._max_bytes = max_bytes

    async def suppressed_alerts(self) -> object:
        """The decoded list of silenced or inhibited alerts."""
        params = {"active": "false", "silenced": "true", "inhibited": "true"}
        return await self._request("GET", "/api/v2/alerts", params=params)

    async def active_alerts(self) -> object:
        """The decoded list of alerts firing now, neither silenced nor inhibited."""
        params = {
            "active": "true",
            "silenced": "false",
            "inhibited": "false",
            "unprocessed": "false",
        }
        return await self._request("GET", "/api/v2/alerts", params=params)

    async def post_alerts(self, alerts: list[dict[str, Any]]) -> None:
        """Send alerts (e.g. an escalation) to Alertmanager."""
        await self._request("POST", "/api/v2/alerts", json=alerts)

    async def _request(self, method: str, path: str, **kwargs: Any) -> object:
        try:
            answer = await exchange(
                self._http,
                method,
                path,
                deadline=self._timeout,
                max_bytes=self._max_bytes,
                **kwargs,
            )
        except TimeoutError as exc:
            raise AlertmanagerError(
                f"Alertmanager {path} gave no whole answer within {self._timeout:g}s"
            ) from exc
        except httpx.HTTPError as exc:
            raise AlertmanagerError(f"Alertmanager unreachable: {type(exc).__name__}") from exc
        except AnswerTooLarge as exc:
            raise AlertmanagerError(f"Alertmanager {path}: {exc}") from exc
        if answer.status_code >= 300:
            raise AlertmanagerError(
                f"Alertmanager {path} answered {answer.status_code}: {clip(answer.text, 200)}"
            )
        if not answer.content:
            return None
        try:
            return decode_json(answer.content)
        except ValueError as exc:
            raise AlertmanagerError(f"Alertmanager {path} answered malformed JSON") from exc
