"""Alertmanager v2 API client: which alerts humans have silenced, and escalation alerts.

Silences are read so the agent never acts on something a human has taken in hand;
escalations are posted as ordinary alerts so they reach people through the routing
they already have.
"""

from __future__ import annotations

from typing import Any

import httpx

from agent.errors import AlertmanagerError


class AlertmanagerClient:
    """Talks to one Alertmanager through an injected ``httpx.AsyncClient``."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def suppressed_alerts(self) -> object:
        """The decoded list of silenced or inhibited alerts."""
        params = {"active": "false", "silenced": "true", "inhibited": "true"}
        return await self._request("GET", "/api/v2/alerts", params=params)

    async def post_alerts(self, alerts: list[dict[str, Any]]) -> None:
        """Send alerts (e.g. an escalation) to Alertmanager."""
        await self._request("POST", "/api/v2/alerts", json=alerts)

    async def _request(self, method: str, path: str, **kwargs: Any) -> object:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise AlertmanagerError(f"Alertmanager unreachable: {type(exc).__name__}") from exc
        if response.status_code >= 300:
            raise AlertmanagerError(f"Alertmanager {path} answered {response.status_code}")
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise AlertmanagerError(f"Alertmanager {path} answered malformed JSON") from exc
