"""Alertmanager v2 API client: which alerts humans have silenced, and escalation alerts.

Silences are read so the agent never acts on something a human has taken in hand;
escalations are posted as ordinary alerts so they reach people through the routing
they already have. Every call is one bounded exchange (``clients/http.py``).
"""

from __future__ import annotations

from typing import Any

import httpx

from agent.clients.http import AnswerTooLarge, Peer, decode_json, exchange
from agent.errors import AlertmanagerError
from agent.text import clip


def build_http_client(
    url: str, timeout: float, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """The one ``httpx.AsyncClient`` for Alertmanager, created at start-up (``transport``:
    a dry run's, which lets reads through only)."""
    headers = {"User-Agent": "devops-agent", "Accept-Encoding": "identity"}
    return httpx.AsyncClient(
        base_url=url, headers=headers, timeout=httpx.Timeout(timeout), transport=transport
    )


class AlertmanagerClient:
    """Talks to one Alertmanager through an injected ``httpx.AsyncClient``."""

    def __init__(self, http: httpx.AsyncClient, *, timeout: float, max_bytes: int) -> None:
        self._http = http
        self._timeout = timeout
        self._max_bytes = max_bytes
        self.peer = Peer.of(
            "Alertmanager",
            str(http.base_url),
            timeout=timeout,
            timeout_setting="alertmanager.timeout_seconds",
            max_bytes=max_bytes,
            size_setting="alertmanager.max_answer_bytes",
        )

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

    async def version(self) -> str:
        """The server's version from ``/api/v2/status``; raises AlertmanagerError."""
        body = await self._request("GET", "/api/v2/status")
        info = body.get("versionInfo") if isinstance(body, dict) else None
        version = info.get("version") if isinstance(info, dict) else None
        return clip(version, 50) if isinstance(version, str) else "unknown"

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
        except (TimeoutError, httpx.HTTPError, AnswerTooLarge) as exc:
            raise AlertmanagerError(self.peer.failure(exc, path)) from exc
        where = f"{self.peer} ({path})"
        if answer.status_code >= 300:
            raise AlertmanagerError(
                f"{where} answered HTTP {answer.status_code}: {clip(answer.text, 200)}"
            )
        if not answer.content:
            return None
        try:
            return decode_json(answer.content)
        except ValueError as exc:
            raise AlertmanagerError(f"{where} answered malformed JSON") from exc
