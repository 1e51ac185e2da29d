"""The agent's own HTTP endpoint: ``/metrics``, ``/healthz``, the Alertmanager webhook, the
approval API, the console (``/ui/``) and the MCP server (``/mcp``).

One Starlette app served by uvicorn inside the daemon's event loop (no thread). The
daemon owns SIGTERM and SIGINT, so the embedded server installs no signal handlers of its
own; the listening socket is bound here, so a taken or invalid ``METRICS_ADDR`` is one
clear error at start-up. ``/healthz`` answers 200 while the last sweep finished recently
(three sweep intervals), 503 otherwise, so a wedged scheduler shows even though the
process is alive.

Every path but ``/metrics`` and ``/healthz`` (which Prometheus scrapes by any address)
answers only requests whose ``Host`` names the agent (``agent/hosts.py``): 400 otherwise,
so a web page cannot reach the console, the approval API, the MCP server or the
webhook by DNS rebinding. With ``TLS_CERT_FILE`` and ``TLS_KEY_FILE`` uvicorn serves HTTPS itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from agent.daemon.api import ApprovalApi
from agent.daemon.webhook import WebhookIntake
from agent.hosts import HostPolicy, is_loopback
from agent.logs import get_logger
from agent.metrics import AgentMetrics
from agent.text import clip

log = get_logger("agent.http")

__all__ = ["HostCheck", "HttpEndpoint", "Liveness", "build_app", "is_loopback"]

GRACEFUL_SHUTDOWN_SECONDS = 2.0


class Liveness:
    """When the last sweep finished."""

    def __init__(self, max_age_seconds: float) -> None:
        self.max_age = max_age_seconds
        self.started = time.monotonic()
        self.last_sweep: float | None = None

    def sweep_finished(self) -> None:
        """Record a finished sweep."""
        self.last_sweep = time.monotonic()

    def healthy(self) -> tuple[bool, str]:
        """Whether the daemon looks alive, and why."""
        reference = self.last_sweep if self.last_sweep is not None else self.started
        age = time.monotonic() - reference
        if age <= self.max_age:
            return True, f"last sweep {age:.0f}s ago" if self.last_sweep else "starting"
        return False, f"no sweep finished for {age:.0f}s"


#: Paths any ``Host`` may ask for: Prometheus scrapes by address, probes check health.
OPEN_PATHS = frozenset({"/metrics", "/healthz"})
#: At most one ``host_refused`` line per this many seconds; the rest are counted in it.
REFUSAL_LOG_SECONDS = 60.0


class HostCheck:
    """ASGI middleware: a request for a guarded path whose ``Host`` is not one of ours is
    answered 400 before any route sees it."""

    def __init__(self, app: ASGIApp, policy: HostPolicy) -> None:
        self._app = app
        self._policy = policy
        self._last_logged = -REFUSAL_LOG_SECONDS
        self._unlogged = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass an allowed request on; refuse the others."""
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self._app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        host = headers.get(b"host", b"").decode("latin-1")
        if self._policy.allows(host):
            await self._app(scope, receive, send)
            return
        self._log(host, scope["path"])
        body = {"error": "this Host is not the agent's (METRICS_ADDR, PUBLIC_URL or loopback)"}
        await JSONResponse(body, status_code=400)(scope, receive, send)

    def _log(self, host: str, path: str) -> None:
        now = time.monotonic()
        if now - self._last_logged < REFUSAL_LOG_SECONDS:
            self._unlogged += 1
            return
        log.warning(
            "host_refused",
            host=clip(host, 100),
            path=clip(path, 100),
            not_logged_since=self._unlogged,
        )
        self._last_logged, self._unlogged = now, 0


def build_app(
    metrics: AgentMetrics,
    liveness: Liveness,
    webhook: WebhookIntake,
    api: ApprovalApi | None = None,
    console: Sequence[BaseRoute] = (),
    *,
    hosts: HostPolicy,
    mcp: ASGIApp | None = None,
) -> Starlette:
    """The app: metrics for Prometheus, health for probes, the webhook for Alertmanager,
    the approval API and the console (``console``: its routes) for humans, the MCP server
    (``mcp``: ``/mcp``) for their assistants; every path but the first two only for a
    ``Host`` that ``hosts`` allows."""

    async def metrics_page(_: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def healthz(_: Request) -> JSONResponse:
        ok, reason = liveness.healthy()
        body = {"status": "ok" if ok else "stale", "reason": reason}
        return JSONResponse(body, status_code=200 if ok else 503)

    return Starlette(
        routes=[
            Route("/metrics", metrics_page, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/webhook/alertmanager", webhook.handle, methods=["POST"]),
            *(
                [
                    Route("/api/incidents/{incident_id}/approve", api.approve, methods=["POST"]),
                    Route("/api/incidents/{incident_id}/deny", api.deny, methods=["POST"]),
                ]
                if api is not None
                else []
            ),
            *console,
            *([Route("/mcp", mcp)] if mcp is not None else []),
        ],
        middleware=[Middleware(HostCheck, policy=hosts)],
    )


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside the daemon's loop: the daemon handles the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpEndpoint:
    """Serves the app on ``host:port`` until ``stop``; over TLS with ``tls`` (the
    certificate chain and key files)."""

    def __init__(
        self, app: Starlette, host: str, port: int, tls: tuple[Path, Path] | None = None
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # IPPROTO_TCP named explicitly: asyncio turns Nagle's algorithm off only on sockets
        # that say so, and uvicorn's two writes per answer would otherwise wait ~40 ms for
        # the client's delayed ACK on every request of a kept-alive connection.
        self._socket = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((host, port))
        except OSError:
            self._socket.close()
            raise
        config = uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            lifespan="off",
            http="h11",
            ws="none",
            timeout_keep_alive=5,
            timeout_graceful_shutdown=int(GRACEFUL_SHUTDOWN_SECONDS),
            ssl_certfile=str(tls[0]) if tls else None,
            ssl_keyfile=str(tls[1]) if tls else None,
        )
        self._server = _EmbeddedServer(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        return int(self._socket.getsockname()[1])

    async def start(self) -> HttpEndpoint:
        """Start serving and wait until the server accepts connections."""
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]))
        while not self._server.started and not self._task.done():
            await asyncio.sleep(0.01)
        if self._task.done():
            self._task.result()  # re-raise why it could not start
        return self

    async def stop(self) -> None:
        """Stop accepting, let answers in progress finish briefly, release the port."""
        self._server.should_exit = True
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, GRACEFUL_SHUTDOWN_SECONDS + 3)
            except TimeoutError:
                self._server.force_exit = True
        self._socket.close()
