"""A local AI Command Gateway simulator that speaks the contract in ``shared/GATEWAY.md``.

It answers ``POST /execute-docker-command`` by calling an ``act(target, intent)`` callback
(the demo restarts its demo service there; tests flip a scrape target), and ``GET
/health``. Tests can queue scripted answers (status code, body, headers) that are served
before the callback is used. Every request is recorded with its headers.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

KNOWN_SERVICES = ("market-predictor", "coding-ai-agent", "devops-ai-agent")


@dataclass
class ActResult:
    """What the simulated docker command did."""

    command: str
    exit_code: int = 0
    stdout: str = ""
    stderr: str = ""


@dataclass
class Recorded:
    """One request the simulator received."""

    path: str
    headers: dict[str, str]
    body: Any
    received_at: float = field(default_factory=time.monotonic)


@dataclass
class Scripted:
    """A canned answer served before the callback is consulted."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


def _default_act(target: str, intent: str) -> ActResult:
    verb = intent.split()[0] if intent else "inspect"
    return ActResult(command=f"docker {verb} {target}", stdout=f"{target}\n")


class GatewaySimulator:
    """Serves the gateway contract on 127.0.0.1 in a background thread."""

    def __init__(
        self,
        act: Callable[[str, str], ActResult] = _default_act,
        *,
        known_services: tuple[str, ...] = KNOWN_SERVICES,
        port: int = 0,
    ) -> None:
        self.act = act
        self.known_services = known_services
        self.requests: list[Recorded] = []
        self.script: list[Scripted] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> GatewaySimulator:
        """Serve in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()

    def executions(self) -> list[Recorded]:
        """The execute requests received so far."""
        with self._lock:
            return [r for r in self.requests if r.path == "/execute-docker-command"]

    def answer(self, body: Any) -> tuple[int, Any]:
        """The contract answer to one execute request."""
        try:
            target = body["target_resource"]["name"]
            intent = body["action_request"]["intent"]
        except (KeyError, TypeError):
            return 422, {"detail": [{"loc": ["body"], "msg": "field required"}]}
        envelope = {
            "request_id": str(uuid.uuid4()),
            "timestamp_processed_utc": datetime.now(UTC).replace(tzinfo=None).isoformat(),
        }
        if target not in self.known_services:
            return 200, {
                **envelope,
                "overall_status": "VALIDATION_ERROR",
                "execution_details": None,
                "error_details": {"error_code": "UNKNOWN_SERVICE", "message": target},
            }
        result = self.act(target, intent)
        ok = result.exit_code == 0
        return 200, {
            **envelope,
            "overall_status": "COMPLETED_SUCCESS" if ok else "COMPLETED_FAILURE",
            "execution_details": {
                "command": result.command,
                "execution_result": {
                    "status": "SUCCESS" if ok else "FAILURE",
                    "exit_code": result.exit_code,
                    "stdout": result.stdout,
                    "stderr": result.stderr,
                },
            },
            "error_details": None,
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        sim = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                raw = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self) -> None:
                if self.path != "/health":
                    self._send(404, {"detail": "Not Found"})
                    return
                now = datetime.now(UTC).isoformat()
                self._send(200, {"status": "healthy", "timestamp": now, "version": "1.0.0"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                with sim._lock:
                    sim.requests.append(Recorded(self.path, dict(self.headers.items()), body))
                    scripted = sim.script.pop(0) if sim.script else None
                if scripted is not None:
                    self._send(scripted.status, scripted.body, scripted.headers)
                elif self.path != "/execute-docker-command":
                    self._send(404, {"detail": "Not Found"})
                else:
                    self._send(*sim.answer(body))

            def log_message(self, format: str, *args: object) -> None:
                return

        return Handler
