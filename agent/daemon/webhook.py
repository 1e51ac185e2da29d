"""The Alertmanager webhook: push wakes the poll.

A notification (Alertmanager's webhook, version 4) is read, checked and answered at once;
all it does is wake a sweep soon, and a burst wakes one sweep, not one per notification.
What is firing is still decided by the sweep: a lost notification costs at most one
sweep interval, a forged one at most one early sweep, never an action.

The endpoint answers 401 without the right bearer token (``WEBHOOK_TOKEN``), 413 for a
body over ``webhook.max_body_bytes``, 408 for a body that does not arrive within
``webhook.body_timeout_seconds``, 400 with a JSON reason for anything that is not a
version-4 notification, and 404 when it is off (no token, and not on loopback).
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from agent.clients.http import decode_json
from agent.daemon.bodies import BodyTooLarge, read_body
from agent.logs import get_logger
from agent.metrics import AgentMetrics
from agent.text import clip

log = get_logger("agent.webhook")
#: A kind of refusal is logged at most once per this many seconds.
REFUSAL_LOG_SECONDS = 60.0


@dataclass(frozen=True)
class Notice:
    """What a valid notification says, in numbers (its text is never trusted)."""

    status: str
    firing: int
    resolved: int


def parse_notification(body: object) -> Notice:
    """A version-4 Alertmanager notification; ValueError naming what is wrong."""
    if not isinstance(body, dict):
        raise ValueError("the body is not a JSON object")
    if body.get("version") != "4":
        raise ValueError(f'version must be "4", got {clip(repr(body.get("version")), 40)}')
    status = body.get("status")
    if status not in ("firing", "resolved"):
        raise ValueError('status must be "firing" or "resolved"')
    alerts = body.get("alerts")
    if not isinstance(alerts, list) or not all(isinstance(a, dict) for a in alerts):
        raise ValueError("alerts must be a list of objects")
    firing = sum(a.get("status") == "firing" for a in alerts)
    return Notice(status=status, firing=firing, resolved=len(alerts) - firing)


@dataclass
class WebhookIntake:
    """The endpoint: checks a notification and calls ``wake`` for a valid one."""

    wake: Callable[[Notice], None]
    metrics: AgentMetrics
    token: str | None
    enabled: bool
    max_body_bytes: int
    body_timeout: float

    def __post_init__(self) -> None:
        self._refusals: dict[str, tuple[float, int]] = {}  # result -> (last logged, unlogged)

    def _log_refusal(self, result: str, reason: str) -> None:
        """At most one line per kind of refusal a minute: a flood of bad requests is
        counted in the metric, not written to the journal one by one."""
        now = time.monotonic()
        last, unlogged = self._refusals.get(result, (-REFUSAL_LOG_SECONDS, 0))
        if now - last < REFUSAL_LOG_SECONDS:
            self._refusals[result] = (last, unlogged + 1)
            return
        self._refusals[result] = (now, 0)
        log.info("webhook_refused", result=result, reason=reason, not_logged_since=unlogged)

    def _answer(self, result: str, status: int, reason: str | None = None) -> JSONResponse:
        self.metrics.webhook_notifications.labels(result=result).inc()
        if reason is None:
            return JSONResponse({"status": result}, status_code=status)
        self._log_refusal(result, reason)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse({"error": reason}, status_code=status, headers=headers)

    def _authorized(self, request: Request) -> bool:
        if self.token is None:
            return True
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode())

    async def handle(self, request: Request) -> JSONResponse:
        """POST /webhook/alertmanager."""
        if not self.enabled:
            return self._answer(
                "off", 404, "the webhook is off: set WEBHOOK_TOKEN, or serve on loopback"
            )
        if not self._authorized(request):
            return self._answer("unauthorized", 401, "missing or wrong bearer token")
        try:
            raw = await read_body(request, self.max_body_bytes, self.body_timeout)
        except BodyTooLarge:
            return self._answer(
                "too_large", 413, f"body over {self.max_body_bytes} bytes (webhook.max_body_bytes)"
            )
        except TimeoutError:
            return self._answer(
                "timeout",
                408,
                f"body not received within {self.body_timeout:g}s (webhook.body_timeout_seconds)",
            )
        except ClientDisconnect:
            return self._answer("disconnected", 400, "the client went away mid-body")
        try:
            body = decode_json(raw)
        except ValueError as exc:
            return self._answer("malformed", 400, f"the body is not JSON: {clip(str(exc), 200)}")
        try:
            notice = parse_notification(body)
        except ValueError as exc:
            return self._answer("malformed", 400, str(exc))
        self.wake(notice)
        return self._answer("accepted", 202)
