"""The agent's own HTTP endpoint: ``/metrics``, ``/healthz``, the Alertmanager webhook, the
approval API and the console (``/ui/``).

One Starlette app served by uvicorn inside the daemon's event loop (no thread). The
daemon owns SIGTERM and SIGINT, so the embedded server installs no signal handlers of its
own; the listening socket is bound here, so a taken or invalid ``METRICS_ADDR`` is one
clear error at start-up. ``/healthz`` answers 200 while the last sweep finished recently
(three sweep intervals), 503 otherwise, so a wedged scheduler shows even though the
process is alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import time
from collections.abc import Iterator, Sequence

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from agent.daemon.api import ApprovalApi
from agent.daemon.webhook import WebhookIntake
from agent.metrics import AgentMetrics

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


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_app(
    metrics: AgentMetrics,
    liveness: Liveness,
    webhook: WebhookIntake,
    api: ApprovalApi | None = None,
    console: Sequence[BaseRoute] = (),
) -> Starlette:
    """The app: metrics for Prometheus, health for probes, the webhook for Alertmanager,
    the approval API and the console (``console``: its routes) for humans."""

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
        ]
    )


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside the daemon's loop: the daemon handles the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpEndpoint:
    """Serves the app on ``host:port`` until ``stop``."""

    def __init__(self, app: Starlette, host: str, port: int) -> None:
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
