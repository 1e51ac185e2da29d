"""The approval API: ``POST /api/incidents/{id}/approve`` and ``/deny`` on ``METRICS_ADDR``.

A human (or a chat bot acting for one) answers an approval request over HTTP. The answer
goes through ``agent/approvals.py``, exactly as ``devops-agent incidents approve`` does.

Authorised by its own bearer token, ``APPROVAL_TOKEN`` (never the webhook's: a token that
only wakes sweeps must not be able to restart anything); without it the API is off (404).
The body is JSON ``{"by": NAME, "reason": TEXT}``, with ``"action"`` and ``"target"``
optionally pinning what the human means to approve (a pin that differs from what waits is
refused, naming what waits), at most 64 KB, received within the webhook's body timeout.
Answers, each with a JSON body naming the action and the service it runs on: 401 missing
or wrong token, 400 malformed body, 413 too large, 404 unknown incident (the API takes
full incident ids: a prefix that the command line would resolve is unknown here), 409
not waiting (another action or target, or refused), 410 expired, 202 approved but held
back by a passing guardrail (sent by the first cycle that can), 200 with the incident's
new state.

The work of a granted approval (the claim, the gateway request, its result) runs as the
daemon's own task: a client that gives up does not abandon a request half-sent.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from agent.approvals import BadAnswer, Pin, Reply, answer_approval, make_answer
from agent.clients.http import decode_json
from agent.daemon.bodies import BodyTooLarge, read_body
from agent.logs import get_logger
from agent.runtime import Runtime
from agent.store.base import get_exact
from agent.text import clip

log = get_logger("agent.api")

MAX_BODY_BYTES = 65_536

#: Runs the answer as a task the daemon waits for at shutdown; the default just awaits it.
Runner = Callable[[Coroutine[Any, Any, Reply]], "asyncio.Future[Reply]"]


def _error(status: int, reason: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": reason}, status_code=status, headers=headers)


@dataclass
class ApprovalApi:
    """The two routes; ``token`` None means the API is off."""

    rt: Runtime
    token: str | None
    body_timeout: float
    run: Runner = asyncio.ensure_future

    def _authorized(self, request: Request) -> bool:
        assert self.token is not None
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode())

    async def _fields(self, request: Request) -> dict[str, Any] | JSONResponse:
        try:
            raw = await read_body(request, MAX_BODY_BYTES, self.body_timeout)
        except BodyTooLarge:
            return _error(413, f"body over {MAX_BODY_BYTES} bytes")
        except TimeoutError:
            return _error(408, f"body not received within {self.body_timeout:g}s")
        except ClientDisconnect:
            return _error(400, "the client went away mid-body")
        try:
            body = decode_json(raw)
        except ValueError as exc:
            return _error(400, f"the body is not JSON: {clip(str(exc), 200)}")
        if not isinstance(body, dict):
            return _error(400, 'the body must be a JSON object like {"by": "alice"}')
        return body

    async def _answer(self, request: Request, approve: bool) -> JSONResponse:
        if self.token is None:
            return _error(404, "the approval API is off: set APPROVAL_TOKEN")
        if not self._authorized(request):
            return _error(401, "missing or wrong bearer token")
        fields = await self._fields(request)
        if isinstance(fields, JSONResponse):
            return fields
        try:
            answer = make_answer(
                approve=approve,
                by=fields.get("by"),
                reason=fields.get("reason"),
                at=self.rt.clock(),
            )
            pin = Pin.checked(fields.get("action"), fields.get("target"))
        except BadAnswer as exc:
            return _error(400, str(exc))
        incident_id = str(request.path_params["incident_id"])
        if get_exact(self.rt.store, incident_id) is None:
            return _error(404, "no incident with this id (the API takes full ids, not prefixes)")
        work = self.run(answer_approval(self.rt, incident_id, answer, pin=pin))
        reply = await asyncio.shield(work)
        log.info(
            "approval_answered",
            incident_id=incident_id,
            approve=approve,
            by=answer.by,
            status=reply.status,
            via="api",
        )
        return JSONResponse(reply.to_dict(), status_code=reply.status)

    async def approve(self, request: Request) -> JSONResponse:
        """POST /api/incidents/{incident_id}/approve."""
        return await self._answer(request, True)

    async def deny(self, request: Request) -> JSONResponse:
        """POST /api/incidents/{incident_id}/deny."""
        return await self._answer(request, False)
