"""The agent's own HTTP endpoint: ``/metrics`` for Prometheus and ``/healthz`` for probes.

``/healthz`` answers 200 while the last sweep finished recently (three sweep intervals),
503 otherwise, so a wedged scheduler shows up even though the process is alive.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agent.metrics import AgentMetrics


class Liveness:
    """When the last sweep finished, shared between the loop and the HTTP thread."""

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


class MetricsServer:
    """Serves /metrics and /healthz on a background thread."""

    def __init__(self, host: str, port: int, metrics: AgentMetrics, liveness: Liveness) -> None:
        registry = metrics.registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] == "/metrics":
                    self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif self.path.split("?")[0] == "/healthz":
                    ok, reason = liveness.healthy()
                    body = json.dumps({"status": "ok" if ok else "stale", "reason": reason})
                    self._send(200 if ok else 503, body.encode(), "application/json")
                else:
                    self._send(404, b"not found\n", "text/plain")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        return int(self._server.server_address[1])

    def start(self) -> MetricsServer:
        """Serve in the background."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
