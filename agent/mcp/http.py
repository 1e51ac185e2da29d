"""``/mcp`` on ``METRICS_ADDR``: the MCP server over streamable HTTP, inside the daemon.

Authorised by a bearer token: ``CONSOLE_TOKEN`` reads, ``APPROVAL_TOKEN`` reads and
answers (approve and deny through the one approval path, as the daemon's own tasks);
without either token configured the endpoint is not mounted (404). The app's Host check
(``agent/hosts.py``) applies here as on every guarded path.

Each request is a POST of one JSON-RPC message, answered with JSON and no session
(stateless: any replica may answer any request). Answers: 401 missing or wrong token,
405 another method, 413 a body over ``MAX_BODY_BYTES``, 408 a body that does not arrive
within the webhook's body timeout, 400 a client gone mid-body; otherwise what the SDK's
transport says. The SDK is imported at the first authorised request, not before.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.types import Message, Receive, Scope, Send

from agent.daemon.bodies import BodyTooLarge, read_body
from agent.logs import Redactor, get_logger
from agent.mcp.desk import HTTP_NO_APPROVAL_TOKEN, HTTP_VIEWER, DaemonDesk, Runner
from agent.runtime import Runtime
from agent.settings import secret_values

if TYPE_CHECKING:
    from mcp.server.lowlevel import Server

log = get_logger("agent.mcp")

MAX_BODY_BYTES = 262_144
Role = Literal["viewer", "approver"]


def _error(status: int, reason: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status, headers=headers)


class McpEndpoint:
    """The ASGI app behind ``/mcp``: one MCP server per role, built when first asked for."""

    def __init__(
        self,
        rt: Runtime,
        *,
        console_token: str | None,
        approval_token: str | None,
        body_timeout: float,
        run: Runner,
    ) -> None:
        self.rt = rt
        self._tokens: dict[Role, str | None] = {
            "viewer": console_token,
            "approver": approval_token,
        }
        self.body_timeout = body_timeout
        self.run = run
        self._servers: dict[Role, Server[Any, Any]] = {}
        self._redact: Callable[[str], str] = Redactor(secret_values(rt.settings.env)).text

    @property
    def enabled(self) -> bool:
        """Whether ``/mcp`` is served at all (a token is configured)."""
        return any(self._tokens.values())

    def _role(self, request: Request) -> Role | None:
        given = request.headers.get("authorization", "").encode()
        found: Role | None = None
        for role, token in self._tokens.items():
            # every configured token is compared, whichever matches, in constant time
            if token and hmac.compare_digest(given, f"Bearer {token}".encode()):
                found = role
        return found

    def _server(self, role: Role) -> Server[Any, Any]:
        if role not in self._servers:
            from agent.mcp.server import build_server  # the SDK, at the first request

            if role == "approver":
                answering = None
            else:
                answering = HTTP_VIEWER if self._tokens["approver"] else HTTP_NO_APPROVAL_TOKEN
            desk = DaemonDesk(self.rt, self.run, answering)
            self._servers[role] = build_server(desk, self._redact)
        return self._servers[role]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Authorise, read the body within its cap and deadline, hand it to the SDK."""
        request = Request(scope, receive)
        role = self._role(request)
        if role is None:
            refused = _error(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
            await refused(scope, receive, send)
            return
        if request.method != "POST":
            answer = "POST one JSON-RPC message (stateless streamable HTTP: no GET stream)"
            await _error(405, answer, {"Allow": "POST"})(scope, receive, send)
            return
        try:
            body = await read_body(request, MAX_BODY_BYTES, self.body_timeout)
        except BodyTooLarge:
            await _error(413, f"body over {MAX_BODY_BYTES} bytes")(scope, receive, send)
            return
        except TimeoutError:
            answer = f"body not received within {self.body_timeout:g}s"
            await _error(408, answer)(scope, receive, send)
            return
        except ClientDisconnect:
            await _error(400, "the client went away mid-body")(scope, receive, send)
            return
        from agent.mcp.server import serve_http

        await serve_http(self._server(role), scope, _replay(body, receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the body already read, then whatever the client sends next."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again
